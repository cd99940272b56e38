"""Fixtures of the cache tests: the real cache Redis (CACHE_URL, db 14 of the test Redis),
emptied around each test, and builders for the rows the six keys are made of."""
from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta, timezone

import pytest
import redis
from sqlalchemy import text

from tests.graph.conftest import add_comment, add_follow, add_friendship, add_post, add_users

__all__ = ["add_comment", "add_follow", "add_friendship", "add_post", "add_users", "add_feed", "add_session",
           "add_notification", "cached_keys", "utcnow", "Gate"]


@pytest.fixture
def cache():
    """A client on the cache's Redis, flushed before and after the test."""
    import settings

    url = settings.current().cache_url
    assert url, "tests/conftest.py sets CACHE_URL"
    client = redis.Redis.from_url(url)
    client.flushdb()
    try:
        yield client
    finally:
        client.flushdb()
        client.close()


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def add_feed(conn, user_id: int, post_ids: list[str], *, now: datetime | None = None) -> None:
    """A stored feed: the posts in display order (first = highest score), live for a day."""
    now = now or utcnow()
    conn.execute(text(
        "INSERT INTO feed_items (user_id, post_id, score, reason, created_at, expires_at) "
        "SELECT :u, CAST(p AS uuid), 1000 - n, 'followed', :now, :expires "
        "FROM unnest(CAST(:posts AS text[])) WITH ORDINALITY AS x(p, n)"),
        {"u": user_id, "posts": post_ids, "now": now, "expires": now + timedelta(days=1)})


def add_session(conn, user_id: int, **columns) -> str:
    values = {"refresh_token_hash": "hash-of-a-secret-token", "ip_address": "203.0.113.7",
              "device_info": {"os": "linux", "app": "web"}, "user_agent": "Firefox/130",
              "expires_at": utcnow() + timedelta(days=30), **columns}
    return conn.execute(text(
        "INSERT INTO user_sessions (user_id, refresh_token_hash, ip_address, device_info, user_agent, expires_at) "
        "VALUES (:u, :h, CAST(:ip AS inet), CAST(:d AS jsonb), :ua, :e) RETURNING id::text"),
        {"u": user_id, "h": values["refresh_token_hash"], "ip": values["ip_address"],
         "d": json.dumps(values["device_info"]), "ua": values["user_agent"], "e": values["expires_at"]}).scalar_one()


def add_notification(conn, user_id: int, *, read: bool = False, parent_id: str | None = None,
                     is_batch: bool = False) -> str:
    return conn.execute(text(
        "INSERT INTO notifications (user_id, type, title, message, read, read_at, parent_id, is_batch) "
        "VALUES (:u, 'like', 't', 'm', :r, CASE WHEN :r THEN now() END, CAST(:p AS uuid), :b) RETURNING id::text"),
        {"u": user_id, "r": read, "p": parent_id, "b": is_batch}).scalar_one()


def cached_keys(client) -> set[str]:
    """Every key in the cache but the version counters and the warm's cursor."""
    return {key.decode() for key in client.keys("*")
            if not key.startswith(b"v:") and not key.startswith(b"cache:")}


class Gate:
    """Holds a fill between its PostgreSQL read and its Redis write until ``release()``:
    stands in for ``versions.write_if_unchanged`` (the real one runs after the gate)."""

    def __init__(self, real):
        self.real = real
        self.loaded = threading.Event()
        self.go = threading.Event()
        self.results = []

    def __call__(self, client, entries, snapshot):
        self.loaded.set()
        assert self.go.wait(30), "the test never released the fill"
        result = self.real(client, entries, snapshot)
        self.results.append(result)
        return result

    def release(self):
        self.go.set()


@pytest.fixture
def gate(monkeypatch):
    from tasks.cache import versions

    held = Gate(versions.write_if_unchanged)
    monkeypatch.setattr(versions, "write_if_unchanged", held)
    yield held
    held.release()
