"""``system_metrics`` (seed 003): one sample a minute of what an operator watches.

Per queue: depth and the age of its oldest message; per family: tasks
succeeded and failed so far (the duration histograms' counts, cumulative);
dead letters; the database's size and its largest tables. Samples are keyed
by (metric, minute, tags) and a minute already sampled is not sampled again
(the largest tables may differ by then), so a redelivered sampler adds nothing.
After 7 days minute samples are averaged into one per UTC hour; upkeep deletes
all after 30.
"""
from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta, timezone

from sqlalchemy import text
from sqlalchemy.orm import Session

import celeryconfig
from workers.observability.metrics import read_histograms
from workers.observability.queues import oldest_message_age, queue_depths

MINUTE_SAMPLES_KEPT = timedelta(days=7)
LARGEST_TABLES = 5

Sample = tuple[str, float, dict]


def queue_samples(app, client) -> list[Sample]:
    samples: list[Sample] = []
    for queue, depth in queue_depths(app).items():
        samples.append(("queue_depth", depth, {"queue": queue}))
        if client is not None:
            samples.append(("queue_oldest_age_seconds", oldest_message_age(client, queue) or 0.0, {"queue": queue}))
    return samples


def task_samples(client) -> list[Sample]:
    if client is None:
        return []
    totals: dict[tuple[str, str], int] = defaultdict(int)
    for (task, state), histogram in read_histograms(client).items():
        if state in ("SUCCESS", "FAILURE"):
            totals[(task.split(".", 1)[0], state.lower())] += histogram["count"]
    return [("tasks_total", count, {"family": family, "state": state})
            for (family, state), count in sorted(totals.items())]


def database_samples(session: Session) -> list[Sample]:
    samples: list[Sample] = [
        ("dead_letters", session.execute(text("SELECT count(*) FROM dead_letters")).scalar_one(), {}),
        ("database_bytes", session.execute(text("SELECT pg_database_size(current_database())")).scalar_one(), {}),
    ]
    largest = session.execute(text(
        "SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_class AS c "
        "WHERE c.relkind = 'r' AND c.relnamespace = 'public'::regnamespace ORDER BY 2 DESC LIMIT :n"),
        {"n": LARGEST_TABLES})
    samples += [("table_bytes", size, {"table": name}) for name, size in largest]
    return samples


def record(session: Session, samples: list[Sample], now: datetime) -> int:
    minute = now.astimezone(timezone.utc).replace(second=0, microsecond=0)
    if not samples:
        return 0
    return session.execute(text(
        "INSERT INTO system_metrics (metric_name, metric_value, tags, sampled_at) "
        "SELECT name, value, tags, :at FROM unnest(CAST(:names AS text[]), CAST(:values AS numeric[]), "
        "CAST(:tags AS jsonb[])) AS s(name, value, tags) "
        "WHERE NOT EXISTS (SELECT 1 FROM system_metrics WHERE resolution = 'minute' AND sampled_at = :at) "
        "ON CONFLICT (metric_name, resolution, sampled_at, tags) DO NOTHING"),
        {"at": minute, "names": [s[0] for s in samples], "values": [round(float(s[1]), 4) for s in samples],
         "tags": [_json(s[2]) for s in samples]}).rowcount


def _json(tags: dict) -> str:
    import json

    return json.dumps(tags, sort_keys=True)


def downsample(session: Session, now: datetime) -> int:
    """Average minute samples older than 7 days into hourly ones; whole hours only."""
    cutoff = (now - MINUTE_SAMPLES_KEPT).astimezone(timezone.utc).replace(minute=0, second=0, microsecond=0)
    return session.execute(text("""
        WITH old AS (
            DELETE FROM system_metrics WHERE resolution = 'minute' AND sampled_at < :cutoff
            RETURNING metric_name, metric_value, tags, sampled_at
        )
        INSERT INTO system_metrics (metric_name, metric_value, tags, sampled_at, resolution)
        SELECT metric_name, round(avg(metric_value), 4), tags, date_trunc('hour', sampled_at, 'UTC'), 'hour'
        FROM old GROUP BY metric_name, tags, date_trunc('hour', sampled_at, 'UTC')
        ON CONFLICT (metric_name, resolution, sampled_at, tags) DO NOTHING
    """), {"cutoff": cutoff}).rowcount


def sample(session: Session, app, client, now: datetime | None = None, histograms_client=None) -> dict:
    now = now or datetime.now(timezone.utc)
    # client: the broker's Redis (None on RabbitMQ: no ages); histograms_client: where the
    # duration histograms live (workers.broker.shared_redis), by default the same.
    samples = (queue_samples(app, client) + task_samples(histograms_client or client)
               + database_samples(session))
    written = record(session, samples, now)
    return {"status": "ok", "samples": written, "downsampled": downsample(session, now),
            "queues": len(celeryconfig.QUEUE_NAMES)}
