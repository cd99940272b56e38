"""Demo: erin and alice become friends, frank asks alice, bob sends alice three messages,
carol two that alice reads, two users react to a comment and three join a group; the
summary reads the friend and unread counters, the message batch and the group's size."""
from __future__ import annotations

from celery import chain
from sqlalchemy import text

from db.session import session_scope
from tasks.engagement.tasks import reconcile_dirty
from tasks.graph.tasks import mark_conversation_read, sync_friendship
from tasks.notifications.tasks import record
from workers.dev.demo import DemoGraph

FAMILY = "graph"

_FRIENDSHIP_SQL = text("""
INSERT INTO friendships (user1_id, user2_id, status) VALUES (:a, :b, :status)
ON CONFLICT ((least(user1_id, user2_id)), (greatest(user1_id, user2_id))) DO NOTHING
""")


def _conversation(session, sender: int, receiver: int, texts: list[str]) -> tuple[str, list[str]]:
    conversation = session.execute(text("INSERT INTO conversations DEFAULT VALUES RETURNING id::text")).scalar()
    session.execute(text("INSERT INTO conversation_members (conversation_id, user_id) "
                         "VALUES (CAST(:c AS uuid), :a), (CAST(:c AS uuid), :b)"),
                    {"c": conversation, "a": sender, "b": receiver})
    ids = [session.execute(text(
        "INSERT INTO messages (sender_id, receiver_id, conversation_id, content) "
        "VALUES (:s, :r, CAST(:c AS uuid), :t) RETURNING id::text"),
        {"s": sender, "r": receiver, "c": conversation, "t": body}).scalar() for body in texts]
    return conversation, ids


def enqueue(graph: DemoGraph) -> list:
    u = graph.user_ids
    with session_scope() as session:
        session.execute(_FRIENDSHIP_SQL, {"a": u["erin"], "b": u["alice"], "status": "accepted"})
        session.execute(_FRIENDSHIP_SQL, {"a": u["frank"], "b": u["alice"], "status": "pending"})
        _, from_bob = _conversation(session, u["bob"], u["alice"], ["Hi!", "Are you free Sunday?", "Bring tea"])
        read_one, from_carol = _conversation(session, u["carol"], u["alice"], ["Thanks for today", "See you"])
        comment = session.execute(text(
            "INSERT INTO comments (author_id, post_id, content) VALUES (:a, CAST(:p AS uuid), 'So true!') "
            "RETURNING id::text"), {"a": u["carol"], "p": graph.post_ids[0]}).scalar()
        reactions = [session.execute(text(
            "INSERT INTO comment_reactions (user_id, comment_id, type) VALUES (:u, CAST(:c AS uuid), :t) "
            "RETURNING id::text"), {"u": u[name], "c": comment, "t": kind}).scalar()
            for name, kind in (("alice", "love"), ("dave", "laugh"))]
        group = session.execute(text(
            "INSERT INTO groups (name, admin_id) VALUES ('Morning walkers', :a) RETURNING id::text"),
            {"a": u["carol"]}).scalar()
        session.execute(text("INSERT INTO group_members (group_id, user_id, role) "
                             "SELECT CAST(:g AS uuid), id, CASE WHEN id = :a THEN 'admin' ELSE 'member' END "
                             "FROM users WHERE id = ANY(CAST(:ids AS integer[]))"),
                        {"g": group, "a": u["carol"], "ids": [u["carol"], u["erin"], u["frank"]]})
    graph.notes["graph"] = {"group": group, "carol_conversation": read_one}
    sent = [sync_friendship.delay(u["erin"], u["alice"]), sync_friendship.delay(u["frank"], u["alice"])]
    sent += [record.delay("message", message) for message in from_bob]
    sent += [record.delay("comment_reaction", reaction) for reaction in reactions]
    result = chain(*(record.si("message", message) for message in from_carol),
                   mark_conversation_read.si(read_one, u["alice"]), reconcile_dirty.si()).apply_async()
    while result is not None:
        sent.append(result)
        result = result.parent
    return sent


def summarize(graph: DemoGraph) -> str:
    u, notes = graph.user_ids, graph.notes.get("graph", {})
    with session_scope() as session:
        friends, unread = session.execute(text(
            "SELECT friends_count, unread_messages_count FROM users WHERE id = :a"), {"a": u["alice"]}).one()
        batch = session.execute(text(
            "SELECT message FROM notifications WHERE user_id = :a AND type = 'message' AND parent_id IS NULL "
            "ORDER BY last_updated_at DESC LIMIT 1"), {"a": u["alice"]}).scalar()
        members = session.execute(text("SELECT member_count FROM groups WHERE id = CAST(:g AS uuid)"),
                                  {"g": notes.get("group")}).scalar()
    return (f"alice: {friends} friend(s), {unread} unread message(s), latest message notification "
            f"{batch!r}; group size {members}")
