"""The exporter's guards: no public address without credentials, basic auth, and one read per cache window.

Real HTTP on ephemeral ports, real Redis and PostgreSQL. Reads are counted
where they land: Redis's own SCAN counter (INFO commandstats) and the SQL the
database engine sends.
"""
from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
import uuid

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import event

from tests.conftest import ROOT, stop_process
from tests.operations.conftest import free_port, wait_until

pytestmark = pytest.mark.integration

CREDENTIALS = "ops:s3cret:with-colon,scraper:other-pass"


def get(port: int, auth: str | None = None):
    """(status, headers, body) of GET /metrics, 4xx included."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics")
    if auth is not None:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read().decode()


def samples(body: str) -> dict:
    found = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def exporter_env(**extra) -> dict:
    env = dict(os.environ)
    env.pop("EXPORTER_BASIC_AUTH", None)
    env.update(extra)
    return env


def port_is_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


# --- Refusing a public address -------------------------------------------------------------------

@pytest.mark.parametrize("address", ["0.0.0.0", "::", "10.1.2.3", ""])
def test_a_public_address_without_credentials_exits_2(address):
    port = free_port()
    done = subprocess.run([sys.executable, "-m", "workers", "exporter", "--address", address, "--port", str(port)],
                          cwd=ROOT, env=exporter_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert f"refusing to start the exporter on non-loopback address {address!r} without credentials" in done.stderr
    assert "EXPORTER_BASIC_AUTH=user:password" in done.stderr
    assert not port_is_open(port)


def test_malformed_credentials_exit_2():
    done = subprocess.run([sys.executable, "-m", "workers", "exporter", "--port", str(free_port())],
                          cwd=ROOT, env=exporter_env(EXPORTER_BASIC_AUTH="ops:pw,nopassword"),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "EXPORTER_BASIC_AUTH must be user:password" in done.stderr


def test_loopback_needs_no_credentials_and_any_address_accepts_them(monkeypatch):
    from workers.observability.auth import EndpointConfigError
    from workers.observability.exporter import exporter_credentials

    monkeypatch.delenv("EXPORTER_BASIC_AUTH", raising=False)
    for address in ("127.0.0.1", "127.3.4.5", "::1", "localhost"):
        assert exporter_credentials(address) == []
    with pytest.raises(EndpointConfigError):
        exporter_credentials("192.168.1.10")
    monkeypatch.setenv("EXPORTER_BASIC_AUTH", CREDENTIALS)
    assert exporter_credentials("0.0.0.0") == [("ops", "s3cret:with-colon"), ("scraper", "other-pass")]


def test_a_public_address_with_credentials_serves_only_authenticated_scrapes(tmp_path):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "workers", "exporter", "--address", "0.0.0.0", "--port", str(port)],
                            cwd=ROOT, env=exporter_env(EXPORTER_BASIC_AUTH=CREDENTIALS),
                            stdout=open(tmp_path / "exporter.log", "wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        def answered():
            try:
                return get(port)
            except OSError:
                return None

        status, headers, _ = wait_until(answered, timeout=60, interval=0.3, what="exporter")
        assert status == 401
        assert headers["WWW-Authenticate"].startswith('Basic realm="jobs exporter"')
        assert get(port, "ops:s3cret:with-colon")[0] == 200
        assert get(port, "scraper:other-pass")[0] == 200
        assert get(port, "ops:wrong")[0] == 401
        assert get(port, "scraper:s3cret:with-colon")[0] == 401      # a password of another user
        assert get(port, "ops:s3cret")[0] == 401                      # a prefix of the password
    finally:
        stop_process(proc)


# --- One read per cache window -------------------------------------------------------------------

class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Reads:
    """SCANs Redis served and statements the database engine sent, since the last call."""

    def __init__(self, engine):
        self.redis = redis.Redis.from_url(os.environ["BROKER_URL"])
        self.engine = engine
        self.statements = 0
        event.listen(engine, "before_cursor_execute", self._count)
        self._last = self.snapshot()

    def _count(self, *_args, **_kwargs):
        self.statements += 1

    def snapshot(self) -> tuple[int, int]:
        scans = self.redis.info("commandstats").get("cmdstat_scan", {}).get("calls", 0)
        return scans, self.statements

    def delta(self) -> tuple[int, int]:
        now = self.snapshot()
        scans, statements = now[0] - self._last[0], now[1] - self._last[1]
        self._last = now
        return scans, statements

    def close(self):
        event.remove(self.engine, "before_cursor_execute", self._count)
        self.redis.close()


@pytest.fixture
def cached_exporter(celery_app, engine):
    from db.session import get_engine
    from workers.observability.exporter import JobsCollector, build_registry, serve

    clock = Clock()
    collector = JobsCollector(celery_app, cache_seconds=5.0, clock=clock)
    port = free_port()
    server = serve("127.0.0.1", port, build_registry(collector=collector), credentials=[])
    # The engine the exporter will use: the session-scoped `engine` fixture may be an older one
    # if an earlier test reset the process's engine.
    reads = Reads(get_engine())
    celery_app.control.purge()
    try:
        yield port, clock, reads
    finally:
        server.shutdown()
        server.server_close()
        reads.close()
        celery_app.control.purge()


def feed_depth(port: int) -> float:
    status, _, body = get(port)
    assert status == 200
    found = samples(body)
    assert found[("jobs_exporter_source_up", (("source", "broker"),))] == 1
    assert found[("jobs_exporter_source_up", (("source", "database"),))] == 1
    return found[("jobs_queue_depth", (("queue", "feed"),))]


def dead_letters_shown(port: int) -> float:
    feed_depth(port)  # both sources up
    return samples(get(port)[2])[("jobs_dead_letters", (("status", "dead"),))]


def add_dead_letter() -> None:
    """A change the next real read must show; a row, since the session's worker drains every queue."""
    from db.session import session_scope
    from workers.reliability.dead_letters import Failure, record

    with session_scope() as session:
        record(session, Failure(task_id=str(uuid.uuid4()), task_name="feed.some_task", exception_type="KeyError",
                                exception_message="", error_code="unknown_task"))


