"""Read-through helpers for the web tier: read a key, and on a miss fill it safely.

    from tasks.cache import store
    profile = store.get_or_fill(session, "user", 42)          # dict, or None (no such user)
    page = store.get_or_fill(session, "feed", (42, 1))        # a feed page: (user_id, page)
    unread = store.get_or_fill(session, "unread", 42)         # int

A fill reads the key's version before PostgreSQL and writes only if no
invalidation came in between (versions.py), so a reader racing a writer never
leaves the old value cached. The session must be at READ COMMITTED (the default).
Without CACHE_URL both read straight from PostgreSQL.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import redis
from sqlalchemy.orm import Session

from tasks.cache.client import cache_redis
from tasks.cache.fill import fill
from tasks.cache.invalidation import canonical_ids
from tasks.cache.keys import KEYS, MAX_FEED_PAGE
from tasks.cache.values import LOADERS
from workers.errors import InvalidArguments


def _checked(kind: str, ident):
    """``ident`` in canonical form (a UUID in lower case), or InvalidArguments."""
    spec = KEYS.get(kind)
    if spec is None:
        raise InvalidArguments(f"unknown cache key kind {kind!r}; one of {', '.join(KEYS)}")
    if spec.pages_pattern is not None:
        if not (isinstance(ident, tuple) and len(ident) == 2 and isinstance(ident[1], int)
                and not isinstance(ident[1], bool) and 1 <= ident[1] <= MAX_FEED_PAGE):
            raise InvalidArguments(f"a feed page is (user_id, page) with page 1 to {MAX_FEED_PAGE}")
        return (canonical_ids(spec.ids, [ident[0]], f"cache key {kind!r}")[0], ident[1])
    return canonical_ids(spec.ids, [ident], f"cache key {kind!r}")[0]


def get(kind: str, ident, client: redis.Redis | None = None) -> Any | None:
    """The cached value (decoded JSON), or None on a miss or without a cache."""
    ident = _checked(kind, ident)
    client = client or cache_redis()
    if client is None:
        return None
    raw = client.get(KEYS[kind].key(ident))
    return None if raw is None else json.loads(raw)


def get_or_fill(session: Session, kind: str, ident, client: redis.Redis | None = None,
                now: datetime | None = None) -> Any | None:
    """The cached value, else loaded from PostgreSQL (and cached unless a newer change came first).
    None: nothing to show (an unknown or deleted user, an unreadable post, …)."""
    ident = _checked(kind, ident)
    client = client or cache_redis()
    now = now or datetime.now(timezone.utc)
    if client is None:
        raw = LOADERS[kind](session, [ident], now).get(ident)
    else:
        raw = client.get(KEYS[kind].key(ident))
        if raw is None:
            raw = fill(session, client, {kind: [ident]}, now).values[kind].get(ident)
    return None if raw is None else json.loads(raw)
