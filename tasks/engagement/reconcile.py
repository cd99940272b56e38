"""Counter reconciliation on one Session: plain functions that never commit.

Every write follows one protocol (``repair_ids``): lock the batch's parent rows in
key order with SKIP LOCKED, then recount them in a fresh statement that writes only
counters that differ and appends each fix to the ``counter_drift`` ledger. Ids that
were locked by someone else are reported back as skipped; the caller leaves them
(or puts them) in the dirty queue for the next run.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from sqlalchemy import text
from sqlalchemy.orm import Session

import settings
from db.locks import try_xact_lock
from workers.errors import BadInput
from tasks.engagement.counters import (
    PARENTS, chunk_end_sql, drift_sql, exists_sql, lock_sql, parent_tables, range_sweep_sql, repair_sql,
)

# Row locks live until commit, so a batch is small enough that lock + recount + write
# stay far below a second even when each post has thousands of likes (measured in the
# benchmark: ~1,000 posts take tens of milliseconds at 1 M posts).
_settings = settings.current()
REPAIR_BATCH = _settings.engagement_repair_batch
DIRTY_BATCH = _settings.engagement_dirty_batch
SWEEP_CHUNK = _settings.engagement_sweep_chunk
LOCK_TIMEOUT_MS = _settings.engagement_lock_timeout_ms
STATEMENT_TIMEOUT_MS = _settings.engagement_statement_timeout_ms
# A sweep chunk hash-joins its parents with one aggregate per counter; at the default
# 4 MB those spill to disk from about 50,000 parents per chunk.
WORK_MEM = _settings.engagement_work_mem
# A run still "running" after this long is dead: its worker was killed, its chunks were
# lost (workers purged, broker flushed), or its task was retried after a batch had
# committed (the retry starts a run of its own). The next run of the same mode closes
# it (close_stale_runs). A full sweep takes hours, a dirty pass 20 s, a refresh seconds:
# one bound, the sweep's, is safe for all three.
STALE_RUN_AFTER_SECONDS = _settings.engagement_sweep_stale_after
STALE_RUN_REASON = f"stale: still running after {STALE_RUN_AFTER_SECONDS} s (worker lost or task retried)"
# Serialises the check-and-claim of a full sweep across beats, workers and the CLI.
SWEEP_LOCK_NAMESPACE = "engagement.full_sweep"


@dataclass(frozen=True)
class Fix:
    table: str
    column: str
    entity_id: str
    stored: int
    true: int

    @property
    def drift(self) -> int:
        return self.true - self.stored


@dataclass
class BatchResult:
    checked: int = 0
    fixes: list[Fix] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def rows_fixed(self) -> int:
        return len({(f.table, f.entity_id) for f in self.fixes})

    @property
    def max_drift(self) -> int:
        return max((abs(f.drift) for f in self.fixes), default=0)

    def add(self, other: BatchResult) -> BatchResult:
        self.checked += other.checked
        self.fixes.extend(other.fixes)
        self.skipped.extend(other.skipped)
        return self


def set_local_timeouts(session: Session) -> None:
    """Bound every statement of this transaction: a lock we cannot get quickly is a
    transient error (retried), never a queue of blocked web requests behind us.

    One round trip (``set_config(…, true)`` is ``SET LOCAL``): a sweep chunk opens a few
    transactions, and four SETs each were a tenth of its statements.
    """
    session.execute(text(
        "SELECT set_config('lock_timeout', :lock, true), set_config('statement_timeout', :statement, true), "
        # A chunk of a few hundred thousand rows crosses jit_above_cost, and compiling
        # takes longer than the index range scans it would speed up.
        "set_config('work_mem', :work_mem, true), set_config('jit', 'off', true)"),
        {"lock": str(LOCK_TIMEOUT_MS), "statement": str(STATEMENT_TIMEOUT_MS), "work_mem": WORK_MEM})


def _check_table(parent_table: str) -> None:
    if parent_table not in PARENTS:
        raise BadInput(f"no counters on table {parent_table!r}", code="unknown_counter_table")


def repair_ids(session: Session, parent_table: str, ids: list[str], run_id: str | None,
               dry_run: bool = False) -> BatchResult:
    """Recount ``ids`` of ``parent_table``; write and ledger the counters that differ.

    Dry run: the same recount read-only, without locks, nothing written.
    """
    _check_table(parent_table)
    ids = sorted(set(map(str, ids)))
    if not ids:
        return BatchResult()
    set_local_timeouts(session)
    if dry_run:
        rows = session.execute(text(drift_sql(parent_table)), {"ids": ids}).mappings().all()
        return BatchResult(checked=len(ids), fixes=_fixes_from_rows(parent_table, rows))
    locked = session.execute(text(lock_sql(parent_table)), {"ids": ids}).scalars().all()
    skipped = sorted(set(ids) - set(locked))
    if skipped:
        # Not locked means held by a writer, or deleted (a cascade marks its parent as the
        # parent goes): only the first may be retried, or the queue would keep the dead.
        skipped = session.execute(text(exists_sql(parent_table)), {"ids": skipped}).scalars().all()
    if not locked:
        return BatchResult(skipped=skipped)
    rows = session.execute(text(repair_sql(parent_table)), {"ids": locked, "run_id": run_id}).all()
    fixes = [Fix(parent_table, column, entity_id, stored, true) for column, entity_id, stored, true in rows]
    return BatchResult(checked=len(locked), fixes=fixes, skipped=skipped)


def _fixes_from_rows(parent_table: str, rows) -> list[Fix]:
    fixes = []
    for row in rows:
        for key, stored in row.items():
            if key.endswith("__stored"):
                column = key[: -len("__stored")]
                true = row[f"{column}__true"]
                if stored != true:
                    fixes.append(Fix(parent_table, column, str(row["id"]), stored, true))
    return fixes


def mark_dirty(session: Session, parent_table: str, ids: list[str]) -> None:
    """Queue ids for the next dirty pass (a refresh or sweep that had to skip them)."""
    if ids:
        session.execute(text("INSERT INTO counter_dirty (parent_table, parent_id) "
                             "SELECT :t, unnest(CAST(:ids AS text[]))"), {"t": parent_table, "ids": list(ids)})


# --- dirty path --------------------------------------------------------------------

@dataclass
class DirtyBatch:
    result: BatchResult
    rows_read: int
    last_dirty_id: int | None


def reconcile_dirty_batch(session: Session, parent_table: str, run_id: str | None, after_dirty_id: int = 0,
                          limit: int | None = None, dry_run: bool = False) -> DirtyBatch:
    """Repair the parents of the next ``limit`` dirty marks after ``after_dirty_id`` and delete
    exactly the marks read whose parent was repaired. Marks added meanwhile, and marks of
    skipped (locked) parents, stay for the next batch or run."""
    set_local_timeouts(session)
    marks = session.execute(text(
        "SELECT id, parent_id FROM counter_dirty WHERE parent_table = :t AND id > :after ORDER BY id LIMIT :n"),
        {"t": parent_table, "after": after_dirty_id, "n": limit or DIRTY_BATCH}).all()
    if not marks:
        return DirtyBatch(BatchResult(), 0, None)
    result = BatchResult()
    ids = sorted({parent_id for _id, parent_id in marks})
    for start in range(0, len(ids), REPAIR_BATCH):
        # One transaction holds every sub-batch's locks until commit: DIRTY_BATCH bounds it.
        result.add(repair_ids(session, parent_table, ids[start:start + REPAIR_BATCH], run_id, dry_run))
    if not dry_run:
        skipped = set(result.skipped)
        done = [mark_id for mark_id, parent_id in marks if parent_id not in skipped]
        session.execute(text("DELETE FROM counter_dirty WHERE id = ANY(CAST(:ids AS bigint[]))"), {"ids": done})
    return DirtyBatch(result, len(marks), marks[-1][0])


def dirty_backlog(session: Session) -> dict[str, int]:
    rows = session.execute(text("SELECT parent_table, count(*) FROM counter_dirty GROUP BY parent_table")).all()
    return dict(rows)


# --- runs and the ledger ----------------------------------------------------------

def start_run(session: Session, mode: str, chunks_total: int | None = None) -> str:
    """Record a new run of ``mode``, closing that mode's stale runs first."""
    close_stale_runs(session, mode)
    return _insert_run(session, mode, chunks_total)


