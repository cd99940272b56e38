"""The daily ``user_analytics`` rows (seed 003), recomputed from their sources, never incremented.

Each run of ``analytics.rollup_daily`` (hourly) re-aggregates every day from
the last finalised one to today, plus any finalised day a late count
reopened (Discourse's ``MaintainUserVisitDailyRollups`` re-aggregates from the
last complete day the same way). A day is written as provisional until it is
over and ``ANALYTICS_GRACE_HOURS`` have passed for late events, then as final.
Each day is one set-based statement in one transaction: the upsert of every
user's row and the removal of rows whose counts went back to nothing.

The columns, for a user U and a UTC day D:

- ``total_likes``, ``total_comments``, ``total_shares``: rows made on D in
  ``likes``, ``comments`` and ``shares`` on U's posts;
- ``post_engagements``: those, plus emoji reactions, plus ``CLICK`` and
  ``SAVE`` events of ``user_engagement`` on U's posts (``LIKE``, ``SHARE`` and
  ``COMMENT`` events in that log are not counted again: their tables count);
- ``post_views``, ``post_impressions``: ``post_daily_views`` of U's posts;
  ``profile_views``: ``profile_daily_views`` (both from the Redis flush);
- ``followers_gained`` / ``followers_lost``: ``follow_events`` (a trigger
  records each follow and unfollow, since an unfollow deletes its row).

A flush writes the three view columns of the users it touched at once
(``refresh_view_columns``), and reopens a finalised day it touched, so a late
count is in the row within the minute and the next run finalises the day again.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone

from sqlalchemy import text
from sqlalchemy.orm import Session

import settings
from db.locks import xact_lock
from db.models.social import SHARE_PLATFORMS

MAX_DAYS_PER_RUN = 31      # a long outage catches up a month per hour, oldest first
DAY_LOCK = "analytics.day"  # the rollup and the flush never write one day's rows at once

_METRICS = ("profile_views", "post_impressions", "post_engagements", "followers_gained", "followers_lost",
            "total_likes", "total_comments", "total_shares", "post_views")

# The day's engagement rows are read once, by range (the BRIN indexes on created_at;
# user_engagement is pruned to its month's partition), tagged with a small code for their kind,
# joined to their post's author and counted per author in one pass: the shape of the bare
# GROUP BY, which PostgreSQL runs as a parallel hash join with partial aggregates. A share's
# code also says its platform, so user_share_platforms needs no second pass (grouping by the
# platform instead took the parallel plan away).
LIKE, REACTION, COMMENT, EVENT, SHARE = 1, 2, 3, 4, 10   # a share is SHARE + its platform's index
_SHARE_CODE = ("CASE coalesce(platform, 'internal') "
               + " ".join(f"WHEN '{name}' THEN {SHARE + n}" for n, name in enumerate(SHARE_PLATFORMS))
               + f" ELSE {SHARE + SHARE_PLATFORMS.index('other')} END")
_SHARE_COLUMNS = [f"shares_{name}" for name in SHARE_PLATFORMS]
_ZEROS = ", ".join("0" for _ in SHARE_PLATFORMS)

_DAY_AGGREGATE = f"""
    engaged AS (
        SELECT p.author_id AS user_id, count(*) FILTER (WHERE e.kind = {LIKE}) AS likes,
               count(*) FILTER (WHERE e.kind = {REACTION}) AS reactions,
               count(*) FILTER (WHERE e.kind = {COMMENT}) AS comments,
               count(*) FILTER (WHERE e.kind = {EVENT}) AS events,
               {", ".join(f"count(*) FILTER (WHERE e.kind = {SHARE + n}) AS {column}"
                          for n, column in enumerate(_SHARE_COLUMNS))}
        FROM (
            SELECT post_id, {LIKE} AS kind FROM likes WHERE created_at >= :start AND created_at < :end
            UNION ALL
            SELECT post_id, {REACTION} FROM emoji_reactions WHERE created_at >= :start AND created_at < :end
            UNION ALL
            SELECT post_id, {COMMENT} FROM comments WHERE created_at >= :start AND created_at < :end
            UNION ALL
            SELECT post_id, {_SHARE_CODE} FROM shares WHERE created_at >= :start AND created_at < :end
            UNION ALL
            SELECT post_id, {EVENT} FROM user_engagement WHERE created_at >= :start AND created_at < :end
              AND engagement_type IN ('CLICK', 'SAVE')
        ) AS e JOIN posts AS p ON p.id = e.post_id
        GROUP BY p.author_id
    ), parts AS (
        SELECT user_id, likes, reactions, comments, events, {", ".join(_SHARE_COLUMNS)},
               0 AS impressions, 0 AS post_views, 0 AS profile_views, 0 AS gained, 0 AS lost
        FROM engaged
        UNION ALL
        SELECT author_id, 0, 0, 0, 0, {_ZEROS}, sum(impressions), sum(views), 0, 0, 0
        FROM post_daily_views WHERE day = :day GROUP BY author_id
        UNION ALL
        SELECT user_id, 0, 0, 0, 0, {_ZEROS}, 0, 0, views, 0, 0 FROM profile_daily_views WHERE day = :day
        UNION ALL
        SELECT followed_id, 0, 0, 0, 0, {_ZEROS}, 0, 0, 0, count(*) FILTER (WHERE gained),
               count(*) FILTER (WHERE NOT gained)
        FROM follow_events WHERE created_at >= :start AND created_at < :end GROUP BY followed_id
    ), agg AS (
        -- The join with users drops follow events of users deleted since.
        SELECT x.user_id, sum(x.profile_views) AS profile_views, sum(x.impressions) AS post_impressions,
               sum(x.likes + x.reactions + x.comments + x.events + {" + ".join("x." + c for c in _SHARE_COLUMNS)})
                   AS post_engagements,
               sum(x.gained) AS followers_gained, sum(x.lost) AS followers_lost, sum(x.likes) AS total_likes,
               sum(x.comments) AS total_comments, sum({" + ".join("x." + c for c in _SHARE_COLUMNS)}) AS total_shares,
               sum(x.post_views) AS post_views, {", ".join(f"sum(x.{c}) AS {c}" for c in _SHARE_COLUMNS)}
        FROM parts AS x JOIN users AS u ON u.id = x.user_id GROUP BY x.user_id
    )"""

_COLUMNS = ", ".join(_METRICS)
_CHANGED = f"({', '.join('ua.' + m for m in _METRICS)}, ua.is_final) IS DISTINCT FROM " \
           f"({', '.join('EXCLUDED.' + m for m in _METRICS)}, EXCLUDED.is_final)"

# The aggregate is a plain SELECT: PostgreSQL runs no part of a data-modifying statement in
# parallel, and on two cores the day's scans and aggregates run in about half the time with
# parallel workers. Its rows (one per active user) come back and go in again as arrays.
_AGGREGATE_DAY_SQL = text(f"WITH {_DAY_AGGREGATE.strip()}\n"
                          f"SELECT user_id, {', '.join(f'CAST({c} AS int)' for c in (*_METRICS, *_SHARE_COLUMNS))} "
                          f"FROM agg")

_UPSERT_DAY_SQL = text(f"""
    WITH agg AS (
        SELECT * FROM unnest(CAST(:user_ids AS int[]), {', '.join(f'CAST(:{m} AS int[])' for m in _METRICS)})
               AS a(user_id, {_COLUMNS})
    ), upserted AS (
        INSERT INTO user_analytics AS ua (user_id, date, {_COLUMNS}, is_final)
        SELECT user_id, :day, {_COLUMNS}, :final FROM agg ORDER BY user_id
        ON CONFLICT (user_id, date) DO UPDATE SET
            {', '.join(f'{m} = EXCLUDED.{m}' for m in _METRICS)}, is_final = EXCLUDED.is_final, updated_at = now()
        WHERE {_CHANGED}
        RETURNING 1
    ), cleared AS (
        DELETE FROM user_analytics AS ua WHERE ua.date = :day
          AND NOT EXISTS (SELECT 1 FROM agg WHERE agg.user_id = ua.user_id)
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM upserted), (SELECT count(*) FROM cleared)
""")

_UPSERT_SHARE_PLATFORMS_SQL = text("""
    WITH agg AS (
        SELECT * FROM unnest(CAST(:user_ids AS int[]), CAST(:platforms AS text[]), CAST(:shares AS int[]))
               AS a(user_id, platform, shares)
    ), upserted AS (
        INSERT INTO user_share_platforms AS t (user_id, date, platform, shares)
        SELECT user_id, :day, platform, shares FROM agg ORDER BY user_id, platform
        ON CONFLICT (user_id, date, platform) DO UPDATE SET shares = EXCLUDED.shares
        WHERE t.shares <> EXCLUDED.shares
        RETURNING 1
    )
    DELETE FROM user_share_platforms AS t WHERE t.date = :day
      AND NOT EXISTS (SELECT 1 FROM agg WHERE agg.user_id = t.user_id AND agg.platform = t.platform)
