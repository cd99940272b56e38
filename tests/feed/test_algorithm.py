"""The feed algorithm against real PostgreSQL, at a frozen instant (plain functions, rolled back)."""
from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import text
from freezegun import freeze_time

from tasks.feed import algorithm as A
from tasks.feed.read import read_feed
from tasks.feed.scoring import score_users
from tasks.feed.trending import update_trending
from tests.feed.conftest import NOW

pytestmark = pytest.mark.usefixtures("frozen")


@pytest.fixture
def frozen():
    with freeze_time(NOW):
        yield


def scored_order(feed):
    return [post for post, reason, _score in feed if reason != "recent"]


def test_decay_orders_by_engagement_times_half_life(graph, db_session):
    viewer = graph.user()
    specs = [  # (age, hearts, shares): recency and engagement trade off through the half-life
        (timedelta(hours=1), 0, 0), (timedelta(hours=13), 0, 0), (timedelta(hours=30), 0, 0),
        (timedelta(hours=12), 3, 0), (timedelta(hours=24), 0, 5), (timedelta(hours=2), 1, 0),
    ]
    expected = {}
    for age, hearts, shares in specs:
        author = graph.user()  # one author each: the per-author cap stays out of the way
        graph.follow(viewer, author)
        post = graph.post(author, age=age, hearts=hearts, shares=shares)
        expected[post] = A.decayed_score(hearts, 0, shares, age, A.FOLLOW_MULTIPLIER)
    score_users(db_session, [viewer], NOW)
    feed = graph.feed(viewer)
    assert scored_order(feed) == sorted(expected, key=expected.get, reverse=True)
    # Equal engagement: strictly newer first.
    ages = {post: age for post, (age, h, s) in zip(expected, specs) if h == s == 0}
    assert [p for p in scored_order(feed) if p in ages] == sorted(ages, key=ages.get)


def test_half_life_is_the_one_documented():
    fresh = A.decayed_score(0, 0, 0, timedelta(0))
    assert A.decayed_score(0, 0, 0, A.HALF_LIFE) == pytest.approx(fresh / 2)
    assert A.W_SHARES > A.W_REACTIONS > A.W_HEARTS


@pytest.mark.parametrize("newer_by_hours, winner", [(6, "followed"), (8, "trending")])
def test_follow_multiplier_against_a_newer_trending_post(graph, db_session, newer_by_hours, winner):
    # 1.5x follow boost equals 2 ** (7.02 h / 12 h): a trending post 6 h newer loses, 8 h newer wins.
    viewer, friend, stranger = graph.users(3)
    graph.follow(viewer, friend)
    followed_post = graph.post(friend, age=timedelta(hours=10), hearts=2)
    trending_post = graph.post(stranger, age=timedelta(hours=10 - newer_by_hours), hearts=2)
    update_trending(db_session, NOW)
    score_users(db_session, [viewer], NOW)
    feed = graph.feed(viewer)
    reasons = {post: reason for post, reason, _ in feed}
    assert reasons[followed_post] == "followed" and reasons[trending_post] == "trending"
    assert reasons[scored_order(feed)[0]] == winner


@pytest.mark.parametrize("newer_by_hours, winner", [(4, "mutual"), (6, "followed")])
def test_mutual_multiplier_beats_follow_by_its_ratio(graph, db_session, newer_by_hours, winner):
    # 2.0 / 1.5 = 2 ** (4.98 h / 12 h): a followed post 4 h newer loses to the mutual one, 6 h newer wins.
    viewer, mutual, followed = graph.users(3)
    graph.follow(viewer, mutual)
    graph.follow(mutual, viewer)
    graph.follow(viewer, followed)
    mutual_post = graph.post(mutual, age=timedelta(hours=10))
    followed_post = graph.post(followed, age=timedelta(hours=10 - newer_by_hours))
    score_users(db_session, [viewer], NOW)
    feed = graph.feed(viewer)
    reasons = {post: reason for post, reason, _ in feed}
    assert reasons[mutual_post] == "mutual" and reasons[followed_post] == "followed"
    assert reasons[scored_order(feed)[0]] == winner


