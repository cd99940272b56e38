"""BATCH_CONFIGS (seed 001) and the texts of single and batch notifications.

Which kinds share a batch key:
- ``like`` and ``emoji_reaction`` both batch under the unified
  ``post_interaction:post:<post_id>`` key (seed 001's "unified interactions"),
  so the author sees one "New Engagement" row per post, not two.
- ``post_shared``, ``comment`` and ``mention`` batch per post:
  ``<kind>:post:<post_id>``.
- ``follow`` batches per recipient: ``follow:user:<user_id>``, at most 10
  followers per batch; the 11th starts a fresh single (and the 12th a new batch).
- Seed 004's graph: ``friend_request`` and ``friend_accept`` batch per recipient
  like follows; ``comment_reaction`` per comment (``comment_reaction:comment:<id>``,
  with the same 24 h window as likes); ``message`` per conversation
  (``message:conversation:<id>``): "3 new messages from Bob".
- ``content_removed`` (a moderator's reject) per recipient.

A batch key is always ``<parent type>:<scope>:<scope id>``; the scope is the
batch text's key (``<type>:<scope>``), in Python and in the recount SQL alike.
"""
from __future__ import annotations

from dataclasses import dataclass

SINGLE_CONVERSION_HOURS = 1   # a single younger than this becomes a batch (seed 001)
RATE_LIMIT_PER_HOUR = 20      # new top-level rows per recipient per type per hour (seed 001)


# What one batch gathers: the events about one post, comment or conversation, or
# every event of the type for the recipient. The data key of the scope id is "<scope>_id".
BATCH_SCOPES = ("post", "comment", "conversation", "user")


@dataclass(frozen=True)
class BatchConfig:
    notification_type: str
    batch_scope: str                  # one of BATCH_SCOPES
    summary_template: str             # batch message, "{count}" filled in
    icon_type: str
    single_title: str
    single_template: str              # single message, "{actor}" (and "{emoji}") filled in
    batch_title: str
    max_age_hours: int = 24
    max_batch_size: int | None = None
    batch_type: str | None = None     # parent type and key prefix; defaults to notification_type
    overflow_template: str = "{count} more notifications"

    @property
    def parent_type(self) -> str:
        return self.batch_type or self.notification_type

    def batch_key(self, *, scope_id: str | None, recipient_id: int) -> str:
        """``scope_id`` is the post, comment or conversation id (unused for user scope)."""
        if self.batch_scope == "user":
            return f"{self.parent_type}:user:{recipient_id}"
        return f"{self.parent_type}:{self.batch_scope}:{scope_id}"

    def overflow_key(self, recipient_id: int) -> str:
        """Where over-limit events fold: one batch per recipient and type."""
        return f"{self.notification_type}:user:{recipient_id}"


POST_INTERACTION_TITLE = "New Engagement 💜"
POST_INTERACTION_TEMPLATE = "{count} people engaged with your post"

