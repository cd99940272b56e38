"""How long rows are kept, and the nightly pass that enforces it.

Two specs are the single source (the docs' retention table is rendered from
them, ``retention_table``): ``db.partitions.PARTITIONED_TABLES`` for the
partitioned event tables, retired a whole month-partition at a time (O(1), no
row is deleted one by one), and ``RETENTION_POLICIES`` here for unpartitioned
tables, deleted in bounded batches: at most UPKEEP_BATCH_ROWS (≤ 5,000) rows per
transaction, ``FOR UPDATE SKIP LOCKED`` so a row someone holds is left for the
next night, and a short ``lock_timeout``.

RETENTION_DAYS overrides any period by name. Each table is one unit of work: its
failure is logged and recorded, and the others still run (Mastodon's
``VacuumScheduler`` does the same).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from time import monotonic

from sqlalchemy import text

import settings
from db import partitions
from db.partitions import PARTITIONED_TABLES
from db.session import session_scope
from tasks.upkeep.runs import Unit, each_table
from tasks.notifications.batching import RATE_LIMIT_RETENTION


# A run stops starting new batches after this long and reports what remains;
# the next night continues (the upkeep queue's soft limit is 1,500 s).
RUN_BUDGET_SECONDS = 1200.0


@dataclass(frozen=True)
class RowPolicy:
    """Rows of ``table`` matching ``condition`` (with ``:cutoff`` = now − keep) are deleted."""

    name: str
    keep: timedelta
    condition: str
    rule: str  # the condition in words, for the docs; {keep} is replaced by the period

    @property
    def table(self) -> str:
        return self.name


RETENTION_POLICIES: tuple[RowPolicy, ...] = (
    # Seed 003: "clean up sessions older than 30 days".
    RowPolicy("user_sessions", timedelta(days=30), "expires_at < :cutoff", "expired more than {keep} ago"),
    RowPolicy("password_reset_tokens", timedelta(days=1), "(used_at < :cutoff OR expires_at < :cutoff)",
              "used or expired more than {keep} ago"),
    RowPolicy("dead_letters", timedelta(days=30), "last_seen < :cutoff", "last seen more than {keep} ago"),
    # Drift rows go with their run (ON DELETE CASCADE), and on their own when older.
    RowPolicy("counter_drift", timedelta(days=90), "detected_at < :cutoff", "detected more than {keep} ago"),
    RowPolicy("counter_runs", timedelta(days=90), "started_at < :cutoff AND status <> 'running'",
              "finished and started more than {keep} ago"),
    RowPolicy("job_heartbeats", timedelta(days=30), "last_success_at < :cutoff",
              "with no success for {keep} (a job or canary name no longer used)"),
    # notifications.prune_rate_limits clears these hourly; this is the nightly backstop.
    RowPolicy("notification_rate_limits", RATE_LIMIT_RETENTION, "window_start < :cutoff",
              "whose window started more than {keep} ago"),
    RowPolicy("deliveries", timedelta(days=90),
              "created_at < :cutoff AND status IN ('sent', 'skipped', 'folded', 'failed')",
              "finished and created more than {keep} ago"),
    RowPolicy("digests", timedelta(days=90), "created_at < :cutoff AND status IN ('sent', 'skipped', 'failed')",
              "finished and created more than {keep} ago"),
    RowPolicy("upkeep_runs", timedelta(days=90), "finished_at < :cutoff", "finished more than {keep} ago"),
    # A flush id must outlive any flush still pending in Redis (minutes, or the
    # length of an outage); 30 days is far beyond both.
    RowPolicy("analytics_flushes", timedelta(days=30), "applied_at < :cutoff", "applied more than {keep} ago"),
    # Only re-runs of old days read them; the daily rows keep what they counted.
    RowPolicy("follow_events", timedelta(days=90), "created_at < :cutoff", "created more than {keep} ago"),
    # Seed 003: system metrics, kept 30 days (hourly averages after the first 7).
    RowPolicy("system_metrics", timedelta(days=30), "sampled_at < :cutoff", "sampled more than {keep} ago"),
)

NAMES = tuple(s.table for s in PARTITIONED_TABLES) + tuple(p.name for p in RETENTION_POLICIES)


def overrides(raw: str | None = None) -> dict[str, timedelta]:
    """RETENTION_DAYS parsed: ``name=days`` pairs. Raises SettingsError naming what is wrong."""
    raw = settings.current().retention_days if raw is None else raw
    pairs = settings.name_days_pairs("RETENTION_DAYS", raw)
    unknown = sorted(set(pairs) - set(NAMES))
    if unknown:
        raise settings.SettingsError(f"RETENTION_DAYS: no retention policy is named {', '.join(unknown)}; "
                                     f"the names are {', '.join(NAMES)}")
    return {name: timedelta(days=days) for name, days in pairs.items()}


def keep_for(name: str, found: dict[str, timedelta] | None = None) -> timedelta:
    found = overrides() if found is None else found
    if name in found:
        return found[name]
    for spec in PARTITIONED_TABLES:
        if spec.table == name:
            return spec.retention
    return next(p.keep for p in RETENTION_POLICIES if p.name == name)


def _words(period: timedelta) -> str:
    if period % timedelta(days=1):
        return f"{period.total_seconds() / 3600:g} hours"
    return f"{period.days} day{'s' if period.days != 1 else ''}"


def retention_table() -> str:
    """The docs' retention table (docs/operations.md), from the two specs."""
    rows = ["| table | kept | what goes, and when | how |", "|---|---|---|---|"]
    for spec in PARTITIONED_TABLES:
        then = f"archived to `{spec.archive_table}`" if spec.disposal == "archive" else "dropped"
        rows.append(f"| `{spec.table}` | {_words(spec.retention)} | each month partition, {then} once all of it is "
                    f"older | detach, O(1); {spec.premake} months made ahead |")
    for policy in RETENTION_POLICIES:
        rows.append(f"| `{policy.name}` | {_words(policy.keep)} | rows {policy.rule.format(keep=_words(policy.keep))}"
                    " | batches, `SKIP LOCKED` |")
    return "\n".join(rows)


