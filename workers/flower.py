"""Flower with the project's configuration, basic auth always on, persistent state."""
from __future__ import annotations

import ipaddress
import os
import secrets
import sys

from workers.embedded import data_dir


class FlowerConfigError(SystemExit):
    pass


def is_loopback(address: str) -> bool:
    if address in ("localhost", ""):
        return address == "localhost"
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def generate_credentials() -> str:
    return f"admin:{secrets.token_urlsafe(12)}"


def flower_argv(address: str, port: int, basic_auth: str) -> list[str]:
    state = data_dir() / "flower"
    state.mkdir(parents=True, exist_ok=True)
    return [
        sys.executable, "-m", "celery", "-A", "workers", "flower",
        f"--address={address}", f"--port={port}",
        f"--basic-auth={basic_auth}",
        "--persistent=True", f"--db={state / 'flower.db'}",
        f"--max_tasks={int(os.environ.get('FLOWER_MAX_TASKS', '10000'))}",
        "--state_save_interval=60000",
    ]


def resolve_credentials(address: str) -> str:
    basic_auth = os.environ.get("FLOWER_BASIC_AUTH", "").strip()
    if basic_auth:
        if any(":" not in pair or not pair.split(":", 1)[1] for pair in basic_auth.split(",")):
            raise FlowerConfigError("FLOWER_BASIC_AUTH must be user:password[,user:password...]")
        return basic_auth
    if not is_loopback(address):
        raise FlowerConfigError(
            f"refusing to start Flower on non-loopback address {address!r} without credentials: "
            "set FLOWER_BASIC_AUTH=user:password")
    basic_auth = generate_credentials()
    print(f"Flower credentials (generated; set FLOWER_BASIC_AUTH to choose): {basic_auth}", flush=True)
    return basic_auth


def run_flower(address: str = "127.0.0.1", port: int = 5555) -> int:
    argv = flower_argv(address, port, resolve_credentials(address))
    os.execv(argv[0], argv)
    return 0  # not reached
