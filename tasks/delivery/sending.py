"""One delivery (email, push) or digest, from its claimed row to SENT, in three short transactions.

1. ``begin``: lock the row; return early if it was already handled (a duplicate
   message), or skip it (read, merged into a batch, email turned off, no push
   subscription), or fold it (over PUSH_MAX_PER_HOUR). Otherwise mark it
   SENDING with its Message-ID / Topic fixed, count the attempt and commit,
   *before* anything leaves.
2. Hand over to the SMTP server or push service, outside any transaction.
3. ``finish``: SENT with the provider's id, or back to QUEUED for a retry
   (temporary reply), or FAILED (permanent reply, attempts used up).

At most one duplicate: a crash (SIGKILL, lost worker) after the provider accepted
and before step 3 committed leaves the row SENDING; the redelivered task sends
it once more, with the same Message-ID (email) and the same Topic (push: the
push service replaces an undelivered earlier message with it). A crash
before the hand-over re-sends nothing twice. docs/tasks.md documents the window.
"""
from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from sqlalchemy import text
from sqlalchemy.orm import Session

import settings
from db.locks import xact_lock
from tasks.delivery import policy, rendering, transports
from tasks.delivery.errors import NotConfigured, PermanentFailure, TemporaryFailure


FINAL_STATUSES = ("sent", "skipped", "folded", "failed")
MAX_SUBSCRIPTION_FAILURES = 5  # permanent refusals in a row before a subscription is dropped


@dataclass(frozen=True)
class DeliveryConfig:
    smtp_url: str | None
    mail_from: str
    vapid_key: str | None
    vapid_subject: str
    push_max_per_hour: int
    unsubscribe_secret: str | None
    links: rendering.Links

    @classmethod
    def from_settings(cls) -> DeliveryConfig:
        found = settings.current()
        return cls(smtp_url=found.smtp_url, mail_from=found.mail_from, vapid_key=found.vapid_private_key,
                   vapid_subject=found.vapid_subject, push_max_per_hour=found.push_max_per_hour,
                   unsubscribe_secret=found.unsubscribe_secret, links=rendering.Links(found.web_base_url))

    def require(self, channel: str) -> None:
        if channel in ("email", "digest"):
            if not self.smtp_url:
                raise NotConfigured("SMTP_URL is not set in this worker")
            if not self.unsubscribe_secret:
                raise NotConfigured("UNSUBSCRIBE_SECRET is not set in this worker (List-Unsubscribe tokens)")
        elif not self.vapid_key:
            raise NotConfigured("VAPID_PRIVATE_KEY is not set in this worker")


@dataclass
class Attempt:
    """A row marked SENDING: what the hand-over needs, read under the row lock."""

    channel: str
    row_id: str
    user_id: int
    message_id: str
    to: str | None = None
    notification: dict = field(default_factory=dict)
    subscriptions: list[dict] = field(default_factory=list)
    digest_items: list[dict] = field(default_factory=list)
    digest_total: int = 0
    period: str = "daily"
    delivered_before: bool = False  # push: some devices got it on an earlier attempt


def _outcome(status: str, **extra) -> dict:
    return {"status": status, **extra}


_BEGIN_SQL = text("""
SELECT d.id::text, d.channel, d.status, d.version, d.attempts, d.message_id, d.due_at, d.user_id,
       d.delivered_to::text[] AS delivered_to,
       n.id::text AS notification_id, n.type, n.title, n.message, n.batch_count, n.read, n.priority,
       n.parent_id IS NOT NULL AS merged, coalesce(n.batch_key, n.id::text) AS batch,
       u.email, s.email_enabled
FROM deliveries AS d
JOIN notifications AS n ON n.id = d.notification_id
JOIN users AS u ON u.id = d.user_id
LEFT JOIN notification_settings AS s ON s.user_id = d.user_id
WHERE d.id = :id
FOR UPDATE OF d
""")

_CLOSE_SQL = text("""
UPDATE deliveries SET status = :status, error = left(:error, 1000) WHERE id = :id
""")

_SUPERSEDE_SQL = text("""
UPDATE deliveries SET status = 'skipped', error = 'superseded by ' || :id
WHERE notification_id = :notification_id AND channel = :channel AND status = 'pending'
  AND version <= :count AND id <> :id
""")

_MARK_SENDING_SQL = text("""
UPDATE deliveries SET status = 'sending', message_id = :message_id, attempts = attempts + 1, claimed_at = :now
WHERE id = :id
""")

