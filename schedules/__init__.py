"""The beat schedule. Every entry carries ``expires`` equal to its interval, so a
backlog (beat running while workers are down) never piles up duplicate runs."""
from datetime import timedelta

from celery.schedules import crontab

import settings


def every(seconds: float, task: str, **extra) -> dict:
    return {"task": task, "schedule": timedelta(seconds=seconds),
            "options": {"expires": seconds, **extra.pop("options", {})}, **extra}


def at(task: str, expires: float, **when) -> dict:
    """A crontab entry (``when`` as crontab's arguments) that expires after ``expires`` seconds."""
    return {"task": task, "schedule": crontab(**when), "options": {"expires": expires}}


beat_schedule = {
    # BEAT_HEARTBEAT_SECONDS shortens it for the two-beats chaos test.
    "beat-heartbeat": every(settings.current().beat_heartbeat_seconds, "maintenance.beat_heartbeat"),
    "notifications-prune-rate-limits": every(3600, "notifications.prune_rate_limits"),
    "feed-score-active": every(600, "feed.score_active"),
    "feed-update-trending": every(300, "feed.update_trending"),
    "feed-expire-items": every(900, "feed.expire_items"),
    "engagement-reconcile-dirty": every(30, "engagement.reconcile_dirty"),
    "delivery-dispatch-due": every(15, "delivery.dispatch_due"),
    # Every hour on the hour (+2 min): each user's local 08:00–08:59 falls in exactly one run.
    "delivery-send-digests": at("delivery.send_digests", 3000, minute=2),
    # Upkeep, at night (UTC), spread out so no two heavy jobs start together.
    "upkeep-ensure-partitions": at("upkeep.ensure_partitions", 3600, hour=0, minute=7),
    "upkeep-backup": at("upkeep.backup", 3600, hour=1, minute=23),
    "upkeep-apply-retention": at("upkeep.apply_retention", 3600, hour=2, minute=37),
    "upkeep-purge-soft-deleted": at("upkeep.purge_soft_deleted", 3600, hour=2, minute=53),
    "upkeep-sweep-stuck-media": every(900, "upkeep.sweep_stuck_media"),
    "analytics-flush-counters": every(60, "analytics.flush_counters"),
    "analytics-sample-system-metrics": every(60, "analytics.sample_system_metrics"),
    "analytics-update-trending-tags": every(600, "analytics.update_trending_tags"),
    "moderation-sweep-unscored": every(300, "moderation.sweep_unscored"),
    "search-index-dirty": every(30, "search.index_dirty"),
    "search-verify": at("search.verify", 3600, hour=3, minute=41),
    "cache-warm-active": every(300, "cache.warm_active"),
    # Hourly at :11, after the flush of the hour's first minute; yesterday is final from 02:11 UTC.
    "analytics-rollup-daily": at("analytics.rollup_daily", 3000, minute=11),
    # Nightly at 03:17 UTC, off the hour when other nightly jobs start. The sweep's own
    # singleton claim (counter_runs + advisory lock) covers a second beat or a manual run.
    "engagement-sweep-all": at("engagement.sweep_all", 3600, hour=3, minute=17),
}
