"""Upkeep at 1 M engagement rows, each figure beside its baseline (issue 12).

Both benchmarks run in the upkeep tests' scratch database (``upkeep_db``, emptied
and stripped of partitions per test by ``fresh``), filled with set-based
generate_series inserts (session_replication_role = replica: no per-row foreign-key
checks while building), then VACUUM ANALYZE, so no measured run sets hint bits.

1. Retention of engagement older than a year. One month partition 14 months old
   holds 1 M rows; the current month holds 10 k. ``retention.retire_partitions``
   (validate the bounds CHECK, then detach + attach to ``user_engagement_archive``)
   is timed against the seed's way: the same 1 M rows (the very partition, moved
   back after the retire) moved to the archive in bounded transactions of 5,000
   rows, ``DELETE ... RETURNING`` feeding ``INSERT INTO user_engagement_archive``.
   The batched statement is the project's own batched-retention shape
   (``retention.delete_rows``: ``ctid = ANY(ARRAY(SELECT ctid ... LIMIT n FOR
   UPDATE SKIP LOCKED))``, a TID scan) aimed at the old partition as a plain
   table, one statement per batch: the cheapest form of the batched path, so the
   ratio does not flatter the partition retire. A writer thread inserting
   current-month rows throughout gives the longest stall a writer saw, beside
   the parent lock ``retire_partitions`` reports.
2. ``upkeep.backup`` (``tasks.upkeep.backup.create``: pg_dump -Fc from an exported
   snapshot, age-encrypted on the fly, per-table counts in the same snapshot,
   fsync) against bare ``pg_dump -Fc --file`` of the same database with the same
   binary and connection arguments; 1 M engagement rows over 12 months; three runs
   each, alternating, after one unmeasured warm-up; medians compared.
"""
from __future__ import annotations

import statistics
import subprocess
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

from db import partitions
from tasks.upkeep import backup, retention
from tests.benchmarks.conftest import Goal, NoGoal
from tests.upkeep.conftest import backup_env, fresh, upkeep_db  # noqa: F401

ROWS = 1_000_000
CURRENT_ROWS = 10_000
USERS = 1_000
POSTS = 10_000
BATCH = 5_000
# Past this the batched baseline stops and is extrapolated linearly from the rows it moved.
BASELINE_BUDGET_SECONDS = 120.0
KEEP = timedelta(days=365)

SPEC = partitions.spec_for("user_engagement")

PEOPLE = """
SET session_replication_role = replica;
INSERT INTO users (id, email, username, hashed_password)
    SELECT g, 'u' || g || '@example.com', 'u' || g, '!' FROM generate_series(1, :users) g;
SELECT setval(pg_get_serial_sequence('users', 'id'), :users + 1);
INSERT INTO posts (id, author_id, content)
    SELECT md5('p' || k)::uuid, k % :users + 1, 'bench' FROM generate_series(0, :posts - 1) k
"""

# Rows spread evenly over [lower, upper); a quarter carry a small JSON document.
ENGAGEMENT = """
INSERT INTO user_engagement (id, created_at, user_id, post_id, engagement_type, value, metadata)
SELECT md5(:tag || n)::uuid,
       CAST(:lower AS timestamptz) + (n - 1) * (CAST(:upper AS timestamptz) - CAST(:lower AS timestamptz)) / :rows,
       n % :users + 1, md5('p' || (n % :posts))::uuid,
       (ARRAY['LIKE', 'SHARE', 'COMMENT', 'VIEW', 'CLICK', 'SAVE'])[n % 6 + 1], 1.0,
       CASE WHEN n % 4 = 0 THEN jsonb_build_object('source', 'feed', 'position', n % 50) END
FROM generate_series(1, :rows) n
"""


def _people(engine) -> None:
    with engine.begin() as conn:
        for statement in PEOPLE.split(";\n"):
            conn.execute(text(statement), {"users": USERS, "posts": POSTS})


def _engagement(engine, tag: str, lower: datetime, upper: datetime, rows: int) -> None:
    with engine.begin() as conn:
        conn.execute(text("SET LOCAL session_replication_role = replica"))
        conn.execute(text(ENGAGEMENT), {"tag": tag, "lower": lower, "upper": upper, "rows": rows,
                                        "users": USERS, "posts": POSTS})


def _month_partition(engine, table: str, lower: datetime) -> str:
    name = partitions.partition_name(table, lower)
    upper = partitions.add_months(lower, 1)
    with engine.begin() as conn:
        conn.execute(text(f"CREATE TABLE {name} PARTITION OF {table} "
                          f"FOR VALUES FROM ('{lower.isoformat()}') TO ('{upper.isoformat()}')"))
    return name


def _ensure_current(engine, now: datetime) -> None:
    with Session(engine) as session:
        partitions.ensure(session, SPEC, now)
        session.commit()


def _vacuum(engine) -> None:
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))


def _count(engine, table: str) -> int:
    with engine.connect() as conn:
        return conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()


