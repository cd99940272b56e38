"""The hooks in other families: what each write sends to cache.invalidate, only after its
commit and only with a cache; then the effect end to end through the real worker."""
from __future__ import annotations

import pytest
from sqlalchemy import text

from tests.cache.conftest import add_feed, add_friendship, add_notification, add_post, add_users, utcnow
from tests.waiting import wait_for


class Sent:
    """Stands in for the after-commit send of workers/reliability/enqueue.py: keeps the
    cache.invalidate calls a committed transaction would have sent."""

    def __init__(self):
        self.calls: list[tuple[str, list]] = []

    def __call__(self, signatures):
        for signature in signatures:
            assert signature.task == "cache.invalidate", signature.task
            self.calls.append(tuple(signature.args))

    def take(self) -> list[tuple[str, list]]:
        calls, self.calls = self.calls, []
        return calls


@pytest.fixture
def sent(monkeypatch, clean_db):
    from workers.reliability import enqueue

    spy = Sent()
    monkeypatch.setattr(enqueue, "_send", spy)
    return spy


def _like(conn, user_id: int, post_id: str) -> str:
    return conn.execute(text("INSERT INTO likes (user_id, post_id) VALUES (:u, CAST(:p AS uuid)) RETURNING id::text"),
                        {"u": user_id, "p": post_id}).scalar_one()


def test_feed_rebuilds_send_feed_rebuilt_for_their_users(sent, clean_db):
    from tasks.feed.tasks import refresh_user, score_users

    with clean_db.begin() as conn:
        u = add_users(conn, "a", "b")
    score_users([u["b"], u["a"]])
    assert sent.take() == [("feed_rebuilt", sorted([u["a"], u["b"]]))]
    refresh_user(u["a"])
    assert sent.take() == [("feed_rebuilt", [u["a"]])]
    assert refresh_user(u["b"] + 1000) == {"status": "gone"}
    assert sent.take() == []
    # Ids no user can have do not fail the rebuild; the real ones are still invalidated.
    score_users([0, u["a"], -4])
    assert sent.take() == [("feed_rebuilt", [u["a"]])]


def test_notification_writes_send_notifications_changed_for_their_recipients(sent, clean_db):
    from tasks.notifications.tasks import mark_read, record, record_many, retract

    with clean_db.begin() as conn:
        u = add_users(conn, "author", "fan", "other")
        post = add_post(conn, u["author"])
        own = add_post(conn, u["fan"])
        like = _like(conn, u["fan"], post)
        self_like = _like(conn, u["fan"], own)
        bulk = [_like(conn, u["other"], post), _like(conn, u["author"], own)]
    assert record("like", like)["status"] == "created"
    assert sent.take() == [("notifications_changed", [u["author"]])]
    assert record("like", like)["status"] == "duplicate"       # nothing changed: nothing sent
    assert record("like", self_like)["status"] == "self"
    assert sent.take() == []

    record_many("like", bulk)
    assert sent.take() == [("notifications_changed", sorted([u["author"], u["fan"]]))]

    with clean_db.begin() as conn:
        conn.execute(text("DELETE FROM likes WHERE id = CAST(:l AS uuid)"), {"l": like})
    assert retract("like", u["fan"], post_id=post)["status"] == "retracted"
    assert sent.take() == [("notifications_changed", [u["author"]])]
    assert retract("like", u["fan"], post_id=post)["status"] == "nothing"
    assert sent.take() == []

    assert mark_read(u["author"], all=True)["marked"] == 1
    assert sent.take() == [("notifications_changed", [u["author"]])]
    assert mark_read(u["author"], all=True)["marked"] == 0
    assert sent.take() == []


def test_a_friendship_sync_sends_friendship_changed_on_accept_unfriend_and_block(sent, clean_db, monkeypatch):
    import tasks.graph.tasks as graph_tasks

    rebuilt = []
    monkeypatch.setattr(graph_tasks, "refresh_user", type("Stub", (), {"delay": staticmethod(rebuilt.append)}))
    with clean_db.begin() as conn:
        u = add_users(conn, "asker", "asked")
        friendship = add_friendship(conn, u["asker"], u["asked"], "pending")
    pair = sorted(u.values())

    assert graph_tasks.sync_friendship(u["asker"], u["asked"])["state"] == "pending"
    assert sent.take() == [("notifications_changed", pair)]    # the request notifies; friends lists unchanged
    with clean_db.begin() as conn:
        conn.execute(text("UPDATE friendships SET status = 'accepted', updated_at = now() "
                          "WHERE id = CAST(:f AS uuid)"), {"f": friendship})
    graph_tasks.sync_friendship(u["asked"], u["asker"])
    assert sent.take() == [("friendship_changed", pair), ("notifications_changed", pair)]
    with clean_db.begin() as conn:
        conn.execute(text("UPDATE friendships SET status = 'blocked', user1_id = :a, user2_id = :b"),
                     {"a": u["asked"], "b": u["asker"]})
    graph_tasks.sync_friendship(u["asker"], u["asked"])
    assert sent.take() == [("friendship_changed", pair), ("notifications_changed", pair)]
    assert sorted(rebuilt) == sorted(pair * 2)


