"""Friend requests, accepts, withdrawals, unfriends and blocks, through the real broker to the
real in-process worker: exactly one notification per request row and per accept, whatever
is delivered twice; retractions when the row goes; nothing left between a blocked pair."""
from __future__ import annotations

import uuid
from collections import Counter

import pytest
from celery.result import AsyncResult, ResultSet
from sqlalchemy import text

from tasks.engagement import runs
from tests.graph.conftest import (add_comment, add_conversation, add_friendship, add_message, add_post,
                                  add_users, children, counter, from_actor, notifications, username)
from workers.reliability.deliveries import deliveries

pytestmark = pytest.mark.integration

PAIR_KINDS = ("friend_request", "friend_accept")


def pair_notifications(conn, users: dict[str, int]) -> Counter:
    """(recipient name, type, actor name) of every friend notification among ``users``."""
    names = {v: k for k, v in users.items()}
    rows = conn.execute(text(
        "SELECT user_id, type, (data ->> 'actor_id')::int FROM notifications "
        "WHERE type = ANY(CAST(:k AS text[])) AND user_id = ANY(CAST(:u AS integer[])) AND NOT is_batch"),
        {"k": list(PAIR_KINDS), "u": list(users.values())}).all()
    return Counter((names[user], kind, names.get(actor, actor)) for user, kind, actor in rows)


def join(results, timeout: float = 30) -> list[dict]:
    return ResultSet(results).join_native(timeout=timeout, propagate=True)


def test_a_request_and_its_accept_notify_once_each_whatever_is_delivered_twice(clean_db, celery_worker, refreshes):
    from tasks.graph.tasks import sync_friendship
    from tasks.notifications.tasks import record

    with clean_db.begin() as conn:
        users = add_users(conn, "alice", "bob")
        alice, bob = users["alice"], users["bob"]
        friendship = add_friendship(conn, alice, bob, "pending")   # alice asked bob
        alice_name = username(conn, alice)

    # Two syncs (one per end, as two web requests might send) and two direct records, all at once.
    outcomes = join([sync_friendship.delay(alice, bob), sync_friendship.delay(bob, alice),
                     record.delay("friend_request", friendship), record.delay("friend_request", friendship)])
    assert [o["state"] for o in outcomes[:2]] == ["pending", "pending"]
    assert Counter([o["notification"] for o in outcomes[:2]] + [o["status"] for o in outcomes[2:]]) == {
        "created": 1, "duplicate": 3}
    assert outcomes[0]["feeds_refreshed"] == outcomes[1]["feeds_refreshed"] == []
    assert refreshes.users() == []   # a pending request changes nobody's feed
    with clean_db.connect() as conn:
        assert pair_notifications(conn, users) == {("bob", "friend_request", "alice"): 1}
        [single] = notifications(conn, bob, "friend_request")
        assert single.parent_id is None and not single.is_batch and not single.read
        assert single.dedupe_key == f"friend_request:{friendship}"
        assert single.batch_key == f"friend_request:user:{bob}"
        assert (single.title, single.message) == ("Friend Request", f"{alice_name} sent you a friend request")

    # A redelivery: the same task id delivered a second time after the first finished.
    task_id = str(uuid.uuid4())
    assert sync_friendship.apply_async((bob, alice), task_id=task_id).get(timeout=30)["notification"] == "duplicate"
    AsyncResult(task_id, app=celery_worker.app).forget()   # so the second get waits for the second run
    again = sync_friendship.apply_async((bob, alice), task_id=task_id).get(timeout=30)
    assert again["notification"] == "duplicate" and deliveries(task_id) == 2
    with clean_db.connect() as conn:
        assert pair_notifications(conn, users) == {("bob", "friend_request", "alice"): 1}

    # bob accepts: one friend_accept for alice, from bob, however many times it is delivered.
    with clean_db.begin() as conn:
        conn.execute(text("UPDATE friendships SET status = 'accepted', updated_at = now() WHERE id = CAST(:f AS uuid)"),
                     {"f": friendship})
        bob_name = username(conn, bob)
    outcomes = join([sync_friendship.delay(bob, alice), sync_friendship.delay(alice, bob),
                     record.delay("friend_accept", friendship), record.delay("friend_accept", friendship)])
    assert [o["state"] for o in outcomes[:2]] == ["accepted", "accepted"]
    assert Counter([o["notification"] for o in outcomes[:2]] + [o["status"] for o in outcomes[2:]]) == {
        "created": 1, "duplicate": 3}
    assert outcomes[0]["feeds_refreshed"] == sorted([alice, bob])
    assert refreshes.users() == sorted([alice, alice, bob, bob])   # both feeds, by each of the two syncs
    assert {r["users"] for r in refreshes.join()} == {1}
    with clean_db.connect() as conn:
        assert pair_notifications(conn, users) == {("bob", "friend_request", "alice"): 1,
                                                   ("alice", "friend_accept", "bob"): 1}
        [accept] = notifications(conn, alice, "friend_accept")
        assert accept.dedupe_key == f"friend_accept:{friendship}"
        assert accept.message == f"{bob_name} accepted your friend request"
    runs.run_dirty()
    with clean_db.connect() as conn:
        assert [counter(conn, "users", "friends_count", u) for u in (alice, bob)] == [1, 1]

    # bob unfriends (the row is deleted): the sync retracts the accept (and the old request).
    refreshes.clear()
    with clean_db.begin() as conn:
        conn.execute(text("DELETE FROM friendships WHERE id = CAST(:f AS uuid)"), {"f": friendship})
    unfriended = sync_friendship.delay(bob, alice).get(timeout=30)
    assert unfriended == {"status": "ok", "state": "none", "notification": None, "retracted": 2,
                          "feeds_refreshed": sorted([alice, bob])}
    assert refreshes.users() == sorted([alice, bob])
    with clean_db.connect() as conn:
        assert pair_notifications(conn, users) == Counter()
    # A late or repeated sync, and a late record of the accept, change nothing.
    assert sync_friendship.delay(alice, bob).get(timeout=30)["retracted"] == 0
    assert record.delay("friend_accept", friendship).get(timeout=30) == {"status": "gone"}
    runs.run_dirty()
    with clean_db.connect() as conn:
        assert pair_notifications(conn, users) == Counter()
        assert [counter(conn, "users", "friends_count", u) for u in (alice, bob)] == [0, 0]


