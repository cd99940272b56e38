"""Celery entry points of the feed family (to be built)."""
