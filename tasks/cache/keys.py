"""The cache keys the web tier reads: pattern, TTL, version counter and JSON value, one table.

Everything else (the loaders in values.py, the invalidation events, the docs'
table via ``keys_table()``) is built from ``KEYS``. This module imports nothing
of the project's, so the web tier can import it for the key names alone.

Version counters (``v:…``) are the no-stale-overwrite guard (versions.py): every
invalidation INCRs the counter of what it drops, every fill reads it before it
reads PostgreSQL and writes only if it is unchanged. A missing counter reads "0".
"""
from __future__ import annotations

from dataclasses import dataclass

# Version counters outlive every value they guard (the longest TTL is a session's 24 h).
# The guarantee itself needs only VERSION_TTL_SECONDS > MAX_FILL_AGE_SECONDS (versions.py).
VERSION_TTL_SECONDS = 25 * 3600

# A fill whose versions were read longer ago than this writes nothing: a version that
# was INCR'd after the read and has since expired (it lives VERSION_TTL_SECONDS after its
# last INCR) would read "0" again and let a stale value through. A warm chunk or a
# read-through fill takes milliseconds; a minute is far beyond any healthy one.
MAX_FILL_AGE_SECONDS = 60

FEED_PAGE_SIZE = 20
MAX_FEED_PAGE = 50   # the stored feed holds FEED_SIZE (100) rows; deeper pages are the fallback's
LATEST_COMMENTS = 20  # comments kept with a cached post, newest first

assert VERSION_TTL_SECONDS > MAX_FILL_AGE_SECONDS


@dataclass(frozen=True)
class KeySpec:
    kind: str             # the name loaders, events and fills use
    pattern: str          # the key the web tier reads
    ttl_seconds: int
    version_pattern: str  # the counter that guards it (one per user's feed, not per page)
    ids: str              # "user" (integer users.id) or "uuid" (posts.id, user_sessions.id)
    value: str            # the JSON value's shape, for the web tier
    notes: str            # what it holds and leaves out
    pages_pattern: str | None = None  # feed only: the set of page numbers that exist

    def key(self, ident) -> str:
        if self.pages_pattern is not None:
            user_id, page = ident
            return self.pattern.format(id=user_id, page=page)
        return self.pattern.format(id=ident)

    def version_key(self, ident) -> str:
        return self.version_pattern.format(id=self.owner(ident))

    def pages_key(self, ident) -> str | None:
        return None if self.pages_pattern is None else self.pages_pattern.format(id=self.owner(ident))

    def owner(self, ident):
        """The id the version counter belongs to: the user of a feed page, else the id itself."""
        return ident[0] if self.pages_pattern is not None else ident


KEYS: dict[str, KeySpec] = {spec.kind: spec for spec in (
    KeySpec("user", "user:{id}", 3600, "v:user:{id}", "user",
            '{"id", "username", "display_name", "bio", "profile_image_url", "city", "institutions", '
            '"websites", "followers_count", "following_count", "posts_count", "friends_count", "created_at"}',
            "the public profile; never the email, password hash, location or preferences. Soft-deleted "
            "users are not cached; the counters may be up to the TTL old"),
    KeySpec("friends", "user:{id}:friends", 3600, "v:friends:{id}", "user",
            '{"user_id", "friend_ids": [int, …]}',
            "accepted friendships either way (db/visibility.py `friends_of_sql`), ascending ids, soft-deleted "
            "friends left out"),
    KeySpec("post", "post:{id}", 1800, "v:post:{id}", "uuid",
            '{"id", "author_id", "author_username", "title", "content", "post_type", "image_url", '
            '"privacy_level", "tags", "created_at", "updated_at", "hearts_count", "reactions_count", '
            '"shares_count", "comments_count", "views_count", "comments": [{"id", "author_id", '
            '"author_username", "parent_id", "content", "created_at", "like_count", "replies_count"}, …]}',
            f"the latest {LATEST_COMMENTS} comments, newest first, none soft-deleted or held by moderation. "
            "A post that is not readable (db/visibility.py `readable_post_sql`) is not cached; "
            "`privacy_level` and blocks are still the web tier's to check per viewer"),
    KeySpec("feed", "feed:{id}:page:{page}", 900, "v:feed:{id}", "user",
            '{"user_id", "page", "page_size", "items": [{"post_id", "reason", "score"}, …]}',
            f"exactly what tasks/feed/read.py `READ_FEED_SQL` returns for the page (page size {FEED_PAGE_SIZE}, "
            f"pages from 1 to {MAX_FEED_PAGE}); `score` is null for the chronological fallback",
            pages_pattern="feed:{id}:pages"),
    KeySpec("session", "session:{id}", 86400, "v:session:{id}", "uuid",
            '{"id", "user_id", "is_active", "expires_at", "created_at", "device_info", "user_agent"}',
            "the `user_sessions` row; never the refresh token hash or the IP address. The web tier still checks "
            "`is_active` and `expires_at`"),
    KeySpec("unread", "notification:{id}:unread", 300, "v:unread:{id}", "user",
            "3", "an integer: unread top-level notifications (`read = false AND parent_id IS NULL`, seed 001; "
            "batch children never count), as `tasks.notifications.unread_count`"),
)}

TIMESTAMPS = "Timestamps are ISO 8601 strings in UTC (`2026-06-01T12:00:00.000000Z`)."


def keys_table() -> str:
    """The Markdown table of the keys, as the docs carry it."""
    rows = ["| key | TTL | value (JSON) | holds |", "|---|---|---|---|"]
    for spec in KEYS.values():
        rows.append(f"| `{spec.pattern}` | {_duration(spec.ttl_seconds)} | `{spec.value}` | {spec.notes} |")
    return "\n".join(rows)


def _duration(seconds: int) -> str:
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    return f"{seconds // 60} min"
