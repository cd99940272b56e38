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


@pytest.fixture
def rabbit(celery_app):
    iso = Isolated(celery_app, "amqp")
    try:
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

    rabbit.start_worker("quorum", list(celeryconfig.QUEUE_NAMES))
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


def test_a_countdown_retry_runs_again_after_its_delay_through_the_delayed_queues(rabbit, tmp_path):
    """Celery before 5.6.3 dropped a retried countdown on quorum queues (RabbitMQ < 4.0.1)."""
    rabbit.start_worker("retry", ["maintenance"], include="tests.brokers.broker_tasks",
                        log_path=tmp_path / "worker.log")
    started = time.monotonic()
    result = rabbit.app.send_task("maintenance.retry_twice", args=[3])

    def parked_in_delay_queue() -> bool:
        return any(name.startswith("celery_delayed_") and row["messages"] > 0
                   for name, row in queues(rabbit.vhost.name).items())

    wait_until(parked_in_delay_queue, timeout=20, interval=0.3, what="the retry parked in celery_delayed_*")
    assert result.get(timeout=60) == 2, (tmp_path / "worker.log").read_text()[-3000:]
    # Two countdowns of 3 s each: the broker held the message, not the worker.
    assert time.monotonic() - started >= 6.0
