"""What the reliability hooks cost each task, against the broker round trip they ride on."""
import time
import uuid

import redis

from tests.benchmarks.conftest import NoGoal


def test_per_task_guard_overhead(celery_app, bench_record):
    """Delivery counting (poison pills) + duration histogram: two pipelined Redis round trips per task."""
    from workers.reliability import deliveries
    from workers.observability.metrics import observe

    client = redis.Redis.from_url(celery_app.conf.broker_url)
    count = 3000
    started = time.perf_counter()
    for _ in range(count):
        client.ping()
    ping_us = (time.perf_counter() - started) / count * 1e6

    prefix = f"bench-{uuid.uuid4().hex[:6]}"
    started = time.perf_counter()
    for i in range(count):
        deliveries.check_delivery(f"{prefix}-{i}", 0)
        observe(client, "bench.task", "SUCCESS", 0.001)
    guard_us = (time.perf_counter() - started) / count * 1e6
    client.delete(*client.keys(f"{deliveries.KEY_PREFIX}{prefix}-*"), "jobs:metrics:duration:bench.task|SUCCESS")
    entry = bench_record("operations.guard_overhead_per_task", guard_us, "µs/task", ping_us,
                         "one Redis PING round trip, same server", tasks=count,
                         goal=NoGoal("what the reliability hooks cost, set against the round trip they add"))
    assert entry["value"] > 0
