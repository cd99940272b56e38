"""Dev commands of ``python -m workers``: ``run`` (the whole system) and ``services`` (embedded servers).

Added to the operator CLI by workers/__main__.py; production modules never import this.
"""
from __future__ import annotations

import argparse
import os
import sys

import settings


def _cmd_run(args) -> int:
    from workers.dev.runner import run

    return run(once=args.once, demo=not args.no_demo)


def _cmd_services(args) -> int:
    from workers.dev import embedded

    if args.action == "stop":
        stopped = embedded.stop_all()
        print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
        return 0
    started = embedded.ensure_environment()
    if args.action == "exec":
        command = args.command[1:] if args.command[:1] == ["--"] else args.command
        if not command:
            print("usage: python -m workers services exec -- COMMAND [ARG ...]", file=sys.stderr)
            return 2
        os.execvp(command[0], command)  # the command inherits the URLs
    found = settings.current()
    print(f"database: {settings.mask_url(found.database_url)}")
    print(f"broker:   {settings.mask_url(found.broker_url)}")
    print("started: " + (", ".join(started) if started else "nothing (already running)"))
    return 0


def add_commands(sub) -> None:
    run = sub.add_parser("run", help="dev runner: services, migrations, workers, beat, Flower and a demo workload")
    run.add_argument("--once", action="store_true", help="exit 0 after the demo and stop everything started")
    run.add_argument("--no-demo", action="store_true", help="start the system without the demo workload")
    run.set_defaults(func=_cmd_run)

    services = sub.add_parser("services", help="dev only: the embedded PostgreSQL and Redis")
    services.add_argument("action", choices=["start", "stop", "exec"],
                          help="exec -- COMMAND: run COMMAND with the embedded services' URLs (explicit opt-in)")
    services.add_argument("command", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    services.set_defaults(func=_cmd_services)