class WriterProbe(threading.Thread):
    """Inserts one current-month engagement row at a time (autocommit) and keeps the
    longest single insert: how long a writer to ``user_engagement`` was held up."""

    def __init__(self, url: str, now: datetime):
        super().__init__(daemon=True)
        self.engine = create_engine(url, isolation_level="AUTOCOMMIT", pool_size=1)
        self.now = now
        self.stop = threading.Event()
        self.longest_ms = 0.0
        self.inserts = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        statement = text("INSERT INTO user_engagement (created_at, user_id, post_id, engagement_type) "
                         "VALUES (:at, 1, md5('p0')::uuid, 'VIEW')")
        try:
            with self.engine.connect() as conn:
                while not self.stop.is_set():
                    started = time.perf_counter()
                    conn.execute(statement, {"at": self.now})
                    self.longest_ms = max(self.longest_ms, (time.perf_counter() - started) * 1000)
                    self.inserts += 1
                    time.sleep(0.002)
        except BaseException as exc:  # noqa: BLE001 - reported by finish()
            self.error = exc

    def finish(self) -> tuple[float, int]:
        self.stop.set()
        self.join(timeout=30)
        self.engine.dispose()
        if self.error:
            raise self.error
        return self.longest_ms, self.inserts


def _batched_archive(engine, partition: str, cutoff: datetime, total: int) -> dict:
    """The seed's way: at most BATCH rows per transaction moved to the archive, until none are left
    or the budget is spent. Returns the seconds, the rows moved and the longest transaction."""
    statement = text(
        f"WITH moved AS (DELETE FROM {partition} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {partition} "
        f"WHERE created_at < :cutoff LIMIT :batch FOR UPDATE SKIP LOCKED)) RETURNING *) "
        f"INSERT INTO user_engagement_archive SELECT * FROM moved")
    moved, longest, batches = 0, 0.0, 0
    started = time.perf_counter()
    while True:
        begun = time.perf_counter()
        with engine.begin() as conn:
            conn.execute(text("SET LOCAL lock_timeout = '2000ms'"))
            count = conn.execute(statement, {"cutoff": cutoff, "batch": BATCH}).rowcount
        longest = max(longest, time.perf_counter() - begun)
        moved += count
        batches += 1
        if count < BATCH or time.perf_counter() - started > BASELINE_BUDGET_SECONDS:
            break
    elapsed = time.perf_counter() - started
    return {"seconds": elapsed, "moved": moved, "batches": batches, "longest_txn_s": longest,
            "complete": moved >= total}


def test_retire_1m_rows_against_batched_delete(fresh, bench_record):  # noqa: F811
    engine = fresh
    url = engine.url.render_as_string(hide_password=False)
    now = datetime.now(timezone.utc)
    old = partitions.add_months(partitions.month_start(now), -14)
    old_upper = partitions.add_months(old, 1)
    cutoff = now - KEEP

    built = time.perf_counter()
    _ensure_current(engine, now)
    old_name = _month_partition(engine, "user_engagement", old)
    _people(engine)
    _engagement(engine, "old", old, old_upper, ROWS)
    _engagement(engine, "cur", partitions.month_start(now), now, CURRENT_ROWS)
    _vacuum(engine)
    build_seconds = time.perf_counter() - built
    assert _count(engine, old_name) == ROWS
    with engine.connect() as conn:
        old_bytes = conn.execute(text(f"SELECT pg_total_relation_size('{old_name}')")).scalar_one()

    # (a) the partition retire, as the nightly upkeep.retention runs it, with a writer beside it.
    probe = WriterProbe(url, now)
    probe.start()
    time.sleep(0.2)
    started = time.perf_counter()
    report = retention.retire_partitions(SPEC, now, KEEP)
    retire_seconds = time.perf_counter() - started
    time.sleep(0.2)
    retire_stall_ms, retire_probe_inserts = probe.finish()
    assert report["archived"] == [old_name], report
    archived = partitions.partition_name("user_engagement_archive", old)
    assert _count(engine, "user_engagement_archive") == ROWS
    assert _count(engine, f"ONLY {archived}") == ROWS
    assert _count(engine, "user_engagement") == CURRENT_ROWS + retire_probe_inserts
    with engine.connect() as conn:  # the retire did scan: its bounds CHECK was validated before the attach
        assert conn.execute(text("SELECT convalidated FROM pg_constraint WHERE conname = :name"),
                            {"name": f"{old_name}_bounds"}).scalar_one() is True
    lock_ms = report["longest_parent_lock_ms"]

    # The very same 1 M rows back into user_engagement, and an empty archive partition for the month.
    with engine.begin() as conn:
        conn.execute(text(f"ALTER TABLE user_engagement_archive DETACH PARTITION {archived}"))
        conn.execute(text(f"ALTER TABLE {archived} RENAME TO {old_name}"))
        conn.execute(text(f"ALTER TABLE user_engagement ATTACH PARTITION {old_name} "
                          f"FOR VALUES FROM ('{old.isoformat()}') TO ('{old_upper.isoformat()}')"))
    _month_partition(engine, "user_engagement_archive", old)
    assert _count(engine, old_name) == ROWS and _count(engine, "user_engagement_archive") == 0

    # (b) the seed's way, 5,000 rows per transaction, with the same writer beside it.
    probe = WriterProbe(url, now)
    probe.start()
    time.sleep(0.2)
    batched = _batched_archive(engine, old_name, cutoff, ROWS)
    batched_stall_ms, _ = probe.finish()
    assert _count(engine, "user_engagement_archive") == batched["moved"]
    if batched["complete"]:
        assert _count(engine, old_name) == 0
        baseline, kind, sample = batched["seconds"], "measured", "all 1 M rows"
    else:
        baseline = batched["seconds"] * ROWS / batched["moved"]
        kind, sample = "extrapolated", f"{batched['moved']:,} row sample extrapolated linearly to 1 M"
    per_row_us = batched["seconds"] / batched["moved"] * 1e6

    bench_record("upkeep.retire_partition_1m_rows", retire_seconds, "s", baseline,
                 f"the same 1 M rows moved to the archive in transactions of {BATCH:,} rows "
                 f"(DELETE ... RETURNING into INSERT INTO user_engagement_archive), {sample}",
                 baseline_kind=kind, goal=Goal("ratio", "<=", 0.01, "partition retire 100x faster"),
                 speedup=round(baseline / retire_seconds, 1), rows=ROWS, partition_mb=round(old_bytes / 2**20, 1),
                 longest_parent_lock_ms=lock_ms,
                 validate_and_other_seconds=round(retire_seconds - lock_ms / 1000, 3),
                 batched_rows_moved=batched["moved"], batched_batches=batched["batches"],
                 batched_us_per_row=round(per_row_us, 2), build_seconds=round(build_seconds, 1),
                 path="retention.retire_partitions(spec, now, 365 days): validate CHECK, detach, attach to archive")
    bench_record("upkeep.retire_parent_lock_1m_rows", lock_ms, "ms", batched["longest_txn_s"] * 1000,
                 f"longest single {BATCH:,}-row transaction of the batched path",
                 goal=NoGoal("context: how long user_engagement is locked against writers by the detach + attach; "
                             "the batched path never locks the table, its transactions hold row locks"),
                 writer_longest_insert_during_retire_ms=round(retire_stall_ms, 2),
                 writer_longest_insert_during_batched_ms=round(batched_stall_ms, 2),
                 writer_inserts_during_retire=retire_probe_inserts)


