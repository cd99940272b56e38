"""The task bodies against real PostgreSQL and a real MEDIA_ROOT (called in-process;
the broker path is in test_end_to_end.py). Data is committed, hence clean_db."""
from __future__ import annotations

import threading
import uuid

import pytest
from sqlalchemy import select, text

from db.models import MediaFile, Post, ProcessingStatus, User
from db.session import session_scope
from tasks.images import service, storage
from tasks.images.tasks import process_post_photo, process_profile_photo
from tests.images import corpus


def make_user(name: str | None = None) -> int:
    name = name or f"u{uuid.uuid4().hex[:8]}"
    with session_scope() as session:
        user = User(email=f"{name}@example.com", username=name, hashed_password="!")
        session.add(user)
        session.flush()
        return user.id


def make_post(author_id: int) -> str:
    with session_scope() as session:
        post = Post(author_id=author_id, content="photo", post_type="photo")
        session.add(post)
        session.flush()
        return post.id


def rows(**filters) -> list[MediaFile]:
    with session_scope() as session:
        return list(session.scalars(select(MediaFile).filter_by(**filters).order_by(MediaFile.created_at)))


def user_row(user_id: int) -> User:
    with session_scope() as session:
        return session.get(User, user_id)


def files(media_root, folder="profile_photos") -> set[str]:
    path = media_root / folder
    return {p.name for p in path.iterdir()} if path.exists() else set()


@pytest.mark.parametrize("name", sorted(corpus.CORPUS))
def test_each_corpus_file_through_the_task_records_one_row(clean_db, media_root, put_upload, name):
    factory, expected_code = corpus.CORPUS[name]
    user_id = make_user()
    summary = process_profile_photo(user_id, put_upload(name, factory()))
    (row,) = rows(user_id=user_id)
    assert summary["media_file_id"] == str(row.id) and row.original_name == name
    if expected_code:
        assert summary["status"] == "FAILED" and summary["error_code"] == expected_code
        assert row.processing_status == ProcessingStatus.FAILED
        assert row.meta["error_code"] == expected_code and row.meta["message"]
        assert files(media_root) == set()
        assert user_row(user_id).profile_image_url is None
    else:
        assert summary["status"] == "COMPLETED" and row.processing_status == ProcessingStatus.COMPLETED
        for key in ("sha256", "blurhash", "dominant_color", "variants", "crop_box", "timings_ms"):
            assert row.meta[key] and summary[key] == row.meta[key]
        assert files(media_root) == set(row.meta["variants"].values())
        assert row.mime_type in ("image/jpeg", "image/png", "image/webp") and row.file_size > 0
        if name.startswith("orientation_"):
            assert (row.width, row.height) == (320, 240)


def test_profile_photo_success_sets_the_seed_fields_and_replacing_it_deletes_the_old_files(
        clean_db, media_root, put_upload):
    user_id = make_user()
    first = process_profile_photo(user_id, put_upload("a.jpg", corpus.photo_jpeg(640, 480)))
    base = first["filename"]
    user = user_row(user_id)
    assert user.profile_photo_filename == base
    assert user.profile_image_url == f"/media/profile_photos/{base}_medium.jpg" == first["url"]
    assert files(media_root) == {f"{base}_{s}.jpg" for s in ("thumbnail", "small", "medium", "large")}

    second = process_profile_photo(user_id, put_upload("b.jpg", corpus.photo_jpeg(500, 700)))
    assert second["filename"] != base and second["previous_filename"] == base
    assert files(media_root) == set(second["variants"].values())
    assert user_row(user_id).profile_photo_filename == second["filename"]
    old, new = rows(user_id=user_id)
    assert old.processing_status == ProcessingStatus.COMPLETED and "variants_deleted_at" in old.meta
    assert "variants_deleted_at" not in new.meta


def test_a_duplicated_task_converges_to_one_row_and_one_set_of_files(clean_db, media_root, put_upload):
    user_id = make_user()
    source = put_upload("dup.jpg", corpus.photo_jpeg(640, 480))
    first = process_profile_photo(user_id, source)
    again = process_profile_photo(user_id, source)
    assert again["duplicate"] and again["filename"] == first["filename"] and again["status"] == "COMPLETED"
    (row,) = rows(user_id=user_id)
    assert row.attempts == 1
    assert files(media_root) == set(first["variants"].values())
    # The same content uploaded again under another name keeps the same files.
    third = process_profile_photo(user_id, put_upload("dup-again.jpg", (media_root / "uploads" / source).read_bytes()))
    assert third["filename"] == first["filename"] and not third.get("duplicate")
    assert files(media_root) == set(first["variants"].values())


