"""The Grateful schema (seeds 000/001): users, posts and the engagement tables."""
from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger, Boolean, CheckConstraint, DateTime, Double, Enum, ForeignKey, Identity, Index, Integer,
    String, Text, UniqueConstraint, text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column, relationship

from db.base import Base, created_at_column, uuid_pk


class PostType(str, enum.Enum):
    daily = "daily"
    photo = "photo"
    spontaneous = "spontaneous"


FOLLOW_STATUSES = ("active", "pending", "blocked")
SHARE_PLATFORMS = ("internal", "copy_link", "twitter", "facebook", "whatsapp", "email", "other")


def _nonnegative(*columns: str) -> tuple[CheckConstraint, ...]:
    """A denormalized counter can never be below zero, whatever a bug or an import writes."""
    return tuple(CheckConstraint(f"{column} >= 0", name=f"{column}_nonnegative") for column in columns)


def _counters_covering_index(table: str, *columns: str) -> Index:
    """(id) INCLUDE (counters): the full sweep reads a key range of stored counters as an
    index-only scan in key order and merge-joins it with the sources' post_id indexes,
    instead of fetching scattered heap pages (uuid keys are not in insertion order).
    Counter updates of posts were already non-HOT (idx_posts_engagement), so the write
    cost is one more index entry per counter change."""
    return Index(f"idx_{table}_counters", "id", postgresql_include=list(columns))


def created_at_brin(table: str) -> Index:
    """BRIN on created_at: the daily analytics rollup reads one day of an append-mostly
    table. Rows arrive in time order, so a BRIN of a few pages finds the day's blocks,
    at almost no cost to the inserts (a btree would cost every like an index entry)."""
    return Index(f"idx_{table}_created_at_brin", "created_at", postgresql_using="brin")


def soft_delete_column() -> Mapped[datetime | None]:
    """Seed 003's soft delete: the web tier sets it, hides the row, and
    ``upkeep.purge_soft_deleted`` deletes it for good after PURGE_SOFT_DELETED_DAYS."""
    return mapped_column(DateTime(timezone=True))


def soft_deleted_index(table: str) -> Index:
    """Partial: the purge finds the few soft-deleted rows without reading the rest."""
    return Index(f"idx_{table}_deleted_at", "deleted_at", postgresql_where=text("deleted_at IS NOT NULL"))


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True, index=True)
    email: Mapped[str] = mapped_column(String, unique=True, index=True, nullable=False)
    username: Mapped[str] = mapped_column(String, unique=True, index=True, nullable=False)
    hashed_password: Mapped[str] = mapped_column(String, nullable=False)
    bio: Mapped[str | None] = mapped_column(Text)
    profile_image_url: Mapped[str | None] = mapped_column(String)
    created_at: Mapped[datetime] = created_at_column()
    display_name: Mapped[str | None] = mapped_column(String(100))
    city: Mapped[str | None] = mapped_column(String(100))
    institutions: Mapped[Any | None] = mapped_column(JSONB)
    websites: Mapped[Any | None] = mapped_column(JSONB)
    location: Mapped[Any | None] = mapped_column(JSONB)
    profile_photo_filename: Mapped[str | None] = mapped_column(String(255))
    profile_preferences: Mapped[Any | None] = mapped_column(JSONB)
    # Denormalized counters (seed 003), kept exact by the engagement family.
    followers_count: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0", default=0)
    following_count: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0", default=0)
    posts_count: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0", default=0)
    # Seed 004's graph, kept exact the same way: accepted friendships, and messages received unread.
    friends_count: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0", default=0)
    unread_messages_count: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0", default=0)
    deleted_at: Mapped[datetime | None] = soft_delete_column()

    posts: Mapped[list[Post]] = relationship(back_populates="author", passive_deletes=True)

    __table_args__ = (
        Index("idx_users_display_name", "display_name"),
        Index("idx_users_city", "city"),
        Index("idx_users_profile_photo_filename", "profile_photo_filename"),
        # Mentions validate usernames case-insensitively in one batch query.
        Index("idx_users_username_lower", text("lower(username)")),
        CheckConstraint(
            "institutions IS NULL OR (jsonb_typeof(institutions) = 'array' "
            "AND jsonb_array_length(institutions) <= 10)", name="institutions_max_10"),
        CheckConstraint(
            "websites IS NULL OR (jsonb_typeof(websites) = 'array' "
            "AND jsonb_array_length(websites) <= 5)", name="websites_max_5"),
        *_nonnegative("followers_count", "following_count", "posts_count", "friends_count",
                      "unread_messages_count"),
        _counters_covering_index("users", "followers_count", "following_count", "posts_count", "friends_count",
                                 "unread_messages_count"),
        soft_deleted_index("users"),
    )


