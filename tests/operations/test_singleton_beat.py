"""Two real `celery beat` processes: each entry still fires once per interval, and when the
leader dies (or its host hangs) the other takes over on the same timetable.

No worker consumes the isolated broker's maintenance queue, so every beat-heartbeat message
either beat sent is still there to be counted, with the pid of the beat that sent it."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import datetime

import pytest

from tests.conftest import ROOT, stop_process
from tests.operations.procs import kill

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

INTERVAL = 2.0


def start_beat(isolated, tmp_path, name: str, **extra_env) -> subprocess.Popen:
    env = dict(os.environ, **isolated.env, BEAT_HEARTBEAT_SECONDS=str(INTERVAL), BEAT_LOCK_RETRY_SECONDS="0.5",
               **extra_env)
    log = open(tmp_path / f"{name}.log", "ab")
    return subprocess.Popen([sys.executable, "-m", "celery", "-A", "workers", "beat", "--loglevel=INFO",
                             f"--schedule={tmp_path / name}-schedule"],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


class HeartbeatDispatches:
    """Every beat-heartbeat message the beats sent, as (sending process id, sent_at), oldest first.

    No worker consumes the queue, so every dispatch either beat made waits there; each call
    takes what arrived since the last one (on any broker: a RabbitMQ queue cannot be read
    without taking) and keeps it. The ``origin`` header is ``gen<pid>@<host>`` of the sender."""

    def __init__(self, broker_url: str):
        self.broker_url, self.seen = broker_url, []

    def __call__(self) -> list[tuple[int, float]]:
        import re

        from kombu import Connection

        with Connection(self.broker_url) as connection:
            channel = connection.default_channel
            try:
                while (message := channel.basic_get(queue="maintenance", no_ack=True)) is not None:
                    headers = message.headers or {}
                    if headers.get("task") == "maintenance.beat_heartbeat":
                        self.seen.append((int(re.match(r"gen(\d+)@", headers["origin"]).group(1)),
                                          float(headers["sent_at"])))
            except connection.channel_errors:
                pass  # no beat has declared the queue yet: nothing sent
        return sorted(self.seen, key=lambda d: d[1])

    def watch(self, seconds: float) -> None:
        """Keep taking for ``seconds``: a beat entry expires after its interval, and on
        RabbitMQ an expired message leaves the queue (Redis keeps it for the worker to drop)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self()
            time.sleep(0.25)

    def runs(self) -> list[datetime]:
        return [datetime.fromtimestamp(at) for _, at in self()]


def dispatching(tmp_path, name: str) -> bool:
    text = (tmp_path / f"{name}.log").read_text(errors="replace")
    return "Sending due task beat-heartbeat" in text


def test_two_beats_fire_each_entry_once_per_interval(clean_db, chaos_broker, tmp_path):
    isolated = chaos_broker
    dispatches = HeartbeatDispatches(isolated.broker_url)
    beats = {name: start_beat(isolated, tmp_path, name) for name in ("beat-a", "beat-b")}
    try:
        # Phase 1: both beats up for 3+ intervals.
        deadline = time.monotonic() + 60
        while not any(dispatching(tmp_path, n) for n in beats) and time.monotonic() < deadline:
            dispatches.watch(0.2)
        first = time.monotonic()
        dispatches.watch(INTERVAL * 3 + 0.5)
        leaders = [n for n in beats if dispatching(tmp_path, n)]
        assert len(leaders) == 1, f"both beats dispatched: {leaders}"
        assert {pid for pid, _ in dispatches()} == {beats[leaders[0]].pid}
        runs_phase1 = dispatches.runs()
        window1 = time.monotonic() - first

        # Phase 2: the leader dies; the other takes over within the lock retry.
        leader = leaders[0]
        kill(beats[leader].pid)
        beats[leader].wait(timeout=10)
        follower = next(n for n in beats if n != leader)
        killed_at = time.monotonic()
        deadline = killed_at + 30
        while not dispatching(tmp_path, follower) and time.monotonic() < deadline:
            dispatches.watch(0.2)
        takeover_s = time.monotonic() - killed_at
        assert dispatching(tmp_path, follower), "the second beat never took over"
        dispatches.watch(INTERVAL * 3 + 0.5)
        runs = dispatches.runs()
    finally:
        for proc in beats.values():
            stop_process(proc)

    expected1 = window1 / INTERVAL
    gaps = [(b - a).total_seconds() for a, b in zip(runs, runs[1:])]
    from tests.operations.chaos import Figures

    Figures(f"two_beats[{isolated.kind}]", sent=len(runs), completed=len(runs),
            duplicated=sum(1 for gap in gaps if gap < INTERVAL * 0.5), recovery_s=takeover_s,
            extra={"interval_s": INTERVAL, "phase1_runs": len(runs_phase1),
                   "phase1_expected": round(expected1, 1), "min_gap_s": round(min(gaps), 2)}).report()
    print(f"\ntwo beats: phase 1 {len(runs_phase1)} runs in {window1:.1f}s (interval {INTERVAL}s, "
          f"~{expected1:.1f} expected); takeover after leader SIGKILL {takeover_s:.1f}s; total runs {len(runs)}")
    assert expected1 - 1 <= len(runs_phase1) <= expected1 + 1
    # A duplicate dispatch would show as two runs a fraction of an interval apart.
    assert min(gaps) >= INTERVAL * 0.5, gaps
    assert takeover_s < 15


# --- A leader whose host hangs: SIGSTOP keeps its connection and lock alive -------------------

LEASE = 3.0
RETRY = 0.5


def lease_holder_pid(engine) -> int | None:
    from sqlalchemy import text

    from db.heartbeats import BEAT_LEASE

    with engine.connect() as connection:
        owner = connection.scalar(text("SELECT last_result->>'owner' FROM job_heartbeats WHERE name = :n"),
                                  {"n": BEAT_LEASE})
    return int(owner.split(":")[1]) if owner else None  # "<host>:<pid>:<nonce>"


