"""One upload, end to end: the orchestrator behind both image tasks.

Three short transactions around the CPU work, so no transaction or lock is held
while a photo is decoded: ``begin_processing`` (upsert the media_files row as
PROCESSING), then, after rendering, ``finish`` or ``fail``, then
``sweep_unreferenced`` (see tasks/images/service.py). A rejected upload is a
normal, recorded outcome, returned as the result and never retried; a bug is
recorded as ``internal_error`` and re-raised; transient errors propagate for
@job to retry.

``close_out`` is the family's dead-letter hook: whatever the reason a task
will not run again (a poison pill that killed its worker every time,
exhausted retries), its row is failed, so the web tier always learns the end.
"""
from __future__ import annotations

import hashlib
import uuid

from celery.exceptions import SoftTimeLimitExceeded

from db.session import session_scope
from tasks.images import pipeline, service, storage
from tasks.images.errors import DEAD_LETTERED, INTERNAL_ERROR, TIMEOUT, WORKER_LOST, ImageRejected
from workers.errors import TRANSIENT_ERRORS

SUBJECT_ARGUMENT = {"profile_photo": "user_id", "post_photo": "post_id"}


def process_upload(purpose: str, subject_id: int | str, source_path: str) -> dict:
    """Render one upload into its variants and point its subject at them."""
    with session_scope() as session:
        subject = service.find_subject(session, purpose, subject_id)
        if subject is None:
            return {"status": "gone", SUBJECT_ARGUMENT[purpose]: subject_id}
        start = service.begin_processing(session, subject, source_path)
    if start.summary is not None:  # a redelivered or duplicated message: converge, change nothing
        with session_scope() as session:
            service.sweep_unreferenced(session, subject)
        return start.summary
    rendered = rejection = data = None
    try:
        data = storage.read_upload(source_path)
        rendered = pipeline.render(data)
    except ImageRejected as exc:
        rejection = exc
    except SoftTimeLimitExceeded:
        rejection = ImageRejected(TIMEOUT, "processing exceeded the images queue's soft time limit")
    except TRANSIENT_ERRORS:
        raise
    except Exception as exc:  # a bug, not the file's fault: record it, then fail visibly
        with session_scope() as session:
            service.fail(session, start.media_id, ImageRejected(INTERNAL_ERROR, f"{type(exc).__name__}: {exc}"[:300]))
        raise
    if rejection is not None:
        facts = {"sha256": hashlib.sha256(data).hexdigest(), "file_size": len(data)} if data else None
        with session_scope() as session:
            return service.fail(session, start.media_id, rejection, facts)
    base = storage.variant_base(subject.purpose, subject.key, rendered.sha256)
    try:
        with session_scope() as session:
            summary = service.finish(session, subject, start.media_id, rendered)
    except ImageRejected as exc:  # a stored name of the subject is not ours: checked before any write
        with session_scope() as session:
            return service.fail(session, start.media_id, exc, {"sha256": rendered.sha256,
                                                               "file_size": rendered.file_size})
    except BaseException:
        # The files may be written while the row and reference rolled back.
        with session_scope() as session:
            service.sweep_unreferenced(session, subject, extra_bases=(base,))
        raise
    with session_scope() as session:
        service.sweep_unreferenced(session, subject, extra_bases=(summary.get("previous_filename") or "",))
    return summary


def _is_subject_id(purpose: str, value: object) -> bool:
    if purpose == "profile_photo":
        return isinstance(value, int) and not isinstance(value, bool)
    try:
        uuid.UUID(str(value))
        return isinstance(value, str)
    except ValueError:
        return False


def close_out(purpose: str):
    """The dead-letter hook of the task for ``purpose``: fail its upload's row."""
    def hook(args: list, kwargs: dict, failure) -> None:
        subject_id = kwargs.get(SUBJECT_ARGUMENT[purpose], args[0] if args else None)
        source_path = kwargs.get("source_path", args[1] if len(args) > 1 else None)
        if not (_is_subject_id(purpose, subject_id) and isinstance(source_path, str)):
            return  # arguments the task refused (invalid_arguments): there is no upload to close
        if failure.error_code == "poison_pill":
            rejection = ImageRejected(WORKER_LOST, f"its worker died on each of {failure.attempts - 1} deliveries")
        else:
            rejection = ImageRejected(DEAD_LETTERED, f"its task was dead-lettered ({failure.error_code})")
        with session_scope() as session:
            subject = service.find_subject(session, purpose, subject_id)
            if subject is not None:
                service.close_out(session, subject, source_path, rejection)
    return hook
