"""score_content against real PostgreSQL: one row per version, hiding above the threshold."""
from __future__ import annotations

import hashlib
import threading
from datetime import timedelta
from decimal import Decimal

from sqlalchemy import text
from sqlalchemy.orm import Session

from tasks.moderation import review
from tasks.moderation.scoring import content_hash, score_content
from tests.moderation.conftest import CLEAN_TEXT, OFFENSIVE_TEXT, THRESHOLD, utcnow, writes_so_far
from tests.waiting import backend_pid, blocked_by, in_threads


def score(session, content_type, content_id, threshold=THRESHOLD, now=None):
    return score_content(session, content_type, content_id, threshold=threshold, now=now or utcnow())


def test_clean_text_is_approved_and_stays_visible(world, db_session):
    author = world.users(1)[0]
    post = world.post(author, CLEAN_TEXT)
    result = score(db_session, "POST", post)
    assert (result.status, result.moderation_status, result.hidden_changed) == ("scored", "APPROVED", False)
    assert Decimal(result.automated_score) <= Decimal("0.8")
    assert not world.hidden("POST", post)
    [row] = world.versions("POST", post)
    assert row.id == result.moderation_id and row.status == "APPROVED"
    assert str(row.automated_score) == result.automated_score
    assert bytes(row.content_hash) == hashlib.sha256(CLEAN_TEXT.encode()).digest() == content_hash(CLEAN_TEXT)
    assert row.moderator_id is None and row.reviewed_at is None        # automatic, not a moderator's
    assert set(row.signals) == {"profanity", "repetition", "link_density"}
    assert row.signals["repetition"] == 0 and row.signals["link_density"] == 0


def test_offensive_text_is_flagged_and_hidden(world, db_session):
    author = world.users(1)[0]
    post = world.post(author, OFFENSIVE_TEXT)
    result = score(db_session, "POST", post)
    assert (result.status, result.moderation_status, result.hidden_changed) == ("scored", "FLAGGED", True)
    assert Decimal(result.automated_score) > Decimal("0.8")
    assert world.hidden("POST", post)
    assert [r.status for r in world.versions("POST", post)] == ["FLAGGED"]
    assert result.moderation_id in [q["id"] for q in review.queue(db_session)]


def test_the_threshold_decides(world, db_session):
    author = world.users(1)[0]
    post = world.post(author, CLEAN_TEXT)
    result = score(db_session, "POST", post, threshold=0.0)    # any score above 0.00 is flagged
    assert Decimal(result.automated_score) > 0
    assert result.moderation_status == "FLAGGED" and world.hidden("POST", post)


def test_a_comment_is_scored_and_hidden_like_a_post(world, db_session):
    author, commenter = world.users(2)
    post = world.post(author, CLEAN_TEXT)
    comment = world.comment(commenter, post, "shut up you stupid bitch")
    result = score(db_session, "COMMENT", comment)
    assert (result.status, result.moderation_status) == ("scored", "FLAGGED")
    assert world.hidden("COMMENT", comment) and not world.hidden("POST", post)
    assert world.versions("POST", post) == []


def test_missing_content_is_gone(db_session):
    assert score(db_session, "POST", "00000000-0000-0000-0000-000000000000").status == "gone"
    assert score(db_session, "COMMENT", "00000000-0000-0000-0000-000000000000").status == "gone"
    assert db_session.execute(text("SELECT count(*) FROM content_moderation")).scalar() == 0


def test_rescoring_unchanged_text_writes_nothing(world, db_session):
    author = world.users(1)[0]
    clean, offensive = world.post(author, CLEAN_TEXT), world.post(author, OFFENSIVE_TEXT)
    first = {p: score(db_session, "POST", p) for p in (clean, offensive)}
    before_rows = {p: world.versions("POST", p) for p in (clean, offensive)}
    before = writes_so_far(db_session)
    for post in (clean, offensive):
        again = score(db_session, "POST", post)
        assert again.status == "unchanged"
        assert again.moderation_status == first[post].moderation_status
        assert again.hidden_changed is False
    assert writes_so_far(db_session) == before, "re-scoring an unchanged text wrote rows"
    assert {p: world.versions("POST", p) for p in (clean, offensive)} == before_rows


def test_the_write_counter_sees_a_write(world, db_session):
    # The "writes nothing" check above can fail: the counter moves when something is written.
    author = world.users(1)[0]
    post = world.post(author, CLEAN_TEXT)
    before = writes_so_far(db_session)
    score(db_session, "POST", post)
    assert writes_so_far(db_session) > before


def test_an_edit_is_a_new_version(world, db_session):
    author = world.users(1)[0]
    post = world.post(author, CLEAN_TEXT)
    first = score(db_session, "POST", post)
    world.edit_post(post, CLEAN_TEXT + " (edited: added cheese)")
    second = score(db_session, "POST", post)
    assert second.status == "scored" and second.moderation_id != first.moderation_id
    rows = world.versions("POST", post)
    assert len(rows) == 2 and {r.status for r in rows} == {"APPROVED"}
    assert len({bytes(r.content_hash) for r in rows}) == 2
    # The edit turned offensive: a third version, flagged and hidden.
    world.edit_post(post, OFFENSIVE_TEXT)
    third = score(db_session, "POST", post)
    assert (third.status, third.moderation_status, third.hidden_changed) == ("scored", "FLAGGED", True)
    assert len(world.versions("POST", post)) == 3 and world.hidden("POST", post)
    # Edited back to a clean, already approved text: shown again, no new row.
    world.edit_post(post, CLEAN_TEXT)
    back = score(db_session, "POST", post)
    assert (back.status, back.moderation_status, back.hidden_changed) == ("unchanged", "APPROVED", True)
    assert len(world.versions("POST", post)) == 3 and not world.hidden("POST", post)


