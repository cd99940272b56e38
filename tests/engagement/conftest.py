"""Helpers for the engagement tests: a small social graph built with plain SQL."""
from __future__ import annotations

import uuid

import pytest
from sqlalchemy import text

from tasks.engagement.counters import COUNTERS, counters_of, parent_tables


def add_users(conn, count: int, prefix: str | None = None) -> list[int]:
    prefix = prefix or uuid.uuid4().hex[:8]
    return list(conn.execute(text(
        "INSERT INTO users (email, username, hashed_password) "
        "SELECT :p || '_' || g || '@example.com', :p || '_' || g, '!' FROM generate_series(1, :n) g "
        "RETURNING id"), {"p": prefix, "n": count}).scalars())


def add_posts(conn, author_ids: list[int], per_author: int = 1) -> list[str]:
    return list(conn.execute(text(
        "INSERT INTO posts (author_id, content) SELECT a, 'post ' || g "
        "FROM unnest(CAST(:authors AS integer[])) a, generate_series(1, :n) g RETURNING id::text"),
        {"authors": author_ids, "n": per_author}).scalars())


def build_graph(conn) -> dict:
    """Users, posts and rows in every source table, with varied counts per parent."""
    users = add_users(conn, 6)
    posts = add_posts(conn, users[:3], per_author=2)  # 6 posts
    for i, post in enumerate(posts):
        likers = users[: i % 5]
        for u in likers:
            conn.execute(text("INSERT INTO likes (user_id, post_id) VALUES (:u, :p)"), {"u": u, "p": post})
        for u in users[: (i + 2) % 4]:
            conn.execute(text("INSERT INTO emoji_reactions (user_id, post_id, emoji_code) VALUES (:u, :p, 'heart')"),
                         {"u": u, "p": post})
        for _ in range(i % 3):
            conn.execute(text("INSERT INTO shares (user_id, post_id, platform) VALUES (:u, :p, 'internal')"),
                         {"u": users[0], "p": post})
    top = conn.execute(text("INSERT INTO comments (author_id, post_id, content) VALUES (:u, :p, 'top') "
                            "RETURNING id::text"), {"u": users[1], "p": posts[0]}).scalar_one()
    for u in users[:3]:
        conn.execute(text("INSERT INTO comments (author_id, post_id, parent_id, content) VALUES (:u, :p, :c, 'r')"),
                     {"u": u, "p": posts[0], "c": top})
    follows = [(users[1], users[0], "active"), (users[2], users[0], "active"), (users[3], users[0], "pending"),
               (users[0], users[1], "active"), (users[4], users[2], "blocked")]
    for a, b, status in follows:
        conn.execute(text("INSERT INTO follows (follower_id, followed_id, status) VALUES (:a, :b, :s)"),
                     {"a": a, "b": b, "s": status})
    comments = list(conn.execute(text("SELECT id::text FROM comments WHERE post_id = ANY(CAST(:p AS uuid[]))"),
                                 {"p": posts}).scalars())
    return {"users": users, "posts": posts, "comments": comments, "top_comment": top}


def truth_sql(counter) -> str:
    where = f" AND {counter.filter_sql}" if counter.filter_sql else ""
    return f"(SELECT count(*) FROM {counter.source_table} s WHERE s.{counter.source_fk} = p.id{where})"


def wrong_counters(conn) -> list[tuple]:
    """(table, column, id, stored, true) of every counter that differs from a direct count."""
    wrong = []
    for table in parent_tables():
        for counter in counters_of(table):
            rows = conn.execute(text(
                f"SELECT p.id::text, p.{counter.column}, {truth_sql(counter)} FROM {table} p "
                f"WHERE p.{counter.column} IS DISTINCT FROM {truth_sql(counter)}")).all()
            wrong.extend((table, counter.column, *row) for row in rows)
    return wrong


def counter_value(conn, table: str, column: str, entity_id) -> int:
    return conn.execute(text(f"SELECT {column} FROM {table} WHERE id::text = :id"), {"id": str(entity_id)}).scalar_one()


@pytest.fixture
def conn(db_session):
    """A connection inside the rolled-back test transaction."""
    return db_session.connection()


ALL_COUNTERS = [(c.parent_table, c.column) for c in COUNTERS]
