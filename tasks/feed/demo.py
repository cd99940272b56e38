"""Demo: the feed family as the web tier and beat drive it."""
from sqlalchemy import text

from db.session import session_scope
from tasks.feed.tasks import refresh_user, score_users, update_trending
from workers.dev.demo import DemoGraph

FAMILY = "feed"
REFRESHED = ("alice", "bob")


def enqueue(graph: DemoGraph) -> list:
    # As beat would: trending, then one chunk of users; as the web tier would after
    # a follow: refresh_user for two users.
    return ([update_trending.delay(), score_users.delay(sorted(graph.user_ids.values()))]
            + [refresh_user.delay(graph.user_ids[name]) for name in REFRESHED])


def summarize(graph: DemoGraph) -> str:
    with session_scope() as session:
        rows = dict(session.execute(text(
            "SELECT reason, count(*) FROM feed_items WHERE user_id = ANY(:ids) GROUP BY reason"),
            {"ids": list(graph.user_ids.values())}).all())
        users = session.scalar(text("SELECT count(DISTINCT user_id) FROM feed_items WHERE user_id = ANY(:ids)"),
                               {"ids": list(graph.user_ids.values())})
        trending = session.scalar(text("SELECT count(*) FROM popular_posts"))
    by_reason = ", ".join(f"{reason} {count}" for reason, count in sorted(rows.items())) or "none"
    return f"{sum(rows.values())} feed rows for {users} demo users ({by_reason}); popular_posts {trending}"
