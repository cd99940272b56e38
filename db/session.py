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

import settings

_engine: Engine | None = None
_engine_pid: int | None = None
_session_factory: sessionmaker[Session] | None = None


def database_url() -> str:
    """DATABASE_URL with the psycopg 3 driver; a clear error when it is unset."""
    return settings.require_services("the database layer", ("DATABASE_URL",)).sqlalchemy_database_url


def get_engine() -> Engine:
    global _engine, _engine_pid, _session_factory
    if _engine is None or _engine_pid != os.getpid():
        if _engine is not None:
            # Inherited from the parent: drop the references without closing
            # the parent's sockets.
            _engine.dispose(close=False)
        found = settings.current()
        _engine = create_engine(
            database_url(),
            pool_size=found.db_pool_size,
            max_overflow=found.db_max_overflow,
            pool_pre_ping=True,
            pool_recycle=1800,
            # Statement parameters hold user content; keep them out of error messages and logs.
            hide_parameters=True,
            connect_args={"application_name": found.db_application_name},
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
