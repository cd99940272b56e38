"""A moderator's decisions: the queue of flags, approve and reject.

A decision is about one version (a ``content_moderation`` row). It changes what
readers see only while that version is the content's current text; a decision
on an older version is recorded and waits for the text to come back.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.orm import Session

from db.locks import xact_lock
from tasks.moderation.hiding import CONTENT_TABLES, set_hidden
from tasks.moderation.scoring import version_sql
from tasks.notifications.batching import Event, apply_events

MAX_REASON_CHARS = 500
SNIPPET_CHARS = 80

_QUEUE_SQL = text("""
SELECT m.id::text AS id, m.content_type, m.content_id::text AS content_id, m.automated_score, m.signals,
       m.created_at, left(coalesce(p.content, c.content), :snippet) AS snippet
FROM content_moderation m
LEFT JOIN posts p ON m.content_type = 'POST' AND p.id = m.content_id
LEFT JOIN comments c ON m.content_type = 'COMMENT' AND c.id = m.content_id
WHERE m.status = 'FLAGGED' AND (p.id IS NOT NULL OR c.id IS NOT NULL)  -- content deleted since: nothing to judge
ORDER BY m.created_at
LIMIT :limit
""")

_ROW_SQL = text("""
SELECT id::text, content_type, content_id::text AS content_id, content_hash, author_id, status
FROM content_moderation WHERE id = CAST(:id AS uuid)
""")

_DECIDE_SQL = text("""
UPDATE content_moderation SET status = :status, moderator_id = :moderator, reviewed_at = :now, reason = :reason
WHERE id = CAST(:id AS uuid)
""")


class NotFound(LookupError):
    pass


@dataclass
class Decision:
    moderation_id: str
    status: str
    previous: str
    current_version: bool     # the decided version is the content's text now
    hidden_changed: bool
    author_notified: bool = False

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def queue(session: Session, limit: int = 50) -> list[dict]:
    """The undecided flags, oldest first, with a snippet of the current text."""
    return [dict(row) for row in session.execute(_QUEUE_SQL, {"limit": limit, "snippet": SNIPPET_CHARS}).mappings()]


def _is_current(session: Session, row) -> bool:
    table = CONTENT_TABLES[row.content_type]
    return bool(session.execute(text(
        f"SELECT {version_sql('content')} = :hash FROM {table} WHERE id = CAST(:id AS uuid)"),
        {"hash": bytes(row.content_hash), "id": row.content_id}).scalar())


def decide(session: Session, moderation_id: str, *, approve: bool, moderator_id: int, now: datetime,
           reason: str | None = None) -> Decision:
    """Approve (show again everywhere) or reject (keep hidden, tell the author). Never commits."""
    row = session.execute(_ROW_SQL, {"id": moderation_id}).first()
    if row is None:
        raise NotFound(f"no moderation record {moderation_id}")
    xact_lock(session, "moderation.content", row.content_type, row.content_id)
    status = "APPROVED" if approve else "REJECTED"
    if reason is not None:
        reason = reason.strip()[:MAX_REASON_CHARS] or None
    session.execute(_DECIDE_SQL, {"status": status, "moderator": moderator_id, "now": now, "reason": reason,
                                  "id": moderation_id})
    current = _is_current(session, row)
    changed = set_hidden(session, row.content_type, row.content_id, not approve) if current else False
    decision = Decision(moderation_id, status, row.status, current, changed)
    if not approve and row.status != "REJECTED" and row.author_id is not None:
        decision.author_notified = _notify_author(session, row, moderator_id, reason, now)
    return decision


def _notify_author(session: Session, row, moderator_id: int, reason: str | None, now: datetime) -> bool:
    """content_removed, once per rejected version (its dedupe key). The moderator's name is not shown."""
    extra = {"reason": reason or "it broke the community rules"}
    if row.content_type == "COMMENT":
        extra["comment_id"] = row.content_id
    event = Event(kind="content_removed", recipient_id=row.author_id, actor_id=moderator_id,
                  actor_name="Moderation", post_id=None, event_at=now,
                  dedupe_key=f"content_removed:{row.id}", extra=extra)
    return apply_events(session, [event])[0].status not in ("duplicate", "self")
