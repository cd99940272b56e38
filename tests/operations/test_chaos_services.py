"""Redis and PostgreSQL restarted under load, on private servers started by the test."""
from __future__ import annotations

import subprocess
import time
import uuid

import pytest

from tests.operations.chaos import Figures, PrivateRedis, canary_rows, make_app, redeliveries, worker_env
from tests.operations.conftest import dead_letter_count, free_port, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.chaos, pytest.mark.slow_chaos]


def spawn(name, queues, env, tmp_path, concurrency=2):
    from tests.conftest import spawn_worker

    return spawn_worker(name, queues, concurrency, extra_env=env, log_path=tmp_path / f"{name}.log")


def test_redis_restart_under_load_loses_nothing(clean_db, tmp_path):
    from tests.conftest import stop_process, wait_for_workers

    server = PrivateRedis(tmp_path / "redis", free_port())
    server.start()
    broker, backend = server.url + "/0", server.url + "/1"
    app = make_app(broker, backend)
    env = worker_env(broker, backend)
    workers = [spawn(f"redis{i}", ["maintenance"], env, tmp_path) for i in range(2)]
    try:
        wait_for_workers(app, ["redis0", "redis1"])
        prefix = f"rr-{uuid.uuid4().hex[:6]}-"
        sent = []
        for i in range(2000):  # mixed: canaries with a DB effect, echoes, no-ops
            if i % 2 == 0:
                sent.append(app.send_task("maintenance.canary", args=[f"{prefix}{i}"]))
            elif i % 4 == 1:
                sent.append(app.send_task("maintenance.echo", args=[f"e{i}"]))
            else:
                sent.append(app.send_task("maintenance.noop"))
        canaries = 1000
        wait_until(lambda: canary_rows(clean_db, prefix) >= 100, timeout=120, what="load under way")
        before = canary_rows(clean_db, prefix)
        queued_at_restart = server.client().llen("maintenance")
        server.stop(graceful=True)  # SHUTDOWN: AOF fsynced, as a restart by an operator or orchestrator
        time.sleep(3)
        server.start()
        restarted_at = time.monotonic()
        wait_until(lambda: canary_rows(clean_db, prefix) > before + 5, timeout=60, interval=0.1,
                   what="workers resume after the Redis restart")
        recovery = time.monotonic() - restarted_at
        wait_until(lambda: canary_rows(clean_db, prefix) >= canaries, timeout=300, interval=0.5,
                   what="all canaries after the restart")
        outcomes = {"SUCCESS": 0}
        unresolved = []
        for result in sent:
            try:
                result.get(timeout=60)
                outcomes["SUCCESS"] += 1
            except Exception as exc:  # noqa: BLE001 - counted, and asserted below
                outcomes[type(exc).__name__] = outcomes.get(type(exc).__name__, 0) + 1
                unresolved.append(result.id)
        if unresolved:
            client = server.client()
            print("UNRESOLVED", unresolved, "unacked:", client.hlen("unacked"), "queue:", client.llen("maintenance"),
                  "deliveries:", [client.get(f"jobs:deliveries:{i}:0") for i in unresolved])
        figures = Figures("redis_restart", sent=len(sent), completed=outcomes["SUCCESS"],
                          lost=canaries - canary_rows(clean_db, prefix),
                          duplicated=redeliveries(server.client(), [r.id for r in sent]),
                          recovery_s=recovery,
                          extra={"queued_at_restart": queued_at_restart, "outcomes": outcomes})
        figures.report()
        assert figures.lost == 0
        assert figures.completed == len(sent), outcomes
        assert recovery < 30
        assert all(proc.poll() is None for proc in workers)
    finally:
        for proc in workers:
            stop_process(proc)
        server.stop(graceful=False)


def test_postgres_restart_under_load_retries_and_loses_nothing(tmp_path, celery_app):
    """A private PostgreSQL (pgserver in a temp dir), restarted while canaries write to it."""
    import pgserver
    import redis
    from pgserver.postgres_server import pg_ctl
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    from db.migrate import upgrade
    from tests.conftest import stop_process, wait_for_workers
    from tests.operations.conftest import redis_url_for

    pg = pgserver.get_server(tmp_path / "pg", cleanup_mode="stop")
    url = pg.get_uri("postgres").replace("postgresql://", "postgresql+psycopg://", 1)
    upgrade(url)
    engine = create_engine(url)
    broker, backend = redis_url_for(12), redis_url_for(13)
    for u in (broker, backend):
        redis.Redis.from_url(u).flushdb()
    app = make_app(broker, backend)
    env = worker_env(broker, backend, DATABASE_URL=url)
    workers = [spawn(f"pg{i}", ["maintenance"], env, tmp_path) for i in range(2)]
    try:
        wait_for_workers(app, ["pg0", "pg1"])
        prefix = f"pr-{uuid.uuid4().hex[:6]}-"
        tasks = 600
        sent = [app.send_task("maintenance.canary", args=[f"{prefix}{i}"]) for i in range(tasks)]
        wait_until(lambda: canary_rows(engine, prefix) >= 50, timeout=120, what="load under way")
        before = canary_rows(engine, prefix)
        engine.dispose()
        socket_dir = make_url(url).query["host"]
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=tmp_path / "pg", user=pg.system_user, timeout=60)
        time.sleep(3)  # an outage, not just a blip
        pg_ctl(["-w", "-o", '-h ""', "-o", f"-k {socket_dir}", "-l", str(pg.log), "start"],
               pgdata=tmp_path / "pg", user=pg.system_user, timeout=60)
        restarted_at = time.monotonic()
        wait_until(lambda: canary_rows(engine, prefix) > before + 5, timeout=90, interval=0.2,
                   what="workers resume after the PostgreSQL restart")
        recovery = time.monotonic() - restarted_at
        wait_until(lambda: canary_rows(engine, prefix) >= tasks, timeout=300, interval=0.5, what="all canaries")
        failures = 0
        for result in sent:
            try:
                result.get(timeout=120)
            except Exception:  # noqa: BLE001
                failures += 1
        retried = sum(1 for r in sent if (r.retries or 0) > 0)
        figures = Figures("postgres_restart", sent=tasks, completed=tasks - failures,
                          lost=tasks - canary_rows(engine, prefix),
                          duplicated=redeliveries(redis.Redis.from_url(broker), [r.id for r in sent]),
                          recovery_s=recovery, extra={"tasks_that_retried": retried})
        figures.report()
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
