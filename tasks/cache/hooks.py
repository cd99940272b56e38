"""What other families call after their writes: ``invalidate_on_commit(session, event, ids)``.

The one place that decides whether the cache hears about a write: nothing is
sent when CACHE_URL is unset (no cache is kept), and what is sent leaves only
when the writer's transaction commits (``enqueue_on_commit``), so the
invalidation's version INCR always follows the commit it is about.
"""
from __future__ import annotations

import logging

from sqlalchemy.orm import Session

import settings
from tasks.cache.invalidation import EVENTS, canonical_ids, check
from tasks.cache.tasks import invalidate
from workers.reliability.enqueue import enqueue_on_commit
from workers.errors import InvalidArguments
from workers.task import MAX_LIST_ITEMS

log = logging.getLogger("tasks.cache.hooks")


def invalidate_on_commit(session: Session, event: str, ids) -> None:
    """Send ``cache.invalidate(event, ids)`` once ``session`` commits; nothing without a cache."""
    ids = sorted(set(ids))
    if not ids or not settings.current().cache_url:
        return
    # Ids no row can have (a web tier's feed.score_users([0, 7])) are left out, not raised: the
    # writer's own work must stand, and the cache holds nothing for them.
    kind, good = EVENTS[event].ids, []
    for ident in ids:
        try:
            good += canonical_ids(kind, [ident], f"cache event {event!r}")
        except InvalidArguments:
            log.warning("cache.invalidate(%s): left out an id no row can have", event)
    if not good:
        return
    _spec, ids = check(event, good)
    for start in range(0, len(ids), MAX_LIST_ITEMS):
        enqueue_on_commit(session, invalidate.si(event, ids[start:start + MAX_LIST_ITEMS]))
