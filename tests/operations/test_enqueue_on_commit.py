"""enqueue_on_commit: a rolled-back transaction sends nothing; a committed one sends, after the commit."""
from __future__ import annotations

import time
import uuid

import pytest
import redis
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


# --- Savepoints: inspected in a broker queue no worker consumes ---------------------------

def queued_canaries(client) -> list[str]:
    """First argument of every maintenance.canary message waiting in the broker, oldest first."""
    import base64
    import json

    # kombu's Redis transport LPUSHes (the oldest is last) an envelope whose body is base64.
    messages = [json.loads(raw) for raw in reversed(client.lrange("maintenance", 0, -1))]
    return [json.loads(base64.b64decode(m["body"]))[0][0] for m in messages
            if m["headers"]["task"] == "maintenance.canary" and m["properties"]["body_encoding"] == "base64"]


def queued_args(isolated) -> list[str]:
    return queued_canaries(redis.Redis.from_url(isolated.broker_url))


@pytest.fixture
def enqueuing(isolated, clean_db):
    """A session and a signature factory whose tasks land in the isolated broker (no worker on it)."""
    from db.session import new_session
    from workers.reliability.enqueue import enqueue_on_commit

    session = new_session()

    def enqueue(name: str) -> None:
        enqueue_on_commit(session, isolated.app.signature("maintenance.canary", args=[name]))

    try:
        yield session, enqueue
    finally:
        session.close()


def test_a_released_savepoint_sends_nothing_before_the_outer_commit(enqueuing, isolated):
    from workers.reliability.enqueue import pending

    session, enqueue = enqueuing
    session.execute(text("SELECT 1"))
    enqueue("outer")
    with session.begin_nested():
        enqueue("in-savepoint")
    assert queued_args(isolated) == [], "sent when the savepoint was released"
    assert [s.args[0] for s in pending(session)] == ["outer", "in-savepoint"]
    session.commit()
    assert queued_args(isolated) == ["outer", "in-savepoint"]
    assert pending(session) == []


def test_a_rolled_back_savepoint_drops_only_its_own_tasks(enqueuing, isolated):
    from workers.reliability.enqueue import pending

    session, enqueue = enqueuing
    enqueue("outer-before")  # queued before any SQL: adopted by the autobegun transaction
    session.execute(text("SELECT 1"))
    savepoint = session.begin_nested()
    enqueue("doomed")
    savepoint.rollback()
    assert [s.args[0] for s in pending(session)] == ["outer-before"]
    enqueue("outer-after")
    session.commit()
    assert queued_args(isolated) == ["outer-before", "outer-after"]


def test_nested_savepoints_each_level_keeps_or_drops_its_own(enqueuing, isolated):
    session, enqueue = enqueuing
    session.execute(text("SELECT 1"))
    enqueue("root")
    with session.begin_nested():
        enqueue("middle")
        inner = session.begin_nested()
        enqueue("inner-rolled-back")
        inner.rollback()
        with session.begin_nested():
            enqueue("inner-released")
    assert queued_args(isolated) == []
    session.commit()
    assert queued_args(isolated) == ["root", "middle", "inner-released"]


def test_an_outer_rollback_drops_tasks_of_released_savepoints(enqueuing, isolated):
    from workers.reliability.enqueue import pending

    session, enqueue = enqueuing
    session.execute(text("SELECT 1"))
    enqueue("root")
    with session.begin_nested():
        enqueue("released")
    session.rollback()
    assert pending(session) == []
    session.execute(text("SELECT 1"))
    session.commit()  # a later transaction must not resurrect them
    assert queued_args(isolated) == []


def test_close_without_commit_sends_nothing(enqueuing, isolated):
    from workers.reliability.enqueue import pending

    session, enqueue = enqueuing
    session.execute(text("SELECT 1"))
    enqueue("abandoned")
    session.close()
    assert pending(session) == []
    session.execute(text("SELECT 1"))
    session.commit()
    assert queued_args(isolated) == []


# --- The broker down at commit ---------------------------------------------------------------

@pytest.fixture
def private_broker(tmp_path):
    import os

    from tests.operations.chaos import PrivateRedis, make_app
    from tests.operations.conftest import free_port

    server = PrivateRedis(tmp_path / "redis", free_port())
    server.start()
    try:
        # Results stay on the session's Redis: only the broker goes down.
        yield server, make_app(server.url + "/0", os.environ["RESULT_BACKEND"])
    finally:
        server.stop(graceful=False)


def insert_row_and_enqueue(app, name: str):
    from db.session import new_session
    from workers.reliability.enqueue import enqueue_on_commit

    session = new_session()
    session.execute(text("INSERT INTO job_heartbeats (name, last_success_at) VALUES (:n, now())"),
                    {"n": name + "-row"})
    enqueue_on_commit(session, app.signature("maintenance.canary", args=[name]))
    return session


def test_broker_down_briefly_at_commit_the_send_retries_and_nothing_is_lost(clean_db, private_broker):
    import threading

    server, app = private_broker
    name = f"bd-{uuid.uuid4().hex[:8]}"
    session = insert_row_and_enqueue(app, name)
    server.stop(graceful=True)
    # Back within the send's retry window (SEND_RETRY_POLICY: ~6 s in all).
    restarter = threading.Timer(1.5, server.start)
    restarter.start()
    try:
        started = time.monotonic()
        session.commit()
        waited = time.monotonic() - started
    finally:
        restarter.join()
        session.close()
    assert heartbeat_exists(clean_db, name + "-row")
    assert waited >= 1.0, "the commit returned before the broker was back: the task was not sent"
    assert queued_canaries(server.client(0)) == [name]


def test_broker_down_through_the_retries_the_commit_stands_and_the_task_is_logged(clean_db, private_broker,
                                                                                   caplog):
    import logging

    from workers.reliability.enqueue import SEND_RETRY_POLICY

    server, app = private_broker
    name = f"bdl-{uuid.uuid4().hex[:8]}"
    session = insert_row_and_enqueue(app, name)
    server.stop(graceful=True)
    caplog.set_level(logging.ERROR, logger="workers.reliability.enqueue")
    started = time.monotonic()
    try:
        session.commit()  # must not raise: the transaction is already committed
    finally:
        session.close()
    waited = time.monotonic() - started
    assert heartbeat_exists(clean_db, name + "-row")
    unsent = [r for r in caplog.records if getattr(r, "unsent_task", None) == "maintenance.canary"]
    assert len(unsent) == 1, caplog.text
    assert unsent[0].task_id, "the error must name the unsent task's id"  # frozen before the send
    # It did retry before giving up, and gave up within the policy's bound (plus connect timeouts).
    assert waited >= SEND_RETRY_POLICY["interval_start"]
    assert waited < 30
