"""friendships.sync_pair converges on the pair's current row whatever the timing of its
syncs: a history synced after every write, and the same history whose last syncs come
late (after the next writes), end with the same notifications. Plain functions on real
PostgreSQL, rolled back."""
from __future__ import annotations

import pytest
from sqlalchemy import text

from tasks.graph.friendships import sync_pair
from tests.graph.conftest import add_users

PAIR = "least(user1_id, user2_id) = least(:a, :b) AND greatest(user1_id, user2_id) = greatest(:a, :b)"


def ask(asker, other):
    return lambda conn, u: conn.execute(text(
        "INSERT INTO friendships (user1_id, user2_id, status) VALUES (:a, :b, 'pending')"),
        {"a": u[asker], "b": u[other]})


def accept(conn, u):
    conn.execute(text(f"UPDATE friendships SET status = 'accepted', updated_at = now() WHERE {PAIR}"),
                 {"a": u["alice"], "b": u["bob"]})


def remove(conn, u):   # withdraw, decline, unfriend or unblock
    conn.execute(text(f"DELETE FROM friendships WHERE {PAIR}"), {"a": u["alice"], "b": u["bob"]})


def block(blocker, other):
    return lambda conn, u: conn.execute(text(
        f"UPDATE friendships SET user1_id = :x, user2_id = :y, status = 'blocked' WHERE {PAIR}"),
        {"x": u[blocker], "y": u[other], "a": u["alice"], "b": u["bob"]})


# (history, how many of its first writes are synced at once, the end state by hand)
HISTORIES = {
    "unfriended, then asked the other way": (
        [ask("alice", "bob"), accept, remove, ask("bob", "alice")], 2, {("alice", "friend_request", "bob")}),
    "withdrawn, then asked the other way": (
        [ask("alice", "bob"), remove, ask("bob", "alice")], 1, {("alice", "friend_request", "bob")}),
    "blocked and unblocked, then asked again": (
        [ask("alice", "bob"), accept, block("bob", "alice"), remove, ask("alice", "bob")], 2,
        {("bob", "friend_request", "alice")}),
    "unfriended and asked again, the new request accepted": (
        [ask("alice", "bob"), accept, remove, ask("alice", "bob"), accept], 4,
        {("bob", "friend_request", "alice"), ("alice", "friend_accept", "bob")}),
}


def friend_notifications(conn, u: dict) -> set[tuple[str, str, str]]:
    names = {v: k for k, v in u.items()}
    rows = conn.execute(text(
        "SELECT user_id, type, (data ->> 'actor_id')::int FROM notifications WHERE NOT is_batch "
        "AND type IN ('friend_request', 'friend_accept') AND user_id = ANY(CAST(:u AS integer[]))"),
        {"u": list(u.values())}).all()
    found = [(names[user], kind, names[actor]) for user, kind, actor in rows]
    assert len(found) == len(set(found)), f"a notification twice: {found}"
    return set(found)


def play(db_session, history, synced_first: int) -> set:
    conn = db_session.connection()
    u = add_users(conn, "alice", "bob")
    for index, step in enumerate(history):
        step(conn, u)
        if index < synced_first:
            sync_pair(db_session, u["alice"], u["bob"])
    # The late syncs, one per remaining write, in either order of the pair's ids.
    for index in range(synced_first, len(history)):
        ends = (u["alice"], u["bob"]) if index % 2 else (u["bob"], u["alice"])
        sync_pair(db_session, *ends)
    return friend_notifications(conn, u)


@pytest.mark.parametrize("name", list(HISTORIES))
def test_late_syncs_end_where_timely_ones_do(db_session, name):
    history, synced_first, expected = HISTORIES[name]
    assert play(db_session, history, len(history)) == expected    # synced after every write
    assert play(db_session, history, synced_first) == expected    # the last syncs come late
