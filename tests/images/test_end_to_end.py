"""Both tasks through the real broker to real workers."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from db.models import MediaFile, Post, ProcessingStatus, User
from db.session import session_scope
from tests.images import corpus
from tests.images.test_tasks import make_post, make_user

pytestmark = pytest.mark.integration


def test_both_tasks_through_the_broker_write_files_and_rows(celery_worker, clean_db, media_root, put_upload):
    from tasks.images.tasks import process_post_photo, process_profile_photo

    user_id = make_user("photographer")
    post_id = make_post(user_id)
    profile = process_profile_photo.delay(user_id, put_upload("me.jpg", corpus.gps_jpeg()))
    post = process_post_photo.delay(post_id=post_id, source_path=put_upload("p.webp", corpus.animated("WEBP")))
    rejected = process_profile_photo.delay(user_id, "../../etc/passwd")
    profile_summary, post_summary = profile.get(timeout=60), post.get(timeout=60)
    rejected_summary = rejected.get(timeout=60)

    assert profile_summary["status"] == post_summary["status"] == "COMPLETED"
    # A rejection is a successful task with a FAILED record, not a retried failure.
    assert rejected.state == "SUCCESS" and rejected.retries in (0, None)
    assert rejected_summary["status"] == "FAILED" and rejected_summary["error_code"] == "bad_path"
    for summary, folder in ((profile_summary, "profile_photos"), (post_summary, "post_photos")):
        for filename in summary["variants"].values():
            data = (media_root / folder / filename).read_bytes()
            assert data[:3] == b"\xff\xd8\xff" and b"Exif" not in data
    with session_scope() as session:
        user = session.get(User, user_id)
        assert user.profile_image_url.endswith(f"{profile_summary['filename']}_medium.jpg")
        assert session.get(Post, post_id).image_url.endswith(f"{post_summary['filename']}_large.jpg")
        statuses = sorted(session.scalars(select(MediaFile.processing_status)).all())
    assert statuses == sorted([ProcessingStatus.COMPLETED, ProcessingStatus.COMPLETED, ProcessingStatus.FAILED])


def test_a_prefork_worker_survives_hostile_files(celery_app, celery_worker, worker_processes, clean_db,
                                                 media_root, put_upload):
    """A real `celery worker` process (prefork, time limits, memory ceiling) takes a
    pixel bomb, a truncated JPEG and garbage, then still processes a good photo."""
    from tasks.images.tasks import process_profile_photo

    # Keep the in-process test worker off the images queue, so the subprocess gets every task.
    celery_app.control.cancel_consumer("images", destination=[celery_worker.hostname], reply=True)
    try:
        proc = worker_processes("images-survivor", ["images"], concurrency=1)
        user_id = make_user()
        hostile = {name: put_upload(name, corpus.CORPUS[name][0]())
                   for name in ("bomb_50000.png", "bomb.webp", "truncated.jpg", "jpeg_then_html.jpg")}
        results = {name: process_profile_photo.delay(user_id, path) for name, path in hostile.items()}
        good = process_profile_photo.delay(user_id, put_upload("good.jpg", corpus.photo_jpeg(640, 480)))
        for name, result in results.items():
            summary = result.get(timeout=60)
            assert summary["status"] == "FAILED" and summary["error_code"] == corpus.CORPUS[name][1]
            assert result.worker.startswith("images-survivor")
        assert good.get(timeout=60)["status"] == "COMPLETED"
        assert good.worker.startswith("images-survivor")
        assert proc.poll() is None
    finally:
        celery_app.control.add_consumer("images", destination=[celery_worker.hostname], reply=True)
