"""analytics.flush_counters: every increment the web tier made reaches PostgreSQL exactly
once, whatever step a flusher is killed at and however many flush at once."""
from __future__ import annotations

import random
import signal
import subprocess
import sys
import functools
import threading
import time
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import text

from db.session import session_scope
from tasks.analytics import client, flush
from tests.conftest import ROOT
from tests.waiting import in_threads

STEPS = ("claim", "claimed", "read", "upserted", "committed")


def track_some(world, seed: int, views: int = 60, profile_views: int = 25, pages: int = 10) -> dict:
    """Random traffic through the client; returns the exact totals it should produce."""
    rng = random.Random(seed)
    expected = {"views": Counter(), "impressions": Counter(), "profile": Counter()}
    for _ in range(views):
        post = rng.choice(world.posts)
        client.track_view(post, rng.choice([None, *world.users]))
        expected["views"][post] += 1
    for _ in range(profile_views):
        user, viewer = rng.choice(world.users), rng.choice([None, *world.users])
        client.track_profile_view(user, viewer)
        expected["profile"][user] += 0 if viewer == user else 1
    for _ in range(pages):
        page = rng.sample(world.posts, 3)
        client.track_impressions(page, rng.choice(world.users))
        expected["impressions"].update(page)
    return expected


def merged(*totals: dict) -> dict:
    out = {"views": Counter(), "impressions": Counter(), "profile": Counter()}
    for one in totals:
        for key in out:
            out[key].update(one[key])
    return out


def stored(engine) -> dict:
    with engine.connect() as connection:
        views_count = dict(connection.execute(text("SELECT id::text, views_count FROM posts WHERE views_count > 0")).all())
        daily = connection.execute(text(
            "SELECT post_id::text, sum(views), sum(impressions) FROM post_daily_views GROUP BY 1")).all()
        profile = dict(connection.execute(text(
            "SELECT user_id, sum(views) FROM profile_daily_views GROUP BY 1")).all())
        analytics = connection.execute(text(
            "SELECT user_id, sum(profile_views), sum(post_views), sum(post_impressions) "
            "FROM user_analytics GROUP BY 1")).all()
    return {"views_count": views_count, "daily_views": {p: v for p, v, _i in daily if v},
            "daily_impressions": {p: i for p, _v, i in daily if i}, "profile": {u: v for u, v in profile.items() if v},
            "analytics": {u: (pv, v, i) for u, pv, v, i in analytics}}


def assert_exact(engine, world, expected: dict) -> None:
    found = stored(engine)
    views = {p: n for p, n in expected["views"].items() if n}
    assert found["views_count"] == views
    assert found["daily_views"] == views
    assert found["daily_impressions"] == {p: n for p, n in expected["impressions"].items() if n}
    assert found["profile"] == {u: n for u, n in expected["profile"].items() if n}
    for user in world.users:
        posts = [p for p in world.posts if world.author_of(p) == user]
        want = (expected["profile"][user], sum(expected["views"][p] for p in posts),
                sum(expected["impressions"][p] for p in posts))
        assert found["analytics"].get(user, (0, 0, 0)) == want, user


def leftover_keys(counters_redis) -> list[str]:
    return sorted(k.decode() for k in counters_redis.scan_iter(match=f"{flush.FLUSH_PREFIX}*")) + \
        [f.decode() for f in counters_redis.zrange(flush.PENDING, 0, -1)]


def test_a_flush_moves_every_count_and_leaves_nothing_behind(world, counters_redis, clean_db):
    expected = track_some(world, seed=1)
    result = flush.flush(session_scope, flush.analytics_redis())
    assert result.claimed and result.applied == [result.claimed]
    assert result.increments == sum(sum(c.values()) for c in expected.values())
    assert_exact(clean_db, world, expected)
    assert leftover_keys(counters_redis) == []
    again = flush.flush(session_scope, flush.analytics_redis())
    assert again.claimed is None and again.applied == []
    assert_exact(clean_db, world, expected)


@pytest.mark.parametrize("step", STEPS)
def test_a_flusher_killed_at_any_step_loses_and_doubles_nothing(world, counters_redis, clean_db, step):
    before = track_some(world, seed=2)
    child = subprocess.run([sys.executable, "-m", "tests.analytics.flusher_child", step], cwd=ROOT,
                           capture_output=True, timeout=60)
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()[-2000:]
    with clean_db.connect() as connection:
        applied = connection.execute(text("SELECT count(*) FROM analytics_flushes")).scalar()
    # Nothing is half-applied: the killed transaction left no trace, or it committed whole.
    assert applied == (1 if step == "committed" else 0)
    if step != "committed":
        assert stored(clean_db)["views_count"] == {}
    after = track_some(world, seed=3)   # the web tier goes on meanwhile
    flush.flush(session_scope, flush.analytics_redis())
    assert_exact(clean_db, world, merged(before, after))
    assert leftover_keys(counters_redis) == []


