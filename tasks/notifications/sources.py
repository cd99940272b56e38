"""Turn source rows (likes, reactions, follows, shares, comments) into events.

One query per call whatever the number of ids; a row that no longer exists
(un-liked before the task ran) simply yields no event. Mentions come already
found and validated by the mentions family (``record_mentions``).
"""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import text
from sqlalchemy.orm import Session

from db.locks import key_sql
from tasks.notifications.batching import Event, apply_events
from tasks.notifications.config import BATCH_CONFIGS

_POST_SOURCE = """
SELECT s.id::text AS source_id, s.{actor} AS actor_id, u.username AS actor_name, p.author_id AS recipient_id,
       s.post_id::text AS post_id, s.created_at AS event_at, {extra} AS extra
FROM {table} AS s JOIN posts AS p ON p.id = s.post_id JOIN users AS u ON u.id = s.{actor}
WHERE s.id = ANY(CAST(:ids AS uuid[]))
"""

SOURCE_SQL = {
    "like": _POST_SOURCE.format(table="likes", actor="user_id", extra="NULL::jsonb"),
    "emoji_reaction": _POST_SOURCE.format(
        table="emoji_reactions", actor="user_id", extra="jsonb_build_object('emoji_code', s.emoji_code)"),
    "post_shared": _POST_SOURCE.format(
        table="shares", actor="user_id", extra="jsonb_strip_nulls(jsonb_build_object('platform', s.platform))"),
    "comment": _POST_SOURCE.format(
        table="comments", actor="author_id", extra="jsonb_build_object('comment_id', s.id::text)"),
    # Only an active follow notifies: a pending request or a block is not "started following you".
    "follow": """
SELECT f.id::text AS source_id, f.follower_id AS actor_id, u.username AS actor_name,
       f.followed_id AS recipient_id, NULL AS post_id, f.created_at AS event_at, NULL::jsonb AS extra
FROM follows AS f JOIN users AS u ON u.id = f.follower_id
WHERE f.id = ANY(CAST(:ids AS uuid[])) AND f.status = 'active'
""",
}


def _locking_sql(kind: str) -> str:
    """SOURCE_SQL that also takes the row's batch-key advisory lock (batching.lock_name),
    saving the single-event path a round trip."""
    config = BATCH_CONFIGS[kind]
    scope_value = "q.post_id" if config.batch_scope == "post" else "q.recipient_id::text"
    batch_key = f"'{config.parent_type}:{config.batch_scope}:' || {scope_value}"
    return f"""
SELECT src.*, pg_advisory_xact_lock({key_sql("src.lock_name")}) IS NULL AS locked
FROM (SELECT q.*, 'notif:' || q.recipient_id::text || ':' || {batch_key} AS lock_name
      FROM ({SOURCE_SQL[kind]}) AS q) AS src
"""


LOCKING_SOURCE_SQL = {kind: _locking_sql(kind) for kind in SOURCE_SQL}


def load_events(session: Session, kind: str, source_ids: list[str], *, lock: bool = False) -> list[Event]:
    """Events for the source rows that still exist.

    ``lock=True`` (one id only) also takes the event's batch-key advisory lock
    in the same statement; pass ``keys_locked=True`` to apply_events then.
    """
    if not source_ids:
        return []
    if lock and len(source_ids) != 1:
        raise ValueError("lock=True takes exactly one source id; apply_events locks bulk keys in order")
    sql = LOCKING_SOURCE_SQL[kind] if lock else SOURCE_SQL[kind]
    rows = session.execute(text(sql), {"ids": list(source_ids)}).mappings()
    return [Event(kind=kind, recipient_id=row["recipient_id"], actor_id=row["actor_id"],
                  actor_name=row["actor_name"], post_id=row["post_id"], event_at=row["event_at"],
                  dedupe_key=f"{kind}:{row['source_id']}", extra=row["extra"] or {})
            for row in rows]


MENTION_SOURCE_KINDS = ("post", "comment")


def record_mentions(session: Session, *, source_kind: str, source_id: str, post_id: str, author_id: int,
                    author_name: str, event_at: datetime, recipient_ids: list[int]) -> list[str]:
    """Notify the users a post or comment mentions; the caller commits.

    The dedupe key ``mention:<source_kind>:<source_id>`` makes a rerun (an edit,
    a redelivered task) notify each recipient at most once per post or comment.
    Returns one status per recipient, in order: ``duplicate`` when this source
    already notified them, else created, batched, converted or folded (``self``
    for the author).
    """
    if source_kind not in MENTION_SOURCE_KINDS:
        raise ValueError(f"source_kind must be one of {MENTION_SOURCE_KINDS}, not {source_kind!r}")
    events = [Event(kind="mention", recipient_id=recipient_id, actor_id=author_id, actor_name=author_name,
                    post_id=post_id, event_at=event_at, dedupe_key=f"mention:{source_kind}:{source_id}",
                    extra={"comment_id": source_id} if source_kind == "comment" else {})
              for recipient_id in recipient_ids]
    return [outcome.status for outcome in apply_events(session, events)]


_STILL_PRESENT_SQL = {
    "like": "SELECT EXISTS (SELECT 1 FROM likes WHERE user_id = :actor AND post_id = CAST(:post AS uuid))",
    "emoji_reaction": "SELECT EXISTS (SELECT 1 FROM emoji_reactions "
                      "WHERE user_id = :actor AND post_id = CAST(:post AS uuid))",
    "follow": "SELECT EXISTS (SELECT 1 FROM follows "
              "WHERE follower_id = :actor AND followed_id = :user AND status = 'active')",
}


def retract_source(session: Session, *, kind: str, actor_id: int, post_id: str | None,
                   user_id: int | None) -> dict:
    """Undo an actor's notification after an unlike/unfollow.

    A retract that arrives after the actor liked (or followed) again is a
    no-op ("still_present"): the new row's notification must survive.
    """
    from tasks.notifications.batching import retract_actor

    if kind == "follow":
        recipient_id = user_id
    else:
        recipient_id = session.execute(text("SELECT author_id FROM posts WHERE id = CAST(:post AS uuid)"),
                                       {"post": post_id}).scalar()
        if recipient_id is None:
            return {"status": "gone"}  # the post and, by cascade, its notifications are gone
    if session.execute(text(_STILL_PRESENT_SQL[kind]),
                       {"actor": actor_id, "post": post_id, "user": user_id}).scalar():
        return {"status": "still_present"}
    return retract_actor(session, kind=kind, actor_id=actor_id, recipient_id=recipient_id, post_id=post_id)
