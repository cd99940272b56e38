"""Mark a conversation read for one member: messages, notifications and unread counters.

The ``is_read`` update fires the counters' dirty trigger; the caller then recounts
``users.unread_messages_count`` and ``conversation_members.unread_count`` of that
member in the same transaction (tasks/engagement/runs.refresh_in), so the counters
are exact when it commits, never incremented or decremented by hand.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.orm import Session

MARK_READ_SQL = text("""
UPDATE messages SET is_read = true
WHERE inbox_id = :inbox AND NOT is_read AND created_at <= coalesce(CAST(:up_to AS timestamptz), 'infinity')
""")

MEMBER_SQL = text("""
UPDATE conversation_members SET last_read_at = greatest(last_read_at, CAST(:now AS timestamptz))
WHERE id = :inbox RETURNING id
""")

# Parents, singles and children of the conversation's batch (all carry its batch key), once
# the member has nothing unread left in it: a partial read leaves "2 new messages" standing.
NOTIFICATIONS_READ_SQL = text("""
WITH changed AS (
    UPDATE notifications SET read = true, read_at = :now
    WHERE user_id = :user_id AND batch_key = :batch_key AND NOT read
      AND NOT EXISTS (SELECT 1 FROM messages WHERE inbox_id = :inbox AND NOT is_read)
    RETURNING parent_id)
SELECT count(*) FROM changed WHERE parent_id IS NULL
""")

UP_TO_SQL = text("SELECT created_at FROM messages WHERE id = CAST(:id AS uuid) AND conversation_id = CAST(:c AS uuid)")

IS_MEMBER_SQL = text("SELECT 1 FROM conversation_members WHERE id = :inbox")


@dataclass
class MarkRead:
    status: str                  # ok | not_a_member | unknown_message
    messages_marked: int = 0
    notifications_marked: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


def inbox_id(conversation_id: str, user_id: int) -> str:
    """conversation_members.id and messages.inbox_id: the same computed expression."""
    return f"{conversation_id}:{user_id}"


def mark_read(session: Session, conversation_id: str, user_id: int, up_to_message_id: str | None,
              now: datetime) -> MarkRead:
    """Mark the member's received messages read, up to and including ``up_to_message_id``
    (all of them when None), and the conversation's message notifications once none is left."""
    inbox = inbox_id(conversation_id, user_id)
    up_to = None
    if up_to_message_id is not None:
        up_to = session.execute(UP_TO_SQL, {"id": up_to_message_id, "c": conversation_id}).scalar()
        if up_to is None:
            # Rejected before anything is written: last_read_at must not move either.
            member = session.execute(IS_MEMBER_SQL, {"inbox": inbox}).first() is not None
            return MarkRead("unknown_message" if member else "not_a_member")
    if session.execute(MEMBER_SQL, {"inbox": inbox, "now": now}).first() is None:
        return MarkRead("not_a_member")
    marked = session.execute(MARK_READ_SQL, {"inbox": inbox, "up_to": up_to}).rowcount
    notified = session.execute(NOTIFICATIONS_READ_SQL, {
        "user_id": user_id, "batch_key": f"message:conversation:{conversation_id}", "inbox": inbox,
        "now": now}).scalar_one()
    return MarkRead("ok", marked, notified)
