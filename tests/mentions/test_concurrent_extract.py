"""Two mentions.extract runs for one post at the same time, on two real connections."""
from __future__ import annotations

import threading

from sqlalchemy import text

from db.locks import xact_lock_many
from db.session import new_session
from tasks.mentions.service import load_source, notify_mentions
from tasks.notifications.batching import lock_name
from tests.waiting import backend_pid, wait_for

BLOCKED_COUNT_SQL = text("SELECT count(*) FROM pg_stat_activity WHERE :holder = ANY(pg_blocking_pids(pid))")


def test_two_concurrent_runs_for_one_post_notify_each_user_once(clean_db):
    with clean_db.begin() as connection:
        author, bob, carol = connection.execute(text(
            "INSERT INTO users (email, username, hashed_password) VALUES ('c1@example.com', 'c_alice', '!'), "
            "('c2@example.com', 'c_bob', '!'), ('c3@example.com', 'c_carol', '!') RETURNING id")).scalars().all()
        post_id = connection.execute(text(
            "INSERT INTO posts (author_id, content) VALUES (:a, 'hi @c_bob and @c_carol') RETURNING id::text"),
            {"a": author}).scalar_one()
    # A third connection holds both recipients' batch locks, so both runs are surely in
    # flight together: each has read the post and waits on the same lock.
    holder = new_session()
    xact_lock_many(holder, [lock_name(user, f"mention:post:{post_id}") for user in (bob, carol)])
    holder_pid = backend_pid(holder)
    results, errors = [], []

    def extract() -> None:
        session = new_session()
        try:
            results.append(notify_mentions(session, load_source(session, "post", post_id)))
            session.commit()
        except Exception as exc:  # surfaced by the assertion below
            errors.append(exc)
            session.rollback()
        finally:
            session.close()

    runs = [threading.Thread(target=extract) for _ in range(2)]
    for run in runs:
        run.start()
    try:
        def both_waiting_or_done():
            if not any(run.is_alive() for run in runs):
                return "done"
            with clean_db.connect() as connection:
                return "waiting" if connection.scalar(BLOCKED_COUNT_SQL, {"holder": holder_pid}) == 2 else None

        seen = wait_for(both_waiting_or_done, what="both runs waiting on the batch lock")
    finally:
        holder.rollback()
        holder.close()
        for run in runs:
            run.join(timeout=60)
    assert errors == [] and len(results) == 2
    # One run notifies both users, the other finds both already notified.
    assert sorted((r.notified, r.already_notified) for r in results) == [
        ([], ["c_bob", "c_carol"]), (["c_bob", "c_carol"], [])]
    with clean_db.connect() as connection:
        rows = connection.execute(text(
            "SELECT user_id, count(*) FROM notifications WHERE type = 'mention' AND NOT is_batch GROUP BY user_id"
        )).all()
    assert sorted(tuple(r) for r in rows) == [(bob, 1), (carol, 1)]
    assert seen == "waiting"   # the two runs really overlapped
