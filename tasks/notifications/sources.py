"""Turn source rows (likes, reactions, follows, shares, comments, friendships,
comment reactions, messages) into events.

One query per call whatever the number of ids; a row that no longer exists
(un-liked before the task ran) simply yields no event, and neither does a row
about content moderation holds or between two users with a block
(db/visibility.py). Mentions come already found and validated by the mentions
family (``record_mentions``).
"""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import text
from sqlalchemy.orm import Session

from db.locks import key_sql
from db.visibility import blocked_between_sql
from tasks.notifications.batching import Event, Outcome, apply_events, lock_keys
from tasks.notifications.config import BATCH_CONFIGS

# Columns of every source query: source_id, actor_id, actor_name, recipient_id, post_id,
# event_at, extra (jsonb) and scope_id (what the batch gathers: post, comment or conversation).
_POST_SOURCE = """
SELECT s.id::text AS source_id, s.{actor} AS actor_id, u.username AS actor_name, p.author_id AS recipient_id,
       s.post_id::text AS post_id, s.created_at AS event_at, {extra} AS extra, s.post_id::text AS scope_id
FROM {table} AS s JOIN posts AS p ON p.id = s.post_id JOIN users AS u ON u.id = s.{actor}
WHERE s.id = ANY(CAST(:ids AS uuid[])) AND NOT p.moderation_hidden{where}
  AND NOT """ + blocked_between_sql("s.{actor}", "p.author_id") + "\n"

_FRIENDSHIP_SOURCE = """
SELECT f.id::text AS source_id, f.{actor} AS actor_id, u.username AS actor_name,
       f.{recipient} AS recipient_id, NULL AS post_id, f.{at} AS event_at, NULL::jsonb AS extra,
       NULL AS scope_id
FROM friendships AS f JOIN users AS u ON u.id = f.{actor}
WHERE f.id = ANY(CAST(:ids AS uuid[])) AND f.status = '{status}'
"""

SOURCE_SQL = {
    "like": _POST_SOURCE.format(table="likes", actor="user_id", extra="NULL::jsonb", where=""),
    "emoji_reaction": _POST_SOURCE.format(
        table="emoji_reactions", actor="user_id", extra="jsonb_build_object('emoji_code', s.emoji_code)", where=""),
    "post_shared": _POST_SOURCE.format(
        table="shares", actor="user_id", extra="jsonb_strip_nulls(jsonb_build_object('platform', s.platform))",
        where=""),
    "comment": _POST_SOURCE.format(
        table="comments", actor="author_id", extra="jsonb_build_object('comment_id', s.id::text)",
        where=" AND NOT s.moderation_hidden"),
    # Only an active follow notifies: a pending request or a block is not "started following you".
    "follow": """
SELECT f.id::text AS source_id, f.follower_id AS actor_id, u.username AS actor_name,
       f.followed_id AS recipient_id, NULL AS post_id, f.created_at AS event_at, NULL::jsonb AS extra,
       NULL AS scope_id
FROM follows AS f JOIN users AS u ON u.id = f.follower_id
WHERE f.id = ANY(CAST(:ids AS uuid[])) AND f.status = 'active'
  AND NOT """ + blocked_between_sql("f.follower_id", "f.followed_id"),
    # A request notifies while it is pending; user1 asked user2.
    "friend_request": _FRIENDSHIP_SOURCE.format(actor="user1_id", recipient="user2_id", at="created_at",
                                                status="pending"),
    # The accept tells the one who asked; updated_at is when it was accepted.
    "friend_accept": _FRIENDSHIP_SOURCE.format(actor="user2_id", recipient="user1_id", at="updated_at",
                                               status="accepted"),
    "comment_reaction": """
SELECT r.id::text AS source_id, r.user_id AS actor_id, u.username AS actor_name, c.author_id AS recipient_id,
       c.post_id::text AS post_id, r.created_at AS event_at,
       jsonb_build_object('comment_id', c.id::text, 'reaction_type', r.type) AS extra, c.id::text AS scope_id
FROM comment_reactions AS r JOIN comments AS c ON c.id = r.comment_id JOIN posts AS p ON p.id = c.post_id
JOIN users AS u ON u.id = r.user_id
WHERE r.id = ANY(CAST(:ids AS uuid[])) AND NOT c.moderation_hidden AND NOT p.moderation_hidden
  AND NOT """ + blocked_between_sql("r.user_id", "c.author_id"),
    # A message read before this ran needs no notification.
    "message": """
SELECT m.id::text AS source_id, m.sender_id AS actor_id, u.username AS actor_name, m.receiver_id AS recipient_id,
       NULL AS post_id, m.created_at AS event_at,
       jsonb_build_object('conversation_id', m.conversation_id::text, 'message_id', m.id::text) AS extra,
       m.conversation_id::text AS scope_id
FROM messages AS m JOIN users AS u ON u.id = m.sender_id
WHERE m.id = ANY(CAST(:ids AS uuid[])) AND NOT m.is_read
  AND NOT """ + blocked_between_sql("m.sender_id", "m.receiver_id"),
}


def _locking_sql(kind: str) -> str:
    """SOURCE_SQL that also takes the row's batch-key advisory lock (batching.lock_name),
    saving the single-event path a round trip."""
    config = BATCH_CONFIGS[kind]
    scope_value = "q.recipient_id::text" if config.batch_scope == "user" else "q.scope_id"
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
                  dedupe_key=f"{kind}:{row['source_id']}", extra=row["extra"] or {}, scope_id=row["scope_id"])
            for row in rows]


def source_id(event: Event) -> str:
    return event.dedupe_key.split(":", 1)[1]


