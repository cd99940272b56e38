"""Real messages through the real broker to a real worker."""
import pytest
from celery.exceptions import TimeoutError as CeleryTimeout

pytestmark = pytest.mark.integration


def test_echo_round_trip(celery_worker):
    from tasks.maintenance.tasks import echo

    assert echo.delay("grateful").get(timeout=30) == "grateful"


def test_invalid_arguments_fail_once_without_retry(celery_worker):
    from tasks.maintenance.tasks import echo
    from workers.errors import InvalidArguments

    result = echo.apply_async(args=[12345])
    with pytest.raises(InvalidArguments, match="must be str"):
        result.get(timeout=30)
    assert result.state == "FAILURE"
    assert result.retries in (0, None)


def test_the_worker_keeps_serving_after_a_failure(celery_worker):
    from tasks.maintenance.tasks import echo, noop

    from workers.errors import InvalidArguments

    bad = echo.apply_async(kwargs={"wrong": 1})
    good = noop.delay()
    with pytest.raises(InvalidArguments, match="echo: missing a required argument: 'value'"):
        bad.get(timeout=30)
    try:
        assert good.get(timeout=30) is None
    except CeleryTimeout:
        pytest.fail("worker stopped serving after a bad message")


def test_beat_heartbeat_task_records_a_row(celery_worker, clean_db):
    from sqlalchemy import text

    from tasks.maintenance.tasks import beat_heartbeat

    beat_heartbeat.delay().get(timeout=30)
    with clean_db.connect() as connection:
        assert connection.scalar(text(
            "SELECT count(*) FROM job_heartbeats WHERE name = 'maintenance.beat_heartbeat'")) == 1
