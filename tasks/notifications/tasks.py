"""Celery entry points of the notifications family: thin, the logic is in batching.py."""
from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timezone

from db.locks import KEYS_PER_TRANSACTION, transaction_chunks
from db.session import session_scope
from tasks.cache.hooks import invalidate_on_commit
from tasks.notifications.batching import apply_events, mark_read as mark_read_rows, prune_rate_limits
from tasks.notifications.config import BATCH_CONFIGS, RECORDABLE_KINDS, RETRACTABLE_KINDS
from tasks.notifications.errors import UnknownKind
from tasks.notifications.sources import load_events, record_sources, retract_recipient, retract_source
from workers.errors import InvalidArguments
from workers.coalescing import HANDOFF, Coalesce
from workers.task import UuidStr, job


def _check_kind(kind: str, allowed: tuple[str, ...]) -> None:
    if kind not in allowed:
        raise UnknownKind(f"kind {kind[:50]!r} is not one of {', '.join(allowed)}")


def _record_in_bulk(session, calls: list[dict]) -> list:
    """notifications.record's coalesced form (workers/coalescing.py): many messages, one transaction."""
    results: list = [HANDOFF] * len(calls)    # an unknown kind runs alone, to fail with its typed error
    by_kind: dict[str, list[int]] = defaultdict(list)
    for index, call in enumerate(calls):
        if call["kind"] in RECORDABLE_KINDS:
            by_kind[call["kind"]].append(index)
    changed = set()
    for kind in sorted(by_kind):
        outcomes = record_sources(session, kind, [calls[i]["source_id"] for i in by_kind[kind]])
        seen = set()
        for index in by_kind[kind]:
            source = calls[index]["source_id"]
            if source not in outcomes:
                results[index] = {"status": "gone"}
            elif source in seen:  # sent twice: the second is a duplicate, as it would be run alone
                results[index] = {"status": "duplicate", "notification_id": None, "parent_id": None}
            else:
                seen.add(source)
                event, outcome = outcomes[source]
                results[index] = outcome.as_dict()
                if outcome.wrote:
                    changed.add(event.recipient_id)
    invalidate_on_commit(session, "notifications_changed", changed)
    return results


@job("notifications.record", coalesce=Coalesce(_record_in_bulk))
def record(kind: str, source_id: UuidStr) -> dict:
    """Call after the web tier commits a like, emoji reaction, follow, share, comment, friend
    request or accept (the friendships row's id), comment reaction or message."""
    _check_kind(kind, RECORDABLE_KINDS)
    with session_scope() as session:
        events = load_events(session, kind, [source_id], lock=True)
        if not events:
            return {"status": "gone"}
        outcome = apply_events(session, events, keys_locked=True)[0]
        if outcome.wrote:
            invalidate_on_commit(session, "notifications_changed", [events[0].recipient_id])
        return outcome.as_dict()


# Source ids per transaction in record_many: each distinct batch key holds an
# advisory lock until commit (see db/locks.py for why that is bounded).
BULK_CHUNK = KEYS_PER_TRANSACTION


@job("notifications.record_many")
def record_many(kind: str, source_ids: list[UuidStr]) -> dict:
    """Bulk path for backfills and imports: set-based, one transaction per chunk of 500 ids.

    A retry after some chunks committed is safe: their events come back as duplicates.
    """
    _check_kind(kind, RECORDABLE_KINDS)
    statuses: dict[str, int] = {"gone": 0}
    for chunk in transaction_chunks(source_ids, BULK_CHUNK):
        with session_scope() as session:
            outcomes = record_sources(session, kind, chunk)
            statuses["gone"] += len(set(chunk)) - len(outcomes)
            changed = set()
            for event, outcome in outcomes.values():
                statuses[outcome.status] = statuses.get(outcome.status, 0) + 1
                if outcome.wrote:
                    changed.add(event.recipient_id)
            invalidate_on_commit(session, "notifications_changed", changed)
    return {"status": "ok", "received": len(source_ids), **statuses}


# The argument that names what a retraction is about, by the kind's batch scope.
_RETRACT_SCOPE_ARGUMENT = {"post": "post_id", "comment": "comment_id", "user": "user_id"}


@job("notifications.retract")
def retract(kind: str, actor_id: int, post_id: UuidStr | None = None, user_id: int | None = None,
            comment_id: UuidStr | None = None) -> dict:
    """Call after an unlike, reaction removal, unfollow, withdrawn friend request or unfriend."""
    _check_kind(kind, RETRACTABLE_KINDS)
    scope = BATCH_CONFIGS[kind].batch_scope
    given = {"post_id": post_id, "comment_id": comment_id, "user_id": user_id}
    needed = _RETRACT_SCOPE_ARGUMENT[scope]
    if given[needed] is None:
        raise InvalidArguments(f"retract(kind={kind!r}) needs {needed}")
    scope_id = None if scope == "user" else given[needed]
    with session_scope() as session:
        result = retract_source(session, kind=kind, actor_id=actor_id, scope_id=scope_id, user_id=user_id)
        if result.get("removed"):
            recipient = retract_recipient(session, kind=kind, scope_id=scope_id, user_id=user_id)
            invalidate_on_commit(session, "notifications_changed", [recipient])
        return result


@job("notifications.mark_read")
def mark_read(user_id: int, notification_ids: list[UuidStr] | None = None, all: bool = False) -> dict:
    """Mark the given top-level notifications (with their children), or all of them, read."""
    if all == bool(notification_ids):
        raise InvalidArguments("mark_read needs either notification_ids or all=True, not both or neither")
    with session_scope() as session:
        changed = mark_read_rows(session, user_id, notification_ids=notification_ids, all=all,
                                 now=datetime.now(timezone.utc))
        if changed:  # top-level rows: the only ones the unread count counts
            invalidate_on_commit(session, "notifications_changed", [user_id])
    return {"status": "ok", "marked": changed}


@job("notifications.prune_rate_limits")
def prune_rate_limit_windows() -> dict:
    """Beat, hourly: drop rate-limit windows older than 2 h, one bounded chunk per run."""
    with session_scope() as session:
        deleted = prune_rate_limits(session, now=datetime.now(timezone.utc))
    return {"status": "ok", "deleted": deleted}
