"""The partition manager: monthly range partitions made ahead, and retired whole.

``PARTITIONED_TABLES`` is the one spec. For each table, ``ensure`` keeps a
``<table>_default`` partition and one ``<table>_pYYYY_MM`` partition per month
from the current month to ``premake`` months ahead; it is idempotent and safe
to run from several processes (an advisory lock per table).

It never makes an empty partition for a past month: after a long gap in
maintenance (pg_partman issue #649) it starts again from the current month, so
nothing is created already past retention. Rows that fell into the default
partition meanwhile are *adopted*: their month's partition is made beside the
table, the rows move into it, and it is attached, in one transaction. That
partition may be past retention; the same night's retention retires it whole.

``retire`` takes a partition wholly past retention out of its table: detached,
then dropped or attached to the archive. The archive attach skips its
validation scan because the partition already carries a CHECK of its bounds,
validated beforehand under a lock that does not block the parent table; the
parent is locked only for the detach and the attach, a few milliseconds.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from time import perf_counter

from sqlalchemy import text
from sqlalchemy.orm import Session

from db.locks import xact_lock
from db.models.search import is_version_partition

DISPOSALS = ("drop", "archive")
INTERVALS = ("month",)  # the only one any table needs so far; names and bounds below assume it
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,40}$")
_BOUNDS = re.compile(r"FROM \('([^']+)'\) TO \('([^']+)'\)")
PARTITION_NAME = re.compile(r"^(?P<table>[a-z_][a-z0-9_]*)_(?:p(?P<year>\d{4})_(?P<month>\d{2})|default)$")


@dataclass(frozen=True)
class PartitionSpec:
    """A table partitioned by ``interval`` (a month) on ``column``.

    ``retention``: how long rows stay; a partition whose upper bound is older
    than that is retired. ``disposal``: ``drop`` it, or ``archive`` it into
    ``archive_table`` (same columns and indexes, partitioned the same way).
    """

    table: str
    retention: timedelta
    interval: str = "month"
    disposal: str = "drop"
    archive_table: str | None = None
    premake: int = 4
    column: str = "created_at"

    def __post_init__(self) -> None:
        for name in (self.table, self.column, self.archive_table or "x"):
            if not _IDENTIFIER.match(name):
                raise ValueError(f"not a plain identifier: {name!r}")
        if self.interval not in INTERVALS:
            raise ValueError(f"interval must be one of {INTERVALS}, got {self.interval!r}")
        if self.disposal not in DISPOSALS:
            raise ValueError(f"disposal must be one of {DISPOSALS}, got {self.disposal!r}")
        if (self.disposal == "archive") != (self.archive_table is not None):
            raise ValueError("an archive table is given exactly when disposal is 'archive'")
        if self.premake < 2:
            raise ValueError("premake must be at least 2: status reports fewer than 2 ahead as degraded")

    @property
    def default_partition(self) -> str:
        return f"{self.table}_default"


PARTITIONED_TABLES: tuple[PartitionSpec, ...] = (
    # Seed 003: "archive engagement data older than 1 year".
    PartitionSpec("user_engagement", retention=timedelta(days=365), disposal="archive",
                  archive_table="user_engagement_archive"),
    # Seed 004: "logs: 90-day retention".
    PartitionSpec("audit_log", retention=timedelta(days=90), disposal="drop"),
    # Seed 004's raw analytics event log, a log like the audit log: 90 days.
    PartitionSpec("analytics_events", retention=timedelta(days=90), disposal="drop"),
)

# Partitions still ahead below which status is degraded (issue 12).
MIN_AHEAD = 2


@dataclass(frozen=True)
class Partition:
    name: str
    lower: datetime
    upper: datetime


def spec_for(table: str) -> PartitionSpec:
    for spec in PARTITIONED_TABLES:
        if spec.table == table:
            return spec
    raise KeyError(table)


def is_partition(name: str) -> bool:
    """True for the name of a partition this module makes (Alembic leaves those alone)."""
    match = PARTITION_NAME.match(name)
    if not match:
        return False
    parents = {s.table for s in PARTITIONED_TABLES} | {s.archive_table for s in PARTITIONED_TABLES}
    return match["table"] in parents


def include_object(obj, name, type_, reflected, compare_to) -> bool:
    """Alembic's filter: partitions are made at run time, not by migrations, so autogenerate leaves them out."""
    table = obj if type_ == "table" else getattr(obj, "table", None)
    return not (reflected and table is not None and (is_partition(table.name) or is_version_partition(table.name)))


