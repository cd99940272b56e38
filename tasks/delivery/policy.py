"""The delivery rules as plain functions: defaults, quiet hours, settle and re-delivery times.

The policy table in docs/tasks.md ("Delivery policy") lists each rule with the
test that holds it.
"""
from __future__ import annotations

import base64
import hashlib
from datetime import datetime, time, timedelta, timezone
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

# No preference row: push for every type; email for the personal ones only. Likes and
# reactions go to the digest instead of an email each (issue 11, after Discourse).
EMAIL_BY_DEFAULT = frozenset({"mention", "comment", "follow"})
PUSH_BY_DEFAULT = True

# A batch parent's type is not a preference type: "post_interaction" gathers likes and
# emoji reactions (tasks/notifications/config.py), so either switch turns it on.
PREFERENCE_TYPES = {"post_interaction": ("like", "emoji_reaction")}

# A batch delivered once is delivered again, with its new count, at most this often.
REDELIVERY_INTERVAL = timedelta(hours=1)
DIGEST_LOCAL_HOUR = 8
DIGEST_MAX_ITEMS = 50
PUSH_TTL_SECONDS = 24 * 3600
# A claimed delivery whose task has not finished in this long is sent again (its
# task was lost: a dead worker and a purged queue). Longer than the longest retry
# countdown plus the task's hard time limit, so a live retry is never overtaken.
RECLAIM_AFTER = timedelta(minutes=30)
MAX_ATTEMPTS = 10


def default_enabled(notification_type: str, channel: str) -> bool:
    if channel == "push":
        return PUSH_BY_DEFAULT
    return notification_type in EMAIL_BY_DEFAULT


def channel_enabled(notification_type: str, channel: str, preferences: dict[tuple[str, str], bool]) -> bool:
    """``preferences``: one user's rows, (notification_type, channel) -> enabled."""
    kinds = PREFERENCE_TYPES.get(notification_type, (notification_type,))
    return any(preferences.get((kind, channel), default_enabled(kind, channel)) for kind in kinds)


@lru_cache(maxsize=1024)
def zone(name: str | None) -> ZoneInfo:
    """The user's zone; an unknown or empty name is UTC (the digest SQL reads it the same way)."""
    try:
        return ZoneInfo(name) if name else ZoneInfo("UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def quiet_until(now: datetime, zone_name: str | None, start: time | None, end: time | None) -> datetime | None:
    """The UTC instant quiet hours end, if ``now`` is inside them; else None.

    A window may wrap midnight (22:00–07:00). start == end means no quiet hours.
    """
    if start is None or end is None or start == end:
        return None
    local = now.astimezone(zone(zone_name))
    clock = local.time().replace(tzinfo=None)
    inside = (start <= clock < end) if start < end else (clock >= start or clock < end)
    if not inside:
        return None
    end_day = local.date() if clock < end else local.date() + timedelta(days=1)
    return datetime.combine(end_day, end, tzinfo=local.tzinfo).astimezone(timezone.utc)


def due_at(now: datetime, *, channel: str, last_sent: datetime | None, quiet_end: datetime | None) -> datetime:
    """When a settled notification may go out on ``channel``.

    At once, unless the same batch was delivered on this channel within the hour
    (then an hour after that), and for push not before quiet hours end.
    """
    due = now
    if last_sent is not None:
        due = max(due, last_sent + REDELIVERY_INTERVAL)
    if channel == "push" and quiet_end is not None:
        due = max(due, quiet_end)
    return due


def push_topic(user_id: int, batch: str) -> str:
    """The Web Push ``Topic``: one per recipient and batch, so a newer count replaces an undelivered
    older one on the device. RFC 8030: at most 32 characters of the URL-safe base64 alphabet."""
    digest = hashlib.sha256(f"{user_id}:{batch}".encode()).digest()
    return base64.urlsafe_b64encode(digest).decode()[:32]
