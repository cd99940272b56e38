"""The broker (Redis or RabbitMQ) and PostgreSQL restarted under load, on private servers
started by the test.

Each runs in two sizes: the full figure for `make chaos` (marked slow_chaos), and a short
variant, under 40 s, that `make test` and the CI run, so a restart regression cannot hide
until someone runs the chaos suite. Only servers the test started are ever restarted.
"""
from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass

import pytest

from tests.conftest import CHAOS_BROKERS
from tests.operations.chaos import (Figures, PrivateRedis, canary_rows, make_app, redeliveries, runs_beyond_the_first,
                                   worker_env)
from tests.operations.conftest import dead_letter_count, free_port, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.chaos]


@dataclass(frozen=True)
class Size:
    figure: str          # key in .bench/chaos.json
    messages: int
    workers: int
    down_s: float        # how long the server stays down
    under_way: int       # effects seen before the restart
    hold_s: float = 0.0  # canary run time, so the short variant still has a backlog at the restart
    settle_s: float = 300.0  # deadline for every effect after the restart


BROKER_SIZES = [
    pytest.param(Size("broker_restart", 2000, 2, 3.0, 100), marks=pytest.mark.slow_chaos, id="full"),
    pytest.param(Size("broker_restart_short", 240, 1, 1.5, 10, hold_s=0.02, settle_s=60), id="short"),
]
POSTGRES_SIZES = [
    pytest.param(Size("postgres_restart", 600, 2, 3.0, 50), marks=pytest.mark.slow_chaos, id="full"),
    pytest.param(Size("postgres_restart_short", 80, 1, 1.5, 10, hold_s=0.02, settle_s=60), id="short"),
]


def spawn(name, queues, env, tmp_path, concurrency=2):
    from tests.conftest import spawn_worker

    return spawn_worker(name, queues, concurrency, extra_env=env, log_path=tmp_path / f"{name}.log",
                        include="tests.brokers.broker_tasks")


class PrivateBroker:
    """A broker server of the test's own, to stop and start: Redis with AOF (broker and results),
    or a RabbitMQ node on a loopback port of its own (results in the session's Redis)."""

    def __init__(self, kind: str, directory):
        from tests.conftest import redis_url_for

        self.kind = kind
        if kind == "redis":
            self.server = PrivateRedis(directory / "redis", free_port())
            self.server.start()
            self.broker, self.backend, self.extra = self.server.url + "/0", self.server.url + "/1", {}
        else:
            from tests.multihost.netns import LocalHost, rabbitmq

            if shutil.which("rabbitmqctl") is None:
                pytest.skip("no RabbitMQ installed: the RabbitMQ half of this test cannot run")
            self.local = LocalHost()
            directory.chmod(0o711)
            self.server = rabbitmq(self.local, directory / "rabbitmq", node=f"jobs-chaos-{uuid.uuid4().hex[:6]}@localhost",
                                   port=free_port(), dist_port=free_port())
            self.broker, self.backend = self.server.url, redis_url_for(13)
            self.extra = {"ANALYTICS_REDIS_URL": redis_url_for(12)}

    def stop(self) -> None:
        if self.kind == "redis":
            self.server.stop(graceful=True)  # SHUTDOWN: AOF fsynced, as a restart by an operator
        else:
            self.server.stop()               # rabbitmqctl stop: a clean node shutdown

    def start(self) -> None:
        self.server.start()

    def close(self) -> None:
        if self.kind == "redis":
            self.server.stop(graceful=False)
        else:
            self.local.close()


@pytest.mark.parametrize("broker", CHAOS_BROKERS)
@pytest.mark.parametrize("size", BROKER_SIZES)
def test_broker_restart_under_load_loses_nothing(clean_db, tmp_path, size, broker):
    from tests.conftest import stop_process, wait_for_workers
    from workers.observability.queues import queue_depths

    server = PrivateBroker(broker, tmp_path)
    app = make_app(server.broker, server.backend)
    env = worker_env(server.broker, server.backend, **server.extra)
    workers = [spawn(f"{broker}{i}", ["maintenance"], env, tmp_path) for i in range(size.workers)]
    try:
        wait_for_workers(app, [f"{broker}{i}" for i in range(size.workers)])
        prefix = f"rr-{uuid.uuid4().hex[:6]}-"
        sent = []
        for i in range(size.messages):  # mixed: canaries with a DB effect, echoes, no-ops
            if i % 2 == 0:
                sent.append(app.send_task("maintenance.counted_canary", args=[f"{prefix}{i}"],
                                          kwargs={"hold_seconds": size.hold_s} if size.hold_s else {}))
            elif i % 4 == 1:
                sent.append(app.send_task("maintenance.echo", args=[f"e{i}"]))
            else:
                sent.append(app.send_task("maintenance.noop"))
        canaries = size.messages // 2
        wait_until(lambda: canary_rows(clean_db, prefix) >= size.under_way, timeout=120, what="load under way")
        before = canary_rows(clean_db, prefix)
        queued_at_restart = queue_depths(app, ("maintenance",))["maintenance"]
        stopped_at = time.monotonic()
        server.stop()
        time.sleep(size.down_s)  # the outage itself
        server.start()  # returns once the broker answers (RabbitMQ: ~5 s of node boot)
        restarted_at = time.monotonic()
        wait_until(lambda: canary_rows(clean_db, prefix) > before + 5, timeout=60, interval=0.1,
                   what="workers resume after the broker restart")
        recovery, outage = time.monotonic() - restarted_at, time.monotonic() - stopped_at
        wait_until(lambda: canary_rows(clean_db, prefix) >= canaries, timeout=size.settle_s, interval=0.5,
                   what="all canaries after the restart")
        outcomes = {"SUCCESS": 0}
        for result in sent:
            try:
                result.get(timeout=60)
                outcomes["SUCCESS"] += 1
            except Exception as exc:  # noqa: BLE001 - counted, and asserted below
                outcomes[type(exc).__name__] = outcomes.get(type(exc).__name__, 0) + 1
        figures = Figures(f"{size.figure}[{broker}]", sent=len(sent), completed=outcomes["SUCCESS"],
                          lost=canaries - canary_rows(clean_db, prefix),
                          duplicated=runs_beyond_the_first(clean_db, prefix),
                          recovery_s=recovery,
                          extra={"queued_at_restart": queued_at_restart, "outage_s": round(outage, 1),
                                 "outcomes": outcomes})
        figures.report()
        assert queued_at_restart > 0, "the restart found no backlog: it tested nothing"
        assert figures.lost == 0
        assert figures.completed == len(sent), outcomes
        assert recovery < 30
        assert all(proc.poll() is None for proc in workers), [
            (proc.returncode, (tmp_path / f"{broker}{i}.log").read_text()[-2000:]) for i, proc in enumerate(workers)]
        assert dead_letter_count(clean_db) == 0
    finally:
        for proc in workers:
            stop_process(proc)
        server.close()


