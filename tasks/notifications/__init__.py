"""notifications job family.

For the web tier (plain functions taking a Session; the caller commits):
``unread_count(session, user_id)`` and ``mark_read(session, user_id, ...)``.

For other families, the one way in: ``record_mentions(session, ...)`` notifies
the users a post or comment mentions (used by tasks.mentions).
"""
from tasks.notifications.batching import mark_read, unread_count
from tasks.notifications.sources import record_mentions

__all__ = ["mark_read", "record_mentions", "unread_count"]
