"""Fixtures: a real PostgreSQL migrated with Alembic, a real Redis, a real worker.

By default the embedded services under .data/ are used; DATABASE_URL and
BROKER_URL point the suite at other servers. Each session gets a database
of its own, created here and dropped at the end, so a run never touches
the application's data.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
_state: dict = {}


def pytest_configure(config):
    from workers.dev import embedded

    saved_env = {k: os.environ.get(k) for k in ("DATABASE_URL", "BROKER_URL", "RESULT_BACKEND", "CACHE_URL")}
    # db 10/11 of the embedded Redis: a running `make run` keeps its queues in db 0.
    # Services already running (a `make run` beside us) are reused and left running;
    # the ones started here are stopped when the run ends.
    started = embedded.ensure_environment(broker_db=10, backend_db=11, cache_db=14)
    if not os.environ.get("CACHE_URL"):  # the broker was given: its Redis's db 14 holds the test cache
        os.environ["CACHE_URL"] = redis_url_for(14)
    base_url = make_url(os.environ["DATABASE_URL"])
    if base_url.drivername in ("postgresql", "postgres"):
        base_url = base_url.set(drivername="postgresql+psycopg")
    test_db = f"jobs_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(base_url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{test_db}"'))
    admin.dispose()
    test_url = base_url.set(database=test_db).render_as_string(hide_password=False)
    _state.update(admin_url=base_url.set(database="postgres"), test_db=test_db, test_url=test_url,
                  saved_env=saved_env, started=started)
    os.environ["DATABASE_URL"] = test_url

    from db.migrate import upgrade
    from db.session import reset_engine
    from tasks.upkeep.jobs import ensure_partitions

    # What `python -m workers migrate` does: the migrations, this month's partitions and 4 ahead, the search index.
    upgrade(test_url)
    ensure_partitions()
    from tasks.search.engines import PostgresEngine
    from tasks.search.reindex import ensure_current

    ensure_current(PostgresEngine())
    reset_engine()


def pytest_unconfigure(config):
    if "test_db" not in _state:
        return
    from db.session import reset_engine

    reset_engine()
    admin = create_engine(_state["admin_url"], isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{_state["test_db"]}" WITH (FORCE)'))
    admin.dispose()
    for key, value in _state["saved_env"].items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    if _state["started"] and not os.environ.get("KEEP_EMBEDDED"):
        from workers.dev import embedded

        embedded.stop(_state["started"])


@pytest.fixture(scope="session")
def database_url() -> str:
    return _state["test_url"]


@pytest.fixture(scope="session")
def engine(database_url):
    from db.session import get_engine

    return get_engine()


@pytest.fixture
def db_session(engine):
    """A session inside an outer transaction that is rolled back: plain-function tests."""
    from sqlalchemy.orm import Session

    connection = engine.connect()
    outer = connection.begin()
    session = Session(bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False)
    try:
        yield session
    finally:
        session.close()
        outer.rollback()
        connection.close()


# search_index_versions says which index partitions exist, like alembic_version says which
# tables do: emptying it would leave the partitions without an active version.
APP_TABLES_SQL = """
SELECT string_agg(format('%I.%I', schemaname, tablename), ', ')
FROM pg_tables WHERE schemaname = 'public' AND tablename NOT IN ('alembic_version', 'search_index_versions')
"""


@contextmanager
def scratch_database(database_url: str, prefix: str) -> Iterator[str]:
    """A new, empty database on the test server, dropped (with its connections) afterwards; yields its URL."""
    url = make_url(database_url)
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def truncate_all(engine) -> None:
    with engine.begin() as connection:
        tables = connection.execute(text(APP_TABLES_SQL)).scalar()
        if tables:
            connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


@pytest.fixture
def clean_db(engine):
    """For tests whose data must be committed (real workers read it): empty tables after."""
    truncate_all(engine)
    yield engine
    truncate_all(engine)


@pytest.fixture(scope="session")
def celery_app():
    from workers import app

    app.loader.import_default_modules()
    return app


@pytest.fixture(scope="session")
def broker_clean(celery_app):
    celery_app.control.purge()  # leftovers of an aborted earlier run
    return celery_app


@pytest.fixture(scope="session")
def celery_worker(broker_clean):
    """A real in-process worker consuming every queue from the real broker."""
    import celeryconfig
    from celery.contrib.testing.worker import start_worker

    app = broker_clean
    with start_worker(app, pool="threads", concurrency=4, perform_ping_check=False,
                      queues=list(celeryconfig.QUEUE_NAMES), shutdown_timeout=30.0,
                      loglevel="WARNING") as worker:
        yield worker


def spawn_worker(name: str, queues: list[str], concurrency: int = 1, pool: str = "prefork",
                 extra_env: dict | None = None, log_path: Path | None = None,
                 app_module: str = "workers", include: str | None = None) -> subprocess.Popen:
    """A real worker in its own process, with the test session's database and broker
    (``include``: a test-only task module to load beside the app's)."""
    env = dict(os.environ, **(extra_env or {}))
    argv = [sys.executable, "-m", "celery", "-A", app_module, "worker", "-Q", ",".join(queues),
            "-n", f"{name}-{uuid.uuid4().hex[:6]}@%h", f"--concurrency={concurrency}", f"--pool={pool}",
            "--loglevel=WARNING", "--without-gossip", "--without-mingle", *(["--include", include] if include else [])]
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL
    return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)