Progress = Callable[[str, int], None]


def retire_partitions(spec: partitions.PartitionSpec, now: datetime, keep: timedelta, *,
                      dry_run: bool = False) -> dict:
    """Retire every partition of ``spec`` wholly past ``keep``, each in transactions of its own."""
    lock_timeout = settings.current().upkeep_lock_timeout_ms
    with session_scope() as session:
        session.execute(text(f"SET LOCAL lock_timeout = '{lock_timeout}ms'"))  # listing locks each partition
        found = partitions.past_retention(session, spec, now, keep)
    done: dict = {"archived" if spec.disposal == "archive" else "dropped": [p.name for p in found]}
    if dry_run or not found:
        return done
    parent_lock_ms = 0.0
    for partition in found:
        if spec.disposal == "archive":
            with session_scope() as session:
                session.execute(text(f"SET LOCAL lock_timeout = '{lock_timeout}ms'"))
                partitions.prepare_retire(session, spec, partition)
        started = monotonic()
        with session_scope() as session:
            partitions.retire(session, spec, partition, lock_timeout_ms=lock_timeout)
        parent_lock_ms = max(parent_lock_ms, (monotonic() - started) * 1000)
    done["longest_parent_lock_ms"] = round(parent_lock_ms, 2)
    return done


def delete_rows(policy: RowPolicy, now: datetime, keep: timedelta, *, dry_run: bool = False,
                deadline: float | None = None, progress: Progress | None = None) -> dict:
    """Delete the policy's expired rows, one bounded transaction per batch, until none are left."""
    cutoff = now - keep
    if dry_run:
        with session_scope() as session:
            count = session.execute(text(f"SELECT count(*) FROM {policy.table} WHERE {policy.condition}"),
                                    {"cutoff": cutoff}).scalar_one()
        return {"would_delete": count}
    found = settings.current()
    batch = found.upkeep_batch_rows
    statement = text(
        f"DELETE FROM {policy.table} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {policy.table} "
        f"WHERE {policy.condition} LIMIT :batch FOR UPDATE SKIP LOCKED))")
    deleted, more = 0, True
    while more:
        if deadline is not None and monotonic() > deadline:
            return {"deleted": deleted, "stopped": "run budget spent; the next run continues"}
        with session_scope() as session:
            session.execute(text(f"SET LOCAL lock_timeout = '{found.upkeep_lock_timeout_ms}ms'"))
            count = session.execute(statement, {"cutoff": cutoff, "batch": batch}).rowcount
        deleted += count
        more = count == batch
        if progress is not None and count:
            progress(policy.name, count)
    return {"deleted": deleted}


def apply(now: datetime, *, dry_run: bool = False, progress: Progress | None = None) -> dict:
    """Every partitioned table, then every row policy; a table's failure does not stop the others.

    Returns ``{"tables": {name: what was done or "error"}, "failed": [names]}``.
    """
    periods = overrides()
    deadline = monotonic() + RUN_BUDGET_SECONDS
    units: list[Unit] = [
        (spec.table, lambda spec=spec: retire_partitions(spec, now, keep_for(spec.table, periods),
                                                         dry_run=dry_run))
        for spec in PARTITIONED_TABLES]
    units += [(policy.name, lambda policy=policy: delete_rows(
        policy, now, keep_for(policy.name, periods), dry_run=dry_run, deadline=deadline,
        progress=progress)) for policy in RETENTION_POLICIES]
    return each_table("retention", units)
