"""The social graph of mini-Facebook (seed 004) and AI Social's comment reactions (seed 002).

Every user id is ``users.id``; posts and comments are ours. The counters these
tables feed (``users.friends_count``, ``users.unread_messages_count``,
``comments.like_count``, ``groups.member_count``,
``conversation_members.unread_count``) are ``CounterSpec`` rows in
tasks/engagement/counters.py, kept exact by the engagement family.
"""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    Boolean, CheckConstraint, Computed, DateTime, ForeignKey, Index, Integer, String, Text, UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from db.base import Base, created_at_column, uuid_pk
from db.models.social import created_at_brin

FRIENDSHIP_STATUSES = ("pending", "accepted", "blocked")
REACTION_TYPES = ("like", "love", "laugh", "angry", "sad")
GROUP_PRIVACY_LEVELS = ("open", "closed", "secret")
GROUP_ROLES = ("admin", "moderator", "member")
MESSAGE_TYPES = ("text", "image", "video", "file")


def _one_of(column: str, values: tuple[str, ...], name: str) -> CheckConstraint:
    return CheckConstraint(f"{column} IN ({', '.join(repr(v) for v in values)})", name=name)


class Friendship(Base):
    """One row per pair of users, whatever its direction (the unique pair index).

    ``user1_id`` is the one who asked (``pending``), or who blocked (``blocked``);
    ``accepted`` is symmetric. Withdrawing, declining and unfriending delete the row.
    """

    __tablename__ = "friendships"

    id: Mapped[str] = uuid_pk()
    user1_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True)
    user2_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True)
    status: Mapped[str] = mapped_column(String(20), nullable=False)
    created_at: Mapped[datetime] = created_at_column()
    updated_at: Mapped[datetime] = created_at_column()

    __table_args__ = (
        _one_of("status", FRIENDSHIP_STATUSES, "status_valid"),
        CheckConstraint("user1_id <> user2_id", name="no_self_friendship"),
        # The seed's UNIQUE(user1_id, user2_id) let (a, b) and (b, a) both exist: a request
        # crossing another would make two rows and count the friendship twice.
        Index("uq_friendships_pair", text("least(user1_id, user2_id)"), text("greatest(user1_id, user2_id)"),
              unique=True),
        Index("idx_friendships_status", "status"),
    )


class CommentReaction(Base):
    """Seed 004's ``reactions`` rows on a comment (seed 002's CommentReaction).

    Reactions on posts stay in ``likes`` and ``emoji_reactions`` (seed 001).
    """

    __tablename__ = "comment_reactions"

    id: Mapped[str] = uuid_pk()
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True)
    comment_id: Mapped[str] = mapped_column(ForeignKey("comments.id", ondelete="CASCADE"), nullable=False,
                                            index=True)
    type: Mapped[str] = mapped_column(String(20), nullable=False)
    created_at: Mapped[datetime] = created_at_column()

    __table_args__ = (
        UniqueConstraint("user_id", "comment_id", "type"),
        _one_of("type", REACTION_TYPES, "type_valid"),
    )


class Group(Base):
    __tablename__ = "groups"

    id: Mapped[str] = uuid_pk()
    name: Mapped[str] = mapped_column(String(255), nullable=False)
    description: Mapped[str | None] = mapped_column(Text)
    cover_photo_url: Mapped[str | None] = mapped_column(Text)
    privacy_level: Mapped[str] = mapped_column(String(20), nullable=False, server_default="closed",
                                               default="closed")
    admin_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True)
    member_count: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0", default=0)
    created_at: Mapped[datetime] = created_at_column()
    updated_at: Mapped[datetime] = created_at_column()

    __table_args__ = (
        _one_of("privacy_level", GROUP_PRIVACY_LEVELS, "privacy_level_valid"),
        CheckConstraint("member_count >= 0", name="member_count_nonnegative"),
        Index("idx_groups_counters", "id", postgresql_include=["member_count"]),
    )


class GroupMember(Base):
    __tablename__ = "group_members"

    id: Mapped[str] = uuid_pk()
    group_id: Mapped[str] = mapped_column(ForeignKey("groups.id", ondelete="CASCADE"), nullable=False)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True)
    role: Mapped[str] = mapped_column(String(20), nullable=False, server_default="member", default="member")
    joined_at: Mapped[datetime] = created_at_column()

    __table_args__ = (
        UniqueConstraint("group_id", "user_id"),  # its index also serves group_id lookups
        _one_of("role", GROUP_ROLES, "role_valid"),
    )


class Conversation(Base):
    """Seed 004's ``conversation_id``, given a table so members and messages can point at it."""

    __tablename__ = "conversations"

    id: Mapped[str] = uuid_pk()
    created_at: Mapped[datetime] = created_at_column()


class ConversationMember(Base):
    """One member of a conversation, with their unread count.

    ``id`` is ``'<conversation id>:<user id>'``, computed: the counter machinery keys
    a parent by one column, and a message's ``inbox_id`` (the same expression over its
    conversation and receiver) points here, so the per-conversation unread count is an
    ordinary counter of messages.
    """

    __tablename__ = "conversation_members"

    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"),
                                                 nullable=False)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True)
    id: Mapped[str] = mapped_column(
        String(60), Computed("conversation_id::text || ':' || user_id::text", persisted=True), primary_key=True)
    unread_count: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0", default=0)
    last_read_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    joined_at: Mapped[datetime] = created_at_column()

    __table_args__ = (
        UniqueConstraint("conversation_id", "user_id"),
        CheckConstraint("unread_count >= 0", name="unread_count_nonnegative"),
        Index("idx_conversation_members_counters", "id", postgresql_include=["unread_count"]),
    )


class Message(Base):
    __tablename__ = "messages"

    id: Mapped[str] = uuid_pk()
    sender_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True)
    receiver_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"),
                                                 nullable=False)
    content: Mapped[str] = mapped_column(Text, nullable=False)
    message_type: Mapped[str] = mapped_column(String(20), nullable=False, server_default="text", default="text")
    media_url: Mapped[str | None] = mapped_column(Text)
    is_read: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"), default=False)
    created_at: Mapped[datetime] = created_at_column()
    # The receiver's conversation_members row: the receiver must be a member.
    inbox_id: Mapped[str] = mapped_column(
        String(60), Computed("conversation_id::text || ':' || receiver_id::text", persisted=True),
        ForeignKey("conversation_members.id", ondelete="CASCADE"), nullable=False)

    __table_args__ = (
        _one_of("message_type", MESSAGE_TYPES, "message_type_valid"),
        CheckConstraint("sender_id <> receiver_id", name="no_self_message"),
        Index("idx_messages_conversation_created", "conversation_id", "created_at"),
        # The unread counters' recounts and mark-read read only the unread rows.
        Index("idx_messages_inbox_unread", "inbox_id", postgresql_where=text("NOT is_read")),
        Index("idx_messages_receiver_unread", "receiver_id", postgresql_where=text("NOT is_read")),
        created_at_brin("messages"),
    )
