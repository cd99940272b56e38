"""The record of every upkeep run (``upkeep_runs``), and the latest one of a job for ``status``."""
from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import UpkeepRun


def record(session: Session, job: str, started_at: datetime, details: dict, *, dry_run: bool = False,
           failed: bool = False) -> dict:
    """Store one run; ``status`` is ``failed`` when the job failed, ``partial`` when some table did."""
    status = "failed" if failed else ("partial" if details.get("failed") else "ok")
    session.add(UpkeepRun(job=job, status=status, dry_run=dry_run, started_at=started_at,
                          finished_at=datetime.now(timezone.utc), details=details))
    session.flush()
    return {"job": job, "status": status, **details}


def latest(session: Session, job: str, *, include_dry_runs: bool = False) -> UpkeepRun | None:
    query = select(UpkeepRun).where(UpkeepRun.job == job)
    if not include_dry_runs:
        query = query.where(UpkeepRun.dry_run.is_(False))
    return session.scalars(query.order_by(UpkeepRun.finished_at.desc()).limit(1)).first()
