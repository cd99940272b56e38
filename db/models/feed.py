"""Feed family: precomputed per-user feeds (seed 003 feed_items)."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, DateTime, Double, ForeignKey, Index, String, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from db.base import Base, created_at_column, uuid_pk

FEED_REASONS = ("followed", "mutual", "trending", "recent")


class FeedItem(Base):
    """One post in one user's feed. ``score`` is the display-order key (higher first).

    A user's feed is replaced as a whole inside one transaction (delete, then
    insert), so unique (user_id, post_id) holds and a reader never sees a mix.
    """

    __tablename__ = "feed_items"

    id: Mapped[str] = uuid_pk()
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    post_id: Mapped[str] = mapped_column(ForeignKey("posts.id", ondelete="CASCADE"), nullable=False, index=True)
    score: Mapped[float] = mapped_column(Double, nullable=False)
    reason: Mapped[str] = mapped_column(String(20), nullable=False)
    created_at: Mapped[datetime] = created_at_column()
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)

    __table_args__ = (
        UniqueConstraint("user_id", "post_id"),
        CheckConstraint("reason IN (" + ", ".join(f"'{r}'" for r in FEED_REASONS) + ")", name="reason_valid"),
        Index("idx_feed_user_score", "user_id", text("score DESC")),
        Index("idx_feed_created_at", text("created_at DESC")),
        Index("idx_feed_expires_at", "expires_at"),
    )
