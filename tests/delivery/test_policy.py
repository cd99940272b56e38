"""The delivery policy table (docs/tasks.md), row by row, on real PostgreSQL with freezegun driving time.

Planning and claiming run inside the test's rolled-back transaction; nothing is
handed to a transport here (tests/delivery/test_sending.py does that).
"""
from __future__ import annotations

from datetime import datetime, time, timedelta, timezone

import pytest
from freezegun import freeze_time
from sqlalchemy import text

from tasks.delivery import policy
from tasks.notifications.batching import mark_read
from tests.delivery.conftest import deliveries, dispatch
from tests.notifications.builders import now, record

T0 = "2026-11-30 12:00:00"  # a Monday, 12:00 UTC


def _push_subscriber(session, user_id: int) -> None:
    session.execute(text("INSERT INTO push_subscriptions (user_id, endpoint, p256dh, auth) "
                         "VALUES (:u, :e, 'BPk', 'auth')"), {"u": user_id, "e": f"https://push.example/{user_id}"})


def _likes(graph, session, author: int, post: str, likers: list[int], at: datetime | None = None):
    return record(session, "like", *[graph.like(u, post, at or now()) for u in likers])


@pytest.mark.parametrize(("waited", "sent"), [(119, False), (121, True)])
def test_normal_priority_goes_out_only_after_the_batch_settled(graph, db_session, waited, sent):
    author, *likers = graph.users(4)
    _push_subscriber(db_session, author)
    post = graph.post(author)
    with freeze_time(T0) as clock:
        _likes(graph, db_session, author, post, likers)
        clock.tick(timedelta(seconds=waited))
        claimed = dispatch(db_session, datetime.now(timezone.utc))
    assert [channel for channel, _ in claimed] == (["push"] if sent else [])


def test_a_new_event_restarts_the_settle_window(graph, db_session):
    author, a, b = graph.users(3)
    _push_subscriber(db_session, author)
    post = graph.post(author)
    with freeze_time(T0) as clock:
        _likes(graph, db_session, author, post, [a])
        clock.tick(timedelta(seconds=100))
        _likes(graph, db_session, author, post, [b])
        clock.tick(timedelta(seconds=100))   # 200 s after the first like, 100 s after the last
        assert dispatch(db_session, datetime.now(timezone.utc)) == []
        clock.tick(timedelta(seconds=21))
        claimed = dispatch(db_session, datetime.now(timezone.utc))
    assert len(claimed) == 1
    [row] = deliveries(db_session, author)
    assert (row["channel"], row["version"], row["status"]) == ("push", 2, "queued")


def test_high_priority_goes_out_at_the_next_dispatch(graph, db_session):
    [user] = graph.users(1)
    _push_subscriber(db_session, user)
    with freeze_time(T0):
        db_session.execute(text(
            "INSERT INTO notifications (user_id, type, priority, title, message, created_at, last_updated_at) "
            "VALUES (:u, 'security', 'high', 'New sign-in', 'A new device signed in', now(), :at)"),
            {"u": user, "at": datetime.now(timezone.utc)})
        claimed = dispatch(db_session, datetime.now(timezone.utc))
    assert [channel for channel, _ in claimed] == ["push"]


def test_low_priority_is_never_sent_alone_only_in_the_digest(graph, db_session):
    [user] = graph.users(1)
    _push_subscriber(db_session, user)
    db_session.execute(text(
        "INSERT INTO notifications (user_id, type, priority, title, message) "
        "VALUES (:u, 'mention', 'low', 'Weekly tip', 'Try a photo post')"), {"u": user})
    assert db_session.execute(text("SELECT count(*) FROM delivery_due")).scalar() == 0
    assert dispatch(db_session, datetime.now(timezone.utc) + timedelta(hours=1), settle=0) == []


def test_25_likes_in_a_minute_are_one_push_with_the_count(graph, db_session):
    author, *likers = graph.users(26)
    _push_subscriber(db_session, author)
    post = graph.post(author)
    with freeze_time(T0) as clock:
        for liker in likers:
            _likes(graph, db_session, author, post, [liker])
            clock.tick(timedelta(seconds=2))
        clock.tick(timedelta(seconds=121))
        claimed = dispatch(db_session, datetime.now(timezone.utc))
        again = dispatch(db_session, datetime.now(timezone.utc) + timedelta(minutes=5))
    assert len(claimed) == 1 and again == []
    [row] = deliveries(db_session, author)
    assert row["version"] == 25
    message = db_session.execute(text("SELECT message FROM notifications WHERE id = :id"),
                                 {"id": row["notification_id"]}).scalar()
    assert message == "25 people liked your post"


