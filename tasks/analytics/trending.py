"""Trending tags: a tag trends when more distinct users use it in the last 24 h than
its own last 7 days predict (Mastodon's trends: observed use against an
expected baseline), so a tag that is always popular does not always win.

For each tag: ``observed`` is the distinct authors of public, not deleted posts
carrying it in the last 24 h; ``expected`` is the mean of the same count over
each of the seven 24 h windows before that, at least 1 (a new tag is expected
to have one user a day). The score is ``(observed - expected)² / expected``
(how surprising the excess is), 0 when the tag is used by fewer than
``TRENDING_MIN_USERS`` users or not more than expected. ``trending_tags`` is
replaced whole, in one transaction, by the ``TRENDING_LIMIT`` best.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import text
from sqlalchemy.orm import Session

import settings
from db.locks import try_xact_lock
from db.visibility import public_post_sql

TRENDING_LIMIT = 20
BASELINE_DAYS = 7

# Window k = 0 is the last 24 h, 1..7 the days before; one pass over 8 days of posts.
_USES_SQL = text(f"""
    SELECT pt.tag_id, t.name,
           floor(extract(epoch FROM (:now - p.created_at)) / 86400)::int AS age_days,
           count(DISTINCT p.author_id) AS users
    FROM posts AS p
    JOIN post_tags AS pt ON pt.post_id = p.id
    JOIN tags AS t ON t.id = pt.tag_id
    WHERE p.created_at > :since AND p.created_at <= :now AND {public_post_sql("p")}
    GROUP BY 1, 2, 3
""")


def trend_score(observed: int, expected: float, min_users: int) -> float:
    expected = max(expected, 1.0)
    if observed < min_users or observed <= expected:
        return 0.0
    return (observed - expected) ** 2 / expected


@dataclass(frozen=True)
class TagTrend:
    tag_id: int
    name: str
    score: float
    users_24h: int
    expected_24h: float


def rank(uses: list[tuple[int, str, int, int]], min_users: int, limit: int = TRENDING_LIMIT) -> list[TagTrend]:
    """Rows (tag id, name, window, users) → the trending tags, best first (ties: more users, then name)."""
    observed: dict[tuple[int, str], int] = {}
    baseline: dict[tuple[int, str], int] = {}
    for tag_id, name, window, users in uses:
        if window == 0:
            observed[(tag_id, name)] = users
        elif 1 <= window <= BASELINE_DAYS:
            baseline[(tag_id, name)] = baseline.get((tag_id, name), 0) + users
    trends = []
    for (tag_id, name), users in observed.items():
        expected = max(baseline.get((tag_id, name), 0) / BASELINE_DAYS, 1.0)
        score = trend_score(users, expected, min_users)
        if score > 0:
            trends.append(TagTrend(tag_id, name, score, users, expected))
    trends.sort(key=lambda t: (-t.score, -t.users_24h, t.name))
    return trends[:limit]


def update(session: Session, now: datetime | None = None) -> dict:
    """Recompute ``trending_tags``; a second run at the same time steps aside."""
    now = now or datetime.now(timezone.utc)
    if not try_xact_lock(session, "analytics.trending_tags"):
        return {"status": "skipped", "reason": "another run holds the lock"}
    uses = [tuple(row) for row in session.execute(
        _USES_SQL, {"now": now, "since": now - timedelta(days=BASELINE_DAYS + 1)})]
    trends = rank(uses, settings.current().trending_min_users)
    session.execute(text("DELETE FROM trending_tags"))
    if trends:
        session.execute(text(
            "INSERT INTO trending_tags (rank, tag_id, name, score, users_24h, expected_24h, computed_at) "
            "VALUES (:rank, :tag_id, :name, :score, :users_24h, :expected_24h, :now)"),
            [{"rank": rank_ + 1, "tag_id": t.tag_id, "name": t.name, "score": t.score, "users_24h": t.users_24h,
              "expected_24h": t.expected_24h, "now": now} for rank_, t in enumerate(trends)])
    return {"status": "ok", "trending": [t.name for t in trends]}
