"""Drain ``search_dirty`` into the index: the dirty pass of ``search.index_dirty``.

One batch is one transaction: take the backend's version lock (a pass already
running makes this one return ``busy``), claim up to SEARCH_BATCH marks by
deleting them, expand user and tag marks into post marks, write the posts'
documents to every live version, commit. Should the engine fail, the rollback
puts the marks back: nothing is lost, and a write is idempotent (an upsert of
the row as it is now, or a delete), so doing it again is harmless.

A username change or a renamed tag turns into one post mark per affected post,
queued behind the current marks: a user with 100,000 posts is reindexed in
batches of SEARCH_BATCH, like any other change.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

from sqlalchemy import text
from sqlalchemy.orm import Session

import settings
from tasks.search import versions
from tasks.search.engines import Applied, Engine

_CLAIM_SQL = text("""
DELETE FROM search_dirty WHERE id IN (SELECT id FROM search_dirty ORDER BY id LIMIT :n)
RETURNING entity, entity_id
""")

_EXPAND_SQL = {
    "user": "INSERT INTO search_dirty (entity, entity_id) SELECT 'post', id::text FROM posts "
            "WHERE author_id = ANY(CAST(:ids AS integer[])) ORDER BY id",
    "tag": "INSERT INTO search_dirty (entity, entity_id) SELECT 'post', post_id::text FROM post_tags "
           "WHERE tag_id = ANY(CAST(:ids AS integer[])) ORDER BY post_id",
}


@dataclass
class DirtyRun:
    status: str = "ok"            # ok | busy (another pass holds the lock) | no_index
    batches: int = 0
    marks: int = 0
    posts: int = 0
    expanded: int = 0             # post marks queued for username changes and renamed tags
    applied: Applied = field(default_factory=Applied)
    backlog_left: bool = False

    def as_dict(self) -> dict:
        return {"status": self.status, "batches": self.batches, "marks": self.marks, "posts": self.posts,
                "expanded": self.expanded, "upserted": self.applied.upserted, "deleted": self.applied.deleted,
                "backlog_left": self.backlog_left}


def index_batch(session: Session, engine: Engine, limit: int, run: DirtyRun) -> int | None:
    """One batch into ``run``; returns the marks claimed, or None when the pass cannot run."""
    if not versions.try_lock(session, engine.name):
        run.status = "busy"
        return None
    live = versions.live(session, engine.name)
    if not live:
        run.status = "no_index"   # nothing built yet: the marks wait for `workers migrate` / reindex
        return None
    marks = session.execute(_CLAIM_SQL, {"n": limit}).all()
    for entity, expand_sql in _EXPAND_SQL.items():
        ids = [int(entity_id) for kind, entity_id in marks if kind == entity]
        if ids:
            run.expanded += session.execute(text(expand_sql), {"ids": ids}).rowcount
    post_ids = list(dict.fromkeys(entity_id for kind, entity_id in marks if kind == "post"))
    for version in live:
        run.applied.add(engine.apply(session, version, post_ids))
    run.batches += 1
    run.marks += len(marks)
    run.posts += len(post_ids)
    return len(marks)


def index_dirty(session_scope: Callable[[], AbstractContextManager[Session]], engine: Engine,
                budget_seconds: float | None = None, limit: int | None = None) -> DirtyRun:
    """Batches until the queue is empty or the budget is spent; each batch commits on its own."""
    config = settings.current()
    budget = config.search_dirty_budget_seconds if budget_seconds is None else budget_seconds
    limit = limit or config.search_batch
    deadline = time.monotonic() + budget
    run = DirtyRun()
    while True:
        expanded_before = run.expanded
        with session_scope() as session:
            claimed = index_batch(session, engine, limit, run)
        # A short batch emptied the queue, unless it just queued a user's or a tag's posts.
        if claimed is None or (claimed < limit and run.expanded == expanded_before):
            return run
        if time.monotonic() >= deadline:
            run.backlog_left = True
            return run

