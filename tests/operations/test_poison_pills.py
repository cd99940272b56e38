"""Poison pills: a task whose worker process dies every time is dead-lettered after 5 deliveries."""
from __future__ import annotations

import time

import pytest

from tests.operations.conftest import dead_letter, dead_letter_count, wait_until
from tests.operations.procs import children, kill

pytestmark = [pytest.mark.integration, pytest.mark.chaos]


def test_a_task_that_kills_its_worker_is_dead_lettered_after_5_deliveries(clean_db, on_broker, tmp_path):
    """Redis: our delivery counter refuses the sixth delivery. RabbitMQ: the quorum queue's
    x-delivery-limit dead-letters the message after its fifth return, and the workers consume
    it into the same table. Either way the task runs 5 times, no more."""
    from tests.operations.chaos import Figures, canary_rows
    from workers.reliability.deliveries import MAX_DELIVERIES

    worker = on_broker.start_worker("poison", ["maintenance"], concurrency=1, log_path=tmp_path / "worker.log",
                                    include="tests.brokers.broker_tasks")
    prefix = f"poison-{on_broker.kind}"
    result = on_broker.app.send_task("maintenance.mark_and_hold", args=[prefix, 20])

    kills = 0
    started = time.monotonic()
    while kills < MAX_DELIVERIES:
        # Each run commits a row before it holds: kill the pool process holding it.
        wait_until(lambda: canary_rows(clean_db, prefix) == kills + 1, timeout=60, what=f"delivery {kills + 1}")
        pool = wait_until(lambda: children(worker.pid), timeout=10, what="pool process")
        assert all(kill(pid) for pid in pool)
        kills += 1

    letter = wait_until(lambda: dead_letter(clean_db, result.id), timeout=60, what="poison-pill dead letter")
    elapsed = time.monotonic() - started
    assert letter["error_code"] == "poison_pill"
    assert letter["args"] == [prefix, 20]
    assert result.get(timeout=30, propagate=False) is not None and result.state == "FAILURE"
    assert type(result.result).__name__ == "PoisonPill", result.result
    # Dead-lettered without a sixth 20 s run.
    assert elapsed < 20 * 2, elapsed
    assert canary_rows(clean_db, prefix) == MAX_DELIVERIES
    assert worker.poll() is None, "the worker itself must survive its pool processes being killed"
    assert on_broker.app.send_task("maintenance.noop").get(timeout=30) is None
    Figures(f"poison_pill[{on_broker.kind}]", sent=1, completed=0, duplicated=kills, lost=0, recovery_s=elapsed,
            extra={"sigkills": kills, "runs": canary_rows(clean_db, prefix),
                   "dead_letter_attempts": letter["attempts"]}).report()


def test_an_upload_that_kills_its_worker_every_time_ends_failed_as_worker_lost(
        clean_db, isolated, tmp_path, monkeypatch):
    """One guard, one limit: after TASK_MAX_DELIVERIES deaths the task is dead-lettered
    and the images family closes out its row, so the web tier learns the upload failed."""
    import redis as redis_lib
    from sqlalchemy import text

    from tests.images import corpus
    from workers.reliability import deliveries
    from workers.reliability.deliveries import MAX_DELIVERIES

    media = tmp_path / "media"
    (media / "uploads").mkdir(parents=True)
    (media / "uploads" / "killer.jpg").write_bytes(corpus.photo_jpeg(400, 400))
    monkeypatch.setenv("MEDIA_ROOT", str(media))  # inherited by the worker
    with clean_db.begin() as connection:
        user_id = connection.execute(text(
            "INSERT INTO users (email, username, hashed_password) VALUES ('k@example.com', 'killer', '!') "
            "RETURNING id")).scalar()
    worker = isolated.start_worker("imgpoison", ["images", "maintenance"], concurrency=1,
                                   log_path=tmp_path / "worker.log")
    broker = redis_lib.Redis.from_url(isolated.broker_url)

    # Hold the photo's subject lock: each delivery renders, then waits in `finish`
    # for this lock, which is where the test kills its pool process.
    holder = clean_db.connect()
    holder_tx = holder.begin()
    holder.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"),
                   {"k": f"images.subject:profile_photo:{user_id}"})
    try:
        result = isolated.app.send_task("images.process_profile_photo", args=[user_id, "killer.jpg"])
        counter = deliveries.key(result.id, 0)

        def waiting_on_our_lock() -> bool:
            with clean_db.connect() as probe:
                return bool(probe.scalar(text(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")))

        for kills in range(MAX_DELIVERIES):
            wait_until(lambda: int(broker.get(counter) or 0) == kills + 1, timeout=60,
                       what=f"delivery {kills + 1}")
            wait_until(waiting_on_our_lock, timeout=30, what="the task blocked in finish")
            pool = wait_until(lambda: children(worker.pid), timeout=10, what="pool process")
            assert all(kill(pid) for pid in pool)
            # The killed backend keeps waiting on the lock until it notices; forget it.
            with clean_db.connect() as admin:
                admin.execute(text("SELECT pg_terminate_backend(pid) FROM pg_locks "
                                   "WHERE locktype = 'advisory' AND NOT granted"))
                admin.commit()

        letter = wait_until(lambda: dead_letter(clean_db, result.id), timeout=60, what="poison-pill dead letter")
    finally:
        holder_tx.rollback()
        holder.close()
    assert letter["error_code"] == "poison_pill"
    assert letter["attempts"] == MAX_DELIVERIES + 1

    def media_row():
        with clean_db.connect() as connection:
            return connection.execute(text(
                "SELECT processing_status, metadata->>'error_code' AS code FROM media_files WHERE user_id = :u"),
                {"u": user_id}).one_or_none()

    row = wait_until(lambda: (found := media_row()) is not None and found.processing_status == "FAILED" and found,
                     timeout=30, what="the media row closed out")
    assert row.code == "worker_lost"
    assert dead_letter_count(clean_db) == 1
    assert worker.poll() is None, "the worker itself must survive its pool processes being killed"
    assert isolated.app.send_task("maintenance.noop").get(timeout=30) is None


def test_forget_treats_a_task_id_as_text_not_a_pattern(celery_app):
    """A sender-chosen id of `*` must clear only its own counters, not every task's."""
    from workers.broker import redis_client
    from workers.reliability import deliveries

    client = redis_client()
    other, hostile = "ordinary-task-id", "*"
    for task_id in (other, hostile):
        client.set(deliveries.key(task_id, 0), 3)
    deliveries.forget(hostile)
    assert client.get(deliveries.key(hostile, 0)) is None
    assert int(client.get(deliveries.key(other, 0))) == 3
    deliveries.forget(other)
