"""All models, imported here so Base.metadata is complete for Alembic and tests."""
from db.base import Base
from db.models.accounts import PasswordResetToken, UserSession
from db.models.analytics import (
    AnalyticsDay, AnalyticsEvent, AnalyticsFlush, FollowEvent, PostDailyViews, PostTag, ProfileDailyViews,
    SystemMetric, Tag, TrendingTag, UserAnalytics, UserSharePlatforms,
)
from db.models.delivery import (
    Delivery, DeliveryDue, Digest, NotificationPreference, NotificationSettings, PushSubscription,
)
from db.models.events import AuditLog, UserEngagement, UserEngagementArchive
from db.models.engagement import CounterDirty, CounterDrift, CounterRun, CounterRunChunk
from db.models.feed import FeedItem
from db.models.graph import (
    CommentReaction, Conversation, ConversationMember, Friendship, Group, GroupMember, Message,
)
from db.models.moderation import ContentModeration
from db.models.media import MediaFile, ProcessingStatus
from db.models.notifications import Notification, NotificationRateLimit
from db.models.operations import DeadLetter, JobHeartbeat, UpkeepRun
from db.models.search import SearchDirty, SearchDocument, SearchIndexVersion, SearchVerification
from db.models.social import Comment, EmojiReaction, Follow, Like, Post, Share, User

__all__ = [
    "SearchDirty",
    "SearchDocument",
    "SearchIndexVersion",
    "SearchVerification",
    "CommentReaction",
    "ContentModeration",
    "Conversation",
    "ConversationMember",
    "Friendship",
    "Group",
    "GroupMember",
    "Message",
    "AnalyticsDay",
    "AnalyticsEvent",
    "AnalyticsFlush",
    "FollowEvent",
    "PostDailyViews",
    "PostTag",
    "ProfileDailyViews",
    "SystemMetric",
    "Tag",
    "TrendingTag",
    "UserAnalytics",
    "UserSharePlatforms",
    "AuditLog",
    "PasswordResetToken",
    "UpkeepRun",
    "UserEngagement",
    "UserEngagementArchive",
    "UserSession",
    "Delivery",
    "DeliveryDue",
    "Digest",
    "NotificationPreference",
    "NotificationSettings",
    "PushSubscription",
    "Base",
    "Comment",
    "CounterDirty",
    "CounterDrift",
    "CounterRun",
    "CounterRunChunk",
    "DeadLetter",
    "EmojiReaction",
    "FeedItem",
    "Follow",
    "JobHeartbeat",
    "Like",
    "MediaFile",
    "Notification",
    "NotificationRateLimit",
    "Post",
    "ProcessingStatus",
    "Share",
    "User",
]
