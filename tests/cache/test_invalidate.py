"""cache.invalidate: every event's fan-out, the version counters it moves, and bad input."""
from __future__ import annotations

import pytest
from sqlalchemy import text

from tests.cache.conftest import (
    add_comment, add_feed, add_friendship, add_notification, add_post, add_session, add_users, cached_keys, utcnow,
)
from workers.errors import InvalidArguments


@pytest.fixture
def filled(db_session, cache):
    """Two users with every key cached: profiles, friends lists, two feed pages each, their
    posts (alice's, one of bob's that alice commented on, one she did not), a session, unread counts."""
    from tasks.cache.fill import fill

    u = add_users(db_session, "alice", "bob")
    a, b = u["alice"], u["bob"]
    add_friendship(db_session, a, b, "accepted")
    alice_posts = [add_post(db_session, a, content=f"a{i}") for i in range(5)]
    commented = add_post(db_session, b, content="alice commented here")
    add_comment(db_session, a, commented, "me too")
    untouched = add_post(db_session, b, content="nobody commented")
    for user_id in (a, b):
        add_feed(db_session, user_id, alice_posts + [commented, untouched] * 1)
    session_id = add_session(db_session, a)
    add_notification(db_session, a)
    posts = alice_posts + [commented, untouched]
    result = fill(db_session, cache, {
        "user": [a, b], "friends": [a, b], "post": posts,
        "feed": [(a, 1), (a, 2), (b, 1), (b, 2)], "session": [session_id], "unread": [a, b]}, utcnow())
    assert result.written == 2 + 2 + len(posts) + 4 + 1 + 2
    return {"a": a, "b": b, "alice_posts": alice_posts, "commented": commented, "untouched": untouched,
            "session": session_id, "all": cached_keys(cache)}


def run(db_session, cache, event, ids):
    from tasks.cache.invalidation import check, invalidate

    spec, ids = check(event, ids)
    return invalidate(db_session, cache, spec, ids, utcnow())


def feed_keys(user_id):
    return {f"feed:{user_id}:page:1", f"feed:{user_id}:page:2", f"feed:{user_id}:pages"}


def test_user_updated_drops_the_profile_only(db_session, cache, filled):
    result = run(db_session, cache, "user_updated", [filled["a"]])
    assert filled["all"] - cached_keys(cache) == {f"user:{filled['a']}"}
    assert (result.dropped, result.versions_bumped) == (1, 1)
    assert cache.get(f"v:user:{filled['a']}") == b"1"


def test_username_changed_drops_the_profile_and_every_post_showing_the_name(db_session, cache, filled,
                                                                            monkeypatch):
    from tasks.cache import invalidation

    monkeypatch.setattr(invalidation, "POSTS_CHUNK", 2)   # 6 posts: three keyset rounds
    result = run(db_session, cache, "username_changed", [filled["a"]])
    expected = {f"user:{filled['a']}"} | {f"post:{p}" for p in filled["alice_posts"] + [filled["commented"]]}
    assert filled["all"] - cached_keys(cache) == expected
    assert cache.exists(f"post:{filled['untouched']}")
    assert result.posts == 6 and result.dropped == 7
    for post_id in filled["alice_posts"] + [filled["commented"]]:
        assert cache.get(f"v:post:{post_id}") == b"1"


def test_post_updated_drops_those_posts(db_session, cache, filled):
    run(db_session, cache, "post_updated", [filled["commented"], filled["untouched"].upper()])
    assert filled["all"] - cached_keys(cache) == {f"post:{filled['commented']}", f"post:{filled['untouched']}"}


def test_feed_rebuilt_drops_every_page_of_that_user_without_scanning(db_session, cache, filled):
    result = run(db_session, cache, "feed_rebuilt", [filled["a"]])
    assert filled["all"] - cached_keys(cache) == feed_keys(filled["a"])
    assert result.dropped == 2
    assert cache.get(f"v:feed:{filled['a']}") == b"1" and cache.get(f"v:feed:{filled['b']}") is None


def test_friendship_changed_drops_both_friends_lists_and_both_feeds(db_session, cache, filled):
    run(db_session, cache, "friendship_changed", [filled["b"], filled["a"]])
    a, b = filled["a"], filled["b"]
    assert filled["all"] - cached_keys(cache) == (
        {f"user:{a}:friends", f"user:{b}:friends"} | feed_keys(a) | feed_keys(b))


