"""Moderation records follow their content out: the upkeep purge's hook and the author cascade,
and the review queue never lists content that is gone."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sqlalchemy import text

from db.session import session_scope
from tasks.moderation import review, scoring
from tasks.upkeep import purge
from tests.moderation.conftest import OFFENSIVE_TEXT, THRESHOLD


def _post(session, author: int, content: str) -> str:
    return session.execute(text("INSERT INTO posts (author_id, content) VALUES (:a, :c) RETURNING id::text"),
                           {"a": author, "c": content}).scalar()


def _records(engine) -> dict[str, str]:
    with engine.connect() as connection:
        return dict(connection.execute(text("SELECT content_id::text, status FROM content_moderation")).all())


def test_purged_posts_and_authors_take_their_records_and_leave_the_queue(clean_db):
    now = datetime.now(timezone.utc)
    with session_scope() as session:
        stay, leave = (session.execute(text(
            "INSERT INTO users (email, username, hashed_password) VALUES (:e, :u, '!') RETURNING id"),
            {"e": f"{name}@example.com", "u": name}).scalar() for name in ("stays", "leaves"))
        kept, purged, deleted_not_purged, by_leaver = (
            _post(session, stay, OFFENSIVE_TEXT + " one"), _post(session, stay, OFFENSIVE_TEXT + " two"),
            _post(session, stay, OFFENSIVE_TEXT + " three"), _post(session, leave, OFFENSIVE_TEXT + " four"))
    for post_id in (kept, purged, deleted_not_purged, by_leaver):
        with session_scope() as session:
            assert scoring.score_content(session, "POST", post_id, threshold=THRESHOLD, now=now).status == "scored"
    assert forget_registered()
    with session_scope() as session:
        session.execute(text("UPDATE posts SET deleted_at = :at WHERE id = ANY(CAST(:ids AS uuid[]))"),
                        {"at": now - timedelta(days=400), "ids": [purged]})
        session.execute(text("UPDATE users SET deleted_at = :at WHERE id = :u"),
                        {"at": now - timedelta(days=400), "u": leave})

    # A post deleted outright (not through the purge) leaves its record, but not in the queue.
    with session_scope() as session:
        session.execute(text("DELETE FROM posts WHERE id = CAST(:id AS uuid)"), {"id": deleted_not_purged})
        queued = {row["content_id"] for row in review.queue(session)}
    assert queued == {kept, purged, by_leaver}

    report = purge.purge(now)
    assert report["failed"] == [] and report["tables"]["posts"]["deleted"] == 1
    assert report["tables"]["users"]["deleted"] == 1
    assert set(_records(clean_db)) == {kept, deleted_not_purged}
    with session_scope() as session:
        assert [row["content_id"] for row in review.queue(session)] == [kept]


def forget_registered() -> bool:
    from tasks.moderation.hiding import forget_purged_content

    return forget_purged_content in purge.PURGE_HOOKS
