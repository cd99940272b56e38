"""Delivery of notifications by email and push, and the daily/weekly digest.

The web tier writes ``notification_preferences``, ``notification_settings`` and
``push_subscriptions``; the delivery family writes the rest. How the seed's
single ``notifications.channel`` column relates to these rows is in
docs/tasks.md ("Delivery").

Flow: a trigger on ``notifications`` marks a top-level row that was created or
grew in ``delivery_due`` (one row per notification, upserted). ``dispatch_due``
plans ripe ones into ``deliveries`` (one row per notification, channel and
batch version: the unique key that makes a delivery happen once), claims the
rows that are due and sends one task per row.
"""
from __future__ import annotations

from datetime import date, datetime, time
from typing import Any

from sqlalchemy import (
    Boolean, CheckConstraint, Date, DateTime, ForeignKey, Index, Integer, PrimaryKeyConstraint, String,
    Text, Time, UniqueConstraint, Uuid, text,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, mapped_column

from db.base import Base, created_at_column, uuid_pk

DELIVERY_CHANNELS = ("email", "push")
DIGEST_PERIODS = ("off", "daily", "weekly")
# pending: planned, waits for due_at · queued: claimed, its task sent · sending: the
# provider may have it (Message-ID fixed) · sent · skipped: read or superseded before
# it was due · folded: over the push limit, left to the digest · failed: permanent.
DELIVERY_STATUSES = ("pending", "queued", "sending", "sent", "skipped", "folded", "failed")
DIGEST_STATUSES = ("queued", "sending", "sent", "skipped", "failed")


def _one_of(column: str, values: tuple[str, ...], name: str) -> CheckConstraint:
    return CheckConstraint(f"{column} IN ({', '.join(repr(v) for v in values)})", name=name)


class NotificationPreference(Base):
    """One user's switch for one notification type on one channel; no row means the default
    (tasks/delivery/policy.py, DEFAULT_CHANNELS)."""

    __tablename__ = "notification_preferences"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    notification_type: Mapped[str] = mapped_column(String(50), nullable=False)
    channel: Mapped[str] = mapped_column(String(10), nullable=False)
    enabled: Mapped[bool] = mapped_column(Boolean, nullable=False)
    updated_at: Mapped[datetime] = created_at_column()

    __table_args__ = (
        PrimaryKeyConstraint("user_id", "notification_type", "channel"),
        _one_of("channel", DELIVERY_CHANNELS, "channel_valid"),
    )


class NotificationSettings(Base):
    """Per-user delivery settings; no row means: daily digest, UTC, no quiet hours, email on."""

    __tablename__ = "notification_settings"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    digest: Mapped[str] = mapped_column(String(10), nullable=False, server_default="daily", default="daily")
    # An IANA name ("Europe/Berlin"). One PostgreSQL does not know is read as UTC.
    timezone: Mapped[str] = mapped_column(String(64), nullable=False, server_default="UTC", default="UTC")
    quiet_start: Mapped[time | None] = mapped_column(Time)
    quiet_end: Mapped[time | None] = mapped_column(Time)
    email_enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("true"),
                                                default=True)
    updated_at: Mapped[datetime] = created_at_column()

    __table_args__ = (
        _one_of("digest", DIGEST_PERIODS, "digest_valid"),
        CheckConstraint("(quiet_start IS NULL) = (quiet_end IS NULL)", name="quiet_hours_paired"),
    )


class PushSubscription(Base):
    """A browser's Web Push subscription (``PushSubscription.toJSON()``)."""

    __tablename__ = "push_subscriptions"

    id: Mapped[str] = uuid_pk()
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    endpoint: Mapped[str] = mapped_column(Text, nullable=False, unique=True)
    p256dh: Mapped[str] = mapped_column(String(128), nullable=False)
    auth: Mapped[str] = mapped_column(String(64), nullable=False)
    created_at: Mapped[datetime] = created_at_column()
    last_success_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    failure_count: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0", default=0)

    __table_args__ = (
        CheckConstraint("endpoint ~ '^https?://'", name="endpoint_is_http"),
        CheckConstraint("length(endpoint) <= 2048", name="endpoint_length"),
        Index("idx_push_subscriptions_user_id", "user_id"),
    )


