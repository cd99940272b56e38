"""The seed 001 batching flow on real PostgreSQL, with freezegun driving every window."""
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest
from freezegun import freeze_time

from tasks.notifications.batching import mark_read, unread_count
from tests.notifications.builders import now, record

T0 = "2026-03-01 10:00:00"
T0_AT = datetime(2026, 3, 1, 10, 0, tzinfo=timezone.utc)


def test_first_like_is_a_single_notification(graph, db_session):
    author, liker = graph.users(2)
    post = graph.post(author)
    [outcome] = record(db_session, "like", graph.like(liker, post))
    assert outcome.status == "created"
    [single] = graph.notifications(author)
    assert (single.type, single.is_batch, single.parent_id, single.batch_count) == ("like", False, None, 1)
    assert single.batch_key == f"post_interaction:post:{post}"
    assert single.title == "New Like 💜" and single.message.endswith("liked your post")
    assert single.data["post_id"] == post and single.data["actor_id"] == liker
    assert unread_count(db_session, author) == 1


@pytest.mark.parametrize(("minutes", "converted"), [(59, True), (61, False)])
def test_a_single_converts_only_within_one_hour(graph, db_session, minutes, converted):
    author, first, second = graph.users(3)
    post = graph.post(author)
    with freeze_time(T0) as clock:
        record(db_session, "like", graph.like(first, post, now()))
        clock.tick(timedelta(minutes=minutes))
        [outcome] = record(db_session, "like", graph.like(second, post, now()))
    top = graph.top_level(author)
    if converted:
        assert outcome.status == "converted"
        [parent] = top
        assert parent.is_batch and parent.batch_count == 2
        assert len(graph.children(parent.id)) == 2
        assert parent.type == "post_interaction" and parent.title == "New Engagement 💜"
        assert parent.message == "2 people liked your post"
    else:
        assert outcome.status == "created"
        assert [n.is_batch for n in top] == [False, False]
    assert unread_count(db_session, author) == len(top)


@pytest.mark.parametrize(("age", "extended"), [(timedelta(hours=23, minutes=59), True),
                                               (timedelta(hours=24, minutes=1), False)])
def test_a_batch_is_extended_only_within_max_age(graph, db_session, age, extended):
    author, a, b, c = graph.users(4)
    post = graph.post(author)
    with freeze_time(T0) as clock:
        record(db_session, "like", graph.like(a, post, now()))
        record(db_session, "like", graph.like(b, post, now()))   # batch created at T0
        [parent] = graph.top_level(author)
        clock.tick(age)
        [outcome] = record(db_session, "like", graph.like(c, post, now()))
    db_session.refresh(parent)
    if extended:
        assert outcome.status == "batched" and outcome.parent_id == parent.id
        assert parent.batch_count == 3 == len(graph.children(parent.id))
        assert parent.message == "3 people liked your post"
    else:
        assert outcome.status == "created" and outcome.parent_id is None
        assert parent.batch_count == 2 == len(graph.children(parent.id))
        assert len(graph.top_level(author)) == 2


def test_follow_batches_roll_over_at_ten(graph, db_session):
    followed, *followers = graph.users(13)
    with freeze_time(T0) as clock:
        outcomes = []
        for follower in followers:
            clock.tick(timedelta(seconds=30))
            outcomes += record(db_session, "follow", graph.follow(follower, followed, now()))
    assert [o.status for o in outcomes[:10]] == ["created", "converted"] + ["batched"] * 8
    assert outcomes[10].status == "created"        # the first batch is full: a fresh single
    assert outcomes[11].status == "converted"      # ... which the next follower turns into batch 2
    top = graph.top_level(followed)
    assert [(n.is_batch, n.batch_count) for n in top] == [(True, 10), (True, 2)]
    assert [len(graph.children(n.id)) for n in top] == [10, 2]
    assert top[0].batch_key == f"follow:user:{followed}"
    assert top[0].message == "10 people started following you"