def record_sources(session: Session, kind: str, source_ids: list[str]) -> dict[str, tuple[Event, Outcome]]:
    """Record the events of many sources of one kind in the caller's transaction.

    Returns {source id: (event, outcome)} for the sources that still exist (the
    rest are gone). The batch keys are locked first and
    the rows read again under the locks, so a retraction that committed before
    the locks is seen, as the single-event path's locking read sees it.
    """
    events = load_events(session, kind, source_ids)
    if not events:
        return {}
    lock_keys(session, {(event.recipient_id, event.batch_key) for event in events})
    events = load_events(session, kind, [source_id(event) for event in events])
    outcomes = apply_events(session, events, keys_locked=True)
    return {source_id(event): (event, outcome) for event, outcome in zip(events, outcomes)}


MENTION_SOURCE_KINDS = ("post", "comment")


def record_mentions(session: Session, *, source_kind: str, source_id: str, post_id: str, author_id: int,
                    author_name: str, event_at: datetime, recipient_ids: list[int]) -> list[str]:
    """Notify the users a post or comment mentions; the caller commits.

    The dedupe key ``mention:<source_kind>:<source_id>`` makes a rerun (an edit,
    a redelivered task) notify each recipient at most once per post or comment.
    Returns one status per recipient, in order: ``duplicate`` when this source
    already notified them, ``withheld`` when moderation holds the source or a
    block stands between them and the author, else created, batched, converted
    or folded (``self`` for the author).
    """
    if source_kind not in MENTION_SOURCE_KINDS:
        raise ValueError(f"source_kind must be one of {MENTION_SOURCE_KINDS}, not {source_kind!r}")
    allowed = set(session.execute(text(_MENTIONABLE_SQL[source_kind]),
                                  {"ids": recipient_ids, "source": source_id, "author": author_id}).scalars())
    events = [Event(kind="mention", recipient_id=recipient_id, actor_id=author_id, actor_name=author_name,
                    post_id=post_id, event_at=event_at, dedupe_key=f"mention:{source_kind}:{source_id}",
                    extra={"comment_id": source_id} if source_kind == "comment" else {})
              for recipient_id in recipient_ids if recipient_id in allowed]
    outcomes = iter(apply_events(session, events))
    return [next(outcomes).status if recipient_id in allowed else "withheld" for recipient_id in recipient_ids]


# The recipients a mention may notify: none while moderation holds the post or comment,
# and nobody with a block between them and the author.
_MENTIONABLE_SQL = {
    kind: f"""
SELECT r.id FROM unnest(CAST(:ids AS integer[])) AS r(id)
WHERE NOT EXISTS (SELECT 1 FROM {table} AS c WHERE c.id = CAST(:source AS uuid) AND c.moderation_hidden)
  AND NOT {blocked_between_sql(":author", "r.id")}
""" for kind, table in (("post", "posts"), ("comment", "comments"))
}


# Per retractable kind: who received the notification (NULL: the post or comment is gone,
# so nothing is retracted), and whether the actor's source row is back.
_RECIPIENT_SQL = {
    "post": "SELECT author_id FROM posts WHERE id = CAST(:scope AS uuid)",
    "comment": "SELECT author_id FROM comments WHERE id = CAST(:scope AS uuid)",
    "user": "SELECT CAST(:user AS integer)",
}
_STILL_PRESENT_SQL = {
    "like": "SELECT EXISTS (SELECT 1 FROM likes WHERE user_id = :actor AND post_id = CAST(:scope AS uuid))",
    "emoji_reaction": "SELECT EXISTS (SELECT 1 FROM emoji_reactions "
                      "WHERE user_id = :actor AND post_id = CAST(:scope AS uuid))",
    "follow": "SELECT EXISTS (SELECT 1 FROM follows "
              "WHERE follower_id = :actor AND followed_id = :user AND status = 'active')",
    "friend_request": "SELECT EXISTS (SELECT 1 FROM friendships "
                      "WHERE user1_id = :actor AND user2_id = :user AND status = 'pending')",
    "friend_accept": "SELECT EXISTS (SELECT 1 FROM friendships "
                     "WHERE user1_id = :user AND user2_id = :actor AND status = 'accepted')",
    # Any reaction kept: a user who swaps love for laugh still reacts to the comment.
    "comment_reaction": "SELECT EXISTS (SELECT 1 FROM comment_reactions "
                        "WHERE user_id = :actor AND comment_id = CAST(:scope AS uuid))",
}


def retract_recipient(session: Session, *, kind: str, scope_id: str | None, user_id: int | None) -> int | None:
    """Who a retraction of ``kind`` is about: the post's or comment's author, or ``user_id``
    for user kinds; None when the post or comment is gone."""
    return session.execute(text(_RECIPIENT_SQL[BATCH_CONFIGS[kind].batch_scope]),
                           {"scope": scope_id, "user": user_id}).scalar()


def retract_source(session: Session, *, kind: str, actor_id: int, scope_id: str | None,
                   user_id: int | None) -> dict:
    """Undo an actor's notification after an unlike, unfollow, withdrawn request, unfriend
    or removed comment reaction. ``scope_id`` is the post or comment (None for user kinds),
    ``user_id`` the recipient of a user kind.

    A retract that arrives after the actor liked (or followed) again is a
    no-op ("still_present"): the new row's notification must survive.
    """
    from tasks.notifications.batching import retract_actor

    params = {"actor": actor_id, "scope": scope_id, "user": user_id}
    recipient_id = retract_recipient(session, kind=kind, scope_id=scope_id, user_id=user_id)
    if recipient_id is None:
        return {"status": "gone"}
    if session.execute(text(_STILL_PRESENT_SQL[kind]), params).scalar():
        return {"status": "still_present"}
    return retract_actor(session, kind=kind, actor_id=actor_id, recipient_id=recipient_id, scope_id=scope_id)
