"""media_files (seed 003), adapted: users.id is an integer here, and a row is
one processing record of one upload (profile or post photo)."""
from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger, CheckConstraint, DateTime, Enum, ForeignKey, Index, Integer, String, Uuid, text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from db.base import Base, created_at_column, uuid_pk


class ProcessingStatus(str, enum.Enum):
    PENDING = "PENDING"
    PROCESSING = "PROCESSING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"


MEDIA_PURPOSES = ("profile_photo", "post_photo")


class MediaFile(Base):
    """One upload and what became of it.

    ``dedupe_key`` is sha256("purpose:subject:source_path"): a redelivered or
    duplicated task finds the same row (an upsert), so each call records one row.
    ``filename`` is the variants' base name (``profile_<hex>``); it stays NULL
    while no variants exist (the seed has NOT NULL, but a rejected upload has
    no variants to name). ``storage_path`` is the variants' folder under MEDIA_ROOT.
    """

    __tablename__ = "media_files"

    id: Mapped[str] = uuid_pk()
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    post_id: Mapped[str | None] = mapped_column(
        Uuid(as_uuid=False), ForeignKey("posts.id", ondelete="CASCADE"))
    purpose: Mapped[str] = mapped_column(String(20), nullable=False)
    dedupe_key: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    filename: Mapped[str | None] = mapped_column(String(255))
    original_name: Mapped[str | None] = mapped_column(String(255))
    mime_type: Mapped[str | None] = mapped_column(String(100))
    file_size: Mapped[int | None] = mapped_column(BigInteger)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    duration: Mapped[int | None] = mapped_column(Integer)
    storage_path: Mapped[str] = mapped_column(String(500), nullable=False)
    cdn_url: Mapped[str | None] = mapped_column(String(500))
    processing_status: Mapped[ProcessingStatus] = mapped_column(
        Enum(ProcessingStatus, name="processing_status_enum",
             values_callable=lambda e: [m.value for m in e]),
        nullable=False, server_default=ProcessingStatus.PENDING.value, default=ProcessingStatus.PENDING)
    # Starts of processing; a message that keeps killing its worker is failed
    # as worker_lost after a few, instead of being redelivered forever.
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0", default=0)
    meta: Mapped[Any | None] = mapped_column("metadata", JSONB)
    created_at: Mapped[datetime] = created_at_column()
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=text("now()"), onupdate=text("now()"))

    __table_args__ = (
        Index("idx_media_user_id", "user_id"),
        Index("idx_media_status", "processing_status"),
        Index("idx_media_created_at", text("created_at DESC")),
        Index("idx_media_post_id", "post_id"),
        Index("idx_media_filename", "filename"),
        CheckConstraint("purpose IN ('profile_photo', 'post_photo')", name="purpose_valid"),
        CheckConstraint("(purpose = 'post_photo') = (post_id IS NOT NULL)", name="post_id_matches_purpose"),
    )
