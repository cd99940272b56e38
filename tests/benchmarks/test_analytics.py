"""Analytics (issue 13), each figure beside its baseline in the same run.

1. ``track_view`` through the web tier's client (one Lua script call:
   HINCRBY + PFADD + two EXPIREs in Redis) against a bare pipelined ``INCR``,
   one round trip per call as well: what the counters' extra work costs a web
   request. 20,000 calls each, three alternating runs, medians.
2. Flushing 1 M view increments (over 20,000 of 200,000 posts, one in ten of
   each page's rows, each with a HyperLogLog of its viewers) into PostgreSQL with ``flush.flush`` (claim, read, PFCOUNT, the
   upserts, ``posts.views_count``, the touched users' ``user_analytics``,
   cleanup) against a bare ``COPY`` of the same aggregated rows into
   ``post_daily_views``. Three alternating runs, medians.
3. Rolling up one day holding 1 M engagement rows (likes, comments, shares,
   reactions, CLICK/SAVE events; 200 k more on the days around it) with
   ``rollup.rollup_day`` (aggregate, upsert, share platforms) against the bare
   ``GROUP BY`` of the same rows per author. Three alternating runs, medians,
   the day's rows deleted before each rollup so every run writes them all.
"""
from __future__ import annotations

import statistics
import time
from datetime import date, datetime, timedelta, timezone

import pytest
from sqlalchemy import text

from db.session import session_scope
from tasks.analytics import client, flush, rollup
from tests.benchmarks.conftest import Goal
from tests.analytics.conftest import counters_redis_on
from tests.conftest import truncate_all

CALLS = 20_000
USERS = 1_000
POSTS = 200_000
VIEWED_POSTS = 20_000      # the posts seen in the flushed minute, spread over the table
INCREMENTS = 1_000_000
VIEWERS_PER_POST = 5
RUNS = 3

PEOPLE = """
INSERT INTO users (id, email, username, hashed_password)
    SELECT g, 'u' || g || '@example.com', 'u' || g, '!' FROM generate_series(1, :users) g;
SELECT setval(pg_get_serial_sequence('users', 'id'), :users + 1);
INSERT INTO posts (id, author_id, content, created_at)
    SELECT md5('p' || k)::uuid, k % :users + 1, 'bench', now() - interval '3 days'
    FROM generate_series(0, :posts - 1) k
"""


@pytest.fixture
def bench_db(clean_db):
    with clean_db.begin() as conn:
        conn.execute(text("SET LOCAL session_replication_role = replica"))
        for statement in PEOPLE.split(";\n"):
            conn.execute(text(statement), {"users": USERS, "posts": POSTS})
    _vacuum(clean_db)   # as autovacuum would have: no measured run plans against empty-table statistics
    yield clean_db
    truncate_all(clean_db)


@pytest.fixture
def counters(bench_db):
    with counters_redis_on(15) as connection:
        yield connection


def _viewed_posts(engine) -> list[tuple[str, int]]:
    """Every tenth post in physical order: the minute's views touch a tenth of each page's rows."""
    with engine.connect() as conn:
        return [(p, a) for p, a in conn.execute(text(
            "SELECT id::text, author_id FROM (SELECT id, author_id, row_number() OVER (ORDER BY ctid) AS n "
            "FROM posts) AS p WHERE n % 10 = 0 ORDER BY id"))]


def test_track_view_against_a_bare_pipelined_incr(counters, bench_record):
    posts = [f"00000000-0000-4000-8000-{n:012x}" for n in range(1000)]

    def tracked() -> float:
        started = time.perf_counter()
        for n in range(CALLS):
            client.track_view(posts[n % 1000], n % 5000 + 1)
        return CALLS / (time.perf_counter() - started)

    def bare() -> float:
        started = time.perf_counter()
        for n in range(CALLS):
            pipe = counters.pipeline(transaction=False)
            pipe.incr(f"bench:incr:{n % 1000}")
            pipe.execute()
        return CALLS / (time.perf_counter() - started)

    tracked_runs, bare_runs = [], []
    for _ in range(RUNS):
        bare_runs.append(bare())
        tracked_runs.append(tracked())
    value, baseline = statistics.median(tracked_runs), statistics.median(bare_runs)
    assert counters.hlen(client.counters_key(client.day_bucket())) == 1000
    bench_record("analytics.track_view_calls_per_s", value, "calls/s", baseline,
                 "a bare pipelined INCR, one round trip per call, same client library and Redis",
                 goal=Goal("ratio", ">=", 0.5), statistic=f"median of {RUNS}, alternating",
                 tracked_runs=[round(r) for r in tracked_runs], bare_runs=[round(r) for r in bare_runs])


