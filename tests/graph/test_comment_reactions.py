"""Comment reactions: notifications.record batches them per comment, notifications.retract
takes a removed reaction back out ('still_present' while the actor keeps another reaction
on the comment), and comments.like_count counts every reaction."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from freezegun import freeze_time
from sqlalchemy import text

from tasks.engagement import runs
from tests.graph.conftest import (add_comment, add_friendship, add_post, add_reaction, add_users, children,
                                  counter, notifications, username)
from tests.notifications.builders import record

T0 = datetime(2026, 3, 1, 10, 0, tzinfo=timezone.utc)


def now() -> datetime:
    return datetime.now(timezone.utc)


def by_key(conn, user_id: int) -> dict:
    return {n.batch_key: n for n in notifications(conn, user_id, "comment_reaction", top_level=True)}


def actors(conn, parent_id: str) -> list[int]:
    return sorted(c.data["actor_id"] for c in children(conn, parent_id))


def delete_reaction(conn, reaction: str) -> None:
    conn.execute(text("DELETE FROM comment_reactions WHERE id = CAST(:r AS uuid)"), {"r": reaction})


@pytest.mark.integration
def test_reactions_batch_per_comment_and_retract_when_removed(clean_db):
    from tasks.notifications.tasks import record as record_task
    from tasks.notifications.tasks import retract

    with clean_db.begin() as conn:
        u = add_users(conn, "poster", "carol", "dave", "erin", "frank")
        post = add_post(conn, u["poster"])
        first, second = add_comment(conn, u["carol"], post, "first"), add_comment(conn, u["carol"], post, "second")
        on_first = {name: add_reaction(conn, u[name], first, kind)
                    for name, kind in (("dave", "like"), ("erin", "love"), ("frank", "laugh"))}
        on_second = add_reaction(conn, u["dave"], second, "sad")
        dave_name = username(conn, u["dave"])

    statuses = [record_task("comment_reaction", r)["status"] for r in [*on_first.values(), on_second]]
    assert statuses == ["created", "converted", "batched", "created"]
    # Delivered again: nothing new.
    assert {record_task("comment_reaction", r)["status"] for r in on_first.values()} == {"duplicate"}
    with clean_db.connect() as conn:
        top = by_key(conn, u["carol"])
        assert set(top) == {f"comment_reaction:comment:{first}", f"comment_reaction:comment:{second}"}
        batch = top[f"comment_reaction:comment:{first}"]
        assert batch.is_batch and (batch.batch_count, batch.message) == (3, "3 people reacted to your comment")
        assert batch.data == {"comment_id": first}
        assert actors(conn, batch.id) == sorted(u[n] for n in ("dave", "erin", "frank"))
        [child] = [c for c in children(conn, batch.id) if c.data["actor_id"] == u["erin"]]
        assert child.data["reaction_type"] == "love" and child.data["post_id"] == post
        single = top[f"comment_reaction:comment:{second}"]
        assert not single.is_batch and single.message == f"{dave_name} reacted to your comment"
        assert single.data["comment_id"] == second and single.data["reaction_type"] == "sad"

    # erin removes her reaction: the retract takes it out of the batch, the recount says 2.
    with clean_db.begin() as conn:
        delete_reaction(conn, on_first["erin"])
    outcome = retract("comment_reaction", u["erin"], comment_id=first)
    assert (outcome["status"], outcome["removed"]) == ("retracted", 1)
    with clean_db.connect() as conn:
        batch = by_key(conn, u["carol"])[f"comment_reaction:comment:{first}"]
        assert (batch.batch_count, batch.message) == (2, "2 people reacted to your comment")
        assert actors(conn, batch.id) == sorted([u["dave"], u["frank"]])

    # dave adds a second reaction to the first comment, then removes his first one: he still
    # reacts to the comment, so the retract leaves his notifications alone.
    with clean_db.begin() as conn:
        dave_love = add_reaction(conn, u["dave"], first, "love")
    assert record_task("comment_reaction", dave_love)["status"] == "batched"
    with clean_db.begin() as conn:
        delete_reaction(conn, on_first["dave"])
    assert retract("comment_reaction", u["dave"], comment_id=first) == {"status": "still_present"}
    with clean_db.connect() as conn:
        batch = by_key(conn, u["carol"])[f"comment_reaction:comment:{first}"]
        assert batch.batch_count == 3 and actors(conn, batch.id).count(u["dave"]) == 2
    # ...and once the last one goes, both of his notifications on that comment go, none on the other.
    with clean_db.begin() as conn:
        delete_reaction(conn, dave_love)
    outcome = retract("comment_reaction", u["dave"], comment_id=first)
    assert (outcome["status"], outcome["removed"]) == ("retracted", 2)
    with clean_db.connect() as conn:
        top = by_key(conn, u["carol"])
        assert actors(conn, top[f"comment_reaction:comment:{first}"].id) == [u["frank"]]
        assert top[f"comment_reaction:comment:{first}"].batch_count == 1
        assert top[f"comment_reaction:comment:{second}"].data["actor_id"] == u["dave"]
    # A second retract finds nothing; a retract about a deleted comment is 'gone'.
    assert retract("comment_reaction", u["dave"], comment_id=first)["status"] == "nothing"
    with clean_db.begin() as conn:
        conn.execute(text("DELETE FROM comments WHERE id = CAST(:c AS uuid)"), {"c": second})
    assert retract("comment_reaction", u["dave"], comment_id=second) == {"status": "gone"}

    # like_count counts every reaction left on the comment (the dirty pass, from the triggers).
    runs.run_dirty()
    with clean_db.connect() as conn:
        assert counter(conn, "comments", "like_count", first) == conn.execute(text(
            "SELECT count(*) FROM comment_reactions WHERE comment_id = CAST(:c AS uuid)"), {"c": first}).scalar() == 1


@pytest.mark.parametrize(("age", "extended"), [(timedelta(hours=23, minutes=59), True),
                                               (timedelta(hours=24, minutes=1), False)])
def test_a_reaction_batch_of_a_comment_is_extended_only_within_24_hours(db_session, age, extended):
    conn = db_session.connection()
    u = add_users(conn, "carol", "dave", "erin", "frank", "gus")
    post = add_post(conn, u["carol"])
    comment, other = add_comment(conn, u["carol"], post), add_comment(conn, u["carol"], post, "other")
    with freeze_time(T0) as clock:
        outcomes = record(db_session, "comment_reaction", add_reaction(conn, u["dave"], comment, at=now()))
        clock.tick(timedelta(minutes=30))
        # The batch opens now, with the second reaction.
        outcomes += record(db_session, "comment_reaction", add_reaction(conn, u["erin"], comment, at=now()))
        # A reaction to another comment of hers is another batch key: it never joins.
        outcomes += record(db_session, "comment_reaction", add_reaction(conn, u["gus"], other, at=now()))
        clock.tick(age)
        outcomes += record(db_session, "comment_reaction", add_reaction(conn, u["frank"], comment, at=now()))
    assert [o.status for o in outcomes] == ["created", "converted", "created",
                                            "batched" if extended else "created"]
    top = {(n.batch_key, n.is_batch): n.batch_count
           for n in notifications(conn, u["carol"], "comment_reaction", top_level=True)}
    mine, others = f"comment_reaction:comment:{comment}", f"comment_reaction:comment:{other}"
    if extended:
        assert top == {(mine, True): 3, (others, False): 1}
    else:
        assert top == {(mine, True): 2, (mine, False): 1, (others, False): 1}


def test_a_reaction_across_a_block_or_on_a_held_comment_notifies_nobody(db_session):
    conn = db_session.connection()
    u = add_users(conn, "carol", "dave", "erin")
    post = add_post(conn, u["carol"])
    comment = add_comment(conn, u["carol"], post)
    add_friendship(conn, u["carol"], u["dave"], "blocked")
    assert record(db_session, "comment_reaction", add_reaction(conn, u["dave"], comment)) == []
    held = add_comment(conn, u["carol"], post, "held")
    conn.execute(text("UPDATE comments SET moderation_hidden = true WHERE id = CAST(:c AS uuid)"), {"c": held})
    assert record(db_session, "comment_reaction", add_reaction(conn, u["erin"], held)) == []
    # The author's own reaction is not news to her.
    [own] = record(db_session, "comment_reaction", add_reaction(conn, u["carol"], comment))
    assert own.status == "self"
    assert notifications(conn, u["carol"]) == []
