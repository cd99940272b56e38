"""Operator CLI: ``python -m workers <command>``.

Production commands only; the dev commands (``run``, ``services``) live in
workers/dev/cli.py and are added by workers/__main__.py, the entry point.
"""
from __future__ import annotations

import argparse
import sys
import uuid
from collections.abc import Callable
from datetime import date

import settings
from workers.console import parse_duration, printable, table


def _cmd_migrate(args) -> int:
    from db.migrate import downgrade, upgrade

    if args.down:
        downgrade(revision=args.down)
        print(f"migrated down to {args.down}")
    else:
        upgrade()
        from tasks.upkeep import jobs

        report = jobs.ensure_partitions()
        print("migrated to head; partitions ensured")
        for name, done in report["tables"].items():
            print(f"  {name}: {', '.join(done.get('created', [])) or 'nothing to create'}"
                  + (f" ERROR {done['error']}" if "error" in done else ""))
        search_failed = ensure_search_index()
        return 1 if report["failed"] or search_failed else 0
    return 0


def ensure_search_index() -> bool:
    """Build the search index when none is active or its document schema changed; True on failure."""
    from tasks.search.engines import engine
    from tasks.search.reindex import ensure_current
    from workers.errors import ServiceUnavailable

    try:
        built = ensure_current(engine())
    except ServiceUnavailable as exc:
        print(f"  search: ERROR the search engine is unavailable ({exc}); run `search reindex` later")
        return True
    print(f"  search: {'built version ' + str(built.version) if built else 'index is current'}")
    return False


def _cmd_status(args) -> int:
    settings.require_services("status")
    from workers.observability.status import main as status_main

    return status_main(as_json=args.json)


def _cmd_flower(args) -> int:
    from workers.observability.flower import run_flower

    return run_flower(address=args.address, port=args.port)


def _cmd_reconcile(args) -> int:
    from tasks.engagement.cli import main as reconcile_main

    return reconcile_main(full=args.full, dry_run=args.dry_run)


def _cmd_upkeep(args) -> int:
    settings.require_services("upkeep")  # the stuck-upload sweep sends tasks
    from tasks.upkeep.cli import upkeep_main

    return upkeep_main(dry_run=args.dry_run)


def _cmd_backup(args) -> int:
    settings.require_services("backups", names=("DATABASE_URL",))
    from tasks.upkeep.cli import backup_main

    return backup_main(args.action)


def _cmd_moderation(args) -> int:
    settings.require_services("the moderation commands", names=("DATABASE_URL",))
    from tasks.moderation import cli as moderation_cli

    if args.action == "queue":
        return moderation_cli.queue_main(args.limit, args.json)
    return moderation_cli.decide_main(args.id, approve=args.action == "approve", moderator_id=args.moderator,
                                      reason=getattr(args, "reason", None))


def _cmd_search(args) -> int:
    settings.require_services("the search commands", names=("DATABASE_URL",))
    from tasks.search import cli as search_cli

    if args.action == "reindex":
        return search_cli.reindex_main(args.since)
    return search_cli.verify_main()


