"""Dead letters: permanent failures and exhausted retries are recorded once per task id."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import uuid
from contextlib import redirect_stdout
from datetime import datetime, timedelta, timezone

import pytest
from freezegun import freeze_time
from sqlalchemy import text

from tests.conftest import ROOT
from tests.operations.conftest import dead_letter, wait_until

pytestmark = pytest.mark.integration


def run_cli(*argv: str) -> tuple[int, str]:
    from workers.cli import main

    out = io.StringIO()
    with redirect_stdout(out):
        code = main(list(argv))
    return code, out.getvalue()


def test_invalid_arguments_become_a_dead_letter(celery_worker, clean_db):
    from workers.errors import InvalidArguments

    result = celery_worker.app.send_task("maintenance.echo", args=[12345])
    with pytest.raises(InvalidArguments):
        result.get(timeout=30)
    letter = wait_until(lambda: dead_letter(clean_db, result.id), what="dead letter")
    assert letter["task_name"] == "maintenance.echo"
    assert letter["error_code"] == "invalid_arguments"
    assert letter["exception_type"] == "InvalidArguments"
    assert "must be str" in letter["exception_message"]
    assert letter["args"] == [12345] and letter["kwargs"] == {}
    assert letter["attempts"] == 1 and letter["status"] == "dead"
    assert letter["queue"] == "maintenance"


def test_a_refailure_of_the_same_task_id_updates_its_row(celery_worker, clean_db):
    task_id = str(uuid.uuid4())
    for _ in range(2):
        result = celery_worker.app.send_task("maintenance.echo", kwargs={"wrong": 1}, task_id=task_id)
        with pytest.raises(Exception):
            result.get(timeout=30)
    letter = wait_until(lambda: (row := dead_letter(clean_db, task_id)) and row["attempts"] == 2 and row,
                        what="second failure recorded")
    assert letter["last_seen"] >= letter["first_seen"]
    with clean_db.connect() as connection:
        assert connection.scalar(text("SELECT count(*) FROM dead_letters")) == 1


def test_a_successful_task_leaves_no_dead_letter(celery_worker, clean_db):
    result = celery_worker.app.send_task("maintenance.canary", args=["ok-canary"])
    assert result.get(timeout=30) == "ok-canary"
    with clean_db.connect() as connection:
        assert connection.scalar(text("SELECT count(*) FROM dead_letters")) == 0


def test_exhausted_retries_become_a_dead_letter_and_retry_resends_it(clean_db, on_broker):
    """A transient error (lock timeout) on the last allowed attempt dead-letters the task;
    `dead retry` re-sends it with the same id once the lock is gone, and it succeeds."""
    isolated = on_broker
    celery_app = isolated.app
    isolated.start_worker("retrydl", ["maintenance"], extra_env={"PGOPTIONS": "-c lock_timeout=300"})
    name = f"locked-{uuid.uuid4().hex[:8]}"
    with clean_db.connect() as holder:
        holder.execute(text("INSERT INTO job_heartbeats (name, last_success_at) VALUES (:n, now())"), {"n": name})
        holder.commit()
        holder.execute(text("SELECT 1 FROM job_heartbeats WHERE name = :n FOR UPDATE"), {"n": name})
        # retries=5 is the @job default max: this attempt is the last one.
        result = celery_app.send_task("maintenance.canary", args=[name], retries=5)
        with pytest.raises(Exception, match="lock"):
            result.get(timeout=30)
        holder.rollback()
    letter = wait_until(lambda: dead_letter(clean_db, result.id), what="dead letter")
    assert letter["exception_type"] == "OperationalError"
    assert letter["attempts"] == 6
    assert letter["args"] == [name]

    code, out = run_cli("dead", "list")
    assert code == 0 and result.id in out and "maintenance.canary" in out
    code, out = run_cli("dead", "show", str(letter["id"]), "--json")
    assert code == 0 and json.loads(out)["error_code"] == "OperationalError"

    # The operator's command, as a process of its own on the broker under test.
    done = subprocess.run([sys.executable, "-m", "workers", "dead", "retry", str(letter["id"])], cwd=ROOT,
                          env=dict(os.environ, **isolated.env), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert celery_app.AsyncResult(result.id).get(timeout=30) == name
    after = dead_letter(clean_db, result.id)
    assert after["status"] == "retried" and after["retried_count"] == 1
    with clean_db.connect() as connection:
        assert connection.scalar(text("SELECT last_result->>'canary' FROM job_heartbeats WHERE name = :n"),
                                 {"n": name}) == "true"


def test_cli_retry_of_an_unknown_id_fails(clean_db):
    code, _ = run_cli("dead", "retry", "999999")
    assert code == 1


def test_retry_refuses_a_letter_without_arguments(db_session):
    from workers.reliability.dead_letters import Failure, NotRetryable, record, retry
    from db.models import DeadLetter

    record(db_session, Failure(task_id="bad-1", task_name="maintenance.echo", exception_type="DecodeError",
                               exception_message="garbage", error_code="undecodable", raw_preview="{nope"))
    letter = db_session.query(DeadLetter).filter_by(task_id="bad-1").one()
    with pytest.raises(NotRetryable, match="no decodable arguments"):
        retry(db_session, letter.id)


def test_purge_deletes_only_letters_older_than_the_cutoff(db_session):
    from workers.console import parse_duration
    from workers.reliability.dead_letters import Failure, purge, record

    with freeze_time("2026-01-01 12:00:00"):
        old_at = datetime.now(timezone.utc)
    record(db_session, Failure("old", "maintenance.echo", "X", "", "x"), at=old_at)
    record(db_session, Failure("new", "maintenance.echo", "X", "", "x"), at=old_at + timedelta(days=29, hours=23))
    with freeze_time("2026-01-31 13:00:00"):
        removed = purge(db_session, parse_duration("30d"))
    assert removed == 1
    left = db_session.execute(text("SELECT task_id FROM dead_letters")).scalars().all()
    assert left == ["new"]
    with pytest.raises(ValueError):
        parse_duration("thirty days")