def test_a_withdrawn_request_is_retracted_by_the_sync_and_by_notifications_retract(clean_db, celery_worker,
                                                                                   refreshes):
    from tasks.graph.tasks import sync_friendship
    from tasks.notifications.tasks import record, retract

    with clean_db.begin() as conn:
        users = add_users(conn, "carol", "dave", "erin")
        carol, dave, erin = users["carol"], users["dave"], users["erin"]
        first = add_friendship(conn, carol, dave, "pending")
        other = add_friendship(conn, erin, dave, "pending")   # another request to dave, left alone
    assert sorted(o["notification"] for o in join([sync_friendship.delay(carol, dave),
                                                   sync_friendship.delay(erin, dave)])) == ["converted", "created"]
    with clean_db.connect() as conn:
        assert pair_notifications(conn, users) == {("dave", "friend_request", "carol"): 1,
                                                   ("dave", "friend_request", "erin"): 1}
        [batch] = notifications(conn, dave, "friend_request", top_level=True)
        assert batch.is_batch and batch.batch_count == 2 and batch.message == "2 new friend requests"

    # carol withdraws: the row goes, and the sync takes her request back out of the batch.
    with clean_db.begin() as conn:
        conn.execute(text("DELETE FROM friendships WHERE id = CAST(:f AS uuid)"), {"f": first})
    withdrawn = sync_friendship.delay(dave, carol).get(timeout=30)
    assert (withdrawn["state"], withdrawn["retracted"]) == ("none", 1)
    with clean_db.connect() as conn:
        assert pair_notifications(conn, users) == {("dave", "friend_request", "erin"): 1}
        [batch] = notifications(conn, dave, "friend_request", top_level=True)
        assert batch.batch_count == 1 == len(children(conn, batch.id))
        assert batch.message == "1 new friend requests"
    assert record.delay("friend_request", first).get(timeout=30) == {"status": "gone"}

    # The web tier may call notifications.retract instead: carol asks again, then withdraws.
    with clean_db.begin() as conn:
        second = add_friendship(conn, carol, dave, "pending")
    assert record.delay("friend_request", second).get(timeout=30)["status"] == "batched"
    # While the request stands, a retract (a stale one) keeps it.
    assert retract.delay("friend_request", carol, user_id=dave).get(timeout=30) == {"status": "still_present"}
    with clean_db.begin() as conn:
        conn.execute(text("DELETE FROM friendships WHERE id = CAST(:f AS uuid)"), {"f": second})
    outcome = retract.delay("friend_request", carol, user_id=dave).get(timeout=30)
    assert (outcome["status"], outcome["removed"]) == ("retracted", 1)
    with clean_db.connect() as conn:
        assert pair_notifications(conn, users) == {("dave", "friend_request", "erin"): 1}
    assert refreshes.users() == [carol, dave]   # only the withdrawal's sync (state none) rebuilt feeds
    with clean_db.connect() as conn:
        assert conn.execute(text("SELECT status FROM friendships WHERE id = CAST(:f AS uuid)"),
                            {"f": other}).scalar_one() == "pending"


