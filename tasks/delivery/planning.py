"""From settled notifications to claimed deliveries: what ``delivery.dispatch_due`` does each run.

1. ``plan_ripe`` takes a bounded chunk of ``delivery_due`` marks that have
   settled (high priority at once, normal after DELIVERY_SETTLE_SECONDS of
   quiet), deletes them with FOR UPDATE SKIP LOCKED (two dispatchers never plan
   one notification), and writes one ``pending`` delivery per enabled channel at
   the batch's current count (its version), due when the policy allows.
2. ``claim_due`` moves a bounded chunk of due ``pending`` rows to ``queued``,
   again SKIP LOCKED, and claims the digests ``send_digests`` built; the caller
   sends one task per claimed row after commit.
3. ``reclaim_stale`` re-sends rows whose task vanished (RECLAIM_AFTER).

Exactly once: the unique (notification, channel, version) key admits one
delivery per count, and a version at or below one already handled (sent,
skipped, folded, failed, or in flight) is never planned again.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import text
from sqlalchemy.orm import Session

from tasks.delivery import policy


@dataclass(frozen=True)
class Transports:
    """Which channels this deployment can send on (SMTP_URL, VAPID_PRIVATE_KEY set)."""

    email: bool
    push: bool

    def channels(self) -> tuple[str, ...]:
        return tuple(c for c, on in (("email", self.email), ("push", self.push)) if on)


_TAKE_RIPE_SQL = text("""
DELETE FROM delivery_due AS d
WHERE d.notification_id IN (
  SELECT notification_id FROM delivery_due
  WHERE high OR quiet_since <= :settled_before
  ORDER BY quiet_since LIMIT :chunk FOR UPDATE SKIP LOCKED)
RETURNING d.notification_id::text
""")

# Everything the policy needs about a chunk of notifications, in one round trip.
# "done": the highest version already handled per channel (pending rows are the ones
# being re-planned). "last": when this batch last went out on the channel.
_FACTS_SQL = text("""
SELECT n.id::text, n.user_id, n.type, n.read, n.parent_id IS NOT NULL AS merged, n.batch_count,
       coalesce(n.batch_key, n.id::text) AS batch,
       s.email_enabled, s.timezone, s.quiet_start, s.quiet_end,
       EXISTS (SELECT 1 FROM push_subscriptions AS p WHERE p.user_id = n.user_id) AS has_push,
       (SELECT max(d.version) FROM deliveries AS d
        WHERE d.notification_id = n.id AND d.channel = 'email' AND d.status <> 'pending') AS email_done,
       (SELECT max(d.version) FROM deliveries AS d
        WHERE d.notification_id = n.id AND d.channel = 'push' AND d.status <> 'pending') AS push_done,
       (SELECT max(coalesce(d.sent_at, d.claimed_at)) FROM deliveries AS d
        WHERE d.user_id = n.user_id AND d.batch_key = coalesce(n.batch_key, n.id::text) AND d.channel = 'email'
          AND d.status IN ('queued', 'sending', 'sent')) AS email_last,
       (SELECT max(coalesce(d.sent_at, d.claimed_at)) FROM deliveries AS d
        WHERE d.user_id = n.user_id AND d.batch_key = coalesce(n.batch_key, n.id::text) AND d.channel = 'push'
          AND d.status IN ('queued', 'sending', 'sent')) AS push_last
FROM notifications AS n
LEFT JOIN notification_settings AS s ON s.user_id = n.user_id
WHERE n.id = ANY(CAST(:ids AS uuid[]))
""")

_PREFERENCES_SQL = text("""
SELECT user_id, notification_type, channel, enabled FROM notification_preferences
WHERE user_id = ANY(CAST(:users AS integer[]))
""")

# The partial unique index admits one pending row per (notification, channel): a
# batch that grew while its delivery waited moves that row to the new version.
_UPSERT_PENDING_SQL = text("""
INSERT INTO deliveries (notification_id, user_id, channel, version, batch_key, status, due_at)
SELECT notification_id, user_id, channel, version, batch_key, 'pending', due_at
FROM unnest(CAST(:ids AS uuid[]), CAST(:users AS integer[]), CAST(:channels AS text[]),
            CAST(:versions AS integer[]), CAST(:batches AS text[]), CAST(:dues AS timestamptz[]))
     AS v(notification_id, user_id, channel, version, batch_key, due_at)
