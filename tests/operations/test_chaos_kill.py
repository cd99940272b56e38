"""SIGKILL mid-task and SIGTERM during work, with real worker processes."""
from __future__ import annotations

import random
import time
import uuid

import pytest
import redis

from tests.operations.chaos import Figures, canary_rows, redeliveries, runs_beyond_the_first
from tests.operations.conftest import dead_letter_count, wait_until
from tests.operations.procs import children, kill

pytestmark = [pytest.mark.integration, pytest.mark.chaos]


def sigkill_mid_task(isolated, engine, tmp_path, kills: int, tasks: int, name: str) -> Figures:
    worker = isolated.start_worker("killme", ["maintenance"], concurrency=2, log_path=tmp_path / "worker.log",
                                   include="tests.brokers.broker_tasks")
    prefix = f"kill-{uuid.uuid4().hex[:6]}-"
    results = [isolated.app.send_task("maintenance.counted_canary", args=[f"{prefix}{i}"],
                                      kwargs={"hold_seconds": 0.8})
               for i in range(tasks)]
    rng = random.Random(7)
    recoveries = []
    inspector = isolated.app.control.inspect(timeout=0.5)

    def busy_pids():
        active = inspector.active() or {}
        pids = {task["worker_pid"] for tasks_ in active.values() for task in tasks_ if task.get("worker_pid")}
        return sorted(pids & set(children(worker.pid)))

    for _ in range(kills):
        busy = wait_until(busy_pids, timeout=30, interval=0.05, what="a pool process running a task")
        before = canary_rows(engine, prefix)
        if before >= tasks:
            break
        killed_at = time.monotonic()
        kill(rng.choice(busy))  # mid-task: a canary holds for 0.8 s before its upsert
        wait_until(lambda: canary_rows(engine, prefix) > before or canary_rows(engine, prefix) >= tasks,
                   timeout=60, interval=0.05, what="progress after the kill")
        recoveries.append(time.monotonic() - killed_at)
    wait_until(lambda: canary_rows(engine, prefix) >= tasks, timeout=180, interval=0.2, what="all canaries")
    for result in results:
        assert result.get(timeout=60).startswith(prefix)
    completed = canary_rows(engine, prefix)
    figures = Figures(f"{name}[{isolated.kind}]", sent=tasks, completed=completed, lost=tasks - completed,
                      duplicated=runs_beyond_the_first(engine, prefix),
                      recovery_s=max(recoveries) if recoveries else None,
                      extra={"kills": len(recoveries)})
    assert worker.poll() is None
    return figures


def test_sigkill_mid_task_bounded(chaos_broker, clean_db, tmp_path):
    figures = sigkill_mid_task(chaos_broker, clean_db, tmp_path, kills=3, tasks=12, name="sigkill_x3")
    figures.report()
    assert figures.lost == 0 and figures.completed == 12
    assert figures.duplicated >= 1  # a killed task really was delivered again (a kill can land just after a task ends)
    assert dead_letter_count(clean_db) == 0


@pytest.mark.slow_chaos
def test_sigkill_mid_task_x10(chaos_broker, clean_db, tmp_path):
    figures = sigkill_mid_task(chaos_broker, clean_db, tmp_path, kills=10, tasks=60, name="sigkill_x10")
    figures.report()
    assert figures.extra["kills"] == 10
    assert figures.lost == 0 and figures.completed == 60
    assert figures.duplicated >= 6  # most kills hit a running task, which ran again
    assert dead_letter_count(clean_db) == 0


@pytest.mark.slow_chaos
def test_sigterm_during_work_finishes_or_requeues(isolated, clean_db, tmp_path):
    from tests.conftest import stop_process

    worker = isolated.start_worker("term", ["maintenance"], concurrency=2, log_path=tmp_path / "w1.log")
    prefix = f"term-{uuid.uuid4().hex[:6]}-"
    tasks = 10
    results = [isolated.app.send_task("maintenance.canary", args=[f"{prefix}{i}"], kwargs={"hold_seconds": 2.0})
               for i in range(tasks)]
    wait_until(lambda: canary_rows(clean_db, prefix) >= 1, timeout=60, what="work under way")
    time.sleep(0.5)  # two tasks mid-hold, others waiting or prefetched
    terminated_at = time.monotonic()
    stop_process(worker, timeout=60)  # SIGTERM: warm shutdown
    shutdown_s = time.monotonic() - terminated_at
    done_by_first = canary_rows(clean_db, prefix)
    restarted_at = time.monotonic()
    isolated.start_worker("term2", ["maintenance"], concurrency=2, log_path=tmp_path / "w2.log")
    wait_until(lambda: canary_rows(clean_db, prefix) > done_by_first or done_by_first >= tasks,
               timeout=60, what="second worker resumes")
    recovery = time.monotonic() - restarted_at
    wait_until(lambda: canary_rows(clean_db, prefix) >= tasks, timeout=120, what="all canaries")
    for result in results:
        result.get(timeout=60)
    figures = Figures("sigterm", sent=tasks, completed=canary_rows(clean_db, prefix),
                      duplicated=redeliveries(redis.Redis.from_url(isolated.broker_url), [r.id for r in results]),
                      recovery_s=recovery,
                      extra={"finished_by_first_worker": done_by_first, "warm_shutdown_s": round(shutdown_s, 1)})
    figures.lost = tasks - figures.completed
    figures.report()
    assert figures.lost == 0
    assert done_by_first >= 2  # the tasks running at SIGTERM finished rather than being cut off
    assert dead_letter_count(clean_db) == 0
