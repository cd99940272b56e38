"""analytics.rollup_daily: every user's daily row is recomputed from its sources, exactly.

The engagement rows are inserted with explicit ``created_at`` values (PostgreSQL's
``now()`` is not under freezegun's control) and every run is given its ``now``, so
the tests can stand on either side of midnight and of the grace for late events.
Expected rows come from a hand-written oracle over what the test inserted
(``Activity.rows``), never from the rollup's SQL.

D is a fixed UTC day. user_engagement rows of months without a partition of
their own (one 40 days before D, at least) land in the default partition, which
the rollup reads like any other.
"""
from __future__ import annotations

import random
import threading
import time as clock
from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone

from freezegun import freeze_time
from sqlalchemy import text

from db.locks import xact_lock
from db.session import session_scope
from tasks.analytics import client, flush, rollup
from tests.analytics.conftest import make_world

D = date(2026, 11, 20)
DAY = timedelta(days=1)
METRICS = ("profile_views", "post_impressions", "post_engagements", "followers_gained", "followers_lost",
           "total_likes", "total_comments", "total_shares", "post_views")


def at(day: date, hour: int = 0, minute: int = 0, second: int = 0, micro: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute, second, micro), tzinfo=timezone.utc)


# --- Inserting rows, and the oracle --------------------------------------------------------------

@dataclass
class Row:
    kind: str            # like, reaction, comment, share, engagement
    id: str
    post: str
    at: datetime
    detail: str | None = None   # a share's platform, an engagement's type


class Activity:
    """Inserts engagement rows at explicit times, committed, and remembers them for the oracle."""

    _SQL = {
        "like": "INSERT INTO likes (user_id, post_id, created_at) VALUES (:u, CAST(:p AS uuid), :at)",
        "reaction": "INSERT INTO emoji_reactions (user_id, post_id, emoji_code, created_at) "
                    "VALUES (:u, CAST(:p AS uuid), 'heart', :at)",
        "comment": "INSERT INTO comments (author_id, post_id, content, created_at) "
                   "VALUES (:u, CAST(:p AS uuid), 'nice', :at)",
        "share": "INSERT INTO shares (user_id, post_id, platform, created_at) VALUES (:u, CAST(:p AS uuid), :d, :at)",
        "engagement": "INSERT INTO user_engagement (user_id, post_id, engagement_type, created_at) "
                      "VALUES (:u, CAST(:p AS uuid), :d, :at)",
    }
    _TABLE = {"like": "likes", "reaction": "emoji_reactions", "comment": "comments", "share": "shares",
              "engagement": "user_engagement"}

    def __init__(self, engine):
        self.engine = engine
        self.rows: list[Row] = []

    def _add(self, kind: str, post: str, user: int, when: datetime, detail: str | None = None) -> Row:
        with self.engine.begin() as connection:
            row_id = connection.execute(text(self._SQL[kind] + " RETURNING id::text"),
                                        {"u": user, "p": post, "at": when, "d": detail}).scalar_one()
        row = Row(kind, row_id, post, when, detail)
        self.rows.append(row)
        return row

    def like(self, post, user, when):
        return self._add("like", post, user, when)

    def reaction(self, post, user, when):
        return self._add("reaction", post, user, when)

    def comment(self, post, user, when):
        return self._add("comment", post, user, when)

    def share(self, post, user, when, platform=None):
        return self._add("share", post, user, when, platform)

    def engagement(self, post, user, kind, when):
        return self._add("engagement", post, user, when, kind)

    def remove(self, row: Row) -> None:
        with self.engine.begin() as connection:
            deleted = connection.execute(text(f"DELETE FROM {self._TABLE[row.kind]} WHERE id = CAST(:id AS uuid)"),
                                         {"id": row.id}).rowcount
        assert deleted == 1
        self.rows.remove(row)


