"""The partition manager (db/partitions.py) against a real PostgreSQL.

Every date is frozen: ``now`` is passed explicitly (or frozen with freezegun for
the job), and every row carries an explicit ``created_at``, so nothing here
depends on the day the suite runs.
"""
from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
from freezegun import freeze_time
from sqlalchemy import text

from db import partitions
from db.partitions import PARTITIONED_TABLES, add_months, month_start, partition_name, spec_for
from db.session import get_engine, session_scope
from tasks.upkeep import jobs, retention
from tests.upkeep.conftest import drop_partitions

UTC = timezone.utc
AUDIT = spec_for("audit_log")
ENGAGEMENT = spec_for("user_engagement")
SPEC_IDS = [s.table for s in PARTITIONED_TABLES]


def at(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def ensure(spec, now, **kwargs) -> dict:
    with session_scope() as session:
        return partitions.ensure(session, spec, now, **kwargs)


def listed(table: str) -> list[partitions.Partition]:
    with session_scope() as session:
        return partitions.partitions(session, table)


def health(now) -> list[str]:
    with session_scope() as session:
        return partitions.health(session, now)


def month_names(table: str, first: datetime, count: int) -> list[str]:
    return [partition_name(table, add_months(first, n)) for n in range(count)]


def relation_exists(engine, name: str) -> bool:
    with engine.connect() as connection:
        return connection.execute(text("SELECT to_regclass(:n) IS NOT NULL"), {"n": name}).scalar_one()


def count(engine, sql: str, **params) -> int:
    with engine.connect() as connection:
        return connection.execute(text(sql), params).scalar_one()


def insert_audit(engine, created: list[datetime]) -> list[str]:
    with engine.begin() as connection:
        return [connection.execute(text(
            "INSERT INTO audit_log (table_name, operation, created_at) VALUES ('posts', 'UPDATE', :at) "
            "RETURNING CAST(id AS text)"), {"at": moment}).scalar_one() for moment in created]


def user_and_post(engine) -> tuple[int, str]:
    with engine.begin() as connection:
        user_id = connection.execute(text(
            "INSERT INTO users (email, username, hashed_password) VALUES ('u@example.org', 'u', 'x') "
            "RETURNING id")).scalar_one()
        post_id = connection.execute(text(
            "INSERT INTO posts (author_id, content) VALUES (:a, 'hello') RETURNING CAST(id AS text)"),
            {"a": user_id}).scalar_one()
    return user_id, post_id


def insert_engagement(connection, user_id: int, post_id: str, moment: datetime) -> str:
    return connection.execute(text(
        "INSERT INTO user_engagement (user_id, post_id, engagement_type, created_at) "
        "VALUES (:u, :p, 'VIEW', :at) RETURNING CAST(id AS text)"),
        {"u": user_id, "p": post_id, "at": moment}).scalar_one()


def where_is(engine, table: str, ids: list[str]) -> dict[str, str]:
    with engine.connect() as connection:
        rows = connection.execute(text(
            f"SELECT CAST(id AS text), CAST(tableoid::regclass AS text) FROM {table} "
            "WHERE CAST(id AS text) = ANY(:ids)"), {"ids": ids}).all()
    return dict(rows)


# --- ensure: what it makes, once ------------------------------------------------------------------------


@pytest.mark.parametrize("spec", PARTITIONED_TABLES, ids=SPEC_IDS)
def test_ensure_makes_default_current_month_and_four_ahead_and_nothing_the_second_time(fresh, spec):
    now = at(2026, 5, 17, 13, 45)
    expected = month_names(spec.table, at(2026, 5, 1), 5)

    first = ensure(spec, now)

    assert first == {"created": [spec.default_partition, *expected], "adopted": {}}
    found = listed(spec.table)
    assert [p.name for p in found] == expected
    assert [(p.lower, p.upper) for p in found] == [(at(2026, m, 1), at(2026, m + 1, 1)) for m in range(5, 10)]
    assert relation_exists(fresh, spec.default_partition)

    again = ensure(spec, now)
    later_same_month = ensure(spec, at(2026, 5, 31, 23, 59, 59))

    assert again == {"created": [], "adopted": {}}
    assert later_same_month == {"created": [], "adopted": {}}
    assert listed(spec.table) == found
    # The other table was left alone.
    other = next(s for s in PARTITIONED_TABLES if s is not spec)
    assert listed(other.table) == []


def test_ensure_dry_run_reports_and_creates_nothing(fresh):
    now = at(2026, 5, 17)
    with session_scope() as session:
        plan = partitions.ensure(session, AUDIT, now, dry_run=True)
    assert plan["created"] == [AUDIT.default_partition, *month_names("audit_log", at(2026, 5, 1), 5)]
    assert listed("audit_log") == []
    assert not relation_exists(fresh, AUDIT.default_partition)


def test_ensure_takes_the_month_in_utc(fresh):
    # 23:30 at UTC-2 on 31 May is 01:30 UTC on 1 June: June is the current month.
    now = datetime(2026, 5, 31, 23, 30, tzinfo=timezone(timedelta(hours=-2)))
    report = ensure(AUDIT, now)
    assert report["created"][1:] == month_names("audit_log", at(2026, 6, 1), 5)


def test_december_to_january_bounds(fresh):
    now = at(2026, 12, 15)
    report = ensure(AUDIT, now)

    names = ["audit_log_p2026_12", "audit_log_p2027_01", "audit_log_p2027_02", "audit_log_p2027_03",
             "audit_log_p2027_04"]
    assert report["created"] == [AUDIT.default_partition, *names]
    bounds = {p.name: (p.lower, p.upper) for p in listed("audit_log")}
    assert bounds == {
        "audit_log_p2026_12": (at(2026, 12, 1), at(2027, 1, 1)),
        "audit_log_p2027_01": (at(2027, 1, 1), at(2027, 2, 1)),
        "audit_log_p2027_02": (at(2027, 2, 1), at(2027, 3, 1)),
        "audit_log_p2027_03": (at(2027, 3, 1), at(2027, 4, 1)),
        "audit_log_p2027_04": (at(2027, 4, 1), at(2027, 5, 1)),
    }
    # PostgreSQL routes by those bounds: the year's last microsecond and the next year's first.
    last_of_year, first_of_year, end = insert_audit(fresh, [
        at(2026, 12, 31, 23, 59, 59, 999999), at(2027, 1, 1), at(2027, 4, 30, 23, 59, 59)])
    assert where_is(fresh, "audit_log", [last_of_year, first_of_year, end]) == {
        last_of_year: "audit_log_p2026_12", first_of_year: "audit_log_p2027_01", end: "audit_log_p2027_04"}


def test_the_job_under_a_frozen_clock_crosses_the_year(fresh):
    with freeze_time("2026-12-15 10:00:00"):
        report = jobs.ensure_partitions()
    assert report["status"] == "ok" and report["failed"] == []
    for spec in PARTITIONED_TABLES:
        assert report["tables"][spec.table]["created"] == [
            spec.default_partition, *month_names(spec.table, at(2026, 12, 1), 5)]
        assert listed(spec.table)[-1].upper == at(2027, 5, 1)
    assert count(fresh, "SELECT count(*) FROM upkeep_runs WHERE job = 'ensure_partitions' AND status = 'ok'") == 1


# --- a maintenance gap (pg_partman #649) ---------------------------------------------------------------


@pytest.mark.parametrize("before", [at(2026, 1, 10), at(2025, 1, 10)], ids=["6-months", "18-months"])
@pytest.mark.parametrize("spec", PARTITIONED_TABLES, ids=SPEC_IDS)
def test_after_a_gap_nothing_is_made_for_the_missed_months(fresh, spec, before):
    ensure(spec, before)
    made_before = {p.name for p in listed(spec.table)}
    now = at(2026, 7, 10)

    report = ensure(spec, now)

    expected = month_names(spec.table, at(2026, 7, 1), 5)
    assert report == {"created": expected, "adopted": {}}
    found = {p.name: p for p in listed(spec.table)}
    assert set(found) == made_before | set(expected)
    cutoff = now - spec.retention
    for name in report["created"]:
        assert found[name].upper > cutoff, f"{name} was made already past retention"
    # The months between the first run's last partition and now were never needed: none exists.
    first_missing = add_months(month_start(before), spec.premake + 1)
    missed = []
    month = first_missing
    while month < at(2026, 7, 1):
        missed.append(partition_name(spec.table, month))
        month = add_months(month, 1)
    assert missed, "the gap must leave at least one month out"
    assert not set(missed) & set(found)
    for name in missed:
        assert not relation_exists(fresh, name)


def test_rows_written_during_a_gap_land_in_default_are_reported_and_adopted(fresh):
    ensure(AUDIT, at(2026, 1, 10))  # Jan..May 2026
    may = insert_audit(fresh, [at(2026, 5, 20)])
    june = insert_audit(fresh, [at(2026, 6, 1), at(2026, 6, 15), at(2026, 6, 30, 23, 59, 59, 999999)])
    july = insert_audit(fresh, [at(2026, 7, 2), at(2026, 7, 9)])
    total = count(fresh, "SELECT count(*) FROM audit_log")
    assert set(where_is(fresh, "audit_log", june + july).values()) == {"audit_log_default"}
    assert where_is(fresh, "audit_log", may) == {may[0]: "audit_log_p2026_05"}

    problems = health(at(2026, 7, 10))
    assert any(p.startswith("audit_log: 5 row(s) in audit_log_default") for p in problems), problems

    now = at(2026, 7, 10)
    report = ensure(AUDIT, now)

    assert report["adopted"] == {"audit_log_p2026_06": 3, "audit_log_p2026_07": 2}
    # July is adopted, not created empty; the months ahead are created.
    assert report["created"] == month_names("audit_log", at(2026, 8, 1), 4)
    bounds = {p.name: (p.lower, p.upper) for p in listed("audit_log")}
    assert bounds["audit_log_p2026_06"] == (at(2026, 6, 1), at(2026, 7, 1))
    assert bounds["audit_log_p2026_07"] == (at(2026, 7, 1), at(2026, 8, 1))
    assert count(fresh, "SELECT count(*) FROM audit_log_default") == 0
    assert count(fresh, "SELECT count(*) FROM audit_log") == total
    assert count(fresh, "SELECT count(*) FROM audit_log_p2026_06") == 3
    placed = where_is(fresh, "audit_log", may + june + july)
    assert placed == {**{i: "audit_log_p2026_05" for i in may}, **{i: "audit_log_p2026_06" for i in june},
                      **{i: "audit_log_p2026_07" for i in july}}
    assert not any("audit_log" in p for p in health(now))
    # New rows of an adopted month go to its partition now.
    (late,) = insert_audit(fresh, [at(2026, 6, 3)])
    assert where_is(fresh, "audit_log", [late]) == {late: "audit_log_p2026_06"}
    assert ensure(AUDIT, now) == {"created": [], "adopted": {}}


def test_an_adopted_engagement_month_past_retention_is_archived_by_the_same_night(fresh):
    ensure(ENGAGEMENT, at(2026, 7, 10))
    user_id, post_id = user_and_post(fresh)
    with fresh.begin() as connection:
        old = [insert_engagement(connection, user_id, post_id, at(2024, 3, day)) for day in (1, 15, 31)]
    assert set(where_is(fresh, "user_engagement", old).values()) == {"user_engagement_default"}

    now = at(2026, 7, 11)
    report = ensure(ENGAGEMENT, now)
    assert report == {"created": [], "adopted": {"user_engagement_p2024_03": 3}}

    done = retention.retire_partitions(ENGAGEMENT, now, ENGAGEMENT.retention)

    assert done["archived"] == ["user_engagement_p2024_03"]
    assert where_is(fresh, "user_engagement_archive", old) == {
        i: "user_engagement_archive_p2024_03" for i in old}
    assert where_is(fresh, "user_engagement", old) == {}
    assert count(fresh, "SELECT count(*) FROM user_engagement_default") == 0


# --- health -------------------------------------------------------------------------------------------


def make_manually(engine, spec, lowers: list[datetime]) -> None:
    with engine.begin() as connection:
        connection.execute(text(f"CREATE TABLE {spec.default_partition} PARTITION OF {spec.table} DEFAULT"))
        for lower in lowers:
            connection.execute(text(
                f"CREATE TABLE {partition_name(spec.table, lower)} PARTITION OF {spec.table} "
                f"FOR VALUES FROM ('{lower.isoformat()}') TO ('{add_months(lower, 1).isoformat()}')"))


def ahead_problem(problems: list[str], table: str) -> str | None:
    found = [p for p in problems if p.startswith(f"{table}:") and "ahead" in p]
    assert len(found) <= 1
    return found[0] if found else None


def test_health_reports_fewer_than_two_partitions_ahead(fresh):
    now = at(2026, 4, 20)
    current = at(2026, 4, 1)
    for spec in PARTITIONED_TABLES:
        make_manually(fresh, spec, [current])

    problems = health(now)
    for spec in PARTITIONED_TABLES:
        assert ahead_problem(problems, spec.table) == (
            f"{spec.table}: 0 partition(s) ahead, fewer than 2 (is upkeep.ensure_partitions running?)")

    with fresh.begin() as connection:
        connection.execute(text(
            "CREATE TABLE audit_log_p2026_05 PARTITION OF audit_log "
            "FOR VALUES FROM ('2026-05-01 00:00+00') TO ('2026-06-01 00:00+00')"))
    problems = health(now)
    assert ahead_problem(problems, "audit_log").startswith("audit_log: 1 partition(s) ahead, fewer than 2")
    assert ahead_problem(problems, "user_engagement").startswith("user_engagement: 0 partition(s) ahead")

    with fresh.begin() as connection:
        connection.execute(text(
            "CREATE TABLE audit_log_p2026_06 PARTITION OF audit_log "
            "FOR VALUES FROM ('2026-06-01 00:00+00') TO ('2026-07-01 00:00+00')"))
    problems = health(now)
    assert ahead_problem(problems, "audit_log") is None
    assert ahead_problem(problems, "user_engagement") is not None


def test_health_is_clean_after_ensure_and_degrades_when_ensure_stops(fresh):
    for spec in PARTITIONED_TABLES:
        ensure(spec, at(2026, 1, 10))
    assert health(at(2026, 1, 10)) == []
    # Made Jan..May; by April only May is ahead.
    problems = health(at(2026, 4, 2))
    assert ahead_problem(problems, "audit_log").startswith("audit_log: 1 partition(s) ahead")
    assert ahead_problem(problems, "user_engagement").startswith("user_engagement: 1 partition(s) ahead")


def test_health_without_partitions_says_so(fresh):
    problems = health(at(2026, 1, 10))
    assert problems == [f"{s.table} has no partitions yet (run python -m workers migrate)"
                        for s in PARTITIONED_TABLES]


# --- concurrent ensure --------------------------------------------------------------------------------


def test_a_second_ensure_waits_for_the_first_and_makes_nothing(fresh):
    now = at(2026, 3, 10)
    results: dict = {}
    errors: list = []
    first_inside = threading.Event()
    release_first = threading.Event()
    second_pid: list[int] = []

    def first():
        try:
            with session_scope() as session:
                results["first"] = partitions.ensure(session, AUDIT, now)
                first_inside.set()
                release_first.wait(5)  # the transaction (and its advisory lock) stays open until then
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    def second():
        try:
            with session_scope() as session:
                second_pid.append(session.execute(text("SELECT pg_backend_pid()")).scalar_one())
                results["second"] = partitions.ensure(session, AUDIT, now)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    t1 = threading.Thread(target=first)
    t1.start()
    assert first_inside.wait(5)
    t2 = threading.Thread(target=second)
    t2.start()
    try:
        # Real overlap: the second is blocked on the first's lock while the first's DDL is uncommitted.
        deadline = time.monotonic() + 3
        waiting = False
        while time.monotonic() < deadline and not waiting:
            if second_pid:
                waiting = count(fresh, "SELECT count(*) FROM pg_stat_activity WHERE pid = :pid "
                                "AND wait_event_type = 'Lock'", pid=second_pid[0]) == 1
            time.sleep(0.02)
        assert waiting, "the second ensure did not wait for the first"
        assert "second" not in results
    finally:
        release_first.set()
        t1.join(5)
        t2.join(5)
    assert not t1.is_alive() and not t2.is_alive()
    assert errors == []
    assert results["first"]["created"] == [AUDIT.default_partition, *month_names("audit_log", at(2026, 3, 1), 5)]
    assert results["second"] == {"created": [], "adopted": {}}
    assert [p.name for p in listed("audit_log")] == month_names("audit_log", at(2026, 3, 1), 5)


def test_concurrent_ensures_race_and_make_exactly_one_set(fresh):
    now = at(2026, 3, 10)
    for _round in range(3):
        drop_partitions(fresh)
        barrier = threading.Barrier(2)
        reports: list[dict] = []
        errors: list = []

        def run():
            try:
                barrier.wait(5)
                for spec in PARTITIONED_TABLES:
                    reports.append(ensure(spec, now))
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=run) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        assert errors == []
        assert len(reports) == 2 * len(PARTITIONED_TABLES)
        for spec in PARTITIONED_TABLES:
            made = [name for r in reports for name in r["created"] if name.startswith(spec.table + "_")]
            expected = [spec.default_partition, *month_names(spec.table, at(2026, 3, 1), 5)]
            assert sorted(made) == sorted(expected)  # each made once, by one of the two
            assert [p.name for p in listed(spec.table)] == expected[1:]


