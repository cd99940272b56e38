"""What kind of broker a URL names, and a direct Redis client on it for the few things
Celery has no API for.

Two brokers are supported: Redis (one machine; kombu's virtual transport) and
RabbitMQ with quorum queues (replicated; native delivery limit, dead-lettering
and delayed delivery). Everything that differs between them asks ``kind()``.

The delivery counter (workers/reliability/deliveries.py) and the task-duration
histograms (workers/observability/metrics.py) live in the broker's Redis so
that every worker on every machine shares them. ``redis_client()`` is ``None``
when the broker is RabbitMQ: the counter then steps aside for the queue's
``x-delivery-limit`` (workers/reliability/dead_letter_intake.py).
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


def reset() -> None:
    """Forget the client (tests that point BROKER_URL elsewhere in-process)."""
    global _client, _client_pid
    _client = _client_pid = None
