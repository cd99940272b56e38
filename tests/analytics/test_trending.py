"""Trending tags: observed distinct users in the last 24 h against the mean of the seven
24 h windows before (at least 1), score (observed - expected)² / expected."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import text

import settings
from tasks.analytics import trending
from tasks.analytics.tags import tag_post
from tasks.analytics.trending import TagTrend, rank, trend_score

# --- the pure scoring -----------------------------------------------------------------


@pytest.mark.parametrize("observed, expected, min_users, score", [
    (12, 2.0, 3, 50.0),      # (12 - 2)² / 2
    (5, 0.0, 3, 16.0),       # expected below 1 counts as 1: (5 - 1)² / 1
    (4, 0.5, 3, 9.0),        # same clamp: (4 - 1)² / 1
    (3, 1.0, 3, 4.0),        # exactly the minimum trends
    (2, 1.0, 3, 0.0),        # more than expected, but fewer users than the minimum
    (50, 50.0, 3, 0.0),      # exactly as expected
    (40, 50.0, 3, 0.0),      # fewer than expected
    (6, 1.0, 7, 0.0),        # the minimum is the caller's
])
def test_trend_score(observed, expected, min_users, score):
    assert trend_score(observed, expected, min_users) == score


def _every_day(tag_id: int, name: str, users: int, windows=range(0, 8)) -> list[tuple[int, str, int, int]]:
    return [(tag_id, name, window, users) for window in windows]


# tag id, name, window (0 = last 24 h, 1..7 = the days before), distinct users
USES = [
    *_every_day(1, "popular", 50),                              # always 50 a day: expected 50, observed 50
    *_every_day(2, "rising", 2, range(1, 8)), (2, "rising", 0, 12),   # expected 2 → (12-2)²/2 = 50
    (3, "newtag", 0, 5),                                        # no history: expected 1 → 16
    (4, "tiny", 0, 2),                                          # 2 users < TRENDING_MIN_USERS (3)
    *_every_day(5, "steady4", 4, range(1, 8)), (5, "steady4", 0, 12),  # expected 4 → (12-4)²/4 = 16, 12 users
    (6, "anewtag", 0, 5),                                       # 16 with 5 users, like newtag: name decides
    (7, "sparse", 1, 5), (7, "sparse", 3, 5), (7, "sparse", 0, 4),    # expected 10/7, not 5: the mean of 7 days
    *_every_day(8, "gone", 9, range(1, 8)),                     # history, nothing today
    (9, "three", 0, 3),                                         # exactly the minimum: (3-1)²/1 = 4
]


def test_rank_orders_best_first_with_ties_by_users_then_name():
    found = rank(USES, min_users=3)
    assert [t.name for t in found] == ["rising", "steady4", "anewtag", "newtag", "sparse", "three"]
    by_name = {t.name: t for t in found}
    assert by_name["rising"] == TagTrend(2, "rising", 50.0, 12, 2.0)
    assert by_name["steady4"] == TagTrend(5, "steady4", 16.0, 12, 4.0)
    assert by_name["newtag"] == TagTrend(3, "newtag", 16.0, 5, 1.0)
    assert by_name["anewtag"] == TagTrend(6, "anewtag", 16.0, 5, 1.0)
    assert by_name["three"] == TagTrend(9, "three", 4.0, 3, 1.0)
    # (4 - 10/7)² / (10/7) = (18/7)² · 7/10 = 324/70
    assert by_name["sparse"].expected_24h == pytest.approx(10 / 7)
    assert by_name["sparse"].score == pytest.approx(324 / 70)
    assert by_name["sparse"].users_24h == 4


def test_rank_leaves_out_the_always_popular_the_too_small_and_the_quiet_today():
    names = {t.name for t in rank(USES, min_users=3)}
    assert "popular" not in names     # score 0: exactly as popular as every day
    assert "tiny" not in names        # 2 users
    assert "gone" not in names        # not used today


def test_rank_honours_the_limit_and_the_minimum():
    assert [t.name for t in rank(USES, min_users=3, limit=2)] == ["rising", "steady4"]
    assert [t.name for t in rank(USES, min_users=3, limit=1)] == ["rising"]
    # With 6 users needed, only the two tags with 12 users today are left.
    assert [t.name for t in rank(USES, min_users=6)] == ["rising", "steady4"]
    assert rank([], min_users=3) == []


def test_rank_is_independent_of_row_order():
    assert rank(list(reversed(USES)), min_users=3) == rank(USES, min_users=3)


# --- trending.update against the database -------------------------------------------

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=timezone.utc)


def _users(session, n: int) -> list[int]:
    return list(session.execute(text(
        "INSERT INTO users (email, username, hashed_password) "
        "SELECT 'trend' || g || '@example.com', 'trend' || g, '!' FROM generate_series(1, :n) g RETURNING id"),
        {"n": n}).scalars())


def _post(session, author: int, content: str, created_at: datetime, *, public: bool = True,
          deleted: bool = False) -> str:
    post_id = session.execute(text(
        "INSERT INTO posts (author_id, content, created_at, is_public, deleted_at) "
        "VALUES (:a, :c, :at, :public, CASE WHEN :deleted THEN :at ELSE NULL END) RETURNING id::text"),
        {"a": author, "c": content, "at": created_at, "public": public, "deleted": deleted}).scalar_one()
    tag_post(session, post_id)
    return post_id


def _trending_rows(session) -> list[tuple]:
    return [tuple(r) for r in session.execute(text(
        "SELECT tt.rank, t.name, tt.name, tt.score, tt.users_24h, tt.expected_24h, tt.computed_at "
        "FROM trending_tags AS tt JOIN tags AS t ON t.id = tt.tag_id ORDER BY tt.rank"))]


def test_update_counts_distinct_public_live_authors_and_replaces_the_table(db_session):
    session = db_session
    assert settings.current().trending_min_users == 3
    u = _users(session, 12)
    hour = timedelta(hours=1)
    # #surge: 4 distinct authors in the last 24 h; u[0] posts it 10 more times (still 4 users).
    for author in u[0:4]:
        _post(session, author, "big news #surge", NOW - 2 * hour)
    for n in range(10):
        _post(session, u[0], f"again {n} #Surge", NOW - timedelta(minutes=n + 1))
    # Posts after `now` are not counted.
    for author in u[8:12]:
        _post(session, author, "#surge from the future", NOW + hour)
    # #hidden: 3 public live authors; 3 private posts and 3 soft-deleted ones do not count.
    for author in u[0:3]:
        _post(session, author, "#hidden gem", NOW - 3 * hour)
    for author in u[3:6]:
        _post(session, author, "#hidden gem", NOW - 3 * hour, public=False)
    for author in u[6:9]:
        _post(session, author, "#hidden gem", NOW - 3 * hour, deleted=True)
    # #steady: 3 authors in each of the 8 windows: observed 3, expected 3, no trend.
    for day in range(8):
        for author in u[0:3]:
            _post(session, author, "#steady", NOW - timedelta(days=day) - hour)
    # #faded: 6 authors two days ago, none today.
    for author in u[0:6]:
        _post(session, author, "#faded", NOW - timedelta(days=2))

    result = trending.update(session, now=NOW)
    assert result == {"status": "ok", "trending": ["surge", "hidden"]}
    # surge: (4 - 1)² / 1 = 9; hidden: (3 - 1)² / 1 = 4.
    assert _trending_rows(session) == [
        (1, "surge", "surge", 9.0, 4, 1.0, NOW),
        (2, "hidden", "hidden", 4.0, 3, 1.0, NOW),
    ]

    # Two days later nothing of the above is in the last 24 h; #later is (3 authors).
    later = NOW + timedelta(days=2)
    for author in u[3:6]:
        _post(session, author, "#later", later - hour)
    result = trending.update(session, now=later)
    assert result == {"status": "ok", "trending": ["later"]}
    assert _trending_rows(session) == [(1, "later", "later", 4.0, 3, 1.0, later)]

    # Nothing trending at all: the table is emptied, not left as it was.
    result = trending.update(session, now=later + timedelta(days=3))
    assert result == {"status": "ok", "trending": []}
    assert _trending_rows(session) == []


def test_update_uses_the_seven_day_baseline(db_session):
    session = db_session
    u = _users(session, 12)
    # #rising: 2 authors in each of windows 1..7 (expected 2), 12 authors today: (12 - 2)² / 2 = 50.
    for day in range(1, 8):
        for author in u[0:2]:
            _post(session, author, "#rising", NOW - timedelta(days=day, hours=1))
    for author in u:
        _post(session, author, "#rising", NOW - timedelta(hours=5))
    # #fresh: 5 authors today, never before: (5 - 1)² / 1 = 16.
    for author in u[0:5]:
        _post(session, author, "#fresh", NOW - timedelta(hours=23, minutes=59))
    # #ancient: 12 authors 9 days ago (outside the 7-day baseline), 4 today: (4 - 1)² / 1 = 9.
    for author in u:
        _post(session, author, "#ancient", NOW - timedelta(days=9))
    for author in u[0:4]:
        _post(session, author, "#ancient", NOW - timedelta(hours=1))
    # #edge: 3 authors exactly 24 h ago (window 1, not today) and 2 today: 2 < 3 users, no trend.
    for author in u[0:3]:
        _post(session, author, "#edge", NOW - timedelta(days=1))
    for author in u[0:2]:
        _post(session, author, "#edge", NOW)

    assert trending.update(session, now=NOW)["trending"] == ["rising", "fresh", "ancient"]
    assert [(r[0], r[1], r[3], r[4], r[5]) for r in _trending_rows(session)] == [
        (1, "rising", 50.0, 12, 2.0), (2, "fresh", 16.0, 5, 1.0), (3, "ancient", 9.0, 4, 1.0)]


def test_a_second_run_at_the_same_time_steps_aside(db_session):
    from db.locks import try_xact_lock
    from db.session import new_session

    other = new_session()
    try:
        assert try_xact_lock(other, "analytics.trending_tags")
        result = trending.update(db_session, now=NOW)
        assert result == {"status": "skipped", "reason": "another run holds the lock"}
    finally:
        other.rollback()
        other.close()
    assert trending.update(db_session, now=NOW) == {"status": "ok", "trending": []}