def _insert_run(session: Session, mode: str, chunks_total: int | None = None) -> str:
    return session.execute(text(
        "INSERT INTO counter_runs (mode, chunks_total) VALUES (:mode, :chunks) RETURNING id::text"),
        {"mode": mode, "chunks": chunks_total}).scalar_one()


def close_stale_runs(session: Session, mode: str) -> int:
    """Mark failed, with a reason, every run of ``mode`` still running after
    STALE_RUN_AFTER_SECONDS. Returns how many were closed.

    One statement over the partial index of running runs (idx_counter_runs_running).
    SKIP LOCKED: runs starting together never queue on each other's housekeeping, and a
    row someone still writes is left alone. FOR NO KEY UPDATE, as in record_chunk, does
    not conflict with the FOR KEY SHARE a live run's ledger inserts hold on it.
    """
    return session.execute(text("""
        UPDATE counter_runs SET status = 'failed', finished_at = now(), failure_reason = :reason
        WHERE id IN (SELECT id FROM counter_runs
                     WHERE mode = :mode AND status = 'running'
                       AND started_at < now() - make_interval(secs => :stale)
                     FOR NO KEY UPDATE SKIP LOCKED)"""),
        {"mode": mode, "stale": STALE_RUN_AFTER_SECONDS, "reason": STALE_RUN_REASON}).rowcount


