"""Celery entry points of the images family (to be built)."""
