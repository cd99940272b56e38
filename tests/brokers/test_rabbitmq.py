"""The RabbitMQ path: quorum queues, the broker's delivery limit, native delayed delivery.

Each test gets a vhost of its own (``on_broker``/``Isolated(kind="amqp")``), created
and deleted by the fixture, and skips with a clear message when no RabbitMQ answers.
"""
from __future__ import annotations

import json
import subprocess
import time

import pytest

from tests.conftest import Isolated
from tests.operations.conftest import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def rabbit(celery_app, tmp_path_factory):
    """A vhost and one worker on it, consuming only ``maintenance`` (with the test tasks), for
    the whole module: nobody consumes the other queues, which the expiry test relies on."""
    iso = Isolated(celery_app, "amqp")
    try:
        iso.start_worker("brokers", ["maintenance"], include="tests.brokers.broker_tasks",
                         log_path=tmp_path_factory.mktemp("rabbit") / "worker.log")
        yield iso
    finally:
        iso.close()


def queues(vhost: str) -> dict[str, dict]:
    out = subprocess.run(["rabbitmqctl", "-q", "list_queues", "-p", vhost, "name", "type", "arguments",
                          "messages", "--formatter", "json"], check=True, capture_output=True, text=True).stdout
    return {row["name"]: row for row in json.loads(out)}


def test_every_task_queue_is_a_quorum_queue_with_the_poison_pill_limit(rabbit):
    import celeryconfig
    from workers.reliability.deliveries import MAX_DELIVERIES

    assert rabbit.app.send_task("maintenance.echo", args=["over quorum"]).get(timeout=30) == "over quorum"
    declared = queues(rabbit.vhost.name)
    for name in (*celeryconfig.QUEUE_NAMES, celeryconfig.DEAD_LETTER_QUEUE):
        assert declared[name]["type"] == "quorum", (name, declared[name])
    arguments = {name: value for name, _type, value in declared["images"]["arguments"]}
    assert arguments == celeryconfig.quorum_queue_arguments(MAX_DELIVERIES)
    assert arguments["x-delivery-limit"] == MAX_DELIVERIES - 1   # RabbitMQ allows limit + 1 deliveries
    # Native delayed delivery: Celery declared its 28 delay levels as quorum queues too.
    assert declared["celery_delayed_0"]["type"] == "quorum"
    assert declared["celery_delayed_27"]["type"] == "quorum"


def test_a_countdown_retry_runs_again_after_its_delay_through_the_delayed_queues(rabbit):
    """Celery before 5.6.3 dropped a retried countdown on quorum queues (RabbitMQ < 4.0.1)."""
    started = time.monotonic()
    result = rabbit.app.send_task("maintenance.retry_twice", args=[3])

    def parked_in_delay_queue() -> bool:
        return any(name.startswith("celery_delayed_") and row["messages"] > 0
                   for name, row in queues(rabbit.vhost.name).items())

    wait_until(parked_in_delay_queue, timeout=20, interval=0.3, what="the retry parked in celery_delayed_*")
    assert result.get(timeout=60) == 2
    # Two countdowns of 3 s each: the broker held the message, not the worker.
    assert time.monotonic() - started >= 6.0


def run_bare_client(rabbit, mode: str) -> dict:
    """The bare client as a process outside the project: cwd /tmp, no PYTHONPATH, so
    ``import workers`` would fail there."""
    import os
    import sys
    from pathlib import Path

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "BROKER_URL", "RESULT_BACKEND")}
    done = subprocess.run([sys.executable, str(Path(__file__).with_name("bare_client.py")), mode,
                           rabbit.broker_url, rabbit.backend_url], cwd="/tmp", env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_bare_client_with_celerys_defaults_gets_precondition_failed(rabbit):
    outcome = run_bare_client(rabbit, "default")
    assert outcome["error"] is not None and "PRECONDITION_FAILED" in outcome["message"], outcome
    # The refused declaration changed nothing: the queue is still the workers' quorum queue.
    assert queues(rabbit.vhost.name)["maintenance"]["type"] == "quorum"


def test_a_bare_client_configured_as_documented_sends_and_counts_down(rabbit):
    outcome = run_bare_client(rabbit, "configured")
    assert outcome == {"error": None, "now": "from the web tier", "later": "two seconds later",
                       "project_imported": False}


def test_flower_shows_a_task_sent_over_rabbitmq(rabbit, tmp_path):
    import base64
    import os
    import sys
    import urllib.request

    from tests.conftest import ROOT, stop_process
    from tests.operations.conftest import free_port

    port, auth = free_port(), "ops:flower-on-amqp"
    proc = subprocess.Popen([sys.executable, "-m", "workers", "flower", "--address", "127.0.0.1", "--port", str(port)],
                            cwd=ROOT, env=dict(os.environ, **rabbit.env, DATA_DIR=str(tmp_path), FLOWER_BASIC_AUTH=auth),
                            stdout=open(tmp_path / "flower.log", "wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)

    def tasks_seen() -> dict | None:
        request = urllib.request.Request(f"http://127.0.0.1:{port}/api/tasks")
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return json.loads(response.read())
        except OSError:
            return None

    try:
        wait_until(lambda: tasks_seen() is not None, timeout=60, interval=0.5, what="Flower up")
        time.sleep(2)  # Flower's event consumer binds its queue after the web server answers
        sent = rabbit.app.send_task("maintenance.echo", args=["seen by flower"])
        assert sent.get(timeout=30) == "seen by flower"
        # Flower applies task-received, -started and -succeeded events as they arrive: wait for the last.
        seen = wait_until(lambda: (found := tasks_seen()) and found.get(sent.id, {}).get("state") == "SUCCESS"
                          and found, timeout=30, interval=0.5, what="the task in Flower, succeeded")
        assert seen[sent.id]["state"] == "SUCCESS" and seen[sent.id]["name"] == "maintenance.echo"
    finally:
        stop_process(proc)


def test_a_message_that_expires_unconsumed_is_revoked_not_a_dead_letter(rabbit, clean_db):
    """As on Redis, where the worker drops an expired message as revoked: RabbitMQ expires it in
    the queue and dead-letters it, and the intake marks its result REVOKED without a row."""
    from tests.operations.conftest import dead_letter_count

    # The module's worker consumes only maintenance: nobody takes images.
    result = rabbit.app.send_task("images.process_profile_photo", args=[1, "never.jpg"], expires=1)
    wait_until(lambda: result.state == "REVOKED", timeout=30, interval=0.3, what="the expired task revoked")
    assert queues(rabbit.vhost.name)["images"]["messages"] == 0
    assert dead_letter_count(clean_db) == 0


def test_celery_sees_quorum_queues_so_it_drops_global_qos_and_delays_natively(rabbit):
    """What switches Celery's quorum-queue behaviour on: without it a worker would ask for a
    global QoS, which quorum queues refuse, and an ETA would wait in a worker's memory."""
    from celery.utils.quorum_queues import detect_quorum_queues

    assert rabbit.app.conf.worker_detect_quorum_queues is True
    assert rabbit.app.conf.broker_native_delayed_delivery_queue_type == "quorum"
    found, first = detect_quorum_queues(rabbit.app, "amqp")
    assert found and first == "images"
    assert rabbit.app.conf.broker_transport_options == {"confirm_publish": True}
