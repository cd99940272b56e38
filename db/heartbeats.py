"""Heartbeats: the time each periodic job last succeeded, and each beat entry was last dispatched.

One row per name in ``job_heartbeats``; ``status`` and the exporter read them,
the singleton beat resumes its predecessor's timetable from them.
"""
from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from db.models import JobHeartbeat

BEAT_DISPATCH_PREFIX = "beat:"


def record_heartbeat(session: Session, name: str, result: dict | None = None,
                     at: datetime | None = None) -> None:
    at = at or datetime.now(timezone.utc)
    statement = insert(JobHeartbeat).values(name=name, last_success_at=at, last_result=result)
    session.execute(statement.on_conflict_do_update(
        index_elements=[JobHeartbeat.name],
        set_={"last_success_at": statement.excluded.last_success_at,
              "last_result": statement.excluded.last_result}))


def heartbeats(session: Session, prefix: str | None = None) -> dict[str, datetime]:
    query = select(JobHeartbeat.name, JobHeartbeat.last_success_at)
    if prefix is not None:
        query = query.where(JobHeartbeat.name.startswith(prefix, autoescape=True))
    return {name: at for name, at in session.execute(query).all()}


def beat_dispatches(session: Session) -> dict[str, datetime]:
    """{schedule entry name: last dispatch}, as recorded by the singleton beat."""
    return {name[len(BEAT_DISPATCH_PREFIX):]: at
            for name, at in heartbeats(session, BEAT_DISPATCH_PREFIX).items()}