def month_start(moment: datetime) -> datetime:
    moment = moment.astimezone(timezone.utc)
    return datetime(moment.year, moment.month, 1, tzinfo=timezone.utc)


def add_months(moment: datetime, months: int) -> datetime:
    index = moment.year * 12 + moment.month - 1 + months
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=timezone.utc)


def partition_name(table: str, lower: datetime) -> str:
    return f"{table}_p{lower:%Y_%m}"


def _utc(session: Session) -> None:
    # Bounds print in the session's time zone; read and write them in UTC.
    session.execute(text("SET LOCAL TimeZone = 'UTC'"))


def partitions(session: Session, table: str) -> list[Partition]:
    """The range partitions of ``table``, oldest first (the default partition is not listed)."""
    _utc(session)
    rows = session.execute(text(
        "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
        "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = CAST(:table AS regclass)"),
        {"table": table}).all()
    found = []
    for name, bound in rows:
        match = _BOUNDS.search(bound or "")
        if match:
            lower, upper = (datetime.fromisoformat(value).astimezone(timezone.utc) for value in match.groups())
            found.append(Partition(name, lower, upper))
    return sorted(found, key=lambda p: p.lower)


def default_rows_by_month(session: Session, spec: PartitionSpec) -> dict[datetime, int]:
    rows = session.execute(text(
        f"SELECT date_trunc('month', {spec.column} AT TIME ZONE 'UTC'), count(*) "
        f"FROM {spec.default_partition} GROUP BY 1 ORDER BY 1")).all()
    return {lower.replace(tzinfo=timezone.utc): count for lower, count in rows}


def _has_default(session: Session, spec: PartitionSpec) -> bool:
    return session.execute(text("SELECT to_regclass(:name) IS NOT NULL"),
                           {"name": spec.default_partition}).scalar_one()


def plan_ensure(session: Session, spec: PartitionSpec, now: datetime) -> dict:
    """What ``ensure`` would do now: the months to create and the default's rows to adopt."""
    existing = {p.lower for p in partitions(session, spec.table)}
    first = month_start(now)
    wanted = [add_months(first, n) for n in range(spec.premake + 1)]
    stray = default_rows_by_month(session, spec) if _has_default(session, spec) else {}
    return {
        "create_default": not _has_default(session, spec),
        "create": [lower for lower in wanted if lower not in existing and lower not in stray],
        "adopt": {lower: rows for lower, rows in stray.items() if lower not in existing},
    }


def ensure(session: Session, spec: PartitionSpec, now: datetime, *, lock_timeout_ms: int = 2000,
           dry_run: bool = False) -> dict:
    """Make what is missing; the caller commits. Returns what was (or would be) done."""
    if not dry_run:
        xact_lock(session, "partitions", spec.table)
        session.execute(text(f"SET LOCAL lock_timeout = '{int(lock_timeout_ms)}ms'"))
    plan = plan_ensure(session, spec, now)
    report = {"created": [partition_name(spec.table, lower) for lower in plan["create"]],
              "adopted": {partition_name(spec.table, lower): rows for lower, rows in plan["adopt"].items()}}
    if plan["create_default"]:
        report["created"].insert(0, spec.default_partition)
    if dry_run:
        return report
    if plan["create_default"]:
        session.execute(text(f"CREATE TABLE {spec.default_partition} PARTITION OF {spec.table} DEFAULT"))
    for lower in plan["create"]:
        upper = add_months(lower, 1)
        session.execute(text(
            f"CREATE TABLE {partition_name(spec.table, lower)} PARTITION OF {spec.table} "
            f"FOR VALUES FROM ('{lower.isoformat()}') TO ('{upper.isoformat()}')"))
    for lower in plan["adopt"]:
        _adopt(session, spec, lower)
    return report


