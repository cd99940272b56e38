"""The six documented keys: names, TTLs and JSON values, filled from real PostgreSQL into real Redis."""
from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import text

from tests.cache.conftest import (
    add_comment, add_feed, add_follow, add_friendship, add_notification, add_post, add_session, add_users, utcnow,
)

# The contract of issue 15 (seed 004's key list), written out by hand: pattern -> TTL.
DOCUMENTED_TTLS = {
    "user:{id}": 3600,
    "user:{id}:friends": 3600,
    "post:{id}": 1800,
    "feed:{id}:page:{page}": 900,
    "session:{id}": 86400,
    "notification:{id}:unread": 300,
}


def test_the_key_table_is_the_documented_contract():
    from tasks.cache.keys import KEYS, VERSION_TTL_SECONDS, keys_table

    assert {spec.pattern: spec.ttl_seconds for spec in KEYS.values()} == DOCUMENTED_TTLS
    assert VERSION_TTL_SECONDS > max(DOCUMENTED_TTLS.values())
    table = keys_table()
    for pattern in DOCUMENTED_TTLS:
        assert f"`{pattern}`" in table


@pytest.fixture
def world(db_session):
    """One of each thing a key is made of."""
    conn = db_session
    u = add_users(conn, "alice", "bob", "carol", "gone")
    post = add_post(conn, u["alice"])
    add_comment(conn, u["bob"], post, "nice")
    add_friendship(conn, u["alice"], u["bob"], "accepted")
    add_follow(conn, u["carol"], u["alice"])
    add_feed(conn, u["carol"], [post])
    session_id = add_session(conn, u["alice"])
    add_notification(conn, u["alice"])
    return {"u": u, "post": post, "session": session_id}


def test_every_key_is_written_with_its_documented_ttl(db_session, cache, world):
    from tasks.cache.fill import fill

    u = world["u"]
    result = fill(db_session, cache, {
        "user": [u["alice"]], "friends": [u["alice"]], "post": [world["post"]],
        "feed": [(u["carol"], 1), (u["carol"], 2)], "session": [world["session"]], "unread": [u["alice"]]}, utcnow())
    assert (result.requested, result.written, result.refused, result.absent) == (7, 7, 0, 0)

    expected = {
        f"user:{u['alice']}": DOCUMENTED_TTLS["user:{id}"],
        f"user:{u['alice']}:friends": DOCUMENTED_TTLS["user:{id}:friends"],
        f"post:{world['post']}": DOCUMENTED_TTLS["post:{id}"],
        f"feed:{u['carol']}:page:1": DOCUMENTED_TTLS["feed:{id}:page:{page}"],
        f"feed:{u['carol']}:page:2": DOCUMENTED_TTLS["feed:{id}:page:{page}"],
        f"session:{world['session']}": DOCUMENTED_TTLS["session:{id}"],
        f"notification:{u['alice']}:unread": DOCUMENTED_TTLS["notification:{id}:unread"],
    }
    for key, ttl in expected.items():
        assert cache.type(key) == b"string", key
        assert ttl - 5 <= cache.ttl(key) <= ttl, (key, cache.ttl(key))
    # The page set lives as long as the newest page it lists, and names exactly the pages written.
    pages = f"feed:{u['carol']}:pages"
    assert cache.smembers(pages) == {b"1", b"2"}
    assert DOCUMENTED_TTLS["feed:{id}:page:{page}"] - 5 <= cache.ttl(pages) <= DOCUMENTED_TTLS["feed:{id}:page:{page}"]


def test_the_profile_holds_public_fields_only_and_a_deleted_user_is_not_cached(db_session, cache, world):
    from tasks.cache.store import get_or_fill

    u = world["u"]
    db_session.execute(text("UPDATE users SET display_name = 'Alice A.', bio = 'hi', city = 'Lyon', "
                            "location = '{\"lat\": 45.7}', profile_preferences = '{\"theme\": \"dark\"}' "
                            "WHERE id = :u"), {"u": u["alice"]})
    db_session.execute(text("UPDATE users SET deleted_at = now() WHERE id = :u"), {"u": u["gone"]})
    profile = get_or_fill(db_session, "user", u["alice"], client=cache)
    row = db_session.execute(text("SELECT username, email FROM users WHERE id = :u"), {"u": u["alice"]}).one()
    assert (profile["id"], profile["username"], profile["display_name"], profile["bio"], profile["city"]) == (
        u["alice"], row.username, "Alice A.", "hi", "Lyon")
    raw = cache.get(f"user:{u['alice']}").decode()
    for secret in (row.email, "hashed_password", "lat", "theme"):
        assert secret not in raw
    assert profile["created_at"].endswith("Z")
    assert get_or_fill(db_session, "user", u["gone"], client=cache) is None
    assert not cache.exists(f"user:{u['gone']}")


def test_the_friends_list_is_accepted_friendships_either_way(db_session, cache):
    from tasks.cache.store import get_or_fill

    u = add_users(db_session, "me", "asked_me", "i_asked", "pending", "blocked", "deleted")
    add_friendship(db_session, u["asked_me"], u["me"], "accepted")
    add_friendship(db_session, u["me"], u["i_asked"], "accepted")
    add_friendship(db_session, u["me"], u["pending"], "pending")
    add_friendship(db_session, u["blocked"], u["me"], "blocked")
    add_friendship(db_session, u["me"], u["deleted"], "accepted")
    db_session.execute(text("UPDATE users SET deleted_at = now() WHERE id = :u"), {"u": u["deleted"]})

    assert get_or_fill(db_session, "friends", u["me"], client=cache) == {
        "user_id": u["me"], "friend_ids": sorted([u["asked_me"], u["i_asked"]])}
    assert get_or_fill(db_session, "friends", u["pending"], client=cache) == {"user_id": u["pending"], "friend_ids": []}