def _median(values: list[float]) -> float:
    return statistics.median(values)


def test_backup_against_bare_pg_dump(fresh, backup_env, tmp_path, bench_record):  # noqa: F811
    engine = fresh
    url = engine.url.render_as_string(hide_password=False)
    now = datetime.now(timezone.utc)
    first = partitions.add_months(partitions.month_start(now), -11)

    built = time.perf_counter()
    _ensure_current(engine, now)
    for months in range(11):
        _month_partition(engine, "user_engagement", partitions.add_months(first, months))
    _people(engine)
    _engagement(engine, "year", first, now, ROWS)
    _vacuum(engine)
    build_seconds = time.perf_counter() - built
    with engine.connect() as conn:
        db_bytes = conn.execute(text("SELECT pg_database_size(current_database())")).scalar_one()

    pg_dump = backup.pg_tool("pg_dump")
    args, env = backup._libpq(url)
    bare_file = tmp_path / "bare.dump"

    def bare() -> tuple[float, int]:
        started = time.perf_counter()
        subprocess.run([pg_dump, "--format=custom", "--file", str(bare_file), *args], env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        seconds = time.perf_counter() - started
        size = bare_file.stat().st_size
        bare_file.unlink()
        return seconds, size

    def upkeep_backup(index: int) -> tuple[float, dict]:
        started = time.perf_counter()
        manifest = backup.create(now + timedelta(seconds=index))
        seconds = time.perf_counter() - started
        return seconds, manifest

    bare()  # warm-up: page cache and the dump binary; not measured
    bare_runs, backup_runs, bare_bytes, manifests = [], [], 0, []
    for index in range(3):
        seconds, bare_bytes = bare()
        bare_runs.append(seconds)
        seconds, manifest = upkeep_backup(index)
        backup_runs.append(seconds)
        manifests.append(manifest)
    engagement_rows = sum(n for name, n in manifests[-1]["tables"].items() if name.startswith("user_engagement_p"))
    assert engagement_rows == ROWS, manifests[-1]["tables"]
    assert len(list(Path(backup.root()).glob(f"backup-*{backup.SUFFIX}"))) == 3

    value, baseline = _median(backup_runs), _median(bare_runs)
    bench_record("upkeep.backup_1m_engagement_rows", value, "s", baseline,
                 "bare pg_dump -Fc --file of the same database, same binary and connection arguments",
                 goal=Goal("ratio", "<=", 1.2), statistic="median of 3, alternating, after a warm-up",
                 backup_runs_s=[round(s, 3) for s in backup_runs], bare_runs_s=[round(s, 3) for s in bare_runs],
                 backup_bytes=manifests[-1]["bytes"], bare_bytes=bare_bytes, database_mb=round(db_bytes / 2**20, 1),
                 manifest_rows=manifests[-1]["rows"], rows=ROWS, build_seconds=round(build_seconds, 1),
                 pg_dump=manifests[-1]["pg_dump"])
