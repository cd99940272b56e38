"""Singleton beat: a scheduler that only dispatches while it holds a PostgreSQL advisory lock.

Two ``celery beat`` processes started by mistake (a second deploy, a forgotten
terminal) would each fire every entry, so each periodic job would run twice
per interval. This scheduler ticks only while it holds
``pg_try_advisory_lock(BEAT_LOCK_KEY)`` on a dedicated autocommit connection;
the other beat idles, retrying the lock every ``LOCK_RETRY_S`` seconds, and
takes over within that time if the leader dies (PostgreSQL releases a
session lock when its connection goes away).

Each dispatch is written to ``job_heartbeats`` as ``beat:<entry name>``. That
gives the exporter and ``status`` the last successful dispatch per entry, and
lets a new leader continue the previous leader's timetable instead of its own
(each beat has its own local schedule file), so a takeover does not fire an
entry early a second time.

PostgreSQL rather than RedBeat: the lock lives where the data lives, needs no
extra dependency, and the lock's lifetime is the connection's, so no expiry
has to be tuned against beat's loop interval.
"""
from __future__ import annotations

import logging
from datetime import datetime, timezone

from celery.beat import PersistentScheduler

import settings
from db.heartbeats import BEAT_DISPATCH_PREFIX, beat_dispatches, record_heartbeat
from db.locks import key_sql, lock_key
from db.session import session_scope

log = logging.getLogger("workers.reliability.singleton_beat")

# A session-level lock (it must outlive transactions: it is held for as long as
# this beat leads), so it cannot use db/locks.py's transaction-scoped helpers; its
# key is still a namespaced text key hashed the same way.
BEAT_LOCK_KEY = lock_key("beat.singleton")
LOCK_RETRY_S = settings.current().beat_lock_retry_seconds


def _libpq_url() -> str:
    return settings.require_services("beat", ("DATABASE_URL",)).libpq_database_url


class SingletonScheduler(PersistentScheduler):
    def __init__(self, *args, **kwargs):
        self._lock_conn = None
        self._leading = False
        super().__init__(*args, **kwargs)

    # --- the lock ---------------------------------------------------------
    def _drop_connection(self) -> None:
        if self._lock_conn is not None:
            try:
                self._lock_conn.close()
            except Exception:  # noqa: BLE001
                pass
        self._lock_conn = None
        if self._leading:
            log.warning("beat lost the singleton lock; pausing dispatch until it is re-acquired")
        self._leading = False

    def holds_lock(self) -> bool:
        """True while this process may dispatch; (re)acquires the lock when free."""
        import psycopg

        try:
            if self._lock_conn is None or self._lock_conn.closed:
                self._lock_conn = psycopg.connect(_libpq_url(), autocommit=True, connect_timeout=5,
                                                  application_name="social-jobs-beat-lock")
            if self._leading:
                # The lock lives as long as this connection; prove it is alive
                # before every dispatch, or a restarted PostgreSQL could have
                # handed the lock to the other beat already.
                self._lock_conn.execute("SELECT 1")
                return True
            acquired = self._lock_conn.execute(f"SELECT pg_try_advisory_lock({key_sql('%s')})",
                                               (BEAT_LOCK_KEY,)).fetchone()[0]
        except Exception as exc:  # noqa: BLE001 - database down: nobody dispatches
            log.warning("beat singleton lock unavailable: %s", exc)
            self._drop_connection()
            return False
        if acquired:
            self._leading = True
            self._continue_leaders_timetable()
            log.info("beat acquired the singleton lock; dispatching")
        return self._leading

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
        return super().tick(*args, **kwargs)

    def apply_async(self, entry, producer=None, advance=True, **kwargs):
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


