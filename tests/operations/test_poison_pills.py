"""Poison pills: a task whose worker process dies every time is dead-lettered after 5 deliveries."""
from __future__ import annotations

import time

import pytest

from tests.operations.conftest import dead_letter, wait_until
from tests.operations.procs import children, kill

pytestmark = [pytest.mark.integration, pytest.mark.chaos]


def test_a_task_that_kills_its_worker_is_dead_lettered_after_5_deliveries(clean_db, isolated, tmp_path):
    from workers import deliveries
    from workers.deliveries import MAX_DELIVERIES

    worker = isolated.start_worker("poison", ["maintenance"], concurrency=1, log_path=tmp_path / "worker.log")
    redis = __import__("redis").Redis.from_url(isolated.broker_url)
    result = isolated.app.send_task("maintenance.sleep", args=[20])
    counter = deliveries.key(result.id, 0)

    kills = 0
    started = time.monotonic()
    while kills < MAX_DELIVERIES:
        # The counter moves at task start, inside the pool process: kill that process.
        wait_until(lambda: int(redis.get(counter) or 0) == kills + 1, timeout=30,
                   what=f"delivery {kills + 1}")
        pool = wait_until(lambda: children(worker.pid), timeout=10, what="pool process")
        assert all(kill(pid) for pid in pool)
        kills += 1

    letter = wait_until(lambda: dead_letter(clean_db, result.id), timeout=30, what="poison-pill dead letter")
    elapsed = time.monotonic() - started
    assert letter["error_code"] == "poison_pill"
    assert letter["attempts"] == MAX_DELIVERIES + 1
    assert letter["args"] == [20]
    assert result.get(timeout=10, propagate=False) is not None and result.state == "FAILURE"
    # The sixth delivery was refused without sleeping 20 s.
    assert elapsed < 20 * 2, elapsed
    assert worker.poll() is None, "the worker itself must survive its pool processes being killed"
    assert isolated.app.send_task("maintenance.noop").get(timeout=30) is None
    from tests.operations.chaos import Figures

    Figures("poison_pill", sent=1, completed=0, duplicated=kills, lost=0, recovery_s=elapsed,
            extra={"sigkills": kills, "dead_lettered_at_delivery": letter["attempts"]}).report()
