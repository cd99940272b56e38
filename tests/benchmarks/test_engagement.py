"""Engagement-counter reconciliation at 1 M posts, each figure beside its baseline.

Two databases of their own, migrated to head and built once per bench session with
set-based generate_series inserts (the "import" scenario: session_replication_role =
replica, so neither foreign-key checks nor the dirty triggers fire), then VACUUM ANALYZE:
  big:   1 M posts, 3 M likes, 1 M emoji reactions, 0.3 M shares, 10 k users, 50 k follows
  small: 10 k posts with the same shape (for the dirty path's size-independence)
"""
from __future__ import annotations

import statistics
import time
import uuid

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from tasks.engagement import reconcile as rc
from tasks.engagement.counters import COUNTERS, aggregate_floor_sql, counters_of
from tests.benchmarks.conftest import Goal, NoGoal
from tests.conftest import spawn_worker, stop_process, wait_for_workers

USERS = 10_000
BUILD = """
SET session_replication_role = replica;
INSERT INTO users (id, email, username, hashed_password)
    SELECT g, 'b' || g || '@example.com', 'b' || g, '!' FROM generate_series(1, :users) g;
SELECT setval(pg_get_serial_sequence('users', 'id'), :users + 1);
INSERT INTO posts (id, author_id, content, hearts_count, reactions_count, shares_count)
    SELECT md5('p' || n)::uuid, n % :users + 1, 'bench', n % 7, n % 3, (n % 10 < 3)::int
    FROM generate_series(1, :posts) n;
INSERT INTO likes (user_id, post_id)
    SELECT (n + k * 997) % :users + 1, md5('p' || n)::uuid
    FROM generate_series(1, :posts) n, generate_series(1, n % 7) k;
INSERT INTO emoji_reactions (user_id, post_id, emoji_code)
    SELECT (n + k * 1231) % :users + 1, md5('p' || n)::uuid, 'heart'
    FROM generate_series(1, :posts) n, generate_series(1, n % 3) k;
INSERT INTO shares (user_id, post_id, platform)
    SELECT n % :users + 1, md5('p' || n)::uuid, 'internal' FROM generate_series(1, :posts) n WHERE n % 10 < 3;
INSERT INTO follows (follower_id, followed_id)
    SELECT u, (u + j * 37) % :users + 1 FROM generate_series(1, :users) u, generate_series(1, 5) j;
UPDATE users u SET posts_count = s.n FROM (SELECT author_id, count(*) n FROM posts GROUP BY 1) s WHERE s.author_id = u.id;
UPDATE users u SET followers_count = s.n FROM (SELECT followed_id, count(*) n FROM follows GROUP BY 1) s
    WHERE s.followed_id = u.id;
UPDATE users u SET following_count = s.n FROM (SELECT follower_id, count(*) n FROM follows GROUP BY 1) s
    WHERE s.follower_id = u.id;
INSERT INTO users (email, username, hashed_password) VALUES ('fresh@example.com', 'fresh', '!');
"""


def _create_database(base_url: str, label: str) -> str:
    from db.migrate import upgrade

    url = make_url(base_url)
    name = f"bench_eng_{label}_{uuid.uuid4().hex[:6]}"
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    scratch = url.set(database=name).render_as_string(hide_password=False)
    upgrade(scratch)
    return scratch


def _drop_database(base_url: str, database_url: str) -> None:
    admin = create_engine(make_url(base_url).set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{make_url(database_url).database}" WITH (FORCE)'))
    admin.dispose()


def _build(url: str, posts: int) -> float:
    engine = create_engine(url)
    started = time.perf_counter()
    with engine.begin() as conn:
        for statement in BUILD.split(";\n"):
            if statement.strip():
                conn.execute(text(statement), {"users": USERS, "posts": posts})
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))
    engine.dispose()
    return time.perf_counter() - started


