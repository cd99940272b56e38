"""Who sees a friends-only post after scoring (tasks/feed/scoring.py with db/visibility.py):
accepted friends, whichever end asked; never a follower who is not a friend, a pending
requester or a stranger; and across a block, in friendships or follows, either way,
nothing of the author at all, public posts included. Plain functions at a frozen
instant, rolled back."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from freezegun import freeze_time
from sqlalchemy import text

from tasks.feed.scoring import score_users
from tests.graph.conftest import add_follow, add_friendship, add_post, add_users

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=timezone.utc)
HOUR = timedelta(hours=1)


@pytest.fixture
def frozen():
    with freeze_time(NOW):
        yield


def feed(conn, user_id: int) -> dict[str, str]:
    """post id -> reason of the user's feed."""
    return dict(conn.execute(text("SELECT post_id::text, reason FROM feed_items WHERE user_id = :u"),
                             {"u": user_id}).all())


@pytest.fixture
def world(db_session, frozen):
    conn = db_session.connection()
    u = add_users(conn, "author", "asked_friend", "asking_friend", "follower", "requester", "stranger",
                  "blocker", "blocked", "follow_blocker", "follow_blocked", "neutral")
    a = u["author"]
    posts = {
        "public": add_post(conn, a, privacy="public", at=NOW - HOUR),
        "friends": add_post(conn, a, privacy="friends", at=NOW - 2 * HOUR),
        "custom": add_post(conn, a, privacy="custom", at=NOW - 3 * HOUR),
        # Someone else's public post: every viewer's feed has it, so an empty feed can't pass for a block.
        "neutral": add_post(conn, u["neutral"], privacy="public", at=NOW - HOUR),
    }
    add_friendship(conn, a, u["asked_friend"], "accepted")     # the author asked
    add_friendship(conn, u["asking_friend"], a, "accepted")    # the friend asked
    add_follow(conn, u["follower"], a)
    add_friendship(conn, u["requester"], a, "pending")
    add_follow(conn, u["requester"], a)
    # Blocks in friendships, each way, from users who also follow the author.
    add_friendship(conn, u["blocker"], a, "blocked")
    add_follow(conn, u["blocker"], a)
    add_friendship(conn, a, u["blocked"], "blocked")
    add_follow(conn, u["blocked"], a)
    # Blocks in follows, each way, between users who are otherwise accepted friends.
    add_friendship(conn, u["follow_blocker"], a, "accepted")
    add_follow(conn, u["follow_blocker"], a, "blocked")
    add_friendship(conn, a, u["follow_blocked"], "accepted")
    add_follow(conn, a, u["follow_blocked"], "blocked")
    return conn, u, posts


def test_friends_only_posts_reach_accepted_friends_only_and_nothing_crosses_a_block(db_session, world):
    conn, u, posts = world
    viewers = [v for v in u if v != "author"]
    result = score_users(db_session, [u[v] for v in viewers], NOW)
    assert result.users == len(viewers)
    names = {post: name for name, post in posts.items()}
    seen = {v: {names[p]: reason for p, reason in feed(conn, u[v]).items()} for v in viewers}

    # Friends, whichever end asked: public and friends-only posts, as mutual relationships.
    for friend in ("asked_friend", "asking_friend"):
        assert seen[friend] == {"public": "mutual", "friends": "mutual", "neutral": "recent"}, friend
    # A follower who is not a friend, a pending requester and a stranger: the public post only.
    assert seen["follower"] == {"public": "followed", "neutral": "recent"}
    assert seen["requester"] == {"public": "followed", "neutral": "recent"}
    assert set(seen["stranger"]) == {"public", "neutral"}
    # A block either way, in friendships or in follows: nothing of the author, public or not.
    for viewer in ("blocker", "blocked", "follow_blocker", "follow_blocked"):
        assert seen[viewer] == {"neutral": "recent"}, viewer
    # 'custom' audiences are the web tier's: nobody's feed.
    assert not any("custom" in s for s in seen.values())
    # The author never sees a blocked user's posts either.
    score_users(db_session, [u["author"]], NOW)
    blocked_posts = {add_post(conn, u[v], at=NOW - HOUR) for v in ("blocker", "blocked", "follow_blocker",
                                                                 "follow_blocked")}
    friend_post = add_post(conn, u["asked_friend"], privacy="friends", at=NOW - HOUR)
    score_users(db_session, [u["author"]], NOW)
    author_feed = feed(conn, u["author"])
    assert not blocked_posts & set(author_feed)
    assert author_feed.get(friend_post) == "mutual"


def test_unfriending_or_blocking_a_friend_takes_the_friends_posts_away(db_session, world):
    conn, u, posts = world
    a = u["author"]
    score_users(db_session, [u["asked_friend"], u["asking_friend"]], NOW)
    assert posts["friends"] in feed(conn, u["asked_friend"]) and posts["friends"] in feed(conn, u["asking_friend"])

    conn.execute(text("DELETE FROM friendships WHERE user1_id = :a AND user2_id = :f"),
                 {"a": a, "f": u["asked_friend"]})                                   # unfriended
    conn.execute(text("UPDATE friendships SET user1_id = :a, user2_id = :f, status = 'blocked' "
                      "WHERE user1_id = :f AND user2_id = :a"), {"a": a, "f": u["asking_friend"]})  # blocked
    score_users(db_session, [u["asked_friend"], u["asking_friend"]], NOW)
    # Unfriended, not following: the public post may still come as a recent one, the friends-only never.
    assert posts["friends"] not in feed(conn, u["asked_friend"])
    assert posts["public"] in feed(conn, u["asked_friend"])
    assert set(feed(conn, u["asking_friend"])) == {posts["neutral"]}


def test_a_friends_post_held_by_moderation_or_deleted_reaches_no_friend(db_session, world):
    conn, u, posts = world
    conn.execute(text("UPDATE posts SET moderation_hidden = true WHERE id = CAST(:p AS uuid)"), {"p": posts["friends"]})
    conn.execute(text("UPDATE posts SET deleted_at = now() WHERE id = CAST(:p AS uuid)"), {"p": posts["public"]})
    score_users(db_session, [u["asked_friend"]], NOW)
    assert set(feed(conn, u["asked_friend"])) == {posts["neutral"]}