def add_to_run(session: Session, run_id: str, result: BatchResult, finish: bool = False) -> None:
    """Add a committed batch's figures to its run (in the batch's own transaction, so the
    summary can never count a batch that rolled back)."""
    session.execute(text("""
        UPDATE counter_runs SET rows_checked = rows_checked + :checked, rows_fixed = rows_fixed + :fixed,
               max_drift = greatest(max_drift, :max_drift),
               status = CASE WHEN :finish THEN 'finished' ELSE status END,
               finished_at = CASE WHEN :finish THEN now() ELSE finished_at END,
               duration_seconds = CASE WHEN :finish THEN extract(epoch FROM now() - started_at)
                                       ELSE duration_seconds END
        WHERE id = :run_id"""),
        {"checked": result.checked, "fixed": result.rows_fixed, "max_drift": result.max_drift,
         "finish": finish, "run_id": run_id})


def finish_run(session: Session, run_id: str, status: str = "finished") -> None:
    session.execute(text(
        "UPDATE counter_runs SET status = :status, finished_at = now(), "
        "duration_seconds = extract(epoch FROM now() - started_at) WHERE id = :run_id"),
        {"status": status, "run_id": run_id})


# --- full sweep -------------------------------------------------------------------

@dataclass(frozen=True)
class Chunk:
    parent_table: str
    after: str | None   # exclusive lower bound; None for the first chunk
    upto: str | None    # inclusive upper bound; None for the last chunk (rows added since planning)

    def as_args(self) -> tuple:
        return (self.parent_table, self.after, self.upto)


def claim_full_sweep(session: Session) -> str | None:
    """Start a full sweep unless one is running: returns its run id, or None to skip.

    pg_try_advisory_xact_lock makes the check-and-insert atomic across beats, workers
    and the CLI and is released by the commit that makes the running row visible; the
    session-level pg_try_advisory_lock would outlive a crashed holder on a pooled
    connection. The running row then guards the sweep for as long as its chunks run.
    """
    if not try_xact_lock(session, SWEEP_LOCK_NAMESPACE):
        return None
    close_stale_runs(session, "full")
    running = session.execute(text(
        "SELECT id FROM counter_runs WHERE mode = 'full' AND status = 'running' LIMIT 1")).scalar()
    if running is not None:
        return None
    return _insert_run(session, "full")


def plan_chunks(session: Session, tables: tuple[str, ...] | None = None, size: int | None = None) -> list[Chunk]:
    """Keyset chunks of about ``size`` rows on each parent table's primary key.

    Boundaries come from the planner's histogram of the key (pg_stats, kept fresh by
    autoanalyze): O(1) instead of an index walk, and as even as the key's distribution
    whatever it is. Without usable statistics (never analyzed, or more chunks than the
    histogram has buckets) the table is walked by keyset, one index-only step per chunk.
    Every table's last chunk is open above, so rows added since planning are swept too.
    Tables with a single chunk come first: that chunk may aggregate a whole source (users
    over posts), and a group runs better with its longest task started early.
    """
    size = size or SWEEP_CHUNK
    planned = []
    for table in tables or parent_tables():
        bounds = _histogram_bounds(session, table, size)
        planned.append(bounds if bounds is not None else _walk_bounds(session, table, size))
    planned.sort(key=len)
    chunks = []
    for table_bounds in planned:
        chunks.extend(table_bounds)
    return chunks


def _chunks_from(table: str, ends: list[str]) -> list[Chunk]:
    starts = [None, *ends]
    return [Chunk(table, after, upto) for after, upto in zip(starts, [*ends, None])]


def _histogram_bounds(session: Session, table: str, size: int) -> list[Chunk] | None:
    row = session.execute(text(
        # Rows scaled to the table's current size, as the planner does, so an import since
        # the last analyze still yields chunks of about ``size``.
        "SELECT s.histogram_bounds::text, CASE WHEN c.relpages > 0 THEN c.reltuples / c.relpages * "
        "(pg_relation_size(c.oid) / current_setting('block_size')::int) ELSE c.reltuples END FROM pg_stats s "
        "JOIN pg_class c ON c.relname = s.tablename AND c.relnamespace = to_regnamespace(s.schemaname) "
        "WHERE s.schemaname = current_schema() AND s.tablename = :t AND s.attname = 'id'"), {"t": table}).first()
    if row is None or row[0] is None or row[1] <= 0:
        return None
    key_type = PARENTS[table].key_type
    bounds = session.execute(text(f"SELECT unnest(CAST(:b AS {key_type}[]))::text"), {"b": row[0]}).scalars().all()
    wanted = max(1, math.ceil(row[1] / size))
    buckets = len(bounds) - 1
    if wanted > buckets:
        return None
    ends = list(dict.fromkeys(bounds[round(i * buckets / wanted)] for i in range(1, wanted)))
    return _chunks_from(table, ends)


