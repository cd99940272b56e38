"""Notifications with the parent/child batching columns of seed 001."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean, CheckConstraint, DateTime, ForeignKey, Index, Integer, PrimaryKeyConstraint, String, Text,
    Uuid, text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from db.base import Base, created_at_column, uuid_pk

NOTIFICATION_PRIORITIES = ("low", "normal", "high")
NOTIFICATION_CHANNELS = ("in_app", "email", "push")


class Notification(Base):
    __tablename__ = "notifications"

    id: Mapped[str] = uuid_pk()
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    type: Mapped[str] = mapped_column(String(50), nullable=False)
    priority: Mapped[str] = mapped_column(String(10), nullable=False, server_default="normal", default="normal")
    title: Mapped[str] = mapped_column(String(255), nullable=False)
    message: Mapped[str] = mapped_column(Text, nullable=False)
    data: Mapped[Any | None] = mapped_column(JSONB)
    channel: Mapped[str] = mapped_column(String(10), nullable=False, server_default="in_app", default="in_app")
    read: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"), default=False)
    read_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = created_at_column()
    parent_id: Mapped[str | None] = mapped_column(
        Uuid(as_uuid=False), ForeignKey("notifications.id", ondelete="CASCADE"))
    is_batch: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"), default=False)
    batch_count: Mapped[int] = mapped_column(Integer, nullable=False, server_default="1", default=1)
    batch_key: Mapped[str | None] = mapped_column(String(255))
    last_updated_at: Mapped[datetime] = created_at_column()
    # One per source event and recipient ("like:<like id>", "mention:post:<post id>"):
    # a redelivered or duplicated task finds it and creates nothing (exactly once).
    dedupe_key: Mapped[str | None] = mapped_column(String(255))

    __table_args__ = (
        CheckConstraint("priority IN ('low', 'normal', 'high')", name="priority_valid"),
        CheckConstraint("channel IN ('in_app', 'email', 'push')", name="channel_valid"),
        CheckConstraint(
            "(is_batch = TRUE AND parent_id IS NULL AND batch_count >= 1) OR (is_batch = FALSE)",
            name="chk_batch_structure"),
        CheckConstraint(
            "(parent_id IS NOT NULL AND is_batch = FALSE) OR (parent_id IS NULL)",
            name="chk_child_structure"),
        CheckConstraint("(read = FALSE) = (read_at IS NULL)", name="read_matches_read_at"),
        Index("idx_notifications_user_id", "user_id"),
        Index("idx_notifications_created_at", text("created_at DESC")),
        Index("idx_notifications_read", "read"),
        Index("idx_notifications_parent_id", "parent_id"),
        Index("idx_notifications_is_batch", "is_batch"),
        Index("idx_notifications_batch_key", "batch_key"),
        Index("idx_notifications_last_updated_at", text("last_updated_at DESC")),
        Index("idx_notifications_user_parent_read", "user_id", "parent_id", "read"),
        Index("idx_notifications_batch_key_user", "batch_key", "user_id"),
        Index("idx_notifications_batch_lookup", "user_id", "batch_key", "is_batch", "created_at"),
        Index("idx_notifications_timeline", "user_id", "parent_id",
              text("last_updated_at DESC"), text("created_at DESC")),
        Index("idx_notifications_batch_children", "parent_id", text("created_at DESC")),
        Index("idx_notifications_batch_key_recent", "batch_key", "created_at",
              postgresql_where=text("parent_id IS NULL")),
        Index("uq_notifications_user_dedupe", "user_id", "dedupe_key", unique=True,
              postgresql_where=text("dedupe_key IS NOT NULL")),
    )


class NotificationRateLimit(Base):
    """Fixed one-hour windows of new top-level notifications per recipient and type.

    Incremented with INSERT ... ON CONFLICT DO UPDATE ... RETURNING inside the
    recording transaction, so the check and the increment are one atomic step
    and a rolled-back (retried) task gives its tokens back.
    """

    __tablename__ = "notification_rate_limits"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    type: Mapped[str] = mapped_column(String(50), nullable=False)
    window_start: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    count: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0", default=0)

    __table_args__ = (
        PrimaryKeyConstraint("user_id", "type", "window_start"),
        CheckConstraint("count >= 0", name="count_non_negative"),
        Index("idx_notification_rate_limits_window_start", "window_start"),
    )