def wait_for_workers(app, names_prefixes: list[str], timeout: float = 60.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        replies = app.control.ping(timeout=0.5) or []
        names = [n for reply in replies for n in reply]
        if all(any(n.startswith(p) for n in names) for p in names_prefixes):
            return names
    raise TimeoutError(f"workers {names_prefixes} did not answer within {timeout}s")


def stop_process(proc: subprocess.Popen, timeout: float = 30.0) -> None:
    import signal

    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture
def worker_processes(celery_app):
    """Start real worker processes with ``start(name, queues, concurrency)``; all are stopped after."""
    started: list[subprocess.Popen] = []

    def start(name: str, queues: list[str], concurrency: int = 1, **kwargs) -> subprocess.Popen:
        proc = spawn_worker(name, queues, concurrency, **kwargs)
        started.append(proc)
        wait_for_workers(celery_app, [name])
        return proc

    yield start
    for proc in started:
        stop_process(proc)


def redis_url_for(db: int) -> str:
    base = os.environ["BROKER_URL"].rsplit("/", 1)[0]
    return f"{base}/{db}"


RABBITMQ_URL = os.environ.get("TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672")
BROKERS = ("redis", "amqp")


def rabbitmq_answers() -> bool:
    import socket

    from kombu.utils.url import url_to_parts

    parts = url_to_parts(RABBITMQ_URL)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5672), timeout=2):
            return True
    except OSError:
        return False


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


class RabbitVhost:
    """A RabbitMQ virtual host and a user of its own (a random password, so a test can tell
    whether it leaked), created here and deleted, queues and all, by ``remove``."""

    def __init__(self, prefix: str = "jobs_test"):
        if not rabbitmq_answers():
            pytest.skip(f"no RabbitMQ answers at {RABBITMQ_URL.rpartition('@')[2]} (set TEST_RABBITMQ_URL): "
                        "the RabbitMQ half of this test cannot run")
        self.name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        self.user, self.password = self.name, uuid.uuid4().hex
        rabbitmqctl("add_vhost", self.name)
        rabbitmqctl("add_user", self.user, self.password)
        rabbitmqctl("set_permissions", "-p", self.name, self.user, ".*", ".*", ".*")
        address = RABBITMQ_URL.rpartition("@")[2].partition("://")[2] or RABBITMQ_URL.rpartition("@")[2]
        self.url = f"amqp://{self.user}:{self.password}@{address}/{self.name}"

    def remove(self) -> None:
        rabbitmqctl("delete_vhost", self.name)
        rabbitmqctl("delete_user", self.user)


class Isolated:
    """A broker and result backend of their own with workers spawned on them, so the session's
    in-process worker cannot take these tests' messages: Redis db 12/13, or (``kind="amqp"``)
    a RabbitMQ vhost of its own with results in Redis db 13 and analytics counters in db 12."""

    def __init__(self, celery_app, kind: str = "redis"):
        from celery import Celery

        import celeryconfig

        self.kind = kind
        self.vhost = RabbitVhost() if kind == "amqp" else None
        self.broker_url = self.vhost.url if self.vhost else redis_url_for(12)
        self.backend_url = redis_url_for(13)
        self.flush()
        self.app = Celery("isolated", set_as_current=False)
        self.app.config_from_object("celeryconfig")
        self.app.conf.update(broker_url=self.broker_url, result_backend=self.backend_url,
                             **celeryconfig.broker_conf(self.broker_url))
        self.env = {"BROKER_URL": self.broker_url, "RESULT_BACKEND": self.backend_url}
        if self.vhost:
            self.env["ANALYTICS_REDIS_URL"] = redis_url_for(12)
        self.procs = []

    def flush(self):
        import redis

        for url in (redis_url_for(12), self.backend_url):
            redis.Redis.from_url(url).flushdb()

    def start_worker(self, name: str, queues: list[str], concurrency: int = 1, extra_env: dict | None = None,
                     log_path=None, wait: bool = True, **kwargs):
        proc = spawn_worker(name, queues, concurrency, extra_env={**self.env, **(extra_env or {})},
                            log_path=log_path, **kwargs)
        self.procs.append(proc)
        if wait:
            wait_for_workers(self.app, [name])
        return proc

    def stop(self):
        for proc in self.procs:
            stop_process(proc)
        self.procs.clear()

    def close(self):
        self.stop()
        self.flush()
        if self.vhost:
            self.app.pool.force_close_all()
            self.vhost.remove()


@pytest.fixture
def isolated(celery_app):
    """A broker of its own with workers spawned on them (``isolated.start_worker``); all stopped and flushed after."""
    iso = Isolated(celery_app)
    try:
        yield iso
    finally:
        iso.close()


def _isolated_on(celery_app, kind: str):
    iso = Isolated(celery_app, kind)
    try:
        yield iso
    finally:
        iso.close()


@pytest.fixture(params=BROKERS)
def on_broker(request, celery_app):
    """``isolated`` on each broker in turn: Redis, then RabbitMQ (quorum queues, a vhost of its own)."""
    yield from _isolated_on(celery_app, request.param)


# The chaos suite on both brokers: `make chaos` runs the RabbitMQ half, `make test` (and CI)
# the Redis half, to stay inside its time budget; tests/brokers/ covers RabbitMQ in both.
CHAOS_BROKERS = ["redis", pytest.param("amqp", marks=pytest.mark.slow_chaos)]


@pytest.fixture(params=CHAOS_BROKERS)
def chaos_broker(request, celery_app):
    """``on_broker`` for the chaos tests: the RabbitMQ run is marked slow_chaos."""
    yield from _isolated_on(celery_app, request.param)