def expected_rows(world, rows: list[Row], day: date, views: Counter | None = None) -> dict[int, dict[str, int]]:
    """The oracle: each user's row for ``day``, from the rows the test inserted (and post views it tracked)."""
    start, end = at(day), at(day + DAY)
    expected: dict[int, dict[str, int]] = {}

    def row_of(user: int) -> dict[str, int]:
        return expected.setdefault(user, dict.fromkeys(METRICS, 0))

    for row in rows:
        if not start <= row.at < end:
            continue
        if row.kind == "engagement" and row.detail not in ("CLICK", "SAVE"):
            continue   # LIKE/SHARE/COMMENT are counted from their own tables; VIEW from the Redis counters
        counts = row_of(world.author_of(row.post))
        counts["post_engagements"] += 1
        if row.kind == "like":
            counts["total_likes"] += 1
        elif row.kind == "comment":
            counts["total_comments"] += 1
        elif row.kind == "share":
            counts["total_shares"] += 1
    for post, n in (views or Counter()).items():
        if n:
            row_of(world.author_of(post))["post_views"] += n
    return expected


def stored_rows(engine, day: date) -> dict[int, dict[str, int]]:
    with engine.connect() as connection:
        found = connection.execute(text(f"SELECT user_id, {', '.join(METRICS)} FROM user_analytics "
                                        "WHERE date = :day"), {"day": day}).all()
    return {user: dict(zip(METRICS, values)) for user, *values in found}


def finality(engine, day: date) -> tuple[set[bool], datetime | None]:
    """The is_final values of the day's rows, and the day's finalised_at."""
    with engine.connect() as connection:
        flags = set(connection.execute(text("SELECT is_final FROM user_analytics WHERE date = :d"),
                                       {"d": day}).scalars())
        finalised_at = connection.execute(text("SELECT finalised_at FROM analytics_days WHERE day = :d"),
                                          {"d": day}).scalar()
    return flags, finalised_at


def roll(day: date, now: datetime) -> rollup.DayResult:
    with session_scope() as session:
        return rollup.rollup_day(session, day, now)


def by_day(result: rollup.RollupResult) -> dict[date, bool]:
    return {d.day: d.final for d in result.days}


# --- 1. The engagement columns ---------------------------------------------------------------------

def test_a_days_row_counts_exactly_the_engagement_made_that_day_on_the_users_posts(clean_db):
    world = make_world(clean_db, users=4, posts=8)    # posts[i] by users[i % 4]
    u0, u1, u2, u3 = world.users
    p = world.posts
    act = Activity(clean_db)
    act.like(p[0], u1, at(D))                                # the first instant of D counts
    act.like(p[0], u2, at(D, 12))
    act.like(p[1], u0, at(D, 23, 59, 59, 999_999))           # the last one too
    act.like(p[4], u2, at(D + DAY))                          # D+1: not D's
    act.like(p[2], u1, at(D - DAY, 23, 59, 59))              # D-1: not D's
    act.reaction(p[0], u2, at(D, 8))
    act.reaction(p[5], u0, at(D, 9))
    for minute in range(3):
        act.comment(p[1], u2, at(D, 14, minute))
    act.comment(p[0], u1, at(D + DAY, 0, 0, 1))
    act.share(p[0], u1, at(D, 10), "twitter")
    act.share(p[0], u2, at(D, 11))
    act.share(p[2], u0, at(D, 12))
    act.engagement(p[0], u1, "CLICK", at(D, 13))
    act.engagement(p[1], u0, "SAVE", at(D, 13))
    act.engagement(p[1], u2, "SAVE", at(D, 15))
    for kind in ("LIKE", "SHARE", "COMMENT", "VIEW"):        # counted elsewhere, never again here
        act.engagement(p[0], u2, kind, at(D, 16))
        act.engagement(p[3], u0, kind, at(D, 16))            # u3's only activity on D
    act.engagement(p[2], u1, "CLICK", at(D + DAY, 1))
    act.engagement(p[6], u1, "CLICK", at(D - timedelta(days=40), 6))   # October: the default partition

    expected = expected_rows(world, act.rows, D)
    assert expected[u0] == {**dict.fromkeys(METRICS, 0), "total_likes": 2, "total_shares": 2,
                            "post_engagements": 2 + 1 + 2 + 1}     # the oracle, spelled out once for u0
    assert u3 not in expected
    result = roll(D, at(D + DAY, 12))
    assert (result.users, result.changed, result.cleared, result.final) == (len(expected), len(expected), 0, True)
    assert stored_rows(clean_db, D) == expected

    october = D - timedelta(days=40)
    roll(october, at(D + DAY, 12))
    assert stored_rows(clean_db, october) == expected_rows(world, act.rows, october) == {
        u2: {**dict.fromkeys(METRICS, 0), "post_engagements": 1}}


