"""Real messages through the real broker to real workers."""
from collections import Counter

import pytest
from celery.result import ResultSet
from sqlalchemy import text

from workers.reliability.deliveries import deliveries

pytestmark = pytest.mark.integration


def _seed(engine, likers: int) -> tuple[int, str, list[str], list[int]]:
    with engine.begin() as connection:
        user_ids = connection.execute(text(
            "INSERT INTO users (email, username, hashed_password) "
            "SELECT 'r' || g || '@example.com', 'r' || g, '!' FROM generate_series(0, :n) AS g RETURNING id"),
            {"n": likers}).scalars().all()
        author, likers_ids = user_ids[0], user_ids[1:]
        post_id = connection.execute(text(
            "INSERT INTO posts (author_id, content) VALUES (:a, 'race') RETURNING id::text"), {"a": author}).scalar()
        like_ids = connection.execute(text(
            "INSERT INTO likes (user_id, post_id) SELECT u, CAST(:p AS uuid) FROM unnest(CAST(:u AS int[])) AS u "
            "RETURNING id::text"), {"p": post_id, "u": likers_ids}).scalars().all()
    return author, post_id, like_ids, likers_ids


def test_two_workers_race_200_likes_sent_twice_into_one_batch(clean_db, celery_app, worker_processes):
    from tasks.notifications.tasks import record

    author, post_id, like_ids, liker_ids = _seed(clean_db, 200)
    worker_processes("notif-race-a", ["notifications"], concurrency=1)
    worker_processes("notif-race-b", ["notifications"], concurrency=1)
    results = []
    for like_id in like_ids:
        results += [record.delay("like", like_id), record.delay("like", like_id)]
    outcomes = ResultSet(results).join_native(timeout=120, propagate=True)

    assert Counter(o["status"] for o in outcomes) == {"created": 1, "converted": 1, "batched": 198,
                                                      "duplicate": 200}
    with clean_db.connect() as connection:
        top = connection.execute(text(
            "SELECT id, is_batch, batch_count FROM notifications WHERE user_id = :a AND parent_id IS NULL"),
            {"a": author}).all()
        assert len(top) == 1 and top[0].is_batch
        children = connection.execute(text(
            "SELECT count(*), count(DISTINCT (data->>'actor_id')::int), count(DISTINCT dedupe_key) "
            "FROM notifications WHERE parent_id = :p"), {"p": top[0].id}).one()
        assert top[0].batch_count == children[0] == children[1] == children[2] == len(set(liker_ids)) == 200
        assert connection.scalar(text(
            "SELECT count(*) FROM notifications WHERE user_id = :a AND read = false AND parent_id IS NULL"),
            {"a": author}) == 1


def test_two_workers_respect_the_rate_limit_across_posts(clean_db, celery_app, worker_processes):
    """30 likes on 30 posts of one author in one hour, recorded concurrently:
    exactly 20 singles and one overflow batch of 10, whatever the interleaving."""
    from tasks.notifications.tasks import record

    with clean_db.begin() as connection:
        author, *likers = connection.execute(text(
            "INSERT INTO users (email, username, hashed_password) "
            "SELECT 'q' || g || '@example.com', 'q' || g, '!' FROM generate_series(0, 30) AS g "
            "RETURNING id")).scalars().all()
        like_ids = connection.execute(text(
            "WITH p AS (INSERT INTO posts (author_id, content) SELECT :a, g::text FROM generate_series(1, 30) AS g "
            "           RETURNING id, content::bigint AS n) "
            "INSERT INTO likes (user_id, post_id, created_at) "
            "SELECT u.id, p.id, TIMESTAMPTZ '2026-03-01 10:00:00+00' + make_interval(secs => p.n) "
            "FROM p JOIN unnest(CAST(:u AS int[])) WITH ORDINALITY AS u(id, n) ON u.n = p.n RETURNING id::text"),
            {"a": author, "u": likers}).scalars().all()
    worker_processes("notif-rate-a", ["notifications"], concurrency=2)
    worker_processes("notif-rate-b", ["notifications"], concurrency=2)
    outcomes = ResultSet([record.delay("like", i) for i in like_ids]).join_native(timeout=60, propagate=True)

    assert Counter(o["status"] for o in outcomes) == {"created": 20, "folded": 10}
    with clean_db.connect() as connection:
        top = connection.execute(text(
            "SELECT is_batch, batch_count, batch_key FROM notifications WHERE user_id = :a AND parent_id IS NULL"),
            {"a": author}).all()
        assert sum(1 for t in top if not t.is_batch) == 20
        [overflow] = [t for t in top if t.is_batch]
        assert (overflow.batch_key, overflow.batch_count) == (f"like:user:{author}", 10)
        assert connection.scalar(text("SELECT count(*) FROM notifications WHERE user_id = :a AND NOT is_batch"),
                                 {"a": author}) == 30
        assert connection.scalar(text("SELECT count FROM notification_rate_limits WHERE user_id = :a"),
                                 {"a": author}) == 20


