"""SIGKILL pool processes in the middle of moderation.score_content (issue 14: "a SIGKILL
mid-score loses nothing").

The gate is a transaction of the test's own holding the advisory locks the tasks wait
on, late in their work: for an offensive post that mentions a user, the mention's
notification batch key, which ``set_hidden`` takes after the version row is inserted and
the post marked hidden (both uncommitted when the kill lands); for clean posts, the
per-content lock. Killed tasks are redelivered (acks_late), and every effect is counted:
one version row per post, the offensive one hidden and its mention retracted once.
"""
from __future__ import annotations

import time

import pytest
from sqlalchemy import text

from db.locks import lock_key
from db.session import session_scope
from tasks.notifications.batching import lock_name
from tasks.notifications.sources import record_mentions
from tests.operations.conftest import dead_letter_count, wait_until
from tests.operations.procs import children, kill

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

OFFENSIVE = "@{name} you are a stupid fucking idiot"
CLEAN = ("Lovely walk by the river this morning", "Thanks for the book, I loved it", "Tea and rain, perfect day")


def _world() -> dict:
    tag = str(time.monotonic_ns())[-8:]
    with session_scope() as session:
        author, target = (session.execute(text(
            "INSERT INTO users (email, username, hashed_password) VALUES (:e, :u, '!') RETURNING id"),
            {"e": f"k{i}_{tag}@example.com", "u": f"k{i}_{tag}"}).scalar() for i in range(2))
        offensive = session.execute(text(
            "INSERT INTO posts (author_id, content) VALUES (:a, :c) RETURNING id::text, created_at"),
            {"a": author, "c": OFFENSIVE.format(name=f"k1_{tag}")}).one()
        clean = [session.execute(text("INSERT INTO posts (author_id, content) VALUES (:a, :c) RETURNING id::text"),
                                 {"a": author, "c": body}).scalar() for body in CLEAN]
        # The mention was notified when the post was created (mentions.extract).
        assert record_mentions(session, source_kind="post", source_id=offensive.id, post_id=offensive.id,
                               author_id=author, author_name=f"k0_{tag}", event_at=offensive.created_at,
                               recipient_ids=[target]) == ["created"]
    return {"author": author, "target": target, "offensive": offensive.id, "clean": clean}


def test_sigkill_mid_score_loses_and_doubles_nothing(isolated, clean_db, tmp_path):
    world = _world()
    gates = [lock_name(world["target"], f"mention:post:{world['offensive']}")]
    gates += [lock_key("moderation.content", "POST", post_id) for post_id in world["clean"]]
    gate = clean_db.connect()
    transaction = gate.begin()
    gate.execute(text("SELECT count(pg_advisory_xact_lock(hashtextextended(k, 0))) FROM unnest(CAST(:k AS text[])) k"),
                 {"k": gates})
    worker = isolated.start_worker("moderation", ["moderation"], concurrency=2, log_path=tmp_path / "worker.log")
    posts = [world["offensive"], *world["clean"]]
    results = [isolated.app.send_task("moderation.score_content", args=["post", post_id])
               for post_id in posts + posts[:2]]   # two sent twice, as a web tier retrying would
    inspector = isolated.app.control.inspect(timeout=1.0, limit=1)
    killed: set[int] = set()
    kills = 0
    try:
        for _ in range(3):
            def busy():
                pool = set(children(worker.pid)) - killed
                active = inspector.active() or {}
                return [t["worker_pid"] for ts in active.values() for t in ts if t.get("worker_pid") in pool]
            pid = wait_until(busy, timeout=30, interval=0.05, what="a pool process mid-score")[0]
            kill(pid)
            killed.add(pid)
            kills += 1
        with clean_db.connect() as connection:  # nothing committed behind the shut gate
            assert connection.scalar(text("SELECT count(*) FROM content_moderation")) == 0
    finally:
        transaction.rollback()
        gate.close()
    outcomes = [r.get(timeout=120) for r in results]
    assert worker.poll() is None and kills == 3

    assert sorted(o["status"] for o in outcomes) == ["scored"] * 4 + ["unchanged"] * 2
    with clean_db.connect() as connection:
        versions = dict(connection.execute(text(
            "SELECT content_id::text, count(*) FROM content_moderation GROUP BY content_id")).all())
        hidden = dict(connection.execute(text(
            "SELECT id::text, moderation_hidden FROM posts WHERE id = ANY(CAST(:ids AS uuid[]))"),
            {"ids": posts}).all())
        statuses = dict(connection.execute(text(
            "SELECT content_id::text, status FROM content_moderation")).all())
        mentions = connection.scalar(text(
            "SELECT count(*) FROM notifications WHERE user_id = :u AND dedupe_key = :k"),
            {"u": world["target"], "k": f"mention:post:{world['offensive']}"})
    assert versions == {post_id: 1 for post_id in posts}
    assert statuses[world["offensive"]] == "FLAGGED" and hidden[world["offensive"]] is True
    assert all(statuses[p] == "APPROVED" and hidden[p] is False for p in world["clean"])
    assert mentions == 0
    assert dead_letter_count(clean_db) == 0
