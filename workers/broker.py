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
_client_pid: int | None = None


def redis_client():
    """The client for this process's broker; a forked child builds its own."""
    global _client, _client_pid
    if _client_pid != os.getpid():
        url = settings.current().broker_url or ""
        _client = None
        if url.startswith(REDIS_SCHEMES):
            import redis

            _client = redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
        _client_pid = os.getpid()
    return _client


def reset() -> None:
    """Forget the client (tests that point BROKER_URL elsewhere in-process)."""
    global _client, _client_pid
    _client = _client_pid = None
