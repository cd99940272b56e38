"""``python -m workers run``: the whole system on one machine, for development.

Starts the embedded PostgreSQL and Redis when DATABASE_URL / BROKER_URL are
unset, migrates, then runs one worker per queue group, beat and Flower as
child processes with the metrics exporter, loads the demo workload, and (with --once) stops them all.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import settings
from workers.dev.embedded import data_dir

# Queue groups: images are CPU- and memory-heavy and get their own pool so a
# burst of uploads cannot starve notifications; feed scoring runs long chunks.
WORKER_GROUPS = {
    "images": ["images"],
    "core": ["mentions", "notifications", "engagement", "upkeep", "analytics", "graph", "moderation", "search", "cache",
             "maintenance"],
    "feed": ["feed"],
    # Email and push wait on remote servers; their own pool keeps a slow SMTP server
    # from holding up notifications.
    "delivery": ["delivery"],
}


def _celery(*args: str) -> list[str]:
    return [sys.executable, "-m", "celery", "-A", "workers", *args]


def worker_argv(group: str, queues: list[str], concurrency: int = 2) -> list[str]:
    return _celery("worker", "-Q", ",".join(queues), "-n", f"{group}@%h",
                   f"--concurrency={concurrency}", "--loglevel=INFO")


def beat_argv() -> list[str]:
    return _celery("beat", f"--schedule={data_dir() / 'celerybeat-schedule'}", "--loglevel=INFO")


def _wait_for_workers(app, expected: int, timeout: float = 60.0) -> list[str]:
    deadline = time.monotonic() + timeout
    names: list[str] = []
    while time.monotonic() < deadline:
        replies = app.control.ping(timeout=1.0) or []
        names = sorted(name for reply in replies for name in reply)
        if len(names) >= expected:
            return names
    raise RuntimeError(f"only {len(names)} of {expected} workers answered within {timeout:.0f}s: {names}")


def partition_summary(report: dict) -> str:
    created = [name for table in report["tables"].values() for name in table.get("created", [])]
    return f"{len(created)} created" if created else "all present"


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt


def run(once: bool = False, demo: bool = True) -> int:
    from workers.dev import embedded

    # The children run in their own sessions so a terminal's Ctrl-C reaches only
    # this process; SIGTERM (from `timeout`, systemd, an IDE) must therefore take
    # the same clean path, or the workers, beat and Flower would be orphaned.
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    from workers.observability.flower import resolve_credentials

    print("resolving services ...", flush=True)
    started = embedded.ensure_environment()
    found = settings.current()
    print(f"  database: {settings.mask_url(found.database_url)}\n  broker:   {settings.mask_url(found.broker_url)}"
          + (f"\n  started embedded: {', '.join(started)}" if started else ""))

    from db.migrate import upgrade
    from workers.celery_app import app
    from workers.lifecycle import check_visibility_timeout

    check_visibility_timeout(app.conf)
    upgrade()
    from tasks.upkeep import jobs

    made = jobs.ensure_partitions()
    print(f"  migrations applied; partitions: {partition_summary(made)}")
    from workers.cli import ensure_search_index

    ensure_search_index()
    if not os.environ.get("BACKUP_KEY"):
        from tasks.upkeep.backup import new_identity_text
        from workers.private_files import generated_once

        # A file path, never the key: BACKUP_KEY is inherited by every child process.
        os.environ["BACKUP_KEY"] = str(generated_once(data_dir() / "backup.key", new_identity_text))
    from workers.dev import delivery_peers

    peers = delivery_peers.start(data_dir())
    if peers.started:
        print(f"  started {', '.join(peers.started)}: emails go to {peers.mail_dir or 'SMTP_URL'}, "
              f"pushes to {peers.push_dir}")

    logs = data_dir() / "logs"
    logs.mkdir(exist_ok=True)
    env = dict(os.environ)
    # Generated into a 0600 file whose path is printed, never the password itself.
    env["FLOWER_BASIC_AUTH"] = resolve_credentials("127.0.0.1")

    commands = {f"worker-{group}": worker_argv(group, queues) for group, queues in WORKER_GROUPS.items()}
    commands["beat"] = beat_argv()
    commands["flower"] = [sys.executable, "-m", "workers", "flower", "--address", "127.0.0.1", "--port",
                          str(found.flower_port)]
    commands["exporter"] = [sys.executable, "-m", "workers", "exporter", "--address", "127.0.0.1", "--port",
                            str(found.exporter_port)]
    children: dict[str, subprocess.Popen] = {}

    def stop_children() -> None:
        for proc in children.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        for proc in children.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()

    try:
        for name, argv in commands.items():
            log_file = open(logs / f"{name}.log", "ab")
            children[name] = subprocess.Popen(argv, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                                              start_new_session=True)
        print(f"  started {', '.join(children)} (logs in {logs})")
        workers = _wait_for_workers(app, expected=len(WORKER_GROUPS))
        print(f"  workers answering: {', '.join(workers)}")
        print(f"  Flower: http://127.0.0.1:{found.flower_port}  (basic auth)")
        print(f"  metrics: http://127.0.0.1:{found.exporter_port}/metrics")
        ok = True
        if demo:
            from workers.dev.demo import run_demo

            print("running the demo workload ...")
            ok = run_demo()
        if once:
            print("demo finished; stopping (--once)")
            return 0 if ok else 1
        print("system is up; Ctrl-C stops it")
        while all(proc.poll() is None for proc in children.values()):
            time.sleep(1)
        dead = [name for name, proc in children.items() if proc.poll() is not None]
        print(f"child process exited: {', '.join(dead)}; see {logs}")
        return 1
    except KeyboardInterrupt:
        print("\nstopping ...")
        return 0
    finally:
        stop_children()
        peers.stop()
