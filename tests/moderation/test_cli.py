"""`python -m workers moderation queue | approve | reject`: the table, the decisions and bad input."""
from __future__ import annotations

import uuid
from datetime import datetime, timezone

import pytest
from sqlalchemy import text

from db.session import session_scope
from tasks.moderation import scoring
from tests.moderation.conftest import CLEAN_TEXT, OFFENSIVE_TEXT, THRESHOLD
from workers.cli import main


def _flagged_post(author: int, content: str) -> tuple[str, str]:
    with session_scope() as session:
        post_id = session.execute(text("INSERT INTO posts (author_id, content) VALUES (:a, :c) RETURNING id::text"),
                                  {"a": author, "c": content}).scalar()
        scored = scoring.score_content(session, "POST", post_id, threshold=THRESHOLD, now=datetime.now(timezone.utc))
    return post_id, scored.moderation_id


@pytest.fixture
def people(clean_db) -> tuple[int, int]:
    with session_scope() as session:
        return tuple(session.execute(text(
            "INSERT INTO users (email, username, hashed_password) VALUES (:e, :u, '!') RETURNING id"),
            {"e": f"{name}@example.com", "u": name}).scalar() for name in ("author", "moderator"))


def _hidden(engine, post_id: str) -> bool:
    with engine.connect() as connection:
        return connection.scalar(text("SELECT moderation_hidden FROM posts WHERE id = CAST(:id AS uuid)"),
                                 {"id": post_id})


def test_queue_table_then_reject_and_approve(people, clean_db, capsys):
    author, moderator = people
    rejected_post, rejected = _flagged_post(author, OFFENSIVE_TEXT)
    approved_post, approved = _flagged_post(author, OFFENSIVE_TEXT + " again")
    _flagged_post(author, CLEAN_TEXT)   # approved automatically: not in the queue

    assert main(["moderation", "queue"]) == 0
    out = capsys.readouterr().out
    assert rejected in out and approved in out and "2 flagged, oldest first" in out
    assert "lasagna" not in out and "author@example.com" not in out

    assert main(["moderation", "reject", rejected, "--moderator", str(moderator), "--reason", "insults"]) == 0
    assert "rejected" in capsys.readouterr().out and _hidden(clean_db, rejected_post)
    assert main(["moderation", "approve", approved, "--moderator", str(moderator)]) == 0
    assert "shown again" in capsys.readouterr().out and not _hidden(clean_db, approved_post)
    assert main(["moderation", "queue"]) == 0
    assert "the moderation queue is empty" in capsys.readouterr().out
    with clean_db.connect() as connection:
        reasons = connection.execute(text(
            "SELECT message FROM notifications WHERE user_id = :u AND type = 'content_removed'"), {"u": author}).scalars()
        assert list(reasons) == ["Your post was removed: insults"]


def test_bad_ids_and_missing_arguments_are_refused_clearly(people, capsys):
    _, moderator = people
    with pytest.raises(SystemExit) as exit_info:
        main(["moderation", "approve", "not-a-uuid", "--moderator", str(moderator)])
    assert exit_info.value.code == 2
    assert "not a moderation record id (a UUID): 'not-a-uuid'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["moderation", "reject", str(uuid.uuid4()), "--moderator", str(moderator)])   # no --reason
    assert "--reason" in capsys.readouterr().err
    assert main(["moderation", "approve", str(uuid.uuid4()), "--moderator", str(moderator)]) == 1
    assert "error: no moderation record" in capsys.readouterr().out
