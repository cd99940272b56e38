"""``cache.warm_active``: profile, friends list and first feed page of the recently active.

Who is active is the feed's rule (tasks/feed/active.py ``ACTIVE_PAGE_SQL``: a
post, like, reaction, comment or follow since a time), here with the window
CACHE_ACTIVE_MINUTES. The walk is keyset-chunked by user id; each chunk is one
fill (fill.py: one round trip for the versions, one statement per key kind, one
pipelined round trip for the writes), and a chunk's write overlaps the next
chunk's reads. A run stops starting chunks once
CACHE_WARM_BUDGET_SECONDS are spent and leaves its cursor in the cache's Redis,
so the next run (beat, every 5 min) resumes there instead of warming the same
low ids again; a run that reaches the end clears it. Runs never overlap (an
advisory lock held for the run's transaction).
"""
from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

import redis
from sqlalchemy.orm import Session

from db.locks import try_xact_lock
from tasks.cache.fill import FillResult, load
from tasks.feed.active import ACTIVE_PAGE_SQL

JOB_NAME = "cache.warm_active"
WARM_CHUNK = 500                      # users per fill: three statements and two Redis round trips
CURSOR_KEY = "cache:warm_active:after_id"
CURSOR_TTL_SECONDS = 3600             # a cursor older than a few runs is worth nothing


@dataclass
class WarmResult:
    status: str = "ok"                # ok (reached the end) | budget_spent (resumes next run) | skipped
    users: int = 0
    chunks: int = 0
    written: int = 0
    refused: int = 0
    absent: int = 0
    resumed_after: int = 0
    next_after: int | None = None     # the cursor left for the next run

    def as_dict(self) -> dict:
        return asdict(self)


def active_users(session: Session, since: datetime, after_id: int, limit: int) -> list[int]:
    return list(session.execute(ACTIVE_PAGE_SQL, {"after_id": after_id, "since": since, "limit": limit}).scalars())


def warm_wanted(user_ids: list[int]) -> dict[str, list]:
    """What a warm caches for these users: profile, friends list, first feed page."""
    return {"user": user_ids, "friends": user_ids, "feed": [(user_id, 1) for user_id in user_ids]}


def warm_active(session: Session, client: redis.Redis, now: datetime, *, active_minutes: float,
                budget_seconds: float, chunk_size: int = WARM_CHUNK,
                clock: Callable[[], float] = time.monotonic) -> WarmResult:
    """Warm the users active since ``now - active_minutes``, within the budget. Never commits."""
    if not try_xact_lock(session, "cache.job", JOB_NAME):
        return WarmResult(status="skipped")
    started = clock()
    since = now - timedelta(minutes=active_minutes)
    after_id = int(client.get(CURSOR_KEY) or 0)
    result, filled = WarmResult(resumed_after=after_id), FillResult()
    # One chunk's Redis write runs while the next chunk reads PostgreSQL: at most one in flight.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="cache-warm-write") as writer:
        in_flight: Future | None = None
        while True:
            page = active_users(session, since, after_id, chunk_size)
            if page:
                loaded = load(session, client, warm_wanted(page), now)
                if in_flight is not None:
                    filled.add(in_flight.result())
                in_flight = writer.submit(loaded.write, client)
                result.users += len(page)
                result.chunks += 1
                after_id = page[-1]
            if len(page) < chunk_size:
                break
            if clock() - started >= budget_seconds:
                result.status, result.next_after = "budget_spent", after_id
                break
        if in_flight is not None:
            filled.add(in_flight.result())
    # Moved only once every chunk before it is written: a failed run is retried from its start.
    if result.next_after is None:
        client.delete(CURSOR_KEY)
    else:
        client.set(CURSOR_KEY, result.next_after, ex=CURSOR_TTL_SECONDS)
    result.written, result.refused, result.absent = filled.written, filled.refused, filled.absent
    return result
