"""Both tasks through the real broker to real workers."""
from __future__ import annotations

import pytest
from PIL import Image
from sqlalchemy import select

from db.models import MediaFile, Post, ProcessingStatus, User
from db.session import session_scope
from tests.images import corpus
from tests.images.test_tasks import make_post, make_user

pytestmark = pytest.mark.integration


def processed_by(celery_app, prefix: str) -> int:
    """How many tasks the worker named ``prefix...`` has run (results no longer name their worker)."""
    stats = celery_app.control.inspect(timeout=5).stats() or {}
    (name,) = [name for name in stats if name.startswith(prefix)]
    return sum(stats[name].get("total", {}).values())


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
        assert good.get(timeout=60)["status"] == "COMPLETED"
        assert processed_by(celery_app, "images-survivor") == len(results) + 1  # all of them, in the subprocess
        assert proc.poll() is None
    finally:
        celery_app.control.add_consumer("images", destination=[celery_worker.hostname], reply=True)


def test_the_soft_time_limit_while_decoding_records_timeout_and_is_not_retried(
        celery_app, celery_worker, worker_processes, clean_db, media_root, put_upload):
    """A real prefork child: the pool's soft limit (SIGUSR1) fires while a large PNG
    decodes; the upload is FAILED with `timeout`, the task succeeds, delivered once."""
    from tasks.images.tasks import process_profile_photo
    from workers.reliability.deliveries import deliveries

    celery_app.control.cancel_consumer("images", destination=[celery_worker.hostname], reply=True)
    try:
        # The only consumer of the images queue now; the in-process thread pool has no soft limits at all.
        worker_processes("images-timeout", ["images"], concurrency=1)
        user_id = make_user()
        # Warm the child (imports, database connection), so the limit falls inside the render.
        assert process_profile_photo.delay(user_id, put_upload("warm.jpg", corpus.photo_jpeg(300, 300))).get(
            timeout=60)["status"] == "COMPLETED"
        # ~1.6 s to decode and reduce (6300x6300 RGBA, partly transparent), 170 KB, within every cap.
        slow = put_upload("slow.png", corpus.save(Image.new("RGBA", (6300, 6300), (10, 20, 30, 128)), "PNG"))
        result = process_profile_photo.apply_async((user_id, slow), soft_time_limit=0.4, time_limit=20)
        summary = result.get(timeout=60)
        assert summary["status"] == "FAILED" and summary["error_code"] == "timeout", summary
        assert result.state == "SUCCESS" and result.retries in (0, None)
        assert deliveries(result.id, 0) == 1 and deliveries(result.id, 1) == 0  # one delivery, no retry
        with session_scope() as session:
            row = session.scalar(select(MediaFile).where(MediaFile.original_name == slow))
            assert row.processing_status == ProcessingStatus.FAILED and row.attempts == 1
            assert row.meta["error_code"] == "timeout"
        assert processed_by(celery_app, "images-timeout") == 2  # the warm-up and this one, in the prefork child
    finally:
        celery_app.control.add_consumer("images", destination=[celery_worker.hostname], reply=True)