@pytest.fixture(scope="session")
def engagement_dbs(database_url):
    big, small = _create_database(database_url, "1m"), _create_database(database_url, "10k")
    try:
        build = {"1m": _build(big, 1_000_000), "10k": _build(small, 10_000)}
        print(f"\nengagement bench build: {build['1m']:.0f} s for 1 M posts, {build['10k']:.1f} s for 10 k")
        yield {"big": big, "small": small, "build_seconds": build}
    finally:
        _drop_database(database_url, big)
        _drop_database(database_url, small)


def _inject_drift(engine) -> set[tuple[str, str, str]]:
    """A known subset: 1,000 hearts too high, 1,000 reactions zeroed where non-zero,
    500 shares too high, 200 users' posts_count and followers_count off."""
    drift: set[tuple[str, str, str]] = set()
    with engine.begin() as conn:
        conn.execute(text("SET LOCAL session_replication_role = replica"))  # a manual fix: no marks
        for sql, table, column in (
            ("UPDATE posts SET hearts_count = hearts_count + 5 WHERE id IN "
             "(SELECT md5('p' || n)::uuid FROM generate_series(1, 1000000, 1000) n) RETURNING id::text",
             "posts", "hearts_count"),
            ("UPDATE posts SET reactions_count = 0 WHERE id IN (SELECT md5('p' || n)::uuid FROM "
             "generate_series(7, 1000000, 997) n) AND reactions_count > 0 RETURNING id::text", "posts", "reactions_count"),
            ("UPDATE posts SET shares_count = shares_count + 2 WHERE id IN (SELECT md5('p' || n)::uuid FROM "
             "generate_series(3, 1000000, 1999) n) RETURNING id::text", "posts", "shares_count"),
            ("UPDATE users SET posts_count = posts_count + 1 WHERE id % 50 = 0 RETURNING id::text", "users", "posts_count"),
            ("UPDATE users SET followers_count = 0 WHERE id % 50 = 1 AND followers_count > 0 RETURNING id::text",
             "users", "followers_count"),
        ):
            drift |= {(table, column, entity) for entity in conn.execute(text(sql)).scalars()}
        conn.execute(text("DELETE FROM counter_dirty"))
    return drift


def _floor_seconds(engine, parallel: bool = True) -> float:
    """The bare aggregate of every counter's source (wrapped so no rows cross the wire),
    with PostgreSQL's default parallel query, or serial for context."""
    started = time.perf_counter()
    with engine.connect() as conn:
        if not parallel:
            conn.execute(text("SET max_parallel_workers_per_gather = 0"))
        for counter in COUNTERS:
            conn.execute(text(f"SELECT count(*) FROM ({aggregate_floor_sql(counter)}) s")).scalar()
    return time.perf_counter() - started


def _wait_finished(engine, run_id: str, timeout: float = 900) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            run = rc.run_status(conn, run_id)
        if run["status"] != "running":
            return run
        time.sleep(0.01)
    raise TimeoutError("sweep did not finish")


