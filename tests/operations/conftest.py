"""Helpers for the operations tests: raw kombu publishing, dead-letter queries, waiting."""
from __future__ import annotations

import json
import socket
import time
import uuid

import pytest
from sqlalchemy import text


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate, timeout: float = 30.0, interval: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def task_headers(name: str, task_id: str | None = None, retries: int = 0) -> dict:
    task_id = task_id or str(uuid.uuid4())
    return {"lang": "py", "task": name, "id": task_id, "shadow": None, "eta": None, "expires": None,
            "group": None, "group_index": None, "retries": retries, "timelimit": [None, None],
            "root_id": task_id, "parent_id": None, "argsrepr": "", "kwargsrepr": "", "origin": "test",
            "ignore_result": False}


EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def json_body(args=(), kwargs=None) -> bytes:
    return json.dumps([list(args), kwargs or {}, EMBED]).encode()


def publish_raw(app, body: bytes, headers: dict | None, queue: str = "maintenance",
                content_type: str = "application/json", broker_url: str | None = None) -> None:
    """Publish exactly these bytes with these headers, as a buggy or hostile client could."""
    from kombu import Connection, Producer

    with Connection(broker_url or app.conf.broker_url) as connection:
        producer = Producer(connection.default_channel)
        # The exchange by name, undeclared: the worker declared it (direct on Redis, topic on RabbitMQ).
        producer.publish(body, exchange=queue, routing_key=queue,
                         headers=headers or {}, content_type=content_type, content_encoding="utf-8",
                         serializer=None, retry=True)


def dead_letter(engine, task_id: str) -> dict | None:
    with engine.connect() as connection:
        row = connection.execute(text("SELECT * FROM dead_letters WHERE task_id = :id"), {"id": task_id})
        found = row.mappings().first()
        return dict(found) if found else None


def dead_letter_count(engine) -> int:
    with engine.connect() as connection:
        return connection.scalar(text("SELECT count(*) FROM dead_letters"))


@pytest.fixture
def chaos_dir(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    return tmp_path


@pytest.fixture
def serves_noop(celery_app):
    """Check that a worker still answers: a maintenance.noop round trip."""
    def check(timeout: float = 30.0) -> bool:
        return celery_app.send_task("maintenance.noop").get(timeout=timeout) is None
    return check


