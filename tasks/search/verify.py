"""The nightly check of the active index against PostgreSQL (``search.verify``).

Set-based, in one transaction under the version lock (so no dirty batch writes
between the look and the repair):

- documents whose post is gone or no longer readable are deleted from the index;
- readable posts the index lacks, or holds with another author or audience, are
  marked dirty, for the next dirty pass to rewrite;
- the counts (posts search should show, documents held) and both repairs are
  recorded in ``search_verifications``, where ``status`` and operators read drift.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import date, datetime

from sqlalchemy import text
from sqlalchemy.orm import Session

from db.visibility import readable_post_sql
from tasks.search import documents, versions
from tasks.search.engines import Engine

REMOVE_CHUNK = 1000


@dataclass
class Verification:
    status: str
    version: int | None = None
    expected: int = 0
    indexed: int = 0
    removed: int = 0
    missing: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


def verify(session: Session, engine: Engine, day: date) -> Verification:
    versions.lock(session, engine.name)
    current = versions.active(session, engine.name)
    if current is None:
        return Verification("no_index")
    rows = engine.index_rows(session, current.id)
    stale = list(session.execute(text(
        f"SELECT i.post_id::text FROM {rows} i "
        f"WHERE NOT EXISTS (SELECT 1 FROM posts p WHERE p.id = i.post_id AND {readable_post_sql('p')})")).scalars())
    removed = sum(engine.delete(session, current.id, stale[start:start + REMOVE_CHUNK])
                  for start in range(0, len(stale), REMOVE_CHUNK))
    missing = session.execute(text(
        f"INSERT INTO search_dirty (entity, entity_id) "
        f"SELECT 'post', p.id::text FROM posts p LEFT JOIN {rows} i ON i.post_id = p.id "
        f"WHERE {readable_post_sql('p')} AND (i.post_id IS NULL OR i.user_id <> p.author_id "
        f"OR i.privacy_level <> p.privacy_level) ORDER BY p.id")).rowcount
    expected = session.execute(text(f"SELECT count(*) FROM posts p WHERE {readable_post_sql('p')}")).scalar_one()
    indexed = engine.count(session, current.id)
    result = Verification("ok", current.id, expected, indexed, removed, missing)
    session.execute(text(
        "INSERT INTO search_verifications (backend, version, day, expected, indexed, removed, missing) "
        "VALUES (:backend, :version, :day, :expected, :indexed, :removed, :missing)"),
        {"backend": engine.name, "day": day, **{k: v for k, v in result.as_dict().items() if k != "status"}})
    return result


def latest(session: Session, backend: str) -> dict | None:
    row = session.execute(text(
        "SELECT version, day, expected, indexed, removed, missing, created_at FROM search_verifications "
        "WHERE backend = :b ORDER BY id DESC LIMIT 1"), {"b": backend}).mappings().first()
    return dict(row) if row else None


SEARCH_LAG_PROBLEM_SECONDS = 300   # ten missed index_dirty runs


def health(session: Session, backend: str, now: datetime) -> tuple[dict, list[str]]:
    """What ``status`` shows of search: the version, the dirty backlog and its age, the last check's drift."""
    problems = []
    current = versions.active(session, backend)
    backlog, oldest = session.execute(text("SELECT count(*), min(marked_at) FROM search_dirty")).one()
    lag = round((now - oldest).total_seconds()) if oldest else 0
    state = {"backend": backend, "version": current.id if current else None, "dirty": backlog, "lag_s": lag,
             "last_verify": None}
    if current is None:
        problems.append(f"search has no active {backend} index: run `python -m workers search reindex`")
    elif current.schema_hash != documents.SCHEMA_HASH:
        problems.append("the search index was built with another document schema: run `python -m workers migrate`")
    if lag > SEARCH_LAG_PROBLEM_SECONDS:
        problems.append(f"search indexing is behind: {backlog} dirty marks, the oldest {lag} s old "
                        "(is search.index_dirty running?)")
    last = latest(session, backend)
    if last is not None:
        state["last_verify"] = {"day": last["day"].isoformat(), "drift": last["expected"] - last["indexed"],
                                "removed": last["removed"], "missing": last["missing"]}
    return state, problems
