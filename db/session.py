"""One engine per process, a session scope that commits once.

Prefork children inherit the parent's engine object after fork; sharing its
pooled sockets between processes corrupts the protocol stream, so the engine
is keyed by pid and a child builds its own (workers/lifecycle.py also disposes
it on worker_process_init).
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session, sessionmaker

_engine: Engine | None = None
_engine_pid: int | None = None
_session_factory: sessionmaker[Session] | None = None


def database_url() -> str:
    from workers.embedded import database_url as resolve

    return resolve()


def get_engine() -> Engine:
    global _engine, _engine_pid, _session_factory
    if _engine is None or _engine_pid != os.getpid():
        if _engine is not None:
            # Inherited from the parent: drop the references without closing
            # the parent's sockets.
            _engine.dispose(close=False)
        _engine = create_engine(
            database_url(),
            pool_size=int(os.environ.get("DB_POOL_SIZE", "5")),
            max_overflow=int(os.environ.get("DB_MAX_OVERFLOW", "5")),
            pool_pre_ping=True,
            pool_recycle=1800,
            connect_args={"application_name": os.environ.get("DB_APPLICATION_NAME", "social-jobs")},
        )
        _engine_pid = os.getpid()
        _session_factory = sessionmaker(_engine, expire_on_commit=False)
    return _engine


def reset_engine() -> None:
    """Forget the engine (after a fork, or when tests point DATABASE_URL elsewhere)."""
    global _engine, _engine_pid, _session_factory
    if _engine is not None:
        _engine.dispose(close=_engine_pid == os.getpid())
    _engine = _engine_pid = _session_factory = None


def new_session() -> Session:
    get_engine()
    assert _session_factory is not None
    return _session_factory()


@contextmanager
def session_scope() -> Iterator[Session]:
    """The task's one transaction: commit on success, roll back on any error."""
    session = new_session()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
