"""The web tier's view and impression counters: one Redis round trip per call.

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
import time
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


_day_cache: tuple[int, str] = (-1, "")


def day_bucket(now: datetime | None = None) -> str:
    """The UTC day as ``YYYYMMDD``; formatted once a day, not once a call."""
    global _day_cache
    if now is not None:
        return now.astimezone(timezone.utc).strftime("%Y%m%d")
    day_number = int(time.time() // 86400)
    if _day_cache[0] != day_number:
        _day_cache = (day_number, datetime.fromtimestamp(day_number * 86400, timezone.utc).strftime("%Y%m%d"))
    return _day_cache[1]


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


# One command per call instead of a pipeline of four: the HINCRBY of each counter and the PFADD
# of the viewer into each HyperLogLog, with their expiries, run in Redis. Half the client-side
# cost of a pipelined call, and the call is atomic. KEYS: the counters hash, then one
# HyperLogLog per field. ARGV: TTL, viewer ('' for anonymous), then the fields.
_TRACK = """
local ttl, viewer = tonumber(ARGV[1]), ARGV[2]
for i = 3, #ARGV do
  redis.call('HINCRBY', KEYS[1], ARGV[i], 1)
  if viewer ~= '' then
    redis.call('PFADD', KEYS[i - 1], viewer)
    redis.call('EXPIRE', KEYS[i - 1], ttl)
  end
end
redis.call('EXPIRE', KEYS[1], ttl)
return #ARGV - 2
"""
_scripts: dict[int, object] = {}


def _track(kind: str, day: str, subjects: list[str], viewer_id: int | None) -> None:
    connection = _redis()
    script = _scripts.get(id(connection))
    if script is None:   # a Script re-sends its source by itself when Redis lost it (NOSCRIPT)
        script = _scripts[id(connection)] = connection.register_script(_TRACK)
    script(keys=[counters_key(day), *(uniques_key(kind, day, s) for s in subjects)],
           args=[KEY_TTL_SECONDS, "" if viewer_id is None else viewer_id, *(f"{kind}:{s}" for s in subjects)])


def track_view(post_id: str, viewer_id: int | None, *, now: datetime | None = None) -> None:
    """Count one view of a post (opened, not just scrolled past)."""
    post = _post_id(post_id)
    viewer = _user_id(viewer_id, "viewer_id", optional=True)
    _track(VIEW, day_bucket(now), [post], viewer)


def track_profile_view(user_id: int, viewer_id: int | None, *, now: datetime | None = None) -> None:
    """Count one view of a user's profile. A user viewing their own profile is not counted."""
    user = _user_id(user_id, "user_id")
    viewer = _user_id(viewer_id, "viewer_id", optional=True)
    if viewer == user:
        return
    _track(PROFILE, day_bucket(now), [str(user)], viewer)


def track_impressions(post_ids: Iterable[str], viewer_id: int | None, *, now: datetime | None = None) -> None:
    """Count that these posts were shown to a viewer (a feed page), once each."""
    posts = list(dict.fromkeys(_post_id(p, "post_ids[]") for p in post_ids))
    if len(posts) > MAX_IMPRESSIONS_PER_CALL:
        raise ValueError(f"post_ids has {len(posts)} posts; the limit is {MAX_IMPRESSIONS_PER_CALL} per call")
    if not posts:
        return
    viewer = _user_id(viewer_id, "viewer_id", optional=True)
    _track(IMPRESSION, day_bucket(now), posts, viewer)
