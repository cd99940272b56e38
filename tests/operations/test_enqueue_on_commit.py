"""enqueue_on_commit: a rolled-back transaction sends nothing; a committed one sends, after the commit."""
from __future__ import annotations

import time
import uuid

import pytest
from sqlalchemy import text

from tests.operations.conftest import wait_until

pytestmark = pytest.mark.integration


def heartbeat_exists(engine, name: str) -> bool:
    with engine.connect() as connection:
        return bool(connection.scalar(text("SELECT count(*) FROM job_heartbeats WHERE name = :n"), {"n": name}))


def test_rolled_back_transaction_enqueues_nothing(celery_worker, clean_db):
    from db.session import new_session
    from tasks.maintenance.tasks import canary
    from workers.reliability.enqueue import enqueue_on_commit, pending

    name = f"rb-{uuid.uuid4().hex[:8]}"
    session = new_session()
    try:
        session.execute(text("INSERT INTO job_heartbeats (name, last_success_at) VALUES (:n, now())"),
                        {"n": name + "-row"})
        enqueue_on_commit(session, canary.s(name))
        assert len(pending(session)) == 1
        session.rollback()
        assert pending(session) == []
        session.commit()  # a later, empty transaction must not resurrect the dropped task
    finally:
        session.close()
    # A control task sent afterwards completes, so the worker was there to run ours had it been sent.
    control = f"control-{uuid.uuid4().hex[:8]}"
    canary.delay(control).get(timeout=30)
    time.sleep(0.5)
    assert not heartbeat_exists(clean_db, name)
    assert not heartbeat_exists(clean_db, name + "-row")


def test_committed_transaction_sends_after_the_commit(celery_worker, clean_db):
    from db.session import new_session
    from tasks.maintenance.tasks import canary
    from workers.reliability.enqueue import enqueue_on_commit

    name = f"ok-{uuid.uuid4().hex[:8]}"
    session = new_session()
    try:
        session.execute(text("INSERT INTO job_heartbeats (name, last_success_at) VALUES (:n, now())"),
                        {"n": name + "-row"})
        enqueue_on_commit(session, canary.s(name))
        enqueue_on_commit(session, canary.s(name + "-second"))
        time.sleep(1.0)  # a worker is running: had it been sent already, it would have run by now
        assert not heartbeat_exists(clean_db, name)
        session.commit()
    finally:
        session.close()
    wait_until(lambda: heartbeat_exists(clean_db, name) and heartbeat_exists(clean_db, name + "-second"),
               timeout=30, what="both tasks ran after the commit")
    assert heartbeat_exists(clean_db, name + "-row")
