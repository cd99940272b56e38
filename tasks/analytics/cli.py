"""``python -m workers analytics report|system|rollup|flush``: the daily table of a user, system
metrics with sparklines, and the two jobs on demand (a backfill, a flush now)."""
from __future__ import annotations

import json
from collections import defaultdict
from datetime import date, datetime, timedelta, timezone

from sqlalchemy import text

from db.session import session_scope
from tasks.analytics import flush, rollup
from workers.console import printable, sparkline, table

REPORT_COLUMNS = ("profile_views", "post_views", "post_impressions", "post_engagements", "total_likes",
                  "total_comments", "total_shares", "followers_gained", "followers_lost")
SHORT = {"profile_views": "profile", "post_views": "views", "post_impressions": "impr", "post_engagements": "engage",
         "total_likes": "likes", "total_comments": "comments", "total_shares": "shares",
         "followers_gained": "+follow", "followers_lost": "-follow"}
SYSTEM_BUCKETS = 40


def report_main(user_id: int, days: int, now: datetime | None = None) -> int:
    today = (now or datetime.now(timezone.utc)).date()
    first = today - timedelta(days=days - 1)
    with session_scope() as session:
        username = session.execute(text("SELECT username FROM users WHERE id = :id"), {"id": user_id}).scalar()
        if username is None:
            print(f"no user {user_id}")
            return 1
        stored = {row.date: row for row in session.execute(text(
            f"SELECT date, {', '.join(REPORT_COLUMNS)}, is_final FROM user_analytics "
            "WHERE user_id = :id AND date >= :first ORDER BY date"), {"id": user_id, "first": first})}
    dates = [first + timedelta(days=n) for n in range(days)]
    values = {c: [getattr(stored[d], c) if d in stored else 0 for d in dates] for c in REPORT_COLUMNS}
    bars = sparkline(values["post_engagements"])
    rows = [(d.isoformat(), *(values[c][i] for c in REPORT_COLUMNS),
             "final" if d in stored and stored[d].is_final else "provisional" if d in stored else "-", bars[i])
            for i, d in enumerate(dates)]
    print(f"analytics of {printable(username)} (user {user_id}), {days} days to {today.isoformat()} (UTC)")
    print(table(("date", *(SHORT[c] for c in REPORT_COLUMNS), "state", "engage"), rows))
    print("\n  " + "   ".join(f"{SHORT[c]} {sparkline(values[c])} {sum(values[c])}"
                               for c in ("profile_views", "post_views", "post_engagements")))
    return 0


def system_main(since: timedelta, now: datetime | None = None) -> int:
    now = now or datetime.now(timezone.utc)
    start = now - since
    with session_scope() as session:
        rows = session.execute(text(
            "SELECT metric_name, tags, sampled_at, metric_value FROM system_metrics "
            "WHERE sampled_at >= :start ORDER BY metric_name, tags::text, sampled_at"), {"start": start}).all()
    series: dict[tuple[str, str], list[tuple[datetime, float]]] = defaultdict(list)
    for name, tags, at, value in rows:
        series[(name, json.dumps(tags, sort_keys=True))].append((at, float(value)))
    if not series:
        print(f"no system metrics since {start:%Y-%m-%d %H:%M} UTC")
        return 1
    width = (now - start) / SYSTEM_BUCKETS
    out = []
    for (name, tags), points in sorted(series.items()):
        buckets: dict[int, list[float]] = defaultdict(list)
        for at, value in points:
            buckets[min(int((at - start) / width), SYSTEM_BUCKETS - 1)].append(value)
        means = [sum(buckets[b]) / len(buckets[b]) for b in sorted(buckets)]
        label = ",".join(f"{k}={v}" for k, v in json.loads(tags).items())
        out.append((name, label, _number(points[-1][1]), _number(min(v for _a, v in points)),
                    _number(max(v for _a, v in points)), sparkline(means)))
    print(f"system metrics since {start:%Y-%m-%d %H:%M} UTC ({len(rows)} samples)")
    print(table(("metric", "tags", "last", "min", "max", "trend"), out))
    return 0


def _number(value: float) -> str:
    return f"{value:,.0f}" if value == int(value) else f"{value:,.2f}"


def rollup_main(since: date | None) -> int:
    now = datetime.now(timezone.utc)
    days = None if since is None else [since + timedelta(days=n) for n in range((now.date() - since).days + 1)]
    result = rollup.run(session_scope, now, days)
    print(table(("day", "state", "users", "changed", "cleared"),
                [(d.day.isoformat(), "final" if d.final else "provisional", d.users, d.changed, d.cleared)
                 for d in result.days]))
    return 0


def flush_main() -> int:
    result = flush.flush(session_scope, flush.analytics_redis())
    print(f"flushed {len(result.applied)} batch(es), {result.increments} increments "
          f"({result.rejected} rejected, {len(result.already_applied)} already applied)")
    return 0