# --- 2. Followers ---------------------------------------------------------------------------------

def follows(engine, sql: str, when: datetime, **params) -> list[tuple[int, bool]]:
    """Change ``follows``; the events its trigger wrote are moved to ``when`` and returned."""
    with engine.begin() as connection:
        before = connection.execute(text("SELECT coalesce(max(id), 0) FROM follow_events")).scalar()
        connection.execute(text(sql), params)
        return [tuple(e) for e in connection.execute(text(
            "UPDATE follow_events SET created_at = :at WHERE id > :before RETURNING followed_id, gained"),
            {"at": when, "before": before}).all()]


FOLLOW = "INSERT INTO follows (follower_id, followed_id, status) VALUES (:a, :b, :status)"
SET_STATUS = "UPDATE follows SET status = :status WHERE follower_id = :a AND followed_id = :b"
UNFOLLOW = "DELETE FROM follows WHERE follower_id = :a AND followed_id = :b"


def test_followers_gained_and_lost_from_follows_status_changes_and_unfollows(clean_db):
    world = make_world(clean_db, users=5, posts=0)
    a, b, c, d, e = world.users
    assert follows(clean_db, FOLLOW, at(D - DAY, 23, 59), a=e, b=c, status="active") == [(c, True)]
    for follower, minute in ((b, 0), (c, 1), (d, 2)):
        assert follows(clean_db, FOLLOW, at(D, 9, minute), a=follower, b=a, status="active") == [(a, True)]
    assert follows(clean_db, FOLLOW, at(D, 10), a=e, b=a, status="pending") == []
    assert follows(clean_db, SET_STATUS, at(D, 11), a=e, b=a, status="active") == [(a, True)]
    assert follows(clean_db, SET_STATUS, at(D, 12), a=c, b=a, status="blocked") == [(a, False)]
    assert follows(clean_db, UNFOLLOW, at(D, 13), a=d, b=a) == [(a, False)]
    assert follows(clean_db, FOLLOW, at(D, 14), a=a, b=b, status="active") == [(b, True)]
    assert follows(clean_db, FOLLOW, at(D, 15), a=c, b=b, status="pending") == []
    assert follows(clean_db, SET_STATUS, at(D, 15, 30), a=c, b=b, status="blocked") == []   # never active
    assert follows(clean_db, UNFOLLOW, at(D, 16), a=c, b=b) == []
    assert follows(clean_db, UNFOLLOW, at(D + DAY), a=b, b=a) == [(a, False)]
    assert follows(clean_db, SET_STATUS, at(D + DAY, 8), a=c, b=a, status="active") == [(a, True)]

    def followers(gained: int, lost: int) -> dict[str, int]:
        return {**dict.fromkeys(METRICS, 0), "followers_gained": gained, "followers_lost": lost}

    now = at(D + 2 * DAY, 12)
    for day in (D - DAY, D, D + DAY):
        roll(day, now)
    assert stored_rows(clean_db, D - DAY) == {c: followers(1, 0)}
    assert stored_rows(clean_db, D) == {a: followers(4, 2), b: followers(1, 0)}
    assert stored_rows(clean_db, D + DAY) == {a: followers(1, 1)}


# --- 3. Midnight and the grace ----------------------------------------------------------------------

