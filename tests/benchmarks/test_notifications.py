"""Per-event ingest: notifications.record one message per like, coalesced by the worker (issue 18),
against the same messages run one at a time, record_many and the no-op task, all in the same run.

Throughputs are drained from a full queue by 2 worker processes
(measure_drain_throughput): what a worker can apply, without the sender's publishing cost.
"""
import statistics
import time

from sqlalchemy import text

from tests.benchmarks.conftest import Goal, NoGoal, measure_drain_throughput
from tests.conftest import spawn_worker, stop_process, wait_for_workers

AUTHORS = 20          # one post each: events for different posts run in parallel
BULK_BATCH = 500      # source ids per record_many task
LATENCY_SAMPLES = 200


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


def test_record_coalesced_throughput(celery_app, clean_db, noop_drain_throughput, bench_record):
    from tasks.notifications.tasks import record, record_many

    like_ids = iter(_seed_likes(clean_db, 500))         # 10,000 likes
    send = lambda n: [record.delay("like", next(like_ids)) for _ in range(n)]  # noqa: E731
    alone = measure_drain_throughput(celery_app, send, 600, queue="notifications", name="notif-alone",
                                     extra_env={"INGEST_COALESCE": "off"})
    coalesced = measure_drain_throughput(celery_app, send, 6000, queue="notifications", name="notif-coalesced")
    chunks = iter([[next(like_ids) for _ in range(BULK_BATCH)] for _ in range(6)])
    many = measure_drain_throughput(celery_app, lambda n: [record_many.delay("like", next(chunks)) for _ in range(n)],
                                    5, queue="notifications", name="notif-many", warmup=1) * BULK_BATCH
    _assert_all_recorded(clean_db, 50 + 600 + 50 + 6000 + 6 * BULK_BATCH)
    bench_record("notifications.record_coalesced_2proc", coalesced, "events/s", alone,
                 "notifications.record one message at a time (INGEST_COALESCE=off), same run",
                 events=6000, posts=AUTHORS, record_many_events_per_s=round(many, 1),
                 noop_tasks_per_s=round(noop_drain_throughput, 1),
                 goal=Goal("ratio", ">=", 5, "one message per event, coalesced: at least 5x the one-at-a-time path"))
    bench_record("notifications.record_alone_2proc", alone, "events/s", noop_drain_throughput,
                 "maintenance.noop drained the same way (same run)", events=600,
                 goal=NoGoal("the per-event path before coalescing, against the no-op task"))
    entry = bench_record("notifications.record_many_throughput_2proc", many, "events/s", noop_drain_throughput,
                         "maintenance.noop drained the same way (same run)", events=5 * BULK_BATCH,
                         batch=BULK_BATCH, goal=Goal("ratio", ">=", 5, "batched events at least 5x the no-op rate"))
    assert entry["value"] > 0


def _latencies(celery_app, send_one, name: str, extra_env: dict | None = None) -> list[float]:
    """Seconds from sending one event to its result, one event at a time with a pause between."""
    proc = spawn_worker(name, ["notifications"], concurrency=2, extra_env=extra_env)
    try:
        wait_for_workers(celery_app, [name])
        send_one().get(timeout=30)   # warm: connections and the first query plans
        samples = []
        for _ in range(LATENCY_SAMPLES):
            started = time.perf_counter()
            send_one().get(timeout=30)
            samples.append(time.perf_counter() - started)
            time.sleep(0.02)
    finally:
        stop_process(proc)
    return samples


def _p99(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=100)[98]


def test_record_latency_under_light_load(celery_app, clean_db, bench_record):
    from tasks.notifications.tasks import record

    like_ids = iter(_seed_likes(clean_db, 25))          # 500 likes
    send_one = lambda: record.delay("like", next(like_ids))  # noqa: E731
    coalesced = _latencies(celery_app, send_one, "notif-latency")
    alone = _latencies(celery_app, send_one, "notif-latency-alone", {"INGEST_COALESCE": "off"})
    _assert_all_recorded(clean_db, 2 * (LATENCY_SAMPLES + 1))
    bench_record("notifications.record_latency_p50", statistics.median(coalesced), "s", statistics.median(alone),
                 "the same event run alone (INGEST_COALESCE=off), same run", samples=LATENCY_SAMPLES,
                 goal=Goal("value", "<=", 1.0, "one event under light load applied within 1 s"))
    entry = bench_record("notifications.record_latency_p99", _p99(coalesced), "s", _p99(alone),
                         "the same event run alone (INGEST_COALESCE=off), same run", samples=LATENCY_SAMPLES,
                         goal=Goal("value", "<=", 1.0, "one event under light load applied within 1 s"))
    assert entry["value"] > 0
