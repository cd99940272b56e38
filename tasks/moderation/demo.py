"""Demo: grace posts one friendly and one abusive line; both are scored, the abusive one is
flagged and hidden; the summary shows both decisions and the review queue's length."""
from __future__ import annotations

from sqlalchemy import text

from db.session import session_scope
from tasks.moderation.tasks import score_content
from workers.dev.demo import DemoGraph

FAMILY = "moderation"
POSTS = ("What a lovely morning walk with friends", "You are a stupid idiot, shut the fuck up")


def enqueue(graph: DemoGraph) -> list:
    with session_scope() as session:
        ids = [session.execute(text("INSERT INTO posts (author_id, content) VALUES (:a, :c) RETURNING id::text"),
                               {"a": graph.user_ids["grace"], "c": content}).scalar() for content in POSTS]
    graph.notes["moderation"] = ids
    return [score_content.delay("post", post_id) for post_id in ids]


def summarize(graph: DemoGraph) -> str:
    ids = graph.notes.get("moderation", [])
    with session_scope() as session:
        rows = session.execute(text(
            "SELECT m.status, m.automated_score, p.moderation_hidden FROM posts p "
            "JOIN content_moderation m ON m.content_type = 'POST' AND m.content_id = p.id "
            "WHERE p.id = ANY(CAST(:ids AS uuid[])) ORDER BY array_position(CAST(:ids AS uuid[]), p.id)"),
            {"ids": ids}).all()
        queued = session.execute(text("SELECT count(*) FROM content_moderation WHERE status = 'FLAGGED'")).scalar()
    decisions = ", ".join(f"{status} {score}{' (hidden)' if hidden else ''}" for status, score, hidden in rows)
    return f"grace's posts: {decisions or 'not scored yet'}; review queue: {queued}"
