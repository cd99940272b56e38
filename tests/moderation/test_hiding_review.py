"""What hiding does to readers (feeds, notifications) and what a moderator's decision undoes."""
from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import text

from tasks.feed.scoring import score_users
from tasks.mentions.service import load_source, notify_mentions
from tasks.moderation import review
from tasks.moderation.scoring import score_content
from tests.moderation.conftest import CLEAN_TEXT, OFFENSIVE_TEXT, THRESHOLD, utcnow
from tests.notifications.builders import record


def score(session, content_type, content_id):
    return score_content(session, content_type, content_id, threshold=THRESHOLD, now=utcnow())


def refresh(session, user_id):
    score_users(session, [user_id], utcnow())


@pytest.fixture
def followed_author(world):
    author, follower, moderator = world.users(3)
    world.follow(follower, author, at=utcnow() - timedelta(days=30))
    return author, follower, moderator


def test_a_flagged_post_leaves_the_feed_and_comes_back_when_approved(world, db_session, followed_author):
    author, follower, moderator = followed_author
    now = utcnow()
    bad = world.post(author, OFFENSIVE_TEXT, at=now - timedelta(hours=1))
    good = world.post(author, CLEAN_TEXT, at=now - timedelta(hours=2))
    refresh(db_session, follower)
    assert set(world.feed(follower)) == {bad, good}       # not scored yet: visible

    flagged = score(db_session, "POST", bad)
    assert flagged.moderation_status == "FLAGGED"
    assert score(db_session, "POST", good).moderation_status == "APPROVED"
    assert world.feed(follower) == [good]                  # dropped from the stored feed at once
    refresh(db_session, follower)
    assert world.feed(follower) == [good]                  # and the refresh does not bring it back

    decision = review.decide(db_session, flagged.moderation_id, approve=True, moderator_id=moderator,
                             now=utcnow(), reason="satire, allowed")
    assert (decision.status, decision.previous, decision.current_version, decision.hidden_changed) == (
        "APPROVED", "FLAGGED", True, True)
    assert decision.author_notified is False
    assert not world.hidden("POST", bad)
    refresh(db_session, follower)
    assert set(world.feed(follower)) == {bad, good}
    [row] = [r for r in world.versions("POST", bad)]
    assert (row.status, row.moderator_id) == ("APPROVED", moderator) and row.reviewed_at is not None
    assert flagged.moderation_id not in [q["id"] for q in review.queue(db_session)]
    assert world.of_type(author, "content_removed") == []


def test_a_reject_keeps_it_hidden_and_tells_the_author_once(world, db_session, followed_author):
    author, follower, moderator = followed_author
    bad = world.post(author, OFFENSIVE_TEXT, at=utcnow() - timedelta(hours=1))
    flagged = score(db_session, "POST", bad)
    assert [q["id"] for q in review.queue(db_session)] == [flagged.moderation_id]

    first = review.decide(db_session, flagged.moderation_id, approve=False, moderator_id=moderator,
                          now=utcnow(), reason="  harassment  ")
    second = review.decide(db_session, flagged.moderation_id, approve=False, moderator_id=moderator, now=utcnow())
    assert (first.status, first.previous, first.author_notified, first.hidden_changed) == (
        "REJECTED", "FLAGGED", True, False)
    assert (second.status, second.previous, second.author_notified) == ("REJECTED", "REJECTED", False)
    assert world.hidden("POST", bad)
    refresh(db_session, follower)
    assert world.feed(follower) == []
    [removed] = world.of_type(author, "content_removed")
    assert removed.data["reason"] == "harassment"
    assert str(moderator) not in (removed.message or "")      # the moderator is not named
    assert world.of_type(moderator, "content_removed") == [] and world.of_type(follower, "content_removed") == []
    assert review.queue(db_session) == []
    [row] = world.versions("POST", bad)
    assert row.status == "REJECTED"


def test_reject_after_approve_after_reject_notifies_once(world, db_session, followed_author):
    author, _follower, moderator = followed_author
    bad = world.post(author, OFFENSIVE_TEXT)
    flagged = score(db_session, "POST", bad)
    for approve in (False, True, False):
        review.decide(db_session, flagged.moderation_id, approve=approve, moderator_id=moderator, now=utcnow())
    assert world.hidden("POST", bad)
    assert len(world.of_type(author, "content_removed")) == 1


def test_deciding_an_unknown_record_raises(db_session):
    with pytest.raises(review.NotFound):
        review.decide(db_session, "00000000-0000-0000-0000-000000000000", approve=True, moderator_id=1,
                      now=utcnow())


