"""Beat entry -> feed.score_active on a real worker -> a group of feed.score_users chunks -> feed_items rows."""
from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest
from freezegun import freeze_time
from sqlalchemy import text

from db.session import new_session
from schedules import beat_schedule
from tasks.feed import algorithm as A
from tests.feed.conftest import Graph

pytestmark = pytest.mark.integration

# Frozen at the current minute, not at a far date: the worker checks a message's
# `expires` against its own clock. The worker's and broker client's timer code
# keeps real monotonic time (freezegun would otherwise move their timers by
# decades and stall the shared worker); the feed code and Celery's send path
# see the frozen instant.
WORKER_MACHINERY = ["kombu", "celery.worker", "celery.concurrency", "celery.utils", "celery.events",
                    "celery.backends", "celery.result", "billiard", "redis", "amqp", "vine"]


def wait_until(predicate, attempts: int = 300, pause: float = 0.1):
    for _ in range(attempts):   # counted, not timed: the test's own clock is frozen
        value = predicate()
        if value:
            return value
        time.sleep(pause)
    raise AssertionError("condition not reached within 30 s")


def send_beat_entry(celery_app, name: str):
    entry = beat_schedule[name]
    assert entry["options"]["expires"] == entry["schedule"].total_seconds()
    return celery_app.send_task(entry["task"], **entry["options"])


def test_beat_dispatch_fans_out_chunks_that_write_feeds(celery_app, celery_worker, clean_db, monkeypatch):
    monkeypatch.setattr(A, "SCORE_CHUNK_SIZE", 2)   # 5 active users -> 3 chunks in one group
    now = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    with freeze_time(now, ignore=WORKER_MACHINERY):
        session = new_session()
        graph = Graph(session)
        active = graph.users(5)
        idle = graph.user()
        for viewer in active:
            graph.post(viewer, age=timedelta(hours=2), now=now)         # activity within 7 days
        for viewer, followed in zip(active, active[1:] + active[:1]):
            graph.follow(viewer, followed, age=timedelta(days=30))
        graph.post(idle, age=timedelta(days=20), now=now)                 # nothing recent: not active
        session.commit()
        session.close()

        result = send_beat_entry(celery_app, "feed-score-active").get(timeout=60)
        assert result == {"status": "ok", "users": 5, "chunks": 3}

        def feeds():
            with clean_db.connect() as connection:
                rows = dict(connection.execute(text(
                    "SELECT user_id, count(*) FROM feed_items GROUP BY user_id")).all())
            return rows if set(rows) == set(active) else None

        counts = wait_until(feeds)
        assert idle not in counts
        with clean_db.connect() as connection:
            reasons = set(connection.execute(text("SELECT DISTINCT reason FROM feed_items")).scalars())
            expires = set(connection.execute(text("SELECT DISTINCT expires_at FROM feed_items")).scalars())
        assert "followed" in reasons
        assert expires == {now + A.FEED_TTL}


def test_trending_and_refresh_user_through_the_worker(celery_app, celery_worker, clean_db):
    now = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    with freeze_time(now, ignore=WORKER_MACHINERY):
        session = new_session()
        graph = Graph(session)
        viewer, star = graph.users(2)
        hot = graph.post(star, age=timedelta(hours=1), hearts=40, shares=10, now=now)
        session.commit()
        session.close()
        assert send_beat_entry(celery_app, "feed-update-trending").get(timeout=60)["status"] == "ok"
        from tasks.feed.tasks import refresh_user

        # The viewer follows no one: the one hot post, as trending, is the whole feed.
        assert refresh_user.delay(viewer).get(timeout=60) == {
            "users": 1, "skipped_locked": 0, "rows_deleted": 0, "rows_written": 1}
        assert refresh_user.delay(999_999).get(timeout=60) == {"status": "gone"}
        with clean_db.connect() as connection:
            row = connection.execute(text(
                "SELECT post_id::text, reason FROM feed_items WHERE user_id = :u"), {"u": viewer}).one()
            in_view = connection.scalar(text("SELECT count(*) FROM popular_posts WHERE id = :p"), {"p": hot})
        assert row == (hot, "trending") and in_view == 1
