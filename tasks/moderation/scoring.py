"""Score one version of a post or comment, record it, and hide it above the threshold.

A version is the sha256 of the text. Its ``content_moderation`` row is unique
per (content type, content id, hash), so re-scoring an unchanged text finds the
row and writes nothing, and an edit back to an earlier text gets that text's
decision again. Everything happens in the caller's one transaction, after a
per-content advisory lock: a worker killed mid-score leaves nothing behind, and
the redelivered task starts over.

Statuses: below the threshold a version is ``APPROVED`` automatically (no
moderator, no ``reviewed_at``); above it ``FLAGGED`` and hidden until a
moderator approves (shown again) or rejects (stays hidden, author told).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import text
from sqlalchemy.orm import Session

from db.locks import xact_lock
from tasks.moderation import classifier
from tasks.moderation.hiding import CONTENT_TABLES, set_hidden

def version_sql(content: str) -> str:
    """SQL for a text's version key: its sha256, the same bytes as ``content_hash``."""
    return f"sha256(convert_to({content}, 'UTF8'))"


REPEAT_WINDOW = timedelta(days=1)       # "repeated identical text from one author" looks this far back
HIDING_STATUSES = ("FLAGGED", "REJECTED")

# The text, its version (hash), its author, whether it is hidden now, the decision already
# taken on this exact text, and how often the author posted or commented the same text in
# the window: one round trip.
_LOAD_SQL = {
    content_type: text(f"""
SELECT c.content, c.author_id, c.moderation_hidden AS hidden, v.hash,
       (SELECT m.status FROM content_moderation m
        WHERE m.content_type = :type AND m.content_id = c.id AND m.content_hash = v.hash) AS decided,
       (SELECT count(*) FROM posts o WHERE o.author_id = c.author_id AND o.created_at >= :since
            AND o.content = c.content AND o.id <> c.id)
     + (SELECT count(*) FROM comments o WHERE o.author_id = c.author_id AND o.created_at >= :since
            AND o.content = c.content AND o.id <> c.id) AS repeats
FROM {table} c CROSS JOIN LATERAL (SELECT {version_sql('c.content')} AS hash) v
WHERE c.id = CAST(:id AS uuid)
""") for content_type, table in CONTENT_TABLES.items()
}

_INSERT_SQL = text("""
INSERT INTO content_moderation (content_type, content_id, content_hash, author_id, status, automated_score, signals)
VALUES (:type, CAST(:id AS uuid), :hash, :author, :status, :score, CAST(:signals AS jsonb))
ON CONFLICT (content_type, content_id, content_hash) DO NOTHING
RETURNING id::text
""")


@dataclass
class Scored:
    status: str                          # scored | unchanged | gone
    moderation_status: str | None = None
    automated_score: str | None = None
    hidden_changed: bool = False
    moderation_id: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def content_hash(content: str) -> bytes:
    """A text's version key in Python (``version_sql`` in SQL)."""
    return hashlib.sha256(content.encode("utf-8")).digest()


def score_content(session: Session, content_type: str, content_id: str, *, threshold: float, now: datetime,
                  model: classifier.ProfanityModel = classifier.MODEL) -> Scored:
    """Score the content's current text once; hide or show it by the decision. Never commits."""
    xact_lock(session, "moderation.content", content_type, content_id)
    row = session.execute(_LOAD_SQL[content_type], {
        "id": content_id, "type": content_type, "since": now - REPEAT_WINDOW}).first()
    if row is None:
        return Scored("gone")
    if row.decided is not None:
        hide = row.decided in HIDING_STATUSES
        changed = hide != row.hidden and set_hidden(session, content_type, content_id, hide)
        return Scored("unchanged", row.decided, hidden_changed=changed)
    signals = classifier.signals(row.content, row.repeats, model)
    score: Decimal = signals.score
    status = "FLAGGED" if score > Decimal(str(threshold)) else "APPROVED"
    moderation_id = session.execute(_INSERT_SQL, {
        "type": content_type, "id": content_id, "hash": bytes(row.hash), "author": row.author_id, "status": status,
        "score": score, "signals": json.dumps(signals.as_dict())}).scalar()
    hide = status in HIDING_STATUSES
    changed = hide != row.hidden and set_hidden(session, content_type, content_id, hide)
    return Scored("scored", status, str(score), changed, moderation_id)


# --- The sweep: content the web tier never sent -------------------------------------------

SWEEP_WINDOW = timedelta(days=2)
SWEEP_LIMIT = 500   # per content type and run: a run scores at most 1,000 texts

_UNSCORED_SQL = {
    content_type: text(f"""
SELECT c.id::text FROM {table} c
WHERE c.created_at >= :since AND c.deleted_at IS NULL
  AND NOT EXISTS (SELECT 1 FROM content_moderation m WHERE m.content_type = :type AND m.content_id = c.id)
ORDER BY c.created_at LIMIT :limit
""") for content_type, table in CONTENT_TABLES.items()
}


def unscored(session: Session, content_type: str, now: datetime, limit: int = SWEEP_LIMIT) -> list[str]:
    """Ids of recent content with no version scored at all, oldest first."""
    return list(session.execute(_UNSCORED_SQL[content_type],
                                {"since": now - SWEEP_WINDOW, "type": content_type, "limit": limit}).scalars())
