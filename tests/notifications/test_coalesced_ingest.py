"""notifications.record (and mentions.extract, engagement.refresh_counts) coalesced by a real prefork
worker (workers/coalescing.py): applied in bulk, each message acked after its bulk commits, a poisoned
message isolated, a bulk killed mid-transaction requeued whole and applied once."""
from __future__ import annotations

import os
import signal
import time

import pytest
from sqlalchemy import text

from tests.notifications.test_tasks_integration import ROWS_PER_TRANSACTION_SQL, _seed
from tests.operations.procs import children
from tests.operations.conftest import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def prefork_worker(isolated, tmp_path):
    """start(**env) -> a real prefork worker on the notifications, mentions and engagement queues of a
    broker of its own (the session's in-process worker must not take these messages)."""

    def start(name="coalesce", concurrency=1, **env):
        return isolated.start_worker(name, ["notifications", "mentions", "engagement"], concurrency,
                                     extra_env=env, log_path=tmp_path / f"{name}.log")

    return start


@pytest.fixture
def deliveries(isolated):
    """deliveries(task id) -> how many times the isolated worker counted its first try."""
    import redis

    client = redis.Redis.from_url(isolated.broker_url)
    return lambda task_id: int(client.get(f"jobs:deliveries:{task_id}:0") or 0)


@pytest.fixture
def send(isolated):
    """send(task name, *args, **kwargs) on the isolated broker."""
    return lambda name, *args, **kwargs: isolated.app.send_task(name, args=list(args), kwargs=kwargs)


def _notification_counts(engine, author: int) -> tuple[int, int, int]:
    with engine.connect() as connection:
        return tuple(connection.execute(text(
            "SELECT count(*) FILTER (WHERE parent_id IS NULL), count(*) FILTER (WHERE NOT is_batch), "
            "coalesce(max(batch_count), 0) FROM notifications WHERE user_id = :a"), {"a": author}).one())


def test_queued_likes_are_applied_in_a_few_transactions_each_result_stored(clean_db, prefork_worker, send):
    author, _post_id, like_ids, _likers = _seed(clean_db, 120)
    sent = [send("notifications.record", "like", like_id) for like_id in like_ids]   # queued before the worker
    prefork_worker(INGEST_COALESCE_MAX_WAIT_MS="200")    # a loaded machine still gathers bulks
    statuses = [result.get(timeout=60)["status"] for result in sent]
    assert statuses.count("created") + statuses.count("converted") + statuses.count("batched") == 120
    assert _notification_counts(clean_db, author) == (1, 120, 120)
    with clean_db.connect() as connection:
        per_transaction = connection.execute(ROWS_PER_TRANSACTION_SQL, {"a": author}).scalars().all()
    assert sum(per_transaction) == 120 and len(per_transaction) < 30, per_transaction   # one at a time: 120


def test_the_same_like_sent_twice_is_notified_once(clean_db, prefork_worker, send):
    author, _post_id, like_ids, _likers = _seed(clean_db, 10)
    sent = [send("notifications.record", "like", like_id) for like_id in like_ids + like_ids]
    prefork_worker()
    statuses = [result.get(timeout=60)["status"] for result in sent]
    assert statuses.count("duplicate") == 10
    assert _notification_counts(clean_db, author) == (1, 10, 10)


