"""notifications.record and record_many through the real broker and 2 worker processes,
beside the no-op task baseline measured in the same run."""
from sqlalchemy import text

from tests.benchmarks.conftest import Goal, measure_task_throughput

AUTHORS = 20          # one post each: events for different posts run in parallel
BULK_BATCH = 500      # source ids per record_many task


def _seed_likes(engine, likers: int) -> list[str]:
    """AUTHORS posts with ``likers`` likes each, interleaved across posts as a live site would send them."""
    with engine.begin() as connection:
        connection.execute(text(
            "INSERT INTO users (email, username, hashed_password) "
            "SELECT 'b' || g || '@example.com', 'b' || g, '!' FROM generate_series(1, :n) AS g"),
            {"n": AUTHORS + likers})
        connection.execute(text(
            "INSERT INTO posts (author_id, content) SELECT id, 'bench' FROM users ORDER BY id LIMIT :n"),
            {"n": AUTHORS})
        return connection.execute(text(
            "INSERT INTO likes (user_id, post_id) "
            "SELECT u.id, p.id FROM users AS u CROSS JOIN posts AS p "
            "WHERE u.id > :authors ORDER BY u.id, p.id RETURNING id::text"),
            {"authors": AUTHORS}).scalars().all()


def _assert_all_recorded(engine, expected_children: int) -> None:
    with engine.connect() as connection:
        parents, children = connection.execute(text(
            "SELECT count(*) FILTER (WHERE parent_id IS NULL), count(*) FILTER (WHERE NOT is_batch) "
            "FROM notifications")).one()
    assert parents == AUTHORS and children == expected_children


def test_record_throughput(celery_app, clean_db, noop_throughput, bench_record):
    from tasks.notifications.tasks import record

    like_ids = iter(_seed_likes(clean_db, 100))        # 2,000 likes
    count, warmup = 1500, 100

    def send(n):
        return [record.delay("like", next(like_ids)) for _ in range(n)]

    rate = measure_task_throughput(celery_app, send, count, queues=["notifications"], concurrency=2,
                                   warmup=warmup, name="notif-bench")
    _assert_all_recorded(clean_db, count + warmup)
    entry = bench_record("notifications.record_throughput_2proc", rate, "events/s", noop_throughput,
                         "celery.noop_throughput_2proc (same run)", events=count, posts=AUTHORS,
                         goal=Goal("ratio", ">=", 0.7, "one event per task, at least 0.7x the no-op task"))
    assert entry["value"] > 0


def test_record_many_throughput(celery_app, clean_db, noop_throughput, bench_record):
    from tasks.notifications.tasks import record_many

    like_ids = _seed_likes(clean_db, 300)               # 6,000 likes
    chunks = iter([like_ids[i:i + BULK_BATCH] for i in range(0, len(like_ids), BULK_BATCH)])
    tasks_count, warmup = 10, 1

    def send(n):
        return [record_many.delay("like", next(chunks)) for _ in range(n)]

    task_rate = measure_task_throughput(celery_app, send, tasks_count, queues=["notifications"], concurrency=2,
                                        warmup=warmup, name="notif-bulk-bench")
    _assert_all_recorded(clean_db, (tasks_count + warmup) * BULK_BATCH)
    entry = bench_record("notifications.record_many_throughput_2proc", task_rate * BULK_BATCH, "events/s",
                         noop_throughput, "celery.noop_throughput_2proc (same run)",
                         events=tasks_count * BULK_BATCH, batch=BULK_BATCH, posts=AUTHORS,
                         goal=Goal("ratio", ">=", 5, "batched events at least 5x the no-op task rate"))
    assert entry["value"] > 0
