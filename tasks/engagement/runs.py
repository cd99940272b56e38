"""Runs of the reconciler: the callers that own the transactions.

Each batch commits on its own (row locks are held until commit, so short
transactions keep the web tier unblocked), and each is safe to run twice. The
Celery tasks and the operator CLI both call these.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field

from sqlalchemy import text
from sqlalchemy.orm import Session

import settings
from db.session import session_scope
from tasks.engagement import reconcile as rc
from tasks.engagement.counters import parent_tables

DIRTY_BUDGET_SECONDS = settings.current().engagement_dirty_budget_seconds
SWEEP_CONNECTIONS = settings.current().engagement_sweep_connections


@dataclass
class RunReport:
    status: str
    run_id: str | None = None
    mode: str = ""
    dry_run: bool = False
    result: rc.BatchResult = field(default_factory=rc.BatchResult)
    chunks: int = 0

    def as_dict(self) -> dict:
        return {"status": self.status, "run_id": self.run_id, "mode": self.mode, "dry_run": self.dry_run,
                "rows_checked": self.result.checked, "rows_fixed": self.result.rows_fixed,
                "max_drift": self.result.max_drift, "skipped": len(self.result.skipped), "chunks": self.chunks}


def refresh(parent_table: str, ids: list[str]) -> RunReport:
    """Recount these ids now (the web tier's forced refresh). Ids locked by a concurrent
    writer are queued as dirty, so the next dirty pass (<= 30 s) finishes them."""
    with session_scope() as session:
        run_id = rc.start_run(session, "refresh")
    report = RunReport("finished", run_id, "refresh")
    ids = sorted(set(ids))
    for start in range(0, max(len(ids), 1), rc.REPAIR_BATCH):
        batch = ids[start:start + rc.REPAIR_BATCH]
        with session_scope() as session:
            result = rc.repair_ids(session, parent_table, batch, run_id)
            rc.mark_dirty(session, parent_table, result.skipped)
            rc.add_to_run(session, run_id, result, finish=start + rc.REPAIR_BATCH >= len(ids))
        report.result.add(result)
    return report


def refresh_in(session: Session, targets: dict[str, list[str]]) -> rc.BatchResult:
    """Recount these ids (parent table -> ids) inside the caller's transaction, which wrote
    their source rows, as one refresh run: the counters are exact when it commits. Ids a
    concurrent writer holds are queued dirty for the next pass (<= 30 s)."""
    run_id = rc.start_run(session, "refresh")
    total = rc.BatchResult()
    for parent_table, ids in targets.items():
        result = rc.repair_ids(session, parent_table, ids, run_id)
        rc.mark_dirty(session, parent_table, result.skipped)
        total.add(result)
    rc.add_to_run(session, run_id, total, finish=True)
    return total


def refresh_each_in(session: Session, calls: list[dict]) -> list[dict]:
    """Many forced refreshes (``{"post_ids": [...]}`` each) as one run in the caller's transaction:
    refresh_counts' coalesced form. Each call's report counts its own ids."""
    wanted = sorted({post_id for call in calls for post_id in call["post_ids"]})
    run_id = rc.start_run(session, "refresh")
    result = rc.repair_ids(session, "posts", wanted, run_id)
    rc.mark_dirty(session, "posts", result.skipped)
    rc.add_to_run(session, run_id, result, finish=True)
    reports = []
    for call in calls:
        own = set(call["post_ids"])
        part = rc.BatchResult(checked=len(own), fixes=[f for f in result.fixes if f.entity_id in own],
                              skipped=[i for i in result.skipped if i in own])
        reports.append(RunReport("finished", run_id, "refresh", result=part).as_dict())
    return reports


def run_dirty(budget_seconds: float | None = None, limit: int | None = None, dry_run: bool = False) -> RunReport:
    """Drain the dirty queue in bounded batches until it is empty or the budget is spent.

    A pass that finds nothing records no run. Within a pass the queue is read by a
    cursor on its id, so marks of a parent someone holds locked are passed over (not
    retried in a loop) and stay queued for the next pass.
    """
    deadline = time.monotonic() + (budget_seconds or DIRTY_BUDGET_SECONDS)
    limit = limit or rc.DIRTY_BATCH
    report = RunReport("finished", None, "dirty", dry_run)
    for table in parent_tables():
        after = 0
        while time.monotonic() < deadline:
            with session_scope() as session:
                if not session.execute(text("SELECT EXISTS (SELECT 1 FROM counter_dirty WHERE parent_table = :t "
                                            "AND id > :after)"), {"t": table, "after": after}).scalar():
                    break
                run_id = report.run_id or (None if dry_run else rc.start_run(session, "dirty"))
                batch = rc.reconcile_dirty_batch(session, table, run_id, after, limit, dry_run)
                if run_id:
                    rc.add_to_run(session, run_id, batch.result)
                if dry_run:
                    session.rollback()
            report.run_id = run_id
            report.result.add(batch.result)
            if batch.rows_read < limit:
                break
            after = batch.last_dirty_id
    if time.monotonic() >= deadline:
        report.status = "budget_spent"
    if report.run_id:
        with session_scope() as session:
            rc.finish_run(session, report.run_id)
    return report


# --- full sweep -------------------------------------------------------------------

def start_full_sweep(chunk_size: int | None = None) -> tuple[str | None, list[rc.Chunk]]:
    """Claim the sweep and plan its chunks in one transaction: (run id, chunks), or (None, [])
    when another sweep holds the claim."""
    with session_scope() as session:
        run_id = rc.claim_full_sweep(session)
        if run_id is None:
            return None, []
        chunks = rc.plan_chunks(session, size=chunk_size or rc.SWEEP_CHUNK)
        rc.set_chunks_total(session, run_id, len(chunks))
    return run_id, chunks


def sweep_chunk(chunk: rc.Chunk, run_id: str | None, dry_run: bool = False) -> tuple[int, rc.BatchResult] | None:
    """Detect drift over one keyset chunk read-only, then repair only the drifted ids under
    lock, batch by batch. Returns None when the run no longer exists."""
    with session_scope() as session:
        if run_id is not None and rc.run_status(session, run_id) is None:
            return None
        checked, fixes = rc.find_chunk_drift(session, chunk)
    if dry_run:
        return checked, rc.BatchResult(checked=checked, fixes=fixes)
    ids = sorted({f.entity_id for f in fixes})
    batches = [ids[start:start + rc.REPAIR_BATCH] for start in range(0, len(ids), rc.REPAIR_BATCH)] or [[]]
    total = rc.BatchResult()
    for batch in batches:
        with session_scope() as session:
            result = rc.repair_ids(session, chunk.parent_table, batch, run_id)
            # Locked by a writer right now: its write marked it dirty, but queue it anyway
            # in case that write rolls back and the stale value stays.
            rc.mark_dirty(session, chunk.parent_table, result.skipped)
            total.add(result)
            if batch is batches[-1] and run_id is not None:
                # The chunk is recorded with its last repairs: one commit fewer per chunk,
                # and a chunk counted as done has its repairs committed with it.
                if not batch:
                    rc.set_local_timeouts(session)
                rc.record_chunk(session, run_id, chunk, checked, total)
    total.checked = checked
    return checked, total


def run_full_sweep(dry_run: bool = False, progress: Callable[[int, int], None] | None = None,
                   chunk_size: int | None = None, connections: int | None = None) -> RunReport:
    """The whole sweep in this process (the CLI): same claim, same chunks, ``connections``
    chunks at a time. A chunk's time is spent in PostgreSQL, so one process keeps that
    many backends busy; each chunk still commits on its own."""
    if dry_run:
        with session_scope() as session:
            run_id, chunks = None, rc.plan_chunks(session, size=chunk_size or rc.SWEEP_CHUNK)
            session.rollback()
    else:
        run_id, chunks = start_full_sweep(chunk_size)
        if run_id is None:
            return RunReport("skipped", mode="full")
    report = RunReport("finished", run_id, "full", dry_run, chunks=len(chunks))
    with ThreadPoolExecutor(max_workers=connections or SWEEP_CONNECTIONS) as pool:
        outcomes = [pool.submit(sweep_chunk, chunk, run_id, dry_run) for chunk in chunks]
        try:
            for done, future in enumerate(as_completed(outcomes), start=1):
                outcome = future.result()
                if outcome is not None:
                    report.result.add(outcome[1])
                if progress:
                    progress(done, len(chunks))
        except BaseException:
            # A failed chunk (or Ctrl-C) stops the sweep: chunks not started are dropped, and
            # the run stays 'running' until ENGAGEMENT_SWEEP_STALE_AFTER closes it, as before.
            pool.shutdown(cancel_futures=True)
            raise
    return report
