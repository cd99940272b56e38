"""The Celery tasks: through a real worker, and the sweep of content never sent, at frozen instants."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from freezegun import freeze_time
from sqlalchemy import text

from tests.moderation.conftest import CLEAN_TEXT, OFFENSIVE_TEXT
from tests.waiting import wait_for
from workers.reliability.deliveries import deliveries

NIL = "00000000-0000-0000-0000-000000000000"


def _users(engine, *names: str) -> list[int]:
    with engine.begin() as connection:
        return [connection.execute(text(
            "INSERT INTO users (email, username, hashed_password) VALUES (:e, :n, '!') RETURNING id"),
            {"e": f"{n}@example.com", "n": n}).scalar() for n in names]


def _post(engine, author: int, content: str, created_at: datetime | None = None, deleted: bool = False) -> str:
    with engine.begin() as connection:
        return connection.execute(text(
            "INSERT INTO posts (author_id, content, created_at, deleted_at) "
            "VALUES (:a, :c, coalesce(:at, now()), CASE WHEN :deleted THEN now() END) RETURNING id::text"),
            {"a": author, "c": content, "at": created_at, "deleted": deleted}).scalar()


def _comment(engine, author: int, post_id: str, content: str, created_at: datetime | None = None) -> str:
    with engine.begin() as connection:
        return connection.execute(text(
            "INSERT INTO comments (author_id, post_id, content, created_at) "
            "VALUES (:a, CAST(:p AS uuid), :c, coalesce(:at, now())) RETURNING id::text"),
            {"a": author, "p": post_id, "c": content, "at": created_at}).scalar()


def _state(engine, table: str, content_id: str) -> tuple[bool, list[str]]:
    with engine.connect() as connection:
        hidden = connection.scalar(text(f"SELECT moderation_hidden FROM {table} WHERE id = CAST(:id AS uuid)"),
                                   {"id": content_id})
        statuses = connection.execute(text(
            "SELECT status FROM content_moderation WHERE content_id = CAST(:id AS uuid) ORDER BY created_at"),
            {"id": content_id}).scalars().all()
    return hidden, statuses


def _dead_letter(engine, task_id: str) -> dict | None:
    with engine.connect() as connection:
        found = connection.execute(text("SELECT * FROM dead_letters WHERE task_id = :id"),
                                   {"id": task_id}).mappings().first()
    return dict(found) if found else None


# --- Through a real worker -------------------------------------------------------------------


@pytest.mark.integration
def test_score_content_through_a_worker(clean_db, celery_worker):
    from tasks.moderation.tasks import score_content

    (author,) = _users(clean_db, "mt_author")
    post = _post(clean_db, author, OFFENSIVE_TEXT)
    result = score_content.delay("post", post).get(timeout=60)
    assert (result["status"], result["moderation_status"], result["hidden_changed"]) == ("scored", "FLAGGED", True)
    assert _state(clean_db, "posts", post) == (True, ["FLAGGED"])
    # Any case; a second run of the same text is a no-op.
    again = score_content.delay("POST", post).get(timeout=60)
    assert (again["status"], again["moderation_status"], again["hidden_changed"]) == ("unchanged", "FLAGGED", False)
    comment = _comment(clean_db, author, post, CLEAN_TEXT)
    assert score_content.delay("Comment", comment).get(timeout=60)["moderation_status"] == "APPROVED"
    assert _state(clean_db, "comments", comment) == (False, ["APPROVED"])
    assert score_content.delay("post", NIL).get(timeout=60) == {
        "status": "gone", "moderation_status": None, "automated_score": None, "hidden_changed": False,
        "moderation_id": None}


@pytest.mark.integration
@pytest.mark.parametrize(("args", "message"), [
    (("video", NIL), "content_type must be 'post' or 'comment'"),
    (("post", "not-a-uuid"), "not a valid UUID"),
    (("comment", 42), "must be a UUID string"),
    ((["post"], NIL), "must be str"),
])
def test_bad_arguments_are_typed_dead_letters_and_the_worker_goes_on(clean_db, celery_worker, args, message):
    from tasks.moderation.tasks import score_content
    from workers.errors import InvalidArguments

    sent = score_content.delay(*args)
    with pytest.raises(InvalidArguments, match=message) as raised:
        sent.get(timeout=60)
    assert raised.value.code == "invalid_arguments"
    assert [deliveries(sent.id, retry) for retry in range(2)] == [1, 0]      # refused once, never retried
    letter = wait_for(lambda: _dead_letter(clean_db, sent.id), timeout=30, what="the dead letter")
    assert (letter["error_code"], letter["task_name"]) == ("invalid_arguments", "moderation.score_content")

    (author,) = _users(clean_db, "mt_after")
    post = _post(clean_db, author, CLEAN_TEXT)
    assert score_content.delay("post", post).get(timeout=60)["moderation_status"] == "APPROVED"


def test_content_type_of_accepts_post_and_comment_in_any_case():
    from tasks.moderation.tasks import content_type_of
    from workers.errors import InvalidArguments

    assert [content_type_of(v) for v in ("post", "POST", "Post", "comment", "COMMENT")] == [
        "POST", "POST", "POST", "COMMENT", "COMMENT"]
    for bad in ("video", "posts", "", " post", "user"):
        with pytest.raises(InvalidArguments):
            content_type_of(bad)


# --- The sweep -------------------------------------------------------------------------------

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=timezone.utc)
SWEEP_WINDOW = timedelta(days=2)     # the documented window, spelt here so a changed constant fails


def test_the_sweep_scores_recent_unscored_content_only(clean_db):
    from tasks.moderation import scoring
    from tasks.moderation.tasks import sweep_unscored

    assert scoring.SWEEP_WINDOW == SWEEP_WINDOW

    author, other = _users(clean_db, "sw_author", "sw_other")
    at_edge = _post(clean_db, author, OFFENSIVE_TEXT, NOW - SWEEP_WINDOW)                    # exactly 2 days: in
    too_old = _post(clean_db, author, OFFENSIVE_TEXT + " again", NOW - SWEEP_WINDOW - timedelta(seconds=1))
    fresh = _post(clean_db, other, CLEAN_TEXT, NOW - timedelta(minutes=5))
    deleted = _post(clean_db, author, "delete me you idiot", NOW - timedelta(hours=1), deleted=True)
    comment = _comment(clean_db, other, fresh, "shut up you stupid bitch", NOW - timedelta(hours=3))
    with freeze_time(NOW):
        from tasks.moderation.tasks import score_content
        already = _post(clean_db, other, CLEAN_TEXT + " (sent by the web tier)", NOW - timedelta(hours=1))
        assert score_content("post", already)["status"] == "scored"

        assert sweep_unscored() == {"status": "ok", "scored": {"post": 2, "comment": 1}}
        assert sweep_unscored() == {"status": "ok", "scored": {"post": 0, "comment": 0}}   # nothing left

    assert _state(clean_db, "posts", at_edge) == (True, ["FLAGGED"])
    assert _state(clean_db, "posts", fresh) == (False, ["APPROVED"])
    assert _state(clean_db, "comments", comment) == (True, ["FLAGGED"])
    assert _state(clean_db, "posts", already) == (False, ["APPROVED"])
    assert _state(clean_db, "posts", too_old) == (False, [])          # outside the window: never scored
    assert _state(clean_db, "posts", deleted) == (False, [])

    # The window, not anything else, left it out: a sweep an hour earlier takes it.
    with freeze_time(NOW - timedelta(hours=1)):
        assert sweep_unscored() == {"status": "ok", "scored": {"post": 1, "comment": 0}}
    assert _state(clean_db, "posts", too_old) == (True, ["FLAGGED"])


def test_unscored_is_oldest_first_and_bounded(clean_db):
    from sqlalchemy.orm import Session

    from tasks.moderation.scoring import unscored

    (author,) = _users(clean_db, "sw_limit")
    posts = [_post(clean_db, author, f"{CLEAN_TEXT} {i}", NOW - timedelta(minutes=m))
             for i, m in enumerate((5, 30, 10, 50, 1))]
    by_age = [posts[i] for i in (3, 1, 2, 0, 4)]
    with Session(clean_db) as session:
        assert unscored(session, "POST", NOW) == by_age
        assert unscored(session, "POST", NOW, limit=2) == by_age[:2]
        assert unscored(session, "COMMENT", NOW) == []
        assert unscored(session, "POST", NOW + timedelta(days=2)) == []     # all older than the window now
