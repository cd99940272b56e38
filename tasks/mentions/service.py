"""Notify the users a post or comment mentions (seed 000 "Mention System").

No mention table: the parser finds candidates, one case-insensitive query
(``lower(username)``, index idx_users_username_lower) validates them, and the
notifications family's ``record_mentions`` notifies each recipient at most once
per post or comment. Re-running after an edit therefore notifies only users
mentioned for the first time, and a redelivered task notifies no one twice.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.orm import Session

from tasks.mentions.parser import extract_mentions
from tasks.notifications import record_mentions

MAX_NOTIFIED_MENTIONS = 10  # distinct mentioned users (author excluded) per post or comment


@dataclass
class MentionSource:
    kind: str                    # "post" or "comment"
    id: str
    post_id: str
    author_id: int
    author_name: str
    content: str
    event_at: datetime           # updated_at of an edit, else created_at


@dataclass
class MentionResult:
    valid_usernames: list[str] = field(default_factory=list)
    invalid_usernames: list[str] = field(default_factory=list)
    notified: list[str] = field(default_factory=list)
    already_notified: list[str] = field(default_factory=list)
    # Not notified: moderation holds the post or comment, or a block stands between them and the author.
    withheld: list[str] = field(default_factory=list)
    skipped_reason: str | None = None

    def as_dict(self) -> dict:
        return {"status": "ok", "valid_usernames": self.valid_usernames,
                "invalid_usernames": self.invalid_usernames, "notified": self.notified,
                "already_notified": self.already_notified, "withheld": self.withheld,
                "skipped_reason": self.skipped_reason}


_SOURCE_SQL = {
    "post": """SELECT p.id::text, p.id::text AS post_id, p.author_id, u.username, p.content,
                      coalesce(p.updated_at, p.created_at)
               FROM posts AS p JOIN users AS u ON u.id = p.author_id WHERE p.id = CAST(:id AS uuid)""",
    "comment": """SELECT c.id::text, c.post_id::text, c.author_id, u.username, c.content,
                         coalesce(c.updated_at, c.created_at)
                  FROM comments AS c JOIN users AS u ON u.id = c.author_id WHERE c.id = CAST(:id AS uuid)""",
}


def load_source(session: Session, kind: str, source_id: str) -> MentionSource | None:
    row = session.execute(text(_SOURCE_SQL[kind]), {"id": source_id}).first()
    return None if row is None else MentionSource(kind, *row)


def validate_usernames(session: Session, candidates: list[str]) -> dict[str, tuple[int, str]]:
    """One batch query: lower(candidate) -> (user id, stored username)."""
    if not candidates:
        return {}
    rows = session.execute(text(
        "SELECT lower(username), id, username FROM users WHERE lower(username) = ANY(CAST(:names AS text[]))"),
        {"names": [c.lower() for c in candidates]})
    return {lowered: (user_id, username) for lowered, user_id, username in rows}


def notify_mentions(session: Session, source: MentionSource) -> MentionResult:
    candidates = extract_mentions(source.content)
    found = validate_usernames(session, candidates)
    result = MentionResult(
        valid_usernames=[found[c.lower()][1] for c in candidates if c.lower() in found],
        invalid_usernames=[c for c in candidates if c.lower() not in found])
    recipients = [found[c.lower()] for c in candidates
                  if c.lower() in found and found[c.lower()][0] != source.author_id]
    if len(recipients) > MAX_NOTIFIED_MENTIONS:
        result.skipped_reason = f"too_many_mentions: {len(recipients)} users mentioned, limit {MAX_NOTIFIED_MENTIONS}"
        return result
    statuses = record_mentions(
        session, source_kind=source.kind, source_id=source.id, post_id=source.post_id,
        author_id=source.author_id, author_name=source.author_name, event_at=source.event_at,
        recipient_ids=[user_id for user_id, _username in recipients])
    lists = {"duplicate": result.already_notified, "withheld": result.withheld}
    for (_user_id, username), status in zip(recipients, statuses):
        lists.get(status, result.notified).append(username)
    return result