def test_a_poisoned_message_fails_alone_and_its_bulk_mates_are_applied(clean_db, prefork_worker, send,
                                                                       deliveries):
    from workers.errors import InvalidArguments

    author, _post_id, like_ids, _likers = _seed(clean_db, 30)
    with clean_db.begin() as connection:   # an unlike before the task ran: that event is gone
        connection.execute(text("DELETE FROM likes WHERE id = CAST(:id AS uuid)"), {"id": like_ids[5]})
    good = [send("notifications.record", "like", like_id) for like_id in like_ids[:15]]
    unknown = send("notifications.record", "poke", like_ids[20])
    malformed = send("notifications.record", "like", "not-a-uuid")
    good += [send("notifications.record", "like", like_id) for like_id in like_ids[15:]]
    prefork_worker()
    statuses = [result.get(timeout=60)["status"] for result in good]
    assert statuses.count("gone") == 1 and len(statuses) == 30
    for result, code in ((unknown, "unknown_notification_kind"), (malformed, "invalid_arguments")):
        with pytest.raises(InvalidArguments) as raised:
            result.get(timeout=30)
        assert raised.value.code == code
        assert deliveries(result.id) == 1   # counted once: the bulk gave its count back
    assert _notification_counts(clean_db, author) == (1, 29, 29)
    with clean_db.connect() as connection:
        dead = connection.execute(text("SELECT task_id, error_code FROM dead_letters")).all()
    assert sorted(dead, key=lambda row: row[1]) == [(malformed.id, "invalid_arguments"),
                                                    (unknown.id, "unknown_notification_kind")]


def test_a_database_error_in_bulk_is_bisected_to_the_one_event(clean_db, prefork_worker, send):
    """One event the database refuses (a check constraint on its dedupe key, added for the test):
    the bulk fails, bisection isolates the event, and only it fails; the other 19 are applied."""
    author, _post_id, like_ids, _likers = _seed(clean_db, 20)
    with clean_db.begin() as connection:
        # A real database refusal tied to one event: the row of this like.
        connection.execute(text(
            "ALTER TABLE notifications ADD CONSTRAINT test_refuse_one_actor "
            f"CHECK (dedupe_key IS DISTINCT FROM 'like:{like_ids[7]}')"))
    try:
        sent = [send("notifications.record", "like", like_id) for like_id in like_ids]
        prefork_worker()
        outcomes = []
        for result in sent:
            try:
                outcomes.append(result.get(timeout=60)["status"])
            except Exception as exc:  # noqa: BLE001 - the one refused event
                outcomes.append(type(exc).__name__)
        refused = [status for status in outcomes if status not in ("created", "converted", "batched")]
        assert len(refused) == 1, outcomes
        assert _notification_counts(clean_db, author)[1] == 19
    finally:
        with clean_db.begin() as connection:
            connection.execute(text("ALTER TABLE notifications DROP CONSTRAINT IF EXISTS test_refuse_one_actor"))


def test_a_bulk_killed_mid_transaction_is_requeued_whole_and_applied_once(clean_db, prefork_worker, send,
                                                                          deliveries):
    from db.session import session_scope
    from tasks.notifications.batching import lock_keys
    from tasks.notifications.config import BATCH_CONFIGS
    author, post_id, like_ids, _likers = _seed(clean_db, 40)
    batch_key = BATCH_CONFIGS["like"].batch_key(scope_id=post_id, recipient_id=author)
    with session_scope() as blocker:
        lock_keys(blocker, {(author, batch_key)})     # the bulk will wait for this lock, mid-transaction
        sent = [send("notifications.record", "like", like_id) for like_id in like_ids]
        worker = prefork_worker("coalesce-kill")
        with clean_db.connect() as connection:
            wait_until(lambda: connection.execute(text(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
                "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())")).scalar(),
                timeout=30, what="the bulk waiting on the batch-key lock")
        (child,) = children(worker.pid)
        os.kill(child, signal.SIGKILL)
        time.sleep(0.5)
    statuses = [result.get(timeout=90)["status"] for result in sent]
    assert worker.poll() is None
    assert len(statuses) == 40 and "duplicate" not in statuses   # the killed bulk committed nothing
    assert _notification_counts(clean_db, author) == (1, 40, 40)
    redelivered = [deliveries(result.id) for result in sent]
    assert max(redelivered) == 2   # delivered again after the kill, counted once per delivery
    with clean_db.connect() as connection:
        assert connection.scalar(text("SELECT count(*) FROM dead_letters")) == 0


