"""The embedded default: services start on demand under DATA_DIR, keep data across a
restart, and `services stop` really stops them (as root too, where pg_ctl refuses)."""
import os
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from sqlalchemy import create_engine, text

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
