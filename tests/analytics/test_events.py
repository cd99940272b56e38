"""Engagement events and the raw event log: one row per event id (the task id), typed
refusals of bad input with nothing written, and the same through a real worker."""
from __future__ import annotations

import uuid
from decimal import Decimal

import pytest
from sqlalchemy import text

from tasks.analytics import events
from tests.analytics.conftest import make_world
from tests.operations.conftest import dead_letter, wait_until
from workers.errors import InvalidArguments


def _user_and_post(session) -> tuple[int, str]:
    user = session.execute(text(
        "INSERT INTO users (email, username, hashed_password) VALUES ('ev@example.com', 'ev_user', '!') "
        "RETURNING id")).scalar_one()
    post = session.execute(text(
        "INSERT INTO posts (author_id, content) VALUES (:u, 'a post') RETURNING id::text"), {"u": user}).scalar_one()
    return user, post


def _engagements(session, event_id: str | None = None) -> list[tuple]:
    sql = "SELECT id::text, user_id, post_id::text, engagement_type, value, metadata FROM user_engagement"
    if event_id is not None:
        return [tuple(r) for r in session.execute(text(sql + " WHERE id = CAST(:id AS uuid)"), {"id": event_id})]
    return [tuple(r) for r in session.execute(text(sql))]


def _events(session, event_id: str) -> list[tuple]:
    return [tuple(r) for r in session.execute(text(
        "SELECT id::text, user_id, event_type, event_data FROM analytics_events WHERE id = CAST(:id AS uuid)"),
        {"id": event_id})]


# --- record_engagement -----------------------------------------------------------------

def test_record_engagement_inserts_once_per_event_id(db_session):
    user, post = _user_and_post(db_session)
    event_id = str(uuid.uuid4())
    assert events.record_engagement(db_session, event_id, user, post, "CLICK", 2.5, {"source": "feed"}) == "recorded"
    assert _engagements(db_session, event_id) == [(event_id, user, post, "CLICK", Decimal("2.50"), {"source": "feed"})]
    # The same event again (a redelivered message): nothing more.
    assert events.record_engagement(db_session, event_id, user, post, "CLICK", 2.5, {"source": "feed"}) == "duplicate"
    # Even with other arguments: the id decides.
    assert events.record_engagement(db_session, event_id, user, post, "SAVE") == "duplicate"
    assert len(_engagements(db_session, event_id)) == 1
    # Another event of the same kind is another row (a CLICK repeats by nature).
    other = str(uuid.uuid4())
    assert events.record_engagement(db_session, other, user, post, "CLICK") == "recorded"
    assert _engagements(db_session, other) == [(other, user, post, "CLICK", Decimal("1.00"), None)]


@pytest.mark.parametrize("value, stored", [(999.99, Decimal("999.99")), (-999.99, Decimal("-999.99")),
                                           (0, Decimal("0.00")), (1.234, Decimal("1.23"))])
def test_record_engagement_values_at_and_inside_the_bounds(db_session, value, stored):
    user, post = _user_and_post(db_session)
    event_id = str(uuid.uuid4())
    assert events.record_engagement(db_session, event_id, user, post, "VIEW", value) == "recorded"
    assert _engagements(db_session, event_id)[0][4] == stored


def test_record_engagement_of_a_user_or_post_that_is_gone(db_session):
    user, post = _user_and_post(db_session)
    missing_user = user + 1000
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    assert events.record_engagement(db_session, first, missing_user, post, "LIKE") == "gone"
    assert events.record_engagement(db_session, second, user, str(uuid.uuid4()), "LIKE") == "gone"
    assert _engagements(db_session) == []


def test_metadata_of_exactly_the_limit_is_accepted(db_session):
    user, post = _user_and_post(db_session)
    event_id = str(uuid.uuid4())
    # '{"blob":"' (9 bytes) + 4085 + '"}' (2 bytes) = 4096 bytes as compact JSON
    assert events.record_engagement(db_session, event_id, user, post, "SAVE", 1.0, {"blob": "x" * 4085}) == "recorded"
    assert _engagements(db_session, event_id)[0][5] == {"blob": "x" * 4085}


