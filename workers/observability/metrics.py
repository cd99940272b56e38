"""Task duration histograms, aggregated in Redis so every worker on every machine adds to one
(``shared_redis()``: the broker's, or on RabbitMQ the analytics Redis).

A ``task_postrun`` handler adds the task's wall time to a per-(task, state)
Redis hash of bucket counts, sum and count. Each process gathers its
observations for up to ``FLUSH_AFTER_S`` and writes them in one pipelined
round trip (a timer thread, and the process's exit): a round trip per task
cost the no-op task 8% of its throughput, and a histogram a second late
loses nothing an operator reads. The
exporter (workers/observability/exporter.py) turns the hashes into Prometheus histograms.
Labels are the task name (only registered tasks reach this point, so it is
bounded by the code) and the final state; never ids or arguments.

Redis rather than prometheus_client's multiprocess mode: that mode needs one
shared directory per machine and an exporter per machine; this needs neither.
"""
from __future__ import annotations

import logging
import os
import threading
import time

from workers.broker import shared_redis

log = logging.getLogger("workers.observability.metrics")

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
           float("inf"))
KEY_PREFIX = "jobs:metrics:duration:"

FLUSH_AFTER_S = 1.0

_started: dict[str, float] = {}
# (task, state) -> [bucket counts, count, sum]: this process's observations not yet in Redis.
_pending: dict[tuple[str, str], list] = {}
_pending_lock = threading.Lock()
_flush_timer: threading.Timer | None = None
_pending_pid = os.getpid()


def bucket_index(seconds: float) -> int:
    for index, bound in enumerate(BUCKETS):
        if seconds <= bound:
            return index
    return len(BUCKETS) - 1


def observe(client, task_name: str, state: str, seconds: float) -> None:
    key = f"{KEY_PREFIX}{task_name}|{state}"
    pipe = client.pipeline(transaction=False)
    pipe.hincrby(key, f"b{bucket_index(seconds)}", 1)
    pipe.hincrby(key, "count", 1)
    pipe.hincrbyfloat(key, "sum", seconds)
    pipe.execute()


def add(task_name: str, state: str, seconds: float, *, count: int = 1) -> None:
    """Gather an observation; it reaches Redis within FLUSH_AFTER_S."""
    global _flush_timer, _pending_pid
    with _pending_lock:
        if _pending_pid != os.getpid():   # a forked child: the parent's pending and timer are not ours
            _pending.clear()
            _flush_timer, _pending_pid = None, os.getpid()
        entry = _pending.setdefault((task_name, state), [[0] * len(BUCKETS), 0, 0.0])
        entry[0][bucket_index(seconds)] += count
        entry[1] += count
        entry[2] += seconds * count
        if _flush_timer is None:
            _flush_timer = threading.Timer(FLUSH_AFTER_S, flush)
            _flush_timer.daemon = True
            _flush_timer.start()


def flush() -> None:
    """Write the gathered observations in one round trip (the timer, and worker_process_shutdown)."""
    global _flush_timer
    with _pending_lock:
        pending = dict(_pending)
        _pending.clear()
        _flush_timer = None
    if not pending:
        return
    try:
        client = shared_redis()
        if client is None:
            return
        pipe = client.pipeline(transaction=False)
        for (task_name, state), (buckets, count, total) in pending.items():
            key = f"{KEY_PREFIX}{task_name}|{state}"
            for index, added in enumerate(buckets):
                if added:
                    pipe.hincrby(key, f"b{index}", added)
            pipe.hincrby(key, "count", count)
            pipe.hincrbyfloat(key, "sum", total)
        pipe.execute()
    except Exception as exc:  # noqa: BLE001 - metrics never fail a task
        log.debug("could not record task durations: %s", exc)


def read_histograms(client) -> dict[tuple[str, str], dict]:
    """{(task, state): {"buckets": [cumulative counts], "count": n, "sum": s}}"""
    found = {}
    for raw_key in client.scan_iter(match=KEY_PREFIX + "*", count=500):
        key = raw_key.decode() if isinstance(raw_key, bytes) else raw_key
        task, _, state = key[len(KEY_PREFIX):].rpartition("|")
        fields = {k.decode(): v.decode() for k, v in client.hgetall(raw_key).items()}
        cumulative, running = [], 0
        for index in range(len(BUCKETS)):
            running += int(fields.get(f"b{index}", 0))
            cumulative.append(running)
        found[(task, state)] = {"buckets": cumulative, "count": int(fields.get("count", 0)),
                                "sum": float(fields.get("sum", 0.0))}
    return found


def task_started(task_id=None, **_):
    """task_prerun receiver (connected in workers/lifecycle.py)."""
    if task_id:
        _started[task_id] = time.monotonic()


def task_finished(task_id=None, task=None, state=None, **_):
    """task_postrun receiver: add the task's wall time to its histogram in Redis."""
    started = _started.pop(task_id, None) if task_id else None
    if started is None or task is None:
        return
    add(task.name, state or "UNKNOWN", time.monotonic() - started)