def test_full_sweep_against_the_bare_aggregates(engagement_dbs, celery_app, bench_record):
    """Three rounds after a warm-up (a nightly sweep runs on a long-lived worker): each
    injects the same drift, measures the floor, then sweeps by each path and checks that
    exactly the drifted counters were fixed. Figures are the medians of the rounds."""
    engine = create_engine(engagement_dbs["big"])
    _floor_seconds(engine)  # warms the cache
    celery_app.control.purge()
    proc = spawn_worker("eng-bench", ["engagement"], concurrency=2,
                        extra_env={"DATABASE_URL": engagement_dbs["big"]})
    timings: dict[str, list[float]] = {"floor": [], "floor_serial": [], "celery": [], "cli": [], "cli_serial": []}
    try:
        wait_for_workers(celery_app, ["eng-bench"])
        _celery_sweep(engine)
        for _ in range(3):
            timings["floor"].append(min(_floor_seconds(engine) for _ in range(2)))
            timings["floor_serial"].append(_floor_seconds(engine, parallel=False))
            seconds, dispatched, run = _celery_sweep(engine)
            timings["celery"].append(seconds)
            for key, connections in (("cli", 2), ("cli_serial", 1)):
                drift = _inject_drift(engine)
                seconds, run_id = _inline_sweep(engagement_dbs["big"], connections)
                assert _fixed(engine, run_id) == drift
                timings[key].append(seconds)
    finally:
        stop_process(proc)
    engine.dispose()
    median = {key: statistics.median(values) for key, values in timings.items()}
    rounds = {f"ratios_{key}": [round(v / f, 2) for v, f in zip(timings[key], timings["floor"])]
              for key in ("celery", "cli", "cli_serial")}
    floor, floor_serial = median["floor"], median["floor_serial"]
    floor_note = "bare GROUP BY aggregates of every counter's source, same data, one connection"
    bench_record("engagement.full_sweep_1m_posts_one_process", median["cli"], "s", floor, floor_note,
                 goal=Goal("ratio", "<=", 2), path="reconcile --full (CLI), one process, 2 connections",
                 statistic="median of 3", ratios=rounds["ratios_cli"], floor_serial_seconds=round(floor_serial, 3))
    bench_record("engagement.full_sweep_1m_posts_one_connection", median["cli_serial"], "s", floor, floor_note,
                 goal=NoGoal("context: ENGAGEMENT_SWEEP_CONNECTIONS=1, every chunk in turn on one connection"),
                 path="reconcile --full (CLI), one process, 1 connection", statistic="median of 3",
                 ratios=rounds["ratios_cli_serial"])
    bench_record("engagement.full_sweep_1m_posts", median["celery"], "s", floor, floor_note,
                 goal=Goal("ratio", "<=", 2), chunks=dispatched["chunks"], workers="1 worker x 2 processes",
                 statistic="median of 3", ratios=rounds["ratios_celery"],
                 rows_checked=run["rows_checked"], rows_fixed=run["rows_fixed"],
                 floor_serial_seconds=round(floor_serial, 3),
                 build_seconds=round(engagement_dbs["build_seconds"]["1m"], 1))


def _celery_sweep(engine) -> tuple[float, dict, dict]:
    """sweep_all through the worker, timed from the call to the run's finished row."""
    from tasks.engagement.tasks import sweep_all

    drift = _inject_drift(engine)
    started = time.perf_counter()
    dispatched = sweep_all.delay().get(timeout=300)
    run = _wait_finished(engine, dispatched["run_id"])
    seconds = time.perf_counter() - started
    assert run["status"] == "finished" and _fixed(engine, run["id"]) == drift
    return seconds, dispatched, run


def _fixed(engine, run_id: str) -> set[tuple[str, str, str]]:
    with engine.connect() as conn:
        return {tuple(r) for r in conn.execute(text(
            "SELECT table_name, column_name, entity_id FROM counter_drift WHERE run_id = :r"), {"r": run_id})}


def _inline_sweep(url: str, connections: int) -> tuple[float, str]:
    import os

    from db.session import reset_engine
    from tasks.engagement import runs

    saved = os.environ["DATABASE_URL"]
    os.environ["DATABASE_URL"] = url
    reset_engine()
    try:
        started = time.perf_counter()
        report = runs.run_full_sweep(connections=connections)
        elapsed = time.perf_counter() - started
    finally:
        os.environ["DATABASE_URL"] = saved
        reset_engine()
    assert report.status == "finished"
    return elapsed, report.run_id


