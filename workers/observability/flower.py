"""Flower with the project's configuration: auth on every endpoint, no secret on a command line.

- Basic auth is always on. Credentials come from ``FLOWER_BASIC_AUTH`` (read by
  Flower itself from the environment, so they never appear in ``ps``); without
  it a password is generated, and only for a loopback address.
- Flower serves its Prometheus ``/metrics`` without auth; here it answers 401
  like every other page unless the request carries the credentials. Our own
  exporter (``python -m workers exporter``) is the metrics endpoint to scrape.
- State persists under ``$DATA_DIR/flower``; ``FLOWER_MAX_TASKS`` bounds memory.
"""
from __future__ import annotations

import os
import secrets
import sys

import settings
from workers.observability.auth import EndpointConfigError, parse_basic_auth, require_credentials


class FlowerConfigError(SystemExit):
    pass


def generate_credentials() -> str:
    return f"admin:{secrets.token_urlsafe(12)}"


def flower_argv(address: str, port: int) -> list[str]:
    """Flower's arguments: no credentials here; they travel in FLOWER_BASIC_AUTH."""
    found = settings.current()
    state = found.data_dir / "flower"
    state.mkdir(parents=True, exist_ok=True, mode=0o700)
    return [
        "celery", "-A", "workers", "flower",
        f"--address={address}", f"--port={port}",
        "--persistent=True", f"--db={state / 'flower.db'}",
        f"--max_tasks={found.flower_max_tasks}",
        "--state_save_interval=60000",
    ]


def resolve_credentials(address: str) -> str:
    basic_auth = (settings.current().flower_basic_auth or "").strip()
    try:
        if parse_basic_auth(basic_auth, "FLOWER_BASIC_AUTH"):
            return basic_auth
        require_credentials("Flower", address, [], "FLOWER_BASIC_AUTH")
    except EndpointConfigError as exc:
        raise FlowerConfigError(str(exc)) from None
    credentials_file = settings.current().data_dir / "flower" / "credentials"
    credentials_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    basic_auth = generate_credentials()
    fd = os.open(credentials_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(basic_auth + "\n")
    print(f"Flower credentials generated into {credentials_file} (mode 0600); "
          "set FLOWER_BASIC_AUTH to choose them", flush=True)
    return basic_auth


def require_auth_on_metrics() -> None:
    """Put Flower's ``/metrics`` behind the same basic auth as every other page."""
    from flower.views import monitor
    from tornado import web

    if not getattr(monitor.Metrics.get, "requires_auth", False):
        guarded = web.authenticated(monitor.Metrics.get)
        guarded.requires_auth = True
        monitor.Metrics.get = guarded


def run_flower(address: str = "127.0.0.1", port: int = 5555) -> int:
    settings.require_services("Flower", ("BROKER_URL",))
    os.environ["FLOWER_BASIC_AUTH"] = resolve_credentials(address)
    require_auth_on_metrics()
    from celery.bin.celery import main as celery_main

    sys.argv = flower_argv(address, port)
    return celery_main()
