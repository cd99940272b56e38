"""Atomic replacement, overlap protection and expiry with committed data and real concurrent connections."""
from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from freezegun import freeze_time
from sqlalchemy import text

from db.session import new_session
from tasks.feed import algorithm as A
from tasks.feed import expiry
from tasks.feed.active import dispatch_active_users
from tasks.feed.read import read_feed
from db.locks import try_xact_lock
from tasks.feed.scoring import lock_users, score_users
from tasks.feed.trending import update_trending
from tests.feed.conftest import NOW, Graph
from tests.waiting import backend_pid, blocked_by

FEED_SQL = text("SELECT post_id::text FROM feed_items WHERE user_id = :u ORDER BY score DESC")


@pytest.fixture
def committed(clean_db):
    session = new_session()
    try:
        yield Graph(session)
    finally:
        session.rollback()
        session.close()


def build_two_generations(graph: Graph):
    """A viewer whose feed at NOW and at NOW + 2 days share no post."""
    viewer = graph.user()
    old_posts, new_posts = [], []
    for _ in range(12):
        author = graph.user()
        graph.follow(viewer, author)
        old_posts.append(graph.post(author, age=timedelta(days=6)))
        new_posts.append(graph.post(author, age=timedelta(hours=-36)))   # published NOW + 36 h
    graph.session.commit()
    return viewer, set(old_posts), set(new_posts)


def rescore(viewer: int, at) -> None:
    session = new_session()
    try:
        score_users(session, [viewer], at, wait_for_lock=True)
        session.commit()
    finally:
        session.close()


def test_reader_sees_the_old_feed_until_the_new_one_commits(committed, engine):
    with freeze_time(NOW):
        viewer, old, new = build_two_generations(committed)
        rescore(viewer, NOW)
        writer = new_session()
        with engine.connect() as reader:
            assert {r for (r,) in reader.execute(FEED_SQL, {"u": viewer})} == old
            result = score_users(writer, [viewer], NOW + timedelta(days=2))   # deleted + inserted, uncommitted
            assert result.rows_deleted == len(old) and result.rows_written == len(new)
            assert {r for (r,) in reader.execute(FEED_SQL, {"u": viewer})} == old
            reader.rollback()
            writer.commit()
            writer.close()
            assert {r for (r,) in reader.execute(FEED_SQL, {"u": viewer})} == new


def test_concurrent_reader_never_sees_a_mix_or_nothing(committed, engine):
    with freeze_time(NOW):
        viewer, old, new = build_two_generations(committed)
        rescore(viewer, NOW)
    stop, seen, errors = threading.Event(), [], []

    def writer():
        try:
            for i in range(30):
                rescore(viewer, NOW + timedelta(days=2 if i % 2 == 0 else 0))
        except Exception as exc:  # surfaced by the assertion below
            errors.append(exc)
        finally:
            stop.set()

    thread = threading.Thread(target=writer)
    thread.start()
    with engine.connect() as reader:
        while not stop.is_set() or len(seen) < 5:
            seen.append(frozenset(r for (r,) in reader.execute(FEED_SQL, {"u": viewer})))
            reader.rollback()
    thread.join()
    assert not errors
    assert set(seen) <= {frozenset(old), frozenset(new)}, "a reader saw a mixed or empty feed"


def test_a_chunk_skips_users_another_writer_is_rescoring(committed):
    with freeze_time(NOW):
        viewer, _old, _new = build_two_generations(committed)
        other = committed.user()
        committed.session.commit()
        holder = new_session()
        try:
            assert lock_users(holder, [viewer]) == [viewer]
            chunk = new_session()
            result = score_users(chunk, [viewer, other], NOW)
            chunk.commit()
            chunk.close()
            assert result.users == 1 and result.skipped_locked == 1
        finally:
            holder.rollback()
            holder.close()


@pytest.mark.parametrize("job", ["trending", "dispatch", "expire"])
def test_an_overlapping_periodic_run_exits_cleanly(clean_db, job):
    name = {"trending": "feed.update_trending", "dispatch": "feed.score_active", "expire": "feed.expire_items"}[job]
    running = new_session()
    second = new_session()
    try:
        assert try_xact_lock(running, "feed.job", name)              # the "still running" predecessor
        if job == "trending":
            result = update_trending(second, NOW)
        elif job == "dispatch":
            sent = []
            result = dispatch_active_users(second, NOW, sent.append)
            assert sent == []
        else:
            result = expiry.sweep_expired(NOW, scope=_scope)
        assert result["status"] == "skipped"
        running.rollback()                               # predecessor finished
        assert try_xact_lock(second, "feed.job", name)
    finally:
        running.close()
        second.rollback()
        second.close()


from contextlib import contextmanager  # noqa: E402


