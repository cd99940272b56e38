"""Score and replace the feeds of a chunk of users: set-based, one statement.

``score_users(session, user_ids, now)`` takes per-user advisory locks, deletes
the chunk's feeds and inserts the new ones with one INSERT … SELECT built from
window functions. The caller commits once per chunk of at most
``USERS_PER_TRANSACTION`` users (``transaction_chunks``), so a reader sees a
user's old feed or the new one, never a mix and never an empty gap (READ
COMMITTED: each statement sees only committed data, and delete and insert
commit together).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.orm import Session

from db import locks
from db.visibility import blocks_of_sql, friends_of_sql, post_visible_sql, public_post_sql
from db.locks import KEYS_PER_TRANSACTION, lock_key, try_xact_lock_many, xact_lock_many
from tasks.feed import algorithm as A

# Advisory lock class (two-int4 form) for "this user's feed is being rewritten".
# A chunk skips users locked by someone else: that writer produces an equally
# fresh feed, and skipping cannot deadlock or wait behind a slow chunk.
USER_LOCK_NAMESPACE = "feed.user"

# Users (so advisory locks) per transaction: see db/locks.py for why it is bounded.
USERS_PER_TRANSACTION = KEYS_PER_TRANSACTION


def _score_sql() -> str:
    engagement = A.engagement_sql("p")
    decay = A.decay_sql("p.created_at")
    ids = "CAST(:user_ids AS integer[])"
    return f"""
