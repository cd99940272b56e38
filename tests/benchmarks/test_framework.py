"""Framework overhead (issue 18): our maintenance.noop on our worker against a bare Celery app with
the same broker, serializer, acks_late, prefetch 1 and task events (tests/benchmarks/stock_app.py),
and the price of task events (what Flower costs) on the same bare app. All drained from a full queue
by 2 worker processes, in the same run."""
import statistics

from tests.benchmarks import stock_app
from tests.benchmarks.conftest import Goal, NoGoal, drain_our_noop, measure_drain_throughput

TASKS = 3000


def _stock(celery_app, events: str) -> float:
    return measure_drain_throughput(celery_app, lambda n: [stock_app.noop.delay() for _ in range(n)], TASKS,
                                    queue="stock", name=f"stock-{events}", app_module="tests.benchmarks.stock_app",
                                    extra_env={"STOCK_EVENTS": events})


def test_our_noop_against_stock_celery(celery_app, bench_record):
    """Three rounds, each ours then stock with events on then off, so a slow spell of the shared
    machine hits every side; the figures are the medians."""
    celery_app.control.purge()
    rounds = [(drain_our_noop(celery_app, TASKS), _stock(celery_app, "on"), _stock(celery_app, "off")) for _ in range(3)]
    ours, stock_on, stock_off = (statistics.median(column) for column in zip(*rounds))
    bench_record("celery.noop_vs_stock_2proc", ours, "tasks/s", stock_on,
                 "stock Celery no-op, same broker, JSON, acks_late, prefetch 1, events on (same run)",
                 tasks=TASKS, statistic="median of 3 alternating rounds",
                 ratios=[round(o / s, 2) for o, s, _off in rounds],
                 goal=Goal("ratio", ">=", 0.9, "our guarantees cost at most 10% of stock Celery"))
    entry = bench_record("celery.task_events_price_2proc", stock_on, "tasks/s", stock_off,
                         "the same stock no-op with task events off (same run)", tasks=TASKS,
                         statistic="median of 3 alternating rounds", ratios=[round(on / off, 2) for _o, on, off in rounds],
                         goal=NoGoal("what task events (Flower) cost: ratio below 1 is the share kept"))
    assert entry["value"] > 0 and entry["baseline"] > 0
