"""Soak: 20,000 mixed tasks through a real prefork worker; its memory stays flat."""
from __future__ import annotations

import time

import pytest
import redis

from tests.operations.chaos import Figures
from tests.operations.conftest import dead_letter_count, wait_until
from tests.operations.procs import children, rss_kib

pytestmark = [pytest.mark.integration, pytest.mark.soak]

TOTAL, BATCHES, WARMUP_BATCHES = 20_000, 10, 2


def finished(client) -> dict[str, int]:
    from workers.observability.metrics import read_histograms

    totals: dict[str, int] = {}
    for (_task, state), histogram in read_histograms(client).items():
        totals[state] = totals.get(state, 0) + histogram["count"]
    return totals


def test_soak_20k_mixed_tasks_with_flat_rss(isolated, clean_db, tmp_path):
    worker = isolated.start_worker("soak", ["maintenance"], concurrency=2, log_path=tmp_path / "worker.log")
    client = redis.Redis.from_url(isolated.broker_url)
    app = isolated.app
    samples = []  # (tasks done, main RSS KiB, main + pool RSS KiB)
    started = time.monotonic()
    sent = 0
    for batch in range(BATCHES):
        for i in range(TOTAL // BATCHES):
            n = sent + i
            if n % 4 == 0:
                app.send_task("maintenance.canary", args=[f"soak-{n % 200}"], ignore_result=True)
            elif n % 4 == 1:
                app.send_task("maintenance.echo", args=[f"soak {n}"], ignore_result=True)
            else:
                app.send_task("maintenance.noop", ignore_result=True)
        sent += TOTAL // BATCHES
        wait_until(lambda: sum(finished(client).values()) >= sent, timeout=600, interval=0.5,
                   what=f"batch {batch + 1}")
        pool = children(worker.pid)
        main = rss_kib(worker.pid)
        samples.append((sent, main, main + sum(rss_kib(pid) for pid in pool if pid)))
    elapsed = time.monotonic() - started
    states = finished(client)
    # Pool children are replaced every worker_max_tasks_per_child (1,000) tasks each, so the
    # total swings between a fresh-children and a grown-children sample every other batch: the
    # warm figure is the larger of two consecutive samples, one of each phase, not whichever
    # phase the last warm-up batch happened to end in.
    warm_window = samples[WARMUP_BATCHES - 1:WARMUP_BATCHES + 1]
    warm_main, warm_total = max(s[1] for s in warm_window), max(s[2] for s in warm_window)
    peak_main = max(s[1] for s in samples[WARMUP_BATCHES:])
    peak_total = max(s[2] for s in samples[WARMUP_BATCHES:])
    figures = Figures("soak_20k", sent=TOTAL, completed=states.get("SUCCESS", 0),
                      lost=TOTAL - sum(states.values()), recovery_s=None,
                      extra={"failed": states.get("FAILURE", 0), "tasks_per_s": round(TOTAL / elapsed),
                             "rss_main_kib_warm_peak": f"{warm_main}->{peak_main}",
                             "rss_total_kib_warm_peak": f"{warm_total}->{peak_total}",
                             "samples": samples})
    figures.report()
    assert worker.poll() is None
    assert figures.completed == TOTAL and figures.lost == 0
    assert states.get("FAILURE", 0) == 0 and dead_letter_count(clean_db) == 0
    assert peak_main <= warm_main * 1.2, samples
    assert peak_total <= warm_total * 1.2, samples
