"""Benchmark harness: every figure is recorded beside a baseline measured in the same run, and its goal.

Results are merged by name into .bench/results.json as a list of
{name, value, unit, baseline, ratio, baseline_name, baseline_kind, goal, goal_check, met, ...}:
``ratio`` is value / baseline; ``baseline_kind`` is "measured", or "extrapolated"
when the baseline was scaled up from a sample; ``goal`` is the target in words
("ratio <= 2"), ``goal_check`` the same as data ({"of", "op", "target"}) and
``met`` whether this run reached it. A context figure, which has no target,
says why in ``goal`` and has ``goal_check`` and ``met`` null. Each figure and
its verdict is printed, and listed again at the end of the run.
"""
from __future__ import annotations

import json
import operator
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import spawn_worker, stop_process, wait_for_workers

RESULTS = Path(__file__).resolve().parents[2] / ".bench" / "results.json"
_recorded: list[dict] = []


HERE = Path(__file__).resolve().parent

_COMPARE = {"<=": operator.le, "<": operator.lt, ">=": operator.ge, ">": operator.gt}
BASELINE_KINDS = ("measured", "extrapolated")


@dataclass(frozen=True)
class Goal:
    """The target of a figure: entry[of] op target, e.g. Goal("ratio", "<=", 2)."""
    of: str
    op: str
    target: float
    why: str = ""

    def __post_init__(self):
        if self.op not in _COMPARE:
            raise ValueError(f"unknown comparator {self.op!r}")

    def __str__(self) -> str:
        return f"{self.of} {self.op} {self.target:g}" + (f" ({self.why})" if self.why else "")

    def check(self) -> dict:
        return {"of": self.of, "op": self.op, "target": self.target}

    def met(self, entry: dict) -> bool:
        return _COMPARE[self.op](entry[self.of], self.target)


@dataclass(frozen=True)
class NoGoal:
    """A context figure: measured for what it explains, with no target to meet."""
    why: str

    def __str__(self) -> str:
        return f"none, context figure: {self.why}"

    def check(self) -> None:
        return None

    def met(self, entry: dict) -> None:
        return None


def pytest_collection_modifyitems(items):
    for item in items:
        if HERE in Path(item.fspath).resolve().parents:
            item.add_marker(pytest.mark.bench)


def verdict(entry: dict) -> str:
    met = {True: "yes", False: "no", None: "n/a"}[entry["met"]]
    check = entry["goal_check"]
    # A goal on a figure other than value and ratio (a speed-up, a per-user cost) shows what was measured.
    got = f", got {check['of']} {entry[check['of']]}" if check and check["of"] not in ("value", "ratio") else ""
    return f"goal: {entry['goal']}{got}, met: {met}"


def record(name: str, value: float, unit: str, baseline: float, baseline_name: str, *, goal: Goal | NoGoal,
           baseline_kind: str = "measured", **extra) -> dict:
    """Record one figure. ``goal`` has no default: every figure states its target, or why it has none."""
    if baseline_kind not in BASELINE_KINDS:
        raise ValueError(f"baseline_kind must be one of {BASELINE_KINDS}")
    entry = {"name": name, "value": round(value, 4), "unit": unit, "baseline": round(baseline, 4),
             "ratio": round(value / baseline, 4) if baseline else None,
             "baseline_name": baseline_name, "baseline_kind": baseline_kind, **extra}
    # Judged on the rounded figures, so the verdict agrees with the numbers printed and saved.
    entry.update(goal=str(goal), goal_check=goal.check(), met=goal.met(entry))
    _recorded.append(entry)
    print(f"\nBENCH {summary_line(entry)}")
    return entry


def summary_line(entry: dict) -> str:
    return (f"{entry['name']}: {entry['value']} {entry['unit']} "
            f"(baseline, {entry['baseline_kind']}: {entry['baseline_name']}: {entry['baseline']}; "
            f"ratio {entry['ratio']}); {verdict(entry)}")


def pytest_terminal_summary(terminalreporter):
    """The figures again, after the run: pytest captures what the tests print."""
    if not _recorded:
        return
    terminalreporter.section("benchmark figures and goals")
    for entry in _recorded:
        terminalreporter.write_line(summary_line(entry))
    judged = [entry for entry in _recorded if entry["met"] is not None]
    terminalreporter.write_line(f"goals met: {sum(entry['met'] for entry in judged)} of {len(judged)} "
                                f"({len(_recorded) - len(judged)} context figures without one)")


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


def measure_drain_throughput(app, publish: Callable[[int], list], count: int, *, queue: str,
                             concurrency: int = 2, warmup: int = 50, name: str = "drain",
                             extra_env: dict | None = None, app_module: str = "workers") -> float:
    """Start a real prefork worker, fill its queue with ``count`` tasks, then let it drain them:
    completed tasks per second of the worker alone.

    The worker runs ``warmup`` tasks first, stops consuming while the queue is
    filled, and the clock runs from the moment it consumes again to the last
    result. Publishing is the web tier's cost, so it stays outside the figure
    (on this machine one publish costs about as much as one no-op task).
    """
    from celery.result import ResultSet

    proc = spawn_worker(name, [queue], concurrency=concurrency, extra_env=extra_env, app_module=app_module)
    try:
        (hostname,) = [n for n in wait_for_workers(app, [name]) if n.startswith(name)]
        ResultSet(publish(warmup)).join_native(timeout=120)
        app.control.cancel_consumer(queue, destination=[hostname], reply=True, timeout=10)
        results = publish(count)
        started = time.perf_counter()
        app.control.add_consumer(queue, destination=[hostname], reply=True, timeout=10)
        ResultSet(results).join_native(timeout=600, propagate=True)
        elapsed = time.perf_counter() - started
    finally:
        stop_process(proc)
    return count / elapsed


def drain_our_noop(app, count: int = 3000) -> float:
    """Our no-op task drained from a full queue by 2 worker processes (measure_drain_throughput)."""
    from tasks.maintenance.tasks import noop

    return measure_drain_throughput(app, lambda n: [noop.delay() for _ in range(n)], count,
                                    queue="maintenance", name="noop-drain")


@pytest.fixture(scope="session")
def noop_drain_throughput(celery_app) -> float:
    celery_app.control.purge()
    return drain_our_noop(celery_app)


@pytest.fixture(scope="session")
def noop_throughput(celery_app) -> float:
    """No-op task throughput with 2 worker processes: the baseline every family compares with."""
    from tasks.maintenance.tasks import noop

    celery_app.control.purge()
    return measure_task_throughput(
        celery_app, lambda n: [noop.delay() for _ in range(n)], 2000,
        queues=["maintenance"], concurrency=2, name="noop-bench")
