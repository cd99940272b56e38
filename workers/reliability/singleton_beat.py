"""Singleton beat: a scheduler that only dispatches while it holds a PostgreSQL advisory lock
and a lease it keeps renewing.

Two ``celery beat`` processes started by mistake (a second deploy, a forgotten
terminal) would each fire every entry, so each periodic job would run twice
per interval. This scheduler ticks only while it holds
``pg_try_advisory_lock(BEAT_LOCK_KEY)`` on a dedicated autocommit connection;
the other beat idles, retrying the lock every ``LOCK_RETRY_S`` seconds, and
takes over within that time if the leader dies (PostgreSQL releases a
session lock when its connection goes away).

A leader whose *host* hangs or is cut off is not dead to PostgreSQL: its
connection, and the lock, live until TCP gives up, which can take hours. So the
leader also holds a lease (``db/heartbeats.py``, renewed on the lock connection
every tick, at least every third of ``LEASE_S``). A standby that finds the lease
older than ``LEASE_S`` terminates the leader's backend (``pg_terminate_backend``)
and takes the lock: takeover within ``LEASE_S + LOCK_RETRY_S`` of the leader's
last renewal. A leader renews right before every dispatch; if its connection was
terminated or the lease has another owner, it stops dispatching and becomes a
standby. The lock connection also sets TCP keepalives and ``tcp_user_timeout``
on both ends, so neither side waits on a dead peer for longer than about a lease.

Each dispatch is written to ``job_heartbeats`` as ``beat:<entry name>``. That
gives the exporter and ``status`` the last successful dispatch per entry, and
lets a new leader continue the previous leader's timetable instead of its own
(each beat has its own local schedule file), so a takeover does not fire an
entry early a second time.

PostgreSQL rather than RedBeat: the lock lives where the data lives and needs no
extra dependency.
"""
from __future__ import annotations

import logging
import os
import socket
import uuid
from datetime import datetime, timezone

from celery.beat import PersistentScheduler

import settings
from db.heartbeats import (BEAT_DISPATCH_PREFIX, beat_dispatches, claim_beat_lease, record_heartbeat,
                           renew_beat_lease, terminate_stale_lease_holder)
from db.locks import key_sql, lock_key
from db.session import session_scope

log = logging.getLogger("workers.reliability.singleton_beat")

# A session-level lock (it must outlive transactions: it is held for as long as
# this beat leads), so it cannot use db/locks.py's transaction-scoped helpers; its
# key is still a namespaced text key hashed the same way.
BEAT_LOCK_KEY = lock_key("beat.singleton")
LOCK_RETRY_S = settings.current().beat_lock_retry_seconds
LEASE_S = settings.current().beat_lease_seconds


def _libpq_url() -> str:
    return settings.require_services("beat", ("DATABASE_URL",)).libpq_database_url


