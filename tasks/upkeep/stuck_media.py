"""Uploads that no task will finish: re-enqueued once, then failed as ``worker_lost``.

A ``media_files`` row is stuck when it has been PROCESSING for longer than the
images queue's hard time limit plus a margin (its worker died and the message is
gone), or PENDING for more than an hour. The first sweep that finds it marks it
(``metadata.swept_at``) and sends its task again after commit; the upload is
idempotent (the row's dedupe key), so a task that was only slow converges. A row
still stuck at a later sweep is FAILED with ``worker_lost``, so the web tier
always learns the end.
"""
from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import text
from sqlalchemy.orm import Session

from celeryconfig import QUEUE_TIME_LIMITS
from tasks.images import service
from tasks.images.errors import WORKER_LOST, ImageRejected
from tasks.images.workflow import SUBJECT_ARGUMENT
from workers.celery_app import app
from workers.reliability.enqueue import enqueue_on_commit

PROCESSING_MARGIN = timedelta(minutes=5)
PENDING_FOR = timedelta(hours=1)
SWEEP_LIMIT = 500  # rows per run; the sweep runs every 15 minutes

STUCK_SQL = text(
    "SELECT id, purpose, user_id, post_id, original_name, metadata ? 'swept_at' AS swept FROM media_files "
    "WHERE (processing_status = 'PROCESSING' AND updated_at < :processing_cutoff) "
    "   OR (processing_status = 'PENDING' AND created_at < :pending_cutoff) "
    "ORDER BY updated_at LIMIT :limit FOR UPDATE SKIP LOCKED")


def processing_cutoff(now: datetime) -> datetime:
    return now - timedelta(seconds=QUEUE_TIME_LIMITS["images"][1]) - PROCESSING_MARGIN


def sweep(session: Session, now: datetime, *, dry_run: bool = False) -> dict:
    """One bounded pass; the caller commits (the re-sends go out after the commit)."""
    rows = session.execute(STUCK_SQL, {"processing_cutoff": processing_cutoff(now),
                                       "pending_cutoff": now - PENDING_FOR, "limit": SWEEP_LIMIT}).all()
    report = {"requeued": 0, "worker_lost": 0}
    for row in rows:
        if row.swept or not row.original_name:
            report["worker_lost"] += 1
            if not dry_run:
                service.fail(session, str(row.id), ImageRejected(
                    WORKER_LOST, "stuck after being sent again once: its worker was lost"))
            continue
        report["requeued"] += 1
        if dry_run:
            continue
        session.execute(text("UPDATE media_files SET metadata = coalesce(metadata, '{}'::jsonb) "
                             "|| jsonb_build_object('swept_at', CAST(:now AS text)) WHERE id = :id"),
                        {"now": now.isoformat(), "id": row.id})
        subject_id = row.user_id if row.purpose == "profile_photo" else str(row.post_id)
        enqueue_on_commit(session, app.signature(f"images.process_{row.purpose}", kwargs={
            SUBJECT_ARGUMENT[row.purpose]: subject_id, "source_path": row.original_name}))
    return report