_RECENT_PUSHES_SQL = text("""
SELECT count(*) FROM deliveries
WHERE user_id = :user_id AND channel = 'push' AND status IN ('sending', 'sent')
  AND coalesce(sent_at, claimed_at) > :since AND id <> :id
""")

_SUBSCRIPTIONS_SQL = text("""
SELECT id::text, endpoint, p256dh, auth FROM push_subscriptions
WHERE user_id = :user_id AND NOT (id = ANY(CAST(:done AS uuid[])))
ORDER BY created_at
""")


# The common email case in one round trip: a queued row whose notification is still
# unread, top-level and wanted is locked, supersedes older pending versions and is
# marked SENDING. Anything else (no row comes back) takes the full path below, which
# says why. One statement instead of three is a third of the email benchmark's
# database time.
_EMAIL_FAST_PATH_SQL = text("""
WITH target AS (
  SELECT d.id, d.notification_id, n.batch_count
  FROM deliveries AS d
  JOIN notifications AS n ON n.id = d.notification_id
  LEFT JOIN notification_settings AS s ON s.user_id = d.user_id
  WHERE d.id = :id AND d.channel = 'email' AND d.status = 'queued' AND d.attempts < :max_attempts
    AND NOT n.read AND n.parent_id IS NULL AND coalesce(s.email_enabled, true)
  FOR UPDATE OF d
), superseded AS (
  UPDATE deliveries AS p SET status = 'skipped', error = 'superseded by ' || CAST(:id AS text)
  FROM target
  WHERE p.notification_id = target.notification_id AND p.channel = 'email' AND p.status = 'pending'
    AND p.version <= target.batch_count AND p.id <> target.id
)
UPDATE deliveries AS d
SET status = 'sending', message_id = coalesce(d.message_id, :message_id), attempts = d.attempts + 1,
    claimed_at = :now
FROM target, notifications AS n, users AS u
WHERE d.id = target.id AND n.id = target.notification_id AND u.id = d.user_id
RETURNING d.message_id, d.user_id, n.id::text AS notification_id, n.type, n.title, n.message, n.batch_count,
          coalesce(n.batch_key, n.id::text) AS batch, n.priority, u.email
""")


def _notification(row) -> dict:
    return {"id": row["notification_id"], "user_id": row["user_id"], "type": row["type"], "title": row["title"],
            "message": row["message"], "batch_count": row["batch_count"], "batch": row["batch"],
            "priority": row["priority"]}


def begin(session: Session, channel: str, delivery_id: str, *, now: datetime,
          config: DeliveryConfig) -> Attempt | dict:
    """Step 1 for an email or push delivery; a dict is a final outcome (nothing to send)."""
    if channel == "email":
        fast = session.execute(_EMAIL_FAST_PATH_SQL, {
            "id": delivery_id, "max_attempts": policy.MAX_ATTEMPTS, "now": now,
            "message_id": rendering.message_id("notification", delivery_id, config.mail_from)}).mappings().first()
        if fast is not None:
            return Attempt(channel=channel, row_id=delivery_id, user_id=fast["user_id"],
                           message_id=fast["message_id"], to=fast["email"], notification=_notification(fast))
    row = session.execute(_BEGIN_SQL, {"id": delivery_id}).mappings().first()
    if row is None:
        return _outcome("gone")  # its notification was deleted (cascade)
    if row["channel"] != channel:
        raise PermanentFailure(f"delivery {delivery_id} is a {row['channel']} delivery, not {channel}")
    if row["status"] in FINAL_STATUSES:
        return _outcome("duplicate", was=row["status"])
    if row["status"] == "pending" and row["due_at"] > now:
        return _outcome("not_due")

    def close(status: str, reason: str) -> dict:
        session.execute(_CLOSE_SQL, {"status": status, "error": reason, "id": delivery_id})
        return _outcome(status, reason=reason)

    if row["merged"]:
        return close("skipped", "merged into a batch")
    if row["read"]:
        return close("skipped", "read before it was sent")
    if row["attempts"] >= policy.MAX_ATTEMPTS:
        return close("failed", f"gave up after {row['attempts']} attempts")
    attempt = Attempt(channel=channel, row_id=delivery_id, user_id=row["user_id"],
                      message_id=row["message_id"] or _new_message_id(channel, row, config),
                      notification=_notification(row))
    if channel == "email":
        if row["email_enabled"] is False:
            return close("skipped", "email turned off")
        attempt.to = row["email"]
    else:
        # Serialise one user's push budget: the count and the SENDING mark commit together.
        xact_lock(session, f"delivery.push_budget:{row['user_id']}")
        recent = session.execute(_RECENT_PUSHES_SQL, {"user_id": row["user_id"], "id": delivery_id,
                                                      "since": now - timedelta(hours=1)}).scalar_one()
        if recent >= config.push_max_per_hour and row["status"] != "sending":
            return close("folded", f"over {config.push_max_per_hour} pushes an hour: left to the digest")
        attempt.delivered_before = bool(row["delivered_to"])
        attempt.subscriptions = [dict(s) for s in session.execute(
            _SUBSCRIPTIONS_SQL, {"user_id": row["user_id"], "done": row["delivered_to"] or []}).mappings()]
        if not attempt.subscriptions:
            if row["delivered_to"]:
                return _finish_push_rows(session, delivery_id, now)
            return close("skipped", "no push subscription")
    # This delivery announces the current count; a newer pending one for the same count is redundant.
    session.execute(_SUPERSEDE_SQL, {"id": delivery_id, "notification_id": row["notification_id"],
                                     "channel": channel, "count": row["batch_count"]})
    session.execute(_MARK_SENDING_SQL, {"id": delivery_id, "message_id": attempt.message_id, "now": now})
    return attempt