def test_a_mention_in_a_flagged_post_is_removed_and_restored_on_approve(world, db_session):
    author, moderator = world.users(2)
    bob = world.user(f"bob_{author}")
    post = world.post(author, f"@bob_{author} {OFFENSIVE_TEXT}")
    assert notify_mentions(db_session, load_source(db_session, "post", post)).notified == [f"bob_{author}"]
    assert len(world.of_type(bob, "mention")) == 1

    flagged = score(db_session, "POST", post)
    assert flagged.moderation_status == "FLAGGED"
    assert world.of_type(bob, "mention") == []
    # While hidden, a re-run of mentions.extract records nothing (its result still lists bob as
    # "notified": record_mentions' "withheld" is not told apart in tasks/mentions/service.py).
    notify_mentions(db_session, load_source(db_session, "post", post))
    assert world.of_type(bob, "mention") == []

    review.decide(db_session, flagged.moderation_id, approve=True, moderator_id=moderator, now=utcnow())
    [mention] = world.of_type(bob, "mention")
    assert mention.data["post_id"] == post
    # Approving again (or re-scoring) does not notify twice.
    review.decide(db_session, flagged.moderation_id, approve=True, moderator_id=moderator, now=utcnow())
    assert score(db_session, "POST", post).status == "unchanged"
    assert len(world.of_type(bob, "mention")) == 1


def test_a_mention_in_a_rejected_post_stays_removed(world, db_session):
    author, moderator = world.users(2)
    bob = world.user(f"rbob_{author}")
    post = world.post(author, f"@rbob_{author} {OFFENSIVE_TEXT}")
    notify_mentions(db_session, load_source(db_session, "post", post))
    flagged = score(db_session, "POST", post)
    review.decide(db_session, flagged.moderation_id, approve=False, moderator_id=moderator, now=utcnow())
    assert world.of_type(bob, "mention") == []
    assert len(world.of_type(author, "content_removed")) == 1


def test_a_flagged_comment_retracts_its_notification_and_mentions(world, db_session):
    post_author, commenter, moderator = world.users(3)
    carol = world.user(f"carol_{post_author}")
    post = world.post(post_author, CLEAN_TEXT)
    comment = world.comment(commenter, post, f"@carol_{post_author} shut up you stupid bitch")
    record(db_session, "comment", comment)
    notify_mentions(db_session, load_source(db_session, "comment", comment))
    assert len(world.of_type(post_author, "comment")) == 1 and len(world.of_type(carol, "mention")) == 1

    flagged = score(db_session, "COMMENT", comment)
    assert flagged.moderation_status == "FLAGGED"
    assert world.of_type(post_author, "comment") == [] and world.of_type(carol, "mention") == []

    decision = review.decide(db_session, flagged.moderation_id, approve=True, moderator_id=moderator, now=utcnow())
    assert decision.hidden_changed and not world.hidden("COMMENT", comment)
    assert len(world.of_type(post_author, "comment")) == 1 and len(world.of_type(carol, "mention")) == 1


def test_a_rejected_comment_tells_its_author(world, db_session):
    post_author, commenter, moderator = world.users(3)
    post = world.post(post_author, CLEAN_TEXT)
    comment = world.comment(commenter, post, "shut up you stupid bitch")
    flagged = score(db_session, "COMMENT", comment)
    review.decide(db_session, flagged.moderation_id, approve=False, moderator_id=moderator, now=utcnow())
    [removed] = world.of_type(commenter, "content_removed")
    assert removed.data["comment_id"] == comment
    assert world.of_type(post_author, "content_removed") == []


def test_the_queue_lists_flags_oldest_first_with_a_snippet(world, db_session):
    author = world.users(1)[0]
    posts = [world.post(author, f"{OFFENSIVE_TEXT} {'x' * 100} {i}") for i in range(3)]
    world.post(author, CLEAN_TEXT)
    ids = [score(db_session, "POST", p).moderation_id for p in posts]
    # One transaction gives every row the same now(): date them apart, newest scored first.
    for minutes, moderation_id in enumerate(ids):
        db_session.execute(text("UPDATE content_moderation SET created_at = now() - make_interval(mins => :m) "
                                "WHERE id = CAST(:id AS uuid)"), {"m": minutes, "id": moderation_id})
    queued = review.queue(db_session)
    assert [q["id"] for q in queued] == ids[::-1]
    assert [q["content_id"] for q in queued] == posts[::-1]
    assert all(len(q["snippet"]) == review.SNIPPET_CHARS for q in queued)
    assert all(q["content_type"] == "POST" and q["automated_score"] > 0.8 for q in queued)
    assert [q["id"] for q in review.queue(db_session, limit=2)] == ids[::-1][:2]
