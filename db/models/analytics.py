"""Analytics (seeds 002, 003 and 004): view counts flushed from Redis, daily
per-user rollups, follow events, hashtags and trending tags, system metrics.

Who writes what (tasks/analytics/):
- ``post_daily_views`` / ``profile_daily_views``: ``analytics.flush_counters``,
  from the Redis counters the web tier's client bumps; ``analytics_flushes``
  holds one row per applied flush, which makes a flush apply exactly once.
- ``user_analytics``: ``analytics.rollup_daily`` (and the flush, for the views
  columns of the users it touched), recomputed from the rows above and the
  engagement tables, never incremented.
- ``follow_events``: a trigger on ``follows`` (migration 0010), since an
  unfollow deletes its row and would leave nothing to count.
- ``tags`` / ``post_tags`` / ``posts.tags``: ``mentions.extract``, from the text.
- ``trending_tags``: ``analytics.update_trending_tags``; the web tier reads it.
- ``system_metrics``: ``analytics.sample_system_metrics``.
"""
from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger, Boolean, CheckConstraint, Date, DateTime, Double, ForeignKey, Identity, Index, Integer, Numeric,
    String, Uuid, func, text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from db.base import Base, created_at_column, uuid_pk


def _count(**kwargs) -> Mapped[int]:
    return mapped_column(Integer, nullable=False, server_default="0", default=0, **kwargs)


class PostDailyViews(Base):
    """Seed 002's ``PostView`` as daily aggregates: one row per post and UTC day.
    Unique counts are HyperLogLog estimates (about 0.8 % standard error)."""

    __tablename__ = "post_daily_views"

    post_id: Mapped[str] = mapped_column(ForeignKey("posts.id", ondelete="CASCADE"), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    # The post's author, copied (it never changes): a user's daily sums read this
    # table alone, by (day, author_id), instead of joining every post they wrote.
    author_id: Mapped[int] = mapped_column(Integer, nullable=False)
    views: Mapped[int] = _count()
    unique_viewers: Mapped[int] = _count()
    impressions: Mapped[int] = _count()
    impression_reach: Mapped[int] = _count()  # distinct viewers shown the post

    __table_args__ = (Index("idx_post_daily_views_day_author", "day", "author_id"),)


class ProfileDailyViews(Base):
    __tablename__ = "profile_daily_views"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    views: Mapped[int] = _count()
    unique_viewers: Mapped[int] = _count()

    __table_args__ = (Index("idx_profile_daily_views_day", "day"),)


class AnalyticsFlush(Base):
    """One row per flush applied: inserted in the transaction that applies it, so a
    flush id seen again (a retry after a crash, a second flusher) changes nothing."""

    __tablename__ = "analytics_flushes"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    applied_at: Mapped[datetime] = created_at_column()
    counters: Mapped[int] = _count()      # (key, member) pairs read
    increments: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0", default=0)
    rejected: Mapped[int] = _count()      # members that are no id, or whose post or user is gone

    __table_args__ = (Index("idx_analytics_flushes_applied_at", "applied_at"),)


class UserAnalytics(Base):
    """Seed 003's daily row per user. ``is_final`` once the day is over and its
    grace for late events has passed; a finalised day is still recomputed when
    a late count for it arrives."""

    __tablename__ = "user_analytics"

    id: Mapped[str] = uuid_pk()
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    date: Mapped[date] = mapped_column(Date, nullable=False)
    profile_views: Mapped[int] = _count()
    post_impressions: Mapped[int] = _count()
    post_engagements: Mapped[int] = _count()
    followers_gained: Mapped[int] = _count()
    followers_lost: Mapped[int] = _count()
    total_likes: Mapped[int] = _count()
    total_comments: Mapped[int] = _count()
    total_shares: Mapped[int] = _count()
    post_views: Mapped[int] = _count()
    is_final: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"), default=False)
    created_at: Mapped[datetime] = created_at_column()
    updated_at: Mapped[datetime] = created_at_column()

    __table_args__ = (
        Index("uq_user_analytics_user_date", "user_id", "date", unique=True),
        Index("idx_analytics_user_date", "user_id", text("date DESC")),
        Index("idx_analytics_date", "date"),
    )


class AnalyticsDay(Base):
    """The rollup's progress: a day is provisional until finalised (after its grace)."""

    __tablename__ = "analytics_days"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    rolled_up_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    finalised_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    users: Mapped[int] = _count()


class UserSharePlatforms(Base):
    """Shares of a user's posts per platform per day (``shares.platform``; NULL is 'internal')."""

    __tablename__ = "user_share_platforms"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    date: Mapped[date] = mapped_column(Date, primary_key=True)
    platform: Mapped[str] = mapped_column(String(30), primary_key=True)
    shares: Mapped[int] = _count()

    __table_args__ = (Index("idx_user_share_platforms_date", "date"),)


class FollowEvent(Base):
    """A follow gained or lost, written by the ``follows`` trigger. No foreign keys:
    the event of an unfollow outlives the row, and a deleted user takes their
    analytics rows with them anyway."""

    __tablename__ = "follow_events"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    follower_id: Mapped[int] = mapped_column(Integer, nullable=False)
    followed_id: Mapped[int] = mapped_column(Integer, nullable=False)
    gained: Mapped[bool] = mapped_column(Boolean, nullable=False)
    created_at: Mapped[datetime] = created_at_column()

    __table_args__ = (Index("idx_follow_events_created_at", "created_at"),)


class Tag(Base):
    """Seed 002's ``Tag``. ``name`` is the normalized key (NFKC, case-folded)."""

    __tablename__ = "tags"

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), nullable=False, unique=True)
    created_at: Mapped[datetime] = created_at_column()