def test_mentions_and_refresh_counts_are_coalesced_with_their_own_results(clean_db, prefork_worker, send):
    author, post_id, like_ids, likers = _seed(clean_db, 6)
    with clean_db.begin() as connection:
        names = connection.execute(text("SELECT username FROM users WHERE id = ANY(:ids) ORDER BY id"),
                                   {"ids": likers[:3]}).scalars().all()
        post_ids = connection.execute(text(
            "INSERT INTO posts (author_id, content) SELECT :a, '@' || n || ' hello #tagged' "
            "FROM unnest(CAST(:names AS text[])) AS n RETURNING id::text"), {"a": author, "names": names}).scalars().all()
        connection.execute(text("UPDATE posts SET hearts_count = 99 WHERE id = CAST(:p AS uuid)"), {"p": post_id})
    mentions = [send("mentions.extract", post_id=p) for p in post_ids] + [send("mentions.extract")]   # the last names neither
    refreshes = [send("engagement.refresh_counts", [post_id]), send("engagement.refresh_counts", post_ids)]
    prefork_worker()
    results = [m.get(timeout=60) for m in mentions[:3]]
    assert [r["notified"] for r in results] == [[n] for n in names]
    assert all(r["tags"] for r in results)
    with pytest.raises(Exception) as raised:
        mentions[3].get(timeout=30)
    assert getattr(raised.value, "code", None) == "invalid_arguments"
    first, second = (r.get(timeout=60) for r in refreshes)
    assert first["rows_checked"] == 1 and first["rows_fixed"] == 1 and first["max_drift"] == 93
    assert second["rows_checked"] == 3 and second["rows_fixed"] == 0
    with clean_db.connect() as connection:
        assert connection.scalar(text("SELECT hearts_count FROM posts WHERE id = CAST(:p AS uuid)"),
                                 {"p": post_id}) == 6


def test_chain_and_group_steps_run_alone_and_their_canvas_completes(clean_db, prefork_worker, isolated):
    from celery import chain, group

    author, _post_id, like_ids, _likers = _seed(clean_db, 6)
    step = lambda like_id: isolated.app.signature("notifications.record", args=["like", like_id],  # noqa: E731
                                                  immutable=True)
    chained = chain(step(like_ids[0]), step(like_ids[1]), step(like_ids[2])).apply_async()
    grouped = group(step(like_id) for like_id in like_ids[3:]).apply_async()
    prefork_worker()
    assert chained.get(timeout=60)["status"] in ("batched", "converted")   # the chain reached its last step
    assert len(grouped.get(timeout=60)) == 3
    assert _notification_counts(clean_db, author) == (1, 6, 6)


def test_off_runs_each_message_alone(clean_db, prefork_worker, send):
    author, _post_id, like_ids, _likers = _seed(clean_db, 12)
    sent = [send("notifications.record", "like", like_id) for like_id in like_ids]
    prefork_worker("coalesce-off", INGEST_COALESCE="off")
    assert len([result.get(timeout=60) for result in sent]) == 12
    with clean_db.connect() as connection:
        per_transaction = connection.execute(ROWS_PER_TRANSACTION_SQL, {"a": author}).scalars().all()
    # One transaction per event; the second one also rewrote the first row (a single became a batch child).
    assert per_transaction == [2] + [1] * 10


def test_a_warm_shutdown_with_messages_held_for_a_bulk_loses_none(clean_db, prefork_worker, send):
    """Messages held in the consumer's buffer are unacked: a SIGTERM gives them back, and the next
    worker applies them. The long wait keeps them held, not applied, when the signal lands."""
    author, _post_id, like_ids, _likers = _seed(clean_db, 8)
    worker = prefork_worker("coalesce-held", INGEST_COALESCE_MAX_WAIT_MS="1000", INGEST_COALESCE_MAX_ITEMS="500")
    sent = [send("notifications.record", "like", like_id) for like_id in like_ids]
    time.sleep(0.4)   # received and held; the 1 s timer has not fired
    assert _notification_counts(clean_db, author) == (0, 0, 0)
    worker.send_signal(signal.SIGTERM)
    worker.wait(timeout=60)
    prefork_worker("coalesce-next")
    statuses = [result.get(timeout=60)["status"] for result in sent]
    assert len(statuses) == 8 and "duplicate" not in statuses
    assert _notification_counts(clean_db, author) == (1, 8, 8)
