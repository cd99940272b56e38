"""All models, imported here so Base.metadata is complete for Alembic and tests."""
from db.base import Base
from db.models.social import Comment, EmojiReaction, Follow, Like, Post, Share, User
from db.models.notifications import Notification
from db.models.operations import DeadLetter, JobHeartbeat

__all__ = ["Base", "Comment", "DeadLetter", "EmojiReaction", "Follow", "JobHeartbeat", "Like", "Notification", "Post", "Share", "User"]
