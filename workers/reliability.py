"""Signal handlers shared by every task: dead letters and the sent-at header.

Connected once when the app is imported (workers/lifecycle.py), so every task
declared with ``@job`` gets them without doing anything.
"""
from __future__ import annotations

import time

from celery import signals

from workers.deadletters import Failure, record_now
from workers.errors import JobError


def failure_from_exception(task, task_id: str, exc: BaseException, args, kwargs) -> Failure:
    request = task.request if getattr(task.request, "id", None) == task_id else None
    retries = (getattr(request, "retries", 0) or 0) if request is not None else 0
    delivery = (getattr(request, "delivery_info", None) or {}) if request is not None else {}
    attempts = getattr(exc, "deliveries", 0) or retries + 1
    return Failure(
        task_id=task_id, task_name=task.name,
        exception_type=type(exc).__name__, exception_message=str(exc),
        # Only JobError's code is ours; SQLAlchemy errors carry a `code` of their own (a docs link id).
        error_code=exc.code if isinstance(exc, JobError) else type(exc).__name__,
        args=list(args or ()), kwargs=dict(kwargs or {}),
        queue=delivery.get("routing_key") or task.name.split(".", 1)[0],
        attempts=attempts,
    )


@signals.task_failure.connect
def _dead_letter_on_failure(sender=None, task_id=None, exception=None, args=None, kwargs=None, **_):
    from workers.task import JobTask

    # task_failure fires only for a final failure: a retry raises Retry (no
    # signal), a lost worker with reject_on_worker_lost requeues (no signal).
    if not isinstance(sender, JobTask) or exception is None:
        return
    record_now(failure_from_exception(sender, task_id, exception, args, kwargs))


@signals.before_task_publish.connect
def _stamp_sent_at(headers=None, **_):
    # The exporter reads the oldest message's age from this header; Celery's
    # protocol carries no send time of its own.
    if headers is not None and "sent_at" not in headers:
        headers["sent_at"] = time.time()
