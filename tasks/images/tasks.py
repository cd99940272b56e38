"""Celery entry points of the images family: the web tier's contract.

Each task takes ids and a path, and runs three short transactions around the
CPU work (see tasks/images/service.py): no transaction or lock is held while
a photo is decoded. A rejected upload is a normal, recorded outcome (status
FAILED with an error_code), returned as the result and never retried; a
transient database error is retried by @job with backoff.
"""
from __future__ import annotations

import hashlib

from celery.exceptions import SoftTimeLimitExceeded

from db.session import session_scope
from tasks.images import pipeline, service, storage
from tasks.images.errors import INTERNAL_ERROR, TIMEOUT, ImageRejected
from workers.errors import TRANSIENT_ERRORS
from workers.task import UuidStr, job


@job("images.process_profile_photo")
def process_profile_photo(user_id: int, source_path: str) -> dict:
    """Make the four variants of a profile photo and point users.profile_image_url at the medium one."""
    with session_scope() as session:
        subject = service.profile_subject(session, user_id)
        if subject is None:
            return {"status": "gone", "user_id": user_id}
        start = service.begin_processing(session, subject, source_path)
    return _process(subject, start, source_path)


@job("images.process_post_photo")
def process_post_photo(post_id: UuidStr, source_path: str) -> dict:
    """Make the four variants of a post photo and point posts.image_url at the large one."""
    with session_scope() as session:
        subject = service.post_subject(session, post_id)
        if subject is None:
            return {"status": "gone", "post_id": post_id}
        start = service.begin_processing(session, subject, source_path)
    return _process(subject, start, source_path)


def _process(subject: service.Subject, start: service.Start, source_path: str) -> dict:
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
