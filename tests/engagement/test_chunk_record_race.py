"""Two sweep chunks finishing at the same instant must not deadlock on their run row.

Each chunk holds FOR KEY SHARE on the run row through the foreign keys of the
rows it inserts (ledger, chunk record) before it locks the row to recompute the
run's totals; with FOR UPDATE there, two such chunks deadlocked (seen in CI).
"""
from __future__ import annotations

import threading

from sqlalchemy import text

from db.session import new_session
from tasks.engagement import reconcile as rc


def test_two_chunks_recording_at_once_both_commit(clean_db):
    with new_session() as session:
        run_id = rc.start_run(session, "full", chunks_total=2)
        session.commit()
    chunks = [rc.Chunk("posts", None, "7fffffff-ffff-ffff-ffff-ffffffffffff"),
              rc.Chunk("posts", "7fffffff-ffff-ffff-ffff-ffffffffffff", None)]
    holding_key_share = threading.Barrier(2, timeout=30)
    errors: list[BaseException] = []

    def finish_chunk(chunk: rc.Chunk) -> None:
        session = new_session()
        try:
            # What a chunk's ledger insert does first: FOR KEY SHARE on the run row.
            session.execute(text("SELECT 1 FROM counter_runs WHERE id = :r FOR KEY SHARE"), {"r": run_id})
            holding_key_share.wait()
            rc.record_chunk(session, run_id, chunk, checked=10, result=rc.BatchResult(checked=10))
            session.commit()
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)
            session.rollback()
        finally:
            session.close()

    threads = [threading.Thread(target=finish_chunk, args=(chunk,)) for chunk in chunks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    with clean_db.connect() as connection:
        row = connection.execute(text(
            "SELECT chunks_done, rows_checked, status FROM counter_runs WHERE id = :r"), {"r": run_id}).one()
    assert tuple(row) == (2, 20, "finished")
