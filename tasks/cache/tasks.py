"""Celery entry points of the cache family: thin wrappers over invalidation.py and warm.py."""
from __future__ import annotations

from datetime import datetime, timezone

import settings
from db.heartbeats import record_heartbeat
from db.session import session_scope
from tasks.cache import invalidation, warm
from tasks.cache.client import cache_redis
from workers.task import job


def utcnow() -> datetime:
    """The family's clock: Python's, so freezegun fixes it."""
    return datetime.now(timezone.utc)


@job("cache.invalidate")
def invalidate(event: str, ids: list) -> dict:
    """After a committed write: drop (or, for notifications, refresh) the keys the event fans out to.

    ``ids`` are user ids or UUID strings, as the event takes (invalidation.EVENTS checks them)."""
    spec, ids = invalidation.check(event, ids)
    client = cache_redis()
    if client is None:
        return {"status": "disabled"}
    with session_scope() as session:
        return invalidation.invalidate(session, client, spec, ids, utcnow()).as_dict()


@job("cache.warm_active")
def warm_active() -> dict:
    """Beat, every 5 min: cache profile, friends list and first feed page of the recently active."""
    client = cache_redis()
    if client is None:
        return {"status": "disabled"}
    found = settings.current()
    with session_scope() as session:
        result = warm.warm_active(session, client, utcnow(), active_minutes=found.cache_active_minutes,
                                  budget_seconds=found.cache_warm_budget_seconds).as_dict()
        if result["status"] != "skipped":
            record_heartbeat(session, warm.JOB_NAME, result)
        return result
