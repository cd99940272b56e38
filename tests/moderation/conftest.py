"""Builders for the moderation tests: users, posts and comments with chosen text."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest
from sqlalchemy import text

from db.models import Comment, Post
from tests.notifications.builders import Graph

THRESHOLD = 0.8          # settings.py's default MODERATION_HIDE_THRESHOLD, passed explicitly
CLEAN_TEXT = "Homemade lasagna tonight, recipe in the comments"
OFFENSIVE_TEXT = "you are a fucking idiot and everyone hates you"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class World(Graph):
    """tests/notifications' Graph plus what moderation reads back."""

    def edit_post(self, post_id: str, content: str) -> None:
        self.session.get(Post, post_id).content = content
        self.session.flush()

    def edit_comment(self, comment_id: str, content: str) -> None:
        self.session.get(Comment, comment_id).content = content
        self.session.flush()

    def hidden(self, content_type: str, content_id: str) -> bool:
        table = {"POST": "posts", "COMMENT": "comments"}[content_type]
        return self.session.execute(text(f"SELECT moderation_hidden FROM {table} WHERE id = CAST(:id AS uuid)"),
                                    {"id": content_id}).scalar_one()

    def versions(self, content_type: str, content_id: str) -> list:
        return self.session.execute(text(
            "SELECT id::text, status, automated_score, signals, content_hash, moderator_id, reviewed_at "
            "FROM content_moderation WHERE content_type = :t AND content_id = CAST(:id AS uuid) "
            "ORDER BY created_at, id"), {"t": content_type, "id": content_id}).all()

    def feed(self, user_id: int) -> list[str]:
        return list(self.session.execute(text(
            "SELECT post_id::text FROM feed_items WHERE user_id = :u ORDER BY score DESC"), {"u": user_id}).scalars())

    def of_type(self, user_id: int, kind: str) -> list:
        return [n for n in self.notifications(user_id) if n.type == kind and not n.is_batch]


@pytest.fixture
def world(db_session) -> World:
    return World(db_session)


def writes_so_far(session) -> int:
    """Rows inserted, updated or deleted by the current transaction (subtransactions included)."""
    return session.execute(text(
        "SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0) FROM pg_stat_xact_user_tables")).scalar_one()