class PostTag(Base):
    """Seed 002's ``PostTag``; always equal to ``posts.tags`` (both written in one transaction)."""

    __tablename__ = "post_tags"

    post_id: Mapped[str] = mapped_column(ForeignKey("posts.id", ondelete="CASCADE"), primary_key=True)
    tag_id: Mapped[int] = mapped_column(ForeignKey("tags.id", ondelete="CASCADE"), primary_key=True)

    __table_args__ = (Index("idx_post_tags_tag_id", "tag_id"),)


class TrendingTag(Base):
    """The current trending list, best first; replaced whole by each run."""

    __tablename__ = "trending_tags"

    rank: Mapped[int] = mapped_column(Integer, primary_key=True)
    tag_id: Mapped[int] = mapped_column(ForeignKey("tags.id", ondelete="CASCADE"), nullable=False, unique=True)
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    score: Mapped[float] = mapped_column(Double, nullable=False)
    users_24h: Mapped[int] = mapped_column(Integer, nullable=False)
    expected_24h: Mapped[float] = mapped_column(Double, nullable=False)
    computed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class SystemMetric(Base):
    """Seed 003's ``system_metrics``; ``timestamp`` is ``sampled_at``. Minute samples
    are averaged into hourly ones after 7 days (``resolution``) and kept 30 days."""

    __tablename__ = "system_metrics"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    metric_name: Mapped[str] = mapped_column(String(100), nullable=False)
    metric_value: Mapped[Decimal] = mapped_column(Numeric(15, 4), nullable=False)
    tags: Mapped[Any] = mapped_column(JSONB, nullable=False, server_default=text("'{}'::jsonb"))
    sampled_at: Mapped[datetime] = created_at_column()
    resolution: Mapped[str] = mapped_column(String(6), nullable=False, server_default="minute")

    __table_args__ = (
        Index("idx_metrics_name_time", "metric_name", text("sampled_at DESC")),
        Index("idx_metrics_tags", "tags", postgresql_using="gin"),
        Index("idx_metrics_resolution_time", "resolution", "sampled_at"),
        # One sample per metric and minute (or hour): a redelivered sampler adds nothing.
        Index("uq_system_metrics_sample", "metric_name", "resolution", "sampled_at", "tags", unique=True),
        CheckConstraint("resolution IN ('minute', 'hour')", name="resolution_valid"),
    )


class AnalyticsEvent(Base):
    """Seed 004's raw event log (its ``user_analytics``, renamed: 003's name is the
    daily table). Partitioned by month like the other event logs; kept 90 days."""

    __tablename__ = "analytics_events"

    id: Mapped[str] = mapped_column(Uuid(as_uuid=False), primary_key=True, server_default=func.gen_random_uuid())
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True,
                                                 server_default=func.now())
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    event_type: Mapped[str] = mapped_column(String(50), nullable=False)
    event_data: Mapped[Any | None] = mapped_column(JSONB)

    __table_args__ = (
        Index("idx_analytics_events_user_id", "user_id"),
        Index("idx_analytics_events_type", "event_type"),
        {"postgresql_partition_by": "RANGE (created_at)"},
    )