def _new_message_id(channel: str, row, config: DeliveryConfig) -> str:
    if channel == "push":
        return policy.push_topic(row["user_id"], row["batch"])
    return rendering.message_id("notification", row["id"], config.mail_from)


_SENT_SQL = text("""
UPDATE deliveries SET status = 'sent', sent_at = :now, error = NULL, provider_message_id = left(:provider, 512)
WHERE id = :id AND status = 'sending'
""")


def finish_email(session: Session, attempt: Attempt, reply: str, *, now: datetime) -> dict:
    session.execute(_SENT_SQL, {"id": attempt.row_id, "now": now, "provider": reply})
    return _outcome("sent", channel="email")


def _finish_push_rows(session: Session, delivery_id: str, now: datetime) -> dict:
    """Every device still subscribed got it on an earlier attempt (the one that said "later" is gone)."""
    session.execute(text("UPDATE deliveries SET status = 'sent', sent_at = :now, error = NULL WHERE id = :id"),
                    {"id": delivery_id, "now": now})
    return _outcome("sent", channel="push")


def finish_push(session: Session, attempt: Attempt, results: dict[str, transports.PushResult], *,
                now: datetime) -> dict:
    """Record each subscription's result; SENT when every live subscription has it."""
    delivered = [sid for sid, result in results.items() if result.status == "sent"]
    gone = [sid for sid, result in results.items() if result.status == "gone"]
    refused = [sid for sid, result in results.items() if result.status == "refused"]
    if gone:  # 404/410: the browser unsubscribed; never push to it again
        session.execute(text("DELETE FROM push_subscriptions WHERE id = ANY(CAST(:ids AS uuid[]))"), {"ids": gone})
    if refused:  # 400/403/413: this message will not go to that device; a broken one is dropped
        # Two statements: a DELETE in the same statement as the UPDATE would not see the new count.
        session.execute(text("UPDATE push_subscriptions SET failure_count = failure_count + 1 "
                             "WHERE id = ANY(CAST(:ids AS uuid[]))"), {"ids": refused})
        session.execute(text("DELETE FROM push_subscriptions WHERE id = ANY(CAST(:ids AS uuid[])) "
                             "AND failure_count >= :limit"), {"ids": refused, "limit": MAX_SUBSCRIPTION_FAILURES})
    if delivered:
        session.execute(text(
            "UPDATE push_subscriptions SET last_success_at = :now, failure_count = 0 "
            "WHERE id = ANY(CAST(:ids AS uuid[]))"), {"ids": delivered, "now": now})
        session.execute(text(
            "UPDATE deliveries SET delivered_to = delivered_to || CAST(:ids AS uuid[]) WHERE id = :id"),
            {"ids": delivered, "id": attempt.row_id})
    location = next((r.location for r in results.values() if r.location), None)
    if len(results) < len(attempt.subscriptions):
        return _outcome("partial", delivered=len(delivered), removed=len(gone))
    if not delivered and not attempt.delivered_before:
        reason = "every subscription is gone" if not refused else \
            "refused by the push service: " + "; ".join(results[sid].reply or "" for sid in refused)
        status = "skipped" if not refused else "failed"
        session.execute(_CLOSE_SQL, {"status": status, "error": reason, "id": attempt.row_id})
        return _outcome(status, reason=reason, removed=len(gone))
    session.execute(_SENT_SQL, {"id": attempt.row_id, "now": now, "provider": location})
    return _outcome("sent", channel="push", devices=len(delivered), removed=len(gone))


