"""``python -m workers analytics report|system`` as an operator runs them, and the sparkline."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import text

from tests.analytics.conftest import make_world
from tests.conftest import ROOT
from workers.console import parse_duration, sparkline

BLOCKS = "▁▂▃▄▅▆▇█"


def run_cli(database_url: str, *argv: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, DATABASE_URL=database_url, PYTHONIOENCODING="utf-8")
    return subprocess.run([sys.executable, "-m", "workers", *argv], cwd=ROOT, env=env, capture_output=True,
                          timeout=120, encoding="utf-8")


def parse_table(output: str, first_header: str) -> list[dict[str, str]]:
    """The rows of the aligned table whose header starts with ``first_header``, by column name
    (a repeated name gets "#2"). Cells are cut at the header's column positions, so an empty
    cell stays a cell."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith(first_header + " "))
    columns = list(re.finditer(r"\S+", lines[start]))
    names: list[str] = []
    for column in columns:
        names.append(column.group() + ("#2" if column.group() in names else ""))
    assert set(lines[start + 1].strip()) == {"-", " "}
    rows = []
    for line in lines[start + 2:]:
        if not line.strip():
            break
        cuts = [c.start() for c in columns] + [None]
        rows.append({name: line[cuts[i]:cuts[i + 1]].strip() for i, name in enumerate(names)})
    return rows


# --- sparkline and durations -------------------------------------------------------------

@pytest.mark.parametrize("values, expected", [
    ([], ""),
    ([3], "▁"),
    ([5, 5, 5], "▁▁▁"),                                 # no spread: all the lowest block
    ([0, 1, 2, 3, 4, 5, 6, 7], "▁▂▃▄▅▆▇█"),
    ([7, 6, 5, 4, 3, 2, 1, 0], "█▇▆▅▄▃▂▁"),
    ([0, 14], "▁█"),
    ([-1, 6, 2], "▁█▄"),                               # (2 - -1) / 7 · 7 = 3
    ([0.0, 0.25, 1.0], "▁▃█"),                         # 0.25 · 7 = 1.75 → 2
    ([0, 6, 0, 0, 14, 4, 10], "▁▄▁▁█▃▆"),              # v / 14 · 7 = v / 2
    ([100, 100, 200], "▁▁█"),
])
def test_sparkline(values, expected):
    assert sparkline(values) == expected


def test_sparkline_has_one_block_per_value():
    line = sparkline(list(range(100)))
    assert len(line) == 100 and set(line) <= set(BLOCKS)
    assert line[0] == "▁" and line[-1] == "█"
    assert list(line) == sorted(line, key=BLOCKS.index)


@pytest.mark.parametrize("given, expected", [
    ("90s", timedelta(seconds=90)), ("15m", timedelta(minutes=15)), ("1h", timedelta(hours=1)),
    ("30d", timedelta(days=30)), ("2w", timedelta(days=14)), (" 12h ", timedelta(hours=12)),
])
def test_parse_duration(given, expected):
    assert parse_duration(given) == expected


@pytest.mark.parametrize("given", ["nonsense", "", "1.5h", "h", "-1h", "10", "1y", "1H"])
def test_parse_duration_refuses(given):
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(given)


# --- analytics report ------------------------------------------------------------------

COLUMNS = ("profile_views", "post_views", "post_impressions", "post_engagements", "total_likes",
           "total_comments", "total_shares", "followers_gained", "followers_lost")
# Day i of the 7 (0 = six days ago, 6 = today): the nine counters and is_final, or None for no row.
DAYS = [
    None,
    ((3, 10, 40, 6, 2, 1, 1, 1, 0), True),
    ((0, 0, 0, 0, 0, 0, 0, 0, 0), True),
    None,
    ((5, 25, 90, 14, 8, 4, 2, 3, 1), True),
    ((1, 4, 12, 4, 3, 1, 0, 0, 2), False),
    ((2, 8, 30, 10, 6, 3, 1, 2, 0), False),
]


def _insert_day(connection, user: int, day, values, final: bool) -> None:
    connection.execute(text(
        f"INSERT INTO user_analytics (user_id, date, {', '.join(COLUMNS)}, is_final) "
        f"VALUES (:u, :d, {', '.join(':' + c for c in COLUMNS)}, :f)"),
        {"u": user, "d": day, "f": final, **dict(zip(COLUMNS, values))})


