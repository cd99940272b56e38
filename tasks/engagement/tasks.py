"""Celery entry points of the engagement family (to be built)."""
