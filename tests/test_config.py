"""Configuration: JSON only, routing by prefix, and the start-up visibility check."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
from celery.exceptions import ImproperlyConfigured

import celeryconfig
from workers.lifecycle import check_visibility_timeout

ROOT = Path(__file__).resolve().parent.parent


class _Conf:
    def __init__(self, visibility, broker="redis://127.0.0.1:6379/0"):
        self.broker_url = broker
        self.broker_transport_options = {"visibility_timeout": visibility} if visibility else {}


def test_serializer_is_json_only(celery_app):
    assert celery_app.conf.task_serializer == "json"
    assert list(celery_app.conf.accept_content) == ["json"]
    assert celery_app.conf.task_acks_late and celery_app.conf.task_reject_on_worker_lost


def test_every_task_routes_to_its_family_queue_with_time_limits(celery_app):
    ours = [t for name, t in celery_app.tasks.items() if not name.startswith("celery.")]
    assert ours
    for task in ours:
        family = task.name.split(".", 1)[0]
        route = celery_app.amqp.router.route({}, task.name)
        assert route["queue"].name == family, task.name
        soft, hard = celeryconfig.QUEUE_TIME_LIMITS[family]
        assert (task.soft_time_limit, task.time_limit) == (soft, hard)


def test_the_shipped_configuration_passes_the_check(celery_app):
    check_visibility_timeout(celery_app.conf)


@pytest.mark.parametrize("visibility, message", [
    (600, "longest hard time limit"),
    (None, "is unset"),
    (1750, "countdown"),  # above every hard limit (upkeep: 1,700 s), below TASK_MAX_COUNTDOWN
])
def test_bad_visibility_timeout_is_rejected(visibility, message):
    with pytest.raises(ImproperlyConfigured, match=message):
        check_visibility_timeout(_Conf(visibility))


def test_non_redis_brokers_are_not_checked():
    check_visibility_timeout(_Conf(10, broker="amqp://guest@127.0.0.1//"))


def test_a_real_worker_refuses_to_start_with_a_bad_visibility_timeout():
    env = dict(os.environ, BROKER_VISIBILITY_TIMEOUT="60")
    proc = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "workers", "worker", "-Q", "maintenance", "--pool=solo"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "visibility_timeout=60s is not above the longest hard time limit" in proc.stdout + proc.stderr


def test_a_real_worker_on_rabbitmq_refuses_to_start_without_the_analytics_redis():
    """On RabbitMQ the view counters and duration histograms need a Redis of their own; the
    worker says so at start instead of failing analytics tasks later. No broker is contacted."""
    env = {k: v for k, v in os.environ.items() if k != "ANALYTICS_REDIS_URL"}
    env["BROKER_URL"] = "amqp://nobody:secret-pw@127.0.0.1:1/none"
    proc = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "workers", "worker", "-Q", "maintenance", "--pool=solo"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "set ANALYTICS_REDIS_URL" in proc.stdout + proc.stderr
    assert "secret-pw" not in proc.stdout + proc.stderr