def test_is_final_once_the_day_is_over_and_the_grace_has_passed(monkeypatch):
    monkeypatch.delenv("ANALYTICS_GRACE_HOURS", raising=False)
    assert not rollup.is_final(D, at(D, 23, 59, 59))
    assert not rollup.is_final(D, at(D + DAY, 1, 59, 59))
    assert rollup.is_final(D, at(D + DAY, 2))
    monkeypatch.setenv("ANALYTICS_GRACE_HOURS", "6")
    assert not rollup.is_final(D, at(D + DAY, 5, 59))
    assert rollup.is_final(D, at(D + DAY, 6))


def test_a_day_is_provisional_until_its_grace_has_passed_then_final(clean_db, monkeypatch):
    monkeypatch.delenv("ANALYTICS_GRACE_HOURS", raising=False)
    world = make_world(clean_db)
    act = Activity(clean_db)
    act.like(world.posts[0], world.users[1], at(D, 10))
    act.like(world.posts[1], world.users[0], at(D + DAY, 0, 30))

    with freeze_time(at(D, 23, 30)):      # no now=: the run reads the (frozen) clock
        first = rollup.run(session_scope)
    assert by_day(first) == {D - DAY: True, D: False}
    assert finality(clean_db, D) == ({False}, None)

    second = rollup.run(session_scope, now=at(D + DAY, 1))
    assert by_day(second) == {D - DAY: True, D: False, D + DAY: False}     # D is inside its grace
    assert finality(clean_db, D) == ({False}, None)
    assert finality(clean_db, D + DAY) == ({False}, None)

    third = rollup.run(session_scope, now=at(D + DAY, 2, 30))
    assert by_day(third) == {D - DAY: True, D: True, D + DAY: False}
    assert finality(clean_db, D) == ({True}, at(D + DAY, 2, 30))
    assert stored_rows(clean_db, D) == expected_rows(world, act.rows, D)
    assert stored_rows(clean_db, D + DAY) == expected_rows(world, act.rows, D + DAY)

    with session_scope() as session:
        assert rollup.days_due(session, at(D + DAY, 3)) == [D, D + DAY]   # the last final day again


# --- 4. Late events -----------------------------------------------------------------------------------

def test_late_events_for_a_finalised_day_are_counted_and_a_late_view_reopens_it(clean_db, counters_redis):
    world = make_world(clean_db)
    post, viewer = world.posts[0], world.users[2]
    author = world.author_of(post)
    act = Activity(clean_db)
    act.comment(post, viewer, at(D, 9))
    rollup.run(session_scope, now=at(D + DAY, 2, 30))
    assert finality(clean_db, D) == ({True}, at(D + DAY, 2, 30))

    act.like(post, viewer, at(D, 21))                     # arrives after D was finalised
    later = rollup.run(session_scope, now=at(D + DAY, 3))
    assert by_day(later)[D] is True
    assert stored_rows(clean_db, D) == expected_rows(world, act.rows, D)
    assert stored_rows(clean_db, D)[author]["total_likes"] == 1
    assert finality(clean_db, D) == ({True}, at(D + DAY, 3))

    views = Counter({post: 2})
    client.track_view(post, viewer, now=at(D, 22))        # counted in Redis on D, flushed late
    client.track_view(post, None, now=at(D, 23))
    flushed = flush.flush(session_scope, flush.analytics_redis(), now=at(D + DAY, 3, 5))
    assert flushed.applied and flushed.increments == 2
    assert finality(clean_db, D)[1] is None               # reopened
    assert stored_rows(clean_db, D)[author]["post_views"] == 2   # right at once, before any rollup
    with session_scope() as session:
        assert D in rollup.days_due(session, at(D + DAY, 3, 10))

    again = rollup.run(session_scope, now=at(D + DAY, 3, 10))
    assert by_day(again)[D] is True
    assert finality(clean_db, D) == ({True}, at(D + DAY, 3, 10))
    assert stored_rows(clean_db, D) == expected_rows(world, act.rows, D, views)