def test_a_block_removes_every_notification_between_the_pair_and_keeps_the_rest(clean_db, celery_worker,
                                                                                 refreshes):
    from tasks.graph.tasks import sync_friendship
    from tasks.notifications.tasks import record

    with clean_db.begin() as conn:
        users = add_users(conn, "erin", "frank", "grace")
        erin, frank, grace = users["erin"], users["frank"], users["grace"]
        erin_post, frank_post = add_post(conn, erin), add_post(conn, frank)
        likes = [conn.execute(text("INSERT INTO likes (user_id, post_id) VALUES (:u, CAST(:p AS uuid)) "
                                   "RETURNING id::text"), {"u": u, "p": erin_post}).scalar_one()
                 for u in (frank, grace)]
        erin_comment = add_comment(conn, erin, frank_post, "nice")
        frank_comment = add_comment(conn, frank, erin_post, "hello")
        reaction = conn.execute(text(
            "INSERT INTO comment_reactions (user_id, comment_id, type) VALUES (:u, CAST(:c AS uuid), 'love') "
            "RETURNING id::text"), {"u": frank, "c": add_comment(conn, erin, erin_post, "mine")}).scalar_one()
        conversation = add_conversation(conn, erin, frank)
        message = add_message(conn, conversation, frank, erin)
        request = add_friendship(conn, frank, erin, "pending")
    recorded = join([record.delay("like", likes[0]), record.delay("like", likes[1]),
                     record.delay("comment", erin_comment), record.delay("comment", frank_comment),
                     record.delay("comment_reaction", reaction), record.delay("message", message),
                     sync_friendship.delay(frank, erin)])
    assert "gone" not in [o.get("status") for o in recorded[:-1]]
    with clean_db.connect() as conn:
        assert [t for t, _ in from_actor(conn, erin, frank)] == [
            "comment", "comment_reaction", "friend_request", "like", "message"]
        assert [t for t, _ in from_actor(conn, frank, erin)] == ["comment"]
        [likes_batch] = notifications(conn, erin, "post_interaction")
        assert likes_batch.batch_count == 2

    # erin blocks frank: the pair's one row becomes (erin, frank, blocked).
    with clean_db.begin() as conn:
        conn.execute(text("UPDATE friendships SET user1_id = :e, user2_id = :f, status = 'blocked', "
                          "updated_at = now() WHERE id = CAST(:r AS uuid)"), {"e": erin, "f": frank, "r": request})
    blocked = sync_friendship.delay(erin, frank).get(timeout=30)
    assert (blocked["state"], blocked["retracted"], blocked["feeds_refreshed"]) == ("blocked", 6, sorted([erin, frank]))
    assert refreshes.users() == sorted([erin, frank])
    with clean_db.connect() as conn:
        assert from_actor(conn, erin, frank) == [] and from_actor(conn, frank, erin) == []
        # grace's like stays, in the batch recounted from its one remaining child.
        [likes_batch] = notifications(conn, erin, "post_interaction")
        [child] = children(conn, likes_batch.id)
        assert likes_batch.batch_count == 1 and child.data["actor_id"] == grace
        assert likes_batch.message == "1 people liked your post"
        # Emptied parents are gone, not left at zero.
        assert conn.execute(text("SELECT count(*) FROM notifications p WHERE p.is_batch AND NOT EXISTS "
                                 "(SELECT 1 FROM notifications c WHERE c.parent_id = p.id)")).scalar_one() == 0
    # Late deliveries of anything between them notify nobody while the block stands.
    late = join([record.delay("like", likes[0]), record.delay("message", message),
                 record.delay("comment_reaction", reaction), record.delay("friend_request", request),
                 sync_friendship.delay(frank, erin)])
    assert [o["status"] for o in late[:-1]] == ["gone"] * 4
    assert late[-1]["retracted"] == 0
    with clean_db.connect() as conn:
        assert from_actor(conn, erin, frank) == [] and from_actor(conn, frank, erin) == []


def test_accept_and_block_rebuild_both_feeds_through_the_worker(clean_db, celery_worker, refreshes):
    """The feed side of a sync: after an accept, the friends-only post of each reaches the
    other's feed; after a block, neither sees anything of the other."""
    from tasks.graph.tasks import sync_friendship

    with clean_db.begin() as conn:
        users = add_users(conn, "hana", "ivan")
        hana, ivan = users["hana"], users["ivan"]
        hours_ago = conn.execute(text("SELECT now() - interval '1 hour'")).scalar_one()
        hana_friends, hana_public = (add_post(conn, hana, privacy=p, at=hours_ago) for p in ("friends", "public"))
        ivan_friends = add_post(conn, ivan, privacy="friends", at=hours_ago)
        friendship = add_friendship(conn, ivan, hana, "accepted")

    def feed(user_id):
        with clean_db.connect() as conn:
            return set(conn.execute(text("SELECT post_id::text FROM feed_items WHERE user_id = :u"),
                                    {"u": user_id}).scalars())

    sync_friendship.delay(ivan, hana).get(timeout=30)
    refreshes.join()
    assert feed(ivan) == {hana_friends, hana_public}
    assert feed(hana) == {ivan_friends}

    with clean_db.begin() as conn:
        conn.execute(text("UPDATE friendships SET status = 'blocked' WHERE id = CAST(:f AS uuid)"), {"f": friendship})
    sync_friendship.delay(hana, ivan).get(timeout=30)
    refreshes.join()
    assert feed(ivan) == set() and feed(hana) == set()
    assert refreshes.users() == sorted([hana, hana, ivan, ivan])
