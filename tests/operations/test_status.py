"""`python -m workers status`: exit codes 0/1/2 with dead letters and the canary reported."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest

from tests.conftest import ROOT
from tests.operations.conftest import free_port

pytestmark = pytest.mark.integration


def test_healthy_with_fresh_beat_and_reports_dead_letters(celery_worker, clean_db):
    from db.session import session_scope
    from db.heartbeats import record_heartbeat
    from workers.reliability.dead_letters import Failure, record
    from workers.observability.status import HEALTHY, collect

    with session_scope() as session:
        record_heartbeat(session, "maintenance.beat_heartbeat")
        record(session, Failure("st-1", "maintenance.echo", "InvalidArguments", "bad", "invalid_arguments"))
    report = collect()
    assert report["exit_code"] == HEALTHY, report["problems"]
    assert report["dead_letters"] == {"total": 1, "dead": 1, "retried": 0, "last_hour": 1}
    assert report["canary_ms"] is not None


def test_stale_beat_is_degraded(celery_worker, clean_db):
    from db.session import session_scope
    from db.heartbeats import record_heartbeat
    from workers.observability.status import DEGRADED, collect

    with session_scope() as session:
        record_heartbeat(session, "maintenance.beat_heartbeat", at=datetime.now(timezone.utc) - timedelta(minutes=10))
    report = collect()
    assert report["exit_code"] == DEGRADED
    assert any("beat is stale" in problem for problem in report["problems"])


def test_unreachable_broker_is_down(tmp_path):
    env = dict(os.environ, BROKER_URL=f"redis://127.0.0.1:{free_port()}/0",
               RESULT_BACKEND=f"redis://127.0.0.1:{free_port()}/1")
    done = subprocess.run([sys.executable, "-m", "workers", "status", "--json"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert json.loads(done.stdout)["services"]["broker"].startswith("down")


def test_no_worker_answering_is_degraded(on_broker, clean_db):
    """A real broker nobody consumes (a Redis db or a RabbitMQ vhost of its own, no worker on
    it): the probe says degraded, names the missing workers, and does not wait on a canary
    no one would run."""
    isolated = on_broker
    from db.heartbeats import record_heartbeat
    from db.session import session_scope

    with session_scope() as session:
        record_heartbeat(session, "maintenance.beat_heartbeat")  # fresh: the worker is the only problem
    isolated.app.send_task("maintenance.noop")  # waits in the queue, unconsumed
    env = dict(os.environ, **isolated.env)
    done = subprocess.run([sys.executable, "-m", "workers", "status", "--json"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["services"] == {"database": "ok", "broker": "ok"}
    assert report["workers"] == []
    assert report["problems"] == ["no worker answered the ping"]
    assert "canary_ms" not in report
    assert report["queues"]["maintenance"] == 1