# --- 5. Recompute, never increment ---------------------------------------------------------------------

def test_the_rollup_recomputes_a_day_rather_than_adding_to_it(world, clean_db):
    u0, u1, u2 = world.users
    act = Activity(clean_db)
    likes = [act.like(world.posts[0], liker, at(D, 10 + n)) for n, liker in enumerate((u1, u2))]
    lonely = act.comment(world.posts[1], u0, at(D, 12))      # u1's only activity on D
    now = at(D + DAY, 12)

    first = roll(D, now)
    assert (first.users, first.changed, first.cleared) == (2, 2, 0)
    assert stored_rows(clean_db, D) == expected_rows(world, act.rows, D)
    again = roll(D, now)
    assert (again.users, again.changed, again.cleared) == (2, 0, 0)
    assert stored_rows(clean_db, D) == expected_rows(world, act.rows, D)

    act.remove(likes[0])
    fewer = roll(D, now)
    assert (fewer.changed, fewer.cleared) == (1, 0)
    assert stored_rows(clean_db, D)[u0]["total_likes"] == 1

    act.remove(lonely)
    gone = roll(D, now)
    assert (gone.users, gone.changed, gone.cleared) == (1, 0, 1)
    assert stored_rows(clean_db, D) == expected_rows(world, act.rows, D)
    assert u1 not in stored_rows(clean_db, D)


# --- 6. Shares per platform -------------------------------------------------------------------------------

def share_platforms(engine, day: date) -> dict[tuple[int, str], int]:
    with engine.connect() as connection:
        return {(u, p): n for u, p, n in connection.execute(text(
            "SELECT user_id, platform, shares FROM user_share_platforms WHERE date = :d"), {"d": day})}


def expected_platforms(world, rows: list[Row], day: date) -> dict[tuple[int, str], int]:
    found: Counter = Counter()
    for row in rows:
        if row.kind == "share" and at(day) <= row.at < at(day + DAY):
            found[(world.author_of(row.post), row.detail or "internal")] += 1
    return dict(found)


def test_shares_per_platform_per_author_and_day(world, clean_db):
    u0, u1, u2 = world.users
    act = Activity(clean_db)
    act.share(world.posts[0], u1, at(D, 1), "twitter")
    act.share(world.posts[3], u2, at(D, 2), "twitter")     # posts[0] and [3] are u0's
    act.share(world.posts[0], u2, at(D, 3))                # NULL: internal
    act.share(world.posts[0], u1, at(D, 4), "internal")
    only_twitter = act.share(world.posts[1], u0, at(D, 5), "twitter")
    act.share(world.posts[1], u2, at(D, 6), "email")
    act.share(world.posts[2], u0, at(D + DAY, 0, 1), "twitter")   # D+1

    roll(D, at(D + DAY, 12))
    expected = expected_platforms(world, act.rows, D)
    assert expected == {(u0, "twitter"): 2, (u0, "internal"): 2, (u1, "twitter"): 1, (u1, "email"): 1}
    assert share_platforms(clean_db, D) == expected

    act.remove(only_twitter)
    act.remove(next(r for r in act.rows if r.detail is None))
    result = roll(D, at(D + DAY, 12))
    assert result.share_rows == 3
    assert share_platforms(clean_db, D) == expected_platforms(world, act.rows, D) == {
        (u0, "twitter"): 2, (u0, "internal"): 1, (u1, "email"): 1}
    assert stored_rows(clean_db, D) == expected_rows(world, act.rows, D)


# --- 7. Which days a run takes -------------------------------------------------------------------------------

def mark_day(engine, day: date, finalised: bool) -> None:
    with engine.begin() as connection:
        connection.execute(text(
            "INSERT INTO analytics_days (day, rolled_up_at, finalised_at) VALUES (:d, :at, :fin)"),
            {"d": day, "at": at(day + DAY, 3), "fin": at(day + DAY, 3) if finalised else None})