@pytest.mark.integration
def test_report_prints_one_row_per_day_with_a_sparkline(clean_db, database_url):
    world = make_world(clean_db, users=2, posts=0)
    user, other = world.users
    today = datetime.now(timezone.utc).date()
    first = today - timedelta(days=6)
    with clean_db.begin() as connection:
        for i, stored in enumerate(DAYS):
            if stored is not None:
                _insert_day(connection, user, first + timedelta(days=i), *stored)
            # Another user's rows and this user's rows from before the range are not shown.
            _insert_day(connection, other, first + timedelta(days=i), (99,) * 9, True)
        _insert_day(connection, user, first - timedelta(days=1), (77,) * 9, True)

    done = run_cli(database_url, "analytics", "report", "--user", str(user), "--days", "7")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert f"analytics of user1 (user {user}), 7 days to {today.isoformat()} (UTC)" in out
    rows = parse_table(out, "date")
    assert [r["date"] for r in rows] == [(first + timedelta(days=i)).isoformat() for i in range(7)]
    short = ("profile", "views", "impr", "engage", "likes", "comments", "shares", "+follow", "-follow")
    expected_states = ["-", "final", "final", "-", "final", "provisional", "provisional"]
    # post_engagements 0, 6, 0, 0, 14, 4, 10 → v / 14 · 7 = v / 2 → blocks 0 3 0 0 7 2 5
    expected_bars = "▁▄▁▁█▃▆"
    for i, row in enumerate(rows):
        values = DAYS[i][0] if DAYS[i] else (0,) * 9
        assert tuple(int(row[name]) for name in short) == values, row
        assert row["state"] == expected_states[i]
    # The last column (also named "engage") is the engagements' sparkline, one block a day.
    bars = "".join(row["engage#2"] for row in rows)
    assert bars == expected_bars
    assert set(bars) <= set(BLOCKS)
    # Totals: profile 0,3,0,0,5,1,2 (span 5: v·7/5 → 0 4 0 0 7 1 3) = 11;
    # views 0,10,0,0,25,4,8 (span 25: v·7/25 → 0 3 0 0 7 1 2) = 47; engage = 34.
    assert "profile ▁▅▁▁█▂▄ 11" in out
    assert "views ▁▄▁▁█▂▃ 47" in out
    assert "engage ▁▄▁▁█▃▆ 34" in out
    assert "99" not in out and "77" not in out


@pytest.mark.integration
def test_report_of_an_unknown_user_exits_1(clean_db, database_url):
    done = run_cli(database_url, "analytics", "report", "--user", "987654", "--days", "7")
    assert done.returncode == 1
    assert "no user 987654" in done.stdout


@pytest.mark.parametrize("days", ["0", "-3", "seven"])
def test_report_refuses_days_below_one(database_url, days):
    done = run_cli(database_url, "analytics", "report", "--user", "1", "--days", days)
    assert done.returncode == 2
    assert "--days" in done.stderr
    if days != "seven":
        assert "must be at least 1" in done.stderr


# --- analytics system ------------------------------------------------------------------

def _metric(connection, name: str, tags: dict, at: datetime, value: float) -> None:
    connection.execute(text(
        "INSERT INTO system_metrics (metric_name, metric_value, tags, sampled_at) "
        "VALUES (:n, :v, CAST(:t AS jsonb), :at)"), {"n": name, "v": value, "t": json.dumps(tags), "at": at})


@pytest.mark.integration
def test_system_prints_last_min_max_and_a_trend_per_series(clean_db, database_url):
    now = datetime.now(timezone.utc).replace(microsecond=0)
    minutes = lambda n: now - timedelta(minutes=n)  # noqa: E731
    with clean_db.begin() as connection:
        # queue_depth{feed}: 2, 8, 4 (oldest first) → last 4, min 2, max 8; trend (v-2)·7/6 → 0, 7, 2.33
        _metric(connection, "queue_depth", {"queue": "feed"}, minutes(50), 2)
        _metric(connection, "queue_depth", {"queue": "feed"}, minutes(30), 8)
        _metric(connection, "queue_depth", {"queue": "feed"}, minutes(10), 4)
        _metric(connection, "queue_depth", {"queue": "feed"}, now - timedelta(hours=2), 1)   # before --since
        _metric(connection, "queue_depth", {"queue": "images"}, minutes(40), 0)
        _metric(connection, "queue_depth", {"queue": "images"}, minutes(20), 0)
        _metric(connection, "database_bytes", {}, minutes(40), 1_000_000)
        _metric(connection, "database_bytes", {}, minutes(20), 1_250_000)
        _metric(connection, "queue_oldest_age_seconds", {"queue": "feed"}, minutes(5), 12.5)

    done = run_cli(database_url, "analytics", "system", "--since", "1h")
    assert done.returncode == 0, done.stderr
    assert re.search(r"system metrics since \d{4}-\d\d-\d\d \d\d:\d\d UTC \(8 samples\)", done.stdout)
    rows = parse_table(done.stdout, "metric")
    assert rows == [
        {"metric": "database_bytes", "tags": "", "last": "1,250,000", "min": "1,000,000", "max": "1,250,000",
         "trend": "▁█"},
        {"metric": "queue_depth", "tags": "queue=feed", "last": "4", "min": "2", "max": "8", "trend": "▁█▃"},
        {"metric": "queue_depth", "tags": "queue=images", "last": "0", "min": "0", "max": "0", "trend": "▁▁"},
        {"metric": "queue_oldest_age_seconds", "tags": "queue=feed", "last": "12.50", "min": "12.50",
         "max": "12.50", "trend": "▁"},
    ]


@pytest.mark.integration
def test_system_with_nothing_sampled_exits_1(clean_db, database_url):
    with clean_db.begin() as connection:
        _metric(connection, "queue_depth", {"queue": "feed"}, datetime.now(timezone.utc) - timedelta(hours=3), 5)
    done = run_cli(database_url, "analytics", "system", "--since", "1h")
    assert done.returncode == 1
    assert "no system metrics since" in done.stdout


@pytest.mark.parametrize("since", ["nonsense", "1.5h", "0x"])
def test_system_refuses_a_bad_duration(database_url, since):
    done = run_cli(database_url, "analytics", "system", "--since", since)
    assert done.returncode == 2
    assert "--since" in done.stderr and f"not a duration: {since!r}" in done.stderr
