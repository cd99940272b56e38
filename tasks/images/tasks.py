"""Celery entry points of the images family: the web tier's contract.

Each task takes ids and a path, and runs three short transactions around the
CPU work (tasks/images/workflow.py over service.py): no transaction or lock is held while
a photo is decoded. A rejected upload is a normal, recorded outcome (status
FAILED with an error_code), returned as the result and never retried; a
transient database error is retried by @job with backoff.
"""
from __future__ import annotations

from db.session import session_scope
from tasks.images import service
from tasks.images.workflow import process_upload
from workers.task import UuidStr, job


@job("images.process_profile_photo")
def process_profile_photo(user_id: int, source_path: str) -> dict:
    """Make the four variants of a profile photo and point users.profile_image_url at the medium one."""
    with session_scope() as session:
        subject = service.profile_subject(session, user_id)
        if subject is None:
            return {"status": "gone", "user_id": user_id}
        start = service.begin_processing(session, subject, source_path)
    return process_upload(subject, start, source_path)


@job("images.process_post_photo")
def process_post_photo(post_id: UuidStr, source_path: str) -> dict:
    """Make the four variants of a post photo and point posts.image_url at the large one."""
    with session_scope() as session:
        subject = service.post_subject(session, post_id)
        if subject is None:
            return {"status": "gone", "post_id": post_id}
        start = service.begin_processing(session, subject, source_path)
    return process_upload(subject, start, source_path)