WITH viewers AS (  -- a user deleted since dispatch simply drops out
    SELECT id AS user_id FROM users WHERE id = ANY({ids})
),
rel AS (  -- authors each viewer actively follows or is an accepted friend of (a friend counts as mutual)
    SELECT user_id, author_id, bool_or(mutual) AS mutual, bool_or(friend) AS friend FROM (
        SELECT f.follower_id AS user_id, f.followed_id AS author_id,
               EXISTS (SELECT 1 FROM follows b
                       WHERE b.follower_id = f.followed_id AND b.followed_id = f.follower_id
                         AND b.status = 'active') AS mutual, false AS friend
        FROM follows f
        WHERE f.follower_id = ANY({ids}) AND f.status = 'active'
        UNION ALL
        SELECT user_id, friend_id, true, true FROM ({friends_of_sql(ids)}) fr
    ) r GROUP BY user_id, author_id
),
blocked AS (  -- either direction, follows or friendships
    SELECT user_id, other_id AS author_id FROM ({blocks_of_sql(ids)}) b
),
global_ids AS (
    SELECT id, bool_or(trending) AS trending FROM (
        (SELECT id, true AS trending FROM popular_posts
         ORDER BY engagement_score DESC LIMIT :trending_k)
        UNION ALL
        (SELECT id, false FROM posts
         WHERE {public_post_sql("posts")} AND created_at <= :now AND created_at >= :window_start
         ORDER BY created_at DESC LIMIT :recent_pool)
    ) g GROUP BY id
),
global_posts AS (  -- the view may be up to one trending cycle old: re-check eligibility
    SELECT p.id, p.author_id, p.created_at, g.trending, {engagement} * {decay} AS base_score
    FROM global_ids g JOIN posts p ON p.id = g.id
    WHERE {public_post_sql("p")} AND p.created_at <= :now AND p.created_at >= :window_start
),
pool AS (
    SELECT r.user_id, p.id AS post_id, p.author_id, p.created_at, true AS scorable,
           CASE WHEN r.mutual THEN 'mutual' ELSE 'followed' END AS reason,
           {engagement} * {decay}
             * CASE WHEN r.mutual THEN :mutual_mult ELSE :follow_mult END AS score
    FROM rel r
    JOIN posts p ON p.author_id = r.author_id
    WHERE {post_visible_sql("p", "r.friend")} AND p.created_at <= :now AND p.created_at >= :window_start
    UNION ALL
    SELECT v.user_id, g.id, g.author_id, g.created_at, g.trending,
           CASE WHEN g.trending THEN 'trending' ELSE 'recent' END,
           g.base_score * :trending_mult
    FROM viewers v CROSS JOIN global_posts g
    WHERE g.author_id <> v.user_id
      AND NOT EXISTS (SELECT 1 FROM rel r WHERE r.user_id = v.user_id AND r.author_id = g.author_id)
),
eligible AS (
    SELECT pool.* FROM pool
    WHERE NOT EXISTS (SELECT 1 FROM blocked b
                      WHERE b.user_id = pool.user_id AND b.author_id = pool.author_id)
),
author_ranked AS (
    SELECT e.*, row_number() OVER (PARTITION BY user_id, author_id
                                   ORDER BY score DESC, created_at DESC, post_id) AS author_rank
    FROM eligible e WHERE scorable
),
positioned AS (
    SELECT a.*, row_number() OVER (PARTITION BY user_id
                                   ORDER BY author_rank > :author_cap, score DESC,
                                            created_at DESC, post_id) AS pos
    FROM author_ranked a
),
scored AS (
    SELECT user_id, post_id, author_id, reason, pos,
           count(*) FILTER (WHERE pos <= :cap_scored) OVER (PARTITION BY user_id, author_id) AS in_cap_window
    FROM positioned WHERE pos <= :scored_slots
),
scored_counts AS (
    SELECT user_id, count(*) AS n_scored FROM scored GROUP BY user_id
),
capped_authors AS (
    SELECT DISTINCT user_id, author_id FROM scored WHERE in_cap_window >= :author_cap
),
recent_candidates AS (
    SELECT e.user_id, e.post_id, e.created_at,
           row_number() OVER (PARTITION BY e.user_id, e.author_id
                              ORDER BY e.created_at DESC, e.post_id) AS author_rank
    FROM eligible e
    WHERE NOT EXISTS (SELECT 1 FROM scored s WHERE s.user_id = e.user_id AND s.post_id = e.post_id)
      AND NOT EXISTS (SELECT 1 FROM capped_authors c
                      WHERE c.user_id = e.user_id AND c.author_id = e.author_id)
),
recent AS (
    SELECT user_id, post_id,
           row_number() OVER (PARTITION BY user_id ORDER BY created_at DESC, post_id) AS rpos
    FROM recent_candidates WHERE author_rank = 1
),
chosen AS (
    SELECT user_id, post_id, reason, pos + (pos - 1) / (:recent_every - 1) AS slot FROM scored
    UNION ALL
    SELECT r.user_id, r.post_id, 'recent', r.rpos * :recent_every
    FROM recent r LEFT JOIN scored_counts c ON c.user_id = r.user_id
    WHERE r.rpos <= :feed_size - coalesce(c.n_scored, 0)
)
INSERT INTO feed_items (user_id, post_id, score, reason, created_at, expires_at)
SELECT user_id, post_id, :slot_base - slot, reason, :now, :expires_at FROM chosen
"""


SCORE_SQL = text(_score_sql())


def score_params(now: datetime) -> dict:
    return {
        "now": now, "window_start": now - A.CANDIDATE_WINDOW, "expires_at": now + A.FEED_TTL,
        "trending_k": A.TRENDING_TOP_K, "recent_pool": A.RECENT_POOL,
        "mutual_mult": A.MUTUAL_MULTIPLIER, "follow_mult": A.FOLLOW_MULTIPLIER,
        "trending_mult": A.TRENDING_MULTIPLIER, "author_cap": A.AUTHOR_CAP,
        "cap_scored": A.AUTHOR_CAP_SCORED, "scored_slots": A.SCORED_SLOTS,
        "recent_every": A.RECENT_EVERY, "feed_size": A.FEED_SIZE, "slot_base": A.SLOT_BASE,
    }


@dataclass
class ScoreResult:
    users: int = 0
    skipped_locked: int = 0
    rows_deleted: int = 0
    rows_written: int = 0

    def as_dict(self) -> dict:
        return asdict(self)

    def add(self, other: ScoreResult) -> None:
        self.users += other.users
        self.skipped_locked += other.skipped_locked
        self.rows_deleted += other.rows_deleted
        self.rows_written += other.rows_written


def transaction_chunks(user_ids: list[int]) -> list[list[int]]:
    """The distinct ids in sorted slices of USERS_PER_TRANSACTION: one transaction each."""
    return locks.transaction_chunks(sorted(set(user_ids)), USERS_PER_TRANSACTION)


def lock_users(session: Session, user_ids: list[int], *, wait: bool = False) -> list[int]:
    """Take this transaction's per-user feed locks; return the ids obtained (sorted)."""
    keys = [lock_key(USER_LOCK_NAMESPACE, user_id) for user_id in set(user_ids)]
    if not keys:
        return []
    if wait:
        xact_lock_many(session, keys)
        obtained = keys
    else:
        obtained = try_xact_lock_many(session, keys)
    return sorted(int(key.rpartition(":")[2]) for key in obtained)


def score_users(session: Session, user_ids: list[int], now: datetime, *, wait_for_lock: bool = False) -> ScoreResult:
    """Replace the feeds of ``user_ids`` as of ``now``. Never commits."""
    if len(set(user_ids)) > USERS_PER_TRANSACTION:
        raise ValueError(f"{len(set(user_ids))} users in one transaction; split them with transaction_chunks")
    locked = lock_users(session, user_ids, wait=wait_for_lock)
    if not locked:
        return ScoreResult(users=0, skipped_locked=len(set(user_ids)), rows_deleted=0, rows_written=0)
    deleted = session.execute(text("DELETE FROM feed_items WHERE user_id = ANY(CAST(:ids AS integer[]))"),
                              {"ids": locked}).rowcount
    written = session.execute(SCORE_SQL, {"user_ids": locked, **score_params(now)}).rowcount
    return ScoreResult(users=len(locked), skipped_locked=len(set(user_ids)) - len(locked),
                       rows_deleted=deleted, rows_written=written)
