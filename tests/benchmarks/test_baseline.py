"""The no-op Celery task through the real broker and worker, against the raw broker floor."""
import json
import threading
import time
import uuid

import redis

from tests.benchmarks.conftest import NoGoal


def raw_redis_round_trips_per_second(url: str, count: int) -> float:
    """Push a task-sized JSON message, pop it on another connection, push a reply,
    wait for all replies: what the broker alone costs per message."""
    requests, replies = f"bench:req:{uuid.uuid4().hex}", f"bench:rep:{uuid.uuid4().hex}"
    payload = json.dumps({"id": "x" * 36, "task": "maintenance.noop", "args": [], "kwargs": {}})

    def consumer():
        client = redis.Redis.from_url(url)
        for _ in range(count):
            _key, message = client.brpop(requests, timeout=30)
            client.lpush(replies, message[:40])

    thread = threading.Thread(target=consumer)
    producer = redis.Redis.from_url(url)
    started = time.perf_counter()
    thread.start()
    for _ in range(count):
        producer.lpush(requests, payload)
    for _ in range(count):
        producer.brpop(replies, timeout=30)
    elapsed = time.perf_counter() - started
    thread.join()
    producer.delete(requests, replies)
    return count / elapsed


def test_noop_task_throughput(celery_app, noop_throughput, bench_record):
    raw = raw_redis_round_trips_per_second(celery_app.conf.broker_url, 2000)
    entry = bench_record("celery.noop_throughput_2proc", noop_throughput, "tasks/s", raw,
                         "raw Redis LPUSH/BRPOP round trip, same server", tasks=2000,
                         goal=NoGoal("the baseline every family's throughput is compared with"))
    assert entry["value"] > 0 and entry["baseline"] > 0