def test_two_flushers_on_the_same_pending_flush_count_it_once(world, counters_redis, clean_db):
    expected = track_some(world, seed=4)
    flush_id = flush.claim(counters_redis, datetime.now(timezone.utc))
    assert flush_id is not None
    both_read = threading.Barrier(2, timeout=30)

    def wait_for_the_other(step: str) -> None:
        if step == "read":
            both_read.wait()   # both hold the same data before either applies it

    run = functools.partial(flush.flush, session_scope, counters_redis, checkpoint=wait_for_the_other)
    results = in_threads(run, run)
    assert sorted(len(r.applied) for r in results) == [0, 1]
    assert sorted(len(r.already_applied) for r in results) == [0, 1]
    assert_exact(clean_db, world, expected)
    assert leftover_keys(counters_redis) == []


def test_concurrent_flusher_processes_under_live_traffic_count_exactly(world, counters_redis, clean_db):
    code = ("import sys, time; from db.session import session_scope; from tasks.analytics import flush\n"
            "print('ready', flush=True); deadline = time.monotonic() + 4\n"
            "while time.monotonic() < deadline:\n"
            "    flush.flush(session_scope, flush.analytics_redis()); time.sleep(0.01)\n")
    flushers = [subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
                for _ in range(2)]
    for proc in flushers:
        assert proc.stdout.readline().strip() == "ready"
    totals, seed = [], 10
    deadline = time.monotonic() + 2.5
    while time.monotonic() < deadline:      # traffic while both flush
        totals.append(track_some(world, seed=seed, views=20, profile_views=5, pages=3))
        seed += 1
        time.sleep(0.02)
    for proc in flushers:
        assert proc.wait(timeout=60) == 0
    flush.flush(session_scope, flush.analytics_redis())
    assert_exact(clean_db, world, merged(*totals))
    with clean_db.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM analytics_flushes")).scalar() >= 3


def test_unique_viewers_are_estimated_per_post_and_day(world, counters_redis, clean_db):
    post = world.posts[0]
    for viewer in world.users * 3:       # each of 3 viewers three times
        client.track_view(post, viewer)
    client.track_view(post, None)        # anonymous: a view, not a viewer
    flush.flush(session_scope, flush.analytics_redis())
    client.track_view(post, world.users[0])   # a viewer seen before: still 3
    flush.flush(session_scope, flush.analytics_redis())
    with clean_db.connect() as connection:
        views, uniques = connection.execute(text(
            "SELECT views, unique_viewers FROM post_daily_views WHERE post_id = CAST(:p AS uuid)"), {"p": post}).one()
    assert (views, uniques) == (11, 3)


def test_counts_land_on_the_day_they_were_made(world, counters_redis, clean_db):
    late_evening = datetime(2026, 11, 29, 23, 59, 50, tzinfo=timezone.utc)
    client.track_view(world.posts[0], world.users[1], now=late_evening)
    client.track_view(world.posts[0], world.users[1], now=late_evening + timedelta(seconds=20))
    flush.flush(session_scope, flush.analytics_redis(), now=late_evening + timedelta(minutes=1))
    with clean_db.connect() as connection:
        days = dict(connection.execute(text("SELECT day::text, views FROM post_daily_views")).all())
    assert days == {"2026-11-29": 1, "2026-11-30": 1}


def test_counts_of_deleted_posts_and_foreign_fields_are_rejected_not_fatal(world, counters_redis, clean_db):
    client.track_view(world.posts[0], None)
    client.track_view(world.posts[1], None)
    with clean_db.begin() as connection:
        connection.execute(text("DELETE FROM posts WHERE id = CAST(:p AS uuid)"), {"p": world.posts[1]})
    day = client.day_bucket()
    counters_redis.hincrby(client.counters_key(day), "v:not-a-uuid", 5)
    counters_redis.hincrby(client.counters_key(day), "x:whatever", 1)
    result = flush.flush(session_scope, flush.analytics_redis())
    assert result.applied and result.rejected == 2
    with clean_db.connect() as connection:
        assert connection.execute(text("SELECT rejected FROM analytics_flushes")).scalar() == 3
    assert stored(clean_db)["views_count"] == {world.posts[0]: 1}