def test_a_growing_batch_is_marked_unread_again(graph, db_session):
    author, a, b, c = graph.users(4)
    post = graph.post(author)
    with freeze_time(T0) as clock:
        record(db_session, "like", graph.like(a, post, now()))
        record(db_session, "like", graph.like(b, post, now()))
        [parent] = graph.top_level(author)
        assert mark_read(db_session, author, notification_ids=[parent.id], all=False, now=now()) == 1
        assert unread_count(db_session, author) == 0
        clock.tick(timedelta(minutes=5))
        later = now()
        record(db_session, "like", graph.like(c, post, later))
    db_session.refresh(parent)
    assert parent.read is False and parent.read_at is None
    assert parent.last_updated_at == later
    assert unread_count(db_session, author) == 1


def test_likes_and_reactions_share_the_unified_batch(graph, db_session):
    author, a, b = graph.users(3)
    post = graph.post(author)
    record(db_session, "like", graph.like(a, post))
    record(db_session, "emoji_reaction", graph.react(b, post, "fire"))
    [parent] = graph.top_level(author)
    assert parent.batch_key == f"post_interaction:post:{post}"
    assert parent.message == "2 people engaged with your post"
    assert sorted(c.type for c in graph.children(parent.id)) == ["emoji_reaction", "like"]
    reaction = next(c for c in graph.children(parent.id) if c.type == "emoji_reaction")
    assert reaction.message.endswith("reacted with fire")


def test_self_events_create_nothing(graph, db_session):
    [author] = graph.users(1)
    post = graph.post(author)
    [outcome] = record(db_session, "like", graph.like(author, post))
    assert outcome.status == "self"
    assert graph.notifications(author) == []


def test_a_repeated_event_creates_no_second_row(graph, db_session):
    author, a, b = graph.users(3)
    post = graph.post(author)
    like_a, like_b = graph.like(a, post), graph.like(b, post)
    record(db_session, "like", like_a)
    record(db_session, "like", like_b)
    assert [o.status for o in record(db_session, "like", like_a, like_b, like_a)] == ["duplicate"] * 2
    [parent] = graph.top_level(author)
    assert parent.batch_count == 2 == len(graph.children(parent.id))


def test_a_missing_source_row_yields_no_event(graph, db_session):
    assert record(db_session, "like", "00000000-0000-0000-0000-000000000000") == []


def test_a_pending_follow_notifies_no_one(graph, db_session):
    a, b = graph.users(2)
    assert record(db_session, "follow", graph.follow(a, b, status="pending")) == []


def test_a_late_task_lands_by_event_time(graph, db_session):
    author, a, b, c = graph.users(4)
    post = graph.post(author)
    with freeze_time(T0) as clock:
        record(db_session, "like", graph.like(a, post, now()))
        record(db_session, "like", graph.like(b, post, now()))
        event_time = now() + timedelta(hours=2)
        late_like = graph.like(c, post, event_time)
        clock.tick(timedelta(hours=30))             # the worker runs 30 h later
        [outcome] = record(db_session, "like", late_like)
    assert outcome.status == "batched"


def test_rate_limit_folds_over_limit_events_into_one_overflow_batch(graph, db_session):
    author, *likers = graph.users(26)
    posts = [graph.post(author) for _ in likers]
    with freeze_time(T0) as clock:
        outcomes = []
        for liker, post in zip(likers, posts):
            clock.tick(timedelta(seconds=60))
            outcomes += record(db_session, "like", graph.like(liker, post, now()))
    assert [o.status for o in outcomes] == ["created"] * 20 + ["folded"] * 5
    top = graph.top_level(author)
    assert len(top) == 21                          # 20 singles + 1 overflow batch
    overflow = next(n for n in top if n.is_batch)
    assert overflow.batch_key == f"like:user:{author}" and overflow.type == "like"
    assert overflow.batch_count == 5 == len(graph.children(overflow.id))
    assert overflow.message == "5 more people liked your posts"
    assert sum(1 for n in graph.notifications(author) if not n.is_batch) == 25   # nothing lost


def test_rate_limit_window_is_the_event_hour(graph, db_session):
    author, *likers = graph.users(22)
    posts = [graph.post(author) for _ in likers]
    with freeze_time(T0) as clock:
        for liker, post in zip(likers[:20], posts):
            record(db_session, "like", graph.like(liker, post, now()))
        clock.tick(timedelta(hours=1))
        [outcome] = record(db_session, "like", graph.like(likers[20], posts[20], now()))
    assert outcome.status == "created"