def _mark_sent(session, delivery_id: str, at: datetime) -> None:
    session.execute(text("UPDATE deliveries SET status = 'sent', sent_at = :at WHERE id = :id"),
                    {"at": at, "id": delivery_id})


@pytest.mark.parametrize(("after", "resent"), [(timedelta(minutes=59), False), (timedelta(minutes=61), True)])
def test_a_grown_batch_is_delivered_again_at_most_once_an_hour(graph, db_session, after, resent):
    author, *likers = graph.users(8)
    _push_subscriber(db_session, author)
    post = graph.post(author)
    with freeze_time(T0) as clock:
        _likes(graph, db_session, author, post, likers[:3])
        clock.tick(timedelta(seconds=121))
        [(_, first_id)] = dispatch(db_session, datetime.now(timezone.utc))
        sent_at = datetime.now(timezone.utc)
        _mark_sent(db_session, first_id, sent_at)
        clock.tick(timedelta(minutes=10))
        _likes(graph, db_session, author, post, likers[3:])      # the batch grows to 7
        clock.tick(timedelta(seconds=121))
        assert dispatch(db_session, datetime.now(timezone.utc)) == []   # planned for sent_at + 1 h
        clock.move_to(sent_at + after)
        claimed = dispatch(db_session, datetime.now(timezone.utc))
    assert bool(claimed) is resent
    rows = deliveries(db_session, author)
    assert [r["version"] for r in rows] == [3, 7]
    assert rows[1]["due_at"] == sent_at + policy.REDELIVERY_INTERVAL


def test_a_shrunk_batch_is_not_delivered_again(graph, db_session):
    from tasks.notifications.batching import retract_actor

    author, a, b, c = graph.users(4)
    _push_subscriber(db_session, author)
    post = graph.post(author)
    with freeze_time(T0) as clock:
        _likes(graph, db_session, author, post, [a, b, c])
        clock.tick(timedelta(seconds=121))
        [(_, first_id)] = dispatch(db_session, datetime.now(timezone.utc))
        _mark_sent(db_session, first_id, datetime.now(timezone.utc))
        retract_actor(db_session, kind="like", actor_id=c, recipient_id=author, scope_id=post)
        clock.tick(timedelta(hours=2))
        assert dispatch(db_session, datetime.now(timezone.utc)) == []
    assert len(deliveries(db_session, author)) == 1


def test_read_in_app_before_it_is_due_is_skipped_and_recorded(graph, db_session):
    author, liker = graph.users(2)
    _push_subscriber(db_session, author)
    post = graph.post(author)
    with freeze_time(T0) as clock:
        _likes(graph, db_session, author, post, [liker])
        clock.tick(timedelta(seconds=30))
        mark_read(db_session, author, notification_ids=None, all=True, now=datetime.now(timezone.utc))
        clock.tick(timedelta(seconds=100))
        assert dispatch(db_session, datetime.now(timezone.utc)) == []
    [row] = deliveries(db_session, author)
    assert (row["status"], row["error"]) == ("skipped", "read before it was due")


@pytest.mark.parametrize(("local_now", "deferred_to"), [
    ("23:30", "07:00"),   # inside a window that wraps midnight: deferred to its end, the next morning
    ("06:59", "07:00"),
    ("07:00", None),      # the end is exclusive
    ("21:59", None),
])
def test_quiet_hours_defer_push_to_their_end_in_the_users_zone(graph, db_session, local_now, deferred_to):
    from zoneinfo import ZoneInfo

    berlin = ZoneInfo("Europe/Berlin")
    author, liker = graph.users(2)
    _push_subscriber(db_session, author)
    db_session.execute(text(
        "INSERT INTO notification_settings (user_id, timezone, quiet_start, quiet_end) "
        "VALUES (:u, 'Europe/Berlin', '22:00', '07:00')"), {"u": author})
    hour, minute = map(int, local_now.split(":"))
    local = datetime(2026, 11, 30, hour, minute, tzinfo=berlin)
    post = graph.post(author)
    _likes(graph, db_session, author, post, [liker], at=local.astimezone(timezone.utc) - timedelta(minutes=3))
    with freeze_time(local.astimezone(timezone.utc)):
        claimed = dispatch(db_session, datetime.now(timezone.utc))
    [row] = deliveries(db_session, author)
    if deferred_to is None:
        assert len(claimed) == 1 and row["status"] == "queued"
    else:
        assert claimed == [] and row["status"] == "pending"
        due_local = row["due_at"].astimezone(berlin)
        assert due_local.strftime("%H:%M") == deferred_to and due_local > local