def test_notifications_changed_recomputes_the_unread_count(db_session, cache, filled):
    from tasks.cache.keys import KEYS

    a, b = filled["a"], filled["b"]
    assert cache.get(f"notification:{a}:unread") == b"1"
    add_notification(db_session, a)
    add_notification(db_session, b)
    db_session.execute(text("UPDATE notifications SET read = false"))
    result = run(db_session, cache, "notifications_changed", [a, b])
    assert (cache.get(f"notification:{a}:unread"), cache.get(f"notification:{b}:unread")) == (b"2", b"1")
    assert cache.ttl(f"notification:{a}:unread") > KEYS["unread"].ttl_seconds - 5
    assert result.refreshed == 2
    assert filled["all"] == cached_keys(cache)   # refreshed, nothing else touched


def test_session_ended_drops_that_session(db_session, cache, filled):
    run(db_session, cache, "session_ended", [filled["session"]])
    assert filled["all"] - cached_keys(cache) == {f"session:{filled['session']}"}


def test_every_event_in_the_table_is_tested_here():
    from tasks.cache.invalidation import EVENTS

    tested = {name.removeprefix("test_").split("_drops")[0].split("_recomputes")[0]
              for name in globals() if name.startswith("test_")}
    assert set(EVENTS) <= tested


def test_versions_count_every_invalidation_and_expire(db_session, cache, filled):
    from tasks.cache.keys import VERSION_TTL_SECONDS

    for _ in range(3):
        run(db_session, cache, "user_updated", [filled["b"]])
    assert cache.get(f"v:user:{filled['b']}") == b"3"
    assert VERSION_TTL_SECONDS - 5 <= cache.ttl(f"v:user:{filled['b']}") <= VERSION_TTL_SECONDS


SOME_UUID = "0b5a3c2e-8f61-4c8e-9a43-3f1d9b1c2a77"


@pytest.mark.parametrize(("event", "ids", "code", "message"), [
    ("user_deleted", [1], "unknown_cache_event", "unknown cache event 'user_deleted'"),
    ("", [1], "unknown_cache_event", "unknown cache event"),
    ("user_updated", "5", "invalid_arguments", "must be list"),
    ("user_updated", ["5"], "invalid_arguments", "must be"),
    ("user_updated", [True], "invalid_arguments", "must be"),
    ("user_updated", [0], "invalid_arguments", "a positive integer"),
    ("user_updated", [-3], "invalid_arguments", "a positive integer"),
    ("user_updated", [2**31], "invalid_arguments", "a positive integer"),
    ("user_updated", [SOME_UUID], "invalid_arguments", "must be"),
    ("post_updated", [5], "invalid_arguments", "must be"),
    ("post_updated", ["not-a-uuid"], "invalid_arguments", "UUID"),
    ("session_ended", [SOME_UUID, "nope"], "invalid_arguments", r"ids\[1\]"),
    ("friendship_changed", [1], "invalid_arguments", "exactly 2"),
    ("friendship_changed", [1, 2, 3], "invalid_arguments", "exactly 2"),
    ("friendship_changed", [4, 4], "invalid_arguments", "exactly 2"),
    ("feed_rebuilt", [1.5], "invalid_arguments", "must be"),
])
def test_bad_input_is_a_typed_error_before_any_work(cache, filled, event, ids, code, message):
    from tasks.cache.tasks import invalidate

    before = {key: cache.get(key) for key in cache.keys("*") if cache.type(key) == b"string"}
    with pytest.raises(InvalidArguments, match=message) as info:
        invalidate(event, ids)
    assert info.value.code == code
    assert {key: cache.get(key) for key in cache.keys("*") if cache.type(key) == b"string"} == before


def test_without_a_cache_the_task_does_nothing(cache, filled, monkeypatch):
    from tasks.cache.tasks import invalidate

    monkeypatch.setenv("CACHE_URL", "")
    assert invalidate("user_updated", [filled["a"]]) == {"status": "disabled"}
    assert cached_keys(cache) == filled["all"]
    with pytest.raises(InvalidArguments):   # bad input is refused all the same
        invalidate("nonsense", [1])
