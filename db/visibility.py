"""Who may see what: the one home of the rules every reader applies.

Feeds (tasks/feed/scoring.py), popular_posts (migration 0011), notifications
(tasks/notifications/sources.py) and mentions build their SQL from these
fragments, so a rule changes in one place:

- a post is *listed* for everyone when it is public (``is_public``, seed 001),
  has ``privacy_level = 'public'`` (seed 004), is not soft-deleted and is not
  held by moderation (``moderation_hidden``);
- a ``'friends'`` post is listed for the author's accepted friends only;
- ``'custom'`` audiences are the web tier's: our jobs show such a post to nobody;
- two users with a ``blocked`` row between them, in ``friendships`` or in
  ``follows``, in either direction, never see each other's posts or events.
"""
from __future__ import annotations


def readable_post_sql(p: str) -> str:
    """The post exists for readers at all: published, not soft-deleted, not held by moderation."""
    return f"({p}.is_public AND {p}.deleted_at IS NULL AND NOT {p}.moderation_hidden)"


def public_post_sql(p: str) -> str:
    """The post may be listed for anyone (trending, recent, popular_posts)."""
    return f"({readable_post_sql(p)} AND {p}.privacy_level = 'public')"


def post_visible_sql(p: str, is_friend: str) -> str:
    """The post may be listed for a viewer; ``is_friend`` is SQL true when the viewer is an
    accepted friend of the author."""
    return (f"({readable_post_sql(p)} AND ({p}.privacy_level = 'public' "
            f"OR ({p}.privacy_level = 'friends' AND {is_friend})))")


def blocked_between_sql(a: str, b: str) -> str:
    """True when users ``a`` and ``b`` have a block between them, either way (two index probes)."""
    return (f"(EXISTS (SELECT 1 FROM friendships bf WHERE bf.status = 'blocked' "
            f"AND least(bf.user1_id, bf.user2_id) = least({a}, {b}) "
            f"AND greatest(bf.user1_id, bf.user2_id) = greatest({a}, {b})) "
            f"OR EXISTS (SELECT 1 FROM follows bfo WHERE bfo.status = 'blocked' "
            f"AND ((bfo.follower_id = {a} AND bfo.followed_id = {b}) "
            f"OR (bfo.follower_id = {b} AND bfo.followed_id = {a}))))")


def friends_of_sql(user_ids: str) -> str:
    """SELECT user_id, friend_id: the accepted friends of ``user_ids`` (an int[] SQL expression)."""
    return (f"SELECT user1_id AS user_id, user2_id AS friend_id FROM friendships "
            f"WHERE user1_id = ANY({user_ids}) AND status = 'accepted' "
            f"UNION ALL SELECT user2_id, user1_id FROM friendships "
            f"WHERE user2_id = ANY({user_ids}) AND status = 'accepted'")


def blocks_of_sql(user_ids: str) -> str:
    """SELECT user_id, other_id: everyone blocked by or blocking ``user_ids``, from both tables."""
    return (f"SELECT follower_id AS user_id, followed_id AS other_id FROM follows "
            f"WHERE follower_id = ANY({user_ids}) AND status = 'blocked' "
            f"UNION SELECT followed_id, follower_id FROM follows "
            f"WHERE followed_id = ANY({user_ids}) AND status = 'blocked' "
            f"UNION SELECT user1_id, user2_id FROM friendships WHERE user1_id = ANY({user_ids}) AND status = 'blocked' "
            f"UNION SELECT user2_id, user1_id FROM friendships WHERE user2_id = ANY({user_ids}) AND status = 'blocked'")
