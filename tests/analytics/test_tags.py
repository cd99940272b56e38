"""A post's tags in both shapes (post_tags rows and posts.tags), set by tag_post and by
mentions.extract, including two extractions of one post racing and two posts creating
the same new tags at once."""
from __future__ import annotations

import functools
import random
import threading
import uuid

import pytest
from sqlalchemy import text

import tasks.analytics.tags as tags_module
from db.session import session_scope
from tasks.analytics.tags import tag_post
from tests.waiting import backend_pid, blocked_by, in_threads, wait_for


def _user(connection, name: str = "tagger") -> int:
    return connection.execute(text(
        "INSERT INTO users (email, username, hashed_password) VALUES (:e, :u, '!') RETURNING id"),
        {"e": f"{name}@example.com", "u": name}).scalar_one()


def _post(connection, author: int, content: str) -> str:
    return connection.execute(text(
        "INSERT INTO posts (author_id, content) VALUES (:a, :c) RETURNING id::text"),
        {"a": author, "c": content}).scalar_one()


def _state(connection, post_id: str) -> tuple[list[str], set[str]]:
    """(posts.tags as stored, the names of the post's post_tags rows)."""
    array = connection.execute(text("SELECT tags FROM posts WHERE id = CAST(:p AS uuid)"), {"p": post_id}).scalar_one()
    rows = set(connection.execute(text(
        "SELECT t.name FROM post_tags AS pt JOIN tags AS t ON t.id = pt.tag_id WHERE pt.post_id = CAST(:p AS uuid)"),
        {"p": post_id}).scalars())
    return list(array), rows


def _tag_ids(connection) -> dict[str, int]:
    return dict(connection.execute(text("SELECT name, id FROM tags")).all())


# --- tag_post, one transaction ---------------------------------------------------------

def test_tag_post_keeps_both_shapes_equal_on_create_and_edit(db_session):
    s = db_session
    author = _user(s)
    first = _post(s, author, "Hello #Café and #python, also #CAFÉ")
    assert tag_post(s, first) == ["café", "python"]
    assert _state(s, first) == (["café", "python"], {"café", "python"})
    ids = _tag_ids(s)
    assert set(ids) == {"café", "python"}          # "#Café" and "#CAFÉ" are one tag

    # Another post reuses the existing rows: "cafe" + combining acute is "café" too.
    second = _post(s, author, "#cafe\u0301 with #Rust")
    assert tag_post(s, second) == ["café", "rust"]
    assert _state(s, second) == (["café", "rust"], {"café", "rust"})
    after = _tag_ids(s)
    assert set(after) == {"café", "python", "rust"}
    assert after["café"] == ids["café"] and after["python"] == ids["python"]

    # Edit: python removed, go added, café kept (same row).
    s.execute(text("UPDATE posts SET content = '#go first, then #CAFÉ' WHERE id = CAST(:p AS uuid)"), {"p": first})
    assert tag_post(s, first) == ["go", "café"]
    assert _state(s, first) == (["go", "café"], {"go", "café"})
    assert _tag_ids(s)["café"] == ids["café"]
    assert _state(s, second) == (["café", "rust"], {"café", "rust"})   # the other post is untouched

    # Edit to no tags at all; a second run changes nothing.
    s.execute(text("UPDATE posts SET content = 'no tags left' WHERE id = CAST(:p AS uuid)"), {"p": first})
    assert tag_post(s, first) == []
    assert _state(s, first) == ([], set())
    assert tag_post(s, first) == []
    assert _state(s, first) == ([], set())
    # Unused tag rows stay (other posts may reference them later).
    assert set(_tag_ids(s)) == {"café", "python", "rust", "go"}


def test_tag_post_of_a_missing_post_is_none(db_session):
    assert tag_post(db_session, str(uuid.uuid4())) is None


def test_tag_post_twice_on_the_same_text_changes_nothing(db_session):
    s = db_session
    post = _post(s, _user(s), "#b then #a")
    assert tag_post(s, post) == ["b", "a"]
    assert tag_post(s, post) == ["b", "a"]
    assert _state(s, post) == (["b", "a"], {"a", "b"})
    assert s.execute(text("SELECT count(*) FROM post_tags WHERE post_id = CAST(:p AS uuid)"), {"p": post}).scalar() == 2
    assert s.execute(text("SELECT count(*) FROM tags WHERE name IN ('a', 'b')")).scalar() == 2


