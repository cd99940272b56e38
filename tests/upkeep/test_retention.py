"""Retention (tasks/upkeep/retention.py) against a real PostgreSQL, at frozen dates.

The boundary tests run the job itself (``jobs.apply_retention``) under freezegun,
so the run's "now" is the frozen clock; rows carry explicit timestamps.
"""
from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
from freezegun import freeze_time
from sqlalchemy import text

import settings
from db import partitions
from db.partitions import add_months, partition_name, spec_for
from db.session import session_scope
from tasks.upkeep import jobs, retention
from tasks.upkeep.retention import RETENTION_POLICIES
from workers.errors import JobError

UTC = timezone.utc
NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
AUDIT = spec_for("audit_log")
ENGAGEMENT = spec_for("user_engagement")


def at(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def policy(name: str) -> retention.RowPolicy:
    return next(p for p in RETENTION_POLICIES if p.name == name)


def run_job(now: datetime, **kwargs) -> dict:
    with freeze_time(now):
        return jobs.apply_retention(**kwargs)


def scalar(engine, sql: str, **params):
    with engine.connect() as connection:
        return connection.execute(text(sql), params).scalar()


def ids(engine, sql: str, **params) -> set[str]:
    with engine.connect() as connection:
        return {str(v) for v in connection.execute(text(sql), params).scalars()}


def exists(engine, relation: str) -> bool:
    return scalar(engine, "SELECT to_regclass(:n) IS NOT NULL", n=relation)


def make_user(engine, name: str = "u") -> int:
    with engine.begin() as connection:
        return connection.execute(text(
            "INSERT INTO users (email, username, hashed_password) VALUES (:e, :u, 'x') RETURNING id"),
            {"e": f"{name}@example.org", "u": name}).scalar_one()


def add_sessions(engine, user_id: int, expires: list[datetime]) -> list[str]:
    with engine.begin() as connection:
        return [str(connection.execute(text(
            "INSERT INTO user_sessions (user_id, refresh_token_hash, expires_at) VALUES (:u, 'h', :e) RETURNING id"),
            {"u": user_id, "e": moment}).scalar_one()) for moment in expires]


def add_many_sessions(engine, user_id: int, n: int, expires: datetime) -> None:
    with engine.begin() as connection:
        connection.execute(text(
            "INSERT INTO user_sessions (user_id, refresh_token_hash, expires_at) "
            "SELECT :u, 'h' || g, :e FROM generate_series(1, :n) AS g"), {"u": user_id, "e": expires, "n": n})


def add_token(engine, user_id: int, expires: datetime, used: datetime | None) -> str:
    with engine.begin() as connection:
        return str(connection.execute(text(
            "INSERT INTO password_reset_tokens (user_id, token_hash, expires_at, used_at) "
            "VALUES (:u, 't', :e, :used) RETURNING id"), {"u": user_id, "e": expires, "used": used}).scalar_one())


def ensure(spec, now) -> dict:
    with session_scope() as session:
        return partitions.ensure(session, spec, now)


def sessions_left(engine) -> set[str]:
    return ids(engine, "SELECT id FROM user_sessions")


def month_names(table: str, first: datetime, count: int) -> list[str]:
    return [partition_name(table, add_months(first, n)) for n in range(count)]


def in_thread(work, timeout: float):
    """Run ``work`` in a thread and wait up to ``timeout``; returns a getter of its result.

    The caller releases whatever the work may wait on after this returns; the getter
    then fails the test if the work had not finished within ``timeout`` (it waited on a
    lock instead of timing out), re-raises its error, or returns its result.
    """
    outcome: dict = {}

    def run():
        try:
            outcome["result"] = work()
        except BaseException as exc:  # noqa: BLE001
            outcome["error"] = exc

    worker = threading.Thread(target=run)
    worker.start()
    worker.join(timeout)
    in_time = not worker.is_alive()

    def result():
        worker.join(30)
        assert in_time, f"still waiting after {timeout}s: a lock wait without the lock_timeout"
        if "error" in outcome:
            raise outcome["error"]
        return outcome["result"]

    return result


# --- boundaries ------------------------------------------------------------------------------------------


def test_user_sessions_expired_29_days_ago_kept_31_deleted(fresh):
    user_id = make_user(fresh)
    kept_29, kept_30, gone_30s, gone_31, future = add_sessions(fresh, user_id, [
        NOW - timedelta(days=29), NOW - timedelta(days=30), NOW - timedelta(days=30, seconds=1),
        NOW - timedelta(days=31), NOW + timedelta(days=3)])

    report = run_job(NOW)

    assert report["status"] == "ok"
    assert report["tables"]["user_sessions"] == {"deleted": 2}
    assert sessions_left(fresh) == {kept_29, kept_30, future}


@pytest.mark.parametrize(("days", "dropped"), [(89, False), (90, True), (91, True)])
def test_audit_log_partition_retired_only_when_its_upper_bound_is_90_days_old(fresh, days, dropped):
    ensure(AUDIT, at(2026, 1, 10))  # January .. May 2026
    with fresh.begin() as connection:
        for moment in (at(2026, 1, 1), at(2026, 1, 31, 23, 59, 59, 999999), at(2026, 2, 1)):
            connection.execute(text("INSERT INTO audit_log (table_name, operation, created_at) "
                                    "VALUES ('users', 'UPDATE', :at)"), {"at": moment})
    january_upper = at(2026, 2, 1)
    now = january_upper + timedelta(days=days)  # the January partition is wholly `days` old

    report = run_job(now)

    assert report["status"] == "ok"
    assert report["tables"]["audit_log"]["dropped"] == (["audit_log_p2026_01"] if dropped else [])
    assert exists(fresh, "audit_log_p2026_01") is not dropped
    assert scalar(fresh, "SELECT count(*) FROM audit_log WHERE created_at < :feb", feb=at(2026, 2, 1)) == (
        0 if dropped else 2)
    # February's upper bound (1 March) is younger than the cutoff in every case: it stays whole.
    assert exists(fresh, "audit_log_p2026_02")
    assert scalar(fresh, "SELECT count(*) FROM audit_log_p2026_02") == 1


def test_counter_drift_89_days_kept_91_deleted(fresh):
    with fresh.begin() as connection:
        run_id = connection.execute(text(
            "INSERT INTO counter_runs (mode, status, started_at, finished_at) "
            "VALUES ('full', 'finished', :s, :s) RETURNING id"), {"s": NOW - timedelta(days=1)}).scalar_one()
        drift = {}
        for days in (89, 91):
            drift[days] = connection.execute(text(
                "INSERT INTO counter_drift (run_id, table_name, column_name, entity_id, stored_value, true_value, "
                "detected_at) VALUES (:r, 'posts', 'hearts_count', 'x', 1, 2, :d) RETURNING id"),
                {"r": run_id, "d": NOW - timedelta(days=days)}).scalar_one()

    report = run_job(NOW)

    assert report["tables"]["counter_drift"] == {"deleted": 1}
    assert ids(fresh, "SELECT id FROM counter_drift") == {str(drift[89])}
    assert ids(fresh, "SELECT id FROM counter_runs") == {str(run_id)}


def test_engagement_archived_a_year_and_a_day_after_its_upper_bound_not_364_days(fresh):
    ensure(ENGAGEMENT, at(2025, 1, 5))  # January .. May 2025
    user_id = make_user(fresh)
    with fresh.begin() as connection:
        post_id = connection.execute(text(
            "INSERT INTO posts (author_id, content) VALUES (:a, 'p') RETURNING id"), {"a": user_id}).scalar_one()
        rows = {str(connection.execute(text(
            "INSERT INTO user_engagement (user_id, post_id, engagement_type, created_at) "
            "VALUES (:u, :p, 'LIKE', :at) RETURNING id"), {"u": user_id, "p": post_id, "at": moment}).scalar_one())
            for moment in (at(2025, 1, 3), at(2025, 1, 31, 23, 59), at(2025, 2, 1))}
    january_upper = at(2025, 2, 1)

    stays = run_job(january_upper + timedelta(days=364))
    assert stays["tables"]["user_engagement"] == {"archived": []}
    assert exists(fresh, "user_engagement_p2025_01")
    assert scalar(fresh, "SELECT count(*) FROM user_engagement_archive") == 0

    archived = run_job(january_upper + timedelta(days=366))
    assert archived["status"] == "ok"
    assert archived["tables"]["user_engagement"]["archived"] == ["user_engagement_p2025_01"]
    assert not exists(fresh, "user_engagement_p2025_01")
    assert exists(fresh, "user_engagement_archive_p2025_01")
    january = ids(fresh, "SELECT id FROM user_engagement_archive")
    assert len(january) == 2 and january <= rows
    assert ids(fresh, "SELECT id FROM user_engagement") == rows - january
    assert scalar(fresh, "SELECT max(created_at) FROM user_engagement_archive") < january_upper


def test_password_reset_tokens_used_2_days_ago_deleted_12_hours_ago_kept(fresh):
    user_id = make_user(fresh)
    later = NOW + timedelta(hours=1)
    used_2d = add_token(fresh, user_id, later, NOW - timedelta(days=2))
    used_12h = add_token(fresh, user_id, later, NOW - timedelta(hours=12))
    expired_2d = add_token(fresh, user_id, NOW - timedelta(days=2), None)
    expired_12h = add_token(fresh, user_id, NOW - timedelta(hours=12), None)
    unused = add_token(fresh, user_id, later, None)

    report = run_job(NOW)

    assert report["tables"]["password_reset_tokens"] == {"deleted": 2}
    assert ids(fresh, "SELECT id FROM password_reset_tokens") == {used_12h, expired_12h, unused}
    assert not {used_2d, expired_2d} & ids(fresh, "SELECT id FROM password_reset_tokens")


# --- batches and locks ------------------------------------------------------------------------------------


def test_batches_of_upkeep_batch_rows_each_committed_on_its_own(fresh, monkeypatch):
    monkeypatch.setenv("UPKEEP_BATCH_ROWS", "100")
    user_id = make_user(fresh)
    add_many_sessions(fresh, user_id, 250, NOW - timedelta(days=40))
    fresh_ids = add_sessions(fresh, user_id, [NOW - timedelta(days=29), NOW + timedelta(days=1)] * 5)
    calls: list[tuple[str, int, int]] = []

    def progress(name: str, deleted: int) -> None:
        # Seen from another connection: each batch is committed before the next starts.
        calls.append((name, deleted, scalar(fresh, "SELECT count(*) FROM user_sessions WHERE expires_at < :c",
                                            c=NOW - timedelta(days=30))))

    result = retention.delete_rows(policy("user_sessions"), NOW, timedelta(days=30), progress=progress)

    assert result == {"deleted": 250}
    assert calls == [("user_sessions", 100, 150), ("user_sessions", 100, 50), ("user_sessions", 50, 0)]
    assert sessions_left(fresh) == set(fresh_ids)


def test_a_row_locked_by_another_transaction_is_skipped_without_waiting(fresh, monkeypatch):
    monkeypatch.setenv("UPKEEP_BATCH_ROWS", "2")
    monkeypatch.setenv("UPKEEP_LOCK_TIMEOUT_MS", "3000")
    user_id = make_user(fresh)
    expired = add_sessions(fresh, user_id, [NOW - timedelta(days=40 + n) for n in range(5)])
    (current,) = add_sessions(fresh, user_id, [NOW + timedelta(days=1)])
    locked = expired[2]

    holder = fresh.connect()
    transaction = holder.begin()
    try:
        holder.execute(text("SELECT 1 FROM user_sessions WHERE id = :id FOR UPDATE"), {"id": locked})
        started = time.monotonic()
        result = retention.delete_rows(policy("user_sessions"), NOW, timedelta(days=30))
        elapsed = time.monotonic() - started
        assert result == {"deleted": 4}
        assert elapsed < 1.5, f"waited {elapsed:.2f}s on the locked row"
        assert sessions_left(fresh) == {locked, current}
    finally:
        transaction.rollback()
        holder.close()
    # Released: the next run takes it.
    assert retention.delete_rows(policy("user_sessions"), NOW, timedelta(days=30)) == {"deleted": 1}
    assert sessions_left(fresh) == {current}


@pytest.mark.parametrize("locked_table", ["user_sessions", "audit_log"])
def test_one_table_failing_does_not_stop_the_others_and_the_run_is_partial(fresh, monkeypatch, locked_table):
    monkeypatch.setenv("UPKEEP_LOCK_TIMEOUT_MS", "200")
    ensure(AUDIT, at(2026, 1, 10))
    ensure(AUDIT, NOW)
    user_id = make_user(fresh)
    (old_session,) = add_sessions(fresh, user_id, [NOW - timedelta(days=40)])
    add_token(fresh, user_id, NOW - timedelta(days=3), None)
    with fresh.begin() as connection:
        connection.execute(text("INSERT INTO audit_log (table_name, operation, created_at) "
                                "VALUES ('users', 'DELETE', :at)"), {"at": at(2026, 1, 20)})
        connection.execute(text(
            "INSERT INTO upkeep_runs (job, status, started_at, finished_at) VALUES ('backup', 'ok', :t, :t)"),
            {"t": NOW - timedelta(days=100)})

    holder = fresh.connect()
    transaction = holder.begin()
    try:
        holder.execute(text(f"LOCK TABLE {locked_table} IN ACCESS EXCLUSIVE MODE"))
        started = time.monotonic()
        done = in_thread(lambda: run_job(NOW), timeout=3)
        elapsed = time.monotonic() - started
    finally:
        transaction.rollback()
        holder.close()
    report = done()

    assert elapsed < 2.0  # one 200 ms lock timeout, not a wait
    assert report["status"] == "partial"
    assert report["failed"] == [locked_table]
    assert "lock timeout" in report["tables"][locked_table]["error"]
    assert set(report["tables"]) == set(retention.NAMES)
    # Everything else ran, before and after the failed table.
    assert report["tables"]["password_reset_tokens"] == {"deleted": 1}
    assert report["tables"]["upkeep_runs"] == {"deleted": 1}
    assert scalar(fresh, "SELECT count(*) FROM password_reset_tokens") == 0
    if locked_table == "user_sessions":
        assert sessions_left(fresh) == {old_session}
        assert report["tables"]["audit_log"]["dropped"] == ["audit_log_p2026_01", "audit_log_p2026_02"]
        assert not exists(fresh, "audit_log_p2026_01")
    else:
        assert sessions_left(fresh) == set()
        assert exists(fresh, "audit_log_p2026_01")
    with fresh.connect() as connection:
        row = connection.execute(text(
            "SELECT status, dry_run, details FROM upkeep_runs WHERE job = 'apply_retention'")).one()
    assert row.status == "partial" and row.dry_run is False
    assert row.details["failed"] == [locked_table]


def test_archive_preparation_respects_the_lock_timeout(fresh, monkeypatch):
    """A long reader of the engagement table must not make the archiving wait without bound
    (its ACCESS EXCLUSIVE request on the old partition would queue every later reader behind it)."""
    monkeypatch.setenv("UPKEEP_LOCK_TIMEOUT_MS", "200")
    ensure(ENGAGEMENT, at(2025, 1, 5))
    ensure(ENGAGEMENT, NOW)
    holder = fresh.connect()
    transaction = holder.begin()
    try:
        holder.execute(text("SELECT count(*) FROM user_engagement"))  # ACCESS SHARE on every partition
        done = in_thread(lambda: retention.apply(NOW), timeout=3)
    finally:
        transaction.rollback()
        holder.close()
    report = done()
    assert report["failed"] == ["user_engagement"]
    assert "lock timeout" in report["tables"]["user_engagement"]["error"]
    # Nothing was archived; the next run, without the reader, archives the old months.
    assert exists(fresh, "user_engagement_p2025_01")
    assert retention.apply(NOW)["tables"]["user_engagement"]["archived"] == month_names(
        "user_engagement", at(2025, 1, 1), 5)


# --- RETENTION_DAYS and settings -------------------------------------------------------------------------


def test_retention_days_override_moves_the_cutoff(fresh, monkeypatch):
    user_id = make_user(fresh)
    days_40, days_44, days_46 = add_sessions(fresh, user_id, [NOW - timedelta(days=d) for d in (40, 44, 46)])

    monkeypatch.setenv("RETENTION_DAYS", "user_sessions=45")
    assert retention.keep_for("user_sessions") == timedelta(days=45)
    assert retention.keep_for("password_reset_tokens") == timedelta(days=1)
    report = run_job(NOW)
    assert report["tables"]["user_sessions"] == {"deleted": 1}
    assert sessions_left(fresh) == {days_40, days_44}

    monkeypatch.delenv("RETENTION_DAYS")
    assert retention.keep_for("user_sessions") == timedelta(days=30)
    assert run_job(NOW)["tables"]["user_sessions"] == {"deleted": 2}
    assert sessions_left(fresh) == set()


def test_retention_days_override_of_a_partitioned_table():
    found = retention.overrides(" audit_log = 120 , user_sessions=45,")
    assert found == {"audit_log": timedelta(days=120), "user_sessions": timedelta(days=45)}
    assert retention.keep_for("audit_log", found) == timedelta(days=120)
    assert retention.keep_for("user_engagement", found) == timedelta(days=365)
    assert retention.overrides("") == {}


BAD_RETENTION_DAYS = [
    ("user_sessions=-3", "RETENTION_DAYS: user_sessions=-3 must be at least 1 day"),
    ("user_sessions=0", "RETENTION_DAYS: user_sessions=0 must be at least 1 day"),
    ("user_sessions=abc", "RETENTION_DAYS: 'user_sessions=abc' is not name=days (a whole number of days)"),
    ("user_sessions=4.5", "RETENTION_DAYS: 'user_sessions=4.5' is not name=days (a whole number of days)"),
    ("user_sessions", "RETENTION_DAYS: 'user_sessions' is not name=days (a whole number of days)"),
    ("=30", "RETENTION_DAYS: '=30' is not name=days (a whole number of days)"),
    ("user_sessions=30,audit_log", "RETENTION_DAYS: 'audit_log' is not name=days (a whole number of days)"),
    ("user_sessions=--3", "RETENTION_DAYS: 'user_sessions=--3' is not name=days (a whole number of days)"),
]


@pytest.mark.parametrize(("raw", "message"), BAD_RETENTION_DAYS, ids=[raw for raw, _ in BAD_RETENTION_DAYS])
def test_bad_retention_days_raise_settings_error_naming_the_problem(raw, message):
    with pytest.raises(settings.SettingsError) as caught:
        retention.overrides(raw)
    assert str(caught.value) == message
    # The format is checked when the settings load: a process with it refuses to start.
    with pytest.raises(settings.SettingsError) as at_load:
        settings.load({"RETENTION_DAYS": raw})
    assert str(at_load.value) == message


def test_retention_days_naming_no_policy_is_refused_with_the_names():
    assert settings.load({"RETENTION_DAYS": "nope=3"}).retention_days == "nope=3"  # names are checked at use
    with pytest.raises(settings.SettingsError) as caught:
        retention.overrides("user_sessions=45,nope=3")
    message = str(caught.value)
    assert message.startswith("RETENTION_DAYS: no retention policy is named nope; the names are ")
    assert all(name in message for name in retention.NAMES)


def test_a_retention_days_naming_no_policy_fails_the_run_before_it_deletes_anything(fresh, monkeypatch):
    user_id = make_user(fresh)
    (old,) = add_sessions(fresh, user_id, [NOW - timedelta(days=40)])
    monkeypatch.setenv("RETENTION_DAYS", "user_sessions=45,nope=3")
    with pytest.raises(JobError) as caught:
        run_job(NOW)
    assert caught.value.code == "bad_setting"
    assert "no retention policy is named nope" in caught.value.message
    assert sessions_left(fresh) == {old}
    with fresh.connect() as connection:
        row = connection.execute(text(
            "SELECT status, details FROM upkeep_runs WHERE job = 'apply_retention'")).one()
    assert row.status == "failed"
    assert row.details["error"]["error_code"] == "bad_setting"


@pytest.mark.parametrize(("env", "value", "words"), [
    ("UPKEEP_BATCH_ROWS", "6000", "above its maximum 5000"),
    ("UPKEEP_BATCH_ROWS", "0", "below its minimum 1"),
    ("PURGE_SOFT_DELETED_DAYS", "0", "below its minimum 1"),
    ("UPKEEP_LOCK_TIMEOUT_MS", "soon", "is not an integer"),
])
def test_upkeep_settings_out_of_range_raise(env, value, words):
    with pytest.raises(settings.SettingsError) as caught:
        settings.load({env: value})
    assert str(caught.value).startswith(f"{env}={value!r}")
    assert words in str(caught.value)


def test_upkeep_settings_at_their_limits_load():
    found = settings.load({"UPKEEP_BATCH_ROWS": "5000", "PURGE_SOFT_DELETED_DAYS": "1"})
    assert (found.upkeep_batch_rows, found.purge_soft_deleted_days) == (5000, 1)


# --- dry run --------------------------------------------------------------------------------------------


def test_dry_run_deletes_nothing_and_reports_what_it_would(fresh, monkeypatch):
    monkeypatch.setenv("UPKEEP_BATCH_ROWS", "2")  # counting is not batched
    ensure(AUDIT, at(2026, 1, 10))
    user_id = make_user(fresh)
    add_sessions(fresh, user_id, [NOW - timedelta(days=40)] * 3 + [NOW + timedelta(days=1)])
    add_token(fresh, user_id, NOW - timedelta(days=2), None)
    add_token(fresh, user_id, NOW + timedelta(days=2), NOW - timedelta(days=3))
    add_token(fresh, user_id, NOW + timedelta(days=2), None)
    with fresh.begin() as connection:
        connection.execute(text("INSERT INTO audit_log (table_name, operation, created_at) "
                                "VALUES ('users', 'DELETE', :at)"), {"at": at(2026, 1, 20)})
    before = {t: scalar(fresh, f"SELECT count(*) FROM {t}")
              for t in ("user_sessions", "password_reset_tokens", "audit_log")}

    report = run_job(NOW, dry_run=True)

    assert report["status"] == "ok"
    assert report["tables"]["user_sessions"] == {"would_delete": 3}
    assert report["tables"]["password_reset_tokens"] == {"would_delete": 2}
    assert report["tables"]["counter_drift"] == {"would_delete": 0}
    assert report["tables"]["audit_log"] == {"dropped": ["audit_log_p2026_01", "audit_log_p2026_02"]}
    after = {t: scalar(fresh, f"SELECT count(*) FROM {t}") for t in before}
    assert after == before
    assert exists(fresh, "audit_log_p2026_01") and exists(fresh, "audit_log_p2026_02")
    assert scalar(fresh, "SELECT dry_run FROM upkeep_runs WHERE job = 'apply_retention'") is True

    # The real run does what the dry run said.
    real = run_job(NOW)
    assert real["tables"]["user_sessions"] == {"deleted": 3}
    assert real["tables"]["password_reset_tokens"] == {"deleted": 2}
    assert real["tables"]["audit_log"]["dropped"] == ["audit_log_p2026_01", "audit_log_p2026_02"]
    assert not exists(fresh, partition_name("audit_log", at(2026, 1, 1)))
