"""The web tier's view and impression counters: one pipelined Redis round trip per call.

Views and impressions are the most frequent writes a social platform has; a
Celery task per view would drown the broker. So the web tier bumps counters
in Redis, and ``analytics.flush_counters`` moves them into PostgreSQL every
minute. This module needs only the ``redis`` package and the standard library,
so another codebase can copy or import it without the rest of this project::

    from tasks.analytics.client import track_view
    track_view(post_id, viewer_id)       # viewer_id None: an anonymous view

Keys (the flusher's contract; ``DAY`` is the UTC date, ``YYYYMMDD``):

- ``analytics:c:DAY``: a hash of counters, fields ``v:<post id>`` (views),
  ``i:<post id>`` (impressions), ``p:<user id>`` (profile views). The flusher
  renames it whole, so each increment is flushed exactly once.
- ``analytics:u:v:DAY:<post id>``, ``analytics:u:i:DAY:<post id>``,
  ``analytics:u:p:DAY:<user id>``: HyperLogLogs of the viewers, for unique
  counts (about 0.8 % standard error, 12 KB at most each).

Every key expires ``KEY_TTL_SECONDS`` after its last write: on the broker's
Redis, which never evicts, counters nobody flushes must not grow forever.

The URL: ``ANALYTICS_REDIS_URL``, else ``BROKER_URL`` when it is Redis, or a
client passed to ``configure()``.
"""
from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterable
from datetime import datetime, timezone

import redis

PREFIX = "analytics:"
COUNTERS = PREFIX + "c:"
UNIQUES = PREFIX + "u:"
KEY_TTL_SECONDS = 7 * 24 * 3600
MAX_IMPRESSIONS_PER_CALL = 500   # one feed page is 20-50 posts; a bigger batch is a bug upstream
VIEW, IMPRESSION, PROFILE = "v", "i", "p"

_UUID = re.compile(r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$")
_MAX_ID = 2**31 - 1

_lock = threading.Lock()
_client: redis.Redis | None = None


def configure(client_or_url: redis.Redis | str | None) -> None:
    """Use this Redis (a client or a URL); None forgets it, to re-read the environment."""
    global _client
    with _lock:
        _client = redis.Redis.from_url(client_or_url) if isinstance(client_or_url, str) else client_or_url


def _redis() -> redis.Redis:
    global _client
    if _client is None:
        with _lock:
            if _client is None:
                url = os.environ.get("ANALYTICS_REDIS_URL") or os.environ.get("BROKER_URL") or ""
                if not url.startswith(("redis://", "rediss://", "unix://")):
                    raise RuntimeError("analytics client: set ANALYTICS_REDIS_URL (or a redis:// BROKER_URL), "
                                       "or call configure()")
                _client = redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
    return _client


def day_bucket(now: datetime | None = None) -> str:
    return (now or datetime.now(timezone.utc)).astimezone(timezone.utc).strftime("%Y%m%d")


def counters_key(day: str) -> str:
    return COUNTERS + day


def uniques_key(kind: str, day: str, subject: str) -> str:
    return f"{UNIQUES}{kind}:{day}:{subject}"


def _post_id(value: object, name: str = "post_id") -> str:
    if not isinstance(value, str) or not _UUID.match(value):
        raise ValueError(f"{name} must be a UUID string, got {type(value).__name__}")
    return value.lower() if "-" in value else f"{value[:8]}-{value[8:12]}-{value[12:16]}-{value[16:20]}-{value[20:]}".lower()


def _user_id(value: object, name: str, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= _MAX_ID:
        raise ValueError(f"{name} must be a positive integer id{' or None' if optional else ''}")
    return value


def _count(pipe, kind: str, day: str, subject: str, viewer_id: int | None, *, expire: bool = True) -> None:
    key = counters_key(day)
    pipe.hincrby(key, f"{kind}:{subject}", 1)
    if expire:
        pipe.expire(key, KEY_TTL_SECONDS)
    if viewer_id is not None:
        unique = uniques_key(kind, day, subject)
        pipe.pfadd(unique, viewer_id)
        pipe.expire(unique, KEY_TTL_SECONDS)


def track_view(post_id: str, viewer_id: int | None, *, now: datetime | None = None) -> None:
    """Count one view of a post (opened, not just scrolled past)."""
    post = _post_id(post_id)
    viewer = _user_id(viewer_id, "viewer_id", optional=True)
    pipe = _redis().pipeline(transaction=False)
    _count(pipe, VIEW, day_bucket(now), post, viewer)
    pipe.execute()


def track_profile_view(user_id: int, viewer_id: int | None, *, now: datetime | None = None) -> None:
    """Count one view of a user's profile. A user viewing their own profile is not counted."""
    user = _user_id(user_id, "user_id")
    viewer = _user_id(viewer_id, "viewer_id", optional=True)
    if viewer == user:
        return
    pipe = _redis().pipeline(transaction=False)
    _count(pipe, PROFILE, day_bucket(now), str(user), viewer)
    pipe.execute()


def track_impressions(post_ids: Iterable[str], viewer_id: int | None, *, now: datetime | None = None) -> None:
    """Count that these posts were shown to a viewer (a feed page), once each."""
    posts = list(dict.fromkeys(_post_id(p, "post_ids[]") for p in post_ids))
    if len(posts) > MAX_IMPRESSIONS_PER_CALL:
        raise ValueError(f"post_ids has {len(posts)} posts; the limit is {MAX_IMPRESSIONS_PER_CALL} per call")
    if not posts:
        return
    viewer = _user_id(viewer_id, "viewer_id", optional=True)
    day = day_bucket(now)
    pipe = _redis().pipeline(transaction=False)
    for index, post in enumerate(posts):
        _count(pipe, IMPRESSION, day, post, viewer, expire=index == 0)
    pipe.execute()