# --- mentions.extract through a real worker ------------------------------------------

@pytest.mark.integration
def test_mentions_extract_sets_the_tags_through_a_worker(celery_worker, clean_db):
    from tasks.mentions.tasks import extract

    with clean_db.begin() as connection:
        author = _user(connection, "tagworker")
        post = _post(connection, author, "#Launch day for @nobody #launch #Party")
    result = extract.delay(post_id=post).get(timeout=30)
    assert result["status"] == "ok"
    assert result["tags"] == ["launch", "party"]
    assert result["invalid_usernames"] == ["nobody"]
    with clean_db.connect() as connection:
        assert _state(connection, post) == (["launch", "party"], {"launch", "party"})

    with clean_db.begin() as connection:
        connection.execute(text("UPDATE posts SET content = 'only #party now, and #new' WHERE id = CAST(:p AS uuid)"),
                           {"p": post})
    result = extract.delay(post_id=post).get(timeout=30)
    assert result["tags"] == ["party", "new"]
    with clean_db.connect() as connection:
        assert _state(connection, post) == (["party", "new"], {"party", "new"})
        assert set(_tag_ids(connection)) == {"launch", "party", "new"}


@pytest.mark.integration
def test_mentions_extract_of_a_post_that_is_gone(celery_worker, clean_db):
    from tasks.mentions.tasks import extract

    assert extract.delay(post_id=str(uuid.uuid4())).get(timeout=30) == {"status": "gone"}
    with clean_db.begin() as connection:
        post = _post(connection, _user(connection, "deleter"), "#bye")
        connection.execute(text("DELETE FROM posts WHERE id = CAST(:p AS uuid)"), {"p": post})
    assert extract.delay(post_id=post).get(timeout=30) == {"status": "gone"}
    with clean_db.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM tags")).scalar() == 0


# --- races -----------------------------------------------------------------------------

def test_an_extraction_of_the_old_text_cannot_overwrite_the_new_one(clean_db, monkeypatch):
    """Run A has read the post's old text and not yet written; meanwhile the post is edited
    and run B extracts the new text. The row lock A holds from its read makes the edit (and
    so B) wait until A commits: the end state is the newest text's tags. Without the lock,
    A would write the old tags last."""
    with clean_db.begin() as connection:
        post = _post(connection, _user(connection), "first #one #two")
        liker = _user(connection, "liker")

    a_has_read, release_a, b_done = threading.Event(), threading.Event(), threading.Event()
    a_pid: list[int] = []
    errors: list[BaseException] = []
    real_extract = tags_module.extract_hashtags

    def paused_extract(content):
        if threading.current_thread().name == "run-a":
            a_has_read.set()
            assert release_a.wait(30), "run A was never released"
        return real_extract(content)

    monkeypatch.setattr(tags_module, "extract_hashtags", paused_extract)

    def run_a():
        try:
            with session_scope() as session:
                a_pid.append(backend_pid(session))
                tag_post(session, post)
        except BaseException as exc:  # noqa: BLE001 - surfaced below
            errors.append(exc)

    def run_b():
        try:
            with session_scope() as session:
                session.execute(text("UPDATE posts SET content = 'edited: #three' WHERE id = CAST(:p AS uuid)"),
                                {"p": post})
                tag_post(session, post)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            b_done.set()

    thread_a = threading.Thread(target=run_a, name="run-a")
    thread_b = threading.Thread(target=run_b, name="run-b")
    thread_a.start()
    try:
        assert a_has_read.wait(30)
        # A's lock is FOR NO KEY UPDATE: a like referencing the post is not blocked by it.
        with clean_db.begin() as connection:
            connection.execute(text("SET LOCAL lock_timeout = '5s'"))
            connection.execute(text("INSERT INTO likes (user_id, post_id) VALUES (:u, CAST(:p AS uuid))"),
                               {"u": liker, "p": post})
        thread_b.start()
        waiting = blocked_by(clean_db, a_pid[0], b_done)
    finally:
        release_a.set()
        thread_a.join(60)
        if thread_b.is_alive() or thread_b.ident is not None:
            thread_b.join(60)
    assert errors == []
    assert waiting is not None and "UPDATE posts" in waiting    # the edit waited on A
    with clean_db.connect() as connection:
        assert _state(connection, post) == (["three"], {"three"})
        assert connection.execute(text("SELECT content FROM posts WHERE id = CAST(:p AS uuid)"),
                                  {"p": post}).scalar() == "edited: #three"


