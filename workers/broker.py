"""A direct Redis client on the broker, one per process, for the few things Celery has no API for.

The delivery counter (workers/reliability/deliveries.py) and the task-duration
histograms (workers/observability/metrics.py) live in the broker's Redis so
that every worker on every machine shares them. ``None`` when the broker is
not Redis: those features then step aside.
"""
from __future__ import annotations

import os

import settings

REDIS_SCHEMES = ("redis://", "rediss://", "unix://")

_client = None
_client_key: tuple[int, str] | None = None


def redis_client():
    """The client for the current broker URL; a forked child builds its own."""
    global _client, _client_key
    url = settings.current().broker_url or ""
    if not url.startswith(REDIS_SCHEMES):
        return None
    key = (os.getpid(), url)
    if _client is None or _client_key != key:
        import redis

        _client = redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
        _client_key = key
    return _client
