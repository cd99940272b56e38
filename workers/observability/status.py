"""Health probe for operators and orchestrators.

Exit codes: 0 healthy, 1 degraded (a worker or beat is missing or stale),
2 down (the database or the broker cannot be reached).
"""
from __future__ import annotations

import json
import time
from datetime import datetime, timezone

from workers.console import table

HEALTHY, DEGRADED, DOWN = 0, 1, 2
BEAT_STALE_AFTER_S = 120


def collect(timeout: float = 2.0, canary_timeout: float = 10.0) -> dict:
    from sqlalchemy import text

    from db.heartbeats import heartbeats
    from db.session import get_engine, new_session
    from workers.celery_app import app
    from workers.observability.queues import queue_depths
    from workers.reliability.dead_letters import summary

    report: dict = {"checked_at": datetime.now(timezone.utc).isoformat(), "services": {}, "problems": []}
    try:
        with get_engine().connect() as connection:
            connection.execute(text("SELECT 1"))
        report["services"]["database"] = "ok"
    except Exception as exc:  # noqa: BLE001
        report["services"]["database"] = f"down: {type(exc).__name__}: {exc}"[:300]
    try:
        with app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=timeout)
        report["services"]["broker"] = "ok"
        report["queues"] = queue_depths(app)
    except Exception as exc:  # noqa: BLE001
        report["services"]["broker"] = f"down: {type(exc).__name__}: {exc}"[:300]
    if any(v != "ok" for v in report["services"].values()):
        report["exit_code"] = DOWN
        return report

    started = time.monotonic()
    replies = app.control.ping(timeout=timeout) or []
    report["workers"] = sorted(name for reply in replies for name in reply)
    report["ping_ms"] = round((time.monotonic() - started) * 1000)
    if not report["workers"]:
        report["problems"].append("no worker answered the ping")
    else:
        # A ping proves a worker's control channel; the canary proves it consumes and finishes tasks.
        started = time.monotonic()
        try:
            app.send_task("maintenance.noop").get(timeout=canary_timeout)
            report["canary_ms"] = round((time.monotonic() - started) * 1000)
        except Exception as exc:  # noqa: BLE001
            report["canary_ms"] = None
            report["problems"].append(f"canary task maintenance.noop did not complete in {canary_timeout:g} s "
                                      f"({type(exc).__name__})")

    now = datetime.now(timezone.utc)
    with new_session() as session:
        beats = heartbeats(session)
        report["dead_letters"] = summary(session)
        report["delivery"] = _delivery(session, now, report["problems"])
        report["search"] = _search(session, now, report["problems"])
    report["upkeep"] = _upkeep(now, report["problems"])
    report["analytics"] = _analytics(now, report["problems"])
    entries = set(app.conf.beat_schedule or {})
    report["beat"] = {name: round((now - at).total_seconds()) for name, at in beats.items()
                      if name == "maintenance.beat_heartbeat"
                      or (name.startswith("beat:") and name[len("beat:"):] in entries)}
    last_beat = beats.get("maintenance.beat_heartbeat")
    if last_beat is None:
        report["problems"].append("beat has never run")
    elif (now - last_beat).total_seconds() > BEAT_STALE_AFTER_S:
        report["problems"].append(f"beat is stale: last heartbeat {report['beat']['maintenance.beat_heartbeat']} s ago")
    report["exit_code"] = DEGRADED if report["problems"] else HEALTHY
    return report


def _delivery(session, now: datetime, problems: list[str]) -> dict:
    import settings
    from tasks.delivery.planning import DELIVERY_LAG_PROBLEM, backlog

    found = settings.current()
    state = backlog(session, now=now)
    state["email"] = "on" if found.smtp_url else "off here: SMTP_URL is not set in this environment"
    state["push"] = "on" if found.vapid_private_key else "off here: VAPID_PRIVATE_KEY is not set in this environment"
    if state["overdue_seconds"] > DELIVERY_LAG_PROBLEM.total_seconds():
        problems.append(f"delivery is behind: {state['due']} due deliveries, the oldest "
                        f"{state['overdue_seconds']} s overdue (is delivery.dispatch_due running?)")
    return state


def _search(session, now: datetime, problems: list[str]) -> dict:
    from tasks.search.engines import engine
    from tasks.search.verify import health

    state, found = health(session, engine().name, now)
    problems.extend(found)
    return state


def _upkeep(now: datetime, problems: list[str]) -> dict:
    from tasks.upkeep.jobs import health

    state, found = health(now)
    problems.extend(found)
    return state


def _analytics(now: datetime, problems: list[str]) -> dict:
    from tasks.analytics import flush

    try:
        state, found = flush.health(flush.analytics_redis(), now)
    except Exception as exc:  # noqa: BLE001 - the counters' Redis may be another server
        problems.append(f"analytics counters unreachable: {type(exc).__name__}")
        return {"error": type(exc).__name__}
    problems.extend(found)
    return state


def main(as_json: bool = False) -> int:
    report = collect()
    if as_json:
        print(json.dumps(report, indent=2))
        return report["exit_code"]
    print(table(("service", "state"), list(report["services"].items())))
    if "queues" in report:
        print()
        print(table(("queue", "depth"), list(report["queues"].items())))
    if "workers" in report:
        print(f"\nworkers answering ping ({report['ping_ms']} ms): {', '.join(report['workers']) or 'none'}")
    if report.get("canary_ms") is not None:
        print(f"canary task round trip: {report['canary_ms']} ms")
    if "dead_letters" in report:
        letters = report["dead_letters"]
        print(f"dead letters: {letters['dead']} dead, {letters['total']} total, {letters['last_hour']} in the last hour"
              " (python -m workers dead list)")
    if "delivery" in report:
        d = report["delivery"]
        print(f"delivery: email {d['email']}; push {d['push']}; {d['due']} due (oldest {d['overdue_seconds']} s "
              f"overdue), {d['in_flight']} in flight, {d['failed_last_hour']} failed in the last hour")
    if "search" in report:
        s = report["search"]
        checked = s["last_verify"]
        print(f"search: {s['backend']} version {s['version']}, {s['dirty']} dirty (oldest {s['lag_s']} s)"
              + (f"; last verify {checked['day']}: drift {checked['drift']}, {checked['removed']} removed, "
                 f"{checked['missing']} queued" if checked else "; never verified"))
    if "upkeep" in report:
        runs = [f"{job} never" if last is None else f"{job} {last['status']} {last['age_s']} s ago"
                for job, last in report["upkeep"].items()]
        print(f"upkeep (last run): {', '.join(runs)}")
    if "analytics" in report and "error" not in report["analytics"]:
        a = report["analytics"]
        print(f"analytics: {a['live_counters']} live counters, {a['pending_flushes']} flush(es) pending"
              + (f", the oldest {a['oldest_pending_s']} s" if a["oldest_pending_s"] is not None else ""))
    for name, age in report.get("beat", {}).items():
        print(f"last success {name}: {age} s ago")
    for problem in report["problems"]:
        print(f"PROBLEM: {problem}")
    print(f"\nstatus: {['healthy', 'degraded', 'down'][report['exit_code']]}")
    return report["exit_code"]