BAD_ENGAGEMENTS = [
    ({"engagement_type": "BOGUS"},
     "engagement_type must be one of LIKE, SHARE, COMMENT, VIEW, CLICK, SAVE, got 'BOGUS'"),
    ({"engagement_type": "click"}, "engagement_type must be one of"),
    ({"engagement_type": ""}, "engagement_type must be one of"),
    ({"value": 1000}, "value must be between -999.99 and 999.99, got 1000"),
    ({"value": -1000}, "value must be between -999.99 and 999.99, got -1000"),
    ({"value": 999.995}, "value must be between"),
    ({"value": float("nan")}, "value must be between -999.99 and 999.99, got nan"),
    ({"value": float("inf")}, "value must be between"),
    # '{"blob":"' + 4086 + '"}' = 4097 bytes
    ({"metadata": {"blob": "x" * 4086}}, "metadata is 4097 bytes as JSON; the limit is 4096"),
    ({"metadata": {"score": float("nan")}}, "metadata holds NaN or Infinity"),
    ({"metadata": {"nested": [1, {"x": float("-inf")}]}}, "metadata holds NaN or Infinity"),
    ({"metadata": {"text": "a\x00b"}}, "metadata holds a NUL character"),
]


@pytest.mark.parametrize("bad, message", BAD_ENGAGEMENTS, ids=[m[:40] for _b, m in BAD_ENGAGEMENTS])
def test_record_engagement_refuses_bad_input_and_writes_nothing(db_session, bad, message):
    user, post = _user_and_post(db_session)
    arguments = {"engagement_type": "CLICK", "value": 1.0, "metadata": None, **bad}
    event_id = str(uuid.uuid4())
    with pytest.raises(InvalidArguments) as raised:
        events.record_engagement(db_session, event_id, user, post, **arguments)
    assert message in str(raised.value)
    assert raised.value.code == "invalid_arguments"
    assert _engagements(db_session) == []
    # Refused before the id was claimed: the same id with good input is recorded.
    assert events.record_engagement(db_session, event_id, user, post, "CLICK") == "recorded"


# --- record_event ------------------------------------------------------------------------

def test_record_event_inserts_once_per_event_id(db_session):
    user, _post = _user_and_post(db_session)
    event_id = str(uuid.uuid4())
    data = {"page": "/explore", "ms": 120}
    assert events.record_event(db_session, event_id, user, "page_view", data) == "recorded"
    assert _events(db_session, event_id) == [(event_id, user, "page_view", data)]
    assert events.record_event(db_session, event_id, user, "page_view", data) == "duplicate"
    assert len(_events(db_session, event_id)) == 1
    fifty = "e" * 50
    other = str(uuid.uuid4())
    assert events.record_event(db_session, other, user, fifty) == "recorded"
    assert _events(db_session, other) == [(other, user, fifty, None)]


def test_record_event_of_a_user_that_is_gone(db_session):
    user, _post = _user_and_post(db_session)
    event_id = str(uuid.uuid4())
    assert events.record_event(db_session, event_id, user + 1000, "login") == "gone"
    assert _events(db_session, event_id) == []


BAD_EVENTS = [
    ({"event_type": ""}, "event_type must be 1 to 50 printable characters"),
    ({"event_type": "e" * 51}, "event_type must be 1 to 50 printable characters"),
    ({"event_type": "bad\ntype"}, "event_type must be 1 to 50 printable characters"),
    ({"event_data": {"blob": "x" * 4086}}, "event_data is 4097 bytes as JSON; the limit is 4096"),
    ({"event_data": {"ratio": float("nan")}}, "event_data holds NaN or Infinity"),
]


@pytest.mark.parametrize("bad, message", BAD_EVENTS, ids=[m[:40] for _b, m in BAD_EVENTS])
def test_record_event_refuses_bad_input_and_writes_nothing(db_session, bad, message):
    user, _post = _user_and_post(db_session)
    arguments = {"event_type": "login", "event_data": None, **bad}
    event_id = str(uuid.uuid4())
    with pytest.raises(InvalidArguments) as raised:
        events.record_event(db_session, event_id, user, **arguments)
    assert message in str(raised.value)
    assert db_session.execute(text("SELECT count(*) FROM analytics_events")).scalar() == 0