def requeue(session: Session, table: str, row_id: str, reply: str, *, now: datetime) -> None:
    """A temporary failure: back to QUEUED (the task's retry owns it), with the reply kept."""
    session.execute(text(f"UPDATE {table} SET status = 'queued', error = left(:error, 1000), claimed_at = :now "
                         f"WHERE id = :id AND status = 'sending'"), {"id": row_id, "error": reply, "now": now})


def fail(session: Session, table: str, row_id: str, reason: str) -> None:
    session.execute(text(f"UPDATE {table} SET status = 'failed', error = left(:error, 1000) "
                         f"WHERE id = :id AND status NOT IN ('sent', 'skipped', 'folded')"),
                    {"id": row_id, "error": reason})


SessionFactory = Callable[[], AbstractContextManager[Session]]


def hand_over(table: str, row_id: str, step: Callable[[], dict], *, sessions: SessionFactory,
              clock: Callable[[], datetime]) -> dict:
    """Steps 2–3 of a row marked SENDING: ``step`` hands it over and records the outcome.

    The provider's "later" puts the row back to QUEUED with the reply and propagates
    (the task retries); its "never" closes the row FAILED with the reply.
    """
    try:
        return step()
    except TemporaryFailure as exc:
        with sessions() as session:
            requeue(session, table, row_id, exc.reply, now=clock())
        raise
    except PermanentFailure as exc:
        with sessions() as session:
            fail(session, table, row_id, exc.message)
        return _outcome("failed", reason=exc.message)


def deliver(channel: str, delivery_id: str, *, sessions: SessionFactory, config: DeliveryConfig,
            clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> dict:
    """Steps 1–3 for one email or push delivery. ``TemporaryFailure`` propagates: the task retries."""
    config.require(channel)  # before SENDING: a row that never left must not look handed over
    with sessions() as session:
        attempt = begin(session, channel, delivery_id, now=clock(), config=config)
    if isinstance(attempt, dict):
        return attempt

    def send_email() -> dict:
        message = rendering.notification_email(
            notification=attempt.notification, to=attempt.to, msg_id=attempt.message_id,
            mail_from=config.mail_from, links=config.links, secret=config.unsubscribe_secret, sent_at=clock())
        reply = transports.send_email(config.smtp_url, message)
        with sessions() as session:
            return finish_email(session, attempt, reply, now=clock())

    def send_push() -> dict:
        results, retry_after = _push_all(attempt, config)
        with sessions() as session:
            outcome = finish_push(session, attempt, results, now=clock())
        if outcome["status"] == "partial":
            raise TemporaryFailure(f"{len(attempt.subscriptions) - len(results)} device(s) said later",
                                   retry_after)
        return outcome

    return hand_over("deliveries", delivery_id, send_email if channel == "email" else send_push,
                     sessions=sessions, clock=clock)


def _push_all(attempt: Attempt, config: DeliveryConfig) -> tuple[dict[str, transports.PushResult], float | None]:
    """Push to each subscription; a temporary failure on one does not stop the others.

    Returns each answered subscription's result and the longest Retry-After of the
    ones that said "later" (they are left out of the results and retried).
    """
    payload = rendering.push_payload(attempt.notification, config.links)
    vapid = transports.load_vapid(config.vapid_key)
    urgency = "high" if attempt.notification.get("priority") == "high" else "normal"
    results: dict[str, transports.PushResult] = {}
    retry_after: float | None = None
    for sub in attempt.subscriptions:
        info = {"endpoint": sub["endpoint"], "keys": {"p256dh": sub["p256dh"], "auth": sub["auth"]}}
        try:
            results[sub["id"]] = transports.send_push(info, payload, vapid_key=vapid, subject=config.vapid_subject,
                                                      topic=attempt.message_id, urgency=urgency,
                                                      ttl=policy.PUSH_TTL_SECONDS)
        except TemporaryFailure as exc:
            retry_after = max(retry_after or 0.0, exc.retry_after or 0.0) or retry_after
        except PermanentFailure as exc:
            results[sub["id"]] = transports.PushResult("refused", reply=exc.message)
    return results, retry_after
