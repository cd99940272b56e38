"""What kind of broker a URL names, and a direct Redis client on it for the few things
Celery has no API for.

Two brokers are supported: Redis (one machine; kombu's virtual transport) and
RabbitMQ with quorum queues (replicated; native delivery limit, dead-lettering
and delayed delivery). Everything that differs between them asks ``kind()``.

The delivery counter (workers/reliability/deliveries.py) lives in the broker's
Redis, so that every worker on every machine shares it. ``redis_client()`` is
``None`` when the broker is RabbitMQ: the counter then steps aside for the
queue's ``x-delivery-limit`` (workers/reliability/dead_letter_intake.py).

``shared_redis()`` is the Redis for figures every process adds to whatever the
broker (the analytics counters, the task-duration histograms):
``ANALYTICS_REDIS_URL``'s, else the broker's. Workers on RabbitMQ refuse to
start without ``ANALYTICS_REDIS_URL`` (workers/lifecycle.py).
"""
from __future__ import annotations

import os

import settings

kind = settings.broker_kind

_client = None
_client_pid: int | None = None


def is_amqp(url: str | None) -> bool:
    return kind(url) == "amqp"


def redis_client():
    """The client for this process's broker; a forked child builds its own."""
    global _client, _client_pid
    if _client_pid != os.getpid():
        url = settings.current().broker_url
        _client = None
        if kind(url) == "redis":
            import redis

            _client = redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
        _client_pid = os.getpid()
    return _client


_shared: dict[tuple[int, str], object] = {}


def shared_redis():
    """ANALYTICS_REDIS_URL's Redis, else the broker's when it is Redis, else None; one client per process."""
    url = settings.current().analytics_redis_url
    if url is None:
        return redis_client()
    key = (os.getpid(), url)   # a forked child builds its own
    if key not in _shared:
        import redis

        _shared[key] = redis.Redis.from_url(url, socket_timeout=5.0, socket_connect_timeout=2.0)
    return _shared[key]


def reset() -> None:
    """Forget the clients (tests that point BROKER_URL elsewhere in-process)."""
    global _client, _client_pid
    _client = _client_pid = None
    _shared.clear()