def test_a_post_holds_its_latest_visible_comments_and_an_unreadable_post_is_not_cached(db_session, cache,
                                                                                      monkeypatch):
    from tasks.cache import values
    from tasks.cache.store import get_or_fill

    monkeypatch.setattr(values, "LATEST_COMMENTS", 3)
    u = add_users(db_session, "author", "reader")
    post = add_post(db_session, u["author"], content="grateful")
    t0 = utcnow() - timedelta(hours=1)
    comments = []
    for minute in range(5):
        comments.append(add_comment(db_session, u["reader"], post, f"c{minute}"))
        db_session.execute(text("UPDATE comments SET created_at = :at WHERE id = CAST(:c AS uuid)"),
                           {"at": t0 + timedelta(minutes=minute), "c": comments[-1]})
    db_session.execute(text("UPDATE comments SET deleted_at = now() WHERE id = CAST(:c AS uuid)"), {"c": comments[4]})
    db_session.execute(text("UPDATE comments SET moderation_hidden = true WHERE id = CAST(:c AS uuid)"),
                       {"c": comments[3]})

    cached = get_or_fill(db_session, "post", post, client=cache)
    assert (cached["id"], cached["author_id"], cached["content"]) == (post, u["author"], "grateful")
    # Newest first, the deleted and the hidden left out, at most LATEST_COMMENTS.
    assert [c["id"] for c in cached["comments"]] == [comments[2], comments[1], comments[0]]
    assert {c["author_id"] for c in cached["comments"]} == {u["reader"]}

    for change in ("is_public = false", "deleted_at = now()", "moderation_hidden = true"):
        hidden = add_post(db_session, u["author"])
        db_session.execute(text(f"UPDATE posts SET {change} WHERE id = CAST(:p AS uuid)"), {"p": hidden})
        assert get_or_fill(db_session, "post", hidden, client=cache) is None, change
        assert not cache.exists(f"post:{hidden}")


def test_a_feed_page_is_exactly_what_the_web_tiers_read_query_returns(db_session, cache):
    from tasks.cache.fill import fill
    from tasks.feed.read import read_feed

    u = add_users(db_session, "reader", "author", "newcomer")
    posts = [add_post(db_session, u["author"], content=f"p{i}", at=utcnow() - timedelta(minutes=i))
             for i in range(45)]
    add_feed(db_session, u["reader"], posts[5:] + posts[:5])   # stored order differs from time order
    add_follow(db_session, u["newcomer"], u["author"])          # no stored feed: the chronological fallback
    now = utcnow()
    pages = [(u["reader"], 1), (u["reader"], 2), (u["reader"], 3), (u["newcomer"], 1), (u["newcomer"], 2)]
    fill(db_session, cache, {"feed": pages}, now)
    for user_id, page in pages:
        cached = json.loads(cache.get(f"feed:{user_id}:page:{page}"))
        expected = read_feed(db_session, user_id, now, limit=20, offset=(page - 1) * 20)
        assert (cached["user_id"], cached["page"], cached["page_size"]) == (user_id, page, 20)
        assert [(i["post_id"], i["reason"], i["score"]) for i in cached["items"]] == [
            (str(post_id), reason, score) for post_id, reason, score in expected], (user_id, page)
    assert len(json.loads(cache.get(f"feed:{u['reader']}:page:3"))["items"]) == 5


def test_a_session_never_holds_the_token_hash_or_the_ip_address(db_session, cache):
    from tasks.cache.store import get_or_fill

    u = add_users(db_session, "alice")
    expires = utcnow() + timedelta(days=3)
    session_id = add_session(db_session, u["alice"], refresh_token_hash="h4sh-0f-th3-t0k3n",
                             ip_address="198.51.100.23", expires_at=expires)
    cached = get_or_fill(db_session, "session", session_id.upper(), client=cache)   # any UUID spelling
    assert (cached["id"], cached["user_id"], cached["is_active"]) == (session_id, u["alice"], True)
    assert cached["device_info"] == {"os": "linux", "app": "web"} and cached["user_agent"] == "Firefox/130"
    assert cached["expires_at"] == expires.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    raw = cache.get(f"session:{session_id}").decode()
    assert "h4sh-0f-th3-t0k3n" not in raw and "198.51.100.23" not in raw
    assert set(cached) == {"id", "user_id", "is_active", "expires_at", "created_at", "device_info", "user_agent"}


def test_the_unread_count_is_the_notifications_familys_unread_count(db_session, cache):
    from tasks.cache.fill import fill
    from tasks.notifications import unread_count

    u = add_users(db_session, "a", "b", "c")
    parent = add_notification(db_session, u["a"], is_batch=True)
    for _ in range(3):
        add_notification(db_session, u["a"], parent_id=parent)          # batch children never count
    add_notification(db_session, u["a"])
    add_notification(db_session, u["a"], read=True)
    add_notification(db_session, u["b"], read=True)
    fill(db_session, cache, {"unread": list(u.values())}, utcnow())
    for user_id in u.values():
        assert int(cache.get(f"notification:{user_id}:unread")) == unread_count(db_session, user_id)
    assert int(cache.get(f"notification:{u['a']}:unread")) == 2