def _walk_bounds(session: Session, table: str, size: int) -> list[Chunk]:
    ends: list[str] = []
    while True:
        end = session.execute(text(chunk_end_sql(table, bool(ends))),
                              {"after": ends[-1] if ends else None, "size": size}).scalar()
        if end is None:
            return _chunks_from(table, ends)
        ends.append(end)


def set_chunks_total(session: Session, run_id: str, total: int) -> None:
    session.execute(text("UPDATE counter_runs SET chunks_total = :n WHERE id = :run_id"), {"n": total, "run_id": run_id})


def find_chunk_drift(session: Session, chunk: Chunk, dry_run: bool = False) -> tuple[int, list[Fix]]:
    """Read-only detection over one chunk: (rows in the chunk, drifted counters)."""
    _check_table(chunk.parent_table)
    set_local_timeouts(session)
    below, above = chunk.after is not None, chunk.upto is not None
    params = {"after": chunk.after, "upto": chunk.upto}
    checked, drifted = session.execute(text(range_sweep_sql(chunk.parent_table, below, above)), params).one()
    return checked, _fixes_from_rows(chunk.parent_table, drifted)


def record_chunk(session: Session, run_id: str, chunk: Chunk, checked: int, result: BatchResult) -> None:
    """Record a finished chunk once, then recompute the run's totals from its chunks
    (a chunk recorded before leaves the run untouched).

    The run row is locked in its own statement first, so the totals are summed in a
    fresh statement that sees every chunk committed before us (two chunks finishing
    at once cannot each miss the other). The lock is FOR NO KEY UPDATE: every chunk
    already holds FOR KEY SHARE on this row through the foreign keys of its ledger
    and chunk rows, and FOR UPDATE conflicts with that, so two chunks finishing
    together deadlocked.
    """
    inserted = session.execute(text("""
        INSERT INTO counter_run_chunks (run_id, parent_table, start_id, end_id, rows_checked, rows_fixed, max_drift)
        VALUES (:run_id, :table, :start, :end, :checked, :fixed, :max_drift)
        ON CONFLICT DO NOTHING"""),
        {"run_id": run_id, "table": chunk.parent_table, "start": chunk.after or "", "end": chunk.upto or "",
         "checked": checked, "fixed": result.rows_fixed, "max_drift": result.max_drift}).rowcount
    if not inserted:
        # A redelivered chunk, already recorded: the run's totals are the first delivery's,
        # and a finished run keeps its finished_at and duration.
        return
    session.execute(text("SELECT 1 FROM counter_runs WHERE id = :run_id FOR NO KEY UPDATE"), {"run_id": run_id})
    session.execute(text("""
        UPDATE counter_runs r SET rows_checked = s.checked, rows_fixed = s.fixed, max_drift = s.max_drift,
               chunks_done = s.done,
               status = CASE WHEN s.done >= r.chunks_total THEN 'finished' ELSE r.status END,
               finished_at = CASE WHEN s.done >= r.chunks_total THEN now() ELSE r.finished_at END,
               duration_seconds = CASE WHEN s.done >= r.chunks_total
                                       THEN extract(epoch FROM now() - r.started_at) ELSE r.duration_seconds END
        FROM (SELECT count(*) AS done, coalesce(sum(rows_checked), 0) AS checked,
                     coalesce(sum(rows_fixed), 0) AS fixed, coalesce(max(max_drift), 0) AS max_drift
              FROM counter_run_chunks WHERE run_id = :run_id) s
        WHERE r.id = :run_id"""), {"run_id": run_id})


def run_status(session: Session, run_id: str) -> dict | None:
    row = session.execute(text("SELECT * FROM counter_runs WHERE id = :run_id"), {"run_id": run_id}).mappings().first()
    return dict(row) if row else None


def ledger(session: Session, run_id: str) -> list[Fix]:
    rows = session.execute(text(
        "SELECT table_name, column_name, entity_id, stored_value, true_value FROM counter_drift "
        "WHERE run_id = :run_id ORDER BY id"), {"run_id": run_id}).all()
    return [Fix(*row) for row in rows]
