"""Celery entry points of the graph family: thin wrappers over friendships.py and conversations.py."""
from __future__ import annotations

from datetime import datetime, timezone

from db.session import session_scope
from tasks.cache.hooks import invalidate_on_commit
from tasks.engagement import runs
from tasks.feed.tasks import refresh_user
from tasks.graph import conversations, friendships
from workers.errors import InvalidArguments
from workers.task import UuidStr, job


@job("graph.sync_friendship")
def sync_friendship(user_id: int, other_id: int) -> dict:
    """After any write to a pair's friendships row: notify, retract, and rebuild both feeds
    on accept, unfriend and block (feed.refresh_user, sent after the commit); the cache hears
    of the changed friends lists, feeds and notifications after the commit too."""
    if user_id == other_id:
        raise InvalidArguments("sync_friendship needs two different users")
    with session_scope() as session:
        result = friendships.sync_pair(session, user_id, other_id)
        # Accept, unfriend, block: both friends lists and both feeds change.
        invalidate_on_commit(session, "friendship_changed", result.refresh_users)
        if result.notification or result.retracted:
            invalidate_on_commit(session, "notifications_changed", [user_id, other_id])
    for uid in result.refresh_users:
        refresh_user.delay(uid)
    return result.as_dict()


@job("graph.mark_conversation_read")
def mark_conversation_read(conversation_id: UuidStr, user_id: int, up_to_message_id: UuidStr | None = None) -> dict:
    """The member read the conversation (up to a message): is_read, its notifications, exact unread counts."""
    with session_scope() as session:
        result = conversations.mark_read(session, conversation_id, user_id, up_to_message_id,
                                         datetime.now(timezone.utc))
        if result.status == "ok":  # recounted in the same transaction: exact at its commit
            runs.refresh_in(session, {"users": [str(user_id)],
                                      "conversation_members": [conversations.inbox_id(conversation_id, user_id)]})
        if result.notifications_marked:
            invalidate_on_commit(session, "notifications_changed", [user_id])
    return result.as_dict()