def lock_connection_options(lease_s: float = LEASE_S) -> dict:
    """libpq parameters of the lock connection: a dead peer is noticed within about a lease.

    Client side (keepalives*, tcp_user_timeout) the leader's statements fail instead of
    hanging on a server it cannot reach; server side (the same settings passed as ``-c``
    options) PostgreSQL drops the session, and the lock, of a client that vanished.
    Both are ignored on Unix sockets, where the peer cannot vanish without the host.
    """
    probe_s = max(1, int(lease_s // 3))
    timeout_ms = int(lease_s * 1000)
    server = {"tcp_keepalives_idle": probe_s, "tcp_keepalives_interval": probe_s, "tcp_keepalives_count": 3,
              # Room for terminate_stale_lease_holder's wait for the old backend to exit.
              "tcp_user_timeout": timeout_ms, "statement_timeout": max(timeout_ms, 5000)}
    return {"keepalives": 1, "keepalives_idle": probe_s, "keepalives_interval": probe_s, "keepalives_count": 3,
            "tcp_user_timeout": timeout_ms, "connect_timeout": 5, "application_name": "social-jobs-beat-lock",
            "options": " ".join(f"-c {name}={value}" for name, value in server.items())}


class SingletonScheduler(PersistentScheduler):
    def __init__(self, *args, **kwargs):
        self._lock_conn = None
        self._leading = False
        self._owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        super().__init__(*args, **kwargs)

    # --- the lock and the lease ----------------------------------------------
    def _drop_connection(self) -> None:
        if self._lock_conn is not None:
            try:
                self._lock_conn.close()
            except Exception:  # noqa: BLE001
                pass
        self._lock_conn = None
        if self._leading:
            log.warning("beat lost the singleton lock or its lease; pausing dispatch until it is re-acquired")
        self._leading = False

    def holds_lock(self) -> bool:
        """True while this process may dispatch: renews the lease when leading, else tries to
        take the lock (terminating a leader whose lease went stale)."""
        import psycopg

        try:
            if self._lock_conn is None or self._lock_conn.closed:
                self._lock_conn = psycopg.connect(_libpq_url(), autocommit=True, **lock_connection_options())
            if self._leading:
                # Fails if a standby terminated this connection or took the lease over, and if
                # a restarted PostgreSQL could have handed the lock to the other beat already.
                if renew_beat_lease(self._lock_conn, self._owner):
                    return True
                log.warning("beat lease was taken over by another beat")
                self._drop_connection()
                return False
            if not (self._try_lock() or (self._end_stale_lease() and self._try_lock())):
                return False
            claim_beat_lease(self._lock_conn, self._owner, LEASE_S)
        except Exception as exc:  # noqa: BLE001 - database down: nobody dispatches
            log.warning("beat singleton lock unavailable: %s", exc)
            self._drop_connection()
            return False
        self._leading = True
        self._continue_leaders_timetable()
        log.info("beat acquired the singleton lock; dispatching", extra={"beat_owner": self._owner})
        return True

    def _try_lock(self) -> bool:
        return self._lock_conn.execute(f"SELECT pg_try_advisory_lock({key_sql('%s')})",
                                       (BEAT_LOCK_KEY,)).fetchone()[0]

    def _end_stale_lease(self) -> bool:
        ended = terminate_stale_lease_holder(self._lock_conn, BEAT_LOCK_KEY)
        for lease in ended:
            log.warning("terminated the database session of beat leader %s: lease not renewed for %.1f s",
                        lease["owner"], lease["age_s"], extra={"terminated_pid": lease["pid"]})
        return any(lease["terminated"] for lease in ended)

    def _continue_leaders_timetable(self) -> None:
        try:
            with session_scope() as session:
                dispatched = beat_dispatches(session)
        except Exception as exc:  # noqa: BLE001
            log.warning("could not read previous dispatch times: %s", exc)
            return
        for name, entry in self.schedule.items():
            at = dispatched.get(name)
            if at is not None and (entry.last_run_at is None or at > _aware(entry.last_run_at)):
                entry.last_run_at = at
        self._heap = None  # rebuild the heap from the adjusted entries

    # --- the scheduler ------------------------------------------------------
    def tick(self, *args, **kwargs):
        if not self.holds_lock():
            return min(LOCK_RETRY_S, self.max_interval)
        # Wake at least every third of the lease to renew it, however far the next entry is.
        return min(super().tick(*args, **kwargs), LEASE_S / 3)

    def apply_async(self, entry, producer=None, advance=True, **kwargs):
        # Checked again right before the send: a leader paused (SIGSTOP, a hung VM) between
        # its tick's renewal and this send may have been replaced meanwhile.
        if not (self._leading and self.holds_lock()):
            log.warning("not sending %s: this beat no longer leads", entry.name)
            return None
        result = super().apply_async(entry, producer=producer, advance=advance, **kwargs)
        self._record_dispatch(entry.name, getattr(result, "id", None))
        return result

    def _record_dispatch(self, name: str, task_id: str | None) -> None:
        try:
            with session_scope() as session:
                record_heartbeat(session, BEAT_DISPATCH_PREFIX + name, {"task_id": task_id})
        except Exception as exc:  # noqa: BLE001 - the dispatch itself succeeded
            log.warning("could not record the dispatch of %s: %s", name, exc)

    def close(self):
        super().close()
        if self._leading:
            log.info("beat stopping; releasing the singleton lock")
            self._leading = False
        self._drop_connection()


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo is not None else at.replace(tzinfo=timezone.utc)