class DeliveryDue(Base):
    """A top-level notification created or grown since it was last planned (trigger-written)."""

    __tablename__ = "delivery_due"

    notification_id: Mapped[str] = mapped_column(
        Uuid(as_uuid=False), ForeignKey("notifications.id", ondelete="CASCADE"), primary_key=True)
    # The batch's newest event: it settles DELIVERY_SETTLE_SECONDS after this.
    quiet_since: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    high: Mapped[bool] = mapped_column(Boolean, nullable=False)

    __table_args__ = (Index("idx_delivery_due_ripe", "high", "quiet_since"),)


class Delivery(Base):
    __tablename__ = "deliveries"

    id: Mapped[str] = uuid_pk()
    notification_id: Mapped[str] = mapped_column(
        Uuid(as_uuid=False), ForeignKey("notifications.id", ondelete="CASCADE"), nullable=False)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    channel: Mapped[str] = mapped_column(String(10), nullable=False)
    # The batch_count this delivery announces: a batch that grows gets a new version.
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    # Copied from the notification: re-delivery of one batch is limited per hour by it.
    batch_key: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(10), nullable=False, server_default="pending", default="pending")
    due_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0", default=0)
    # Ours, fixed before the first hand-over: the email's Message-ID, the push's Topic.
    message_id: Mapped[str | None] = mapped_column(String(255))
    # The provider's: the SMTP reply to DATA, the push service's Location.
    provider_message_id: Mapped[str | None] = mapped_column(String(512))
    error: Mapped[str | None] = mapped_column(String(1000))
    # Push: the subscriptions that accepted this delivery, so a retry after a 429 on
    # one device does not push again to the others.
    delivered_to: Mapped[list[Any]] = mapped_column(ARRAY(Uuid(as_uuid=False)), nullable=False,
                                                    server_default="{}", default=list)
    created_at: Mapped[datetime] = created_at_column()
    claimed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        UniqueConstraint("notification_id", "channel", "version"),
        _one_of("channel", DELIVERY_CHANNELS, "channel_valid"),
        _one_of("status", DELIVERY_STATUSES, "status_valid"),
        CheckConstraint("version >= 1", name="version_positive"),
        # At most one planned row per notification and channel: a batch that grows
        # while its delivery waits moves that row to the new version.
        Index("uq_deliveries_one_pending", "notification_id", "channel", unique=True,
              postgresql_where=text("status = 'pending'")),
        Index("idx_deliveries_due", "due_at", postgresql_where=text("status = 'pending'")),
        Index("idx_deliveries_in_flight", "claimed_at", postgresql_where=text("status IN ('queued', 'sending')")),
        Index("idx_deliveries_user_sent", "user_id", "channel", "sent_at",
              postgresql_where=text("status IN ('sending', 'sent')")),
        Index("idx_deliveries_user_batch", "user_id", "batch_key", "channel"),
    )


class Digest(Base):
    """One user's digest email for one local day (or ISO week)."""

    __tablename__ = "digests"

    id: Mapped[str] = uuid_pk()
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    period: Mapped[str] = mapped_column(String(10), nullable=False)
    local_date: Mapped[date] = mapped_column(Date, nullable=False)
    status: Mapped[str] = mapped_column(String(10), nullable=False, server_default="queued", default="queued")
    notification_ids: Mapped[list[Any]] = mapped_column(ARRAY(Uuid(as_uuid=False)), nullable=False)
    item_count: Mapped[int] = mapped_column(Integer, nullable=False)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0", default=0)
    message_id: Mapped[str | None] = mapped_column(String(255))
    provider_message_id: Mapped[str | None] = mapped_column(String(512))
    error: Mapped[str | None] = mapped_column(String(1000))
    created_at: Mapped[datetime] = created_at_column()
    claimed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        UniqueConstraint("user_id", "period", "local_date"),
        _one_of("period", ("daily", "weekly"), "period_valid"),
        _one_of("status", DIGEST_STATUSES, "status_valid"),
        Index("idx_digests_in_flight", "claimed_at", postgresql_where=text("status IN ('queued', 'sending')")),
    )