@pytest.mark.parametrize("size", POSTGRES_SIZES)
def test_postgres_restart_under_load_retries_and_loses_nothing(tmp_path, celery_app, size):
    """A private PostgreSQL (pgserver in a temp dir), restarted while canaries write to it."""
    import pgserver
    import redis
    from pgserver.postgres_server import pg_ctl
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    from db.migrate import upgrade
    from tests.conftest import stop_process, wait_for_workers
    from tests.conftest import redis_url_for

    pg = pgserver.get_server(tmp_path / "pg", cleanup_mode="stop")
    url = pg.get_uri("postgres").replace("postgresql://", "postgresql+psycopg://", 1)
    upgrade(url)
    engine = create_engine(url)
    broker, backend = redis_url_for(12), redis_url_for(13)
    for u in (broker, backend):
        redis.Redis.from_url(u).flushdb()
    app = make_app(broker, backend)
    env = worker_env(broker, backend, DATABASE_URL=url)
    workers = [spawn(f"pg{i}", ["maintenance"], env, tmp_path) for i in range(size.workers)]
    try:
        wait_for_workers(app, [f"pg{i}" for i in range(size.workers)])
        prefix = f"pr-{uuid.uuid4().hex[:6]}-"
        tasks = size.messages
        sent = [app.send_task("maintenance.canary", args=[f"{prefix}{i}"],
                              kwargs={"hold_seconds": size.hold_s} if size.hold_s else {}) for i in range(tasks)]
        wait_until(lambda: canary_rows(engine, prefix) >= size.under_way, timeout=120, what="load under way")
        before = canary_rows(engine, prefix)
        assert before < tasks, "every task finished before the restart: it tested nothing"
        engine.dispose()
        socket_dir = make_url(url).query["host"]
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=tmp_path / "pg", user=pg.system_user, timeout=60)
        time.sleep(size.down_s)  # an outage, not just a blip
        pg_ctl(["-w", "-o", '-h ""', "-o", f"-k {socket_dir}", "-l", str(pg.log), "start"],
               pgdata=tmp_path / "pg", user=pg.system_user, timeout=60)
        restarted_at = time.monotonic()
        wait_until(lambda: canary_rows(engine, prefix) > before + 5, timeout=90, interval=0.2,
                   what="workers resume after the PostgreSQL restart")
        recovery = time.monotonic() - restarted_at
        wait_until(lambda: canary_rows(engine, prefix) >= tasks, timeout=size.settle_s, interval=0.5,
                   what="all canaries")
        failures = 0
        for result in sent:
            try:
                result.get(timeout=120)
            except Exception:  # noqa: BLE001
                failures += 1
        # A retry re-sends the same id with retries=1, which the poison-pill guard counts under
        # its own key; AsyncResult.retries would need extended results, which are off.
        from workers.reliability.deliveries import key

        client = redis.Redis.from_url(broker)
        retried = sum(1 for r in sent if client.exists(key(r.id, 1)))
        figures = Figures(size.figure, sent=tasks, completed=tasks - failures,
                          lost=tasks - canary_rows(engine, prefix),
                          duplicated=redeliveries(redis.Redis.from_url(broker), [r.id for r in sent]),
                          recovery_s=recovery, extra={"tasks_that_retried": retried})
        figures.report()
        assert retried > 0, "no task met the outage: the restart tested nothing"
        assert figures.lost == 0 and failures == 0
        assert dead_letter_count(engine) == 0
        assert recovery < 60
    finally:
        for proc in workers:
            stop_process(proc)
        engine.dispose()
        # pg.cleanup() only stops the postmaster it started; the restarted one is stopped here.
        try:
            pg_ctl(["-w", "-m", "fast", "stop"], pgdata=tmp_path / "pg", user=pg.system_user, timeout=60)
        except subprocess.CalledProcessError:
            pass  # already stopped (the test failed before the restart)
        pg.cleanup()
