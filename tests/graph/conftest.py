"""Builders for the graph tests (plain SQL on a connection or session) and the hand-written
oracle of the graph's counters."""
from __future__ import annotations

import threading
import uuid
from datetime import datetime

import pytest
from sqlalchemy import text


def tag() -> str:
    return uuid.uuid4().hex[:6]


def add_users(conn, *names: str) -> dict[str, int]:
    """One user per name; the username is ``<name>_<tag>`` (see ``username``)."""
    suffix = tag()
    return {name: conn.execute(text(
        "INSERT INTO users (email, username, hashed_password) VALUES (:e, :u, '!') RETURNING id"),
        {"e": f"{name}_{suffix}@example.com", "u": f"{name}_{suffix}"}).scalar_one() for name in names}


def username(conn, user_id: int) -> str:
    return conn.execute(text("SELECT username FROM users WHERE id = :u"), {"u": user_id}).scalar_one()


def add_post(conn, author: int, *, privacy: str = "public", at: datetime | None = None, content: str = "a post") -> str:
    return conn.execute(text(
        "INSERT INTO posts (author_id, content, privacy_level, created_at) "
        "VALUES (:a, :c, :p, coalesce(CAST(:at AS timestamptz), now())) RETURNING id::text"),
        {"a": author, "c": content, "p": privacy, "at": at}).scalar_one()


def add_comment(conn, author: int, post: str, content: str = "a comment") -> str:
    return conn.execute(text(
        "INSERT INTO comments (author_id, post_id, content) VALUES (:a, CAST(:p AS uuid), :c) RETURNING id::text"),
        {"a": author, "p": post, "c": content}).scalar_one()


def add_friendship(conn, user1: int, user2: int, status: str) -> str:
    return conn.execute(text(
        "INSERT INTO friendships (user1_id, user2_id, status) VALUES (:a, :b, :s) RETURNING id::text"),
        {"a": user1, "b": user2, "s": status}).scalar_one()


def add_follow(conn, follower: int, followed: int, status: str = "active") -> None:
    conn.execute(text("INSERT INTO follows (follower_id, followed_id, status) VALUES (:a, :b, :s)"),
                 {"a": follower, "b": followed, "s": status})


def add_reaction(conn, user: int, comment: str, kind: str = "like", at: datetime | None = None) -> str:
    return conn.execute(text(
        "INSERT INTO comment_reactions (user_id, comment_id, type, created_at) "
        "VALUES (:u, CAST(:c AS uuid), :t, coalesce(CAST(:at AS timestamptz), now())) RETURNING id::text"),
        {"u": user, "c": comment, "t": kind, "at": at}).scalar_one()


def add_conversation(conn, *members: int) -> str:
    conversation = conn.execute(text("INSERT INTO conversations DEFAULT VALUES RETURNING id::text")).scalar_one()
    conn.execute(text("INSERT INTO conversation_members (conversation_id, user_id) "
                      "SELECT CAST(:c AS uuid), unnest(CAST(:m AS integer[]))"),
                 {"c": conversation, "m": list(members)})
    return conversation


def add_message(conn, conversation: str, sender: int, receiver: int, *, at: datetime | None = None,
                content: str = "hi", is_read: bool = False) -> str:
    return conn.execute(text(
        "INSERT INTO messages (conversation_id, sender_id, receiver_id, content, is_read, created_at) "
        "VALUES (CAST(:c AS uuid), :s, :r, :t, :read, coalesce(CAST(:at AS timestamptz), now())) "
        "RETURNING id::text"),
        {"c": conversation, "s": sender, "r": receiver, "t": content, "read": is_read, "at": at}).scalar_one()


