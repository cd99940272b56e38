"""Daily and weekly digests: built set-based for every user whose local time is 08:00–08:59.

A digest holds the user's unread top-level notifications of the period (the last
24 hours, or 7 days for a weekly digest on Monday) that are low priority or
that no other channel delivered: likes and reactions with email off by default,
pushes folded over the hourly limit, email or push turned off, no subscription.

One statement builds every due digest (``digests`` is unique per user, period
and local date, so a second run in the same hour adds nothing). The digests wait
unclaimed; ``delivery.dispatch_due`` claims them in bounded chunks like
deliveries and sends one task each, which sends it like an email delivery
(QUEUED → SENDING → SENT).
"""
from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone

from sqlalchemy import text
from sqlalchemy.orm import Session

from tasks.delivery import policy, rendering, transports
from tasks.delivery.sending import Attempt, DeliveryConfig, SessionFactory, hand_over

# pg_timezone_names validates the stored zone: an unknown name reads as UTC (policy.zone does the same).
_DUE_USERS_CTE = """
WITH zones AS MATERIALIZED (SELECT name FROM pg_timezone_names),
due_users AS (
  SELECT u.id AS user_id, coalesce(s.digest, 'daily') AS period,
         (CAST(:now AS timestamptz) AT TIME ZONE coalesce(z.name, 'UTC')) AS local_now
  FROM users AS u
  LEFT JOIN notification_settings AS s ON s.user_id = u.id
  LEFT JOIN zones AS z ON z.name = s.timezone
  WHERE coalesce(s.digest, 'daily') <> 'off' AND coalesce(s.email_enabled, true)
), due AS (
  SELECT user_id, period, CAST(local_now AS date) AS local_date,
         CAST(:now AS timestamptz) - CASE period WHEN 'weekly' THEN interval '7 days' ELSE interval '1 day' END
           AS since
  FROM due_users
  WHERE extract(hour FROM local_now) = :hour
    AND (period = 'daily' OR extract(isodow FROM local_now) = 1)
), items AS (
  SELECT due.user_id, due.period, due.local_date, n.id, n.last_updated_at
  FROM due
  JOIN notifications AS n ON n.user_id = due.user_id AND n.parent_id IS NULL
  WHERE NOT n.read AND n.last_updated_at > due.since AND n.last_updated_at <= :now
    AND (n.priority = 'low' OR NOT EXISTS (
      SELECT 1 FROM deliveries AS d WHERE d.notification_id = n.id AND d.status = 'sent'))
)
"""

BUILD_SQL = text(_DUE_USERS_CTE + """
INSERT INTO digests (user_id, period, local_date, status, notification_ids, item_count)
SELECT user_id, period, local_date, 'queued',
       (array_agg(id ORDER BY last_updated_at DESC))[1:CAST(:max_items AS integer)], count(*)
FROM items
GROUP BY user_id, period, local_date
ON CONFLICT (user_id, period, local_date) DO NOTHING
RETURNING id::text
""")

# The benchmark's floor: the same rows, only selected.
SELECT_ITEMS_SQL = text(_DUE_USERS_CTE + "SELECT user_id, id FROM items")


def build(session: Session, *, now: datetime) -> list[str]:
    """Create the digests due at ``now``, unclaimed; returns their ids."""
    return list(session.execute(BUILD_SQL, {"now": now, "hour": policy.DIGEST_LOCAL_HOUR,
                                            "max_items": policy.DIGEST_MAX_ITEMS}).scalars())


_BEGIN_SQL = text("""
SELECT g.id::text, g.user_id, g.period, g.status, g.attempts, g.message_id, g.item_count,
       g.notification_ids::text[] AS ids, u.email, s.email_enabled
FROM digests AS g JOIN users AS u ON u.id = g.user_id
LEFT JOIN notification_settings AS s ON s.user_id = g.user_id
WHERE g.id = :id FOR UPDATE OF g
""")

_ITEMS_SQL = text("""
SELECT title, message FROM notifications
WHERE id = ANY(CAST(:ids AS uuid[])) AND NOT read
ORDER BY last_updated_at DESC
""")


def begin(session: Session, digest_id: str, *, now: datetime, config: DeliveryConfig) -> Attempt | dict:
    row = session.execute(_BEGIN_SQL, {"id": digest_id}).mappings().first()
    if row is None:
        return {"status": "gone"}
    if row["status"] in ("sent", "skipped", "failed"):
        return {"status": "duplicate", "was": row["status"]}

    def close(status: str, reason: str) -> dict:
        session.execute(text("UPDATE digests SET status = :status, error = :error WHERE id = :id"),
                        {"status": status, "error": reason, "id": digest_id})
        return {"status": status, "reason": reason}

    if row["email_enabled"] is False:
        return close("skipped", "email turned off")
    if row["attempts"] >= policy.MAX_ATTEMPTS:
        return close("failed", f"gave up after {row['attempts']} attempts")
    items = [dict(item) for item in session.execute(_ITEMS_SQL, {"ids": row["ids"]}).mappings()]
    if not items:
        return close("skipped", "everything was read before it was sent")
    unread_dropped = len(row["ids"]) - len(items)
    msg_id = row["message_id"] or rendering.message_id("digest", digest_id, config.mail_from)
    session.execute(text("UPDATE digests SET status = 'sending', message_id = :m, attempts = attempts + 1, "
                         "claimed_at = :now WHERE id = :id"), {"m": msg_id, "now": now, "id": digest_id})
    return Attempt(channel="digest", row_id=digest_id, user_id=row["user_id"], message_id=msg_id, to=row["email"],
                   digest_items=items, digest_total=max(len(items), row["item_count"] - unread_dropped),
                   period=row["period"])


def finish(session: Session, attempt: Attempt, reply: str, *, now: datetime) -> dict:
    session.execute(text("UPDATE digests SET status = 'sent', sent_at = :now, error = NULL, "
                         "provider_message_id = left(:reply, 512) WHERE id = :id AND status = 'sending'"),
                    {"now": now, "reply": reply, "id": attempt.row_id})
    return {"status": "sent", "channel": "digest", "items": len(attempt.digest_items)}


def deliver(digest_id: str, *, sessions: SessionFactory, config: DeliveryConfig,
            clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> dict:
    """Send one digest; ``TemporaryFailure`` propagates for the task to retry."""
    config.require("digest")  # before SENDING: a digest that never left must not look handed over
    with sessions() as session:
        attempt = begin(session, digest_id, now=clock(), config=config)
    if isinstance(attempt, dict):
        return attempt

    def send() -> dict:
        message = rendering.digest_email(
            user_id=attempt.user_id, period=attempt.period, items=attempt.digest_items,
            total=attempt.digest_total, to=attempt.to, msg_id=attempt.message_id, mail_from=config.mail_from,
            links=config.links, secret=config.unsubscribe_secret, sent_at=clock())
        reply = transports.send_email(config.smtp_url, message)
        with sessions() as session:
            return finish(session, attempt, reply, now=clock())

    return hand_over("digests", digest_id, send, sessions=sessions, clock=clock)