def test_mark_conversation_read_refreshes_the_readers_unread_count(sent, clean_db):
    from tasks.graph.tasks import mark_conversation_read
    from tasks.notifications.tasks import record
    from tests.graph.conftest import add_conversation, add_message

    with clean_db.begin() as conn:
        u = add_users(conn, "alice", "bob")
        chat = add_conversation(conn, u["alice"], u["bob"])
        message = add_message(conn, chat, u["bob"], u["alice"])
    record("message", message)
    sent.take()
    assert mark_conversation_read(chat, u["alice"])["notifications_marked"] == 1
    assert sent.take() == [("notifications_changed", [u["alice"]])]


def test_without_a_cache_no_hook_sends_anything(sent, clean_db, monkeypatch):
    from tasks.feed.tasks import score_users
    from tasks.notifications.tasks import mark_read, record

    monkeypatch.setenv("CACHE_URL", "")
    with clean_db.begin() as conn:
        u = add_users(conn, "author", "fan")
        like = _like(conn, u["fan"], add_post(conn, u["author"]))
    score_users(list(u.values()))
    assert record("like", like)["status"] == "created"
    assert mark_read(u["author"], all=True)["marked"] == 1
    assert sent.take() == []


def test_the_hook_sends_after_the_commit_and_never_after_a_rollback(sent):
    from db.session import session_scope
    from tasks.cache.hooks import invalidate_on_commit

    with pytest.raises(RuntimeError):
        with session_scope() as session:
            session.execute(text("SELECT 1"))
            invalidate_on_commit(session, "user_updated", [1])
            raise RuntimeError("the writer failed after queuing its invalidation")
    assert sent.take() == []
    with session_scope() as session:
        session.execute(text("SELECT 1"))
        invalidate_on_commit(session, "user_updated", [2, 1, 2])
        assert sent.take() == []      # not before the commit
    assert sent.take() == [("user_updated", [1, 2])]


# --- End to end: the hooks' messages through the broker to the real worker -------------------

def _fill(wanted):
    from db.session import session_scope
    from tasks.cache.client import cache_redis
    from tasks.cache.fill import fill

    with session_scope() as session:
        return fill(session, cache_redis(), wanted, utcnow())


@pytest.mark.integration
def test_a_feed_rebuild_through_the_worker_drops_the_users_pages(clean_db, cache, celery_worker):
    from tasks.feed.tasks import refresh_user

    with clean_db.begin() as conn:
        u = add_users(conn, "reader", "author")
        add_feed(conn, u["reader"], [add_post(conn, u["author"]) for _ in range(25)])
    assert _fill({"feed": [(u["reader"], 1), (u["reader"], 2)], "user": [u["reader"]]}).written == 3
    refresh_user.delay(u["reader"]).get(timeout=60)
    wait_for(lambda: not cache.exists(f"feed:{u['reader']}:page:1", f"feed:{u['reader']}:page:2"), 30,
             what="the feed pages to be dropped")
    assert cache.exists(f"user:{u['reader']}") and not cache.exists(f"feed:{u['reader']}:pages")


@pytest.mark.integration
def test_a_recorded_notification_through_the_worker_refreshes_the_unread_count(clean_db, cache, celery_worker):
    from tasks.notifications.tasks import record

    with clean_db.begin() as conn:
        u = add_users(conn, "author", "fan")
        add_notification(conn, u["author"])
        like = _like(conn, u["fan"], add_post(conn, u["author"]))
    _fill({"unread": [u["author"]]})
    assert cache.get(f"notification:{u['author']}:unread") == b"1"
    assert record.delay("like", like).get(timeout=60)["status"] == "created"
    wait_for(lambda: cache.get(f"notification:{u['author']}:unread") == b"2", 30, what="the unread count to be 2")


@pytest.mark.integration
def test_an_accepted_friendship_through_the_worker_drops_both_lists_and_feeds(clean_db, cache, celery_worker):
    from tasks.graph.tasks import sync_friendship

    with clean_db.begin() as conn:
        u = add_users(conn, "a", "b", "c")
        post = add_post(conn, u["c"])
        for user_id in (u["a"], u["b"]):
            add_feed(conn, user_id, [post])
        add_friendship(conn, u["a"], u["b"], "accepted")
    a, b = u["a"], u["b"]
    keys = [f"user:{a}:friends", f"user:{b}:friends", f"feed:{a}:page:1", f"feed:{b}:page:1"]
    _fill({"friends": [a, b], "feed": [(a, 1), (b, 1)], "user": [a, b]})
    assert cache.exists(*keys) == 4
    assert sync_friendship.delay(a, b).get(timeout=60)["state"] == "accepted"
    wait_for(lambda: cache.exists(*keys) == 0, 30, what="both friends lists and feeds to be dropped")
    assert cache.exists(f"user:{a}", f"user:{b}") == 2
    # The feed rebuilds the sync sent drop the pages again after their own commits: wait for
    # them, so nothing of this test runs on after its data is gone.
    wait_for(lambda: all(int(cache.get(f"v:feed:{x}") or 0) >= 2 for x in (a, b)), 60, what="both feed rebuilds")
