"""The expiry sweep: bounded deletes of feed rows past expires_at."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import text
from sqlalchemy.orm import Session

from db.locks import try_xact_lock

JOB_NAME = "feed.expire_items"

# Walks idx_feed_expires_at; SKIP LOCKED leaves rows a concurrent rescore is
# replacing to that rescore.
EXPIRE_BATCH_SQL = text("""
DELETE FROM feed_items WHERE id IN (
    SELECT id FROM feed_items WHERE expires_at <= :now
    ORDER BY expires_at LIMIT :batch FOR UPDATE SKIP LOCKED)
""")


def expire_batch(session: Session, now: datetime, batch: int) -> int | None:
    """Delete up to ``batch`` expired rows; None when another sweep holds the lock. Never commits."""
    if not try_xact_lock(session, "feed.job", JOB_NAME):
        return None
    return session.execute(EXPIRE_BATCH_SQL, {"now": now, "batch": batch}).rowcount


def sweep_expired(now: datetime, scope=None) -> dict:
    """Run batches, each in its own transaction, until none is full or the budget is spent.

    Short transactions keep row locks and WAL bursts small; EXPIRE_MAX_BATCHES bounds one run.
    """
    from db.session import session_scope
    from tasks.feed import algorithm as A

    scope = scope or session_scope
    deleted = 0
    for _ in range(A.EXPIRE_MAX_BATCHES):
        with scope() as session:
            count = expire_batch(session, now, A.EXPIRE_BATCH)
        if count is None:
            return {"status": "skipped", "reason": "another sweep is running", "deleted": deleted}
        deleted += count
        if count < A.EXPIRE_BATCH:
            break
    return {"status": "ok", "deleted": deleted}
