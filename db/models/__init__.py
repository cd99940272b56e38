"""All models, imported here so Base.metadata is complete for Alembic and tests."""
from db.base import Base
from db.models.social import Comment, EmojiReaction, Follow, Like, Post, Share, User
from db.models.notifications import Notification
from db.models.media import MediaFile, ProcessingStatus
from db.models.operations import JobHeartbeat

__all__ = ["Base", "Comment", "EmojiReaction", "Follow", "JobHeartbeat", "Like", "MediaFile", "Notification", "Post", "ProcessingStatus", "Share", "User"]
