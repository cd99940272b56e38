"""Heartbeats: the time each periodic job last succeeded, and each beat entry was last dispatched.

One row per name in ``job_heartbeats``; ``status`` and the exporter read them,
the singleton beat resumes its predecessor's timetable from them. The row
``lease:beat`` is the leading beat's lease (see the end of this module).
"""
from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from db.models import JobHeartbeat

BEAT_DISPATCH_PREFIX = "beat:"


def record_heartbeat(session: Session, name: str, result: dict | None = None,
                     at: datetime | None = None) -> None:
    at = at or datetime.now(timezone.utc)
    statement = insert(JobHeartbeat).values(name=name, last_success_at=at, last_result=result)
    session.execute(statement.on_conflict_do_update(
        index_elements=[JobHeartbeat.name],
        set_={"last_success_at": statement.excluded.last_success_at,
              "last_result": statement.excluded.last_result}))


def heartbeats(session: Session, prefix: str | None = None) -> dict[str, datetime]:
    query = select(JobHeartbeat.name, JobHeartbeat.last_success_at)
    if prefix is not None:
        query = query.where(JobHeartbeat.name.startswith(prefix, autoescape=True))
    return {name: at for name, at in session.execute(query).all()}


def beat_dispatches(session: Session) -> dict[str, datetime]:
    """{schedule entry name: last dispatch}, as recorded by the singleton beat."""
    return {name[len(BEAT_DISPATCH_PREFIX):]: at
            for name, at in heartbeats(session, BEAT_DISPATCH_PREFIX).items()}


# --- The singleton beat's lease ------------------------------------------------------------
# One job_heartbeats row: last_success_at is the leader's last renewal (PostgreSQL's clock,
# so the hosts' clocks never matter), last_result names the owner and the lease it promised
# to renew within. These run on the beat's own autocommit lock connection (a plain psycopg
# connection, not a Session): a renewal that succeeds proves that connection, and so the
# session-level advisory lock, is still alive.
BEAT_LEASE = "lease:beat"


def claim_beat_lease(connection, owner: str, lease_seconds: float) -> None:
    """Make ``owner`` the lease holder; only the holder of the beat's advisory lock calls this."""
    connection.execute(
        "INSERT INTO job_heartbeats (name, last_success_at, last_result) "
        "VALUES (%(name)s, now(), jsonb_build_object('owner', %(owner)s::text, "
        "'lease_seconds', %(lease)s::float8, 'backend_pid', pg_backend_pid())) "
        "ON CONFLICT (name) DO UPDATE SET last_success_at = excluded.last_success_at, "
        "last_result = excluded.last_result",
        {"name": BEAT_LEASE, "owner": owner, "lease": lease_seconds})


def renew_beat_lease(connection, owner: str) -> bool:
    """Extend the lease; False if another beat has taken it over."""
    renewed = connection.execute(
        "UPDATE job_heartbeats SET last_success_at = now() "
        "WHERE name = %(name)s AND last_result->>'owner' = %(owner)s",
        {"name": BEAT_LEASE, "owner": owner})
    return renewed.rowcount == 1


def terminate_stale_lease_holder(connection, lock_key: str, wait_ms: int = 2000) -> list[dict]:
    """Terminate the backend holding the session advisory lock ``lock_key`` if the lease
    has not been renewed within its own lease_seconds; the leases ended, as dicts.

    A leader whose host hangs or is cut off keeps its connection, and with it the lock, until
    TCP gives up. pg_locks shows a 64-bit advisory key as classid (high half) and objid
    (low half), objsubid 1. ``pg_terminate_backend(pid, wait_ms)`` waits for the backend to
    exit, so the lock is free when this returns. The same role may terminate its own
    backends; another role needs pg_signal_backend.
    """
    rows = connection.execute(
        "WITH k AS (SELECT hashtextextended(%(key)s, 0) AS key) "
        "SELECT l.pid, h.last_result->>'owner' AS owner, "
        "       extract(epoch FROM now() - h.last_success_at)::float8 AS age_s, "
        "       pg_terminate_backend(l.pid, %(wait)s) AS terminated "
        "FROM k, job_heartbeats h, pg_locks l "
        "WHERE h.name = %(name)s "
        "  AND now() > h.last_success_at + make_interval(secs => (h.last_result->>'lease_seconds')::float8) "
        "  AND l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
        "  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
        "  AND l.classid = ((k.key >> 32) & 4294967295)::oid AND l.objid = (k.key & 4294967295)::oid "
        "  AND l.pid <> pg_backend_pid()",
        {"key": lock_key, "name": BEAT_LEASE, "wait": wait_ms}).fetchall()
    return [{"pid": pid, "owner": owner, "age_s": age, "terminated": terminated}
            for pid, owner, age, terminated in rows]
