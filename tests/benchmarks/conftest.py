"""Benchmark harness: every figure is recorded beside a baseline measured in the same run.

Results are merged by name into .bench/results.json as a list of
{name, value, unit, baseline, ratio, ...}; ``ratio`` is value / baseline.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import spawn_worker, stop_process, wait_for_workers

RESULTS = Path(__file__).resolve().parents[2] / ".bench" / "results.json"
_recorded: list[dict] = []


HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items):
    for item in items:
        if HERE in Path(item.fspath).resolve().parents:
            item.add_marker(pytest.mark.bench)


def record(name: str, value: float, unit: str, baseline: float, baseline_name: str, **extra) -> dict:
    entry = {"name": name, "value": round(value, 4), "unit": unit, "baseline": round(baseline, 4),
             "ratio": round(value / baseline, 4) if baseline else None,
             "baseline_name": baseline_name, **extra}
    _recorded.append(entry)
    print(f"\nBENCH {name}: {entry['value']} {unit} (baseline {baseline_name}: {entry['baseline']}, "
          f"ratio {entry['ratio']})")
    return entry


def pytest_sessionfinish(session, exitstatus):
    if not _recorded:
        return
    RESULTS.parent.mkdir(exist_ok=True)
    existing = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    names = {entry["name"] for entry in _recorded}
    merged = [entry for entry in existing if entry["name"] not in names] + _recorded
    RESULTS.write_text(json.dumps(merged, indent=2) + "\n")


@pytest.fixture(scope="session")
def bench_record():
    return record


def measure_task_throughput(app, send: Callable[[int], list], count: int, *, queues: list[str],
                            concurrency: int = 2, warmup: int = 50, name: str = "bench") -> float:
    """Start a real prefork worker, send ``count`` tasks, return completed tasks per second.

    The clock runs from the first send to the last result, so publishing,
    broker, worker and result backend are all inside the figure.
    """
    from celery.result import ResultSet

    proc = spawn_worker(name, queues, concurrency=concurrency)
    try:
        wait_for_workers(app, [name])
        ResultSet(send(warmup)).join_native(timeout=120)
        started = time.perf_counter()
        results = send(count)
        ResultSet(results).join_native(timeout=600, propagate=True)
        elapsed = time.perf_counter() - started
    finally:
        stop_process(proc)
    return count / elapsed


@pytest.fixture(scope="session")
def noop_throughput(celery_app) -> float:
    """No-op task throughput with 2 worker processes: the baseline every family compares with."""
    from tasks.maintenance.tasks import noop

    celery_app.control.purge()
    return measure_task_throughput(
        celery_app, lambda n: [noop.delay() for _ in range(n)], 2000,
        queues=["maintenance"], concurrency=2, name="noop-bench")