@pytest.mark.parametrize("call", [
    lambda: client.track_view("not-a-uuid", 1),
    lambda: client.track_view("6f1c2a8e-8a3b-4d2e-9a55-0c1d2e3f4a5b", "7"),
    lambda: client.track_view("6f1c2a8e-8a3b-4d2e-9a55-0c1d2e3f4a5b", True),
    lambda: client.track_profile_view(0, 1),
    lambda: client.track_profile_view(2**31, 1),
    lambda: client.track_impressions(["6f1c2a8e-8a3b-4d2e-9a55-0c1d2e3f4a5b", 5], 1),
    lambda: client.track_impressions([f"6f1c2a8e-8a3b-4d2e-9a55-{n:012x}" for n in range(501)], 1),
])
def test_the_client_refuses_bad_ids_with_a_clear_error_and_writes_nothing(counters_redis, call):
    with pytest.raises(ValueError):
        call()
    assert counters_redis.dbsize() == 0


def test_the_client_module_needs_only_redis():
    code = ("import sys; import tasks.analytics.client\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('sqlalchemy', 'celery', 'kombu', 'settings', 'db', 'workers', 'psycopg'))\n"
            "print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_status_reports_counters_waiting_and_a_flush_pending_too_long(world, counters_redis):
    now = datetime.now(timezone.utc)
    client.track_view(world.posts[0], None)
    client.track_profile_view(world.users[0], None)
    state, problems = flush.health(counters_redis, now)
    assert state == {"pending_flushes": 0, "live_counters": 2, "oldest_pending_s": None} and problems == []
    flush_id = flush.claim(counters_redis, now)
    assert flush_id is not None          # a flusher died after claiming, six minutes ago:
    counters_redis.zadd(flush.PENDING, {flush_id: (now - timedelta(minutes=6)).timestamp()})
    state, problems = flush.health(counters_redis, now)
    assert state["pending_flushes"] == 1 and state["live_counters"] == 0 and state["oldest_pending_s"] >= 360
    assert len(problems) == 1 and "pending 36" in problems[0]
    flush.flush(session_scope, counters_redis)
    assert flush.health(counters_redis, now) == ({"pending_flushes": 0, "live_counters": 0,
                                                  "oldest_pending_s": None}, [])


def test_the_flush_task_runs_on_a_real_worker(celery_worker, world, counters_redis, clean_db):
    from tasks.analytics.tasks import flush_counters

    expected = track_some(world, seed=20, views=30, profile_views=10, pages=4)
    result = flush_counters.delay().get(timeout=60)
    assert result["status"] == "ok" and result["applied"] == 1
    assert result["increments"] == sum(sum(c.values()) for c in expected.values())
    assert_exact(clean_db, world, expected)
    assert flush_counters.delay().get(timeout=60)["claimed"] is None


def test_a_flush_postgresql_refuses_stays_pending_and_does_not_hold_up_the_others(world, counters_redis, clean_db):
    from workers.errors import JobError

    full, other = world.posts[0], world.posts[1]
    today = datetime.now(timezone.utc).date()
    with clean_db.begin() as connection:   # a daily counter at the integer limit: one more view overflows it
        connection.execute(text(
            "INSERT INTO post_daily_views (post_id, day, author_id, views) "
            "VALUES (CAST(:p AS uuid), :d, :a, 2147483600)"), {"p": full, "d": today, "a": world.author_of(full)})
    client.track_view(full, None)
    for _ in range(60):
        client.track_view(full, None)
    poisoned = flush.claim(counters_redis, datetime.now(timezone.utc))
    client.track_view(other, None)
    with pytest.raises(JobError) as raised:
        flush.flush(session_scope, counters_redis)
    assert raised.value.code == "flush_failed"
    assert stored(clean_db)["views_count"] == {other: 1}        # the later flush went through
    assert flush.pending(counters_redis) == [poisoned]         # the refused one waits, whole
    assert counters_redis.hget(flush.flush_key(poisoned, client.day_bucket()), f"v:{full}") == b"61"


def test_counts_no_client_could_write_are_rejected(world, counters_redis, clean_db):
    day = client.day_bucket()
    counters_redis.hset(client.counters_key(day), mapping={f"v:{world.posts[0]}": 2**31, f"v:{world.posts[1]}": -5})
    client.track_view(world.posts[2], None)
    result = flush.flush(session_scope, counters_redis)
    assert result.rejected == 2 and stored(clean_db)["views_count"] == {world.posts[2]: 1}
