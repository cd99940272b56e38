"""Dead letters: tasks that will not run again by themselves.

A task lands here when it fails permanently (a ``JobError`` such as
``InvalidArguments``, or an unexpected exception, which is never retried),
exhausts its transient-error retries, times out, kills its worker too often
(poison pill, see workers/reliability/deliveries.py) or arrives as a bad message (unknown
task name, undecodable body, pickle, oversized; see workers/reliability/consumer.py).

Recording is hooked once, on Celery's ``task_failure`` signal, for every task
declared with ``@job`` (workers/task.py), so no family has to remember it.
``python -m workers dead list|show|retry|purge`` manages the rows.
"""
from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from db.models import DeadLetter
from workers.errors import error_code

log = logging.getLogger("workers.reliability.dead_letters")

MAX_MESSAGE_CHARS = 2000
MAX_PREVIEW_CHARS = 1000


@dataclass(frozen=True)
class Failure:
    task_id: str | None
    task_name: str
    exception_type: str
    exception_message: str
    error_code: str
    args: Any = None
    kwargs: Any = None
    queue: str | None = None
    attempts: int = 1
    raw_preview: str | None = None

    @classmethod
    def from_exception(cls, task, task_id: str, exc: BaseException, args, kwargs) -> "Failure":
        """A task's final failure, as the tracer or the worker reports it."""
        request = task.request if getattr(task.request, "id", None) == task_id else None
        retries = (getattr(request, "retries", 0) or 0) if request is not None else 0
        delivery = (getattr(request, "delivery_info", None) or {}) if request is not None else {}
        return cls(
            task_id=task_id, task_name=task.name,
            exception_type=type(exc).__name__, exception_message=str(exc),
            error_code=error_code(exc),
            args=list(args or ()), kwargs=dict(kwargs or {}),
            queue=delivery.get("routing_key") or task.name.split(".", 1)[0],
            attempts=getattr(exc, "deliveries", 0) or retries + 1,
        )


def _json_safe(value: Any) -> Any:
    if value is None:
        return None
    try:
        # JSONB refuses \u0000 as well; keep it visible as text instead.
        return json.loads(json.dumps(value, default=repr).replace("\\u0000", "\\\\u0000"))
    except (TypeError, ValueError):
        return repr(value)[:MAX_PREVIEW_CHARS]


def _text(value: str | None, limit: int) -> str | None:
    # PostgreSQL text cannot hold NUL; a hostile body may be full of them.
    return value[:limit].replace("\x00", "\\x00") if value is not None else None


def record(session: Session, failure: Failure, at: datetime | None = None) -> None:
    """Upsert the task's dead letter; the caller commits."""
    at = at or datetime.now(timezone.utc)
    values = dict(
        task_id=_text(failure.task_id, 200) or f"no-id-{uuid.uuid4()}",
        task_name=_text(failure.task_name or "<unknown>", 200),
        queue=failure.queue,
        args=_json_safe(failure.args),
        kwargs=_json_safe(failure.kwargs),
        raw_preview=_text(failure.raw_preview, MAX_PREVIEW_CHARS),
        exception_type=_text(failure.exception_type, 200),
        exception_message=_text(failure.exception_message or "", MAX_MESSAGE_CHARS),
        error_code=failure.error_code[:100],
        attempts=max(1, failure.attempts),
        status="dead",
        first_seen=at,
        last_seen=at,
    )
    statement = insert(DeadLetter).values(**values)
    excluded = statement.excluded
    session.execute(statement.on_conflict_do_update(
        index_elements=[DeadLetter.task_id],
        set_={
            # A re-failure after `dead retry` adds its attempts to the history.
            "attempts": DeadLetter.attempts + excluded.attempts,
            "last_seen": excluded.last_seen,
            "status": "dead",
            "exception_type": excluded.exception_type,
            "exception_message": excluded.exception_message,
            "error_code": excluded.error_code,
        }))


def record_now(failure: Failure) -> bool:
    """Record in a transaction of its own; never raises (the failure is logged either way)."""
    from db.session import session_scope

    log.error("dead letter: %s %s", failure.task_name, failure.error_code,
              extra={"dead_task_id": failure.task_id, "dead_task_name": failure.task_name,
                     "error_code": failure.error_code, "error": failure.exception_message[:500]})
    try:
        with session_scope() as session:
            record(session, failure)
        return True
    except Exception:  # noqa: BLE001 - the database may be the reason the task died
        log.exception("could not record dead letter for %s[%s]", failure.task_name, failure.task_id)
        return False


