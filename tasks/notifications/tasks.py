"""Celery entry points of the notifications family (to be built)."""