@contextmanager
def _scope():
    session = new_session()
    try:
        yield session
        session.commit()
    finally:
        session.close()


def _committing_scope(remaining: list[int], engine):
    """A session scope that, after each commit, records from another connection how many
    expired rows are left: the sweep's progress as other transactions see it."""
    @contextmanager
    def scope():
        with _scope() as session:
            yield session
        with engine.connect() as connection:
            remaining.append(connection.scalar(text("SELECT count(*) FROM feed_items WHERE expires_at <= :t"),
                                               {"t": NOW + A.FEED_TTL + timedelta(minutes=1)}))
    return scope


def test_expired_rows_are_swept_in_bounded_batches(committed, clean_db, monkeypatch):
    with freeze_time(NOW):
        viewers = []
        for _ in range(3):
            viewer, _old, _new = build_two_generations(committed)
            rescore(viewer, NOW)
            viewers.append(viewer)
        fresh_viewer, _old, _new = build_two_generations(committed)
        rescore(fresh_viewer, NOW + timedelta(hours=12))
    with clean_db.connect() as connection:
        before = dict(connection.execute(text("SELECT user_id, count(*) FROM feed_items GROUP BY user_id")).all())
    # Each viewer follows 12 authors with one post in the window, and is offered the posts of
    # the graphs built before it as recent candidates: 12, 24, 36 rows; the fresh one 48.
    assert before == {viewers[0]: 12, viewers[1]: 24, viewers[2]: 36, fresh_viewer: 48}
    monkeypatch.setattr(A, "EXPIRE_BATCH", 5)
    with freeze_time(NOW + A.FEED_TTL - timedelta(minutes=1)):
        assert expiry.sweep_expired(NOW + A.FEED_TTL - timedelta(minutes=1)) == {"status": "ok", "deleted": 0}
    later = NOW + A.FEED_TTL + timedelta(minutes=1)
    with freeze_time(later):
        session = new_session()
        # Expired rows are invisible to the read query even before the sweep: fallback instead.
        assert {reason for _p, reason, _s in read_feed(session, viewers[0], later)} == {"chronological"}
        session.close()
        remaining: list[int] = []
        result = expiry.sweep_expired(later, scope=_committing_scope(remaining, clean_db))
    assert result == {"status": "ok", "deleted": 72}
    # Batches of 5, each committed on its own (seen from outside after each); the short one ends the run.
    assert remaining == [67, 62, 57, 52, 47, 42, 37, 32, 27, 22, 17, 12, 7, 2, 0]
    with clean_db.connect() as connection:
        left = dict(connection.execute(text("SELECT user_id, count(*) FROM feed_items GROUP BY user_id")).all())
    assert left == {fresh_viewer: 48}


def test_one_sweep_stops_after_its_batch_budget(committed, clean_db, monkeypatch):
    with freeze_time(NOW):
        viewer, _old, _new = build_two_generations(committed)
        rescore(viewer, NOW)
    monkeypatch.setattr(A, "EXPIRE_BATCH", 5)
    monkeypatch.setattr(A, "EXPIRE_MAX_BATCHES", 2)
    later = NOW + A.FEED_TTL + timedelta(minutes=1)
    remaining: list[int] = []
    assert expiry.sweep_expired(later, scope=_committing_scope(remaining, clean_db)) == {"status": "ok", "deleted": 10}
    assert remaining == [7, 2]            # 12 rows: two full batches, then the run yields
    assert expiry.sweep_expired(later) == {"status": "ok", "deleted": 2}   # the next run finishes


def test_refresh_user_waits_for_a_concurrent_writer_then_replaces(committed, clean_db):
    with freeze_time(NOW):
        viewer, old, new = build_two_generations(committed)
        rescore(viewer, NOW)
        holder = new_session()
        assert lock_users(holder, [viewer]) == [viewer]      # a chunk is rewriting this feed
        holder_pid = backend_pid(holder)
        done = threading.Event()
        outcome = {}

        def refresh():
            session = new_session()
            try:
                outcome["result"] = score_users(session, [viewer], NOW + timedelta(days=2), wait_for_lock=True)
                session.commit()
            finally:
                session.close()
                done.set()

        thread = threading.Thread(target=refresh)
        thread.start()
        waiting = blocked_by(clean_db, holder_pid, done)
        assert "pg_advisory_xact_lock" in (waiting or ""), "refresh_user must wait for the writer, not skip"
        holder.rollback()
        holder.close()
        assert done.wait(30)
        thread.join()
        assert outcome["result"].users == 1 and outcome["result"].skipped_locked == 0
        with committed.session.bind.connect() as reader:
            assert {r for (r,) in reader.execute(FEED_SQL, {"u": viewer})} == new
