"""Message notifications batch per conversation ("3 new messages from <sender>"), and
graph.mark_conversation_read leaves the messages, their notifications and both unread
counters exact (users.unread_messages_count, conversation_members.unread_count)."""
from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest
from celery.result import ResultSet
from freezegun import freeze_time
from sqlalchemy import text

from tasks.notifications.batching import unread_count
from tests.graph.conftest import (add_conversation, add_message, add_users, children, counter, notifications,
                                  username, wrong_graph_counters)
from tests.notifications.builders import record

T0 = datetime(2026, 3, 1, 10, 0, tzinfo=timezone.utc)
MINUTE = timedelta(minutes=1)


def now() -> datetime:
    return datetime.now(timezone.utc)


def unread_of(conn, receiver: int, conversation: str | None = None) -> int:
    """Unread messages counted by hand."""
    return conn.execute(text(
        "SELECT count(*) FROM messages WHERE receiver_id = :r AND NOT is_read "
        "AND (CAST(:c AS uuid) IS NULL OR conversation_id = CAST(:c AS uuid))"),
        {"r": receiver, "c": conversation}).scalar_one()


def inbox(conversation: str, user_id: int) -> str:
    return f"{conversation}:{user_id}"


# --- batching, plain functions with freezegun driving the windows ------------------------------

def test_messages_batch_per_conversation_and_name_their_sender(db_session):
    conn = db_session.connection()
    u = add_users(conn, "alice", "bob", "carol")
    alice, bob, carol = u["alice"], u["bob"], u["carol"]
    bob_chat, carol_chat = add_conversation(conn, alice, bob), add_conversation(conn, alice, carol)
    with freeze_time(T0) as clock:
        outcomes = []
        for _ in range(3):
            clock.tick(10 * MINUTE)
            outcomes += record(db_session, "message", add_message(conn, bob_chat, bob, alice, at=now()))
        outcomes += record(db_session, "message", add_message(conn, carol_chat, carol, alice, at=now()))
        # A reply goes to bob's own inbox: a notification of his, under the same conversation.
        outcomes += record(db_session, "message", add_message(conn, bob_chat, alice, bob, at=now()))
    assert [o.status for o in outcomes] == ["created", "converted", "batched", "created", "created"]

    top = {n.batch_key: n for n in notifications(conn, alice, top_level=True)}
    assert set(top) == {f"message:conversation:{bob_chat}", f"message:conversation:{carol_chat}"}
    batch = top[f"message:conversation:{bob_chat}"]
    assert batch.is_batch and batch.batch_count == 3 == len(children(conn, batch.id))
    assert (batch.title, batch.message) == ("New Messages", f"3 new messages from {username(conn, bob)}")
    assert batch.data["conversation_id"] == bob_chat
    single = top[f"message:conversation:{carol_chat}"]
    assert not single.is_batch and single.message == f"{username(conn, carol)} sent you a message"
    assert single.data["conversation_id"] == carol_chat
    [reply] = notifications(conn, bob, "message")
    assert reply.batch_key == f"message:conversation:{bob_chat}" and reply.data["actor_id"] == alice


@pytest.mark.parametrize(("gap", "converted"), [(59 * MINUTE, True), (61 * MINUTE, False)])
def test_a_second_message_joins_the_first_only_within_an_hour(db_session, gap, converted):
    conn = db_session.connection()
    u = add_users(conn, "alice", "bob")
    chat = add_conversation(conn, u["alice"], u["bob"])
    with freeze_time(T0) as clock:
        record(db_session, "message", add_message(conn, chat, u["bob"], u["alice"], at=now()))
        clock.tick(gap)
        [outcome] = record(db_session, "message", add_message(conn, chat, u["bob"], u["alice"], at=now()))
    top = notifications(conn, u["alice"], "message", top_level=True)
    if converted:
        assert outcome.status == "converted"
        [batch] = top
        assert batch.batch_count == 2 and batch.message == f"2 new messages from {username(conn, u['bob'])}"
    else:
        assert outcome.status == "created" and len(top) == 2 and not any(n.is_batch for n in top)


def test_a_message_read_before_it_is_recorded_notifies_nobody(db_session):
    conn = db_session.connection()
    u = add_users(conn, "alice", "bob")
    chat = add_conversation(conn, u["alice"], u["bob"])
    message = add_message(conn, chat, u["bob"], u["alice"], is_read=True)
    assert record(db_session, "message", message) == []
    assert notifications(conn, u["alice"]) == []


# --- through the worker: duplicates, then mark read ---------------------------------------------