def test_a_frozen_leader_is_replaced_within_the_lease_and_never_dispatches_again(clean_db, isolated, tmp_path):
    import signal

    from tests.operations.conftest import wait_until

    beats = {name: start_beat(isolated, tmp_path, name, BEAT_LEASE_SECONDS=str(LEASE))
             for name in ("beat-a", "beat-b")}
    by_pid = {proc.pid: name for name, proc in beats.items()}
    leader_pid = None
    heartbeat_dispatches = HeartbeatDispatches(isolated.broker_url)
    try:
        def sent_by(pid, after=0.0):
            return [at for sender, at in heartbeat_dispatches() if sender == pid and at > after]

        leader_pid = wait_until(lambda: lease_holder_pid(clean_db), timeout=60, what="a beat leads")
        assert leader_pid in by_pid
        standby_pid = next(pid for pid in by_pid if pid != leader_pid)
        wait_until(lambda: len(sent_by(leader_pid)) >= 2, timeout=30, what="the leader dispatches")

        kill(leader_pid, signal.SIGSTOP)  # a hung host: process, connection and lock all stay
        frozen_at = time.time()
        wait_until(lambda: lease_holder_pid(clean_db) == standby_pid, timeout=30, interval=0.05,
                   what="the standby takes the lease over")
        takeover_s = time.time() - frozen_at
        wait_until(lambda: len(sent_by(standby_pid)) >= 2, timeout=30, what="the standby dispatches")

        kill(leader_pid, signal.SIGCONT)
        resumed_at = time.time()
        leader_log = tmp_path / f"{by_pid[leader_pid]}.log"
        wait_until(lambda: "lost the singleton lock or its lease" in leader_log.read_text(errors="replace"),
                   timeout=30, what="the old leader notices it lost the lease")
        # Entries fell due while both beats ran: the old leader had the chance to send them.
        wait_until(lambda: len(sent_by(standby_pid, after=resumed_at)) >= 2, timeout=30,
                   what="the standby keeps dispatching after the old leader resumed")
        dispatches = heartbeat_dispatches()
        assert beats[by_pid[leader_pid]].poll() is None, "the old leader exited instead of standing by"
    finally:
        if leader_pid is not None:
            kill(leader_pid, signal.SIGCONT)
        for proc in beats.values():
            stop_process(proc)

    stale = [at - frozen_at for pid, at in dispatches if pid == leader_pid and at > frozen_at]
    first_new = min(at for pid, at in dispatches if pid == standby_pid) - frozen_at
    gaps = [b[1] - a[1] for a, b in zip(dispatches, dispatches[1:])]
    from tests.operations.chaos import Figures

    Figures("beat_sigstop_takeover", sent=len(dispatches), completed=len(dispatches), duplicated=len(stale),
            recovery_s=takeover_s,
            extra={"lease_s": LEASE, "retry_s": RETRY, "first_dispatch_after_freeze_s": round(first_new, 2),
                   "min_gap_s": round(min(gaps), 2)}).report()
    # The documented bound: BEAT_LEASE_SECONDS + BEAT_LOCK_RETRY_SECONDS after the leader's last
    # renewal (which precedes the freeze); 1.5 s of slack for a loaded 2-core CI machine.
    assert takeover_s <= LEASE + RETRY + 1.5, takeover_s
    assert not stale, f"the old leader dispatched {len(stale)} time(s) after it was frozen and replaced"
    assert min(gaps) >= INTERVAL * 0.5, gaps


def test_only_a_stale_lease_gets_its_holder_terminated(clean_db, database_url):
    """Two real connections: a fresh lease is left alone; a stale one's backend is terminated,
    which frees the lock for the standby and fails the old leader's next renewal."""
    import psycopg
    from sqlalchemy.engine import make_url

    from db.heartbeats import BEAT_LEASE, claim_beat_lease, renew_beat_lease, terminate_stale_lease_holder
    from db.locks import key_sql
    from workers.reliability.singleton_beat import BEAT_LOCK_KEY, lock_connection_options

    url = make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)
    take_lock = f"SELECT pg_try_advisory_lock({key_sql('%s')})"
    leader = psycopg.connect(url, autocommit=True, **lock_connection_options(3))
    standby = psycopg.connect(url, autocommit=True, **lock_connection_options(3))
    try:
        assert leader.execute(take_lock, (BEAT_LOCK_KEY,)).fetchone()[0]
        claim_beat_lease(leader, "leader", 3)
        assert terminate_stale_lease_holder(standby, BEAT_LOCK_KEY) == []
        assert not standby.execute(take_lock, (BEAT_LOCK_KEY,)).fetchone()[0]
        assert renew_beat_lease(leader, "leader")

        # The leader stops renewing (a hung host): its lease ages past lease_seconds.
        standby.execute("UPDATE job_heartbeats SET last_success_at = now() - interval '5 seconds' "
                        "WHERE name = %s", (BEAT_LEASE,))
        ended = terminate_stale_lease_holder(standby, BEAT_LOCK_KEY)
        assert [(e["pid"], e["owner"], e["terminated"]) for e in ended] == [(leader.info.backend_pid, "leader", True)]
        assert ended[0]["age_s"] >= 5
        assert standby.execute(take_lock, (BEAT_LOCK_KEY,)).fetchone()[0]
        claim_beat_lease(standby, "standby", 3)
        with pytest.raises(psycopg.OperationalError):
            renew_beat_lease(leader, "leader")
        assert not renew_beat_lease(standby, "leader"), "a lease taken over must not renew for its old owner"
    finally:
        leader.close()
        standby.close()
