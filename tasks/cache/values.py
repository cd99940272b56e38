"""One set-based loader per key kind: many ids in, ``{id: JSON text}`` out, one statement.

PostgreSQL builds the JSON (row_to_json), so a warm chunk's values come
back ready to SET. A loader returns nothing for an id that must not be cached
(a soft-deleted user, an unreadable post, an unknown session): the fill skips it.
The value formats are documented in keys.py.
"""
from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.orm import Session

from db.visibility import friends_of_sql, readable_post_sql
from tasks.cache.keys import FEED_PAGE_SIZE, LATEST_COMMENTS
from tasks.feed.read import READ_FEED_SQL


def _iso(column: str) -> str:
    """A timestamptz as ISO 8601 in UTC, whatever the session's TimeZone."""
    return f"""to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24\\:MI\\:SS.US"Z"')"""


USERS = "CAST(:ids AS integer[])"

# row_to_json of a subselect: compact JSON, keys in the subselect's column order.
PROFILE_SQL = text(f"""
SELECT u.id, (SELECT row_to_json(v) FROM (SELECT
    u.id, u.username, u.display_name, u.bio, u.profile_image_url, u.city, u.institutions, u.websites,
    u.followers_count, u.following_count, u.posts_count, u.friends_count, {_iso("u.created_at")} AS created_at) v)::text
FROM users u
WHERE u.id = ANY({USERS}) AND u.deleted_at IS NULL
""")

FRIENDS_SQL = text(f"""
SELECT v.user_id, row_to_json(v)::text FROM (
    SELECT u.id AS user_id,
           coalesce(json_agg(fr.friend_id ORDER BY fr.friend_id) FILTER (WHERE fr.friend_id IS NOT NULL),
                    '[]'::json) AS friend_ids
    FROM users u
    LEFT JOIN (SELECT fr.user_id, fr.friend_id FROM ({friends_of_sql(USERS)}) fr
               JOIN users f ON f.id = fr.friend_id AND f.deleted_at IS NULL) fr ON fr.user_id = u.id
    WHERE u.id = ANY({USERS}) AND u.deleted_at IS NULL
    GROUP BY u.id) v
""")

POST_SQL = text(f"""
SELECT p.id::text, (SELECT row_to_json(v) FROM (SELECT
    p.id, p.author_id, a.username AS author_username, p.title, p.content, p.post_type, p.image_url,
    p.privacy_level, p.tags, {_iso("p.created_at")} AS created_at, {_iso("p.updated_at")} AS updated_at,
    p.hearts_count, p.reactions_count, p.shares_count, p.comments_count, p.views_count,
    coalesce((SELECT json_agg(c ORDER BY c.created_at DESC, c.id DESC) FROM (
        SELECT c.id, c.author_id, cu.username AS author_username, c.parent_id, c.content,
               {_iso("c.created_at")} AS created_at, c.like_count, c.replies_count
        FROM comments c JOIN users cu ON cu.id = c.author_id
        WHERE c.post_id = p.id AND c.deleted_at IS NULL AND NOT c.moderation_hidden
        ORDER BY c.created_at DESC, c.id DESC LIMIT :latest) c), '[]'::json) AS comments) v)::text
FROM posts p JOIN users a ON a.id = p.author_id
WHERE p.id = ANY(CAST(:ids AS uuid[])) AND {readable_post_sql("p")}
""")


def _feed_sql() -> str:
    # The web tier's own read query, run once per (user, page) in one statement: the
    # cache holds exactly what the web tier would read. json_agg takes the rows in the
    # order the read's ORDER BY gives them (a plain projection over it, no join or sort
    # in between; tests/cache compares every page with read_feed).
    read = READ_FEED_SQL.text
    for name in (":user_id", ":offset"):
        if name not in read:
            raise RuntimeError(f"READ_FEED_SQL no longer takes {name}; update tasks/cache/values.py")
    read = read.replace(":user_id", "v.user_id").replace(":offset", "v.page_offset")
    return f"""
SELECT v.user_id, v.page, (SELECT row_to_json(o) FROM (SELECT
    v.user_id, v.page, CAST(:limit AS integer) AS page_size,
    coalesce((SELECT json_agg(r) FROM (SELECT q.post_id, q.reason, q.score FROM ({read}) q) r), '[]'::json) AS items
    ) o)::text
FROM (SELECT page_user AS user_id, page, (page - 1) * :limit AS page_offset
      FROM unnest(CAST(:users AS integer[]), CAST(:pages AS integer[])) AS x(page_user, page)) v
JOIN users u ON u.id = v.user_id AND u.deleted_at IS NULL AND u.id = ANY(CAST(:users AS integer[]))
"""


FEED_SQL = text(_feed_sql())

SESSION_SQL = text(f"""
SELECT s.id::text, (SELECT row_to_json(v) FROM (SELECT
    s.id, s.user_id, s.is_active, {_iso("s.expires_at")} AS expires_at, {_iso("s.created_at")} AS created_at,
    s.device_info, s.user_agent) v)::text
FROM user_sessions s
WHERE s.id = ANY(CAST(:ids AS uuid[]))
""")

# tasks.notifications.unread_count for many users at once (tests/cache compares the two):
# top-level rows only, via idx_notifications_user_parent_read.
UNREAD_SQL = text(f"""
SELECT u.id, (SELECT count(*) FROM notifications n
              WHERE n.user_id = u.id AND n.read = false AND n.parent_id IS NULL)::text
FROM users u
WHERE u.id = ANY({USERS})
""")


def load_profiles(session: Session, user_ids: list[int], now: datetime) -> dict:
    return dict(session.execute(PROFILE_SQL, {"ids": list(user_ids)}).all())


def load_friends(session: Session, user_ids: list[int], now: datetime) -> dict:
    return dict(session.execute(FRIENDS_SQL, {"ids": list(user_ids)}).all())


def load_posts(session: Session, post_ids: list[str], now: datetime) -> dict:
    return dict(session.execute(POST_SQL, {"ids": list(post_ids), "latest": LATEST_COMMENTS}).all())


def load_feed_pages(session: Session, pages: list[tuple[int, int]], now: datetime) -> dict:
    rows = session.execute(FEED_SQL, {"users": [user_id for user_id, _ in pages],
                                      "pages": [page for _, page in pages], "limit": FEED_PAGE_SIZE, "now": now})
    return {(user_id, page): value for user_id, page, value in rows}


def load_sessions(session: Session, session_ids: list[str], now: datetime) -> dict:
    return dict(session.execute(SESSION_SQL, {"ids": list(session_ids)}).all())


def load_unread(session: Session, user_ids: list[int], now: datetime) -> dict:
    return dict(session.execute(UNREAD_SQL, {"ids": list(user_ids)}).all())


Loader = Callable[[Session, list, datetime], dict]

LOADERS: dict[str, Loader] = {
    "user": load_profiles,
    "friends": load_friends,
    "post": load_posts,
    "feed": load_feed_pages,
    "session": load_sessions,
    "unread": load_unread,
}
