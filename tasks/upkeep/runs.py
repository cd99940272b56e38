"""The record of every upkeep run (``upkeep_runs``), and the latest one of a job for ``status``."""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import datetime, timezone

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import UpkeepRun

log = logging.getLogger("tasks.upkeep")

Unit = tuple[str, Callable[[], dict]]


def each_table(what: str, units: Iterable[Unit]) -> dict:
    """Run each table's unit of work; one failing is logged and recorded, and the next still runs.

    Returns ``{"tables": {name: its report, or {"error": …}}, "failed": [names]}``.
    """
    report: dict = {"tables": {}, "failed": []}
    for name, unit in units:
        try:
            report["tables"][name] = unit()
        except Exception as exc:  # noqa: BLE001 - one table's failure must not stop the others
            log.error("%s of %s failed", what, name, extra={"upkeep_table": name, "error_code": type(exc).__name__},
                      exc_info=exc)
            report["tables"][name] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}
            report["failed"].append(name)
    return report


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
