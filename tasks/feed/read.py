"""The web tier's read query, kept here so tests and the benchmark run exactly it.

The stored feed comes from idx_feed_user_score (user_id, score DESC). A user
without a live feed (new, or inactive for longer than FEED_TTL) gets the
chronological fallback: public posts of actively followed authors, newest
first, minus blocked authors, via idx_posts_author_created_desc.
"""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import text
from sqlalchemy.orm import Session

READ_FEED_SQL = text("""
WITH stored AS (
    SELECT f.post_id, f.reason, f.score, NULL::timestamptz AS created_at
    FROM feed_items f
    WHERE f.user_id = :user_id AND f.expires_at > :now
    ORDER BY f.score DESC
    LIMIT :limit OFFSET :offset
),
fallback AS (
    SELECT p.id AS post_id, 'chronological' AS reason, NULL::float8 AS score, p.created_at
    FROM follows f
    CROSS JOIN LATERAL (
        SELECT id, created_at FROM posts
        WHERE author_id = f.followed_id AND is_public AND created_at <= :now
        ORDER BY created_at DESC LIMIT :limit + :offset) p
    WHERE f.follower_id = :user_id AND f.status = 'active'
      AND NOT EXISTS (SELECT 1 FROM feed_items x WHERE x.user_id = :user_id AND x.expires_at > :now)
      AND NOT EXISTS (SELECT 1 FROM follows b WHERE b.follower_id = f.followed_id
                      AND b.followed_id = :user_id AND b.status = 'blocked')
    ORDER BY p.created_at DESC
    LIMIT :limit OFFSET :offset
)
SELECT post_id, reason, score, created_at FROM stored
UNION ALL
SELECT post_id, reason, score, created_at FROM fallback
ORDER BY score DESC NULLS LAST, created_at DESC
""")


def read_feed(session: Session, user_id: int, now: datetime, limit: int = 20, offset: int = 0) -> list[tuple]:
    """(post_id, reason, score) rows in display order."""
    return [tuple(row)[:3] for row in session.execute(
        READ_FEED_SQL, {"user_id": user_id, "now": now, "limit": limit, "offset": offset})]
