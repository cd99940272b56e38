"""Index versions: which one queries read, which ones writes go to, and the swap.

Per backend, exactly one version is ``active`` (a partial unique index). A
reindex adds a ``building`` one; until the swap, every write (the dirty pass,
``reindex --since``) goes to both, so the new version misses nothing that
happened while it was filled. The swap is one transaction: the old version is
``retired`` and the new one ``active``; queries read the active id per query.
"""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.orm import Session

from db.locks import try_xact_lock, xact_lock, xact_lock_shared

LOCK = "search.index"
"""Held (per backend) by each dirty batch, reindex chunk, swap and verify: they read
PostgreSQL and write the index one after another, so the last writer read the newest rows."""

READERS = "search.readers"
"""Shared by every query from reading the active version to its last statement; taken
exclusively to drop a retired version, which so waits for the queries still reading it."""


@dataclass(frozen=True)
class Version:
    id: int
    status: str
    schema_hash: str


def lock(session: Session, backend: str) -> None:
    xact_lock(session, LOCK, backend)


def try_lock(session: Session, backend: str) -> bool:
    return try_xact_lock(session, LOCK, backend)


def reading(session: Session, backend: str) -> Version | None:
    """The active version, for a query: it stays in place until this transaction ends."""
    xact_lock_shared(session, READERS, backend)
    return active(session, backend)


def lock_readers_out(session: Session, backend: str) -> None:
    """Wait until no query reads a version any more (new queries read the new active one)."""
    xact_lock(session, READERS, backend)


def active(session: Session, backend: str) -> Version | None:
    row = session.execute(text("SELECT id, status, schema_hash FROM search_index_versions "
                               "WHERE backend = :b AND status = 'active'"), {"b": backend}).first()
    return Version(*row) if row else None


def live(session: Session, backend: str) -> list[int]:
    """Versions that writes must reach: the active one and any being built."""
    return list(session.execute(text(
        "SELECT id FROM search_index_versions WHERE backend = :b AND status IN ('active', 'building') ORDER BY id"),
        {"b": backend}).scalars())


def building(session: Session, backend: str) -> list[int]:
    return list(session.execute(text(
        "SELECT id FROM search_index_versions WHERE backend = :b AND status = 'building' ORDER BY id"),
        {"b": backend}).scalars())


def create(session: Session, backend: str, schema_hash: str) -> int:
    return session.execute(text(
        "INSERT INTO search_index_versions (backend, status, schema_hash) VALUES (:b, 'building', :h) RETURNING id"),
        {"b": backend, "h": schema_hash}).scalar_one()


def activate(session: Session, backend: str, version: int, documents: int) -> int | None:
    """Make ``version`` the active one; returns the version it replaced. Caller holds ``lock``."""
    previous = session.execute(text(
        "UPDATE search_index_versions SET status = 'retired', retired_at = now() "
        "WHERE backend = :b AND status = 'active' RETURNING id"), {"b": backend}).scalar()
    session.execute(text("UPDATE search_index_versions SET status = 'active', activated_at = now(), documents = :n "
                         "WHERE id = :v"), {"v": version, "n": documents})
    return previous


def retire(session: Session, version: int) -> None:
    session.execute(text("UPDATE search_index_versions SET status = 'retired', retired_at = now() WHERE id = :v"),
                    {"v": version})