BATCH_CONFIGS: dict[str, BatchConfig] = {
    "emoji_reaction": BatchConfig(
        notification_type="emoji_reaction", batch_scope="post", max_age_hours=24,
        summary_template="{count} people reacted to your post", icon_type="reaction",
        single_title="New Reaction", single_template="{actor} reacted with {emoji}",
        batch_title=POST_INTERACTION_TITLE, batch_type="post_interaction",
        overflow_template="{count} more people reacted to your posts"),
    "like": BatchConfig(
        notification_type="like", batch_scope="post",
        summary_template="{count} people liked your post", icon_type="heart",
        single_title="New Like 💜", single_template="{actor} liked your post",
        batch_title=POST_INTERACTION_TITLE, batch_type="post_interaction",
        overflow_template="{count} more people liked your posts"),
    "follow": BatchConfig(
        notification_type="follow", batch_scope="user",
        summary_template="{count} people started following you", icon_type="follow",
        single_title="New Follower", single_template="{actor} started following you",
        batch_title="New Followers", max_batch_size=10),
    "post_shared": BatchConfig(
        notification_type="post_shared", batch_scope="post",
        summary_template="{count} people shared your post", icon_type="share",
        single_title="Post Shared", single_template="{actor} shared your post",
        batch_title="Post Shared", overflow_template="{count} more shares of your posts"),
    "comment": BatchConfig(
        notification_type="comment", batch_scope="post",
        summary_template="{count} new comments on your post", icon_type="comment",
        single_title="New Comment", single_template="{actor} commented on your post",
        batch_title="New Comments", overflow_template="{count} more comments on your posts"),
    "mention": BatchConfig(
        notification_type="mention", batch_scope="post",
        summary_template="You were mentioned {count} times in a post", icon_type="mention",
        single_title="You were mentioned", single_template="{actor} mentioned you in a {where}",
        batch_title="Mentions", overflow_template="You were mentioned {count} more times"),
    "friend_request": BatchConfig(
        notification_type="friend_request", batch_scope="user",
        summary_template="{count} new friend requests", icon_type="friend",
        single_title="Friend Request", single_template="{actor} sent you a friend request",
        batch_title="Friend Requests", max_batch_size=10),
    "friend_accept": BatchConfig(
        notification_type="friend_accept", batch_scope="user",
        summary_template="{count} people accepted your friend request", icon_type="friend",
        single_title="Friend Request Accepted", single_template="{actor} accepted your friend request",
        batch_title="New Friends", max_batch_size=10),
    "comment_reaction": BatchConfig(
        notification_type="comment_reaction", batch_scope="comment", max_age_hours=24,
        summary_template="{count} people reacted to your comment", icon_type="reaction",
        single_title="New Reaction", single_template="{actor} reacted to your comment",
        batch_title="Reactions", overflow_template="{count} more reactions to your comments"),
    "message": BatchConfig(
        notification_type="message", batch_scope="conversation", max_age_hours=24,
        summary_template="{count} new messages from {actor}", icon_type="message",
        single_title="New Message", single_template="{actor} sent you a message",
        batch_title="New Messages", overflow_template="{count} more new messages"),
    "content_removed": BatchConfig(
        notification_type="content_removed", batch_scope="user",
        summary_template="{count} of your posts or comments were removed", icon_type="moderation",
        single_title="Content Removed", single_template="Your {where} was removed: {reason}",
        batch_title="Content Removed"),
}

RECORDABLE_KINDS = ("like", "emoji_reaction", "follow", "post_shared", "comment", "friend_request",
                    "friend_accept", "comment_reaction", "message")
RETRACTABLE_KINDS = ("like", "emoji_reaction", "follow", "friend_request", "friend_accept", "comment_reaction")


def _text_table() -> dict[str, tuple[str, str]]:
    """Batch (title, message template) by text key; the recount SQL picks the key."""
    table = {"post_interaction:*": (POST_INTERACTION_TITLE, POST_INTERACTION_TEMPLATE)}
    for kind, config in BATCH_CONFIGS.items():
        if config.parent_type == "post_interaction":
            table[f"post_interaction:{kind}"] = (POST_INTERACTION_TITLE, config.summary_template)
        table[f"{kind}:{config.batch_scope}"] = (config.batch_title, config.summary_template)
        if config.batch_scope != "user":
            table[f"{kind}:user"] = (config.batch_title, config.overflow_template)
    return table


BATCH_TEXTS = _text_table()


def batch_text_key(parent_type: str, batch_key: str, child_types: set[str]) -> str:
    """Python twin of the CASE in batching._TEXT_KEY_SQL."""
    if parent_type == "post_interaction":
        return f"post_interaction:{next(iter(child_types)) if len(child_types) == 1 else '*'}"
    return f"{parent_type}:{batch_key.split(':')[1]}"


def batch_texts(parent_type: str, batch_key: str, count: int, child_types: set[str],
                actor: str = "") -> tuple[str, str]:
    """Title and message of a batch parent from its recounted children; ``actor`` is the
    parent's ``data.actor_username`` (conversation batches name their sender)."""
    title, template = BATCH_TEXTS[batch_text_key(parent_type, batch_key, child_types)]
    return title, template.replace("{count}", str(count)).replace("{actor}", actor)
