"""The Redis client on CACHE_URL, one per process and URL; None when no cache is configured."""
from __future__ import annotations

import os
import threading

import redis

import settings

_lock = threading.Lock()
_clients: dict[tuple[int, str], redis.Redis] = {}


def cache_redis() -> redis.Redis | None:
    """The cache's client, or None when CACHE_URL is unset (then no cache is kept at all).

    Keyed by pid: a forked worker child builds its own connections.
    """
    url = settings.current().cache_url
    if not url:
        return None
    key = (os.getpid(), url)
    client = _clients.get(key)
    if client is None:
        with _lock:
            client = _clients.get(key)
            if client is None:
                client = redis.Redis.from_url(url, socket_timeout=5.0, socket_connect_timeout=2.0)
                _clients[key] = client
    return client