def test_a_task_whose_worker_died_mid_way_is_redelivered_and_completes(clean_db, media_root, put_upload):
    user_id = make_user()
    source = put_upload("c.jpg", corpus.photo_jpeg(300, 300))
    with session_scope() as session:  # the first delivery got as far as PROCESSING, then died
        service.begin_processing(session, service.Subject("profile_photo", user_id), source)
    summary = process_profile_photo(user_id, source)
    (row,) = rows(user_id=user_id)
    assert summary["status"] == "COMPLETED" and row.attempts == 2
    assert user_row(user_id).profile_photo_filename == row.filename


def test_close_out_fails_an_upload_in_progress_and_keeps_finished_ones(clean_db, media_root, put_upload):
    from tasks.images.workflow import close_out
    from workers.reliability.dead_letters import Failure

    user_id = make_user()
    stuck = put_upload("stuck.jpg", corpus.photo_jpeg(300, 300))
    done = put_upload("done.jpg", corpus.photo_jpeg(300, 300))
    with session_scope() as session:
        service.begin_processing(session, service.Subject("profile_photo", user_id), stuck)
    assert process_profile_photo(user_id, done)["status"] == "COMPLETED"
    pill = Failure(task_id="t", task_name="images.process_profile_photo", exception_type="PoisonPill",
                   exception_message="", error_code="poison_pill", attempts=6)
    hook = close_out("profile_photo")
    hook([user_id, stuck], {}, pill)
    hook([user_id, done], {}, pill)
    hook([], {"user_id": user_id, "source_path": "never-started.jpg"}, pill)  # died before its first commit
    by_source = {row.original_name: row for row in rows(user_id=user_id)}
    assert by_source[stuck].processing_status.value == "FAILED"
    assert by_source[stuck].meta["error_code"] == "worker_lost"
    assert by_source[done].processing_status.value == "COMPLETED"
    assert by_source["never-started.jpg"].meta["error_code"] == "worker_lost"
    hook(["not-an-id"], {}, pill)  # arguments the task itself refused: nothing to close, no error


def test_an_older_upload_finishing_late_does_not_take_the_photo_back(clean_db, media_root, put_upload):
    user_id = make_user()
    older = put_upload("older.jpg", corpus.photo_jpeg(300, 300))
    with session_scope() as session:  # the older upload's task started first...
        service.begin_processing(session, service.Subject("profile_photo", user_id), older)
    newer = process_profile_photo(user_id, put_upload("newer.jpg", corpus.photo_jpeg(400, 300)))
    late = process_profile_photo(user_id, older)  # ...and finished last
    assert late["status"] == "COMPLETED" and late["referenced"] is False
    assert user_row(user_id).profile_photo_filename == newer["filename"]
    assert files(media_root) == set(newer["variants"].values())  # the late one's files were swept


def test_the_sweep_never_deletes_a_referenced_file(clean_db, media_root, put_upload):
    user_id = make_user()
    summary = process_profile_photo(user_id, put_upload("keep.jpg", corpus.photo_jpeg(300, 300)))
    with session_scope() as session:
        deleted = service.sweep_unreferenced(session, service.Subject("profile_photo", user_id),
                                             extra_bases=(summary["filename"],))
    assert deleted == [] and storage.variants_exist("profile_photo", summary["filename"])


def test_two_concurrent_deliveries_of_one_upload_write_one_set_of_files(clean_db, media_root, put_upload):
    user_id = make_user()
    source = put_upload("race.jpg", corpus.photo_jpeg(800, 600))
    results, errors = [], []
    barrier = threading.Barrier(2)

    def deliver():
        try:
            barrier.wait()
            results.append(process_profile_photo(user_id, source))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=deliver) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads), "a delivery is still running after 60 s"
    assert not errors
    assert len(results) == 2  # both deliveries returned, so the checks below compare two results
    assert {r["filename"] for r in results} == {results[0]["filename"]}
    assert all(r["status"] == "COMPLETED" for r in results)
    (row,) = rows(user_id=user_id)
    assert files(media_root) == set(row.meta["variants"].values())
    assert user_row(user_id).profile_photo_filename == row.filename