def test_scrapes_within_the_window_share_one_read(clean_db, cached_exporter):
    # clean_db first: its TRUNCATE must run before the fixture starts counting statements.
    port, clock, reads = cached_exporter
    before = dead_letters_shown(port)
    first_scans, first_statements = reads.delta()
    assert first_scans >= 1 and first_statements >= 1

    add_dead_letter()
    reads.delta()                              # forget the insert's own statements
    clock.now += 4.9
    assert dead_letters_shown(port) == before  # the cached read, taken before the row
    assert reads.delta() == (0, 0)

    clock.now += 0.2                           # 5.1 s after the first read: the window is over
    assert dead_letters_shown(port) == before + 1
    scans, statements = reads.delta()
    assert scans >= 1 and statements == first_statements


def test_concurrent_scrapes_of_an_expired_cache_make_one_read(cached_exporter):
    port, clock, reads = cached_exporter
    feed_depth(port)
    _, one_read = reads.delta()
    clock.now += 10
    start = threading.Barrier(4)
    statuses: list[int] = []

    def scrape():
        start.wait()
        statuses.append(get(port)[0])

    threads = [threading.Thread(target=scrape) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert statuses == [200] * 4
    assert reads.delta()[1] == one_read


def test_the_cache_window_comes_from_exporter_cache_seconds(monkeypatch, celery_app):
    import settings
    from workers.observability.exporter import JobsCollector

    monkeypatch.setenv("EXPORTER_CACHE_SECONDS", "7.5")
    assert JobsCollector(celery_app).cache_seconds == 7.5
    # Below a second a scraper's rate would again set the load on Redis and PostgreSQL.
    with pytest.raises(settings.SettingsError, match="EXPORTER_CACHE_SECONDS='0.2' is below its minimum 1"):
        settings.load({"EXPORTER_CACHE_SECONDS": "0.2"})
