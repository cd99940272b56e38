"""Framework overhead (issue 18): our maintenance.noop on our worker against a bare Celery app with
the same broker, serializer, acks_late, prefetch 1 and task events (tests/benchmarks/stock_app.py),
and the price of task events (what Flower costs) on the same bare app. All drained from a full queue
by 2 worker processes, in the same run."""
from tests.benchmarks import stock_app
from tests.benchmarks.conftest import Goal, NoGoal, measure_drain_throughput

TASKS = 3000


def _stock(celery_app, events: str) -> float:
    return measure_drain_throughput(celery_app, lambda n: [stock_app.noop.delay() for _ in range(n)], TASKS,
                                    queue="stock", name=f"stock-{events}", app_module="tests.benchmarks.stock_app",
                                    extra_env={"STOCK_EVENTS": events})


def test_our_noop_against_stock_celery(celery_app, noop_drain_throughput, bench_record):
    stock_on = _stock(celery_app, "on")
    stock_off = _stock(celery_app, "off")
    bench_record("celery.noop_vs_stock_2proc", noop_drain_throughput, "tasks/s", stock_on,
                 "stock Celery no-op, same broker, JSON, acks_late, prefetch 1, events on (same run)",
                 tasks=TASKS, goal=Goal("ratio", ">=", 0.9, "our guarantees cost at most 10% of stock Celery"))
    entry = bench_record("celery.task_events_price_2proc", stock_on, "tasks/s", stock_off,
                         "the same stock no-op with task events off (same run)", tasks=TASKS,
                         goal=NoGoal("what task events (Flower) cost: ratio below 1 is the share kept"))
    assert entry["value"] > 0 and entry["baseline"] > 0
