"""Search indexing (seed 004's "PostgreSQL → Elasticsearch: async indexing").

- ``search_dirty``: ids whose document may have changed, written by triggers on
  posts, users (username), post_tags and tags (name) in the writer's own
  transaction, drained by ``search.index_dirty``. Moderation reaches it through
  ``posts.moderation_hidden``, which hiding and review set.
- ``search_index_versions``: one row per built index of a backend. Exactly one
  is ``active`` per backend (a partial unique index); a reindex fills a
  ``building`` one and swaps it in.
- ``search_documents``: the PostgreSQL backend's documents, partitioned by
  version (``search_documents_v<N>``, made by the reindex), so a retired
  version is dropped whole, never deleted row by row.
- ``search_verifications``: what each nightly ``search.verify`` found.
"""
from __future__ import annotations

import re
from datetime import date, datetime

from sqlalchemy import (
    BigInteger, CheckConstraint, Date, DateTime, Identity, Index, Integer, String, Text, Uuid, text,
)
from sqlalchemy.dialects.postgresql import ARRAY, TSVECTOR
from sqlalchemy.orm import Mapped, mapped_column

from db.base import Base, created_at_column

DIRTY_ENTITIES = ("post", "user", "tag")
VERSION_STATUSES = ("building", "active", "retired")
BACKENDS = ("postgresql", "typesense")
_VERSION_PARTITION = re.compile(r"^search_documents_v\d+$")


def is_version_partition(name: str) -> bool:
    """A partition the reindex makes at run time (Alembic leaves it alone)."""
    return bool(_VERSION_PARTITION.match(name))


class SearchDirty(Base):
    __tablename__ = "search_dirty"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    entity: Mapped[str] = mapped_column(String(10), nullable=False)
    # A post's uuid, a user's id or a tag's id, as text: one column for all three.
    entity_id: Mapped[str] = mapped_column(Text, nullable=False)
    marked_at: Mapped[datetime] = created_at_column()

    __table_args__ = (
        CheckConstraint(f"entity IN ({', '.join(repr(e) for e in DIRTY_ENTITIES)})", name="entity_valid"),
    )


class SearchIndexVersion(Base):
    __tablename__ = "search_index_versions"

    id: Mapped[int] = mapped_column(Integer, Identity(always=True), primary_key=True)
    backend: Mapped[str] = mapped_column(String(20), nullable=False)
    status: Mapped[str] = mapped_column(String(10), nullable=False)
    # The document schema this version was built with (tasks/search/documents.py): a change reindexes.
    schema_hash: Mapped[str] = mapped_column(String(16), nullable=False)
    documents: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = created_at_column()
    activated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    retired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        CheckConstraint(f"status IN ({', '.join(repr(s) for s in VERSION_STATUSES)})", name="status_valid"),
        CheckConstraint(f"backend IN ({', '.join(repr(b) for b in BACKENDS)})", name="backend_valid"),
        Index("uq_search_index_versions_active", "backend", unique=True, postgresql_where=text("status = 'active'")),
    )


class SearchDocument(Base):
    __tablename__ = "search_documents"

    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    post_id: Mapped[str] = mapped_column(Uuid(as_uuid=False), primary_key=True)
    user_id: Mapped[int] = mapped_column(Integer, nullable=False)
    username: Mapped[str] = mapped_column(Text, nullable=False)
    tags: Mapped[list[str]] = mapped_column(ARRAY(String(100)), nullable=False)
    privacy_level: Mapped[str] = mapped_column(String(20), nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    document: Mapped[str] = mapped_column(TSVECTOR, nullable=False)

    __table_args__ = ({"postgresql_partition_by": "LIST (version)"},)


class SearchVerification(Base):
    __tablename__ = "search_verifications"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    backend: Mapped[str] = mapped_column(String(20), nullable=False)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    day: Mapped[date] = mapped_column(Date, nullable=False)
    expected: Mapped[int] = mapped_column(BigInteger, nullable=False)   # posts search should show
    indexed: Mapped[int] = mapped_column(BigInteger, nullable=False)    # documents in the index, after repair
    removed: Mapped[int] = mapped_column(BigInteger, nullable=False)    # stale documents deleted
    missing: Mapped[int] = mapped_column(BigInteger, nullable=False)    # posts queued because the index lacked them
    created_at: Mapped[datetime] = created_at_column()

    __table_args__ = (Index("idx_search_verifications_created", "created_at"),)
