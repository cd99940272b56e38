"""Engagement events (seed 003's ``user_engagement``) and seed 004's raw event log.

Both logs are partitioned by month (db/partitions.py) and take the Celery task
id as the event id: a message delivered twice (acks late) inserts one row. The
check for an earlier row with that id and the insert run under an advisory lock
on the id, so two deliveries running at once insert one row too.
"""
from __future__ import annotations

import json
import uuid

from sqlalchemy import text
from sqlalchemy.orm import Session

from db.locks import xact_lock
from db.models.events import ENGAGEMENT_TYPES
from workers.errors import InvalidArguments

MAX_METADATA_BYTES = 4096
MAX_VALUE = 999.99          # value is NUMERIC(5,2)
MAX_EVENT_TYPE_LENGTH = 50
# A redelivery comes within the visibility timeout (hours); look back a little further.
REDELIVERY_WINDOW = "2 days"


def event_uuid(task_id: str | None) -> str:
    """The event id for a task id: itself when it is a UUID (Celery's default), else derived from it."""
    if task_id is None:
        return str(uuid.uuid4())   # called directly, not from a delivered message
    try:
        return str(uuid.UUID(task_id))
    except ValueError:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"task:{task_id}"))


def _json_object(name: str, value: dict | None) -> str | None:
    if value is None:
        return None
    try:
        encoded = json.dumps(value, separators=(",", ":"), allow_nan=False)
    except ValueError:
        raise InvalidArguments(f"{name} holds NaN or Infinity, which JSON has no spelling for") from None
    if "\\u0000" in encoded:
        raise InvalidArguments(f"{name} holds a NUL character, which PostgreSQL's jsonb refuses")
    if len(encoded.encode()) > MAX_METADATA_BYTES:
        raise InvalidArguments(f"{name} is {len(encoded.encode())} bytes as JSON; the limit is {MAX_METADATA_BYTES}")
    return encoded


def _insert_once(session: Session, table: str, insert_sql: str, params: dict) -> str:
    """Run ``insert_sql`` (an INSERT … SELECT that inserts nothing when its user or post is gone)
    unless an event with this id is already there: "recorded", "duplicate" or "gone"."""
    xact_lock(session, f"analytics.{table}", params["id"])
    seen = session.execute(text(
        f"SELECT 1 FROM {table} WHERE id = CAST(:id AS uuid) "
        f"AND created_at > now() - interval '{REDELIVERY_WINDOW}'"), {"id": params["id"]}).first()
    if seen is not None:
        return "duplicate"
    return "recorded" if session.execute(text(insert_sql), params).rowcount else "gone"


def record_engagement(session: Session, event_id: str, user_id: int, post_id: str, engagement_type: str,
                      value: float = 1.0, metadata: dict | None = None) -> str:
    """Insert one event; "recorded", "duplicate", or "gone" when the user or the post no longer exists."""
    if engagement_type not in ENGAGEMENT_TYPES:
        raise InvalidArguments(f"engagement_type must be one of {', '.join(ENGAGEMENT_TYPES)}, "
                               f"got {engagement_type[:20]!r}")
    if not -MAX_VALUE <= value <= MAX_VALUE:
        raise InvalidArguments(f"value must be between {-MAX_VALUE} and {MAX_VALUE}, got {value}")
    return _insert_once(session, "user_engagement", (
        "INSERT INTO user_engagement (id, user_id, post_id, engagement_type, value, metadata) "
        "SELECT CAST(:id AS uuid), u.id, p.id, :type, :value, CAST(:meta AS jsonb) "
        "FROM users AS u, posts AS p WHERE u.id = :user_id AND p.id = CAST(:post_id AS uuid)"),
        {"id": event_id, "user_id": user_id, "post_id": post_id, "type": engagement_type,
         "value": round(value, 2), "meta": _json_object("metadata", metadata)})


def record_event(session: Session, event_id: str, user_id: int, event_type: str,
                 event_data: dict | None = None) -> str:
    """Seed 004's raw log: any event type the web tier names; "recorded", "duplicate" or "gone"."""
    if not event_type or len(event_type) > MAX_EVENT_TYPE_LENGTH or not event_type.isprintable():
        raise InvalidArguments(f"event_type must be 1 to {MAX_EVENT_TYPE_LENGTH} printable characters")
    return _insert_once(session, "analytics_events", (
        "INSERT INTO analytics_events (id, user_id, event_type, event_data) "
        "SELECT CAST(:id AS uuid), id, :type, CAST(:data AS jsonb) FROM users WHERE id = :user_id"),
        {"id": event_id, "user_id": user_id, "type": event_type, "data": _json_object("event_data", event_data)})