def test_post_photo_points_the_post_at_the_large_variant(clean_db, media_root, put_upload):
    author = make_user()
    post_id = make_post(author)
    summary = process_post_photo(post_id, put_upload("post.png", corpus.alpha_png()))
    assert summary["status"] == "COMPLETED"
    with session_scope() as session:
        post = session.get(Post, post_id)
        assert post.image_url == f"/media/post_photos/{summary['filename']}_large.jpg"
    (row,) = rows(post_id=post_id)
    assert row.user_id == author and row.purpose == "post_photo"
    assert files(media_root, "post_photos") == set(summary["variants"].values())
    replaced = process_post_photo(post_id, put_upload("post2.jpg", corpus.photo_jpeg(300, 300)))
    assert files(media_root, "post_photos") == set(replaced["variants"].values())


def test_gone_subjects_return_quietly(clean_db, media_root, put_upload):
    source = put_upload("x.jpg", corpus.photo_jpeg(100, 100))
    assert process_profile_photo(987654, source) == {"status": "gone", "user_id": 987654}
    missing_post = str(uuid.uuid4())
    assert process_post_photo(missing_post, source) == {"status": "gone", "post_id": missing_post}
    assert rows() == []


def test_register_upload_makes_a_pending_row_the_task_then_processes(clean_db, media_root, put_upload):
    user_id = make_user()
    source = put_upload("pending.jpg", corpus.photo_jpeg(200, 200))
    with session_scope() as session:
        media_id = service.register_upload(session, service.Subject("profile_photo", user_id), source)
    (row,) = rows(user_id=user_id)
    assert row.processing_status == ProcessingStatus.PENDING and row.attempts == 0
    summary = process_profile_photo(user_id, source)
    assert summary["media_file_id"] == str(media_id) and summary["status"] == "COMPLETED"


def test_deleting_the_user_cascades_to_media_rows(clean_db, media_root, put_upload):
    user_id = make_user()
    process_profile_photo(user_id, put_upload("d.jpg", corpus.photo_jpeg(100, 100)))
    with session_scope() as session:
        session.execute(text("DELETE FROM users WHERE id = :id"), {"id": user_id})
    assert rows(user_id=user_id) == []


def test_a_transient_database_error_is_raised_for_retry_and_the_retry_converges(
        clean_db, engine, media_root, put_upload, monkeypatch):
    """Another connection holds the subject's lock past lock_timeout: a real
    OperationalError (one of the retried TRANSIENT_ERRORS) leaves nothing half done."""
    from sqlalchemy.exc import OperationalError

    from db.session import reset_engine
    from workers.errors import TRANSIENT_ERRORS

    user_id = make_user()
    source = put_upload("t.jpg", corpus.photo_jpeg(300, 300))
    with engine.connect() as blocker:
        blocker.execute(text("SELECT pg_advisory_lock(hashtextextended(:key, 0))"),
                        {"key": f"images.subject:profile_photo:{user_id}"})
        monkeypatch.setenv("PGOPTIONS", "-c lock_timeout=300")
        reset_engine()
        try:
            with pytest.raises(OperationalError) as raised:
                process_profile_photo(user_id, source)
            assert isinstance(raised.value, TRANSIENT_ERRORS)
        finally:
            monkeypatch.delenv("PGOPTIONS")
            reset_engine()
            blocker.execute(text("SELECT pg_advisory_unlock_all()"))
            blocker.commit()
    (row,) = rows(user_id=user_id)
    assert row.processing_status == ProcessingStatus.PROCESSING
    assert files(media_root) == set() and user_row(user_id).profile_photo_filename is None
    summary = process_profile_photo(user_id, source)  # what @job's retry does
    assert summary["status"] == "COMPLETED" and rows(user_id=user_id)[0].attempts == 2
    assert files(media_root) == set(summary["variants"].values())


def test_a_bug_in_processing_is_recorded_and_fails_the_task_visibly(clean_db, media_root, put_upload, monkeypatch):
    from tasks.images import pipeline

    def broken(data: bytes):
        raise RuntimeError("a bug, not the file")

    monkeypatch.setattr(pipeline, "render", broken)  # fault injection into our own code
    user_id = make_user()
    with pytest.raises(RuntimeError):
        process_profile_photo(user_id, put_upload("b.jpg", corpus.photo_jpeg(100, 100)))
    (row,) = rows(user_id=user_id)
    assert row.processing_status == ProcessingStatus.FAILED and row.meta["error_code"] == "internal_error"


def test_images_tasks_are_routed_to_the_images_queue_with_its_time_limits(celery_app):
    for name in ("images.process_profile_photo", "images.process_post_photo"):
        task = celery_app.tasks[name]
        assert celery_app.amqp.router.route({}, name)["queue"].name == "images"
        assert (task.soft_time_limit, task.time_limit) == (30, 45)
        assert task.acks_late and task.reject_on_worker_lost
    assert celery_app.conf.worker_max_memory_per_child == 400_000
