"""Celery entry points of the search family: thin wrappers over indexing.py and verify.py."""
from __future__ import annotations

from datetime import datetime, timezone

from db.heartbeats import record_heartbeat
from db.session import session_scope
from tasks.search import indexing, verify as verification
from tasks.search.engines import engine
from workers.task import job


@job("search.index_dirty")
def index_dirty() -> dict:
    """Beat, every 30 s: write changed posts to the index in batches of SEARCH_BATCH, within a budget."""
    result = indexing.index_dirty(session_scope, engine())
    if result.status == "ok":
        with session_scope() as session:
            record_heartbeat(session, "search.index_dirty", result.as_dict())
    return result.as_dict()


@job("search.verify")
def verify() -> dict:
    """Beat, nightly: remove stale documents, queue missing ones, record the drift."""
    with session_scope() as session:
        result = verification.verify(session, engine(), datetime.now(timezone.utc).date())
        if result.status == "ok":
            record_heartbeat(session, "search.verify", result.as_dict())
    return result.as_dict()
