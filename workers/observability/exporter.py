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

One read serves every scrape for ``EXPORTER_CACHE_SECONDS``: a read is a Redis
SCAN and a database query, and a scraper (or anyone who can reach the port)
must not be able to turn its request rate into load on both. On a loopback
address the exporter may serve without credentials; any other address needs
``EXPORTER_BASIC_AUTH``, the same rule as Flower (workers/observability/auth.py).
"""
from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager

from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily

import settings
from workers.broker import redis_client, shared_redis
from workers.observability.auth import authorized, parse_basic_auth, require_credentials

log = logging.getLogger("workers.observability.exporter")

REALM = "jobs exporter"


@contextmanager
def _source_read(up: GaugeMetricFamily, source: str):
    """Read one source: ``jobs_exporter_source_up{source}`` says whether it worked, and a
    failure is logged, not raised, so the other source's metrics are still served."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - an unreadable source is what the gauge reports
        log.warning("%s metrics unavailable: %s", source, exc)
        up.add_metric([source], 0)
    else:
        up.add_metric([source], 1)


class JobsCollector:
    def __init__(self, app=None, cache_seconds: float | None = None,
                 clock: Callable[[], float] = time.monotonic):
        if app is None:
            from workers.celery_app import app
        self.app = app
        self.cache_seconds = settings.current().exporter_cache_seconds if cache_seconds is None else cache_seconds
        self._clock = clock
        # Held across a read, so concurrent scrapes of an expired cache wait for one read, not start one each.
        self._lock = threading.Lock()
        self._families: list | None = None
        self._read_at = 0.0

    def collect(self):
        with self._lock:
            now = self._clock()
            if self._families is None or now - self._read_at >= self.cache_seconds:
                self._families = list(self.read())
                self._read_at = now
            return list(self._families)

    def read(self):
        import celeryconfig

        up = GaugeMetricFamily("jobs_exporter_source_up", "1 if the exporter could read the source", labels=["source"])
        depth = GaugeMetricFamily("jobs_queue_depth", "Messages waiting in the queue", labels=["queue"])
        age = GaugeMetricFamily("jobs_queue_oldest_message_age_seconds",
                                "Age of the oldest waiting message (0 when the queue is empty)", labels=["queue"])
        durations = HistogramMetricFamily("jobs_task_duration_seconds", "Task wall time, all workers",
                                          labels=["task", "state"])
        with _source_read(up, "broker"):
            from workers.observability.metrics import BUCKETS, read_histograms
            from workers.observability.queues import oldest_message_age, queue_depths

            # Ages are read off Redis's lists; AMQP has no way to peek at a queue's head without
            # taking the message, so on RabbitMQ the age series is absent rather than a false 0.
            client = redis_client()
            now = time.time()
            for queue, waiting in queue_depths(self.app, celeryconfig.QUEUE_NAMES).items():
                depth.add_metric([queue], waiting)
                if client is not None:
                    oldest = oldest_message_age(client, queue, now)
                    age.add_metric([queue], oldest if oldest is not None else 0.0)
            shared = shared_redis()
            histograms = read_histograms(shared) if shared is not None else {}
            for (task, state), histogram in sorted(histograms.items()):
                buckets = [("+Inf" if math.isinf(bound) else repr(bound), count)
                           for bound, count in zip(BUCKETS, histogram["buckets"])]
                durations.add_metric([task, state], buckets, histogram["sum"])
        yield depth
        yield age
        yield durations

        beat = GaugeMetricFamily("jobs_beat_last_dispatch_timestamp_seconds",
                                 "Unix time the beat last dispatched the schedule entry", labels=["entry"])
        dead = GaugeMetricFamily("jobs_dead_letters", "Dead letters by status", labels=["status"])
        with _source_read(up, "database"):
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
        yield beat
        yield dead
        yield up


def build_registry(app=None, collector: JobsCollector | None = None):
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector or JobsCollector(app))
    return registry


def exporter_credentials(address: str) -> list[tuple[str, str]]:
    """EXPORTER_BASIC_AUTH's pairs; raises EndpointConfigError for a public address without any."""
    credentials = parse_basic_auth(settings.current().exporter_basic_auth, "EXPORTER_BASIC_AUTH")
    require_credentials("the exporter", address, credentials, "EXPORTER_BASIC_AUTH")
    return credentials


def with_basic_auth(wsgi_app, credentials: list[tuple[str, str]]):
    """The app behind basic auth; unchanged without credentials (a loopback address)."""
    if not credentials:
        return wsgi_app

    def guarded(environ, start_response):
        if authorized(environ.get("HTTP_AUTHORIZATION"), credentials):
            return wsgi_app(environ, start_response)
        start_response("401 Unauthorized", [("WWW-Authenticate", f'Basic realm="{REALM}", charset="UTF-8"'),
                                            ("Content-Type", "text/plain; charset=utf-8")])
        return [b"401 Unauthorized: this exporter needs basic auth\n"]
    return guarded


def serve(address: str, port: int, registry, credentials: list[tuple[str, str]]):
    """Start the HTTP server on a daemon thread; returns the server (``.shutdown()`` stops it)."""
    import socket
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    from prometheus_client import make_wsgi_app
    from prometheus_client.exposition import ThreadingWSGIServer

    class Server(ThreadingWSGIServer):
        pass

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, format, *args):  # noqa: A002 - a line per scrape on stderr is noise
            pass

    # The family the address resolves to, so an IPv6 address binds as well as an IPv4 one.
    family, _, _, _, sockaddr = socket.getaddrinfo(address, port, type=socket.SOCK_STREAM,
                                                   flags=socket.AI_PASSIVE)[0]
    Server.address_family = family
    server = make_server(sockaddr[0], port, with_basic_auth(make_wsgi_app(registry), credentials), Server,
                         handler_class=QuietHandler)
    threading.Thread(target=server.serve_forever, name="exporter-http", daemon=True).start()
    return server


def run_exporter(address: str = "127.0.0.1", port: int = 9808) -> int:
    credentials = exporter_credentials(address)
    serve(address, port, build_registry(), credentials)
    print(f"exporter: http://{address}:{port}/metrics ({'basic auth' if credentials else 'no auth, loopback'})",
          flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0
