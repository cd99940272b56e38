"""The embedded default: services start on demand under DATA_DIR, keep data across a
restart, and `services stop` really stops them (as root too, where pg_ctl refuses).
They are private to the invoking user: a password on Redis, no file readable by others,
no PostgreSQL socket outside its own data directory."""
import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import redis
from sqlalchemy import create_engine, text

import settings
from workers.dev import embedded

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def private_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    yield tmp_path / "data"
    embedded.stop_all()


def _postmaster_pid(data_dir) -> int:
    return int((data_dir / "postgres" / "postmaster.pid").read_text().splitlines()[0])


def test_services_start_persist_and_stop(private_data_dir):
    url = embedded.embedded_database_url()
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE kept (v int)"))
        connection.execute(text("INSERT INTO kept VALUES (42)"))
    engine.dispose()
    port = embedded.redis_port()
    pg_pid = _postmaster_pid(private_data_dir)

    assert sorted(embedded.stop_all()) == ["postgres", "redis"]
    assert not psutil.pid_exists(pg_pid)
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0

    # Another process (as a later `make run` would be) starts it again on demand,
    # with the data kept.
    restarted = subprocess.run(
        [sys.executable, "-c", "from workers.dev import embedded; print(embedded.embedded_database_url())"],
        cwd=ROOT, env=dict(os.environ), capture_output=True, text=True, timeout=60, check=True)
    engine = create_engine(restarted.stdout.strip().splitlines()[-1])
    with engine.connect() as connection:
        assert connection.scalar(text("SELECT v FROM kept")) == 42
    engine.dispose()
    assert embedded.stop_all() == ["postgres"]  # redis was not restarted
    assert embedded.stop_all() == []


def _raw_reply(port: int, command: bytes) -> bytes:
    """What a client that knows no password gets: any local process could send this."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(command)
        return sock.recv(200)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_embedded_redis_needs_its_password_and_refuses_config_module_debug(private_data_dir):
    url = embedded.embedded_redis_url(0)
    port = embedded.redis_port()
    password_file = private_data_dir / "redis" / "password"
    password = password_file.read_text().strip()

    assert _raw_reply(port, b"PING\r\n").startswith(b"-NOAUTH")
    assert _raw_reply(port, b"LRANGE maintenance 0 -1\r\n").startswith(b"-NOAUTH")
    client = redis.Redis.from_url(url)
    assert client.ping()
    for command in (("CONFIG", "SET", "dir", "/tmp"), ("CONFIG", "GET", "dir"), ("MODULE", "LIST"),
                    ("DEBUG", "SLEEP", "0")):
        with pytest.raises(redis.ResponseError, match="unknown command"):
            client.execute_command(*command)

    assert _mode(password_file) == 0o600 and len(password) >= 32
    assert url == f"redis://:{password}@127.0.0.1:{port}/0"
    assert password not in settings.mask_url(url)
    # Never on a command line, where `ps` shows it to every user.
    for proc in psutil.process_iter(["cmdline"]):
        assert password not in " ".join(proc.info["cmdline"] or ())
    # A second start (another process, a restart) keeps the password it was given.
    assert embedded.stop_redis()
    assert embedded.embedded_redis_url(0) == url


def test_everything_under_the_data_dir_is_private(private_data_dir):
    database_url = embedded.embedded_database_url()
    client = redis.Redis.from_url(embedded.embedded_redis_url(0))
    client.lpush("maintenance", "a task message with arguments")
    aof = private_data_dir / "redis" / "appendonly.aof"
    deadline = time.monotonic() + 10
    while aof.stat().st_size == 0 and time.monotonic() < deadline:  # appendfsync everysec
        time.sleep(0.05)
    assert aof.stat().st_size > 0
    (private_data_dir / "logs").mkdir()  # as the dev runner, Flower and beat write theirs
    (private_data_dir / "logs" / "worker-core.log").write_text("a log line")

    # As root PostgreSQL runs as pgserver's user, who must traverse to its data (not list it).
    assert _mode(private_data_dir) == (0o711 if os.geteuid() == 0 else 0o700)
    exposed = [f"{oct(_mode(path))} {path}" for path in private_data_dir.rglob("*")
               if _mode(path) & 0o077 and not stat.S_ISSOCK(path.lstat().st_mode)]
    assert not exposed, exposed
    # The one socket (mode 0777 by PostgreSQL's default) sits in the 0700 data directory.
    sockets = [path for path in private_data_dir.rglob("*") if stat.S_ISSOCK(path.lstat().st_mode)]
    assert [path.parent for path in sockets] == [private_data_dir / "postgres"]
    assert _mode(private_data_dir / "postgres") == 0o700
    # and PostgreSQL, which opens its files by absolute path, still reaches them through DATA_DIR.
    engine = create_engine(database_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text("CHECKPOINT"))  # writes global/pg_control: fails if DATA_DIR shuts it out
        assert connection.scalar(text("SELECT 1")) == 1
    engine.dispose()


def test_an_unprotected_redis_of_an_older_version_is_restarted_with_its_queue(private_data_dir):
    rdir = private_data_dir / "redis"
    rdir.mkdir(parents=True)
    rdir.chmod(0o755)
    port = embedded._free_port()
    # The start line of the previous version: no password, every command allowed.
    subprocess.run([str(embedded._redis_binary()), "--port", str(port), "--bind", "127.0.0.1",
                    "--daemonize", "yes", "--dir", str(rdir), "--pidfile", str(rdir / "redis.pid"),
                    "--logfile", str(rdir / "redis.log"), "--appendonly", "yes", "--appendfsync", "always",
                    "--save", ""], check=True, capture_output=True)
    (rdir / "port").write_text(str(port))
    old = redis.Redis(port=port)
    deadline = time.monotonic() + 10
    while not (rdir / "redis.pid").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    old_pid = int((rdir / "redis.pid").read_text())
    old.lpush("maintenance", "queued before the upgrade")
    (rdir / "appendonly.aof").chmod(0o644)  # as the old umask left it

    url = embedded.embedded_redis_url(0)

    assert not psutil.pid_exists(old_pid)
    assert embedded.redis_port() == port
    assert _raw_reply(port, b"PING\r\n").startswith(b"-NOAUTH")
    assert redis.Redis.from_url(url).lrange("maintenance", 0, -1) == [b"queued before the upgrade"]
    assert _mode(rdir) == 0o700 and _mode(rdir / "appendonly.aof") == 0o600


@pytest.fixture
def deep_data_dir(tmp_path, monkeypatch):
    deep = tmp_path / ("d" * 50) / ("e" * 50) / "data"
    monkeypatch.setenv("DATA_DIR", str(deep))
    yield deep
    embedded.stop_all()


def test_a_data_dir_too_deep_for_the_postgres_socket_is_refused(deep_data_dir):
    socket_path = deep_data_dir / "postgres" / embedded.PG_SOCKET_NAME
    assert len(str(socket_path)) > embedded.UNIX_SOCKET_PATH_MAX

    with pytest.raises(embedded.SocketPathTooLong) as refused:
        embedded.embedded_database_url()

    message = str(refused.value)
    assert str(socket_path) in message and f"{embedded.UNIX_SOCKET_PATH_MAX}-byte limit" in message
    assert "DATA_DIR" in message
    assert not (deep_data_dir / "postgres" / "PG_VERSION").exists(), "pgserver ran anyway"