# --- detach and archive while rows keep arriving -------------------------------------------------------


def test_archiving_under_concurrent_inserts_loses_nothing_and_touches_no_newer_row(fresh):
    now = at(2026, 3, 15, 12)
    keep = timedelta(days=365)
    cutoff = now - keep  # 2025-03-15 12:00
    first = add_months(month_start(now), -16)  # 2024-11
    for back in range(17):
        ensure(ENGAGEMENT, add_months(first, back))
    names = [p.name for p in listed("user_engagement")]
    assert names[0] == "user_engagement_p2024_11" and names[-1] == "user_engagement_p2026_07"

    user_id, post_id = user_and_post(fresh)
    old_moments = [at(2024, 11, 1), at(2024, 11, 30, 23), at(2024, 12, 15), at(2025, 1, 2), at(2025, 1, 31),
                   at(2025, 2, 14), at(2025, 2, 28, 23, 59, 59, 999999)]
    # Newer than a wholly-expired month: the March 2025 partition straddles the cutoff and stays whole.
    kept_moments = [at(2025, 3, 1), at(2025, 3, 15, 13), at(2025, 6, 1), at(2026, 1, 5), at(2026, 3, 1)]
    with fresh.begin() as connection:
        old = [insert_engagement(connection, user_id, post_id, m) for m in old_moments]
        kept = [insert_engagement(connection, user_id, post_id, m) for m in kept_moments]

    engine = get_engine()
    committed: list[list[str]] = [[] for _ in range(3)]
    errors: list = []
    stop = threading.Event()
    warmed = threading.Barrier(4)

    def inserter(slot: int):
        n = 0
        try:
            while True:
                with engine.begin() as connection:
                    new_id = insert_engagement(connection, user_id, post_id,
                                               now + timedelta(seconds=n, microseconds=slot))
                committed[slot].append(new_id)
                n += 1
                if n == 5:
                    warmed.wait(5)
                if stop.is_set() and n >= 10:
                    return
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)
            warmed.abort()

    threads = [threading.Thread(target=inserter, args=(slot,)) for slot in range(3)]
    for thread in threads:
        thread.start()
    try:
        warmed.wait(5)
        before = sum(len(c) for c in committed)
        report = retention.retire_partitions(ENGAGEMENT, now, keep)
        during = sum(len(c) for c in committed) - before
        time.sleep(0.05)
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
    assert errors == []
    assert during > 0, "no insert committed while the partitions were being archived"

    assert report["archived"] == month_names("user_engagement", at(2024, 11, 1), 4)
    new = [i for c in committed for i in c]
    live_ids = set(where_is(fresh, "user_engagement", old + kept + new))
    archive = where_is(fresh, "user_engagement_archive", old + kept + new)

    # Every committed insert is in the live table, in the current month's partition.
    assert count(fresh, "SELECT count(*) FROM user_engagement WHERE created_at >= :now", now=now) == len(new)
    assert set(new) <= live_ids
    assert set(where_is(fresh, "user_engagement", new).values()) == {"user_engagement_p2026_03"}
    # The archived rows are exactly the old ones, with their ids, in the archive's partitions.
    assert set(archive) == set(old)
    assert archive[old[0]] == "user_engagement_archive_p2024_11"
    assert archive[old[-1]] == "user_engagement_archive_p2025_02"
    assert not live_ids & set(old)
    # Nothing newer than the cutoff was archived; the rows of kept partitions are untouched.
    assert count(fresh, "SELECT count(*) FROM user_engagement_archive WHERE created_at >= :c", c=cutoff) == 0
    assert set(kept) <= live_ids
    assert count(fresh, "SELECT count(*) FROM user_engagement") == len(kept) + len(new)
    assert [p.name for p in listed("user_engagement_archive")] == month_names(
        "user_engagement_archive", at(2024, 11, 1), 4)
    assert listed("user_engagement")[0].name == "user_engagement_p2025_03"
