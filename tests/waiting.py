"""Waiting for an explicit event with a deadline, never a fixed sleep.

A test that sleeps and then asserts "nothing happened yet" passes whenever the
machine is slow enough; these helpers poll for the event itself (a thread done,
a backend waiting on a lock) and fail loudly when the deadline passes.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import text

T = TypeVar("T")

# The query of a backend that waits on a lock the given backend holds.
_BLOCKED_SQL = text("SELECT query FROM pg_stat_activity WHERE :holder = ANY(pg_blocking_pids(pid)) LIMIT 1")


def wait_for(predicate: Callable[[], T], timeout: float = 30.0, pause: float = 0.05,
             what: str = "condition") -> T:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} not reached within {timeout}s")
        time.sleep(pause)


def blocked_by(engine, holder_pid: int, done: threading.Event, timeout: float = 30.0) -> str | None:
    """Wait until either some backend waits on a lock ``holder_pid`` holds (return that
    backend's query) or ``done`` is set (return None), whichever comes first."""
    def outcome():
        if done.is_set():
            return ("done", None)
        with engine.connect() as connection:
            query = connection.scalar(_BLOCKED_SQL, {"holder": holder_pid})
        return ("blocked", query) if query else None

    _kind, query = wait_for(outcome, timeout, pause=0.02, what=f"a wait on backend {holder_pid}, or the end")
    return query


def backend_pid(connection) -> int:
    """The server process id of a SQLAlchemy connection or session."""
    return connection.execute(text("SELECT pg_backend_pid()")).scalar_one()


def in_threads(*calls: Callable[[], T], timeout: float = 60.0) -> list[T]:
    """Run each call in a thread of its own, all at once; their results in order. The first
    exception any of them raised is raised here; a call still running after ``timeout`` fails."""
    results: list = [None] * len(calls)
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            results[index] = calls[index]()
        except BaseException as exc:  # noqa: BLE001 - re-raised below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(index,)) for index in range(len(calls))]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    if any(thread.is_alive() for thread in threads):
        raise AssertionError(f"a call was still running after {timeout}s")
    if errors:
        raise errors[0]
    return results
