"""Trending: posts.engagement_score inside the trending window, then popular_posts."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import text
from sqlalchemy.orm import Session

from db.locks import try_xact_lock
from tasks.feed import algorithm as A

JOB_NAME = "feed.update_trending"

# One UPDATE over the posts inside the window (idx_posts_created_at_desc) plus the
# posts still carrying a score (partial idx_posts_engagement_score): the latter
# are the ones that just left the window and drop to 0. The score is
# time-invariant (algorithm.trending_score_sql), so only posts whose counters
# changed are written: steady state touches few rows.
UPDATE_SCORES_SQL = text(f"""
UPDATE posts p
SET engagement_score = s.new_score
FROM (
    SELECT id, CASE WHEN created_at >= :window_start AND created_at <= :now
                    THEN {A.trending_score_sql("posts")} ELSE 0 END AS new_score
    FROM posts
    WHERE (created_at >= :window_start AND created_at <= :now) OR engagement_score > 0
) s
WHERE p.id = s.id AND p.engagement_score IS DISTINCT FROM s.new_score
""")

REFRESH_SQL = text("REFRESH MATERIALIZED VIEW CONCURRENTLY popular_posts")


def update_trending(session: Session, now: datetime) -> dict:
    """Rescore the window and refresh the view; skipped if another run holds the lock. Never commits."""
    if not try_xact_lock(session, "feed.job", JOB_NAME):
        return {"status": "skipped", "reason": "previous run still in progress"}
    updated = session.execute(UPDATE_SCORES_SQL, {"now": now, "window_start": now - A.TRENDING_WINDOW}).rowcount
    # CONCURRENTLY: readers of popular_posts (every feed chunk) are never blocked.
    session.execute(REFRESH_SQL)
    return {"status": "ok", "posts_rescored": updated}