def notifications(conn, user_id: int, kind: str | None = None, *, top_level: bool | None = None) -> list:
    """A user's notification rows (of one type), oldest first."""
    where = ["user_id = :u"]
    if kind is not None:
        where.append("type = :k")
    if top_level is not None:
        where.append("parent_id IS NULL" if top_level else "parent_id IS NOT NULL")
    return conn.execute(text(
        "SELECT id::text, type, title, message, data, read, is_batch, batch_count, batch_key, dedupe_key, "
        "parent_id::text FROM notifications WHERE " + " AND ".join(where) + " ORDER BY created_at, id"),
        {"u": user_id, "k": kind}).all()


def children(conn, parent_id: str) -> list:
    return conn.execute(text(
        "SELECT id::text, type, data, read, dedupe_key FROM notifications WHERE parent_id = CAST(:p AS uuid) "
        "ORDER BY created_at, id"), {"p": parent_id}).all()


def from_actor(conn, recipient: int, actor: int) -> list:
    """Non-parent notifications ``recipient`` got from ``actor``, any type."""
    return conn.execute(text(
        "SELECT type, dedupe_key FROM notifications WHERE user_id = :u AND NOT is_batch "
        "AND (data ->> 'actor_id')::int = :a ORDER BY type"), {"u": recipient, "a": actor}).all()


# What every graph counter counts, written out by hand (not generated from
# tasks/engagement/counters.py, whose mistakes a generated oracle would share).
# ``p`` is the parent row.
TRUE_COUNT_SQL = {
    ("users", "friends_count"):
        "SELECT count(*) FROM friendships f WHERE f.status = 'accepted' AND (f.user1_id = p.id OR f.user2_id = p.id)",
    ("users", "unread_messages_count"):
        "SELECT count(*) FROM messages m WHERE m.receiver_id = p.id AND m.is_read = false",
    ("conversation_members", "unread_count"):
        "SELECT count(*) FROM messages m WHERE m.conversation_id = p.conversation_id "
        "AND m.receiver_id = p.user_id AND m.is_read = false",
    ("comments", "like_count"): "SELECT count(*) FROM comment_reactions r WHERE r.comment_id = p.id",
    ("groups", "member_count"): "SELECT count(*) FROM group_members g WHERE g.group_id = p.id",
}


def wrong_graph_counters(conn) -> list[tuple]:
    """(table, column, id, stored, true) of every graph counter that differs from a count by hand."""
    wrong = []
    for (table, column), truth in TRUE_COUNT_SQL.items():
        rows = conn.execute(text(
            f"SELECT p.id::text, p.{column}, ({truth}) FROM {table} p WHERE p.{column} IS DISTINCT FROM ({truth})"
        )).all()
        wrong.extend((table, column, *row) for row in rows)
    return sorted(wrong)


def counter(conn, table: str, column: str, entity_id) -> int:
    return conn.execute(text(f"SELECT {column} FROM {table} WHERE id::text = :id"),
                        {"id": str(entity_id)}).scalar_one()


class SentRefreshes:
    """Stands in for ``feed.refresh_user`` inside tasks.graph.tasks: sends the real task and
    keeps each (user id, AsyncResult), so a test can see which feeds a sync rebuilt and wait
    for those rebuilds before its data is truncated."""

    def __init__(self, real):
        self.real = real
        self.sent: list[tuple[int, object]] = []
        self._lock = threading.Lock()

    def delay(self, user_id: int):
        result = self.real.delay(user_id)
        with self._lock:
            self.sent.append((user_id, result))
        return result

    def users(self) -> list[int]:
        with self._lock:
            return sorted(user_id for user_id, _ in self.sent)

    def join(self, timeout: float = 60) -> list[dict]:
        with self._lock:
            results = [r for _, r in self.sent]
        return [r.get(timeout=timeout) for r in results]

    def clear(self) -> None:
        self.join()
        with self._lock:
            self.sent.clear()


@pytest.fixture
def refreshes(monkeypatch, clean_db, celery_worker):
    import tasks.graph.tasks as graph_tasks

    spy = SentRefreshes(graph_tasks.refresh_user)
    monkeypatch.setattr(graph_tasks, "refresh_user", spy)
    try:
        yield spy
    finally:
        spy.join()   # no feed rebuild may outlive the test's data