# --- event ids -----------------------------------------------------------------------------

def test_event_uuid_keeps_a_uuid_task_id():
    task_id = "3f2c1e9a-8b7d-4c6e-9f00-112233445566"
    assert events.event_uuid(task_id) == task_id
    # The canonical spelling of the same UUID.
    assert events.event_uuid("3F2C1E9A-8B7D-4C6E-9F00-112233445566") == task_id


def test_event_uuid_derives_a_stable_uuid5_from_any_other_id():
    first = events.event_uuid("beat-2026-03-10T12:00")
    assert uuid.UUID(first).version == 5
    assert events.event_uuid("beat-2026-03-10T12:00") == first          # the same id, the same event
    assert events.event_uuid("beat-2026-03-10T12:01") != first
    assert events.event_uuid("") != first and uuid.UUID(events.event_uuid("")).version == 5


def test_event_uuid_of_no_task_id_is_fresh():
    first, second = events.event_uuid(None), events.event_uuid(None)
    assert first != second
    assert uuid.UUID(first).version == 4 and uuid.UUID(second).version == 4


# --- through a real worker --------------------------------------------------------------

@pytest.mark.integration
def test_a_task_delivered_twice_with_one_id_records_one_row(celery_worker, clean_db):
    from celery.result import AsyncResult

    from tasks.analytics.tasks import record_engagement

    world = make_world(clean_db, users=1, posts=1)
    user, post = world.users[0], world.posts[0]
    task_id = str(uuid.uuid4())
    first = record_engagement.apply_async(args=[user, post, "CLICK"], task_id=task_id)
    assert first.get(timeout=30) == {"status": "recorded", "event_id": task_id}
    AsyncResult(task_id, app=celery_worker.app).forget()    # so the second get waits for the second run
    second = record_engagement.apply_async(args=[user, post, "CLICK"], task_id=task_id)
    assert second.get(timeout=30) == {"status": "duplicate", "event_id": task_id}
    with clean_db.connect() as connection:
        assert _engagements(connection) == [(task_id, user, post, "CLICK", Decimal("1.00"), None)]


@pytest.mark.integration
def test_a_bad_engagement_type_is_a_dead_letter_and_the_worker_goes_on(celery_worker, clean_db):
    from tasks.analytics.tasks import record_engagement, record_event

    world = make_world(clean_db, users=1, posts=1)
    user, post = world.users[0], world.posts[0]
    bad = record_engagement.apply_async(args=[user, post, "BOGUS"])
    with pytest.raises(InvalidArguments, match="engagement_type must be one of"):
        bad.get(timeout=30)
    letter = wait_until(lambda: dead_letter(clean_db, bad.id), what="dead letter")
    assert letter["task_name"] == "analytics.record_engagement"
    assert letter["error_code"] == "invalid_arguments"
    assert letter["exception_type"] == "InvalidArguments"
    assert "got 'BOGUS'" in letter["exception_message"]
    assert letter["args"] == [user, post, "BOGUS"]
    assert letter["queue"] == "analytics" and letter["status"] == "dead" and letter["attempts"] == 1

    good = record_engagement.apply_async(args=[user, post, "SAVE"], kwargs={"metadata": {"from": "test"}})
    assert good.get(timeout=30) == {"status": "recorded", "event_id": good.id}
    event = record_event.apply_async(args=[user, "login"], kwargs={"event_data": {"via": "app"}})
    assert event.get(timeout=30) == {"status": "recorded", "event_id": event.id}
    with clean_db.connect() as connection:
        assert _engagements(connection) == [(good.id, user, post, "SAVE", Decimal("1.00"), {"from": "test"})]
        assert _events(connection, event.id) == [(event.id, user, "login", {"via": "app"})]
        assert connection.execute(text("SELECT count(*) FROM dead_letters")).scalar() == 1
