"""Operator CLI: ``python -m workers <command>``."""
from __future__ import annotations

import argparse
import sys


def _cmd_run(args) -> int:
    from workers.devrunner import run

    return run(once=args.once, demo=not args.no_demo)


def _cmd_migrate(args) -> int:
    from db.migrate import downgrade, upgrade

    if args.down:
        downgrade(revision=args.down)
        print(f"migrated down to {args.down}")
    else:
        upgrade()
        print("migrated to head")
    return 0


def _cmd_status(args) -> int:
    from workers.status import main as status_main

    return status_main(as_json=args.json)


def _cmd_services(args) -> int:
    from workers import embedded

    if args.action == "stop":
        stopped = embedded.stop_all()
        print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
    else:
        print(f"database: {embedded.database_url()}")
        print(f"broker:   {embedded.broker_url()}")
    return 0


def _cmd_flower(args) -> int:
    from workers.flower import run_flower

    return run_flower(address=args.address, port=args.port)


def _cmd_reconcile(args) -> int:
    from tasks.engagement.cli import main as reconcile_main

    return reconcile_main(full=args.full, dry_run=args.dry_run)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m workers", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="dev runner: services, migrations, workers, beat, Flower and a demo workload")
    run.add_argument("--once", action="store_true", help="exit 0 after the demo and stop everything started")
    run.add_argument("--no-demo", action="store_true", help="start the system without the demo workload")
    run.set_defaults(func=_cmd_run)

    migrate = sub.add_parser("migrate", help="apply the Alembic migrations")
    migrate.add_argument("--down", metavar="REVISION", help="downgrade to REVISION instead (e.g. base)")
    migrate.set_defaults(func=_cmd_migrate)

    status = sub.add_parser("status", help="health probe: exit 0 healthy, 1 degraded, 2 down")
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    status.set_defaults(func=_cmd_status)

    services = sub.add_parser("services", help="the embedded PostgreSQL and Redis")
    services.add_argument("action", choices=["start", "stop"])
    services.set_defaults(func=_cmd_services)

    reconcile = sub.add_parser("reconcile", help="repair engagement counters: the dirty queue, or --full sweep")
    reconcile.add_argument("--full", action="store_true", help="sweep every counter of every row (progress bar)")
    reconcile.add_argument("--dry-run", action="store_true", help="report drift without writing anything")
    reconcile.set_defaults(func=_cmd_reconcile)

    flower = sub.add_parser("flower", help="Flower with basic auth, persistent state and the project config")
    flower.add_argument("--address", default="127.0.0.1")
    flower.add_argument("--port", type=int, default=5555)
    flower.set_defaults(func=_cmd_flower)
    return parser


def main(argv: list[str] | None = None) -> int:
    from workers.logs import configure_logging

    configure_logging()
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
