"""Heartbeats: the time each periodic job last succeeded, for status and metrics."""
from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from db.models import JobHeartbeat


def record_heartbeat(session: Session, name: str, result: dict | None = None,
                     at: datetime | None = None) -> None:
    at = at or datetime.now(timezone.utc)
    statement = insert(JobHeartbeat).values(name=name, last_success_at=at, last_result=result)
    session.execute(statement.on_conflict_do_update(
        index_elements=[JobHeartbeat.name],
        set_={"last_success_at": statement.excluded.last_success_at,
              "last_result": statement.excluded.last_result}))


def heartbeats(session: Session) -> dict[str, datetime]:
    rows = session.execute(select(JobHeartbeat.name, JobHeartbeat.last_success_at)).all()
    return {name: at for name, at in rows}
