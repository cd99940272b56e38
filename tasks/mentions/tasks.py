"""Celery entry points of the mentions family (to be built)."""