def test_repeated_identical_posts_raise_the_score(world, db_session):
    author, other = world.users(2)
    spam = "Check out my new mixtape on my profile"
    now = utcnow()
    first = world.post(author, spam, at=now - timedelta(hours=3))
    alone = Decimal(score(db_session, "POST", first, now=now).automated_score)
    world.post(other, spam, at=now - timedelta(hours=2))                 # another author's copy does not count
    world.post(author, spam, at=now - timedelta(days=2))                 # outside the day looked back over
    repeats = [world.post(author, spam, at=now - timedelta(minutes=m)) for m in (30, 20, 10)]
    last = score(db_session, "POST", repeats[-1], now=now)
    # The author's other copies in the last day: first + 2 repeats = 3 -> 1 - 0.5**3.
    [row] = world.versions("POST", repeats[-1])
    assert row.signals["repetition"] == 0.875
    assert Decimal(last.automated_score) > alone
    assert last.moderation_status == "FLAGGED" and world.hidden("POST", repeats[-1])
    assert alone <= Decimal("0.8") and not world.hidden("POST", first)


def test_repeats_count_comments_too(world, db_session):
    author, other = world.users(2)
    post = world.post(other, CLEAN_TEXT)
    spam = "follow me for daily giveaways"
    for _ in range(2):
        world.comment(author, post, spam)
    mine = world.post(author, spam)
    score(db_session, "POST", mine)
    [row] = world.versions("POST", mine)
    assert row.signals["repetition"] == 0.75


def test_an_edit_back_to_a_rejected_text_is_hidden_again(world, db_session):
    author, moderator = world.users(2)
    post = world.post(author, OFFENSIVE_TEXT)
    flagged = score(db_session, "POST", post)
    decision = review.decide(db_session, flagged.moderation_id, approve=False, moderator_id=moderator, now=utcnow())
    assert decision.status == "REJECTED" and world.hidden("POST", post)
    world.edit_post(post, CLEAN_TEXT)
    edited = score(db_session, "POST", post)
    assert (edited.moderation_status, edited.hidden_changed) == ("APPROVED", True)
    assert not world.hidden("POST", post)
    world.edit_post(post, OFFENSIVE_TEXT)
    back = score(db_session, "POST", post)
    assert (back.status, back.moderation_status, back.hidden_changed) == ("unchanged", "REJECTED", True)
    assert world.hidden("POST", post)
    assert sorted(r.status for r in world.versions("POST", post)) == ["APPROVED", "REJECTED"]


def test_a_decision_on_an_old_version_waits_for_it(world, db_session):
    author, moderator = world.users(2)
    post = world.post(author, OFFENSIVE_TEXT)
    flagged = score(db_session, "POST", post)
    world.edit_post(post, CLEAN_TEXT)
    score(db_session, "POST", post)
    assert not world.hidden("POST", post)
    decision = review.decide(db_session, flagged.moderation_id, approve=False, moderator_id=moderator, now=utcnow())
    assert decision.current_version is False and decision.hidden_changed is False
    assert not world.hidden("POST", post)         # the current text is the clean one


# --- Concurrency: committed data, each scorer in its own session and thread ---------------


def _seed(engine, content: str) -> str:
    with engine.begin() as connection:
        author = connection.execute(text(
            "INSERT INTO users (email, username, hashed_password) VALUES ('mc@example.com', 'mc', '!') "
            "RETURNING id")).scalar()
        return connection.execute(text(
            "INSERT INTO posts (author_id, content) VALUES (:a, :c) RETURNING id::text"),
            {"a": author, "c": content}).scalar()


def _rows(engine, post_id: str) -> list:
    with engine.connect() as connection:
        return connection.execute(text(
            "SELECT status FROM content_moderation WHERE content_id = CAST(:id AS uuid)"), {"id": post_id}).all()


def test_concurrent_scorers_write_one_row(clean_db):
    post = _seed(clean_db, OFFENSIVE_TEXT)
    start = threading.Barrier(4)

    def scorer():
        with Session(clean_db) as session:
            start.wait(timeout=10)
            result = score(session, "POST", post)
            session.commit()
            return result

    results = in_threads(scorer, scorer, scorer, scorer)
    assert sorted(r.status for r in results) == ["scored", "unchanged", "unchanged", "unchanged"]
    assert {r.moderation_status for r in results} == {"FLAGGED"}
    assert sum(r.hidden_changed for r in results) == 1
    assert _rows(clean_db, post) == [("FLAGGED",)]


def test_a_second_scorer_waits_for_the_first_and_finds_its_row(clean_db):
    """Deterministic: the first scorer holds its transaction open until the second is seen
    waiting on it, so the second cannot have read 'not scored yet' before the first committed."""
    post = _seed(clean_db, OFFENSIVE_TEXT)
    with Session(clean_db) as first:
        assert score(first, "POST", post).status == "scored"
        holder = backend_pid(first)
        done = threading.Event()
        outcome = {}

        def second():
            try:
                with Session(clean_db) as session:
                    outcome["result"] = score(session, "POST", post)
                    session.commit()
            finally:
                done.set()

        thread = threading.Thread(target=second)
        thread.start()
        waiting = blocked_by(clean_db, holder, done)
        first.commit()
    thread.join(30)
    assert waiting is not None and "pg_advisory_xact_lock" in waiting, waiting
    assert outcome["result"].status == "unchanged" and outcome["result"].moderation_status == "FLAGGED"
    assert _rows(clean_db, post) == [("FLAGGED",)]
