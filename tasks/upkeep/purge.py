"""Hard-delete what was soft-deleted long ago: comments, posts, users.

Batches of UPKEEP_BATCH_ROWS ids, claimed with ``FOR UPDATE SKIP LOCKED`` and
deleted in one transaction each; the foreign keys cascade to what hangs off
them (likes, reactions, shares, comments, feed items, notifications, media
rows, engagement events). Counters of the rows that remain are repaired by the
existing dirty path: the engagement family's statement triggers mark every
parent whose likes, comments or follows were deleted, cascade or not, and
``engagement.reconcile_dirty`` recounts them.

After each commit, the photo variants of the deleted rows are removed from
disk (the images family's storage; a crash between the commit and the removal
leaves files without rows, never rows without files), and every hook in
``PURGE_HOOKS`` is called with the kind and the ids, so that search and cache
work can drop them. A hook's failure is logged; it does not undo the purge.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import text

import settings
from db.session import session_scope
from tasks.images import storage
from tasks.images.errors import ImageRejected
from tasks.upkeep.runs import each_table

log = logging.getLogger("tasks.upkeep.purge")

# Order matters only for the counts: a comment purged on its own is counted as
# a comment, not as part of its post or author.
KINDS = ("comments", "posts", "users")

_ID_TYPE = {"comments": "uuid[]", "posts": "uuid[]", "users": "integer[]"}

# The media rows (purpose, variant base) that go with each kind's deleted ids.
_MEDIA_OF = {
    "comments": None,
    "posts": "SELECT purpose, filename FROM media_files WHERE post_id = ANY(CAST(:ids AS uuid[])) "
             "AND filename IS NOT NULL",
    "users": "SELECT purpose, filename FROM media_files WHERE user_id = ANY(CAST(:ids AS integer[])) "
             "AND filename IS NOT NULL",
}

PurgeHook = Callable[[str, list], None]
PURGE_HOOKS: list[PurgeHook] = []


def on_purged(hook: PurgeHook) -> PurgeHook:
    """Register ``hook(kind, ids)``, called after each committed batch (decorator)."""
    PURGE_HOOKS.append(hook)
    return hook


def purge(now: datetime, *, dry_run: bool = False) -> dict:
    """Purge every kind; a kind's failure is logged and the others still run."""
    found = settings.current()
    cutoff = now - timedelta(days=found.purge_soft_deleted_days)
    report = each_table("purge", [(kind, lambda kind=kind: _purge_kind(kind, cutoff, found.upkeep_batch_rows, dry_run))
                                  for kind in KINDS])
    return {"cutoff": cutoff.isoformat(), **report}


def _purge_kind(kind: str, cutoff: datetime, batch: int, dry_run: bool) -> dict:
    if dry_run:
        with session_scope() as session:
            count = session.execute(text(f"SELECT count(*) FROM {kind} WHERE deleted_at < :cutoff"),
                                    {"cutoff": cutoff}).scalar_one()
        return {"would_delete": count}
    lock_timeout = settings.current().upkeep_lock_timeout_ms
    deleted = files = 0
    while True:
        with session_scope() as session:
            session.execute(text(f"SET LOCAL lock_timeout = '{lock_timeout}ms'"))
            ids = list(session.execute(text(
                f"SELECT id FROM {kind} WHERE deleted_at < :cutoff ORDER BY deleted_at LIMIT :batch "
                "FOR UPDATE SKIP LOCKED"), {"cutoff": cutoff, "batch": batch}).scalars())
            ids = [i if kind == "users" else str(i) for i in ids]
            media = session.execute(text(_MEDIA_OF[kind]), {"ids": ids}).all() if ids and _MEDIA_OF[kind] else []
            if ids:
                session.execute(text(f"DELETE FROM {kind} WHERE id = ANY(CAST(:ids AS {_ID_TYPE[kind]}))"),
                                {"ids": ids})
        if not ids:
            break
        # Committed: now the files, then whoever keeps copies (search, caches).
        deleted += len(ids)
        files += sum(_delete_files(purpose, base) for purpose, base in media)
        _call_hooks(kind, ids)
        if len(ids) < batch:
            break
    return {"deleted": deleted, "files_deleted": files}


def _delete_files(purpose: str, base: str) -> int:
    try:  # a stored name that is not exactly one of ours is never used as a path
        return storage.delete_variants(purpose, storage.checked_base(purpose, base, "purged base"))
    except ImageRejected as exc:
        log.error("purge left a media name it does not trust", extra={"error_code": exc.code})
        return 0


def _call_hooks(kind: str, ids: list) -> None:
    for hook in PURGE_HOOKS:
        try:
            hook(kind, ids)
        except Exception as exc:  # noqa: BLE001 - the rows are gone either way; say which hook failed
            log.error("purge hook %s failed", getattr(hook, "__qualname__", hook),
                      extra={"upkeep_table": kind, "error_code": type(exc).__name__}, exc_info=exc)
