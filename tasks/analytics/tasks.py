"""Analytics entry points: thin; the logic is in the modules beside this one."""
from __future__ import annotations

from db.session import session_scope
from tasks.analytics import events, flush, rollup, system_metrics, trending
from workers.task import UuidStr, job


@job("analytics.flush_counters")
def flush_counters() -> dict:
    """Move the web tier's Redis view, impression and profile-view counters into PostgreSQL, exactly once."""
    return flush.flush(session_scope, flush.analytics_redis()).as_dict()


@job("analytics.record_engagement")
def record_engagement(user_id: int, post_id: UuidStr, engagement_type: str, value: float = 1.0,
                      metadata: dict | None = None) -> dict:
    """Log one engagement event (CLICK, SAVE, …) into the partitioned user_engagement."""
    event_id = events.event_uuid(record_engagement.request.id)
    with session_scope() as session:
        status = events.record_engagement(session, event_id, user_id, post_id, engagement_type, value, metadata)
    return {"status": status, "event_id": event_id}


@job("analytics.record_event")
def record_event(user_id: int, event_type: str, event_data: dict | None = None) -> dict:
    """Seed 004's raw analytics event log (analytics_events)."""
    event_id = events.event_uuid(record_event.request.id)
    with session_scope() as session:
        status = events.record_event(session, event_id, user_id, event_type, event_data)
    return {"status": status, "event_id": event_id}


@job("analytics.rollup_daily")
def rollup_daily() -> dict:
    """Recompute user_analytics from the last finalised day to today (provisional until final)."""
    return rollup.run(session_scope).as_dict()


@job("analytics.update_trending_tags")
def update_trending_tags() -> dict:
    """Rank tags by distinct users in the last 24 h against their 7-day baseline."""
    with session_scope() as session:
        return trending.update(session)


@job("analytics.sample_system_metrics")
def sample_system_metrics() -> dict:
    """Queue depths and ages, task totals, dead letters and database size into system_metrics."""
    from workers.broker import redis_client, shared_redis
    from workers.celery_app import app

    with session_scope() as session:
        return system_metrics.sample(session, app, redis_client(), histograms_client=shared_redis())