def test_two_runs_on_one_post_end_with_the_final_text(clean_db):
    """Both runs after the edit, at once: whichever commits last, both read the final text."""
    with clean_db.begin() as connection:
        post = _post(connection, _user(connection), "#old")
    with session_scope() as session:
        tag_post(session, post)
    with clean_db.begin() as connection:
        connection.execute(text("UPDATE posts SET content = '#new #newer' WHERE id = CAST(:p AS uuid)"), {"p": post})
    barrier = threading.Barrier(2)

    def run():
        with session_scope() as session:
            barrier.wait(10)
            tag_post(session, post)

    in_threads(run, run)
    with clean_db.connect() as connection:
        assert _state(connection, post) == (["new", "newer"], {"new", "newer"})


TAG_NAMES = [f"t{n}" for n in range(1, 10)]      # t1 … t9; t5 in the middle


def test_two_posts_adding_the_same_new_tags_in_opposite_order_do_not_deadlock(clean_db):
    """A third transaction holds an uncommitted insert of the middle tag, so both runs are
    surely inserting at the same time: one has t1…t4 and waits on t5. Had they inserted in
    text order, the other would hold t9…t6 and wait on t5 too, and once t5 was freed each
    would wait on the other (a deadlock). In one sorted order the second waits on the first."""
    with clean_db.begin() as connection:
        author = _user(connection)
        forward = _post(connection, author, " ".join(f"#{n}" for n in TAG_NAMES))
        backward = _post(connection, author, " ".join(f"#{n}" for n in reversed(TAG_NAMES)))

    with session_scope() as holder:
        holder.execute(text("INSERT INTO tags (name) VALUES ('t5')"))
        holder.flush()
        pids: dict[str, int] = {}
        errors: list[BaseException] = []

        def run(post_id: str):
            try:
                with session_scope() as session:
                    pids[post_id] = backend_pid(session)
                    tag_post(session, post_id)
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(p,)) for p in (forward, backward)]
        for thread in threads:
            thread.start()
        try:
            def both_waiting():
                if len(pids) < 2:
                    return False
                with clean_db.connect() as connection:
                    return connection.execute(text(
                        "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(:pids) "
                        "AND cardinality(pg_blocking_pids(pid)) > 0"), {"pids": list(pids.values())}).scalar() == 2

            wait_for(both_waiting, what="both runs waiting on a tag insert")
        finally:
            holder.rollback()     # t5 is free again: one of the two inserts it
        for thread in threads:
            thread.join(60)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    with clean_db.connect() as connection:
        counts = dict(connection.execute(text("SELECT name, count(*) FROM tags GROUP BY name")).all())
        assert counts == {name: 1 for name in TAG_NAMES}
        assert _state(connection, forward) == (TAG_NAMES, set(TAG_NAMES))
        assert _state(connection, backward) == (list(reversed(TAG_NAMES)), set(TAG_NAMES))


def test_many_posts_adding_overlapping_new_tags_at_once(clean_db):
    """Eight posts, each a shuffled mix of the same twenty new tags, tagged at once."""
    names = [f"tag{chr(97 + n)}" for n in range(20)]
    rng = random.Random(7)
    with clean_db.begin() as connection:
        author = _user(connection)
        posts = {}
        for n in range(8):
            chosen = rng.sample(names, 12)
            posts[_post(connection, author, " ".join(f"#{x}" for x in chosen))] = chosen
    barrier = threading.Barrier(len(posts))

    def run(post_id):
        with session_scope() as session:
            barrier.wait(10)
            tag_post(session, post_id)

    in_threads(*(functools.partial(run, p) for p in posts))
    with clean_db.connect() as connection:
        counts = dict(connection.execute(text("SELECT name, count(*) FROM tags GROUP BY name")).all())
        assert set(counts.values()) == {1}
        assert set(counts) == {x for chosen in posts.values() for x in chosen}
        for post_id, chosen in posts.items():
            assert _state(connection, post_id) == (chosen, set(chosen))
