"""The expiry sweep: bounded deletes of feed rows past expires_at."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import text
from sqlalchemy.orm import Session

from tasks.feed.locks import try_job_lock

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
    if not try_job_lock(session, JOB_NAME):
        return None
    return session.execute(EXPIRE_BATCH_SQL, {"now": now, "batch": batch}).rowcount
