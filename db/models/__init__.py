"""All models, imported here so Base.metadata is complete for Alembic and tests."""
from db.base import Base
from db.models.social import Comment, EmojiReaction, Follow, Like, Post, Share, User
from db.models.notifications import Notification
from db.models.feed import FeedItem
from db.models.operations import JobHeartbeat

__all__ = ["Base", "Comment", "EmojiReaction", "FeedItem", "Follow", "JobHeartbeat", "Like", "Notification", "Post", "Share", "User"]