def test_bulk_and_single_calls_on_the_same_keys_never_deadlock(clean_db, celery_app, worker_processes):
    """Two record_many calls over the same 200 likes in opposite orders, plus every like
    recorded singly, on 2 worker processes x 2: every task succeeds first time (a
    deadlock aborts one transaction and shows up as a retry) and each post ends with
    one exact batch. A regression check: the lock phase is short, so it does not
    reliably catch an unsorted lock order on its own."""
    from tasks.notifications.tasks import record, record_many

    with clean_db.begin() as connection:
        connection.execute(text(
            "INSERT INTO users (email, username, hashed_password) "
            "SELECT 'd' || g || '@example.com', 'd' || g, '!' FROM generate_series(1, 30) AS g"))
        connection.execute(text("INSERT INTO posts (author_id, content) SELECT id, 'p' FROM users WHERE id <= 20"))
        like_ids = connection.execute(text(
            "INSERT INTO likes (user_id, post_id) SELECT u.id, p.id FROM users AS u CROSS JOIN posts AS p "
            "WHERE u.id > 20 ORDER BY random() RETURNING id::text")).scalars().all()
    worker_processes("notif-mix-a", ["notifications"], concurrency=2)
    worker_processes("notif-mix-b", ["notifications"], concurrency=2)
    results = [record_many.delay("like", like_ids), record_many.delay("like", like_ids[::-1])]
    results += [record.delay("like", i) for i in like_ids]
    ResultSet(results).join_native(timeout=90, propagate=True)

    assert {r.state for r in results} == {"SUCCESS"}
    assert {deliveries(r.id, 1) for r in results} == {0}   # no retry: no deadlock aborted any of them
    with clean_db.connect() as connection:
        batches = connection.execute(text(
            "SELECT p.batch_count, (SELECT count(*) FROM notifications AS c WHERE c.parent_id = p.id) AS children "
            "FROM notifications AS p WHERE p.parent_id IS NULL")).all()
    assert sorted(batches) == [(10, 10)] * 20


def test_record_retract_and_mark_read_through_a_worker(clean_db, celery_worker):
    from tasks.notifications.tasks import mark_read, record, record_many, retract

    author, post_id, like_ids, liker_ids = _seed(clean_db, 3)
    assert record.delay("like", like_ids[0]).get(timeout=30)["status"] == "created"
    bulk = record_many.delay("like", like_ids + [like_ids[0], "00000000-0000-0000-0000-000000000000"]).get(timeout=30)
    assert bulk == {"status": "ok", "received": 5, "gone": 1, "duplicate": 1, "converted": 1, "batched": 1}
    with clean_db.begin() as connection:
        connection.execute(text("DELETE FROM likes WHERE id = CAST(:id AS uuid)"), {"id": like_ids[1]})
    assert retract.delay("like", liker_ids[1], post_id=post_id).get(timeout=30)["removed"] == 1
    assert record.delay("like", like_ids[1]).get(timeout=30) == {"status": "gone"}
    assert mark_read.delay(author, all=True).get(timeout=30) == {"status": "ok", "marked": 1}
    with clean_db.connect() as connection:
        assert connection.scalar(text(
            "SELECT batch_count FROM notifications WHERE user_id = :a AND is_batch"), {"a": author}) == 2


# Transactions that wrote one recipient's notification rows, by the xid that wrote each
# row last: how many rows each transaction left behind, in commit order.
ROWS_PER_TRANSACTION_SQL = text("""
SELECT count(*) FROM notifications WHERE user_id = :a AND NOT is_batch
GROUP BY xmin::text::bigint ORDER BY xmin::text::bigint
""")


def test_record_many_commits_in_chunks(clean_db, celery_worker, monkeypatch):
    import tasks.notifications.tasks as notification_tasks

    monkeypatch.setattr(notification_tasks, "BULK_CHUNK", 2)
    author, post_id, like_ids, liker_ids = _seed(clean_db, 5)
    result = notification_tasks.record_many.delay("like", like_ids).get(timeout=30)
    assert result == {"status": "ok", "received": 5, "gone": 0, "created": 1, "converted": 1, "batched": 3}
    with clean_db.connect() as connection:
        assert connection.scalar(text(
            "SELECT batch_count FROM notifications WHERE user_id = :a AND is_batch"), {"a": author}) == 5
        # The 5 likes' rows were written by 3 transactions: 2 + 2 + 1.
        assert connection.execute(ROWS_PER_TRANSACTION_SQL, {"a": author}).scalars().all() == [2, 2, 1]


