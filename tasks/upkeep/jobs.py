"""Each upkeep job end to end: do the work, record the run in ``upkeep_runs``, return its report.

The Celery tasks (tasks.py), the operator CLI (cli.py) and the demo call these;
the work itself is in partitions (db/partitions.py), retention.py, purge.py,
stuck_media.py and backup.py.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sqlalchemy.exc import OperationalError

import settings
from db import partitions
from db.session import session_scope
from tasks.upkeep import backup, purge, retention, runs, stuck_media
from workers.errors import JobError


VERIFY_EVERY = timedelta(days=7)


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _record(job: str, started: datetime, details: dict, *, dry_run: bool = False, failed: bool = False) -> dict:
    with session_scope() as session:
        return runs.record(session, job, started, details, dry_run=dry_run, failed=failed)


def ensure_partitions(*, dry_run: bool = False) -> dict:
    started = _now()
    lock_timeout = settings.current().upkeep_lock_timeout_ms

    def ensure(spec: partitions.PartitionSpec) -> dict:
        with session_scope() as session:
            done = partitions.ensure(session, spec, started, lock_timeout_ms=lock_timeout, dry_run=dry_run)
            if dry_run:
                session.rollback()
        return done

    details = runs.each_table("ensure_partitions",
                              [(spec.table, lambda spec=spec: ensure(spec)) for spec in partitions.PARTITIONED_TABLES])
    return _record("ensure_partitions", started, details, dry_run=dry_run)


def apply_retention(*, dry_run: bool = False, progress: retention.Progress | None = None) -> dict:
    started = _now()
    try:
        report = retention.apply(started, dry_run=dry_run, progress=progress)
    except settings.SettingsError as exc:  # RETENTION_DAYS names a table that has no policy
        error = JobError(str(exc), code="bad_setting")
        _record("apply_retention", started, {"error": error.as_dict()}, dry_run=dry_run, failed=True)
        raise error from None
    return _record("apply_retention", started, report, dry_run=dry_run)


def purge_soft_deleted(*, dry_run: bool = False) -> dict:
    started = _now()
    return _record("purge_soft_deleted", started, purge.purge(started, dry_run=dry_run), dry_run=dry_run)


def sweep_stuck_media(*, dry_run: bool = False) -> dict:
    started = _now()
    with session_scope() as session:
        details = stuck_media.sweep(session, started, dry_run=dry_run)
        if dry_run:
            session.rollback()
    return _record("sweep_stuck_media", started, details, dry_run=dry_run)


def make_backup() -> dict:
    """Back up, rotate, and verify when the last verification is a week old (or failed)."""
    started = _now()
    try:
        manifest = backup.create(started)
    except JobError as exc:
        _record("backup", started, {"error": exc.as_dict()}, failed=True)
        raise
    details = {**{k: v for k, v in manifest.items() if k != "tables"}, "rotated_out": backup.rotate()}
    report = _record("backup", started, details)
    with session_scope() as session:
        last = runs.latest(session, "backup_verify")
        due = last is None or last.status != "ok" or started - last.finished_at >= VERIFY_EVERY
    if due:
        report["verify"] = verify_backup()
    return report


def verify_backup() -> dict:
    started = _now()
    try:
        details = backup.verify()
    except JobError as exc:
        _record("backup_verify", started, {"error": exc.as_dict()}, failed=True)
        raise
    return _record("backup_verify", started, details)


def health(now: datetime | None = None) -> tuple[dict, list[str]]:
    """For ``status``: the last run of each job, and the problems (partitions, a failed backup)."""
    now = now or _now()
    try:
        with session_scope() as session:
            problems = partitions.health(session, now)
    except OperationalError as exc:  # a lock_timeout behind DDL: say so rather than hang or crash the probe
        problems = [f"partitions could not be read ({type(exc.orig).__name__})"]
    with session_scope() as session:
        state = {}
        for job in ("ensure_partitions", "apply_retention", "purge_soft_deleted", "sweep_stuck_media",
                    "backup", "backup_verify"):
            last = runs.latest(session, job)
            state[job] = None if last is None else {"status": last.status,
                                                    "age_s": round((now - last.finished_at).total_seconds())}
            if last is not None and last.status != "ok":
                error = (last.details or {}).get("error", {})
                reason = error.get("message") if isinstance(error, dict) else None
                problems.append(f"upkeep {job} {last.status}" + (f": {reason}" if reason else
                                f" (tables: {', '.join(last.details.get('failed', []))})"))
    return state, problems
