"""Mention validation and notification against real PostgreSQL."""
from datetime import datetime, timedelta, timezone

from sqlalchemy import select

from db.models import Notification, Post
from tasks.mentions.service import load_source, notify_mentions
from tests.notifications.builders import Graph


def _mentions(session, user_id):
    session.expire_all()
    return list(session.scalars(select(Notification).where(
        Notification.user_id == user_id, Notification.type == "mention", Notification.is_batch.is_(False))))


def test_validation_is_case_insensitive_and_reports_invalid(db_session):
    graph = Graph(db_session)
    author, bob, carol = graph.user("m_alice"), graph.user("m_Bob"), graph.user("m_carol")
    post = graph.post(author, "thanks @M_BOB, @m_carol and @m_nobody (and me, @m_alice)")
    result = notify_mentions(db_session, load_source(db_session, "post", post))
    assert result.valid_usernames == ["m_Bob", "m_carol", "m_alice"]
    assert result.invalid_usernames == ["m_nobody"]
    assert result.notified == ["m_Bob", "m_carol"]           # never the author
    [note] = _mentions(db_session, bob)
    assert note.batch_key == f"mention:post:{post}" and note.data["post_id"] == post
    assert note.message == "m_alice mentioned you in a post"
    assert len(_mentions(db_session, carol)) == 1
    assert _mentions(db_session, author) == []


def test_an_edit_notifies_only_new_mentions_and_a_rerun_no_one(db_session):
    graph = Graph(db_session)
    author, bob, carol = graph.user("e_alice"), graph.user("e_bob"), graph.user("e_carol")
    post_id = graph.post(author, "hello @e_bob")
    first = notify_mentions(db_session, load_source(db_session, "post", post_id))
    assert first.notified == ["e_bob"]
    post = db_session.get(Post, post_id)
    post.content = "hello @e_bob and @e_carol"
    post.updated_at = datetime.now(timezone.utc) + timedelta(minutes=5)
    db_session.flush()
    edited = notify_mentions(db_session, load_source(db_session, "post", post_id))
    assert (edited.notified, edited.already_notified) == (["e_carol"], ["e_bob"])
    rerun = notify_mentions(db_session, load_source(db_session, "post", post_id))
    assert (rerun.notified, rerun.already_notified) == ([], ["e_bob", "e_carol"])
    assert len(_mentions(db_session, bob)) == 1 and len(_mentions(db_session, carol)) == 1


def test_more_than_ten_mentioned_users_notifies_none(db_session):
    graph = Graph(db_session)
    author = graph.user("c_author")
    names = [f"c_user{i}" for i in range(11)]
    ids = [graph.user(n) for n in names]
    post = graph.post(author, " ".join(f"@{n}" for n in names) + " @c_author")
    result = notify_mentions(db_session, load_source(db_session, "post", post))
    assert result.notified == [] and result.skipped_reason.startswith("too_many_mentions")
    assert len(result.valid_usernames) == 12
    assert all(_mentions(db_session, i) == [] for i in ids)


def test_ten_mentioned_users_plus_the_author_are_all_notified(db_session):
    graph = Graph(db_session)
    author = graph.user("t_author")
    names = [f"t_user{i}" for i in range(10)]
    [graph.user(n) for n in names]
    post = graph.post(author, "@t_author " + " ".join(f"@{n}" for n in names))
    assert notify_mentions(db_session, load_source(db_session, "post", post)).notified == names


def test_comment_mentions_batch_with_the_post_mentions(db_session):
    graph = Graph(db_session)
    author, bob, carol = graph.user("k_alice"), graph.user("k_bob"), graph.user("k_carol")
    post = graph.post(author, "hi @k_bob")
    comment = graph.comment(carol, post, "yes @k_bob `not @k_alice`")
    notify_mentions(db_session, load_source(db_session, "post", post))
    result = notify_mentions(db_session, load_source(db_session, "comment", comment))
    assert result.valid_usernames == ["k_bob"]
    children = _mentions(db_session, bob)
    assert len(children) == 2 and len({c.parent_id for c in children}) == 1
    assert {c.data.get("comment_id") for c in children} == {None, comment}
    parent = db_session.get(Notification, children[0].parent_id)
    assert parent.batch_count == 2 and parent.message == "You were mentioned 2 times in a post"


def test_an_edit_that_removes_a_mention_then_restores_it_notifies_once(db_session):
    graph = Graph(db_session)
    author, bob, carol = graph.user("r_alice"), graph.user("r_bob"), graph.user("r_carol")
    post_id = graph.post(author, "hello @r_bob and @r_carol")
    post = db_session.get(Post, post_id)

    def edit(content: str, minutes: int):
        post.content = content
        post.updated_at = datetime.now(timezone.utc) + timedelta(minutes=minutes)
        db_session.flush()
        found = notify_mentions(db_session, load_source(db_session, "post", post_id))
        return found.valid_usernames, found.notified, found.already_notified

    first = notify_mentions(db_session, load_source(db_session, "post", post_id))
    assert first.notified == ["r_bob", "r_carol"]
    assert edit("hello @r_bob", 5) == (["r_bob"], [], ["r_bob"])
    [carols] = _mentions(db_session, carol)              # removing a mention retracts nothing
    assert edit("hello @r_bob and again @r_carol", 10) == (["r_bob", "r_carol"], [], ["r_bob", "r_carol"])
    assert [n.id for n in _mentions(db_session, carol)] == [carols.id]
    assert len(_mentions(db_session, bob)) == 1
