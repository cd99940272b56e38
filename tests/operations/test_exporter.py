"""The exporter, as a real process, reading a real broker, database and workers' durations."""
from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ROOT, stop_process
from tests.operations.conftest import free_port, wait_until

pytestmark = pytest.mark.integration


def scrape(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_exporter_reports_queues_durations_beat_and_dead_letters(on_broker, clean_db, tmp_path):
    from sqlalchemy import text

    from db.session import session_scope
    from workers.reliability.dead_letters import Failure, record

    isolated = on_broker
    app = isolated.app
    isolated.start_worker("exporter", ["maintenance"], concurrency=1)
    for result in [app.send_task("maintenance.noop") for _ in range(5)]:
        result.get(timeout=30)
    # Nobody consumes the feed queue here: three waiting messages, the oldest ~1.5 s old.
    for _ in range(3):
        app.send_task("feed.some_task")
        time.sleep(0.5)
    with session_scope() as session:
        record(session, Failure("exp-1", "maintenance.echo", "InvalidArguments", "bad", "invalid_arguments"))
        session.execute(text("INSERT INTO job_heartbeats (name, last_success_at) "
                             "VALUES ('beat:beat-heartbeat', '2026-11-25 10:00:00+00'), "
                             "('canary-xyz', now())"))

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "workers", "exporter", "--port", str(port)], cwd=ROOT,
                            env=dict(os.environ, **isolated.env), stdout=open(tmp_path / "exporter.log", "wb"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def ready():
            try:
                return scrape(port)
            except OSError:
                return None

        samples = wait_until(ready, timeout=60, interval=0.3, what="exporter")
    finally:
        stop_process(proc)

    assert samples[("jobs_exporter_source_up", (("source", "broker"),))] == 1
    assert samples[("jobs_exporter_source_up", (("source", "database"),))] == 1
    assert samples[("jobs_queue_depth", (("queue", "feed"),))] == 3
    assert samples[("jobs_queue_depth", (("queue", "maintenance"),))] == 0
    if isolated.kind == "redis":
        assert samples[("jobs_queue_oldest_message_age_seconds", (("queue", "feed"),))] >= 1.0
        assert samples[("jobs_queue_oldest_message_age_seconds", (("queue", "maintenance"),))] == 0
    else:  # AMQP cannot peek at a queue's head: no age series rather than a false 0
        assert not any(name == "jobs_queue_oldest_message_age_seconds" for name, _labels in samples)
    noop = (("state", "SUCCESS"), ("task", "maintenance.noop"))
    assert samples[("jobs_task_duration_seconds_count", noop)] == 5
    assert samples[("jobs_task_duration_seconds_bucket", (("le", "+Inf"),) + noop)] == 5
    assert samples[("jobs_task_duration_seconds_sum", noop)] > 0
    assert samples[("jobs_beat_last_dispatch_timestamp_seconds", (("entry", "beat-heartbeat"),))] == 1795600800.0
    assert not any(name == "jobs_beat_last_dispatch_timestamp_seconds" and dict(labels).get("entry") == "canary-xyz"
                   for name, labels in samples)
    assert samples[("jobs_dead_letters", (("status", "dead"),))] == 1
