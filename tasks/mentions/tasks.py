"""Celery entry points of the mentions family: thin, the logic is in service.py."""
from __future__ import annotations

from db.session import session_scope
from tasks.analytics.tags import tag_post
from tasks.mentions.service import load_source, notify_mentions
from workers.coalescing import HANDOFF, Coalesce
from workers.errors import InvalidArguments
from workers.task import UuidStr, job


def _extract_in(session, post_id: str | None, comment_id: str | None) -> dict:
    source = load_source(session, "post" if post_id else "comment", post_id or comment_id)
    if source is None:
        return {"status": "gone"}
    result = notify_mentions(session, source).as_dict()
    if post_id is not None:
        result["tags"] = tag_post(session, post_id)
    return result


def _extract_in_bulk(session, calls: list[dict]) -> list:
    """mentions.extract's coalesced form (workers/coalescing.py): many sources, one transaction."""
    return [HANDOFF if (call["post_id"] is None) == (call["comment_id"] is None)
            else _extract_in(session, call["post_id"], call["comment_id"]) for call in calls]


@job("mentions.extract", coalesce=Coalesce(_extract_in_bulk))
def extract(post_id: UuidStr | None = None, comment_id: UuidStr | None = None) -> dict:
    """Call after a post or comment is created or edited; notifies newly mentioned users.

    A post's hashtags are set from the same text in the same transaction (analytics' tags)."""
    if (post_id is None) == (comment_id is None):
        raise InvalidArguments("mentions.extract needs exactly one of post_id or comment_id")
    with session_scope() as session:
        return _extract_in(session, post_id, comment_id)