def _fill_counters(connection, posts: list[tuple[str, int]], day: str) -> int:
    """The Redis state 1 M track_view calls leave: per-post counts summing to INCREMENTS, and viewers."""
    per_post, extra = divmod(INCREMENTS, len(posts))
    pipe = connection.pipeline(transaction=False)
    total = 0
    for index, (post, _author) in enumerate(posts):
        count = per_post + (1 if index < extra else 0)
        total += count
        pipe.hset(client.counters_key(day), f"{client.VIEW}:{post}", count)
        pipe.pfadd(client.uniques_key(client.VIEW, day, post), *range(index, index + VIEWERS_PER_POST))
        if index % 2000 == 1999:
            pipe.execute()
    pipe.execute()
    return total


def _reset_views(engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE post_daily_views, analytics_flushes, user_analytics"))
        conn.execute(text("UPDATE posts SET views_count = 0 WHERE views_count <> 0"))


def test_flush_of_1m_view_increments_against_a_bare_copy(counters, bench_db, bench_record):
    posts = _viewed_posts(bench_db)
    assert len(posts) == VIEWED_POSTS
    now = datetime.now(timezone.utc)
    day = client.day_bucket(now)
    flushed, copied = [], []
    for _ in range(RUNS):
        _reset_views(bench_db)
        assert _fill_counters(counters, posts, day) == INCREMENTS
        # The baseline: the same aggregated rows, known in advance, straight into the table.
        rows = [(p, now.date(), a, INCREMENTS // VIEWED_POSTS, VIEWERS_PER_POST) for p, a in posts]
        raw = bench_db.raw_connection()
        try:
            started = time.perf_counter()
            with raw.cursor() as cursor:
                with cursor.copy("COPY post_daily_views (post_id, day, author_id, views, unique_viewers) "
                                 "FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
            raw.commit()
            copied.append(time.perf_counter() - started)
        finally:
            raw.close()
        _reset_views(bench_db)
        started = time.perf_counter()
        result = flush.flush(session_scope, counters, now=now)
        flushed.append(time.perf_counter() - started)
        assert result.increments == INCREMENTS and result.rejected == 0
    with bench_db.connect() as conn:
        assert conn.execute(text("SELECT sum(views_count) FROM posts")).scalar() == INCREMENTS
        assert conn.execute(text("SELECT sum(post_views) FROM user_analytics")).scalar() == INCREMENTS
    value, baseline = statistics.median(flushed), statistics.median(copied)
    bench_record("analytics.flush_1m_view_increments", value, "s", baseline,
                 f"bare COPY of the same {VIEWED_POSTS:,} aggregated rows into post_daily_views",
                 goal=Goal("ratio", "<=", 3), statistic=f"median of {RUNS}, alternating",
                 flush_runs_s=[round(s, 3) for s in flushed], copy_runs_s=[round(s, 3) for s in copied],
                 posts=POSTS, viewed_posts=VIEWED_POSTS, increments=INCREMENTS,
                 increments_per_s=round(INCREMENTS / value))


ENGAGEMENT_ROWS = {"likes": 500_000, "emoji_reactions": 150_000, "comments": 200_000, "shares": 100_000,
                   "user_engagement": 50_000}
OTHER_DAYS_ROWS = 200_000

FILL = {
    # (user, post) pairs are distinct for likes and reactions: user g % USERS, post g / USERS.
    "likes": "INSERT INTO likes (user_id, post_id, created_at) "
             "SELECT g % :users + 1, md5('p' || (g / :users) % :posts)::uuid, :start + (g - :first) * :step "
             "FROM generate_series(:first, :last) g",
    "emoji_reactions": "INSERT INTO emoji_reactions (user_id, post_id, emoji_code, created_at) "
                       "SELECT g % :users + 1, md5('p' || (g / :users + 7) % :posts)::uuid, 'heart', "
                       ":start + (g - :first) * :step FROM generate_series(:first, :last) g",
    "comments": "INSERT INTO comments (author_id, post_id, content, created_at) "
                "SELECT g % :users + 1, md5('p' || g % :posts)::uuid, 'nice', :start + (g - :first) * :step "
                "FROM generate_series(:first, :last) g",
    "shares": "INSERT INTO shares (user_id, post_id, platform, created_at) "
              "SELECT g % :users + 1, md5('p' || g % :posts)::uuid, "
              "(ARRAY['twitter', 'email', NULL])[g % 3 + 1], :start + (g - :first) * :step FROM generate_series(:first, :last) g",
    "user_engagement": "INSERT INTO user_engagement (user_id, post_id, engagement_type, created_at) "
                       "SELECT g % :users + 1, md5('p' || g % :posts)::uuid, "
                       "(ARRAY['CLICK', 'SAVE', 'VIEW'])[g % 3 + 1], :start + (g - :first) * :step "
                       "FROM generate_series(:first, :last) g",
}

BARE_GROUP_BY = text("""
    SELECT p.author_id, count(*) FROM (
        SELECT post_id FROM likes WHERE created_at >= :start AND created_at < :end
        UNION ALL SELECT post_id FROM emoji_reactions WHERE created_at >= :start AND created_at < :end
        UNION ALL SELECT post_id FROM comments WHERE created_at >= :start AND created_at < :end
        UNION ALL SELECT post_id FROM shares WHERE created_at >= :start AND created_at < :end
        UNION ALL SELECT post_id FROM user_engagement WHERE created_at >= :start AND created_at < :end
    ) AS e JOIN posts AS p ON p.id = e.post_id GROUP BY p.author_id
""")


def _fill_day(engine, day: date) -> None:
    start, end = rollup.day_bounds(day)
    with engine.begin() as conn:
        conn.execute(text("SET LOCAL session_replication_role = replica"))
        offset = 0
        for table, rows in ENGAGEMENT_ROWS.items():
            # A tenth of the rows before the day and a tenth after, in time order as they arrive.
            around = OTHER_DAYS_ROWS * rows // sum(ENGAGEMENT_ROWS.values()) // 2
            for first_at, span, count in ((start - timedelta(days=1), timedelta(days=1), around),
                                          (start, end - start, rows), (end, timedelta(days=1), around)):
                conn.execute(text(FILL[table]), {
                    "users": USERS, "posts": POSTS, "start": first_at, "step": span / count,
                    "first": offset, "last": offset + count - 1})
                offset += count
    _vacuum(engine)


def _vacuum(engine) -> None:
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))


def test_rollup_of_a_day_with_1m_engagement_rows_against_the_bare_group_by(bench_db, bench_record):
    day = datetime.now(timezone.utc).date() - timedelta(days=1)
    built = time.perf_counter()
    _fill_day(bench_db, day)
    build_seconds = time.perf_counter() - built
    start, end = rollup.day_bounds(day)
    now = datetime.now(timezone.utc)
    rolled, bare = [], []
    for _ in range(RUNS):
        with bench_db.connect() as conn:
            started = time.perf_counter()
            authors = conn.execute(BARE_GROUP_BY, {"start": start, "end": end}).all()
            bare.append(time.perf_counter() - started)
        with bench_db.begin() as conn:
            conn.execute(text("DELETE FROM user_analytics WHERE date = :d"), {"d": day})
            conn.execute(text("DELETE FROM user_share_platforms WHERE date = :d"), {"d": day})
        with session_scope() as session:
            started = time.perf_counter()
            result = rollup.rollup_day(session, day, now)
        rolled.append(time.perf_counter() - started)
    day_rows = sum(ENGAGEMENT_ROWS.values())
    with bench_db.connect() as conn:
        counted = conn.execute(text(
            "SELECT sum(post_engagements), sum(total_likes) FROM user_analytics WHERE date = :d"), {"d": day}).one()
    events_counted = ENGAGEMENT_ROWS["user_engagement"] * 2 // 3   # CLICK and SAVE, not VIEW
    assert result.users == len(authors) == USERS
    assert counted == (day_rows - ENGAGEMENT_ROWS["user_engagement"] + events_counted, ENGAGEMENT_ROWS["likes"])
    value, baseline = statistics.median(rolled), statistics.median(bare)
    bench_record("analytics.rollup_day_1m_engagement_rows", value, "s", baseline,
                 "bare GROUP BY of the same day's rows (five sources, UNION ALL) per author",
                 goal=Goal("ratio", "<=", 2), statistic=f"median of {RUNS}, alternating",
                 rollup_runs_s=[round(s, 3) for s in rolled], bare_runs_s=[round(s, 3) for s in bare],
                 day_rows=day_rows, other_days_rows=OTHER_DAYS_ROWS, users=USERS, posts=POSTS,
                 build_seconds=round(build_seconds, 1))
