"""Append-only event tables, partitioned by month on ``created_at``.

Their partitions are not models: db/partitions.py makes them ahead of time
from ``PARTITIONED_TABLES`` and upkeep retires them whole.

Why the seed's constraints changed (seed 003): a partitioned table's primary
key and unique constraints must contain the partition column, so
``id UUID PRIMARY KEY`` becomes ``PRIMARY KEY (id, created_at)`` (ids are still
random UUIDs, unique in practice), and ``UNIQUE(user_id, post_id,
engagement_type)`` cannot be enforced across partitions at all. It is dropped:
the engagement log records events (a VIEW or CLICK repeats by nature), and the
once-per-user relations (a like, a reaction) are enforced where they live, by
the unique keys of ``likes`` and ``emoji_reactions``. ``created_at`` is NOT
NULL, since a row without it would have no partition.
"""
from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import CheckConstraint, DateTime, ForeignKey, Index, Integer, Numeric, String, Uuid, func, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, declared_attr, mapped_column
from sqlalchemy.sql.elements import conv

from db.base import Base

ENGAGEMENT_TYPES = ("LIKE", "SHARE", "COMMENT", "VIEW", "CLICK", "SAVE")


def _event_id() -> Mapped[str]:
    return mapped_column(Uuid(as_uuid=False), primary_key=True, server_default=func.gen_random_uuid())


def _partition_key() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), primary_key=True, server_default=func.now())


def _engagement_indexes(table: str) -> tuple:
    """The indexes both engagement tables share: an archived partition keeps its
    indexes when it is attached to the archive only if the archive has the same ones."""
    return (
        Index(f"idx_{table}_user_id", "user_id"),
        Index(f"idx_{table}_post_id", "post_id"),
        Index(f"idx_{table}_type", "engagement_type"),
        # One name on both tables (not the per-table convention): attaching a partition
        # to the archive requires it to carry each of the archive's CHECKs by name.
        CheckConstraint("engagement_type IN (" + ", ".join(f"'{t}'" for t in ENGAGEMENT_TYPES) + ")",
                        name=conv("ck_user_engagement_type_valid")),
    )


class _EngagementEvent:
    """The columns both engagement tables share: the archive must have exactly the
    live table's columns for a detached partition to attach to it. Only the live
    table declares the foreign keys (``_references``)."""

    _references = False

    id: Mapped[str] = _event_id()
    created_at: Mapped[datetime] = _partition_key()

    @declared_attr
    def user_id(cls) -> Mapped[int]:
        keys = [ForeignKey("users.id", ondelete="CASCADE")] if cls._references else []
        return mapped_column(Integer, *keys, nullable=False)

    @declared_attr
    def post_id(cls) -> Mapped[str]:
        keys = [ForeignKey("posts.id", ondelete="CASCADE")] if cls._references else []
        return mapped_column(Uuid(as_uuid=False), *keys, nullable=False)

    # After the declared ids, as in the migration (declared attributes are placed last otherwise).
    engagement_type: Mapped[str] = mapped_column(String(10), nullable=False, sort_order=1)
    value: Mapped[Decimal] = mapped_column(Numeric(5, 2), nullable=False, server_default=text("1.0"), sort_order=1)
    meta: Mapped[Any | None] = mapped_column("metadata", JSONB, sort_order=1)


class UserEngagement(_EngagementEvent, Base):
    """One engagement event (seed 003). Rows older than a year move to the archive
    a month-partition at a time."""

    __tablename__ = "user_engagement"
    _references = True

    __table_args__ = (*_engagement_indexes("user_engagement"),
                      {"postgresql_partition_by": "RANGE (created_at)"})


class UserEngagementArchive(_EngagementEvent, Base):
    """Engagement older than a year. Partitions arrive here whole, detached from
    ``user_engagement``; they keep the foreign keys they had there, so deleting a
    user or a post still removes their archived rows."""

    __tablename__ = "user_engagement_archive"

    __table_args__ = (*_engagement_indexes("user_engagement_archive"),
                      {"postgresql_partition_by": "RANGE (created_at)"})


class AuditLog(Base):
    """Who changed what (seed 003); the seed's ``timestamp`` column is ``created_at``
    here, the partition key. ``user_id`` has no foreign key: an audit entry outlives its user."""

    __tablename__ = "audit_log"

    id: Mapped[str] = _event_id()
    created_at: Mapped[datetime] = _partition_key()
    table_name: Mapped[str] = mapped_column(String(50), nullable=False)
    operation: Mapped[str] = mapped_column(String(10), nullable=False)
    old_values: Mapped[Any | None] = mapped_column(JSONB)
    new_values: Mapped[Any | None] = mapped_column(JSONB)
    user_id: Mapped[int | None] = mapped_column(Integer)

    __table_args__ = (Index("idx_audit_log_table_name", "table_name"),
                      {"postgresql_partition_by": "RANGE (created_at)"})
