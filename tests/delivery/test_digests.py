"""Daily and weekly digests: who gets one at which UTC hour, what is in it, and that it is built once."""
from __future__ import annotations

import contextlib
from datetime import datetime, timedelta, timezone

import pytest
from freezegun import freeze_time
from sqlalchemy import text

from tasks.delivery import digests, sending
from tests.notifications.builders import record

MONDAY_07_UTC = "2026-11-30 07:10:00"   # 08:10 in Berlin (CET), 02:10 in New York, 07:10 in London


def _user_in(graph, session, zone: str | None, digest: str = "daily") -> int:
    [user] = graph.users(1)
    if zone is not None or digest != "daily":
        session.execute(text("INSERT INTO notification_settings (user_id, timezone, digest) VALUES (:u, :z, :d)"),
                        {"u": user, "z": zone or "UTC", "d": digest})
    return user


def _unread_like(graph, session, user: int, at: datetime) -> str:
    [liker] = graph.users(1)
    post = graph.post(user)
    [outcome] = record(session, "like", graph.like(liker, post, at))
    return outcome.notification_id


def _digest_users(session, now: datetime) -> set[int]:
    ids = digests.build(session, now=now)
    return set(session.execute(text("SELECT user_id FROM digests WHERE id = ANY(CAST(:ids AS uuid[]))"),
                               {"ids": ids}).scalars())


@pytest.mark.parametrize(("utc", "zones_due"), [
    ("2026-11-30 07:10:00", {"Europe/Berlin"}),
    ("2026-11-30 08:59:59", {"UTC", "Europe/London", "Not/AZone"}),
    ("2026-11-30 13:00:00", {"America/New_York"}),
    ("2026-11-30 06:59:59", set()),
])
def test_the_digest_goes_to_users_whose_local_time_is_eight(graph, db_session, utc, zones_due):
    zones = ["Europe/Berlin", "UTC", "Europe/London", "America/New_York", "Not/AZone"]
    with freeze_time(utc):
        now = datetime.now(timezone.utc)
        users = {zone: _user_in(graph, db_session, zone) for zone in zones}
        for user in users.values():
            _unread_like(graph, db_session, user, now - timedelta(hours=2))
        assert _digest_users(db_session, now) == {users[z] for z in zones_due}


def test_weekly_digests_go_out_on_monday_only(graph, db_session):
    with freeze_time(MONDAY_07_UTC) as clock:
        weekly = _user_in(graph, db_session, "UTC", "weekly")
        off = _user_in(graph, db_session, "UTC", "off")
        for user in (weekly, off):
            _unread_like(graph, db_session, user, datetime.now(timezone.utc) - timedelta(days=3))
        clock.move_to("2026-11-30 08:30:00")
        assert _digest_users(db_session, datetime.now(timezone.utc)) == {weekly}   # 3 days old: in the week
        clock.move_to("2026-12-01 08:30:00")
        assert _digest_users(db_session, datetime.now(timezone.utc)) == set()


def test_the_digest_holds_unread_undelivered_and_low_items_of_the_day(graph, db_session):
    with freeze_time("2026-11-30 08:30:00"):
        now = datetime.now(timezone.utc)
        user = _user_in(graph, db_session, None)
        undelivered = _unread_like(graph, db_session, user, now - timedelta(hours=3))
        pushed = _unread_like(graph, db_session, user, now - timedelta(hours=2))
        db_session.execute(text(
            "INSERT INTO deliveries (notification_id, user_id, channel, version, status, due_at, sent_at) "
            "VALUES (:n, :u, 'push', 1, 'sent', :at, :at)"), {"n": pushed, "u": user, "at": now})
        folded = _unread_like(graph, db_session, user, now - timedelta(hours=1))
        db_session.execute(text(
            "INSERT INTO deliveries (notification_id, user_id, channel, version, status, due_at) "
            "VALUES (:n, :u, 'push', 1, 'folded', :at)"), {"n": folded, "u": user, "at": now})
        read = _unread_like(graph, db_session, user, now - timedelta(hours=1))
        db_session.execute(text("UPDATE notifications SET read = true, read_at = :at WHERE id = :n"),
                           {"n": read, "at": now})
        yesterday = _unread_like(graph, db_session, user, now - timedelta(hours=25))
        low = db_session.execute(text(
            "INSERT INTO notifications (user_id, type, priority, title, message, created_at, last_updated_at) "
            "VALUES (:u, 'tip', 'low', 'Tip', 'Try a photo post', :at, :at) RETURNING id::text"),
            {"u": user, "at": now - timedelta(minutes=5)}).scalar()
        [digest_id] = digests.build(db_session, now=now)
        assert digests.build(db_session, now=now + timedelta(minutes=20)) == []   # once per local day
    ids, count = db_session.execute(text("SELECT notification_ids::text[], item_count FROM digests WHERE id = :id"),
                                    {"id": digest_id}).one()
    assert set(ids) == {undelivered, folded, low} and count == 3
    assert pushed not in ids and read not in ids and yesterday not in ids


def test_a_digest_is_one_email_listing_its_items(graph, db_session, delivery_env):
    @contextlib.contextmanager
    def same_session():
        with db_session.begin_nested():
            yield db_session

    now = datetime.now(timezone.utc)
    # Real time (the SMTP server's event loop runs on it): some zone where it is 08:xx now.
    zone = db_session.execute(text(
        "SELECT name FROM pg_timezone_names WHERE name LIKE '%/%' "
        "AND extract(hour FROM CAST(:now AS timestamptz) AT TIME ZONE name) = 8 ORDER BY name LIMIT 1"),
        {"now": now}).scalar_one()
    user = _user_in(graph, db_session, zone)
    for hours in (1, 2):
        _unread_like(graph, db_session, user, now - timedelta(hours=hours))
    [digest_id] = digests.build(db_session, now=now)
    config = sending.DeliveryConfig.from_settings()
    assert digests.deliver(digest_id, sessions=same_session, config=config)["status"] == "sent"
    assert digests.deliver(digest_id, sessions=same_session, config=config)["status"] == "duplicate"
    [mail] = delivery_env["mail"].wait_for(1)
    assert mail.message["Subject"] == "Your daily Grateful digest: 2 unread"
    plain = mail.message.get_body(("plain",)).get_content()
    assert plain.count("liked your post") == 2 and mail.message["List-Unsubscribe"]


def test_dispatch_claims_built_digests_once_in_bounded_chunks(graph, db_session):
    from tasks.delivery import planning

    with freeze_time("2026-11-30 08:30:00"):
        now = datetime.now(timezone.utc)
        users = [_user_in(graph, db_session, None) for _ in range(3)]
        for user in users:
            _unread_like(graph, db_session, user, now - timedelta(hours=1))
        built = set(digests.build(db_session, now=now))
        first = planning.claim_due(db_session, now=now, chunk=2)
        second = planning.claim_due(db_session, now=now, chunk=2)
        third = planning.claim_due(db_session, now=now, chunk=2)
    assert len(built) == 3 and len(first) == 2 and len(second) == 1 and third == []
    assert {row_id for _, row_id in first + second} == built
    assert {kind for kind, _ in first + second} == {"digest"}