class _DirtyPass:
    """Like 1,000 posts in one statement (the triggers mark them) or unlike them again,
    then time one dirty batch: reading the marks, locking, recounting, writing, ledger."""

    def __init__(self, url: str, posts: int, changed: int = 1000):
        self.engine, self.posts, self.changed, self.rounds = create_engine(url), posts, changed, 0
        with self.engine.connect() as conn:
            self.fresh = conn.execute(text("SELECT id FROM users WHERE username = 'fresh'")).scalar_one()

    def once(self) -> float:
        like = self.rounds % 2 == 0
        with self.engine.begin() as conn:
            conn.execute(text("DELETE FROM counter_dirty"))
            conn.execute(text(
                "INSERT INTO likes (user_id, post_id) SELECT :u, md5('p' || n)::uuid FROM generate_series("
                "CAST(:first AS int), CAST(:posts AS int), CAST(:step AS int)) n" if like else
                "DELETE FROM likes WHERE user_id = :u"),
                {"u": self.fresh, "first": 1 + self.rounds, "posts": self.posts, "step": self.posts // self.changed})
            marked = conn.execute(text("SELECT count(*) FROM counter_dirty")).scalar()
        assert marked == self.changed, marked
        self.rounds += 1
        with Session(self.engine) as session:
            started = time.perf_counter()
            batch = rc.reconcile_dirty_batch(session, "posts", rc.start_run(session, "dirty"), 0, limit=2000)
            session.commit()
            elapsed = time.perf_counter() - started
        assert batch.rows_read == self.changed and batch.result.rows_fixed == self.changed
        return elapsed


def test_dirty_path_does_not_grow_with_table_size(engagement_dbs, bench_record):
    """Three runs of 8 interleaved passes (so a burst of load on the shared machine hits
    both sizes); the goal is judged on the worst run's ratio of medians."""
    small = _DirtyPass(engagement_dbs["small"], 10_000)
    big = _DirtyPass(engagement_dbs["big"], 1_000_000)
    runs = []
    for _ in range(3):
        timings: dict[str, list[float]] = {"small": [], "big": []}
        for _ in range(8):  # an even count: every run starts with no extra likes
            timings["small"].append(small.once())
            timings["big"].append(big.once())
        runs.append((statistics.median(timings["big"]), statistics.median(timings["small"])))
        small.rounds = big.rounds = 0
    big_s, small_s = max(runs, key=lambda run: run[0] / run[1])
    bench_record("engagement.dirty_pass_1000_posts_at_1m", big_s, "s", small_s,
                 "the same dirty pass at 10 k posts", goal=Goal("ratio", "<=", 1.5, "cost follows the dirty set, "
                                                                "not the table; worst of 3 runs"),
                 changed_posts=1000, repeats=8, statistic="median per run, worst of 3 runs",
                 ratios=[round(b / s_, 2) for b, s_ in runs])


def test_set_based_sweep_against_a_per_row_recount(engagement_dbs, bench_record):
    engine = create_engine(engagement_dbs["big"])
    specs = counters_of("posts")
    with engine.connect() as conn:
        total = conn.execute(text("SELECT count(*) FROM posts")).scalar()
        sample = conn.execute(text("SELECT id FROM posts TABLESAMPLE SYSTEM (2) LIMIT 10000")).scalars().all()
    counts = [f"SELECT count(*) FROM {c.source_table} WHERE {c.source_fk} = :id" for c in specs]
    started = time.perf_counter()
    with engine.begin() as conn:
        for post in sample:  # the naive job: one count query per post per counter, then a write
            values = {c.column: conn.execute(text(sql), {"id": post}).scalar() for c, sql in zip(specs, counts)}
            stored = conn.execute(text(f"SELECT {', '.join(values)} FROM posts WHERE id = :id"), {"id": post}).one()
            if tuple(stored) != tuple(values.values()):
                conn.execute(text(f"UPDATE posts SET {', '.join(f'{k} = :{k}' for k in values)} WHERE id = :id"),
                             {**values, "id": post})
    per_row = (time.perf_counter() - started) / len(sample) * total
    with Session(engine) as session:
        chunks = rc.plan_chunks(session, ("posts",))
        session.rollback()
    started = time.perf_counter()
    for chunk in chunks:  # the sweep's detection pass (the table is clean now), one process
        with Session(engine) as session:
            rc.find_chunk_drift(session, chunk)
            session.rollback()
    set_based = time.perf_counter() - started
    engine.dispose()
    bench_record("engagement.set_based_sweep_posts_1m", set_based, "s", per_row,
                 "per-row recount (one count query per post per counter, then a write), "
                 "10 k sample extrapolated to all posts", baseline_kind="extrapolated",
                 goal=Goal("ratio", "<=", 0.01, "100x faster"),
                 speedup=round(per_row / set_based, 1), sample=len(sample), posts=total)
