"""Celery entry points of the feed family: thin wrappers over plain modules."""
from __future__ import annotations

from datetime import datetime, timezone

from celery import group

from db.models import User
from db.session import session_scope
from tasks.cache.hooks import invalidate_on_commit
from tasks.feed import expiry, scoring, trending
from tasks.feed.active import dispatch_active_users
from db.heartbeats import record_heartbeat
from workers.task import job


def utcnow() -> datetime:
    """The one clock of the family: Python's, so freezegun fixes it (never the DB's now())."""
    return datetime.now(timezone.utc)


def _send_chunks(chunks: list[list[int]]) -> None:
    group(score_users.s(chunk) for chunk in chunks).apply_async()


@job("feed.score_active")
def score_active() -> dict:
    """Beat, every 10 min: fan active users out as a group of feed.score_users chunks."""
    with session_scope() as session:
        result = dispatch_active_users(session, utcnow(), _send_chunks)
        if result["status"] == "ok":
            record_heartbeat(session, "feed.score_active", result)
        return result


@job("feed.score_users")
def score_users(user_ids: list[int]) -> dict:
    """Rescore and atomically replace these users' feeds, one commit per 500 users.

    A retry after some chunks committed rescores them again: replacing a feed is idempotent.
    """
    now, total = utcnow(), scoring.ScoreResult()
    for chunk in scoring.transaction_chunks(user_ids):
        with session_scope() as session:
            total.add(scoring.score_users(session, chunk, now))
            # The whole chunk: a user skipped as locked is being rewritten by another writer,
            # whose own commit drops the pages again.
            invalidate_on_commit(session, "feed_rebuilt", chunk)
    return total.as_dict()


@job("feed.refresh_user")
def refresh_user(user_id: int) -> dict:
    """For the web tier after a follow, unfollow or block: rebuild one user's feed now."""
    with session_scope() as session:
        if session.get(User, user_id) is None:
            return {"status": "gone"}
        invalidate_on_commit(session, "feed_rebuilt", [user_id])
        return scoring.score_users(session, [user_id], utcnow(), wait_for_lock=True).as_dict()


@job("feed.update_trending")
def update_trending() -> dict:
    """Beat, every 5 min: engagement_score inside the trending window, then popular_posts."""
    with session_scope() as session:
        result = trending.update_trending(session, utcnow())
        if result["status"] == "ok":
            record_heartbeat(session, "feed.update_trending", result)
        return result


@job("feed.expire_items")
def expire_items() -> dict:
    """Beat, every 15 min: delete expired feed rows in bounded batches, one commit each."""
    return expiry.sweep_expired(utcnow())
