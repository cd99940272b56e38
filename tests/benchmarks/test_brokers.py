"""The broker's price per message: our no-op drained from a full queue by 2 worker processes on
RabbitMQ (quorum queues, publisher confirms) against the same on Redis, alternating, same run.

A context figure for the broker choice (docs/operations.md, "Choosing Redis or RabbitMQ") and
the README's capacity estimate: a real task's own work (a feed chunk is ~1.4 s) dwarfs it."""
import statistics

from tests.benchmarks.conftest import NoGoal, measure_drain_throughput
from tests.conftest import Isolated

TASKS = 3000


def _drain(iso: Isolated) -> float:
    return measure_drain_throughput(
        iso.app, lambda n: [iso.app.send_task("maintenance.noop") for _ in range(n)], TASKS,
        queue="maintenance", name=f"noop-{iso.kind}", extra_env=iso.env)


def test_noop_on_rabbitmq_against_redis(celery_app, bench_record):
    redis_side, rabbit_side = Isolated(celery_app, "redis"), Isolated(celery_app, "amqp")
    try:
        rounds = [(_drain(rabbit_side), _drain(redis_side)) for _ in range(2)]
    finally:
        redis_side.close()
        rabbit_side.close()
    rabbit, redis = (statistics.median(column) for column in zip(*rounds))
    entry = bench_record("brokers.noop_rabbitmq_vs_redis_2proc", rabbit, "tasks/s", redis,
                         "the same no-op drained from Redis by 2 processes (same run)", tasks=TASKS,
                         statistic="median of 2 alternating rounds", ratios=[round(r / d, 2) for r, d in rounds],
                         goal=NoGoal("what quorum queues and confirms cost per message: ratio below 1 is "
                                     "the share of Redis's rate kept"))
    assert entry["value"] > 0 and entry["baseline"] > 0
