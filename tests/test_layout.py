"""The house rules that keep the layout honest: production code never imports dev code,
there are no import circles, and a production process without its URLs refuses to start."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parent.parent
PRODUCTION_ROOTS = ("workers", "tasks", "db", "schedules", "celeryconfig.py", "settings.py")
# The command-line entry point joins the operator CLI and the dev commands; it is
# the one module allowed to name workers.dev (see its docstring).
ENTRY_POINTS = {"workers/__main__.py"}


def is_dev_module(relative: str) -> bool:
    return relative.startswith("workers/dev/") or (relative.startswith("tasks/") and relative.endswith("/demo.py"))


def production_modules() -> list[Path]:
    found = []
    for root in PRODUCTION_ROOTS:
        path = ROOT / root
        files = [path] if path.is_file() else sorted(path.rglob("*.py"))
        for file in files:
            relative = file.relative_to(ROOT).as_posix()
            if not is_dev_module(relative) and relative not in ENTRY_POINTS:
                found.append(file)
    return found


def imported_names(file: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):  # lazy imports count too
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def is_dev_import(name: str) -> bool:
    parts = name.split(".")
    return name.startswith("workers.dev") or (parts[0] == "tasks" and "demo" in parts[2:3])


def test_production_modules_never_import_dev_code():
    modules = production_modules()
    assert len(modules) > 40, "the scan found too few modules to mean anything"
    offenders = {f"{file.relative_to(ROOT)} imports {name}"
                 for file in modules for name in imported_names(file) if is_dev_import(name)}
    assert not offenders, sorted(offenders)


def test_the_dev_import_check_catches_an_offender(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from workers.dev import embedded\n    from tasks.images import demo\n")
    assert {name for name in imported_names(bad) if is_dev_import(name)} == {
        "workers.dev.embedded", "tasks.images.demo"}


def test_there_are_no_import_circles_in_production_code():
    tool = ROOT.parent / "shared" / "tools" / "import_cycles.py"
    if not tool.exists():
        pytest.skip("the shared import-cycle tool is not on this machine")
    done = subprocess.run([sys.executable, str(tool), "--all", ".", "workers", "tasks", "db", "schedules",
                           "celeryconfig", "settings"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and not done.stdout.strip(), done.stdout


def _server_processes(data_dir: Path) -> set[int]:
    """Redis servers and PostgreSQL postmasters serving data under ``data_dir``."""
    found = set()
    for proc in psutil.process_iter(["pid", "name", "cmdline", "cwd"]):
        cmdline = proc.info["cmdline"] or []
        server = bool(cmdline) and (cmdline[0].endswith(("postgres", "redis-server")) or "redis-server" in cmdline[0])
        # Redis rewrites its title, but runs in its --dir; the postmaster names its -D.
        where = " ".join(cmdline) + " " + (proc.info["cwd"] or "")
        if server and str(data_dir) in where:
            found.add(proc.info["pid"])
    return found


@pytest.mark.parametrize("command", ["worker", "beat"])
@pytest.mark.parametrize("unset", [("DATABASE_URL", "BROKER_URL"), ("BROKER_URL",), ("DATABASE_URL",)])
def test_a_production_process_without_its_urls_refuses_to_start(command, unset, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in unset and k != "RESULT_BACKEND"}
    env["DATA_DIR"] = str(tmp_path / "data")  # where an embedded service would appear
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "celery", "-A", "workers", command, "--loglevel=INFO"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)
    elapsed = time.monotonic() - started
    output = done.stdout + done.stderr
    assert done.returncode != 0, output[-2000:]
    assert elapsed < 10, elapsed
    for name in unset:
        assert name in output
    assert "make run" in output
    assert not (tmp_path / "data").exists(), "an embedded service was started"
    assert not _server_processes(tmp_path), "a PostgreSQL or Redis process was started"


def test_the_operator_cli_without_urls_says_what_is_missing(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "BROKER_URL", "RESULT_BACKEND")}
    env["DATA_DIR"] = str(tmp_path / "data")
    done = subprocess.run([sys.executable, "-m", "workers", "status"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "DATABASE_URL and BROKER_URL are not set" in done.stderr and "make run" in done.stderr
    assert not (tmp_path / "data").exists()


def _pytest_without_urls(data_dir: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "BROKER_URL", "RESULT_BACKEND")}
    env["DATA_DIR"] = str(data_dir)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider",
         "tests/test_layout.py::test_the_dev_import_check_catches_an_offender"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture
def services_dir():
    """A short, traversable directory: as root, pgserver runs PostgreSQL as a user of its own,
    which cannot enter pytest's 0700 tmp_path, and the socket path must stay short."""
    import shutil
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="svc-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_a_test_run_stops_the_embedded_services_it_started(services_dir):
    tmp_path = services_dir
    data_dir = tmp_path / "data"
    done = _pytest_without_urls(data_dir)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert (data_dir / "postgres").exists(), "the run should have used embedded services"
    assert not _server_processes(tmp_path), "the test run left its embedded services running"


def test_a_test_run_leaves_running_the_services_it_found_running(services_dir):
    tmp_path = services_dir
    data_dir = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "BROKER_URL", "RESULT_BACKEND")}
    env["DATA_DIR"] = str(data_dir)
    subprocess.run([sys.executable, "-m", "workers", "services", "start"], cwd=ROOT, env=env, check=True,
                   capture_output=True, timeout=120)
    try:
        running = _server_processes(tmp_path)
        assert len(running) == 2
        done = _pytest_without_urls(data_dir)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        assert _server_processes(tmp_path) == running
    finally:
        subprocess.run([sys.executable, "-m", "workers", "services", "stop"], cwd=ROOT, env=env,
                       capture_output=True, timeout=120)
    assert not _server_processes(tmp_path)
