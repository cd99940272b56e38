"""Helpers for the engagement tests: a small social graph built with plain SQL."""
from __future__ import annotations

import uuid

import pytest
from sqlalchemy import text



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


# What each counter counts, written out by hand: the oracle the code's counter table
# (tasks/engagement/counters.py, which generates every recount) is checked against. An
# oracle generated from that table would agree with any mistake in it.
TRUE_COUNT_SQL = {
    ("posts", "hearts_count"): "SELECT count(*) FROM likes s WHERE s.post_id = p.id",
    ("posts", "reactions_count"): "SELECT count(*) FROM emoji_reactions s WHERE s.post_id = p.id",
    ("posts", "shares_count"): "SELECT count(*) FROM shares s WHERE s.post_id = p.id",
    ("posts", "comments_count"): "SELECT count(*) FROM comments s WHERE s.post_id = p.id",
    ("comments", "replies_count"): "SELECT count(*) FROM comments s WHERE s.parent_id = p.id",
    ("users", "followers_count"): "SELECT count(*) FROM follows s WHERE s.followed_id = p.id AND s.status = 'active'",
    ("users", "following_count"): "SELECT count(*) FROM follows s WHERE s.follower_id = p.id AND s.status = 'active'",
    ("users", "posts_count"): "SELECT count(*) FROM posts s WHERE s.author_id = p.id",
}
ALL_COUNTERS = list(TRUE_COUNT_SQL)


def wrong_counters(conn) -> list[tuple]:
    """(table, column, id, stored, true) of every counter that differs from a direct count."""
    wrong = []
    for (table, column), truth in TRUE_COUNT_SQL.items():
        rows = conn.execute(text(
            f"SELECT p.id::text, p.{column}, ({truth}) FROM {table} p "
            f"WHERE p.{column} IS DISTINCT FROM ({truth})")).all()
        wrong.extend((table, column, *row) for row in rows)
    return wrong


def graph_counts_by_hand(graph: dict) -> dict[tuple[str, str, str], int]:
    """Every counter of build_graph's rows, counted by hand from what build_graph inserts."""
    u, p, top = graph["users"], graph["posts"], graph["top_comment"]
    counts = {}
    # Post i: likes from users[:i % 5], reactions from users[:(i + 2) % 4], i % 3 shares;
    # post 0 has the top comment and its 3 replies.
    for i, (hearts, reactions, shares, comments) in enumerate(
            [(0, 2, 0, 4), (1, 3, 1, 0), (2, 0, 2, 0), (3, 1, 0, 0), (4, 2, 1, 0), (0, 3, 2, 0)]):
        counts.update({("posts", "hearts_count", p[i]): hearts, ("posts", "reactions_count", p[i]): reactions,
                       ("posts", "shares_count", p[i]): shares, ("posts", "comments_count", p[i]): comments})
    for comment in graph["comments"]:
        counts[("comments", "replies_count", comment)] = 3 if comment == top else 0
    # Follows: u1->u0, u2->u0, u0->u1 active; u3->u0 pending and u4->u2 blocked count for no one.
    followers = [2, 1, 0, 0, 0, 0]
    following = [1, 1, 1, 0, 0, 0]
    posts = [2, 2, 2, 0, 0, 0]      # two posts each by users 0-2
    for i, user in enumerate(u):
        counts.update({("users", "followers_count", str(user)): followers[i],
                       ("users", "following_count", str(user)): following[i],
                       ("users", "posts_count", str(user)): posts[i]})
    return counts


def stored_counts(conn, graph: dict) -> dict[tuple[str, str, str], int]:
    """The same keys as graph_counts_by_hand, read from the counter columns."""
    return {(table, column, entity): counter_value(conn, table, column, entity)
            for table, column, entity in graph_counts_by_hand(graph)}


def counter_value(conn, table: str, column: str, entity_id) -> int:
    return conn.execute(text(f"SELECT {column} FROM {table} WHERE id::text = :id"), {"id": str(entity_id)}).scalar_one()


@pytest.fixture
def conn(db_session):
    """A connection inside the rolled-back test transaction."""
    return db_session.connection()

