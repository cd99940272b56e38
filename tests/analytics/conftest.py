"""Analytics fixtures: a Redis database of its own for the view counters (db 14),
named by ANALYTICS_REDIS_URL for the flusher and given to the web tier's client,
and a few users and posts committed for real (flushers run in other processes)."""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
import redis
from sqlalchemy import text

from tests.conftest import redis_url_for, truncate_all


@contextmanager
def counters_redis_on(db: int) -> Iterator[redis.Redis]:
    """Redis database ``db`` (emptied) as the counters' Redis, for the client and the flusher alike."""
    from tasks.analytics import client

    url = redis_url_for(db)
    saved = os.environ.get("ANALYTICS_REDIS_URL")
    os.environ["ANALYTICS_REDIS_URL"] = url
    connection = redis.Redis.from_url(url)
    connection.flushdb()
    client.configure(url)
    try:
        yield connection
    finally:
        client.configure(None)
        connection.flushdb()
        if saved is None:
            os.environ.pop("ANALYTICS_REDIS_URL", None)
        else:
            os.environ["ANALYTICS_REDIS_URL"] = saved


@pytest.fixture
def counters_redis():
    with counters_redis_on(14) as connection:
        yield connection


@dataclass
class World:
    users: list[int]
    posts: list[str]          # posts[i] is by users[i % len(users)]

    def author_of(self, post_id: str) -> int:
        return self.users[self.posts.index(post_id) % len(self.users)]


def make_world(engine, users: int = 3, posts: int = 6) -> World:
    with engine.begin() as connection:
        user_ids = list(connection.execute(text(
            "INSERT INTO users (email, username, hashed_password) "
            "SELECT 'u' || g || '@example.com', 'user' || g, '!' FROM generate_series(1, :n) g RETURNING id"),
            {"n": users}).scalars())
        post_ids = [connection.execute(text(
            "INSERT INTO posts (author_id, content) VALUES (:a, 'post') RETURNING id::text"),
            {"a": user_ids[i % users]}).scalar() for i in range(posts)]
    return World(user_ids, post_ids)


@pytest.fixture
def world(clean_db):
    return make_world(clean_db)


__all__ = ["World", "make_world", "truncate_all"]
