"""Demo: a little of everything upkeep clears. Sessions expired 40 days ago, engagement
from 13 months ago and audit entries from 4 months ago (both land in default partitions,
since no partition exists for those months), and a post soft-deleted 31 days ago. Then
the nightly jobs run in order, as one chain, and the summary reads what each recorded."""
from __future__ import annotations

from celery import chain
from sqlalchemy import text

from db.session import session_scope
from tasks.upkeep.tasks import apply_retention, backup, ensure_partitions, purge_soft_deleted, sweep_stuck_media
from workers.dev.demo import DemoGraph

FAMILY = "upkeep"
JOBS = ("ensure_partitions", "apply_retention", "purge_soft_deleted", "sweep_stuck_media", "backup")


def enqueue(graph: DemoGraph) -> list:
    alice, bob = graph.user_ids["alice"], graph.user_ids["bob"]
    with session_scope() as session:
        session.execute(text(
            "INSERT INTO user_sessions (user_id, refresh_token_hash, expires_at) "
            "SELECT :u, md5(g::text), now() - interval '40 days' FROM generate_series(1, 3) g"), {"u": bob})
        post = session.execute(text(
            "INSERT INTO posts (author_id, content) VALUES (:u, 'an old thought') RETURNING id"), {"u": bob}).scalar()
        session.execute(text(
            "INSERT INTO user_engagement (user_id, post_id, engagement_type, created_at) "
            "SELECT :u, :p, 'VIEW', now() - interval '13 months' - g * interval '1 minute' "
            "FROM generate_series(1, 50) g"), {"u": alice, "p": post})
        session.execute(text(
            "INSERT INTO audit_log (table_name, operation, user_id, created_at) "
            "SELECT 'posts', 'UPDATE', :u, now() - interval '4 months' FROM generate_series(1, 5)"), {"u": bob})
        session.execute(text("UPDATE posts SET deleted_at = now() - interval '31 days' WHERE id = :p"), {"p": post})
    result = chain(ensure_partitions.si(), apply_retention.si(), purge_soft_deleted.si(), sweep_stuck_media.si(),
                   backup.si()).apply_async()
    results = []
    while result is not None:
        results.append(result)
        result = result.parent
    return results


def summarize(graph: DemoGraph) -> str:
    with session_scope() as session:
        runs = dict(session.execute(text(
            "SELECT DISTINCT ON (job) job, details FROM upkeep_runs WHERE NOT dry_run "
            "ORDER BY job, finished_at DESC")).all())
    parts = []
    made = runs.get("ensure_partitions", {}).get("tables", {})
    adopted = sum(len(t.get("adopted", {})) for t in made.values())
    parts.append(f"partitions: {sum(len(t.get('created', [])) for t in made.values())} made, {adopted} adopted")
    kept = runs.get("apply_retention", {}).get("tables", {})
    parts.append("retention: " + (", ".join(_retired(name, done) for name, done in kept.items()
                                            if any(done.get(k) for k in ("deleted", "archived", "dropped")))
                                  or "nothing due"))
    purged = runs.get("purge_soft_deleted", {}).get("tables", {})
    parts.append("purged: " + ", ".join(f"{done.get('deleted', 0)} {kind}" for kind, done in purged.items()))
    made_backup = runs.get("backup")
    if made_backup:
        parts.append(f"backup {made_backup.get('file')} ({made_backup.get('rows')} rows)"
                     + ("; restore verified" if "backup_verify" in runs else ""))
    return "; ".join(parts)


def _retired(name: str, done: dict) -> str:
    if "deleted" in done:
        return f"{name} {done['deleted']} rows"
    verb = "archived" if "archived" in done else "dropped"
    return f"{name} {len(done[verb])} partition(s) {verb}"