def _uuid(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a moderation record id (a UUID): {value[:40]!r}") from None


def _cmd_analytics(args) -> int:
    settings.require_services("the analytics commands", names=("DATABASE_URL",))
    from tasks.analytics import cli as analytics_cli

    if args.action == "report":
        return analytics_cli.report_main(args.user, args.days)
    if args.action == "system":
        return analytics_cli.system_main(args.since)
    if args.action == "rollup":
        return analytics_cli.rollup_main(args.since)
    return analytics_cli.flush_main()


def _cmd_dead(args) -> int:
    settings.require_services("the dead-letter commands")
    import json

    from db.session import session_scope
    from workers.reliability import dead_letters as deadletters

    with session_scope() as session:
        if args.action == "list":
            letters = deadletters.list_letters(session, limit=args.limit, status=args.status)
            if args.json:
                print(json.dumps([deadletters.describe(letter) for letter in letters], indent=2))
                return 0
            print(table(("id", "last seen (UTC)", "status", "tries", "task", "code", "task id"), [
                (letter.id, f"{letter.last_seen:%Y-%m-%d %H:%M:%S}", letter.status, letter.attempts,
                 letter.task_name[:40], letter.error_code[:24], letter.task_id) for letter in letters]))
            found = deadletters.summary(session)
            print(f"{len(letters)} shown; {found['dead']} dead, {found['retried']} retried, "
                  f"{found['last_hour']} seen in the last hour")
            return 0
        if args.action == "show":
            letter = session.get(deadletters.DeadLetter, args.id)
            if letter is None:
                print(f"no dead letter {args.id}", file=sys.stderr)
                return 1
            described = deadletters.describe(letter)
            if args.json:
                print(json.dumps(described, indent=2))
            else:
                for key, value in described.items():
                    print(f"{key:<18} {printable(value)}")
            return 0
        if args.action == "retry":
            try:
                letter = deadletters.retry(session, args.id)
            except (LookupError, deadletters.NotRetryable) as exc:
                print(str(exc), file=sys.stderr)
                return 1
            print(f"re-sent {letter.task_name}[{letter.task_id}] (retry #{letter.retried_count})")
            return 0
        removed = deadletters.purge(session, parse_duration(args.older_than), status=args.status)
        print(f"purged {removed} dead letter(s) last seen more than {args.older_than} ago")
        return 0


def _cmd_exporter(args) -> int:
    from workers.observability.auth import EndpointConfigError
    from workers.observability.exporter import exporter_credentials, run_exporter

    try:
        exporter_credentials(args.address)  # refuse a public address before touching any service
    except EndpointConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    settings.require_services("the exporter")
    return run_exporter(address=args.address, port=args.port)


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number


def _duration(value: str):
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser(extensions: tuple[Callable, ...] = ()) -> argparse.ArgumentParser:
    """The operator commands, plus each ``extension(subparsers)``'s (the dev commands, added by __main__)."""
    parser = argparse.ArgumentParser(prog="python -m workers",
                                     description="Commands for operators of the background-job system.")
    sub = parser.add_subparsers(dest="command", required=True)
    for extend in extensions:
        extend(sub)

    migrate = sub.add_parser("migrate", help="apply the Alembic migrations")
    migrate.add_argument("--down", metavar="REVISION", help="downgrade to REVISION instead (e.g. base)")
    migrate.set_defaults(func=_cmd_migrate)

    status = sub.add_parser("status", help="health probe: exit 0 healthy, 1 degraded, 2 down")
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    status.set_defaults(func=_cmd_status)

    reconcile = sub.add_parser("reconcile", help="repair engagement counters: the dirty queue, or --full sweep")
    reconcile.add_argument("--full", action="store_true", help="sweep every counter of every row (progress bar)")
    reconcile.add_argument("--dry-run", action="store_true", help="report drift without writing anything")
    reconcile.set_defaults(func=_cmd_reconcile)

    flower = sub.add_parser("flower", help="Flower with basic auth, persistent state and the project config")
    flower.add_argument("--address", default="127.0.0.1")
    flower.add_argument("--port", type=int, default=5555)
    flower.set_defaults(func=_cmd_flower)

    dead = sub.add_parser("dead", help="dead letters: tasks that failed permanently, exhausted retries or were bad")
    dead_sub = dead.add_subparsers(dest="action", required=True)
    dead_list = dead_sub.add_parser("list", help="newest first")
    dead_list.add_argument("--limit", type=int, default=50)
    dead_list.add_argument("--status", choices=["dead", "retried"])
    dead_list.add_argument("--json", action="store_true")
    dead_show = dead_sub.add_parser("show", help="one letter with its arguments and exception")
    dead_show.add_argument("id", type=int)
    dead_show.add_argument("--json", action="store_true")
    dead_retry = dead_sub.add_parser("retry", help="re-send by name with the stored arguments and the same task id")
    dead_retry.add_argument("id", type=int)
    dead_purge = dead_sub.add_parser("purge", help="delete letters last seen before a cutoff")
    dead_purge.add_argument("--older-than", default="30d", help="e.g. 30d, 12h, 15m (default 30d)")
    dead_purge.add_argument("--status", choices=["dead", "retried"])
    dead.set_defaults(func=_cmd_dead)

    upkeep = sub.add_parser("upkeep", help="partitions, retention, soft-delete purge and stuck uploads, now")
    upkeep.add_argument("--dry-run", action="store_true", help="print what would be created, archived, dropped "
                        "or deleted, per table, and change nothing")
    upkeep.set_defaults(func=_cmd_upkeep)

    backup = sub.add_parser("backup", help="encrypted pg_dump backups in BACKUP_ROOT")
    backup.add_argument("action", choices=["create", "verify", "list"],
                        help="create one now (and rotate), verify the newest by a restore, or list them")
    backup.set_defaults(func=_cmd_backup)

    analytics = sub.add_parser("analytics", help="a user's daily analytics, system metrics, rollup and flush now")
    analytics_sub = analytics.add_subparsers(dest="action", required=True)
    report = analytics_sub.add_parser("report", help="a user's daily table with sparklines")
    report.add_argument("--user", type=int, required=True, help="user id")
    report.add_argument("--days", type=_positive_int, default=30)
    system = analytics_sub.add_parser("system", help="system metrics: last, min, max and a sparkline per series")
    system.add_argument("--since", type=_duration, default="24h", help="e.g. 24h, 7d, 30m (default 24h)")
    rollup = analytics_sub.add_parser("rollup", help="recompute user_analytics now (the due days, or --since)")
    rollup.add_argument("--since", type=date.fromisoformat, metavar="YYYY-MM-DD", help="backfill from this day")
    analytics_sub.add_parser("flush", help="move the Redis view counters into PostgreSQL now")
    analytics.set_defaults(func=_cmd_analytics)

    moderation = sub.add_parser("moderation", help="the review queue of flagged posts and comments; approve, reject")
    moderation_sub = moderation.add_subparsers(dest="action", required=True)
    moderation_queue = moderation_sub.add_parser("queue", help="flagged content, oldest first, as a table")
    moderation_queue.add_argument("--limit", type=_positive_int, default=50)
    moderation_queue.add_argument("--json", action="store_true")
    for action, text in (("approve", "show it again everywhere"),
                         ("reject", "keep it hidden and tell the author why")):
        decide = moderation_sub.add_parser(action, help=text)
        decide.add_argument("id", type=_uuid, help="the moderation record's id (from `moderation queue`)")
        decide.add_argument("--moderator", type=int, required=True, metavar="USER_ID",
                            help="the deciding moderator's user id (recorded as moderator_id)")
        if action == "reject":
            decide.add_argument("--reason", required=True, help="shown to the author (at most 500 characters)")
    moderation.set_defaults(func=_cmd_moderation)

    search = sub.add_parser("search", help="rebuild or verify the search index")
    search_sub = search.add_subparsers(dest="action", required=True)
    reindex = search_sub.add_parser("reindex", help="fill a new index version and swap it in (searches keep "
                                                    "working); --since rewrites recent posts in place")
    reindex.add_argument("--since", type=date.fromisoformat, metavar="YYYY-MM-DD",
                         help="only posts created or edited since this day, into the live versions")
    search_sub.add_parser("verify", help="what search.verify does nightly: remove stale documents, queue missing ones")
    search.set_defaults(func=_cmd_search)

    exporter = sub.add_parser("exporter", help="Prometheus exporter: queues, beat dispatches, task durations, dead letters")
    exporter.add_argument("--address", default="127.0.0.1",
                          help="bind address; a non-loopback one needs EXPORTER_BASIC_AUTH")
    exporter.add_argument("--port", type=int, default=9808)
    exporter.set_defaults(func=_cmd_exporter)
    return parser


def main(argv: list[str] | None = None, extensions: tuple[Callable, ...] = ()) -> int:
    from workers.logs import configure_logging

    configure_logging()
    args = build_parser(extensions).parse_args(argv)
    try:
        return args.func(args)
    except settings.MissingServices as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