""")

_MARK_DAY_SQL = text("""
    INSERT INTO analytics_days (day, rolled_up_at, finalised_at, users)
    VALUES (:day, :now, CASE WHEN :final THEN CAST(:now AS timestamptz) END, :users)
    ON CONFLICT (day) DO UPDATE SET rolled_up_at = EXCLUDED.rolled_up_at, finalised_at = EXCLUDED.finalised_at,
                                    users = EXCLUDED.users
""")

# What a flush changed: the view columns of the touched users, from the daily view tables
# (joins, not a lookup per user: a flush can touch thousands of authors).
_REFRESH_VIEWS_SQL = text("""
    WITH touched AS (
        SELECT DISTINCT unnest(CAST(:user_ids AS int[])) AS user_id
    ), views AS (
        SELECT v.author_id AS user_id, sum(v.views) AS post_views, sum(v.impressions) AS post_impressions
        FROM post_daily_views AS v JOIN touched AS t ON t.user_id = v.author_id
        WHERE v.day = :day GROUP BY v.author_id
    ), profiles AS (
        SELECT pv.user_id, pv.views FROM profile_daily_views AS pv JOIN touched AS t ON t.user_id = pv.user_id
        WHERE pv.day = :day
    ), agg AS (
        SELECT t.user_id, coalesce(v.post_views, 0) AS post_views,
               coalesce(v.post_impressions, 0) AS post_impressions, coalesce(pr.views, 0) AS profile_views
        FROM touched AS t JOIN users AS u ON u.id = t.user_id
        LEFT JOIN views AS v ON v.user_id = t.user_id LEFT JOIN profiles AS pr ON pr.user_id = t.user_id
    )
    INSERT INTO user_analytics AS ua (user_id, date, post_views, post_impressions, profile_views)
    SELECT user_id, :day, post_views, post_impressions, profile_views FROM agg ORDER BY user_id
    ON CONFLICT (user_id, date) DO UPDATE SET
        post_views = EXCLUDED.post_views, post_impressions = EXCLUDED.post_impressions,
        profile_views = EXCLUDED.profile_views, updated_at = now()
    WHERE (ua.post_views, ua.post_impressions, ua.profile_views)
          IS DISTINCT FROM (EXCLUDED.post_views, EXCLUDED.post_impressions, EXCLUDED.profile_views)