def test_blocked_either_way_and_private_posts_never_appear(graph, db_session):
    viewer, friend, blocked_by_viewer, blocks_viewer, stranger = graph.users(5)
    graph.follow(viewer, friend)
    graph.follow(viewer, blocked_by_viewer, status="blocked")
    graph.follow(viewer, blocks_viewer)                      # viewer follows them...
    graph.follow(blocks_viewer, viewer, status="blocked")    # ...but they blocked the viewer
    visible = graph.post(friend, hearts=1)
    forbidden = {
        graph.post(friend, public=False, hearts=50),              # private, even from a friend
        graph.post(blocked_by_viewer, hearts=500, shares=50),     # trending, but blocked
        graph.post(blocks_viewer, hearts=500, shares=50),
        graph.post(stranger, public=False, hearts=500),           # private stranger
        graph.post(viewer, hearts=10),                            # the viewer's own post
    }
    update_trending(db_session, NOW)
    score_users(db_session, [viewer], NOW)
    posts = {post for post, _reason, _score in graph.feed(viewer)}
    assert visible in posts
    assert not posts & forbidden
    # The web tier's chronological fallback obeys the same rules.
    db_session.execute(text("DELETE FROM feed_items WHERE user_id = :u"), {"u": viewer})
    fallback = {str(post) for post, reason, _ in read_feed(db_session, viewer, NOW, limit=50)}
    assert visible in fallback and not fallback & forbidden


def test_every_fifth_slot_is_the_newest_post_not_chosen_by_score(graph, db_session):
    viewer = graph.user()
    for _ in range(30):
        author = graph.user()
        graph.follow(viewer, author)
        for hours in (2, 20, 40):
            graph.post(author, age=timedelta(hours=hours), hearts=3)
    newest = [graph.post(graph.user(), age=timedelta(minutes=minutes)) for minutes in range(1, 31)]
    score_users(db_session, [viewer], NOW)
    feed = graph.feed(viewer)
    assert len(feed) == A.FEED_SIZE
    recent = [post for post, reason, _ in feed if reason == "recent"]
    assert len(recent) == A.FEED_SIZE // A.RECENT_EVERY == 20           # 20 %
    assert [reason for _, reason, _ in feed][A.RECENT_EVERY - 1::A.RECENT_EVERY] == ["recent"] * 20
    assert recent == newest[:20]                                          # newest first
    assert not set(recent) & set(scored_order(feed))


def test_one_author_gets_at_most_three_of_the_top_fifty(graph, db_session):
    viewer, star = graph.users(2)
    graph.follow(viewer, star)
    star_posts = [graph.post(star, age=timedelta(hours=1 + i), hearts=1000) for i in range(10)]
    for _ in range(20):
        author = graph.user()
        graph.follow(viewer, author)
        for hours in (3, 6, 9):
            graph.post(author, age=timedelta(hours=hours))
    score_users(db_session, [viewer], NOW)
    feed = [post for post, _reason, _score in graph.feed(viewer)]
    top = feed[:A.AUTHOR_CAP_WINDOW]
    assert [p for p in top if p in star_posts] == star_posts[:3]
    assert feed[:3] == star_posts[:3]               # the cap demotes, it does not reorder the best
    assert set(star_posts) <= set(feed)             # the rest still appear, further down


def test_reasons_and_expiry_are_set(graph, db_session):
    viewer, friend = graph.users(2)
    graph.follow(viewer, friend)
    graph.post(friend)
    score_users(db_session, [viewer], NOW)
    row = db_session.execute(text(
        "SELECT reason, created_at, expires_at FROM feed_items WHERE user_id = :u"), {"u": viewer}).one()
    assert row.reason == "followed"
    assert row.created_at == NOW and row.expires_at == NOW + A.FEED_TTL


def test_rescoring_replaces_the_whole_feed(graph, db_session):
    viewer, friend, other = graph.users(3)
    graph.follow(viewer, friend)
    first = graph.post(friend, age=timedelta(days=6, hours=23))
    score_users(db_session, [viewer], NOW)
    assert [p for p, _, _ in graph.feed(viewer)] == [first]
    graph.follow(viewer, other)
    second = graph.post(other)
    result = score_users(db_session, [viewer], NOW + timedelta(hours=2))   # first left the 7-day window
    assert [p for p, _, _ in graph.feed(viewer)] == [second]
    assert result.rows_deleted == 1 and result.rows_written == 1