def test_record_many_retried_after_a_chunk_committed_finds_it_as_duplicates(clean_db, celery_worker, monkeypatch):
    """The second chunk's connection drops on the first attempt: the first chunk stays
    committed, Celery retries the task, and the retry records only what is missing."""
    from sqlalchemy.exc import OperationalError

    import tasks.notifications.sources as sources
    import tasks.notifications.tasks as notification_tasks

    monkeypatch.setattr(notification_tasks, "BULK_CHUNK", 2)
    real_apply, calls = sources.apply_events, []

    def connection_lost_in_the_second_chunk(session, events, **kwargs):
        calls.append(len(events))
        if len(calls) == 2:
            raise OperationalError("INSERT INTO notifications ...", {}, Exception("server closed the connection"))
        return real_apply(session, events, **kwargs)

    monkeypatch.setattr(sources, "apply_events", connection_lost_in_the_second_chunk)  # the worker is in-process
    author, post_id, like_ids, liker_ids = _seed(clean_db, 5)
    sent = notification_tasks.record_many.delay("like", like_ids)
    result = sent.get(timeout=60)
    assert [deliveries(sent.id, retry) for retry in range(3)] == [1, 1, 0]   # run once, retried once
    assert calls == [2, 2, 2, 2, 1]      # attempt 1: chunk 1, chunk 2 (fails); the retry: all three
    assert result == {"status": "ok", "received": 5, "gone": 0, "duplicate": 2, "batched": 3}
    with clean_db.connect() as connection:
        parent = connection.execute(text(
            "SELECT id, batch_count FROM notifications WHERE user_id = :a AND parent_id IS NULL"), {"a": author}).one()
        children = connection.execute(text(
            "SELECT count(*), count(DISTINCT dedupe_key) FROM notifications WHERE parent_id = :p"),
            {"p": parent.id}).one()
    assert parent.batch_count == 5 and tuple(children) == (5, 5)


@pytest.mark.parametrize(("call", "code"), [
    (lambda t: t.record.delay("poke", "00000000-0000-0000-0000-000000000000"), "unknown_notification_kind"),
    (lambda t: t.record.delay("like", "not-a-uuid"), "invalid_arguments"),
    (lambda t: t.retract.delay("like", 1), "invalid_arguments"),
    (lambda t: t.retract.delay("comment", 1, post_id="00000000-0000-0000-0000-000000000000"),
     "unknown_notification_kind"),
    (lambda t: t.mark_read.delay(1), "invalid_arguments"),
])
def test_bad_arguments_fail_permanently_with_a_code(celery_worker, call, code):
    import tasks.notifications.tasks as notification_tasks
    from workers.errors import InvalidArguments

    result = call(notification_tasks)
    with pytest.raises(InvalidArguments) as raised:
        result.get(timeout=30)
    assert raised.value.code == code
    assert [deliveries(result.id, retry) for retry in range(2)] == [1, 0]   # refused once, never retried


def test_mentions_extract_through_a_worker(clean_db, celery_worker):
    from tasks.mentions.tasks import extract
    from workers.errors import InvalidArguments

    with clean_db.begin() as connection:
        author, bob = connection.execute(text(
            "INSERT INTO users (email, username, hashed_password) VALUES "
            "('w1@example.com', 'w_alice', '!'), ('w2@example.com', 'w_bob', '!') RETURNING id")).scalars().all()
        post_id = connection.execute(text(
            "INSERT INTO posts (author_id, content) VALUES (:a, 'hey @W_Bob and @ghost') RETURNING id::text"),
            {"a": author}).scalar()
    result = extract.delay(post_id=post_id).get(timeout=30)
    assert (result["valid_usernames"], result["invalid_usernames"], result["notified"]) == (
        ["w_bob"], ["ghost"], ["w_bob"])
    assert extract.delay(post_id=post_id).get(timeout=30)["notified"] == []
    assert extract.delay(comment_id="00000000-0000-0000-0000-000000000000").get(timeout=30) == {"status": "gone"}
    with pytest.raises(InvalidArguments, match="exactly one of post_id or comment_id"):
        extract.delay(post_id=post_id, comment_id=post_id).get(timeout=30)
    with pytest.raises(InvalidArguments, match="exactly one of post_id or comment_id"):
        extract.delay().get(timeout=30)