def test_retract_recounts_and_deletes_an_empty_parent(graph, db_session):
    from tasks.notifications.sources import retract_source

    author, a, b, c = graph.users(4)
    post = graph.post(author)
    likes = {u: graph.like(u, post) for u in (a, b, c)}
    record(db_session, "like", *likes.values())
    [parent] = graph.top_level(author)
    assert parent.batch_count == 3

    # a retract racing a re-like: the like still exists, nothing is removed
    assert retract_source(db_session, kind="like", actor_id=a, scope_id=post, user_id=None)["status"] == "still_present"

    from db.models import Like
    db_session.query(Like).filter(Like.post_id == post, Like.user_id.in_([a, b])).delete()
    result = retract_source(db_session, kind="like", actor_id=a, scope_id=post, user_id=None)
    assert result["removed"] == 1
    db_session.refresh(parent)
    assert parent.batch_count == 2 == len(graph.children(parent.id))
    assert parent.message == "2 people liked your post"

    retract_source(db_session, kind="like", actor_id=b, scope_id=post, user_id=None)
    db_session.query(Like).filter(Like.post_id == post).delete()
    result = retract_source(db_session, kind="like", actor_id=c, scope_id=post, user_id=None)
    assert result == {"status": "retracted", "removed": 1, "parents_recounted": 0, "parents_deleted": 1}
    assert graph.notifications(author) == []


def test_unfollow_removes_the_follow_notification(graph, db_session):
    from db.models import Follow
    from tasks.notifications.sources import retract_source

    a, b = graph.users(2)
    record(db_session, "follow", graph.follow(a, b))
    db_session.query(Follow).filter(Follow.follower_id == a).delete()
    assert retract_source(db_session, kind="follow", actor_id=a, scope_id=None, user_id=b)["removed"] == 1
    assert graph.notifications(b) == []


def test_mark_read_by_ids_and_all(graph, db_session):
    author, a, b = graph.users(3)
    p1, p2 = graph.post(author), graph.post(author)
    with freeze_time(T0):
        record(db_session, "like", graph.like(a, p1, now()), graph.like(b, p1, now()), graph.like(a, p2, now()))
        top = graph.top_level(author)
        assert unread_count(db_session, author) == 2 == len(top)
        batch = next(n for n in top if n.is_batch)
        assert mark_read(db_session, author, notification_ids=[batch.id], all=False, now=now()) == 1
        assert [(c.read, c.read_at) for c in graph.children(batch.id)] == [(True, T0_AT)] * 2
        assert unread_count(db_session, author) == 1
        assert mark_read(db_session, author, notification_ids=None, all=True, now=now()) == 1
    assert unread_count(db_session, author) == 0
    assert [(n.read, n.read_at) for n in graph.notifications(author)] == [(True, T0_AT)] * 4


def test_bulk_matches_the_one_by_one_flow(graph, db_session):
    author, *likers = graph.users(13)
    followed = author
    post = graph.post(author)
    with freeze_time(T0) as clock:
        likes, follows = [], []
        for liker in likers:
            clock.tick(timedelta(seconds=10))
            likes.append(graph.like(liker, post, now()))
            follows.append(graph.follow(liker, followed, now()))
    like_outcomes = Counter(o.status for o in record(db_session, "like", *likes))
    record(db_session, "follow", *reversed(follows))
    assert like_outcomes == {"created": 1, "converted": 1, "batched": 10}
    top = graph.top_level(author)
    interaction = next(n for n in top if n.batch_key.startswith("post_interaction"))
    assert interaction.batch_count == 12 == len(graph.children(interaction.id))
    follow_batches = sorted((n.batch_count for n in top if n.type == "follow" and n.is_batch))
    assert follow_batches == [2, 10]


