"""Job-level overlap guard: a periodic run that finds its predecessor still
running exits cleanly instead of doing the same work twice."""
from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.orm import Session


def try_job_lock(session: Session, job_name: str) -> bool:
    """Take the job's transaction-scoped advisory lock if free; released at commit/rollback.

    Transaction-scoped, not session-scoped: a pooled connection can never leak it.
    """
    return bool(session.execute(text("SELECT pg_try_advisory_xact_lock(hashtext(:name))"),
                                {"name": job_name}).scalar())
