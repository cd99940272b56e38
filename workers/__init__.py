"""Worker processes: the Celery app, lifecycle signals, the operator CLI and the dev runner.

``celery -A workers ...`` finds the app here.
"""
from workers.celery_app import app

__all__ = ["app"]
