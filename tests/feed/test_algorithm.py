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
    # (age h, hearts, shares) -> the documented score by hand, all followed (x 1.5):
    # (1 + ln(1 + hearts + 3 shares)) x 2 ** (-age / 12) x 1.5
    specs = {
        "fresh": (1, 0, 0),              # 1 x 2**(-1/12) x 1.5          = 1.4158
        "half a day": (13, 0, 0),        # 1 x 2**(-13/12) x 1.5         = 0.7079
        "yesterday": (30, 0, 0),         # 1 x 2**(-30/12) x 1.5         = 0.2652
        "hearts": (12, 3, 0),            # (1 + ln 4) x 1/2 x 1.5        = 1.7897
        "shares": (24, 0, 5),            # (1 + ln 16) x 1/4 x 1.5       = 1.4147, just below "fresh"
        "one heart": (2, 1, 0),          # (1 + ln 2) x 2**(-1/6) x 1.5  = 2.2626
    }
    posts = {}
    for name, (hours, hearts, shares) in specs.items():
        author = graph.user()  # one author each: the per-author cap stays out of the way
        graph.follow(viewer, author)
        posts[graph.post(author, age=timedelta(hours=hours), hearts=hearts, shares=shares)] = name
    score_users(db_session, [viewer], NOW)
    assert [posts[p] for p in scored_order(graph.feed(viewer))] == [
        "one heart", "hearts", "fresh", "shares", "half a day", "yesterday"]


def test_the_python_score_is_the_documented_formula():
    assert A.HALF_LIFE == timedelta(hours=12)
    assert A.decayed_score(0, 0, 0, timedelta(0)) == 1.0
    assert A.decayed_score(0, 0, 0, timedelta(hours=12)) == pytest.approx(0.5)
    assert A.decayed_score(0, 0, 0, timedelta(days=7)) == pytest.approx(2 ** -14)
    # (1 + ln(1 + 10 + 1.5 x 4 + 3 x 2)) x 2**(-6/12) x 2.0 (mutual)
    assert A.decayed_score(10, 4, 2, timedelta(hours=6), 2.0) == pytest.approx(5.848472, rel=1e-6)
    # One share outweighs one reaction outweighs one heart.
    assert A.decayed_score(0, 0, 1, timedelta(0)) > A.decayed_score(0, 1, 0, timedelta(0)) > \
        A.decayed_score(1, 0, 0, timedelta(0))


def test_trending_score_is_the_documented_time_invariant_number(graph, db_session):
    # ln(1 + ln(1 + 3 hearts)) + ln 2 x (hours from 2020-01-01 to 2026-06-01 11:00 = 56,243) / 12
    post = graph.post(graph.user(), age=timedelta(hours=1), hearts=3)
    update_trending(db_session, NOW)
    stored = db_session.scalar(text("SELECT engagement_score FROM posts WHERE id = :p"), {"p": post})
    assert stored == pytest.approx(3249.592815, abs=1e-6)
    # The same a day later: "now" does not enter it.
    db_session.execute(text("UPDATE posts SET hearts_count = 3 WHERE id = :p"), {"p": post})
    update_trending(db_session, NOW + timedelta(days=1))
    assert db_session.scalar(text("SELECT engagement_score FROM posts WHERE id = :p"), {"p": post}) == stored


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


def test_update_trending_sets_posts_that_left_the_window_back_to_zero(graph, db_session):
    author = graph.user()
    leaving = graph.post(author, age=timedelta(days=6, hours=23), hearts=5)    # 1 h left in the window
    staying = graph.post(author, age=timedelta(days=1), hearts=5)
    assert update_trending(db_session, NOW) == {"status": "ok", "posts_rescored": 2}

    def scores():
        return dict(db_session.execute(text(
            "SELECT id::text, engagement_score FROM posts WHERE id IN (:a, :b)"), {"a": leaving, "b": staying}).all())

    before = scores()
    assert before[leaving] > 0 and before[staying] > 0
    in_view = text("SELECT id::text FROM popular_posts ORDER BY id")
    assert set(db_session.scalars(in_view)) == {leaving, staying}
    # Two hours on, the first post is 7 days and 1 hour old: back to 0 and out of the view,
    # and only that row is written.
    assert update_trending(db_session, NOW + timedelta(hours=2)) == {"status": "ok", "posts_rescored": 1}
    assert scores() == {leaving: 0, staying: before[staying]}
    assert set(db_session.scalars(in_view)) == {staying}
    assert update_trending(db_session, NOW + timedelta(hours=3)) == {"status": "ok", "posts_rescored": 0}