@pytest.mark.integration
def test_mark_conversation_read_leaves_messages_notifications_and_counters_exact(clean_db, celery_worker):
    from tasks.graph.tasks import mark_conversation_read
    from tasks.notifications.tasks import record as record_task

    with clean_db.begin() as conn:
        u = add_users(conn, "alice", "bob", "carol")
        alice, bob, carol = u["alice"], u["bob"], u["carol"]
        bob_chat, carol_chat = add_conversation(conn, alice, bob), add_conversation(conn, alice, carol)
        start = conn.execute(text("SELECT now() - interval '30 minutes'")).scalar_one()
        from_bob = [add_message(conn, bob_chat, bob, alice, at=start + i * MINUTE) for i in range(3)]
        to_bob = add_message(conn, bob_chat, alice, bob, at=start + 4 * MINUTE)
        from_carol = [add_message(conn, carol_chat, carol, alice, at=start + (5 + i) * MINUTE) for i in range(2)]
        bob_name, carol_name = username(conn, bob), username(conn, carol)

    # Every message recorded twice, all at once.
    ids = from_bob + [to_bob] + from_carol
    outcomes = ResultSet([record_task.delay("message", i) for i in ids + ids]).join_native(timeout=30)
    assert Counter(o["status"] for o in outcomes)["duplicate"] == len(ids)
    with clean_db.connect() as conn:
        top = {n.batch_key: n for n in notifications(conn, alice, "message", top_level=True)}
        assert set(top) == {f"message:conversation:{bob_chat}", f"message:conversation:{carol_chat}"}
        bob_batch, carol_batch = top[f"message:conversation:{bob_chat}"], top[f"message:conversation:{carol_chat}"]
        assert (bob_batch.batch_count, bob_batch.message) == (3, f"3 new messages from {bob_name}")
        assert (carol_batch.batch_count, carol_batch.message) == (2, f"2 new messages from {carol_name}")
        assert sorted(c.data["message_id"] for c in children(conn, bob_batch.id)) == sorted(from_bob)
        assert unread_count(conn, alice) == 2

    # Read up to bob's second message: two marked, the third stays unread.
    partial = mark_conversation_read.delay(bob_chat, alice, up_to_message_id=from_bob[1]).get(timeout=30)
    # One of bob's messages is still unread: "3 new messages from bob" stays unread too.
    assert partial == {"status": "ok", "messages_marked": 2, "notifications_marked": 0}
    with clean_db.connect() as conn:
        read = dict(conn.execute(text("SELECT id::text, is_read FROM messages WHERE id = ANY(CAST(:i AS uuid[]))"),
                                 {"i": ids}).all())
        assert [read[m] for m in from_bob] == [True, True, False]
        assert read[to_bob] is False and [read[m] for m in from_carol] == [False, False]
        # The counters of the member who read are exact now, without a dirty pass.
        assert counter(conn, "users", "unread_messages_count", alice) == unread_of(conn, alice) == 3
        assert counter(conn, "conversation_members", "unread_count", inbox(bob_chat, alice)) == \
            unread_of(conn, alice, bob_chat) == 1
        bob_rows = [n for n in notifications(conn, alice) if n.batch_key == bob_batch.batch_key]
        assert len(bob_rows) == 4 and not any(n.read for n in bob_rows)
        assert unread_count(conn, alice) == 2

    # Read all of it: now the conversation's notifications are read, parent and children; carol's are not.
    full = mark_conversation_read.delay(bob_chat, alice).get(timeout=30)
    assert full == {"status": "ok", "messages_marked": 1, "notifications_marked": 1}
    with clean_db.connect() as conn:
        bob_rows = [n for n in notifications(conn, alice) if n.batch_key == bob_batch.batch_key]
        assert len(bob_rows) == 4 and all(n.read for n in bob_rows)
        assert not any(n.read for n in notifications(conn, alice) if n.batch_key == carol_batch.batch_key)
        assert unread_count(conn, alice) == 1
        assert counter(conn, "users", "unread_messages_count", alice) == unread_of(conn, alice) == 2
        assert counter(conn, "conversation_members", "unread_count", inbox(bob_chat, alice)) == \
            unread_of(conn, alice, bob_chat) == 0
        # bob's own unread message in the same conversation is his, untouched.
        assert unread_of(conn, bob, bob_chat) == 1
        assert not any(n.read for n in notifications(conn, bob, "message"))
        last_read = conn.execute(text("SELECT last_read_at FROM conversation_members WHERE id = :i"),
                                 {"i": inbox(bob_chat, alice)}).scalar_one()
        assert last_read is not None

    # Delivered again: nothing left to mark, the counters stay exact.
    again = mark_conversation_read.delay(bob_chat, alice).get(timeout=30)
    assert again == {"status": "ok", "messages_marked": 0, "notifications_marked": 0}
    # A new message read before its notification task ran notifies nobody.
    with clean_db.begin() as conn:
        late = add_message(conn, bob_chat, bob, alice)
    assert mark_conversation_read.delay(bob_chat, alice).get(timeout=30)["messages_marked"] == 1
    assert record_task.delay("message", late).get(timeout=30) == {"status": "gone"}

    # carol's side through the dirty pass: every counter agrees with the rows.
    from tasks.engagement import runs

    runs.run_dirty()
    with clean_db.connect() as conn:
        assert wrong_graph_counters(conn) == []
        assert counter(conn, "conversation_members", "unread_count", inbox(carol_chat, alice)) == 2
        assert conn.execute(text("SELECT last_read_at FROM conversation_members WHERE id = :i"),
                            {"i": inbox(bob_chat, alice)}).scalar_one() >= last_read