def settle(task, failure: Failure, args, kwargs) -> bool:
    """Record a task's dead letter, then let its family close out its state (say, mark an
    upload FAILED) through the task's ``on_dead_letter`` hook. False if the row could not be written."""
    recorded = record_now(failure)
    hook = getattr(task, "on_dead_letter", None)
    if hook is not None:
        try:
            hook(list(args or ()), dict(kwargs or {}), failure)
        except Exception:  # noqa: BLE001 - the dead letter stands; the close-out is retried by `dead retry`
            log.exception("could not close out the state of a dead-lettered task",
                          extra={"dead_task_name": failure.task_name, "dead_task_id": failure.task_id})
    return recorded


# --- Operator commands --------------------------------------------------------

def list_letters(session: Session, limit: int = 50, status: str | None = None) -> list[DeadLetter]:
    query = select(DeadLetter).order_by(DeadLetter.last_seen.desc(), DeadLetter.id.desc()).limit(limit)
    if status:
        query = query.where(DeadLetter.status == status)
    return list(session.scalars(query))


def summary(session: Session, now: datetime | None = None) -> dict[str, int]:
    """Dead letters by status, in total and seen in the last hour: one query for every reader."""
    since = (now or datetime.now(timezone.utc)) - timedelta(hours=1)
    total, dead, retried, last_hour = session.execute(select(
        func.count(),
        func.count().filter(DeadLetter.status == "dead"),
        func.count().filter(DeadLetter.status == "retried"),
        func.count().filter(DeadLetter.last_seen >= since),
    )).one()
    return {"total": total, "dead": dead, "retried": retried, "last_hour": last_hour}


class NotRetryable(Exception):
    pass


def retry(session: Session, letter_id: int, app=None) -> DeadLetter:
    """Re-send the task by name with its stored arguments and the same task id.

    Keeping the id means a new failure updates this row rather than adding one;
    the id's delivery counters and stored result are cleared so a former poison
    pill gets a fresh count and waiters see the new outcome. The caller commits.
    """
    from workers.reliability import deliveries

    letter = session.get(DeadLetter, letter_id, with_for_update=True)
    if letter is None:
        raise LookupError(f"no dead letter {letter_id}")
    if letter.args is None and letter.kwargs is None:
        raise NotRetryable(f"dead letter {letter_id} has no decodable arguments ({letter.error_code}); "
                           "it can only be inspected and purged")
    if app is None:
        from workers.celery_app import app
    if letter.task_name not in app.tasks:
        app.loader.import_default_modules()
    if letter.task_name not in app.tasks:
        raise NotRetryable(f"task {letter.task_name!r} is not registered")
    deliveries.forget(letter.task_id)
    # The old FAILURE result would otherwise answer anyone waiting on this id
    # before the new attempt has run.
    app.AsyncResult(letter.task_id).forget()
    app.send_task(letter.task_name, args=letter.args or [], kwargs=letter.kwargs or {}, task_id=letter.task_id)
    letter.status = "retried"
    letter.retried_count += 1
    letter.retried_at = datetime.now(timezone.utc)
    return letter


def purge(session: Session, older_than: timedelta, now: datetime | None = None,
          status: str | None = None) -> int:
    cutoff = (now or datetime.now(timezone.utc)) - older_than
    statement = delete(DeadLetter).where(DeadLetter.last_seen < cutoff)
    if status:
        statement = statement.where(DeadLetter.status == status)
    return session.execute(statement).rowcount or 0


def describe(letter: DeadLetter) -> dict:
    return {
        "id": letter.id, "task_id": letter.task_id, "task_name": letter.task_name, "queue": letter.queue,
        "status": letter.status, "error_code": letter.error_code, "exception_type": letter.exception_type,
        "exception_message": letter.exception_message, "attempts": letter.attempts,
        "args": letter.args, "kwargs": letter.kwargs, "raw_preview": letter.raw_preview,
        "first_seen": letter.first_seen.isoformat() if letter.first_seen else None,
        "last_seen": letter.last_seen.isoformat() if letter.last_seen else None,
        "retried_count": letter.retried_count,
        "retried_at": letter.retried_at.isoformat() if letter.retried_at else None,
    }