class Post(Base):
    __tablename__ = "posts"

    id: Mapped[str] = uuid_pk()
    author_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True)
    title: Mapped[str | None] = mapped_column(String)
    content: Mapped[str] = mapped_column(Text, nullable=False)
    post_type: Mapped[PostType] = mapped_column(
        Enum(PostType, name="post_type", values_callable=lambda e: [m.value for m in e]),
        nullable=False, server_default=PostType.daily.value, default=PostType.daily)
    image_url: Mapped[str | None] = mapped_column(String)
    is_public: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("true"), default=True)
    created_at: Mapped[datetime] = created_at_column()
    updated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), onupdate=text("now()"))
    hearts_count: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0", default=0)
    reactions_count: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0", default=0)
    shares_count: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0", default=0)
    # Trending score kept by feed.update_trending (tasks/feed/algorithm.py): 0 outside the trending window.
    engagement_score: Mapped[float] = mapped_column(Double, nullable=False, server_default="0", default=0.0)
    comments_count: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0", default=0)
    deleted_at: Mapped[datetime | None] = soft_delete_column()
    # Views flushed from the Redis counters by analytics.flush_counters (never a CounterSpec:
    # views have no source rows to recount).
    views_count: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0", default=0)
    # Seeds 003/004: normalized hashtags, equal to post_tags (both written by mentions.extract).
    tags: Mapped[list[str]] = mapped_column(ARRAY(String(100)), nullable=False, server_default=text("'{}'"),
                                            default=list)

    # Seed 004: who may see the post. 'public' reaches everyone, 'friends' accepted friends only,
    # 'custom' (an audience list the web tier keeps) nobody but the author in our jobs.
    privacy_level: Mapped[str] = mapped_column(String(20), nullable=False, server_default="public",
                                               default="public")
    # Set while moderation holds the post (FLAGGED, then REJECTED): hidden from every reader.
    moderation_hidden: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"),
                                                    default=False)

    author: Mapped[User] = relationship(back_populates="posts")

    __table_args__ = (
        Index("idx_posts_created_at_desc", text("created_at DESC")),
        Index("idx_posts_author_created_desc", "author_id", text("created_at DESC")),
        Index("idx_posts_engagement", "hearts_count", "reactions_count", "shares_count"),
        # Partial: only posts inside the trending window carry a score, so popular_posts'
        # top-N and the sweep that zeroes posts leaving the window read a small index.
        Index("idx_posts_engagement_score", text("engagement_score DESC"),
              postgresql_where=text("engagement_score > 0")),
        *_nonnegative("hearts_count", "reactions_count", "shares_count", "comments_count", "views_count"),
        Index("idx_posts_tags", "tags", postgresql_using="gin"),
        CheckConstraint("privacy_level IN ('public', 'friends', 'custom')", name="privacy_level_valid"),
        _counters_covering_index("posts", "hearts_count", "reactions_count", "shares_count", "comments_count"),
        soft_deleted_index("posts"),
    )
    # Storage: fillfactor 90 (migration 0010; SQLAlchemy 2.0 has no table option for it). The
    # minute's views_count updates and the trending score's touch no indexed column, so with
    # room left on the page they are HOT updates, which write no index entry at all.


class Like(Base):
    __tablename__ = "likes"

    id: Mapped[str] = uuid_pk()
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True)
    post_id: Mapped[str] = mapped_column(ForeignKey("posts.id", ondelete="CASCADE"), nullable=False, index=True)
    created_at: Mapped[datetime] = created_at_column()

    __table_args__ = (UniqueConstraint("user_id", "post_id"), created_at_brin("likes"))


class EmojiReaction(Base):
    """One reaction per user per post; changing the emoji updates the row."""

    __tablename__ = "emoji_reactions"

    id: Mapped[str] = uuid_pk()
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True)
    post_id: Mapped[str] = mapped_column(ForeignKey("posts.id", ondelete="CASCADE"), nullable=False, index=True)
    emoji_code: Mapped[str] = mapped_column(String(50), nullable=False)
    created_at: Mapped[datetime] = created_at_column()
    updated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), onupdate=text("now()"))

    __table_args__ = (
        UniqueConstraint("user_id", "post_id"),
        CheckConstraint("emoji_code ~ '^[a-z0-9_]{1,50}$'", name="emoji_code_format"),
        created_at_brin("emoji_reactions"),
    )


class Share(Base):
    """A share of a post, optionally to an external platform. Repeat shares are allowed."""

    __tablename__ = "shares"

    id: Mapped[str] = uuid_pk()
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True)
    post_id: Mapped[str] = mapped_column(ForeignKey("posts.id", ondelete="CASCADE"), nullable=False, index=True)
    platform: Mapped[str | None] = mapped_column(String(30))
    created_at: Mapped[datetime] = created_at_column()

    __table_args__ = (
        CheckConstraint(
            "platform IS NULL OR platform IN (" + ", ".join(f"'{p}'" for p in SHARE_PLATFORMS) + ")",
            name="platform_valid"),
        created_at_brin("shares"),
    )


class Comment(Base):
    __tablename__ = "comments"

    id: Mapped[str] = uuid_pk()
    author_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True)
    post_id: Mapped[str] = mapped_column(ForeignKey("posts.id", ondelete="CASCADE"), nullable=False, index=True)
    parent_id: Mapped[str | None] = mapped_column(ForeignKey("comments.id", ondelete="CASCADE"), index=True)
    content: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = created_at_column()
    updated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), onupdate=text("now()"))
    replies_count: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0", default=0)
    deleted_at: Mapped[datetime | None] = soft_delete_column()
    # Seed 004's comments.like_count: every reaction on the comment (comment_reactions).
    like_count: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0", default=0)
    moderation_hidden: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"),
                                                    default=False)

    __table_args__ = (*_nonnegative("replies_count", "like_count"),
                      _counters_covering_index("comments", "replies_count", "like_count"),
                      soft_deleted_index("comments"), created_at_brin("comments"))


class Follow(Base):
    __tablename__ = "follows"

    id: Mapped[str] = uuid_pk()
    follower_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    followed_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    status: Mapped[str] = mapped_column(String(20), nullable=False, server_default="active", default="active")
    created_at: Mapped[datetime] = created_at_column()

    __table_args__ = (
        UniqueConstraint("follower_id", "followed_id"),
        CheckConstraint("follower_id != followed_id", name="no_self_follow"),
        CheckConstraint("status IN ('active', 'pending', 'blocked')", name="status_valid"),
        Index("idx_follows_follower_id", "follower_id"),
        Index("idx_follows_followed_id", "followed_id"),
        Index("idx_follows_follower_followed", "follower_id", "followed_id"),
        Index("idx_follows_status", "status"),
        Index("idx_follows_created_at", "created_at"),
    )
