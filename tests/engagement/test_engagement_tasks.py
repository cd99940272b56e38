"""Real messages through the real broker to a real worker (the in-process worker on all queues)."""
from __future__ import annotations

import pytest
from sqlalchemy import text

from tasks.engagement import reconcile as rc
from tests.engagement.conftest import build_graph, wrong_counters
from tests.waiting import wait_for

pytestmark = pytest.mark.integration


def test_refresh_counts_recounts_the_posts_now(clean_db, celery_worker):
    from tasks.engagement.tasks import refresh_counts

    with clean_db.begin() as conn:
        graph = build_graph(conn)
        drifted = sorted(w for w in wrong_counters(conn) if w[0] == "posts")
    result = refresh_counts.delay(graph["posts"]).get(timeout=30)
    assert result["status"] == "finished" and result["rows_checked"] == 6
    assert result["rows_fixed"] == len({w[2] for w in drifted})
    with clean_db.connect() as conn:
        assert [w for w in wrong_counters(conn) if w[0] == "posts"] == []
        ledger = conn.execute(text("SELECT table_name, column_name, entity_id, stored_value, true_value "
                                   "FROM counter_drift WHERE run_id = :r"), {"r": result["run_id"]}).all()
    assert sorted(tuple(r) for r in ledger) == drifted


def test_refresh_counts_rejects_ids_that_are_not_uuids(celery_worker):
    from tasks.engagement.tasks import refresh_counts
    from workers.errors import InvalidArguments

    with pytest.raises(InvalidArguments, match="not a valid UUID"):
        refresh_counts.delay(["42"]).get(timeout=30)


def test_reconcile_dirty_drains_the_queue(clean_db, celery_worker):
    from tasks.engagement.tasks import reconcile_dirty

    with clean_db.begin() as conn:
        build_graph(conn)
    result = reconcile_dirty.delay().get(timeout=60)
    assert result["status"] == "finished" and result["rows_fixed"] > 0
    with clean_db.connect() as conn:
        assert wrong_counters(conn) == []
        assert conn.execute(text("SELECT count(*) FROM counter_dirty")).scalar() == 0


def test_sweep_all_fans_out_chunks_and_a_second_sweep_is_skipped(clean_db, celery_worker, monkeypatch):
    from tasks.engagement.tasks import sweep_all

    with clean_db.begin() as conn:
        build_graph(conn)
        conn.execute(text("DELETE FROM counter_dirty"))  # only the sweep can fix these
    monkeypatch.setattr(rc, "SWEEP_CHUNK", 2)  # the in-process worker shares this module
    first, second = sweep_all.delay(), sweep_all.delay()
    outcomes = sorted([first.get(timeout=30), second.get(timeout=30)], key=lambda r: r["status"])
    assert [o["status"] for o in outcomes] == ["dispatched", "skipped"]
    run_id = outcomes[0]["run_id"]
    assert outcomes[0]["chunks"] > 5

    def finished(run_id=run_id):
        with clean_db.connect() as conn:
            run = rc.run_status(conn, run_id)
        return run if run["status"] == "finished" else None

    run = wait_for(finished, 60)
    assert run["chunks_done"] == run["chunks_total"] == outcomes[0]["chunks"]
    with clean_db.connect() as conn:
        assert wrong_counters(conn) == []
        assert conn.execute(text("SELECT count(*) FROM counter_drift WHERE run_id = :r"), {"r": run_id}).scalar() > 0
    again = sweep_all.delay().get(timeout=30)  # free again once finished
    assert again["status"] == "dispatched"
    wait_for(lambda: finished(again["run_id"]), 60)  # no chunk may outlive the test's data


def test_a_sweep_chunk_delivered_twice_is_counted_once(clean_db, celery_worker):
    from tasks.engagement import runs
    from tasks.engagement.tasks import sweep_chunk

    with clean_db.begin() as conn:
        build_graph(conn)
        conn.execute(text("DELETE FROM counter_dirty"))  # only the sweep can fix these
    run_id, chunks = runs.start_full_sweep(chunk_size=2)
    assert len(chunks) > 3

    def deliver(chunk: rc.Chunk) -> dict:
        return sweep_chunk.delay(*chunk.as_args(), run_id).get(timeout=30)

    def run() -> dict:
        with clean_db.connect() as conn:
            return rc.run_status(conn, run_id)

    first = deliver(chunks[0])
    assert deliver(chunks[0])["rows_fixed"] == 0          # redelivered: nothing left to fix there...
    assert run()["chunks_done"] == 1                      # ...and the chunk is counted once
    for chunk in chunks[1:]:
        deliver(chunk)
    finished = run()
    deliver(chunks[-1])                                   # redelivered after the run finished
    assert run() == finished
    # build_graph's 6 users, 6 posts and 4 comments; 10 of them had a counter to fix (the
    # largest by 4: post 4's hearts, post 0's comments); triggers marked, sweep repaired.
    assert (finished["status"], finished["chunks_done"], finished["chunks_total"]) == ("finished", len(chunks),
                                                                                       len(chunks))
    assert (finished["rows_checked"], finished["rows_fixed"], finished["max_drift"]) == (16, 10, 4)
    assert first["status"] == "done"
    with clean_db.connect() as conn:
        assert wrong_counters(conn) == []
        assert conn.scalar(text("SELECT count(*) FROM counter_run_chunks WHERE run_id = :r"), {"r": run_id}) == \
            len(chunks)


def test_beat_schedules_the_dirty_pass_and_the_nightly_sweep():
    from celery.schedules import crontab

    from schedules import beat_schedule

    dirty = beat_schedule["engagement-reconcile-dirty"]
    assert dirty["task"] == "engagement.reconcile_dirty" and dirty["schedule"].total_seconds() == 30
    assert dirty["options"]["expires"] == 30
    nightly = beat_schedule["engagement-sweep-all"]
    assert nightly["task"] == "engagement.sweep_all" and isinstance(nightly["schedule"], crontab)
    assert nightly["options"]["expires"] > 0
