"""notifications job family.

For the web tier (plain functions taking a Session; the caller commits):
``unread_count(session, user_id)`` and ``mark_read(session, user_id, ...)``.
"""
from tasks.notifications.batching import mark_read, unread_count

__all__ = ["mark_read", "unread_count"]