""")


def day_bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime.combine(day, time.min, tzinfo=timezone.utc)
    return start, start + timedelta(days=1)


def is_final(day: date, now: datetime) -> bool:
    """A day is final once it is over and the grace for late events has passed."""
    grace = timedelta(hours=settings.current().analytics_grace_hours)
    return now >= day_bounds(day)[1] + grace


def refresh_view_columns(session: Session, day: date, user_ids: list[int]) -> None:
    """After a flush: the view columns of these users (authors of viewed posts, viewed profiles)
    for the day, and reopen the day if it was final."""
    xact_lock(session, DAY_LOCK, day.isoformat())
    session.execute(_REFRESH_VIEWS_SQL, {"day": day, "user_ids": user_ids})
    session.execute(text("UPDATE analytics_days SET finalised_at = NULL WHERE day = :day "
                         "AND finalised_at IS NOT NULL"), {"day": day})


@dataclass
class DayResult:
    day: date
    final: bool
    users: int
    changed: int
    cleared: int
    share_rows: int

    def as_dict(self) -> dict:
        return {"day": self.day.isoformat(), "final": self.final, "users": self.users,
                "changed": self.changed, "cleared": self.cleared, "share_rows": self.share_rows}


def rollup_day(session: Session, day: date, now: datetime) -> DayResult:
    """Recompute one day for every user, in the caller's transaction."""
    xact_lock(session, DAY_LOCK, day.isoformat())
    start, end = day_bounds(day)
    final = is_final(day, now)
    params = {"day": day, "start": start, "end": end}
    rows = session.execute(_AGGREGATE_DAY_SQL, params).all()
    columns = {"user_ids": [row[0] for row in rows]}
    columns.update({metric: [row[n + 1] for row in rows] for n, metric in enumerate(_METRICS)})
    per_platform = [(row[0], platform, row[1 + len(_METRICS) + n]) for row in rows
                    for n, platform in enumerate(SHARE_PLATFORMS) if row[1 + len(_METRICS) + n]]
    changed, cleared = session.execute(_UPSERT_DAY_SQL, {**columns, "day": day, "final": final}).one()
    session.execute(_UPSERT_SHARE_PLATFORMS_SQL, {
        "day": day, "user_ids": [row[0] for row in per_platform], "platforms": [row[1] for row in per_platform],
        "shares": [row[2] for row in per_platform]})
    users, share_rows = len(rows), len(per_platform)
    session.execute(_MARK_DAY_SQL, {"day": day, "now": now, "final": final, "users": users})
    return DayResult(day, final, users, changed, cleared, share_rows)


def days_due(session: Session, now: datetime) -> list[date]:
    """From the last finalised day (again: late events) to today, plus every reopened day; oldest first."""
    today = now.astimezone(timezone.utc).date()
    last_final = session.execute(text(
        "SELECT max(day) FROM analytics_days WHERE finalised_at IS NOT NULL AND day <= :today"),
        {"today": today}).scalar()
    start = last_final or today - timedelta(days=1)
    reopened = session.execute(text(
        "SELECT day FROM analytics_days WHERE finalised_at IS NULL AND day < :start"), {"start": start}).scalars()
    days = set(reopened) | {start + timedelta(days=n) for n in range((today - start).days + 1)}
    return sorted(days)[:MAX_DAYS_PER_RUN]


@dataclass
class RollupResult:
    days: list[DayResult] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"status": "ok", "days": [d.as_dict() for d in self.days]}


def run(session_factory, now: datetime | None = None, days: list[date] | None = None) -> RollupResult:
    """Roll up the due days (or the given ones), one transaction per day."""
    now = now or datetime.now(timezone.utc)
    if days is None:
        with session_factory() as session:
            days = days_due(session, now)
    result = RollupResult()
    for day in days:
        with session_factory() as session:
            result.days.append(rollup_day(session, day, now))
    return result

