"""Flower: a real process on a loopback port with basic auth always on and persistent state."""
from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

import psutil
import pytest

from tests.conftest import ROOT, stop_process
from tests.operations.conftest import free_port

pytestmark = pytest.mark.integration


def http_status(url: str, auth: str | None = None) -> int:
    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def flower_env(tmp_path, **extra) -> dict:
    env = dict(os.environ, DATA_DIR=str(tmp_path), **extra)
    env.pop("FLOWER_BASIC_AUTH", None)
    env.update(extra)
    return env


def test_flower_enforces_basic_auth_and_keeps_state(tmp_path, celery_app):
    port = free_port()
    auth = "ops:s3cret-pass"
    proc = subprocess.Popen([sys.executable, "-m", "workers", "flower", "--address", "127.0.0.1", "--port", str(port)],
                            cwd=ROOT, env=flower_env(tmp_path, FLOWER_BASIC_AUTH=auth),
                            stdout=open(tmp_path / "flower.log", "wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if http_status(base + "/healthcheck") in (200, 401):
                    break
            except OSError:
                time.sleep(0.3)
        assert http_status(base + "/") == 401
        assert http_status(base + "/api/workers") == 401
        assert http_status(base + "/", auth="ops:wrong") == 401
        assert http_status(base + "/", auth=auth) == 200
        # Flower's Prometheus endpoint is an operator endpoint too.
        assert http_status(base + "/metrics") == 401
        assert http_status(base + "/metrics", auth="ops:wrong") == 401
        assert http_status(base + "/metrics", auth=auth) == 200
        # The password is never on a command line, where every local user can read it.
        cmdlines = [" ".join(p.cmdline()) for p in psutil.Process(proc.pid).children(recursive=True) + [psutil.Process(proc.pid)]]
        assert not any("s3cret-pass" in line for line in cmdlines), cmdlines
    finally:
        stop_process(proc)
    state = tmp_path / "flower" / "flower.db"
    assert any(p.name.startswith("flower.db") for p in state.parent.iterdir()), "no persistent state written"


def test_flower_refuses_a_public_address_without_credentials(tmp_path):
    done = subprocess.run([sys.executable, "-m", "workers", "flower", "--address", "0.0.0.0", "--port", "1"],
                          cwd=ROOT, env=flower_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "refusing to start Flower on non-loopback address" in done.stderr


def test_flower_argv_bounds_tasks_and_persists(tmp_path, monkeypatch):
    from workers.observability.flower import flower_argv

    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    monkeypatch.setenv("FLOWER_MAX_TASKS", "500")
    argv = flower_argv("127.0.0.1", 5555)
    assert "--max_tasks=500" in argv and "--persistent=True" in argv
    assert not any("basic" in arg for arg in argv)
    assert f"--db={tmp_path / 'flower' / 'flower.db'}" in argv