def days_due(now: datetime) -> list[date]:
    with session_scope() as session:
        return rollup.days_due(session, now)


def test_days_due_first_run_reopened_days_and_the_cap(clean_db):
    now = at(D, 12)
    assert days_due(now) == [D - DAY, D]                       # the first run ever

    mark_day(clean_db, D - 10 * DAY, finalised=False)          # a late view reopened it
    mark_day(clean_db, D - 3 * DAY, finalised=True)
    mark_day(clean_db, D - 2 * DAY, finalised=True)
    mark_day(clean_db, D - DAY, finalised=False)               # still in its grace
    assert days_due(now) == [D - 10 * DAY, D - 2 * DAY, D - DAY, D]

    with clean_db.begin() as connection:
        connection.execute(text("DELETE FROM analytics_days"))
    mark_day(clean_db, D - 60 * DAY, finalised=True)           # a long outage: a month per run, oldest first
    due = days_due(now)
    assert len(due) == rollup.MAX_DAYS_PER_RUN
    assert due == [D - (60 - n) * DAY for n in range(rollup.MAX_DAYS_PER_RUN)]
    result = rollup.run(session_scope, now=now)
    assert [d.day for d in result.days] == due and all(d.final for d in result.days)
    assert days_due(now)[0] == due[-1]                         # the next run goes on from there


# --- 8. A rollup and a flush at once -----------------------------------------------------------------------

def test_a_rollup_and_a_flush_of_the_same_day_at_once_end_exact(world, counters_redis, clean_db):
    post = world.posts[0]
    author = world.author_of(post)
    act = Activity(clean_db)
    views: Counter = Counter()
    now = at(D + DAY, 1)        # D provisional: both keep writing it
    rng = random.Random(8)
    for round_ in range(30):
        act.comment(post, world.users[1], at(D, 8, round_))
        for _ in range(3):
            client.track_view(post, None, now=at(D, 9, round_))
            views[post] += 1
        # Both start when the flush's view counts are written but not committed: its riskiest moment.
        both = threading.Barrier(2, timeout=30)
        errors: list[BaseException] = []

        def counts_written(step: str) -> None:
            if step == "upserted":
                both.wait()

        def rollup_side() -> None:
            both.wait()
            clock.sleep(rng.random() * 0.005)   # so it reads before the flush commits in some rounds, after in others
            rollup.run(session_scope, now=now, days=[D])

        def flush_side() -> None:
            flush.flush(session_scope, flush.analytics_redis(), now=now, checkpoint=counts_written)

        def guarded(target):
            def run() -> None:
                try:
                    target()
                except BaseException as exc:  # noqa: BLE001 - reported below
                    errors.append(exc)
                    both.abort()
            return run

        threads = [threading.Thread(target=guarded(f)) for f in (rollup_side, flush_side)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert errors == [] and not any(t.is_alive() for t in threads)
        assert stored_rows(clean_db, D)[author] == expected_rows(world, act.rows, D, views)[author], round_


def test_the_rollup_and_the_flush_both_wait_for_the_days_lock(world, counters_redis, clean_db):
    post = world.posts[0]
    Activity(clean_db).comment(post, world.users[1], at(D, 8))
    client.track_view(post, None, now=at(D, 9))
    now = at(D + DAY, 1)
    threads = [threading.Thread(target=rollup.run, args=(session_scope,), kwargs={"now": now, "days": [D]}),
               threading.Thread(target=flush.flush, args=(session_scope, flush.analytics_redis()),
                                kwargs={"now": now})]
    with session_scope() as holder:
        xact_lock(holder, rollup.DAY_LOCK, D.isoformat())
        for thread in threads:
            thread.start()
        clock.sleep(0.5)
        assert [t.is_alive() for t in threads] == [True, True]
        assert stored_rows(clean_db, D) == {}
    for thread in threads:
        thread.join(30)
    assert not any(t.is_alive() for t in threads)
    assert stored_rows(clean_db, D)[world.author_of(post)]["post_views"] == 1