ON CONFLICT (notification_id, channel) WHERE status = 'pending'
DO UPDATE SET version = EXCLUDED.version, due_at = EXCLUDED.due_at, batch_key = EXCLUDED.batch_key
""")

_SKIP_READ_SQL = text("""
WITH superseded AS (
  UPDATE deliveries SET status = 'skipped', error = 'read before it was due'
  WHERE notification_id = ANY(CAST(:ids AS uuid[])) AND status = 'pending'
  RETURNING 1
)
INSERT INTO deliveries (notification_id, user_id, channel, version, batch_key, status, due_at, error)
SELECT notification_id, user_id, channel, version, batch_key, 'skipped', :now, 'read before it was due'
FROM unnest(CAST(:ids AS uuid[]), CAST(:users AS integer[]), CAST(:channels AS text[]),
            CAST(:versions AS integer[]), CAST(:batches AS text[]))
     AS v(notification_id, user_id, channel, version, batch_key)
ON CONFLICT DO NOTHING
""")


@dataclass
class PlanResult:
    taken: int = 0
    planned: int = 0
    skipped_read: int = 0

    def as_dict(self) -> dict:
        return {"taken": self.taken, "planned": self.planned, "skipped_read": self.skipped_read}


def _columns(rows: list[tuple]) -> dict:
    names = ("ids", "users", "channels", "versions", "batches")
    return {name: [row[i] for row in rows] for i, name in enumerate(names)}


def plan_ripe(session: Session, *, now: datetime, settle_seconds: float, chunk: int,
              transports: Transports) -> PlanResult:
    """Plan one chunk of settled notifications into pending deliveries. The caller commits.

    A process that can send on no channel leaves the marks alone: a worker started
    without SMTP_URL and VAPID_PRIVATE_KEY must not consume what a configured one would send.
    """
    if not transports.channels():
        return PlanResult()
    ids = session.execute(_TAKE_RIPE_SQL, {
        "settled_before": now - timedelta(seconds=settle_seconds), "chunk": chunk}).scalars().all()
    result = PlanResult(taken=len(ids))
    if not ids:
        return result
    facts = session.execute(_FACTS_SQL, {"ids": list(ids)}).mappings().all()
    preferences: dict[int, dict[tuple[str, str], bool]] = {}
    for user_id, kind, channel, enabled in session.execute(
            _PREFERENCES_SQL, {"users": sorted({f["user_id"] for f in facts})}):
        preferences.setdefault(user_id, {})[(kind, channel)] = enabled
    planned, dues, read = [], [], []
    for fact in facts:
        if fact["merged"]:
            continue  # a single that became a batch child: its parent carries the news
        for channel in transports.channels():
            if not _wanted(fact, channel, preferences.get(fact["user_id"], {})):
                continue
            if (fact[f"{channel}_done"] or 0) >= fact["batch_count"]:
                continue  # this count (or a higher one) was already handled
            row = (fact["id"], fact["user_id"], channel, fact["batch_count"], fact["batch"])
            if fact["read"]:
                read.append(row)
                continue
            quiet_end = policy.quiet_until(now, fact["timezone"], fact["quiet_start"], fact["quiet_end"])
            planned.append(row)
            dues.append(policy.due_at(now, channel=channel, last_sent=fact[f"{channel}_last"],
                                      quiet_end=quiet_end))
    if planned:
        session.execute(_UPSERT_PENDING_SQL, {**_columns(planned), "dues": dues})
    if read:
        session.execute(_SKIP_READ_SQL, {**_columns(read), "now": now})
    result.planned, result.skipped_read = len(planned), len(read)
    return result


def _wanted(fact, channel: str, preferences: dict) -> bool:
    if not policy.channel_enabled(fact["type"], channel, preferences):
        return False
    if channel == "email":
        return fact["email_enabled"] is not False  # no settings row: email on
    return bool(fact["has_push"])


_CLAIM_SQL = text("""
UPDATE deliveries SET status = 'queued', claimed_at = :now
WHERE id IN (SELECT id FROM deliveries WHERE status = 'pending' AND due_at <= :now
             ORDER BY due_at LIMIT :chunk FOR UPDATE SKIP LOCKED)
