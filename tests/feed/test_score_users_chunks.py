"""feed.score_users over 10,000 users: a transaction per 500, so two concurrent calls
cannot exhaust PostgreSQL's shared lock table ("out of shared memory")."""
from __future__ import annotations

import threading
from datetime import datetime, timezone

import pytest
from celery.result import ResultSet
from sqlalchemy import text

from db.session import new_session
from tasks.feed import scoring, trending
from workers.reliability.deliveries import deliveries

PER_CALL = 10_000   # workers.task.MAX_LIST_ITEMS: the most one task accepts
USERS = 15_000      # two calls of PER_CALL ids that share 5,000

# Advisory locks held right now, per backend, in the test database only.
LOCKS_SQL = text("""
SELECT pid, count(*) FROM pg_locks
WHERE locktype = 'advisory' AND granted
  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
GROUP BY pid
""")

# One user's feed as text: (post, reason, display slot) in display order.
FEED_ARRAY = ("(SELECT coalesce(array_agg(f.post_id::text || '/' || f.reason || '/' || f.score "
              "ORDER BY f.score DESC), '{{}}') FROM feed_items f WHERE f.user_id = {user})")
FEED_SQL = text(f"SELECT {FEED_ARRAY.format(user=':u')}")
MISMATCHED_SQL = text(f"SELECT count(*) FROM unnest(CAST(:ids AS integer[])) AS u(id) "
                      f"WHERE {FEED_ARRAY.format(user='u.id')} IS DISTINCT FROM CAST(:expected AS text[])")


def test_transaction_chunks_are_sorted_distinct_and_bounded():
    ids = list(range(1_203, 0, -1)) + [5, 5, 7]
    chunks = scoring.transaction_chunks(ids)
    assert [len(c) for c in chunks] == [500, 500, 203]
    assert [i for chunk in chunks for i in chunk] == list(range(1, 1_204))
    assert scoring.transaction_chunks([]) == []


def test_the_plain_function_refuses_more_users_than_one_transaction_may_lock(db_session):
    with pytest.raises(ValueError, match="501 users in one transaction"):
        scoring.score_users(db_session, list(range(1, 502)), datetime.now(timezone.utc))
    # 500 distinct ids, each twice, are one transaction's worth (none exists: nothing written).
    assert scoring.score_users(db_session, list(range(1, 501)) * 2, datetime.now(timezone.utc)) == \
        scoring.ScoreResult(users=500, skipped_locked=0, rows_deleted=0, rows_written=0)


def _seed(engine) -> tuple[list[int], int]:
    """USERS viewers who follow no one, a control user like them, and 8 authors with one
    public post each (different ages and hearts), trending refreshed: every viewer's
    feed is the same ordered list of the 8 trending posts."""
    with engine.begin() as connection:
        viewers = connection.execute(text(
            "INSERT INTO users (email, username, hashed_password) "
            "SELECT 'v' || g || '@example.com', 'v' || g, '!' FROM generate_series(1, :n) AS g RETURNING id"),
            {"n": USERS}).scalars().all()
        control = connection.execute(text(
            "INSERT INTO users (email, username, hashed_password) VALUES ('control@example.com', 'control', '!') "
            "RETURNING id")).scalar_one()
        connection.execute(text(
            "WITH a AS (INSERT INTO users (email, username, hashed_password) "
            "           SELECT 'a' || g || '@example.com', 'a' || g, '!' FROM generate_series(1, 8) AS g "
            "           RETURNING id) "
            "INSERT INTO posts (author_id, content, created_at, hearts_count) "
            "SELECT id, 'post', now() - make_interval(hours => (id % 8) + 1), (id * 7) % 11 FROM a"))
    session = new_session()
    try:
        assert trending.update_trending(session, datetime.now(timezone.utc))["posts_rescored"] == 8
        session.commit()
    finally:
        session.close()
    return viewers, control


def _expected_feed(control: int) -> list[str]:
    """The control user's feed, scored by the plain function and rolled back."""
    session = new_session()
    try:
        result = scoring.score_users(session, [control], datetime.now(timezone.utc))
        assert result.users == 1 and result.rows_written == 8
        feed = session.execute(FEED_SQL, {"u": control}).scalar_one()
    finally:
        session.rollback()
        session.close()
    assert len(feed) == 8 and {row.split("/")[1] for row in feed} == {"trending"}
    return feed


@pytest.mark.integration
def test_two_workers_score_10k_users_each_at_once(clean_db, celery_app, worker_processes):
    from tasks.feed.tasks import score_users

    viewers, control = _seed(clean_db)
    expected = _expected_feed(control)
    worker_processes("feed-locks-a", ["feed"], concurrency=1)
    worker_processes("feed-locks-b", ["feed"], concurrency=1)

    stop, samples, errors = threading.Event(), [], []

    def watch_locks():  # what each backend holds at once, sampled until both tasks are done
        try:
            with clean_db.connect() as connection:
                while not stop.is_set():
                    samples.append(dict(connection.execute(LOCKS_SQL).all()))
                    connection.rollback()
        except Exception as exc:  # surfaced by the assertion below
            errors.append(exc)

    watcher = threading.Thread(target=watch_locks)
    watcher.start()
    try:
        # Not the same 10,000 twice: a call skips (and so does not hold) the locks the other
        # holds, and two identical lists never exceed one list's locks.
        results = [score_users.delay(viewers[:PER_CALL]), score_users.delay(viewers[-PER_CALL:][::-1])]
        outcomes = ResultSet(results).join_native(timeout=240, propagate=True)
    finally:
        stop.set()
        watcher.join()
    assert errors == []

    # Both succeeded first time: "out of shared memory" is an OperationalError, which
    # would show up as a retry (deliveries are counted per task id and retry number).
    assert [r.state for r in results] == ["SUCCESS", "SUCCESS"]
    assert [[deliveries(r.id, retry) for retry in range(3)] for r in results] == [[1, 0, 0], [1, 0, 0]]
    assert all(o["users"] + o["skipped_locked"] == PER_CALL for o in outcomes)
    assert sum(o["users"] for o in outcomes) >= USERS   # a shared user one call skipped, the other scored
    # The bound itself: no backend ever held more than one chunk's locks, and the two
    # calls did overlap (two backends holding locks in the same sample).
    peak = max((max(sample.values(), default=0) for sample in samples), default=0)
    assert 0 < peak <= scoring.USERS_PER_TRANSACTION
    assert max(len(sample) for sample in samples) >= 2, "the two calls never ran at the same time"
    with clean_db.connect() as connection:
        assert connection.scalar(MISMATCHED_SQL, {"ids": viewers, "expected": expected}) == 0
        assert connection.scalar(text("SELECT count(*) FROM feed_items")) == USERS * len(expected)
