"""Builders for source rows with explicit event times (freezegun drives them)."""
from __future__ import annotations

import uuid
from datetime import datetime, timezone

from sqlalchemy import select

from db.models import Comment, EmojiReaction, Follow, Like, Notification, Post, User


def now() -> datetime:
    return datetime.now(timezone.utc)


class Graph:
    def __init__(self, session):
        self.session = session

    def users(self, count: int) -> list[int]:
        tag = uuid.uuid4().hex[:8]
        users = [User(email=f"u{i}_{tag}@example.com", username=f"u{i}_{tag}", hashed_password="!")
                 for i in range(count)]
        self.session.add_all(users)
        self.session.flush()
        return [u.id for u in users]

    def user(self, username: str) -> int:
        user = User(email=f"{username}@example.com", username=username, hashed_password="!")
        self.session.add(user)
        self.session.flush()
        return user.id

    def post(self, author_id: int, content: str = "a post", at: datetime | None = None) -> str:
        post = Post(author_id=author_id, content=content, created_at=at or now())
        self.session.add(post)
        self.session.flush()
        return post.id

    def comment(self, author_id: int, post_id: str, content: str, at: datetime | None = None) -> str:
        comment = Comment(author_id=author_id, post_id=post_id, content=content, created_at=at or now())
        self.session.add(comment)
        self.session.flush()
        return comment.id

    def like(self, user_id: int, post_id: str, at: datetime | None = None) -> str:
        like = Like(user_id=user_id, post_id=post_id, created_at=at or now())
        self.session.add(like)
        self.session.flush()
        return like.id

    def react(self, user_id: int, post_id: str, emoji: str = "fire", at: datetime | None = None) -> str:
        reaction = EmojiReaction(user_id=user_id, post_id=post_id, emoji_code=emoji, created_at=at or now())
        self.session.add(reaction)
        self.session.flush()
        return reaction.id

    def follow(self, follower_id: int, followed_id: int, at: datetime | None = None, status: str = "active") -> str:
        follow = Follow(follower_id=follower_id, followed_id=followed_id, status=status, created_at=at or now())
        self.session.add(follow)
        self.session.flush()
        return follow.id

    def notifications(self, user_id: int) -> list[Notification]:
        self.session.expire_all()
        return list(self.session.scalars(
            select(Notification).where(Notification.user_id == user_id).order_by(Notification.created_at)))

    def top_level(self, user_id: int) -> list[Notification]:
        return [n for n in self.notifications(user_id) if n.parent_id is None]

    def children(self, parent_id: str) -> list[Notification]:
        self.session.expire_all()
        return list(self.session.scalars(select(Notification).where(Notification.parent_id == parent_id)))


def record(session, kind: str, *source_ids: str):
    """What notifications.record / record_many do inside their transaction."""
    from tasks.notifications.batching import apply_events
    from tasks.notifications.sources import load_events

    return apply_events(session, load_events(session, kind, list(source_ids)))
