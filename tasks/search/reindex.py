"""Rebuild the index into a new version and swap it in; searches keep working throughout.

``reindex(engine)``: a ``building`` version is made (a partition, or a
collection), every post is written to it in keyset chunks of SEARCH_BATCH,
then one transaction retires the active version and activates the new one
(and moves Typesense's alias), and the old version is dropped once no query
still reads it (``versions.READERS``). Meanwhile the
dirty pass writes to both versions (tasks/search/versions.py), so changes made
during the rebuild are in the new version too. Each chunk takes the version
lock before it reads the posts, as the dirty pass does: whichever writes a
document last read the newest row.

``reindex(engine, since=…)``: rewrite the posts created or edited since then in
the live versions, in place (after an engine outage, say). No new version.

``ensure_current(engine)``: what ``workers migrate`` runs: a full reindex when
no version is active, or when the active one was built with another document
schema (``documents.SCHEMA_HASH``).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text

import settings
from db.locks import try_xact_lock
from db.session import new_session, session_scope
from tasks.search import documents, versions
from tasks.search.engines import Applied, Engine
from workers.errors import JobError

Progress = Callable[[int, int], None]
"""``progress(posts_done, posts_total)``, after each chunk."""

_CHUNK_SQL = text("""
SELECT p.id::text FROM posts p WHERE p.id > CAST(:after AS uuid)
  AND (CAST(:since AS timestamptz) IS NULL OR p.created_at >= :since OR p.updated_at >= :since)
ORDER BY p.id LIMIT :n
""")
_COUNT_SQL = text("""
SELECT count(*) FROM posts
WHERE CAST(:since AS timestamptz) IS NULL OR created_at >= :since OR updated_at >= :since
""")
_FIRST_UUID = "00000000-0000-0000-0000-000000000000"


class ReindexRunning(JobError):
    code = "reindex_running"


@dataclass
class Reindex:
    version: int | None           # the version built (None for --since)
    replaced: int | None          # the version it replaced
    posts: int
    applied: Applied

    def as_dict(self) -> dict:
        return {"version": self.version, "replaced": self.replaced, "posts": self.posts,
                "upserted": self.applied.upserted, "deleted": self.applied.deleted}


def _write_chunks(engine: Engine, targets: Callable, since: datetime | None, progress: Progress | None) -> tuple[int, Applied]:
    with session_scope() as session:
        total = session.execute(_COUNT_SQL, {"since": since}).scalar_one()
    done, applied, after = 0, Applied(), _FIRST_UUID
    limit = settings.current().search_batch
    while True:
        with session_scope() as session:
            ids = list(session.execute(_CHUNK_SQL, {"after": after, "since": since, "n": limit}).scalars())
            if not ids:
                return done, applied
            versions.lock(session, engine.name)
            for version in targets(session):
                applied.add(engine.apply(session, version, ids))
        done, after = done + len(ids), ids[-1]
        if progress:
            progress(done, max(total, done))


def reindex(engine: Engine, since: datetime | None = None, progress: Progress | None = None) -> Reindex:
    guard = new_session()   # held for the whole rebuild; a dead process's connection releases it
    try:
        if not try_xact_lock(guard, "search.reindex", engine.name):
            raise ReindexRunning(f"a {engine.name} reindex is already running")
        if since is not None:
            posts, applied = _write_chunks(engine, lambda s: versions.live(s, engine.name), since, progress)
            return Reindex(None, None, posts, applied)
        with session_scope() as session:
            versions.lock(session, engine.name)
            for stale in versions.building(session, engine.name):   # left by a reindex that died
                engine.drop_version(session, stale)
                versions.retire(session, stale)
            version = versions.create(session, engine.name, documents.SCHEMA_HASH)
            engine.create_version(session, version)
        posts, applied = _write_chunks(engine, lambda s: [version], None, progress)
        with session_scope() as session:
            versions.lock(session, engine.name)
            previous = versions.activate(session, engine.name, version, engine.count(session, version))
            engine.activate(session, version)
        if previous is not None:
            with session_scope() as session:
                versions.lock_readers_out(session, engine.name)
                engine.drop_version(session, previous)
        return Reindex(version, previous, posts, applied)
    finally:
        guard.rollback()
        guard.close()


def ensure_current(engine: Engine, progress: Progress | None = None) -> Reindex | None:
    """Reindex when no version is active or the active one has another schema; else nothing."""
    with session_scope() as session:
        current = versions.active(session, engine.name)
    if current is not None and current.schema_hash == documents.SCHEMA_HASH:
        return None
    return reindex(engine, progress=progress)
