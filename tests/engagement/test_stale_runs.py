"""A run left ``running`` by a dead worker or a retried task is closed by the next run of its mode.

``engagement.refresh_counts`` commits batch by batch; a transient error after the
first batch committed makes Celery retry the task (workers/task.py autoretries
OperationalError), and the retry starts a run of its own. Before the fix only stale
*full* sweeps were ever closed, so the first refresh run stayed ``running`` for ever.
Time is moved by writing ``started_at`` explicitly: the closing compares it with the
database's now(), which freezegun cannot move.
"""
from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from tasks.engagement import reconcile as rc
from tasks.engagement import runs
from tests.engagement.conftest import build_graph, wrong_counters

STALE_SQL = "now() - make_interval(secs => :stale + 60)"


def running_runs(conn, mode: str) -> list[str]:
    return conn.execute(text("SELECT id::text FROM counter_runs WHERE mode = :m AND status = 'running'"),
                        {"m": mode}).scalars().all()


def age_run(engine, run_id: str) -> None:
    """Move a run's start back past the stale bound, as if that much time had gone by."""
    with engine.begin() as conn:
        conn.execute(text(f"UPDATE counter_runs SET started_at = {STALE_SQL} WHERE id = :r"),
                     {"r": run_id, "stale": rc.STALE_RUN_AFTER_SECONDS})


def test_a_refresh_retried_after_a_batch_committed_does_not_leave_a_run_running_for_ever(clean_db, monkeypatch):
    with clean_db.begin() as conn:
        posts = build_graph(conn)["posts"]
    monkeypatch.setattr(rc, "REPAIR_BATCH", 2)  # 6 posts: three batches, each committed on its own
    real_repair_ids, calls = rc.repair_ids, []

    def connection_lost_in_the_second_batch(*args, **kwargs):
        calls.append(args)
        if len(calls) == 2:
            raise OperationalError("SELECT ... FOR NO KEY UPDATE", {}, Exception("server closed the connection"))
        return real_repair_ids(*args, **kwargs)

    monkeypatch.setattr(rc, "repair_ids", connection_lost_in_the_second_batch)
    with pytest.raises(OperationalError):  # the task's autoretry catches this and runs it again
        runs.refresh("posts", posts)
    with clean_db.connect() as conn:
        [orphan] = running_runs(conn, "refresh")
        assert rc.run_status(conn, orphan)["rows_checked"] == 2  # the first batch committed

    retried = runs.refresh("posts", posts)  # the retry: same arguments, a run of its own
    assert retried.status == "finished" and retried.run_id != orphan
    with clean_db.connect() as conn:
        assert [w for w in wrong_counters(conn) if w[0] == "posts"] == []
        assert running_runs(conn, "refresh") == [orphan]  # not stale yet: a live run is never closed

    age_run(clean_db, orphan)
    with clean_db.connect() as conn:
        before_close = conn.scalar(text("SELECT now()"))
    later = runs.refresh("posts", posts[:1])  # the next refresh, hours later
    with clean_db.connect() as conn:
        after_close = conn.scalar(text("SELECT now()"))
        assert running_runs(conn, "refresh") == []
        closed = rc.run_status(conn, orphan)
        finished = [rc.run_status(conn, r)["status"] for r in (retried.run_id, later.run_id)]
    assert closed["status"] == "failed"
    assert before_close <= closed["finished_at"] <= after_close   # closed by that next refresh
    assert closed["failure_reason"] == rc.STALE_RUN_REASON
    assert closed["rows_checked"] == 2  # what it did commit stays on record
    assert finished == ["finished", "finished"]


@pytest.mark.parametrize("mode", ["dirty", "refresh", "full"])
def test_starting_a_run_closes_the_stale_runs_of_its_own_mode_only(db_session, mode):
    def add_run(run_mode: str, stale: bool) -> str:
        started = STALE_SQL if stale else "now()"
        return db_session.execute(text(
            f"INSERT INTO counter_runs (mode, started_at) VALUES (:m, {started}) RETURNING id::text"),
            {"m": run_mode, "stale": rc.STALE_RUN_AFTER_SECONDS}).scalar_one()

    stale = {m: add_run(m, stale=True) for m in ("dirty", "refresh", "full")}
    live = add_run("refresh", stale=False)
    if mode == "full":
        new_run = rc.claim_full_sweep(db_session)
    else:
        new_run = rc.start_run(db_session, mode)

    statuses = {m: rc.run_status(db_session, run_id) for m, run_id in stale.items()}
    assert statuses[mode]["status"] == "failed" and statuses[mode]["failure_reason"] == rc.STALE_RUN_REASON
    assert all(s["status"] == "running" and s["failure_reason"] is None
               for m, s in statuses.items() if m != mode)
    assert rc.run_status(db_session, new_run)["status"] == "running"
    assert rc.run_status(db_session, live)["status"] == "running"
