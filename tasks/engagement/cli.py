"""``python -m workers reconcile [--full] [--dry-run]``: the operator's view of the reconciler."""
from __future__ import annotations

from collections import defaultdict

from tasks.engagement import runs
from tasks.engagement.reconcile import Fix
from workers.console import progress_bar, table

MAX_DETAIL_ROWS = 20


def drift_table(fixes: list[Fix]) -> str:
    """Per counter: how many rows drifted, the largest drift each way; then the first rows."""
    if not fixes:
        return "  no drift: every counter checked was exact"
    per_counter: dict[tuple[str, str], list[int]] = defaultdict(list)
    for fix in fixes:
        per_counter[(fix.table, fix.column)].append(fix.drift)
    summary = [(table, column, len(d), min(d), max(d)) for (table, column), d in sorted(per_counter.items())]
    lines = [table(("table", "counter", "rows", "min drift", "max drift"), summary)]
    detail = [(f.table, f.column, f.entity_id, f.stored, f.true) for f in fixes[:MAX_DETAIL_ROWS]]
    lines += ["", table(("table", "counter", "id", "stored", "true"), detail)]
    if len(fixes) > MAX_DETAIL_ROWS:
        lines.append(f"  ... and {len(fixes) - MAX_DETAIL_ROWS} more (see counter_drift)")
    return "\n".join(lines)


def main(full: bool = False, dry_run: bool = False) -> int:
    mode = "full sweep" if full else "dirty queue"
    print(f"reconcile: {mode}{' (dry run: nothing is written)' if dry_run else ''}")
    if full:
        report = runs.run_full_sweep(dry_run=dry_run, progress=progress_bar("chunks"))
    else:
        report = runs.run_dirty(dry_run=dry_run)
    if report.status == "skipped":
        print("skipped: another full sweep is running (see counter_runs)")
        return 0
    result = report.result
    verb = "would fix" if dry_run else "fixed"
    print(f"checked {result.checked} rows, {verb} {result.rows_fixed}, max drift {result.max_drift}"
          + (f", {len(set(result.skipped))} locked and left queued" if result.skipped else "")
          + (f", run {report.run_id}" if report.run_id else ""))
    print(drift_table(result.fixes))
    return 0
