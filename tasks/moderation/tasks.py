"""Celery entry points of the moderation family: thin wrappers over scoring.py."""
from __future__ import annotations

from datetime import datetime, timezone

import settings
from db.session import session_scope
from tasks.moderation import scoring
from tasks.moderation.hiding import CONTENT_TABLES
from workers.errors import InvalidArguments
from workers.task import UuidStr, job


def content_type_of(value: str) -> str:
    """'post' or 'comment', in any case, as the table's POST / COMMENT."""
    normalized = value.upper() if isinstance(value, str) else value
    if normalized not in CONTENT_TABLES:
        raise InvalidArguments(f"content_type must be 'post' or 'comment', not {str(value)[:20]!r}")
    return normalized


@job("moderation.score_content")
def score_content(content_type: str, content_id: UuidStr) -> dict:
    """After a post or comment is created or edited: score this text once, hide it above the threshold."""
    kind = content_type_of(content_type)
    with session_scope() as session:
        return scoring.score_content(session, kind, content_id, now=datetime.now(timezone.utc),
                                     threshold=settings.current().moderation_hide_threshold).as_dict()


@job("moderation.sweep_unscored")
def sweep_unscored() -> dict:
    """Beat, every 5 min: score recent posts and comments the web tier never sent, a bounded chunk."""
    now, threshold, scored = datetime.now(timezone.utc), settings.current().moderation_hide_threshold, {}
    for kind in CONTENT_TABLES:
        with session_scope() as session:
            ids = scoring.unscored(session, kind, now)
        for content_id in ids:
            with session_scope() as session:
                scoring.score_content(session, kind, content_id, threshold=threshold, now=now)
        scored[kind.lower()] = len(ids)
    return {"status": "ok", "scored": scored}
