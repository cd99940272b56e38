"""Redis restarted under a coalesced notifications.record load (workers/coalescing.py): bulks held
in the consumer and bulks in flight when the broker goes away lose nothing, and every like is
notified exactly once. A short variant runs in `make test`; the full one in `make chaos`."""
from __future__ import annotations

import time
import uuid

import pytest
from sqlalchemy import text

from tests.notifications.test_tasks_integration import _seed
from tests.operations.chaos import Figures, PrivateRedis, make_app, redeliveries, worker_env
from tests.operations.conftest import dead_letter_count, free_port, wait_until
from tests.operations.test_chaos_services import spawn

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

SIZES = [
    pytest.param(("coalesced_redis_restart", 3000, 2), marks=pytest.mark.slow_chaos, id="full"),
    pytest.param(("coalesced_redis_restart_short", 600, 1), id="short"),
]


def _children(engine, author: int) -> tuple[int, int]:
    with engine.connect() as connection:
        return tuple(connection.execute(text(
            "SELECT count(*), count(DISTINCT dedupe_key) FROM notifications "
            "WHERE user_id = :a AND NOT is_batch"), {"a": author}).one())


@pytest.mark.parametrize("size", SIZES)
def test_redis_restart_under_coalesced_record_loses_nothing_and_notifies_once(clean_db, tmp_path, size):
    from tests.conftest import stop_process, wait_for_workers

    figure, likes, workers_count = size
    server = PrivateRedis(tmp_path / "redis", free_port())
    server.start()
    broker, backend = server.url + "/0", server.url + "/1"
    app = make_app(broker, backend)
    author, _post_id, like_ids, _likers = _seed(clean_db, likes)
    name = f"coal-{uuid.uuid4().hex[:4]}"
    workers = [spawn(f"{name}{i}", ["notifications"], worker_env(broker, backend), tmp_path)
               for i in range(workers_count)]
    try:
        wait_for_workers(app, [f"{name}{i}" for i in range(workers_count)])
        sent = [app.send_task("notifications.record", args=["like", like_id]) for like_id in like_ids]
        wait_until(lambda: _children(clean_db, author)[0] >= likes // 10, timeout=120, what="load under way")
        queued_at_restart = server.client().llen("notifications")
        server.stop(graceful=True)
        time.sleep(1.5)
        server.start()
        restarted_at = time.monotonic()
        before = _children(clean_db, author)[0]
        wait_until(lambda: _children(clean_db, author)[0] > before, timeout=60, interval=0.1,
                   what="workers resume after the Redis restart")
        recovery = time.monotonic() - restarted_at
        wait_until(lambda: _children(clean_db, author)[0] >= likes, timeout=300, interval=0.5,
                   what="every like notified after the restart")
        completed = 0
        for result in sent:
            result.get(timeout=60)
            completed += 1
        rows, distinct = _children(clean_db, author)
        figures = Figures(figure, sent=likes, completed=completed, lost=likes - distinct,
                          duplicated=redeliveries(server.client(), [r.id for r in sent]), recovery_s=recovery,
                          extra={"queued_at_restart": queued_at_restart, "duplicate_rows": rows - distinct})
        figures.report()
        assert queued_at_restart > 0, "the restart found no backlog: it tested nothing"
        assert (rows, distinct) == (likes, likes)       # each like notified exactly once
        assert completed == likes and recovery < 30
        assert dead_letter_count(clean_db) == 0
        assert all(proc.poll() is None for proc in workers)
    finally:
        for proc in workers:
            stop_process(proc)
        server.stop(graceful=False)