RETURNING channel, id::text
""")

_RECLAIM_SQL = text("""
WITH stale_deliveries AS (
  UPDATE deliveries SET claimed_at = :now
  WHERE id IN (SELECT id FROM deliveries WHERE status IN ('queued', 'sending') AND claimed_at < :before
               ORDER BY claimed_at LIMIT :chunk FOR UPDATE SKIP LOCKED)
  RETURNING channel, id::text
), stale_digests AS (
  UPDATE digests SET claimed_at = :now
  WHERE id IN (SELECT id FROM digests WHERE status IN ('queued', 'sending') AND claimed_at < :before
               ORDER BY claimed_at LIMIT :chunk FOR UPDATE SKIP LOCKED)
  RETURNING 'digest', id::text
)
SELECT * FROM stale_deliveries UNION ALL SELECT * FROM stale_digests
""")


_CLAIM_DIGESTS_SQL = text("""
UPDATE digests SET claimed_at = :now
WHERE id IN (SELECT id FROM digests WHERE status = 'queued' AND claimed_at IS NULL
             ORDER BY created_at LIMIT :chunk FOR UPDATE SKIP LOCKED)
RETURNING 'digest', id::text
""")


def claim_due(session: Session, *, now: datetime, chunk: int) -> list[tuple[str, str]]:
    """Claim due pending deliveries, else new digests: [(channel or "digest", id)], at most ``chunk``.
    Send their tasks after commit."""
    claimed = [tuple(row) for row in session.execute(_CLAIM_SQL, {"now": now, "chunk": chunk})]
    if len(claimed) < chunk:
        claimed += [tuple(row) for row in session.execute(
            _CLAIM_DIGESTS_SQL, {"now": now, "chunk": chunk - len(claimed)})]
    return claimed


def reclaim_stale(session: Session, *, now: datetime, chunk: int) -> list[tuple[str, str]]:
    """Claimed rows whose task never finished: [("email"|"push"|"digest", id)] to send again."""
    return [tuple(row) for row in session.execute(
        _RECLAIM_SQL, {"now": now, "before": now - policy.RECLAIM_AFTER, "chunk": chunk})]


DELIVERY_LAG_PROBLEM = timedelta(minutes=5)

_BACKLOG_SQL = text("""
SELECT (SELECT count(*) FROM deliveries WHERE status = 'pending' AND due_at <= :now) AS due,
       (SELECT extract(epoch FROM :now - min(due_at)) FROM deliveries
        WHERE status = 'pending' AND due_at <= :now) AS overdue_seconds,
       (SELECT count(*) FROM deliveries WHERE status IN ('queued', 'sending')) AS in_flight,
       (SELECT count(*) FROM deliveries WHERE status = 'failed' AND created_at > :now - interval '1 hour')
         AS failed_last_hour
""")


def backlog(session: Session, *, now: datetime) -> dict:
    """For ``python -m workers status``: due rows not yet claimed, the oldest one's lag, in flight, failed."""
    row = session.execute(_BACKLOG_SQL, {"now": now}).mappings().one()
    return {"due": row["due"], "overdue_seconds": round(float(row["overdue_seconds"] or 0)),
            "in_flight": row["in_flight"], "failed_last_hour": row["failed_last_hour"]}
