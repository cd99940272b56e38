"""``python -m workers upkeep [--dry-run]`` and ``python -m workers backup {create,verify,list}``."""
from __future__ import annotations

import sys

from tasks.upkeep import backup, jobs, retention
from workers.console import progress_bar, table
from workers.errors import JobError


def _names(values: list) -> str:
    shown = ", ".join(map(str, values[:4])) or "-"
    return shown + (f" and {len(values) - 4} more" if len(values) > 4 else "")


def _cells(done: dict) -> str:
    if "error" in done:
        error = done["error"]
        return f"ERROR {error['message'] if isinstance(error, dict) else error}"
    parts = []
    for key, value in done.items():
        if isinstance(value, list):
            parts.append(f"{key}: {_names(value)}")
        elif isinstance(value, dict):
            parts.append(f"{key}: {_names([f'{k} ({v} rows)' for k, v in value.items()])}")
        else:
            parts.append(f"{key}: {value}")
    return "; ".join(parts)


def upkeep_main(dry_run: bool = False) -> int:
    """Partitions, retention and purge now, table by table; ``--dry-run`` only says what would happen."""
    print(f"upkeep{' (dry run: nothing is written)' if dry_run else ''}")
    reports = {"partitions": jobs.ensure_partitions(dry_run=dry_run)}
    progress: retention.Progress | None = None
    if not dry_run:
        # The totals come from a dry run first, so the bar knows how far it has to go.
        plan = jobs.apply_retention(dry_run=True)
        total = sum(t.get("would_delete", 0) for t in plan["tables"].values())
        if total:
            show, done = progress_bar("rows", stream=sys.stderr), [0]

            def advance(_name: str, count: int) -> None:
                done[0] += count
                show(min(done[0], total), total)
            progress = advance
    reports["retention"] = jobs.apply_retention(dry_run=dry_run, progress=progress)
    reports["purge"] = jobs.purge_soft_deleted(dry_run=dry_run)
    reports["stuck media"] = jobs.sweep_stuck_media(dry_run=dry_run)
    rows = []
    for step, report in reports.items():
        tables = report.get("tables")
        if tables is None:
            rows.append((step, "-", _cells({k: v for k, v in report.items() if k not in ("job", "status")})))
        else:
            rows += [(step, name, _cells(done)) for name, done in tables.items()]
    print(table(("step", "table", "what" if dry_run else "done"), rows))
    failed = [f"{step}: {', '.join(r['failed'])}" for step, r in reports.items() if r.get("failed")]
    for line in failed:
        print(f"FAILED {line} (the others ran; see the log)")
    return 1 if failed else 0


def backup_main(action: str) -> int:
    try:
        if action == "create":
            report = jobs.make_backup()
            print(f"backup {report['file']}: {report['bytes']} bytes, {report['rows']} rows, {report['seconds']} s"
                  + (f"; rotated out {', '.join(report['rotated_out'])}" if report["rotated_out"] else ""))
            if "verify" in report:
                print(f"verified by a restore: {report['verify']['tables']} tables, {report['verify']['rows']} rows")
        elif action == "verify":
            report = jobs.verify_backup()
            print(f"{report['file']} restored into a scratch database: {report['tables']} tables and "
                  f"{report['rows']} rows, as recorded ({report['seconds']} s)")
        else:
            found = backup.backups()
            print(table(("taken (UTC)", "file", "bytes"),
                        [(t.isoformat(), p.name, p.stat().st_size) for t, p in reversed(found)]) if found
                  else f"no backups in {backup.root()}")
    except JobError as exc:
        print(f"error ({exc.code}): {exc.message}", file=sys.stderr)
        return 1
    return 0