def test_quiet_hours_do_not_defer_email(graph, db_session):
    author, commenter = graph.users(2)
    db_session.execute(text(
        "INSERT INTO notification_settings (user_id, timezone, quiet_start, quiet_end) "
        "VALUES (:u, 'UTC', '00:00', '23:59')"), {"u": author})
    post = graph.post(author)
    with freeze_time(T0) as clock:
        record(db_session, "comment", graph.comment(commenter, post, "lovely", now()))
        clock.tick(timedelta(seconds=121))
        claimed = dispatch(db_session, datetime.now(timezone.utc))
    assert [channel for channel, _ in claimed] == ["email"]


@pytest.mark.parametrize(("kind", "email", "push"), [
    ("comment", True, True), ("follow", True, True), ("like", False, True), ("emoji_reaction", False, True),
])
def test_default_channels_when_no_preference_row_exists(graph, db_session, kind, email, push):
    author, actor = graph.users(2)
    _push_subscriber(db_session, author)
    post = graph.post(author)
    with freeze_time(T0) as clock:
        if kind == "comment":
            record(db_session, kind, graph.comment(actor, post, "hi", now()))
        elif kind == "follow":
            record(db_session, kind, graph.follow(actor, author, now()))
        elif kind == "like":
            record(db_session, kind, graph.like(actor, post, now()))
        else:
            record(db_session, kind, graph.react(actor, post, "fire", now()))
        clock.tick(timedelta(seconds=121))
        channels = sorted(channel for channel, _ in dispatch(db_session, datetime.now(timezone.utc)))
    assert channels == sorted([c for c, on in (("email", email), ("push", push)) if on])


def test_a_preference_row_and_the_global_email_switch_override_the_defaults(graph, db_session):
    author, a, b = graph.users(3)
    _push_subscriber(db_session, author)
    db_session.execute(text(
        "INSERT INTO notification_preferences (user_id, notification_type, channel, enabled) VALUES "
        "(:u, 'like', 'email', true), (:u, 'like', 'push', false)"), {"u": author})
    post = graph.post(author)
    with freeze_time(T0) as clock:
        _likes(graph, db_session, author, post, [a])
        clock.tick(timedelta(seconds=121))
        assert [c for c, _ in dispatch(db_session, datetime.now(timezone.utc))] == ["email"]
        db_session.execute(text("INSERT INTO notification_settings (user_id, email_enabled) VALUES (:u, false)"),
                           {"u": author})
        record(db_session, "comment", graph.comment(b, post, "hi", now()))
        clock.tick(timedelta(seconds=121))
        assert [c for c, _ in dispatch(db_session, datetime.now(timezone.utc))] == ["push"]


def test_no_push_is_planned_without_a_subscription_or_a_vapid_key(graph, db_session):
    author, a, b = graph.users(3)
    post = graph.post(author)
    with freeze_time(T0) as clock:
        _likes(graph, db_session, author, post, [a])
        clock.tick(timedelta(seconds=121))
        assert dispatch(db_session, datetime.now(timezone.utc)) == []
        _push_subscriber(db_session, author)
        _likes(graph, db_session, author, post, [b])
        clock.tick(timedelta(seconds=121))
        assert dispatch(db_session, datetime.now(timezone.utc), push=False) == []
    assert deliveries(db_session, author) == []


def test_quiet_until_handles_windows_and_unknown_zones():
    at = datetime(2026, 11, 30, 23, 0, tzinfo=timezone.utc)
    assert policy.quiet_until(at, "UTC", time(22), time(7)) == datetime(2026, 12, 1, 7, tzinfo=timezone.utc)
    assert policy.quiet_until(at, "Not/AZone", time(22), time(7)) == datetime(2026, 12, 1, 7, tzinfo=timezone.utc)
    assert policy.quiet_until(at, "UTC", time(9), time(17)) is None
    assert policy.quiet_until(at, "UTC", time(9), time(9)) is None
    assert policy.quiet_until(at, "UTC", None, None) is None


def test_push_topic_is_stable_per_batch_and_valid_for_rfc8030():
    import re

    topic = policy.push_topic(7, "post_interaction:post:abc")
    assert topic == policy.push_topic(7, "post_interaction:post:abc") != policy.push_topic(8, "post_interaction:post:abc")
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,32}", topic)
