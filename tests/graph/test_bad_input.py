"""Bad input to the graph tasks and the graph kinds of notifications.retract: a typed,
permanent error (never retried) or a status, and nothing written."""
from __future__ import annotations

import uuid

import pytest
from sqlalchemy import text

from tests.graph.conftest import add_conversation, add_message, add_users
from workers.errors import InvalidArguments

SOME_UUID = "0b5a3c2e-8f61-4c8e-9a43-3f1d9b1c2a77"


def state(engine) -> tuple:
    """Everything a wrongly accepted call could have written."""
    with engine.connect() as conn:
        return (conn.execute(text("SELECT count(*), count(*) FILTER (WHERE read) FROM notifications")).one(),
                conn.execute(text("SELECT count(*) FILTER (WHERE is_read) FROM messages")).scalar_one(),
                conn.execute(text("SELECT array_agg(last_read_at ORDER BY id) FROM conversation_members")).scalar(),
                conn.execute(text("SELECT array_agg(unread_count ORDER BY id) FROM conversation_members")).scalar(),
                conn.execute(text("SELECT array_agg(unread_messages_count ORDER BY id) FROM users")).scalar(),
                conn.execute(text("SELECT count(*) FROM counter_runs")).scalar_one())


@pytest.mark.parametrize(("call", "message"), [
    (lambda t: t.sync_friendship(5, 5), "two different users"),
    (lambda t: t.sync_friendship("5", 6), "must be an integer"),
    (lambda t: t.sync_friendship(True, 6), "must be an integer"),
    (lambda t: t.mark_conversation_read("not-a-uuid", 1), "not a valid UUID"),
    (lambda t: t.mark_conversation_read(SOME_UUID, 1, up_to_message_id="42"), "'up_to_message_id'"),
    (lambda t: t.mark_conversation_read(SOME_UUID, "1"), "must be an integer"),
])
def test_graph_tasks_reject_bad_arguments_before_any_work(call, message, clean_db):
    import tasks.graph.tasks as graph_tasks

    before = state(clean_db)
    with pytest.raises(InvalidArguments, match=message) as info:
        call(graph_tasks)
    assert info.value.code == "invalid_arguments"
    assert state(clean_db) == before


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"kind": "comment_reaction", "actor_id": 1}, "needs comment_id"),
    ({"kind": "comment_reaction", "actor_id": 1, "post_id": SOME_UUID}, "needs comment_id"),
    ({"kind": "comment_reaction", "actor_id": 1, "comment_id": "nope"}, "'comment_id'"),
    ({"kind": "friend_request", "actor_id": 1}, "needs user_id"),
    ({"kind": "friend_accept", "actor_id": 1, "comment_id": SOME_UUID}, "needs user_id"),
    ({"kind": "message", "actor_id": 1, "user_id": 2}, "not one of"),   # messages are marked read, not retracted
])
def test_notifications_retract_rejects_a_graph_kind_without_its_scope(kwargs, message, clean_db):
    from tasks.notifications.tasks import retract

    before = state(clean_db)
    with pytest.raises(InvalidArguments, match=message):
        retract(**kwargs)
    assert state(clean_db) == before


def test_mark_read_of_a_non_member_or_an_unknown_message_changes_nothing(clean_db):
    from tasks.graph.tasks import mark_conversation_read

    with clean_db.begin() as conn:
        u = add_users(conn, "alice", "bob", "mallory")
        chat = add_conversation(conn, u["alice"], u["bob"])
        other_chat = add_conversation(conn, u["alice"], u["mallory"])
        add_message(conn, chat, u["bob"], u["alice"])
        elsewhere = add_message(conn, other_chat, u["mallory"], u["alice"])
    before = state(clean_db)

    assert mark_conversation_read(chat, u["mallory"]) == {
        "status": "not_a_member", "messages_marked": 0, "notifications_marked": 0}
    assert mark_conversation_read(str(uuid.uuid4()), u["alice"])["status"] == "not_a_member"
    assert state(clean_db) == before
    # A message of another conversation, or of none, is no place to read up to.
    for up_to in (elsewhere, str(uuid.uuid4())):
        assert mark_conversation_read(chat, u["alice"], up_to_message_id=up_to) == {
            "status": "unknown_message", "messages_marked": 0, "notifications_marked": 0}
        assert state(clean_db) == before
    # Not a member is the first answer, whatever the message.
    assert mark_conversation_read(chat, u["mallory"], up_to_message_id=elsewhere)["status"] == "not_a_member"
    assert state(clean_db) == before


@pytest.mark.integration
def test_a_bad_sync_through_the_worker_fails_once_as_a_dead_letter(clean_db, celery_worker):
    from tasks.graph.tasks import mark_conversation_read, sync_friendship
    from tests.waiting import wait_for
    from workers.reliability.deliveries import deliveries

    bad = [sync_friendship.delay(5, 5), mark_conversation_read.delay("not-a-uuid", 1)]
    for result, message in zip(bad, ("two different users", "not a valid UUID")):
        with pytest.raises(InvalidArguments, match=message):
            result.get(timeout=30)
        assert deliveries(result.id) == 1   # permanent: never retried

    def letters():
        with clean_db.connect() as conn:
            return conn.execute(text("SELECT task_name, error_code FROM dead_letters WHERE task_id = ANY(:ids) "
                                     "ORDER BY task_name"), {"ids": [r.id for r in bad]}).all()

    assert [tuple(r) for r in wait_for(lambda: len(letters()) == 2 and letters(), 30, what="two dead letters")] == [
        ("graph.mark_conversation_read", "invalid_arguments"), ("graph.sync_friendship", "invalid_arguments")]
