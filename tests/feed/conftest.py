"""Small social graphs for the feed tests, built at a frozen instant."""
from __future__ import annotations

import itertools
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import text

from db.models import Follow, Post, User

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=timezone.utc)
_counter = itertools.count()


class Graph:
    """Helpers that add rows through one session (flushes, never commits)."""

    def __init__(self, session):
        self.session = session

    def user(self, name: str | None = None) -> int:
        n = next(_counter)
        name = name or f"u{n}"
        user = User(email=f"{name}-{n}@example.com", username=f"{name}-{n}", hashed_password="!")
        self.session.add(user)
        self.session.flush()
        return user.id

    def users(self, count: int) -> list[int]:
        return [self.user() for _ in range(count)]

    def post(self, author: int, age: timedelta = timedelta(hours=1), hearts: int = 0, reactions: int = 0,
             shares: int = 0, public: bool = True, now: datetime = NOW) -> str:
        post = Post(author_id=author, content="thanks", created_at=now - age, is_public=public,
                    hearts_count=hearts, reactions_count=reactions, shares_count=shares)
        self.session.add(post)
        self.session.flush()
        return post.id

    def follow(self, follower: int, followed: int, status: str = "active", age: timedelta = timedelta(days=30)) -> None:
        self.session.add(Follow(follower_id=follower, followed_id=followed, status=status, created_at=NOW - age))
        self.session.flush()

    def feed(self, user_id: int) -> list[tuple[str, str, float]]:
        """(post_id, reason, score) in display order."""
        return [tuple(r) for r in self.session.execute(text(
            "SELECT post_id::text, reason, score FROM feed_items WHERE user_id = :u ORDER BY score DESC"),
            {"u": user_id})]


@pytest.fixture
def graph(db_session):
    return Graph(db_session)
