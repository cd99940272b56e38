"""``python -m workers exporter``: the Prometheus metrics Flower lacks.

Everything is read at scrape time (no background polling), from the broker and
the database:

- ``jobs_queue_depth{queue}``: messages waiting in each queue;
- ``jobs_queue_oldest_message_age_seconds{queue}``: age of the next message to be
  consumed, from the ``sent_at`` header every publish carries (workers/lifecycle.py);
- ``jobs_beat_last_dispatch_timestamp_seconds{entry}``: when the singleton beat last
  sent each schedule entry (workers/reliability/singleton_beat.py);
- ``jobs_task_duration_seconds{task,state}``: histogram over all workers (workers/observability/metrics.py);
- ``jobs_dead_letters{status}``: rows in ``dead_letters``;
- ``jobs_exporter_source_up{source}``: 1 when the broker / database could be read.
"""
from __future__ import annotations

import logging
import math
import time

from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily

log = logging.getLogger("workers.observability.exporter")


class JobsCollector:
    def __init__(self, app=None):
        if app is None:
            from workers.celery_app import app
        self.app = app

    def _redis(self):
        import redis

        return redis.Redis.from_url(str(self.app.conf.broker_url), socket_timeout=3, socket_connect_timeout=3)

    def collect(self):
        import celeryconfig

        up = GaugeMetricFamily("jobs_exporter_source_up", "1 if the exporter could read the source", labels=["source"])
        depth = GaugeMetricFamily("jobs_queue_depth", "Messages waiting in the queue", labels=["queue"])
        age = GaugeMetricFamily("jobs_queue_oldest_message_age_seconds",
                                "Age of the oldest waiting message (0 when the queue is empty)", labels=["queue"])
        durations = HistogramMetricFamily("jobs_task_duration_seconds", "Task wall time, all workers",
                                          labels=["task", "state"])
        try:
            from workers.observability.metrics import BUCKETS, read_histograms
            from workers.observability.queues import oldest_message_age, queue_depths

            client = self._redis()
            now = time.time()
            for queue, waiting in queue_depths(self.app, celeryconfig.QUEUE_NAMES).items():
                depth.add_metric([queue], waiting)
                oldest = oldest_message_age(client, queue, now)
                age.add_metric([queue], oldest if oldest is not None else 0.0)
            for (task, state), histogram in sorted(read_histograms(client).items()):
                buckets = [("+Inf" if math.isinf(bound) else repr(bound), count)
                           for bound, count in zip(BUCKETS, histogram["buckets"])]
                durations.add_metric([task, state], buckets, histogram["sum"])
            up.add_metric(["broker"], 1)
        except Exception as exc:  # noqa: BLE001
            log.warning("broker metrics unavailable: %s", exc)
            up.add_metric(["broker"], 0)
        yield depth
        yield age
        yield durations

        beat = GaugeMetricFamily("jobs_beat_last_dispatch_timestamp_seconds",
                                 "Unix time the beat last dispatched the schedule entry", labels=["entry"])
        dead = GaugeMetricFamily("jobs_dead_letters", "Dead letters by status", labels=["status"])
        try:
            from db.heartbeats import beat_dispatches
            from db.session import new_session
            from workers.reliability.dead_letters import summary

            entries = set(self.app.conf.beat_schedule or {})
            with new_session() as session:
                for entry, at in sorted(beat_dispatches(session).items()):
                    if entry in entries:  # bounded by the schedule
                        beat.add_metric([entry], at.timestamp())
                letters = summary(session)
            for status in ("dead", "retried"):
                dead.add_metric([status], letters[status])
            up.add_metric(["database"], 1)
        except Exception as exc:  # noqa: BLE001
            log.warning("database metrics unavailable: %s", exc)
            up.add_metric(["database"], 0)
        yield beat
        yield dead
        yield up


def build_registry(app=None):
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry(auto_describe=False)
    registry.register(JobsCollector(app))
    return registry


def run_exporter(address: str = "127.0.0.1", port: int = 9808) -> int:
    from prometheus_client import start_http_server

    start_http_server(port, addr=address, registry=build_registry())
    print(f"exporter: http://{address}:{port}/metrics", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0
