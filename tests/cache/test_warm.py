"""cache.warm_active: who is warmed (the feed's activity rule, the last CACHE_ACTIVE_MINUTES),
what is warmed, the time budget and the resume cursor, overlap, and no cache at all."""
from __future__ import annotations

import itertools
from datetime import datetime, timedelta, timezone

from freezegun import freeze_time
from sqlalchemy import text

from tests.cache.conftest import add_follow, add_post, add_users, cached_keys

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=timezone.utc)


def warm(session, cache, *, minutes=15.0, budget=60.0, chunk_size=500, clock=None):
    from tasks.cache.warm import warm_active

    extra = {"clock": clock} if clock else {}
    return warm_active(session, cache, datetime.now(timezone.utc), active_minutes=minutes, budget_seconds=budget,
                       chunk_size=chunk_size, **extra)


def warmed_users(cache) -> set[int]:
    return {int(key.split(":")[1]) for key in cached_keys(cache) if key.startswith("user:") and key.count(":") == 1}


def test_only_users_active_in_the_window_are_warmed_with_profile_friends_and_first_page(db_session, cache):
    u = add_users(db_session, "posted_10_min_ago", "followed_14_min_ago", "posted_16_min_ago", "idle", "deleted")
    add_post(db_session, u["posted_10_min_ago"], at=NOW - timedelta(minutes=10))
    add_follow(db_session, u["followed_14_min_ago"], u["idle"])
    db_session.execute(text("UPDATE follows SET created_at = :at"), {"at": NOW - timedelta(minutes=14)})
    add_post(db_session, u["posted_16_min_ago"], at=NOW - timedelta(minutes=16))
    add_post(db_session, u["deleted"], at=NOW - timedelta(minutes=1))
    db_session.execute(text("UPDATE users SET deleted_at = :at WHERE id = :u"), {"at": NOW, "u": u["deleted"]})

    with freeze_time(NOW):
        result = warm(db_session, cache)
    active = {u["posted_10_min_ago"], u["followed_14_min_ago"]}
    assert warmed_users(cache) == active
    assert cached_keys(cache) == {key for user_id in active for key in (
        f"user:{user_id}", f"user:{user_id}:friends", f"feed:{user_id}:page:1", f"feed:{user_id}:pages")}
    # The soft-deleted user is active but has nothing to cache.
    assert (result.status, result.users, result.written, result.absent) == ("ok", 3, 6, 3)

    cache.flushdb()
    with freeze_time(NOW + timedelta(minutes=4)):       # four minutes on: the post is 14 min old, the follow 18
        warm(db_session, cache)
    assert warmed_users(cache) == {u["posted_10_min_ago"]}
    cache.flushdb()
    with freeze_time(NOW):
        warm(db_session, cache, minutes=30)             # CACHE_ACTIVE_MINUTES=30 reaches the 16-minute post
    assert warmed_users(cache) == active | {u["posted_16_min_ago"]}


def test_a_run_stops_at_its_budget_and_the_next_resumes_from_its_cursor(db_session, cache):
    from tasks.cache.warm import CURSOR_KEY

    users = sorted(add_users(db_session, *(f"u{i}" for i in range(5))).values())
    for user_id in users:
        add_post(db_session, user_id, at=NOW - timedelta(minutes=1))
    ticks = itertools.count()   # every clock reading is one second later: the budget of 1 s ends each run
    clock = lambda: float(next(ticks))  # noqa: E731

    with freeze_time(NOW):
        first = warm(db_session, cache, budget=1, chunk_size=2, clock=clock)
        assert (first.status, first.users, first.next_after) == ("budget_spent", 2, users[1])
        assert warmed_users(cache) == set(users[:2]) and int(cache.get(CURSOR_KEY)) == users[1]
        second = warm(db_session, cache, budget=1, chunk_size=2, clock=clock)
        assert (second.status, second.resumed_after, second.users) == ("budget_spent", users[1], 2)
        assert warmed_users(cache) == set(users[:4])
        third = warm(db_session, cache, budget=1, chunk_size=2, clock=clock)
        assert (third.status, third.users, third.next_after) == ("ok", 1, None)
        assert warmed_users(cache) == set(users) and not cache.exists(CURSOR_KEY)
        # A run with time to spare walks every chunk and starts from the beginning again.
        cache.flushdb()
        whole = warm(db_session, cache, budget=60, chunk_size=2)
        assert (whole.status, whole.users, whole.chunks, whole.resumed_after) == ("ok", 5, 3, 0)
        assert warmed_users(cache) == set(users)


def test_two_runs_never_overlap(clean_db, cache):
    from db.session import session_scope
    from tasks.cache.warm import JOB_NAME

    with clean_db.begin() as conn:
        add_post(conn, add_users(conn, "alice")["alice"])
    with clean_db.connect() as holder:
        holder.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"), {"k": f"cache.job:{JOB_NAME}"})
        with session_scope() as session:
            assert warm(session, cache).status == "skipped"
        assert cached_keys(cache) == set()
        holder.rollback()
    with session_scope() as session:
        assert warm(session, cache).status == "ok"
    assert len(cached_keys(cache)) == 4


def test_the_task_reads_its_settings_and_does_nothing_without_a_cache(clean_db, cache, monkeypatch):
    from tasks.cache.tasks import warm_active

    with clean_db.begin() as conn:
        u = add_users(conn, "recent", "older")
        add_post(conn, u["recent"], at=NOW - timedelta(minutes=20))
        add_post(conn, u["older"], at=NOW - timedelta(minutes=40))
    monkeypatch.setenv("CACHE_ACTIVE_MINUTES", "30")
    with freeze_time(NOW):
        result = warm_active()
    assert (result["status"], result["users"]) == ("ok", 1)
    assert warmed_users(cache) == {u["recent"]}
    with clean_db.connect() as conn:
        assert conn.execute(text("SELECT last_result->>'users' FROM job_heartbeats WHERE name = 'cache.warm_active'"
                                 )).scalar_one() == "1"

    cache.flushdb()
    monkeypatch.setenv("CACHE_URL", "")
    with freeze_time(NOW):
        assert warm_active() == {"status": "disabled"}
    assert cached_keys(cache) == set()
