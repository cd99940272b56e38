"""Logs carry task name, id, queue, state, timing and error code, never task data.

A real worker process logs through the production configuration
(workers/lifecycle.py's setup_logging, JSON on stderr) into a file; the test
sends tasks whose arguments, results and exception messages hold a secret, and
the secret must appear nowhere in that file.
"""
from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import uuid

import pytest

from tests.conftest import ROOT, stop_process, wait_for_workers
from tests.operations.conftest import free_port, wait_until
from workers.logs import JsonFormatter, format_exception

SECRET = "alice@example.com secret-note"
SECRET_PARTS = ("alice@example.com", "secret-note")


def _start_logging_worker(isolated, log_path) -> tuple[subprocess.Popen, str]:
    """Like Isolated.start_worker, at INFO and with the leaky task module included."""
    name = f"privacy-{uuid.uuid4().hex[:6]}"
    env = dict(os.environ, **isolated.env, LOG_LEVEL="INFO")
    argv = [sys.executable, "-m", "celery", "-A", "workers", "worker", "-Q", "maintenance,notifications",
            "-n", f"{name}@%h", "--concurrency=1", "--pool=prefork", "--loglevel=INFO",
            "--without-gossip", "--without-mingle", "--include", "tests.operations.leaky_tasks"]
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=open(log_path, "ab"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    isolated.procs.append(proc)  # stopped by the fixture if the test fails early
    wait_for_workers(isolated.app, [name])
    return proc, name


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def _assert_no_secret(text: str) -> None:
    for part in SECRET_PARTS:
        assert part not in text, f"{part!r} was logged:\n" + "\n".join(
            line for line in text.splitlines() if part in line)


def test_a_worker_logs_task_lines_without_arguments_results_or_exception_messages(isolated, clean_db, tmp_path):
    log_path = tmp_path / "worker.log"
    proc, _name = _start_logging_worker(isolated, log_path)
    app = isolated.app

    echoed = app.send_task("maintenance.echo", args=[SECRET])
    assert echoed.get(timeout=30) == SECRET  # the result still round-trips; only the log omits it
    invalid = app.send_task("notifications.record", kwargs={"kind": "like", "source_id": SECRET})
    crashed = app.send_task("maintenance.leak_probe", args=[SECRET])
    for result in (invalid, crashed):
        result.get(timeout=30, propagate=False)
        assert result.state == "FAILURE"

    def lines_for_every_task():
        lines = _json_lines(log_path.read_text(errors="replace"))
        states = {(line.get("task_id"), line.get("state")) for line in lines}
        wanted = {(echoed.id, "received"), (echoed.id, "succeeded"), (invalid.id, "failed"), (crashed.id, "failed")}
        return lines if wanted <= states else None

    try:
        wait_until(lines_for_every_task, timeout=30, what="the worker's task lines")
        complete = True
    except AssertionError:
        complete = False  # checked below, after the secret: that is the failure worth reading
    stop_process(proc)  # everything the worker had to say is in the file now
    text = log_path.read_text(errors="replace")
    lines = _json_lines(text)

    _assert_no_secret(text)
    assert complete, "the worker never logged a received/succeeded/failed line with task_id and state:\n" + text
    by_state = {(line.get("task_id"), line.get("state")): line for line in lines}
    received, succeeded = by_state[(echoed.id, "received")], by_state[(echoed.id, "succeeded")]
    assert received["task_name"] == succeeded["task_name"] == "maintenance.echo"
    assert succeeded["msg"].startswith(f"Task maintenance.echo[{echoed.id}] succeeded in ")
    assert isinstance(succeeded["runtime"], float)
    assert succeeded["queue"] == "maintenance"

    rejected = by_state[(invalid.id, "failed")]
    assert (rejected["task_name"], rejected["error_code"]) == ("notifications.record", "invalid_arguments")

    crash = by_state[(crashed.id, "failed")]
    assert (crash["task_name"], crash["error_code"], crash["level"]) == ("maintenance.leak_probe", "ValueError", "ERROR")
    # The traceback is kept (where it failed), reduced to classes: both links of the chain.
    assert "leaky_tasks.py" in crash["exc"] and crash["exc"].endswith("ValueError")
    assert "KeyError" in crash["exc"] and "During handling" in crash["exc"]
    dead = [line for line in lines if line.get("dead_task_id") == crashed.id]
    assert dead and dead[0]["error_code"] == "ValueError"


def test_an_unsent_task_is_logged_by_name_without_its_arguments(engine):
    from celery import Celery
    from sqlalchemy import text
    from sqlalchemy.orm import Session

    from workers.reliability.enqueue import enqueue_on_commit

    app = Celery("unreachable", set_as_current=False)
    app.config_from_object("celeryconfig")
    app.conf.broker_url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    records: list[logging.LogRecord] = []
    output = io.StringIO()
    handler = logging.StreamHandler(output)
    handler.setFormatter(JsonFormatter())
    collect = logging.Handler()
    collect.emit = records.append
    logger = logging.getLogger("workers.reliability.enqueue")
    logger.addHandler(handler)
    logger.addHandler(collect)
    try:
        with Session(engine) as session:  # nothing written: the commit only triggers the send
            session.execute(text("SELECT 1"))
            enqueue_on_commit(session, app.signature("maintenance.echo", args=[SECRET]))
            session.commit()
    finally:
        logger.removeHandler(handler)
        logger.removeHandler(collect)

    unsent = [record for record in records if getattr(record, "unsent_task", None) == "maintenance.echo"]
    assert len(unsent) == 1, output.getvalue()
    # Not in the record either: any handler (Sentry, caplog, a file) would write what it holds.
    _assert_no_secret(repr(vars(unsent[0])))
    _assert_no_secret(output.getvalue())
    assert json.loads(output.getvalue().splitlines()[0])["unsent_task"] == "maintenance.echo"


def _record(logger: str, msg, args, exc_info=None, **extra) -> logging.LogRecord:
    record = logging.LogRecord(logger, logging.ERROR, __file__, 1, msg, args, exc_info)
    record.__dict__.update(extra)
    return record


def test_extras_outside_the_allowlist_are_not_written():
    line = json.loads(JsonFormatter().format(_record(
        "workers.reliability.dead_letters", "dead letter: %s %s", ("notifications.record", "invalid_arguments"),
        dead_task_id="t-1", error_code="invalid_arguments", error=f"not a valid UUID: {SECRET!r}",
        preview=SECRET, data={"args": SECRET})))
    _assert_no_secret(json.dumps(line))
    assert (line["dead_task_id"], line["error_code"]) == ("t-1", "invalid_arguments")


def test_celerys_reports_are_cut_before_the_message_body():
    from celery.worker.consumer.consumer import UNKNOWN_TASK_ERROR

    record = _record("celery.worker.consumer.consumer", UNKNOWN_TASK_ERROR,
                     (KeyError("x.y"), f"[[{SECRET!r}], {{}}, {{}}]", {"task": "x.y"}, {"routing_key": "x"}))
    line = json.loads(JsonFormatter().format(record))
    _assert_no_secret(json.dumps(line))
    assert line["msg"].startswith("Received unregistered task")


def test_an_exception_chain_keeps_its_frames_and_classes_but_no_message():
    def fail(value):
        try:
            raise KeyError(value)
        except KeyError as exc:
            raise RuntimeError(f"while handling {value}") from exc

    with pytest.raises(RuntimeError) as caught:
        fail(SECRET)
    rendered = format_exception(caught.value)
    _assert_no_secret(rendered)
    assert "direct cause" in rendered and "in fail" in rendered
    assert rendered.splitlines()[-1] == "RuntimeError" and "KeyError" in rendered


# Extras that production code passes but the logs deliberately leave out: they hold task data
# (the dead letter's exception message, a bad message's body). The dead letter keeps both.
DROPPED_EXTRAS = {"error", "preview"}


def test_every_extra_in_production_code_is_either_logged_or_deliberately_dropped():
    import ast

    from workers.logs import LOGGED_FIELDS

    passed = set()
    for root in ("workers", "tasks", "db"):
        for path in (ROOT / root).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in (
                        "debug", "info", "warning", "error", "exception", "critical", "log"):
                    for keyword in node.keywords:
                        if keyword.arg == "extra" and isinstance(keyword.value, ast.Dict):
                            passed.update(key.value for key in keyword.value.keys if isinstance(key, ast.Constant))
    assert passed, "found no extra= in production code"
    assert passed <= LOGGED_FIELDS | DROPPED_EXTRAS, (
        f"extras neither logged nor listed as dropped: {sorted(passed - LOGGED_FIELDS - DROPPED_EXTRAS)}; "
        "add them to workers.logs.LOGGED_FIELDS if they carry no task data")


def test_a_database_error_carries_no_sql_parameters(clean_db):
    """A failed statement's exception reaches dead letters and tracebacks: its
    parameters (user data) must not be in it (engine ``hide_parameters=True``)."""
    import sqlalchemy.exc
    from sqlalchemy import text

    from db.session import session_scope

    secret = "alice@example.com secret-note"
    with pytest.raises(sqlalchemy.exc.DataError) as raised:  # PostgreSQL's message names no value here
        with session_scope() as session:
            session.execute(text("SELECT CAST(:value AS text) || CAST(1 / 0 AS text)"), {"value": secret})
    assert "division by zero" in str(raised.value)
    assert secret not in str(raised.value)
