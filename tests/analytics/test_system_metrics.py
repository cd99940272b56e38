"""system_metrics: one sample a minute (a redelivered sampler adds nothing), and minute
samples older than 7 days averaged into hourly ones, whole UTC hours only."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
import redis
from sqlalchemy import text

import celeryconfig
from tasks.analytics import system_metrics
from tests.conftest import redis_url_for

UTC = timezone.utc


def _rows(session, at: datetime | None = None) -> list[tuple[str, dict, Decimal]]:
    sql = "SELECT metric_name, tags, metric_value FROM system_metrics WHERE resolution = 'minute'"
    params = {}
    if at is not None:
        sql += " AND sampled_at = :at"
        params["at"] = at
    return [tuple(r) for r in session.execute(text(sql + " ORDER BY 1, tags::text"), params)]


def _dead_letter(session, task_id: str) -> None:
    session.execute(text(
        "INSERT INTO dead_letters (task_id, task_name, exception_type, error_code) "
        "VALUES (:t, 'analytics.record_event', 'InvalidArguments', 'invalid_arguments')"), {"t": task_id})


def test_sample_writes_every_queue_and_the_database_once_a_minute(db_session):
    from workers.broker import redis_client
    from workers.celery_app import app

    session = db_session
    dead_before = session.execute(text("SELECT count(*) FROM dead_letters")).scalar_one()
    _dead_letter(session, "metrics-dead-1")
    _dead_letter(session, "metrics-dead-2")
    minute = datetime(2031, 1, 2, 12, 0, tzinfo=UTC)

    result = system_metrics.sample(session, app, redis_client(), now=minute + timedelta(seconds=5))
    rows = _rows(session, minute)
    assert result["status"] == "ok" and result["queues"] == len(celeryconfig.QUEUE_NAMES) == 13
    assert result["samples"] == len(rows)
    by_metric: dict[str, list] = {}
    for name, tags, value in rows:
        by_metric.setdefault(name, []).append((tags, value))

    assert sorted(t["queue"] for t, _v in by_metric["queue_depth"]) == sorted(celeryconfig.QUEUE_NAMES)
    assert all(v >= 0 and v == int(v) for _t, v in by_metric["queue_depth"])
    # The broker is Redis, so each queue's oldest-message age is sampled too.
    assert sorted(t["queue"] for t, _v in by_metric["queue_oldest_age_seconds"]) == sorted(celeryconfig.QUEUE_NAMES)
    assert by_metric["dead_letters"] == [({}, dead_before + 2)]
    [(tags, size)] = by_metric["database_bytes"]
    assert tags == {}
    actual = session.execute(text("SELECT pg_database_size(current_database())")).scalar_one()
    assert 0.9 * actual <= size <= 1.1 * actual
    tables = by_metric["table_bytes"]
    assert len(tables) == system_metrics.LARGEST_TABLES == 5
    public = set(session.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")).scalars())
    assert {t["table"] for t, _v in tables} <= public
    assert all(v > 0 for _t, v in tables)
    assert set(by_metric) <= {"queue_depth", "queue_oldest_age_seconds", "tasks_total", "dead_letters",
                              "database_bytes", "table_bytes"}

    # The same minute again (a redelivered sampler): nothing added, nothing changed, even
    # though by then another table is among the largest (a series the first sample lacks).
    session.execute(text("CREATE TABLE metrics_test_big AS SELECT repeat('x', 1000) AS filler "
                         "FROM generate_series(1, 3000)"))
    _dead_letter(session, "metrics-dead-3")
    again = system_metrics.sample(session, app, redis_client(), now=minute + timedelta(seconds=55))
    assert again["samples"] == 0
    assert _rows(session) == rows

    # The next minute is a new sample.
    later = system_metrics.sample(session, app, redis_client(), now=minute + timedelta(minutes=1))
    next_rows = _rows(session, minute + timedelta(minutes=1))
    assert later["samples"] == len(next_rows) == len(rows)
    assert [(t, v) for n, t, v in next_rows if n == "dead_letters"] == [({}, dead_before + 3)]
    assert {"table": "metrics_test_big"} in [t for n, t, _v in next_rows if n == "table_bytes"]


@pytest.fixture
def lone_broker():
    """A Celery app and a Redis client on a broker database no worker consumes (db 9)."""
    from celery import Celery

    url = redis_url_for(9)
    client = redis.Redis.from_url(url)
    client.flushdb()
    app = Celery("metrics-test", set_as_current=False)
    app.config_from_object("celeryconfig")
    app.conf.update(broker_url=url, result_backend=None)
    try:
        yield app, client
    finally:
        client.flushdb()
        client.close()


def test_sample_counts_waiting_messages_and_task_totals(db_session, lone_broker):
    app, client = lone_broker
    for _ in range(3):
        app.send_task("feed.score_users", args=[[1]])
    app.send_task("upkeep.run", args=[])
    # Histograms as the workers' task_postrun handler keeps them: only the count matters here.
    for task, state, count in [("feed.score_users", "SUCCESS", 3), ("feed.update_trending", "SUCCESS", 2),
                               ("feed.score_users", "FAILURE", 1), ("images.process", "RETRY", 4),
                               ("analytics.flush_counters", "SUCCESS", 5)]:
        client.hset(f"jobs:metrics:duration:{task}|{state}", mapping={"count": count, "sum": 1.0, "b0": count})
    minute = datetime(2031, 1, 2, 13, 30, tzinfo=UTC)

    system_metrics.sample(db_session, app, client, now=minute)
    rows = _rows(db_session, minute)
    depths = {tags["queue"]: value for name, tags, value in rows if name == "queue_depth"}
    assert depths == {q: (3 if q == "feed" else 1 if q == "upkeep" else 0) for q in celeryconfig.QUEUE_NAMES}
    ages = {tags["queue"]: value for name, tags, value in rows if name == "queue_oldest_age_seconds"}
    assert 0 <= ages["feed"] < 120 and 0 <= ages["upkeep"] < 120   # sent a moment ago
    assert all(ages[q] == 0 for q in celeryconfig.QUEUE_NAMES if q not in ("feed", "upkeep"))
    totals = {(tags["family"], tags["state"]): value for name, tags, value in rows if name == "tasks_total"}
    assert totals == {("feed", "success"): 5, ("feed", "failure"): 1, ("analytics", "success"): 5}


# --- downsampling ----------------------------------------------------------------------

NOW = datetime(2026, 3, 20, 10, 37, tzinfo=UTC)          # cutoff: 2026-03-13 10:00 UTC
A, B = {"host": "a"}, {"host": "b"}

MINUTE_SAMPLES = [
    # ~9 days ago, hour 2026-03-11 09:00: host a 1, 2, 6 (mean 3); host b 10, 20 (mean 15); test_queue 4
    ("test_load", A, datetime(2026, 3, 11, 9, 0), "1"),
    ("test_load", A, datetime(2026, 3, 11, 9, 15), "2"),
    ("test_load", A, datetime(2026, 3, 11, 9, 59), "6"),
    ("test_load", B, datetime(2026, 3, 11, 9, 30), "10"),
    ("test_load", B, datetime(2026, 3, 11, 9, 31), "20"),
    ("test_queue", {}, datetime(2026, 3, 11, 9, 10), "4"),
    # ~10 days ago, hour 2026-03-10 11:00: 1, 2, 2 → 5/3, rounded to 1.6667
    ("test_load", A, datetime(2026, 3, 10, 11, 5), "1"),
    ("test_load", A, datetime(2026, 3, 10, 11, 6), "2"),
    ("test_load", A, datetime(2026, 3, 10, 11, 7), "2"),
    # ~8 days ago, hour 2026-03-12 08:00, a half-hour split in a +05:30 zone: 08:10 and 08:50 → mean 4
    ("test_load", A, datetime(2026, 3, 12, 8, 10), "3"),
    ("test_load", A, datetime(2026, 3, 12, 8, 50), "5"),
    # the last whole hour before the cutoff
    ("test_load", A, datetime(2026, 3, 13, 9, 59), "7"),
    # at the cutoff and after: minute samples, untouched (09:59 above is the last moved)
    ("test_load", A, datetime(2026, 3, 13, 10, 0), "100"),
    ("test_load", A, datetime(2026, 3, 13, 10, 20), "50"),    # older than 7 days, but its hour is not whole
    ("test_load", A, datetime(2026, 3, 19, 23, 0), "9"),
]

EXPECTED_HOURS = {
    ("test_load", json.dumps(A), datetime(2026, 3, 10, 11, tzinfo=UTC), Decimal("1.6667")),
    ("test_load", json.dumps(A), datetime(2026, 3, 11, 9, tzinfo=UTC), Decimal("3")),
    ("test_load", json.dumps(B), datetime(2026, 3, 11, 9, tzinfo=UTC), Decimal("15")),
    ("test_queue", "{}", datetime(2026, 3, 11, 9, tzinfo=UTC), Decimal("4")),
    ("test_load", json.dumps(A), datetime(2026, 3, 12, 8, tzinfo=UTC), Decimal("4")),
    ("test_load", json.dumps(A), datetime(2026, 3, 13, 9, tzinfo=UTC), Decimal("7")),
}
EXPECTED_MINUTES = {
    ("test_load", json.dumps(A), datetime(2026, 3, 13, 10, 0, tzinfo=UTC), Decimal("100")),
    ("test_load", json.dumps(A), datetime(2026, 3, 13, 10, 20, tzinfo=UTC), Decimal("50")),
    ("test_load", json.dumps(A), datetime(2026, 3, 19, 23, 0, tzinfo=UTC), Decimal("9")),
}


def _insert_minutes(session, samples) -> None:
    for name, tags, at, value in samples:
        session.execute(text(
            "INSERT INTO system_metrics (metric_name, metric_value, tags, sampled_at) "
            "VALUES (:n, CAST(:v AS numeric), CAST(:t AS jsonb), :at)"),
            {"n": name, "v": value, "t": json.dumps(tags), "at": at.replace(tzinfo=UTC)})


def _stored(session, resolution: str) -> set[tuple]:
    return {(n, json.dumps(t), at.astimezone(UTC), v) for n, t, at, v in session.execute(text(
        "SELECT metric_name, tags, sampled_at, metric_value FROM system_metrics "
        "WHERE resolution = :r AND metric_name LIKE 'test\\_%'"), {"r": resolution})}


@pytest.mark.parametrize("session_zone", ["UTC", "Asia/Kolkata"])
def test_downsample_averages_whole_utc_hours_older_than_the_cutoff(db_session, session_zone):
    # The hours are UTC hours whatever the session's TimeZone (+05:30 splits them otherwise).
    db_session.execute(text(f"SET LOCAL TimeZone = '{session_zone}'"))
    _insert_minutes(db_session, MINUTE_SAMPLES)

    assert system_metrics.downsample(db_session, NOW) == len(EXPECTED_HOURS)
    assert _stored(db_session, "hour") == EXPECTED_HOURS
    assert _stored(db_session, "minute") == EXPECTED_MINUTES

    # Again at the same time: nothing left to move.
    assert system_metrics.downsample(db_session, NOW) == 0
    assert _stored(db_session, "hour") == EXPECTED_HOURS
    assert _stored(db_session, "minute") == EXPECTED_MINUTES


@pytest.mark.parametrize("session_zone", ["UTC", "Asia/Kolkata"])
def test_downsample_an_hour_later_moves_the_next_hour_only(db_session, session_zone):
    db_session.execute(text(f"SET LOCAL TimeZone = '{session_zone}'"))
    _insert_minutes(db_session, MINUTE_SAMPLES)
    system_metrics.downsample(db_session, NOW)
    # A sample arrives for 10:40, then an hour later (cutoff 11:00) the 10:00 hour is whole: 100, 50, 30 → 60.
    _insert_minutes(db_session, [("test_load", A, datetime(2026, 3, 13, 10, 40), "30")])
    assert system_metrics.downsample(db_session, NOW + timedelta(hours=1)) == 1
    assert _stored(db_session, "hour") == EXPECTED_HOURS | {
        ("test_load", json.dumps(A), datetime(2026, 3, 13, 10, tzinfo=UTC), Decimal("60"))}
    assert _stored(db_session, "minute") == {
        ("test_load", json.dumps(A), datetime(2026, 3, 19, 23, 0, tzinfo=UTC), Decimal("9"))}


def test_downsample_with_a_local_now_uses_the_same_cutoff(db_session):
    # 16:07 at +05:30 is 10:37 UTC: the cutoff is still 2026-03-13 10:00 UTC.
    local_now = NOW.astimezone(timezone(timedelta(hours=5, minutes=30)))
    _insert_minutes(db_session, MINUTE_SAMPLES)
    system_metrics.downsample(db_session, local_now)
    assert _stored(db_session, "hour") == EXPECTED_HOURS
    assert _stored(db_session, "minute") == EXPECTED_MINUTES
