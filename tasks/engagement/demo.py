"""Demo: a buggy import corrupts two counters of the demo posts; the web tier forces a
refresh and beat's dirty pass runs; the summary reads the fixes back from the ledger."""
from __future__ import annotations

from sqlalchemy import text

from db.session import session_scope
from tasks.engagement.tasks import reconcile_dirty, refresh_counts
from workers.dev.demo import DemoGraph

FAMILY = "engagement"
EXPECTED_FAILURES = 0


def enqueue(graph: DemoGraph) -> list:
    first, second = graph.post_ids[0], graph.post_ids[1]
    with session_scope() as session:
        # What a bulk import that copied stale counters would leave behind.
        session.execute(text("UPDATE posts SET hearts_count = 40 WHERE id = :p"), {"p": first})
        session.execute(text("UPDATE posts SET shares_count = 7 WHERE id = :p"), {"p": second})
    return [refresh_counts.delay(list(graph.post_ids)), reconcile_dirty.delay()]


def summarize(graph: DemoGraph) -> str:
    with session_scope() as session:
        fixes = session.execute(text(
            "SELECT column_name, stored_value, true_value FROM counter_drift "
            "WHERE table_name = 'posts' AND entity_id = ANY(:ids) ORDER BY id"),
            {"ids": list(graph.post_ids)}).all()
        users = session.execute(text(
            "SELECT count(*) FROM counter_drift WHERE table_name = 'users' AND entity_id = ANY(:ids)"),
            {"ids": [str(i) for i in graph.user_ids.values()]}).scalar()
    shown = ", ".join(f"{column} {stored}->{true}" for column, stored, true in fixes[:3])
    return f"demo posts: {len(fixes)} counters repaired ({shown}); {users} user counters caught up"
