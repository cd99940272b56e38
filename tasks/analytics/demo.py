"""Demo: four users post about #gratitude, the web tier's client counts views, impressions and
profile views in Redis, and one chain flushes them, rolls the day up, ranks the tags and samples
the system; the summary prints alice's row for today and the trending tags."""
from __future__ import annotations

from datetime import datetime, timezone

from celery import chain
from sqlalchemy import text

import settings
from db.session import session_scope
from tasks.analytics import client
from tasks.analytics.tags import tag_post
from tasks.analytics.tasks import (
    flush_counters, record_engagement, rollup_daily, sample_system_metrics, update_trending_tags,
)
from workers.dev.demo import DemoGraph

FAMILY = "analytics"
TAGGED_POSTS = [("alice", "Three good things today #gratitude #sunrise"),
                ("bob", "Small wins count #Gratitude"), ("carol", "Thankful for tea #gratitude #tea"),
                ("dave", "#gratitude for friends, and #tea again")]


def enqueue(graph: DemoGraph) -> list:
    users = graph.user_ids
    with session_scope() as session:
        posts = [session.execute(text("INSERT INTO posts (author_id, content) VALUES (:a, :c) RETURNING id::text"),
                                 {"a": users[name], "c": content}).scalar() for name, content in TAGGED_POSTS]
        for post in posts:
            tag_post(session, post)   # what mentions.extract does on a real create
    client.configure(settings.current().analytics_redis_url or settings.current().broker_url)
    alices = [posts[0], *graph.post_ids[:1]]
    for viewer in users.values():
        client.track_impressions(posts, viewer)
        for post in alices:
            client.track_view(post, viewer)
        client.track_profile_view(users["alice"], viewer)
    sent = [record_engagement.delay(users["bob"], posts[0], "SAVE")]
    result = chain(flush_counters.si(), rollup_daily.si(), update_trending_tags.si(),
                   sample_system_metrics.si()).apply_async()
    while result is not None:
        sent.append(result)
        result = result.parent
    return sent


def summarize(graph: DemoGraph) -> str:
    today = datetime.now(timezone.utc).date()
    with session_scope() as session:
        row = session.execute(text(
            "SELECT profile_views, post_views, post_impressions, post_engagements, total_likes FROM user_analytics "
            "WHERE user_id = :u AND date = :d"), {"u": graph.user_ids["alice"], "d": today}).first()
        trending = session.execute(text("SELECT name, users_24h FROM trending_tags ORDER BY rank")).all()
    alice = ("no row yet" if row is None else
             f"{row.profile_views} profile views, {row.post_views} post views, {row.post_impressions} impressions, "
             f"{row.post_engagements} engagements ({row.total_likes} likes)")
    tags = ", ".join(f"#{name} ({users} users)" for name, users in trending) or "none"
    return f"alice today: {alice}; trending: {tags}"