@pytest.mark.parametrize(("parent_type", "batch_key", "child_types", "expected"), [
    ("post_interaction", "post_interaction:post:p", {"like"}, "3 people liked your post"),
    ("post_interaction", "post_interaction:post:p", {"emoji_reaction"}, "3 people reacted to your post"),
    ("post_interaction", "post_interaction:post:p", {"like", "emoji_reaction"}, "3 people engaged with your post"),
    ("follow", "follow:user:7", {"follow"}, "3 people started following you"),
    ("comment", "comment:post:p", {"comment"}, "3 new comments on your post"),
    ("comment", "comment:user:7", {"comment"}, "3 more comments on your posts"),
    ("mention", "mention:post:p", {"mention"}, "You were mentioned 3 times in a post"),
])
def test_batch_texts_follow_the_summary_templates(parent_type, batch_key, child_types, expected):
    from tasks.notifications.config import batch_texts

    assert batch_texts(parent_type, batch_key, 3, child_types)[1] == expected


def test_prune_drops_only_windows_older_than_two_hours(graph, db_session):
    from datetime import datetime, timezone

    from db.models import NotificationRateLimit
    from tasks.notifications.batching import prune_rate_limits

    [user] = graph.users(1)
    at = datetime(2026, 3, 1, 12, tzinfo=timezone.utc)
    db_session.add_all([NotificationRateLimit(user_id=user, type="like", window_start=at - timedelta(hours=h), count=3)
                        for h in (0, 1, 2, 3)])
    db_session.flush()
    assert prune_rate_limits(db_session, now=at + timedelta(minutes=30)) == 2
    left = db_session.query(NotificationRateLimit).filter_by(user_id=user).all()
    assert sorted(r.window_start for r in left) == [at - timedelta(hours=1), at]


@pytest.mark.parametrize("kind", ["like", "follow"])
def test_the_single_event_load_holds_the_same_lock_as_lock_keys(graph, db_session, engine, kind):
    from sqlalchemy import text

    from tasks.notifications.batching import lock_name
    from tasks.notifications.sources import load_events

    author, actor = graph.users(2)
    post = graph.post(author)
    source = graph.like(actor, post) if kind == "like" else graph.follow(actor, author)
    [event] = load_events(db_session, kind, [source], lock=True)
    names = {lock_name(author, event.batch_key)}
    with engine.connect() as other:
        held = [not other.scalar(text("SELECT pg_try_advisory_xact_lock(hashtextextended(:k, 0))"), {"k": k})
                for k in sorted(names)]
        free = other.scalar(text("SELECT pg_try_advisory_xact_lock(hashtextextended(:k, 0))"),
                            {"k": lock_name(author, f"{kind}:user:{author}" if kind == "like" else "x:post:1")})
        other.rollback()
    assert all(held) and free


def test_rate_windows_are_utc_hours_whatever_the_session_time_zone():
    from datetime import datetime, timezone
    from zoneinfo import ZoneInfo

    from tasks.notifications.batching import Event

    kolkata = datetime(2026, 3, 1, 15, 40, tzinfo=ZoneInfo("Asia/Kolkata"))   # 10:10 UTC
    event = Event(kind="like", recipient_id=1, actor_id=2, actor_name="a", post_id="p", event_at=kolkata,
                  dedupe_key="like:x")
    assert event.rate_window == (1, "like", datetime(2026, 3, 1, 10, tzinfo=timezone.utc))


def test_shares_and_comments_batch_per_post_and_the_authors_own_comment_is_silent(graph, db_session):
    from db.models import Share

    author, a, b = graph.users(3)
    post = graph.post(author)
    shares = []
    for user in (a, b):
        share = Share(user_id=user, post_id=post, platform="twitter")
        db_session.add(share)
        db_session.flush()
        shares.append(share.id)
    record(db_session, "post_shared", *shares)
    comments = [graph.comment(a, post, "nice"), graph.comment(author, post, "thanks")]
    outcomes = record(db_session, "comment", *comments)
    assert sorted(o.status for o in outcomes) == ["created", "self"]
    top = {n.batch_key: n for n in graph.top_level(author)}
    assert set(top) == {f"post_shared:post:{post}", f"comment:post:{post}"}
    shared = top[f"post_shared:post:{post}"]
    assert shared.is_batch and shared.message == "2 people shared your post"
    assert {c.data["platform"] for c in graph.children(shared.id)} == {"twitter"}
    comment = top[f"comment:post:{post}"]
    assert comment.message.endswith("commented on your post") and comment.data["comment_id"] == comments[0]
