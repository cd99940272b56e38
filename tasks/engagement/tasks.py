"""Celery entry points of the engagement family: thin wrappers over tasks/engagement/runs.py."""
from celery import group

from tasks.engagement import runs
from tasks.engagement.reconcile import Chunk
from workers.coalescing import Coalesce
from workers.task import UuidStr, job


@job("engagement.refresh_counts", coalesce=Coalesce(
    runs.refresh_each_in, weight=lambda call: len(call["post_ids"]), max_weight=runs.rc.REPAIR_BATCH))
def refresh_counts(post_ids: list[UuidStr]) -> dict:
    """The web tier's forced recount of these posts' counters (web-tier contract: a list of post ids)."""
    return runs.refresh("posts", post_ids).as_dict()


@job("engagement.reconcile_dirty")
def reconcile_dirty() -> dict:
    """Beat, every 30 s: drain the dirty queue in bounded batches within a time budget."""
    return runs.run_dirty().as_dict()


@job("engagement.sweep_all")
def sweep_all() -> dict:
    """Nightly: claim the singleton sweep, plan keyset chunks, fan them out as a group."""
    run_id, chunks = runs.start_full_sweep()
    if run_id is None:
        return {"status": "skipped", "reason": "another full sweep is running"}
    group(sweep_chunk.s(*chunk.as_args(), run_id) for chunk in chunks).apply_async()
    return {"status": "dispatched", "run_id": run_id, "chunks": len(chunks)}


@job("engagement.sweep_chunk")
def sweep_chunk(table: str, after: str | None, upto: str | None, run_id: UuidStr) -> dict:
    """One keyset chunk of a full sweep; safe to run twice."""
    outcome = runs.sweep_chunk(Chunk(table, after, upto), run_id)
    if outcome is None:
        return {"status": "gone"}
    checked, result = outcome
    return {"status": "done", "rows_checked": checked, "rows_fixed": result.rows_fixed,
            "max_drift": result.max_drift}
