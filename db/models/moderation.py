"""Seed 003's ``content_moderation``: one row per scored version of a post or comment."""
from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import CheckConstraint, DateTime, ForeignKey, Index, LargeBinary, Numeric, String, Text, Uuid, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from db.base import Base, created_at_column, uuid_pk

CONTENT_TYPES = ("POST", "COMMENT")
MODERATION_STATUSES = ("PENDING", "APPROVED", "REJECTED", "FLAGGED")


class ContentModeration(Base):
    __tablename__ = "content_moderation"

    id: Mapped[str] = uuid_pk()
    content_type: Mapped[str] = mapped_column(String(20), nullable=False)
    content_id: Mapped[str] = mapped_column(Uuid(as_uuid=False), nullable=False)
    # sha256 of the scored text: a version. Re-scoring the same text finds its row.
    content_hash: Mapped[bytes] = mapped_column(LargeBinary(32), nullable=False)
    # A purged author takes their records along (their posts and comments are gone with them).
    author_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    moderator_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    status: Mapped[str] = mapped_column(String(20), nullable=False, server_default="PENDING", default="PENDING")
    reason: Mapped[str | None] = mapped_column(Text)
    automated_score: Mapped[Decimal] = mapped_column(Numeric(3, 2), nullable=False)
    signals: Mapped[Any] = mapped_column(JSONB, nullable=False)  # each signal's value, for the reviewer
    reviewed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = created_at_column()

    __table_args__ = (
        CheckConstraint(f"content_type IN ({', '.join(repr(t) for t in CONTENT_TYPES)})", name="content_type_valid"),
        CheckConstraint(f"status IN ({', '.join(repr(s) for s in MODERATION_STATUSES)})", name="status_valid"),
        CheckConstraint("automated_score BETWEEN 0 AND 1", name="automated_score_range"),
        Index("uq_moderation_content_version", "content_type", "content_id", "content_hash", unique=True),
        Index("idx_moderation_content", "content_type", "content_id"),
        # The review queue: only the undecided flags.
        Index("idx_moderation_flagged", "created_at", postgresql_where=text("status = 'FLAGGED'")),
        Index("idx_moderation_moderator", "moderator_id"),
    )