def _adopt(session: Session, spec: PartitionSpec, lower: datetime) -> None:
    """Move one month of rows out of the default partition into a partition of its own."""
    name, upper = partition_name(spec.table, lower), add_months(lower, 1)
    in_range = f"{spec.column} >= '{lower.isoformat()}' AND {spec.column} < '{upper.isoformat()}'"
    session.execute(text(f"CREATE TABLE {name} (LIKE {spec.table} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"))
    session.execute(text(f"ALTER TABLE {name} ADD CONSTRAINT {name}_bounds CHECK ({in_range})"))
    session.execute(text(
        f"WITH moved AS (DELETE FROM {spec.default_partition} WHERE {in_range} RETURNING *) "
        f"INSERT INTO {name} SELECT * FROM moved"))
    session.execute(text(f"ALTER TABLE {spec.table} ATTACH PARTITION {name} "
                         f"FOR VALUES FROM ('{lower.isoformat()}') TO ('{upper.isoformat()}')"))


def past_retention(session: Session, spec: PartitionSpec, now: datetime, retention: timedelta) -> list[Partition]:
    """Partitions whose every row is older than ``retention``: the upper bound is at or before the cutoff."""
    cutoff = now - retention
    return [p for p in partitions(session, spec.table) if p.upper <= cutoff]


def prepare_retire(session: Session, spec: PartitionSpec, partition: Partition) -> None:
    """Give the partition a validated CHECK of its bounds (the archive attach then skips its scan).

    Added NOT VALID, then validated: the scan holds SHARE UPDATE EXCLUSIVE on
    this old partition only, so writers to the table are not blocked.
    """
    constraint = f"{partition.name}_bounds"
    exists = session.execute(text(
        "SELECT convalidated FROM pg_constraint WHERE conname = :name AND conrelid = CAST(:table AS regclass)"),
        {"name": constraint, "table": partition.name}).scalar()
    if exists is None:
        session.execute(text(
            f"ALTER TABLE {partition.name} ADD CONSTRAINT {constraint} CHECK ({spec.column} >= "
            f"'{partition.lower.isoformat()}' AND {spec.column} < '{partition.upper.isoformat()}') NOT VALID"))
    if not exists:
        session.execute(text(f"ALTER TABLE {partition.name} VALIDATE CONSTRAINT {constraint}"))


def retire(session: Session, spec: PartitionSpec, partition: Partition, *, lock_timeout_ms: int = 2000) -> float:
    """Detach the partition, then drop it or attach it to the archive; the caller commits.

    Returns the seconds from the detach to the end of the statements, the time the
    parent table is locked until the caller commits at once.
    """
    session.execute(text(f"SET LOCAL lock_timeout = '{int(lock_timeout_ms)}ms'"))
    started = perf_counter()
    session.execute(text(f"ALTER TABLE {spec.table} DETACH PARTITION {partition.name}"))
    if spec.disposal == "drop":
        session.execute(text(f"DROP TABLE {partition.name}"))
    else:
        archived = partition_name(spec.archive_table, partition.lower)
        session.execute(text(f"ALTER TABLE {partition.name} RENAME TO {archived}"))
        session.execute(text(
            f"ALTER TABLE {spec.archive_table} ATTACH PARTITION {archived} "
            f"FOR VALUES FROM ('{partition.lower.isoformat()}') TO ('{partition.upper.isoformat()}')"))
    return perf_counter() - started


def health(session: Session, now: datetime) -> list[str]:
    """Problems for ``status``: rows in a default partition, or fewer than MIN_AHEAD partitions ahead.

    Reading partition bounds locks each partition briefly; behind a long DDL lock
    this gives up after 2 s (the caller reports that) instead of hanging the probe.
    """
    session.execute(text("SET LOCAL lock_timeout = '2s'"))
    problems = []
    for spec in PARTITIONED_TABLES:
        if not _has_default(session, spec):
            problems.append(f"{spec.table} has no partitions yet (run python -m workers migrate)")
            continue
        stray = session.execute(text(f"SELECT count(*) FROM (SELECT 1 FROM {spec.default_partition} "
                                     "LIMIT 100000) AS s")).scalar_one()
        if stray:
            problems.append(f"{spec.table}: {stray} row(s) in {spec.default_partition}, outside every partition "
                            "(upkeep.ensure_partitions adopts them)")
        current = month_start(now)
        ahead = sum(1 for p in partitions(session, spec.table) if p.lower > current)
        if ahead < MIN_AHEAD:
            problems.append(f"{spec.table}: {ahead} partition(s) ahead, fewer than {MIN_AHEAD} "
                            "(is upkeep.ensure_partitions running?)")
    return problems
