"""The events of ``cache.invalidate(event, ids)`` and their fan-out, as one table.

Each event names the kind of ids it takes and the key kinds (keys.py) it drops
or refreshes for every id. Dropping INCRs the keys' versions before deleting
them (versions.py), so a fill that read PostgreSQL before the change can never
write afterwards; a refresh drops, then recomputes the value from PostgreSQL and
writes it under the version its own drop set.

Always sent after the writer's commit (hooks.py does that for our own jobs; the
web tier uses ``enqueue_on_commit``).
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import redis
from sqlalchemy import text
from sqlalchemy.orm import Session

from tasks.cache import versions
from tasks.cache.fill import load_under
from workers.errors import InvalidArguments

MAX_USER_ID = 2**31 - 1   # users.id is an integer column
POSTS_CHUNK = 1000        # posts read from PostgreSQL and dropped per round (username_changed)


class UnknownCacheEvent(InvalidArguments):
    """An event cache.invalidate does not know: permanent, never retried."""

    code = "unknown_cache_event"


@dataclass(frozen=True)
class EventSpec:
    name: str
    ids: str                            # "user" (users.id integers) or "uuid" (posts.id, user_sessions.id)
    drops: tuple[str, ...] = ()         # key kinds dropped for each id
    refreshes: tuple[str, ...] = ()     # key kinds recomputed from PostgreSQL and written for each id
    with_posts: bool = False            # also drops post:{id} of every post they wrote or commented on
    exactly: int | None = None          # the number of ids the event takes, when fixed
    when: str = ""                      # for the docs: who sends it, after what


EVENTS: dict[str, EventSpec] = {spec.name: spec for spec in (
    EventSpec("user_updated", "user", drops=("user",),
              when="the web tier, after a profile edit (display name, bio, photo, city, …)"),
    EventSpec("username_changed", "user", drops=("user",), with_posts=True,
              when="the web tier, after a username change: the posts and comments show it"),
    EventSpec("post_updated", "uuid", drops=("post",),
              when="the web tier, after a post edit or delete, or a comment written, edited or deleted"),
    EventSpec("feed_rebuilt", "user", drops=("feed",),
              when="feed.score_users and feed.refresh_user, after their commit"),
    EventSpec("friendship_changed", "user", drops=("friends", "feed"), exactly=2,
              when="graph.sync_friendship on accept, unfriend and block (the pair)"),
    EventSpec("notifications_changed", "user", refreshes=("unread",),
              when="notifications.record, .record_many, .retract, .mark_read, graph.sync_friendship and "
                   "graph.mark_conversation_read, for the recipients whose notifications changed"),
    EventSpec("session_ended", "uuid", drops=("session",),
              when="the web tier, after a sign-out, a revoked session or a refresh-token rotation"),
)}


def check(event: str, ids: list) -> tuple[EventSpec, list]:
    """The event's spec and its ids in canonical form (UUIDs lower case, duplicates dropped),
    or InvalidArguments naming what is wrong (before any work)."""
    spec = EVENTS.get(event) if isinstance(event, str) else None
    if spec is None:
        raise UnknownCacheEvent(f"unknown cache event {str(event)[:50]!r}; one of {', '.join(EVENTS)}")
    ids = canonical_ids(spec.ids, ids, f"cache event {event!r}")
    if spec.exactly is not None and len(ids) != spec.exactly:
        raise InvalidArguments(f"cache event {event!r} takes exactly {spec.exactly} different ids, got {len(ids)}")
    return spec, ids


def canonical_ids(kind: str, ids: list, what: str) -> list:
    """``ids`` checked ("user": positive integers; "uuid": UUID strings) and deduplicated."""
    if not isinstance(ids, list):
        raise InvalidArguments(f"{what}: ids must be a list, got {type(ids).__name__}")
    found = []
    for index, ident in enumerate(ids):
        if kind == "user":
            if not isinstance(ident, int) or isinstance(ident, bool) or not 1 <= ident <= MAX_USER_ID:
                raise InvalidArguments(f"{what}: ids[{index}] must be a user id (a positive integer), "
                                       f"got {str(ident)[:40]!r}")
            found.append(ident)
        else:
            try:
                found.append(str(uuid.UUID(ident)))
            except (TypeError, ValueError, AttributeError):
                raise InvalidArguments(f"{what}: ids[{index}] must be a UUID string, "
                                       f"got {str(ident)[:40]!r}") from None
    return list(dict.fromkeys(found))


@dataclass
class Invalidation:
    event: str
    ids: int = 0
    dropped: int = 0          # values deleted
    versions_bumped: int = 0
    refreshed: int = 0        # values recomputed and written
    posts: int = 0            # username_changed: posts whose key was dropped

    def as_dict(self) -> dict:
        return {"status": "ok", "event": self.event, "ids": self.ids, "dropped": self.dropped,
                "versions_bumped": self.versions_bumped, "refreshed": self.refreshed, "posts": self.posts}


# Posts a user wrote or commented on (a cached post shows both usernames), by keyset.
_POSTS_OF_USERS_SQL = text("""
SELECT id FROM (
    SELECT p.id FROM posts p WHERE p.author_id = ANY(CAST(:ids AS integer[]))
    UNION
    SELECT c.post_id FROM comments c
    WHERE c.author_id = ANY(CAST(:ids AS integer[])) AND c.deleted_at IS NULL AND NOT c.moderation_hidden
) touched
WHERE id > CAST(:after AS uuid)
ORDER BY id
LIMIT :limit
""")

_LOWEST_UUID = "00000000-0000-0000-0000-000000000000"


def invalidate(session: Session, client: redis.Redis, spec: EventSpec, ids: list, now: datetime) -> Invalidation:
    """Apply an event to ids as ``check`` returned them: drop, then refresh. Never commits."""
    result = Invalidation(spec.name, ids=len(ids))
    drops = [(kind, ident) for kind in spec.drops for ident in ids]
    if drops:
        result.dropped += versions.drop(client, drops)
        result.versions_bumped += len(drops)
    if spec.with_posts and ids:
        after = _LOWEST_UUID
        while True:
            posts = [str(p) for p in session.execute(_POSTS_OF_USERS_SQL, {
                "ids": ids, "after": after, "limit": POSTS_CHUNK}).scalars()]
            if posts:
                result.dropped += versions.drop(client, [("post", post_id) for post_id in posts])
                result.versions_bumped += len(posts)
                result.posts += len(posts)
                after = posts[-1]
            if len(posts) < POSTS_CHUNK:
                break
    for kind in spec.refreshes if ids else ():
        snapshot = versions.bump_for_refresh(client, kind, ids)
        result.versions_bumped += len(ids)
        result.refreshed += load_under(session, {kind: ids}, now, snapshot).write(client).written
    return result


def events_table() -> str:
    """The Markdown table of the events, as the docs carry it."""
    from tasks.cache.keys import KEYS

    rows = ["| event | ids | effect, per id | sent by |", "|---|---|---|---|"]
    for spec in EVENTS.values():
        ids = "user ids (integers)" if spec.ids == "user" else "UUID strings"
        if spec.exactly:
            ids = f"exactly {spec.exactly} {ids}"
        effect = [f"`{KEYS[kind].pattern}`" + (" (every page)" if KEYS[kind].pages_pattern else "")
                  for kind in spec.drops]
        if spec.with_posts:
            effect.append("`post:{id}` of every post they wrote or commented on (read from PostgreSQL in "
                          f"keyset chunks of {POSTS_CHUNK})")
        effect += [f"recomputes `{KEYS[kind].pattern}` from PostgreSQL and writes it" for kind in spec.refreshes]
        rows.append(f"| `{spec.name}` | {ids} | {'; '.join(effect)} | {spec.when} |")
    return "\n".join(rows)
