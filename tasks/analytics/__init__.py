"""Analytics: view and impression counters flushed from Redis, engagement events,
daily per-user rollups, hashtags and trending tags, system metrics.

``client.py`` is what the web tier imports (it needs only ``redis``); the rest
runs on the workers.
"""
