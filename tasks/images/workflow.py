"""One upload's workflow: the three short transactions around the CPU work.

The task has already run ``begin_processing``; this renders the upload with no
transaction or lock held, then records the outcome (``finish`` or ``fail``) and
sweeps variants nothing references (see tasks/images/service.py). A rejected
upload is a normal, recorded outcome; a bug is recorded as ``internal_error``
and re-raised; transient errors propagate for @job to retry.
"""
from __future__ import annotations

import hashlib

from celery.exceptions import SoftTimeLimitExceeded

from db.session import session_scope
from tasks.images import pipeline, service, storage
from tasks.images.errors import INTERNAL_ERROR, TIMEOUT, ImageRejected
from workers.errors import TRANSIENT_ERRORS


def process_upload(subject: service.Subject, start: service.Start, source_path: str) -> dict:
    """Render the upload with no transaction open, then record the outcome and sweep old variants."""
    if start.summary is not None:  # a redelivered or duplicated message: converge, change nothing
        with session_scope() as session:
            service.sweep_unreferenced(session, subject)
        return start.summary
    rendered = rejection = data = None
    try:
        rejection = service.too_many_starts(start)
        if rejection is None:
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
    except BaseException:
        # The files may be written while the row and reference rolled back.
        with session_scope() as session:
            service.sweep_unreferenced(session, subject, extra_bases=(base,))
        raise
    with session_scope() as session:
        service.sweep_unreferenced(session, subject, extra_bases=(summary.get("previous_filename") or "",))
    return summary
