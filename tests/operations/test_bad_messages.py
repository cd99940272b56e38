"""Bad messages published raw with kombu to the real broker: each is refused with a log
line and a dead letter, and the worker keeps serving."""
from __future__ import annotations

import json
import logging
import pickle
import uuid

import pytest

from tests.operations.conftest import dead_letter, json_body, publish_raw, task_headers, wait_until

pytestmark = pytest.mark.integration


def _letter(engine, task_id):
    return wait_until(lambda: dead_letter(engine, task_id), timeout=30, what=f"dead letter {task_id}")


def test_unknown_task_name(celery_worker, clean_db, serves_noop, caplog):
    headers = task_headers("images.does_not_exist")
    publish_raw(celery_worker.app, json_body([1, 2]), headers)
    letter = _letter(clean_db, headers["id"])
    assert letter["error_code"] == "unknown_task"
    assert letter["task_name"] == "images.does_not_exist"
    assert letter["args"] == [1, 2]  # decodable, so kept for inspection
    assert serves_noop()
    assert "unregistered task" in caplog.text.lower()


@pytest.mark.parametrize("args, kwargs, expected", [
    ([42], {}, "must be str"),            # wrong type
    ([], {}, "missing a required argument"),
    (["a"], {"colour": "red"}, "unexpected keyword"),
])
def test_wrong_or_missing_arguments(celery_worker, clean_db, serves_noop, args, kwargs, expected):
    headers = task_headers("maintenance.echo")
    publish_raw(celery_worker.app, json_body(args, kwargs), headers)
    letter = _letter(clean_db, headers["id"])
    assert letter["error_code"] == "invalid_arguments"
    assert expected in letter["exception_message"]
    assert letter["args"] == args and letter["kwargs"] == kwargs
    assert serves_noop()


def test_oversized_payload_is_refused_before_running(celery_worker, clean_db, serves_noop, caplog):
    from workers.reliability.consumer import MAX_MESSAGE_BYTES

    name = f"big-{uuid.uuid4().hex[:6]}"
    headers = task_headers("maintenance.canary")
    # A valid canary call padded past the cap: if it ran, the row would exist.
    body = json.dumps([[name], {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None,
                                     "pad": "x" * (MAX_MESSAGE_BYTES + 1)}]).encode()
    publish_raw(celery_worker.app, body, headers)
    letter = _letter(clean_db, headers["id"])
    assert letter["error_code"] == "message_too_large"
    assert letter["args"] is None and letter["raw_preview"].startswith('[["big-')
    assert serves_noop()
    assert "rejected oversized message" in caplog.text
    with clean_db.connect() as connection:
        from sqlalchemy import text

        assert connection.scalar(text("SELECT count(*) FROM job_heartbeats WHERE name = :n"), {"n": name}) == 0


@pytest.mark.parametrize("header_share, body_share", [
    (1.0, 0.0),   # one huge header, a tiny body
    (0.6, 0.6),   # each part under the limit, together over it
], ids=["huge-header", "header-plus-body"])
def test_oversized_headers_count_against_the_limit(celery_worker, clean_db, serves_noop, caplog,
                                                   header_share, body_share):
    from workers.reliability.consumer import MAX_MESSAGE_BYTES

    name = f"bighdr-{uuid.uuid4().hex[:6]}"
    headers = task_headers("maintenance.canary") | {"x-pad": "h" * int(MAX_MESSAGE_BYTES * header_share)}
    embed = {"callbacks": None, "errbacks": None, "chain": None, "chord": None,
             "pad": "b" * int(MAX_MESSAGE_BYTES * body_share)}
    body = json.dumps([[name], {}, embed]).encode()
    assert len(body) <= MAX_MESSAGE_BYTES  # the body alone passes the limit
    publish_raw(celery_worker.app, body, headers)
    letter = _letter(clean_db, headers["id"])
    assert letter["error_code"] == "message_too_large"
    assert letter["exception_type"] == "MessageTooLarge"
    assert "headers and properties" in letter["exception_message"]
    assert letter["task_name"] == "maintenance.canary"
    assert serves_noop()
    assert "rejected oversized message" in caplog.text
    with clean_db.connect() as connection:
        from sqlalchemy import text

        assert connection.scalar(text("SELECT count(*) FROM job_heartbeats WHERE name = :n"), {"n": name}) == 0


def test_malformed_json(celery_worker, clean_db, serves_noop, caplog):
    headers = task_headers("maintenance.echo")
    publish_raw(celery_worker.app, b'[["hello"], {}, {"callbacks": nul', headers)
    letter = _letter(clean_db, headers["id"])
    assert letter["error_code"] == "undecodable"
    assert letter["raw_preview"].startswith('[["hello"]')
    assert serves_noop()
    assert "decode" in caplog.text.lower()


def test_pickle_content_type_is_never_unpickled(celery_worker, clean_db, serves_noop, tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    headers = task_headers("maintenance.echo")
    publish_raw(celery_worker.app, pickle.dumps([[Exploit()], {}, {}]), headers,
                content_type="application/x-python-serialize")
    letter = _letter(clean_db, headers["id"])
    assert letter["error_code"] == "content_disallowed"
    assert serves_noop()
    assert not marker.exists()


def test_message_without_task_headers(celery_worker, clean_db, serves_noop):
    publish_raw(celery_worker.app, json.dumps({"hello": "world"}).encode(), {"id": str(uuid.uuid4())})
    assert serves_noop()
    with clean_db.connect() as connection:
        from sqlalchemy import text

        codes = connection.execute(text("SELECT error_code FROM dead_letters")).scalars().all()
    assert codes and set(codes) <= {"unknown_message", "undecodable", "invalid_message"}


@pytest.mark.parametrize("body", [b'"abc"', b'[1]', b'{"a": 1}', b'[[], {}]', b'null'])
def test_a_body_that_is_not_args_kwargs_embed(celery_worker, clean_db, serves_noop, body):
    # Found by the fuzz test: Celery unpacks '"abc"' into args/kwargs strings and
    # never acks the message; other shapes made the worker exit.
    headers = task_headers("maintenance.echo")
    publish_raw(celery_worker.app, body, headers)
    letter = _letter(clean_db, headers["id"])
    assert letter["error_code"] == "malformed_message"
    assert serves_noop()


def test_a_task_message_without_an_id_header(celery_worker, clean_db, serves_noop):
    # Found by the fuzz test: kombu's Redis transport counts KeyError as a connection
    # error, so this message made the worker reconnect and get it back, forever.
    headers = task_headers("maintenance.echo")
    headers.pop("id")
    publish_raw(celery_worker.app, json_body(["x"]), headers)
    assert serves_noop()
    with clean_db.connect() as connection:
        from sqlalchemy import text

        codes = wait_until(lambda: connection.execute(text(
            "SELECT error_code FROM dead_letters WHERE task_id LIKE 'no-id-%'")).scalars().all(), timeout=30,
            what="anonymous dead letter")
    assert codes == ["malformed_message"]
