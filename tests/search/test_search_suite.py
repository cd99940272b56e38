"""The same search suite against both backends (``backend``: PostgreSQL full-text, then Typesense).

Who finds what through ``tasks.search.query``: privacy, friends, blocks, flags,
deletes, unpublishing, a username change, tags, pages, bad input, a reindex
while queries run, and the nightly verify's repairs.
"""
from __future__ import annotations

import base64
import json
import threading
import time
from datetime import date, datetime, timedelta, timezone

import pytest
from sqlalchemy import text

from db.session import session_scope
from tasks.search import query, reindex as reindexing, searching, verify as verification
from tests.search.conftest import word
from workers.errors import InvalidArguments


# --- Privacy --------------------------------------------------------------------------------------


def test_each_audience_reaches_its_readers_and_the_author_sees_all(backend, rows):
    u = rows.users("author", "friend", "friend2", "stranger", "pending")
    rows.friends(u["author"], u["friend"])              # asked by the author
    rows.friends(u["friend2"], u["author"])             # asked by the other: accepted is symmetric
    rows.friends(u["pending"], u["author"], "pending")
    w = word()
    public = rows.post(u["author"], f"{w} for everyone")
    friends = rows.post(u["author"], f"{w} for friends", privacy="friends")
    custom = rows.post(u["author"], f"{w} for a list", privacy="custom")

    assert backend.found(w, u["author"]) == set()       # not indexed before the dirty pass
    backend.drain()
    assert backend.found(w, u["author"]) == {public, friends, custom}
    assert backend.found(w, u["friend"]) == {public, friends}
    assert backend.found(w, u["friend2"]) == {public, friends}
    assert backend.found(w, u["stranger"]) == {public}
    assert backend.found(w, u["pending"]) == {public}
    assert backend.found(word(), u["author"]) == set()  # another word finds none of them


def test_a_pending_request_grants_nothing_until_accepted(backend, rows):
    u = rows.users("author", "asker")
    rows.friends(u["asker"], u["author"], "pending")
    w = word()
    friends = rows.post(u["author"], f"{w} close circle", privacy="friends")
    public = rows.post(u["author"], f"{w} open post")
    backend.drain()

    assert backend.found(w, u["asker"]) == {public}
    # Accepting and unfriending change the audience at once: no reindex, no dirty pass.
    rows.sql("UPDATE friendships SET status = 'accepted' WHERE user1_id = :a AND user2_id = :b",
             a=u["asker"], b=u["author"])
    assert backend.found(w, u["asker"]) == {public, friends}
    rows.sql("DELETE FROM friendships WHERE user1_id = :a AND user2_id = :b", a=u["asker"], b=u["author"])
    assert backend.found(w, u["asker"]) == {public}


@pytest.mark.parametrize("table", ["friendships", "follows"])
@pytest.mark.parametrize("blocker", ["author", "viewer"])
def test_a_block_either_way_hides_both_sides_posts(backend, rows, table, blocker):
    u = rows.users("author", "viewer", "other")
    w = word()
    by_author = rows.post(u["author"], f"{w} by the author")
    by_viewer = rows.post(u["viewer"], f"{w} by the viewer")
    by_other = rows.post(u["other"], f"{w} by someone else")
    backend.drain()
    assert backend.found(w, u["viewer"]) == {by_author, by_viewer, by_other}

    blocked = u[blocker]
    target = u["viewer"] if blocker == "author" else u["author"]
    if table == "friendships":
        rows.friends(blocked, target, "blocked")
    else:
        rows.follow(blocked, target, "blocked")
    assert backend.found(w, u["viewer"]) == {by_viewer, by_other}
    assert backend.found(w, u["author"]) == {by_author, by_other}
    assert backend.found(w, u["other"]) == {by_author, by_viewer, by_other}


def test_a_follows_block_overrides_an_accepted_friendship(backend, rows):
    u = rows.users("author", "friend")
    rows.friends(u["author"], u["friend"])
    w = word()
    friends_only = rows.post(u["author"], f"{w} inner", privacy="friends")
    backend.drain()
    assert backend.found(w, u["friend"]) == {friends_only}
    rows.follow(u["friend"], u["author"], "blocked")
    assert backend.found(w, u["friend"]) == set()


# --- Posts that leave search ----------------------------------------------------------------------


def test_a_flagged_post_is_hidden_at_once_and_leaves_the_index_on_the_dirty_pass(backend, rows):
    u = rows.users("author", "reader")
    w = word()
    flagged = rows.post(u["author"], f"{w} soon flagged")
    kept = rows.post(u["author"], f"{w} stays")
    backend.drain()
    assert backend.found(w, u["reader"]) == {flagged, kept}

    rows.update_post(flagged, "moderation_hidden = true")
    # Before the dirty pass: the document is still in the index, the live re-check hides it.
    assert backend.indexed(flagged)
    assert backend.found(w, u["reader"]) == {kept}
    assert backend.found(w, u["author"]) == {kept}      # hidden from its author too
    backend.drain()
    assert not backend.indexed(flagged)
    assert backend.found(w, u["reader"]) == {kept}

    rows.update_post(flagged, "moderation_hidden = false")   # approved on review
    backend.drain()
    assert backend.indexed(flagged)
    assert backend.found(w, u["reader"]) == {flagged, kept}


@pytest.mark.parametrize(("leave", "come_back"), [
    ("deleted_at = now()", "deleted_at = NULL"),
    ("is_public = false", "is_public = true"),
], ids=["soft_delete", "unpublish"])
def test_a_soft_deleted_or_unpublished_post_disappears(backend, rows, leave, come_back):
    u = rows.users("author", "reader")
    w = word()
    post = rows.post(u["author"], f"{w} here today")
    other = rows.post(u["author"], f"{w} here tomorrow")
    backend.drain()
    assert backend.found(w, u["reader"]) == {post, other}

    rows.update_post(post, leave)
    assert backend.found(w, u["reader"]) == {other}     # at once, before the dirty pass
    assert backend.found(w, u["author"]) == {other}
    backend.drain()
    assert not backend.indexed(post) and backend.indexed(other)

    rows.update_post(post, come_back)
    backend.drain()
    assert backend.found(w, u["reader"]) == {post, other}


def test_a_hard_deleted_post_disappears(backend, rows):
    u = rows.users("author", "reader")
    w = word()
    post = rows.post(u["author"], f"{w} removed for good")
    other = rows.post(u["author"], f"{w} remains")
    backend.drain()
    rows.sql("DELETE FROM posts WHERE id = CAST(:p AS uuid)", p=post)
    assert backend.found(w, u["reader"]) == {other}
    assert backend.found(w, u["author"]) == {other}
    assert backend.backlog([post]) == 1
    backend.drain()
    assert not backend.indexed(post) and backend.indexed(other)
    assert backend.found(w, u["author"]) == {other}


def test_a_privacy_change_both_ways(backend, rows):
    u = rows.users("author", "friend", "stranger")
    rows.friends(u["author"], u["friend"])
    w = word()
    post = rows.post(u["author"], f"{w} changing audience", privacy="friends")
    backend.drain()
    assert backend.found(w, u["stranger"]) == set()
    assert backend.found(w, u["friend"]) == {post}

    rows.update_post(post, "privacy_level = 'public'")
    backend.drain()
    assert backend.found(w, u["stranger"]) == {post}
    assert backend.found(w, u["friend"]) == {post}

    rows.update_post(post, "privacy_level = 'friends'")
    assert backend.found(w, u["stranger"]) == set()     # narrowing shows at once
    assert backend.found(w, u["friend"]) == {post}
    backend.drain()
    assert backend.found(w, u["stranger"]) == set()
    assert backend.found(w, u["friend"]) == {post}

    rows.update_post(post, "privacy_level = 'custom'")
    backend.drain()
    assert backend.found(w, u["friend"]) == set()
    assert backend.found(w, u["author"]) == {post}


# --- Usernames and tags ---------------------------------------------------------------------------


def test_a_username_change_reaches_every_post_of_the_user_after_the_dirty_pass(backend, rows):
    u = rows.users("author", "reader")
    old = rows.username(u["author"])
    w = word()
    posts = {rows.post(u["author"], f"{w} number {n}") for n in range(3)}
    backend.drain()
    assert backend.found(old, u["reader"]) == posts

    new = word("renamed")
    rows.sql("UPDATE users SET username = :n WHERE id = :u", n=new, u=u["author"])
    backend.drain()
    assert backend.found(new, u["reader"]) == posts
    assert backend.found(old, u["reader"]) == set()
    assert backend.found(w, u["reader"]) == posts


def test_tags_are_searchable_and_a_renamed_tag_follows(backend, rows):
    u = rows.users("author", "reader")
    w = word()
    first = rows.post(u["author"], f"{w} first")
    second = rows.post(u["author"], f"{w} second")
    untagged = rows.post(u["author"], f"{w} third")
    old = word("tag")
    tag_id = rows.tag(old, first, second)
    backend.drain()
    assert backend.found(old, u["reader"]) == {first, second}
    assert backend.found(w, u["reader"]) == {first, second, untagged}

    new = word("tag")
    rows.sql("UPDATE tags SET name = :n WHERE id = :t", n=new, t=tag_id)
    backend.drain()
    assert backend.found(new, u["reader"]) == {first, second}
    assert backend.found(old, u["reader"]) == set()

    rows.sql("DELETE FROM post_tags WHERE post_id = CAST(:p AS uuid)", p=first)
    rows.sql("INSERT INTO post_tags (post_id, tag_id) VALUES (CAST(:p AS uuid), :t)", p=untagged, t=tag_id)
    backend.drain()
    assert backend.found(new, u["reader"]) == {second, untagged}


# --- Pages ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("candidates", [100, 7], ids=["one_engine_page", "many_engine_pages"])
def test_pages_follow_the_cursor_without_duplicates_or_gaps(backend, rows, monkeypatch, candidates):
    monkeypatch.setattr(searching, "CANDIDATES_PER_PAGE", candidates)
    u = rows.users("author", "reader", "outsider")
    w = word()
    start = datetime(2026, 6, 1, tzinfo=timezone.utc)
    visible = [rows.post(u["author"], f"{w} item {n}", at=start + timedelta(minutes=n)) for n in range(23)]
    # Documents the engine returns but the reader may not see: the pages must skip them.
    hidden_later = [rows.post(u["author"], f"{w} flagged {n}", at=start + timedelta(minutes=n, seconds=30))
                    for n in range(0, 23, 3)]
    rows.post(u["outsider"], f"{w} friends only", privacy="friends")
    backend.drain()
    for post in hidden_later:
        rows.update_post(post, "moderation_hidden = true")

    whole = query(w, u["reader"], limit=100)
    assert set(whole.post_ids) == set(visible) and len(whole.post_ids) == len(visible)
    assert whole.next_cursor is None

    for limit in (1, 5, 7):
        pages, cursor = [], None
        while True:
            page = query(w, u["reader"], limit=limit, cursor=cursor)
            assert len(page.post_ids) <= limit
            pages.append(page.post_ids)
            cursor = page.next_cursor
            if cursor is None:
                break
            assert len(pages) < 60, "the cursor never ends"
        walked = [post for page in pages for post in page]
        assert walked == whole.post_ids, f"limit {limit}: pages differ from the one long page"
        # The same cursor gives the same page again.
        second = query(w, u["reader"], limit=limit, cursor=query(w, u["reader"], limit=limit).next_cursor)
        assert second.post_ids == pages[1]


BAD_CURSORS = [
    "garbage!!", "not-base64-%%", "é", base64.urlsafe_b64encode(b"[1, 2, 3]").decode(),
    base64.urlsafe_b64encode(b'{"page": 1}').decode(), base64.urlsafe_b64encode(b"[-1, 0]").decode(),
    base64.urlsafe_b64encode(json.dumps([0, 10_000]).encode()).decode(),
    base64.urlsafe_b64encode(b'["a", "b"]').decode(), base64.urlsafe_b64encode(b"7").decode(),
    base64.urlsafe_b64encode(b"\xff\xfe").decode(),
]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"q": ""}, "non-empty"),
    ({"q": "   "}, "non-empty"),
    ({"q": None}, "non-empty"),
    ({"q": "x" * 201}, "201 characters"),
    ({"viewer_id": 0}, "viewer_id"),
    ({"viewer_id": -3}, "viewer_id"),
    ({"viewer_id": "5"}, "viewer_id"),
    ({"viewer_id": True}, "viewer_id"),
    ({"viewer_id": 2.0}, "viewer_id"),
    ({"limit": 0}, "limit"),
    ({"limit": 101}, "limit"),
    ({"limit": "10"}, "limit"),
    ({"limit": False}, "limit"),
    ({"cursor": 12}, "cursor"),
    *[({"cursor": bad}, "cursor") for bad in BAD_CURSORS],
])
def test_bad_input_is_refused(backend, kwargs, message):
    args = {"q": "hello", "viewer_id": 1, "limit": 20, "cursor": None, **kwargs}
    with pytest.raises(InvalidArguments, match=message) as info:
        query(args["q"], args["viewer_id"], limit=args["limit"], cursor=args["cursor"])
    assert info.value.code == "invalid_arguments"


def test_the_limits_themselves_are_accepted(backend, rows):
    u = rows.users("author")
    w = word()
    posts = {rows.post(u["author"], f"{w} {n}") for n in range(3)}
    backend.drain()
    assert len(query(w, u["author"], limit=1).post_ids) == 1
    assert set(query(w, u["author"], limit=100).post_ids) == posts
    assert set(query(f"  {w}  ", u["author"]).post_ids) == posts
    assert query(w + "y" * (200 - len(w)), u["author"]).post_ids == []   # 200 characters: allowed


def test_every_word_of_the_query_must_match(backend, rows, request):
    u = rows.users("author")
    w1, w2, nowhere = word(), word(), word()
    both = rows.post(u["author"], f"{w1} and {w2}")
    one = rows.post(u["author"], f"only {w1}")
    backend.drain()
    assert backend.found(w1, u["author"]) == {both, one}
    assert backend.found(f"{w1} {w2}", u["author"]) == {both}
    assert backend.found(f"{w2} {w1}", u["author"]) == {both}
    # A word no post has: nothing, as in PostgreSQL's websearch_to_tsquery (an AND of the words).
    assert backend.found(f"{w1} {nowhere}", u["author"]) == set()


# --- A reindex while queries run ------------------------------------------------------------------


def _expect_during_reindex(backend, rows):
    u = rows.users("author", "reader", "other")
    w = word()
    expected = {rows.post(u["author"], f"{w} public {n}") for n in range(12)}
    rows.post(u["other"], f"{w} friends of other", privacy="friends")
    rows.post(u["author"], f"{w} custom", privacy="custom")
    backend.drain()
    assert backend.found(w, u["reader"]) == expected
    return u, w, expected


def test_queries_keep_answering_while_a_reindex_swaps_versions(backend, rows, monkeypatch):
    u, w, expected = _expect_during_reindex(backend, rows)
    with backend.db.connect() as conn:
        total = conn.execute(text("SELECT count(*) FROM posts")).scalar_one()
    monkeypatch.setenv("SEARCH_BATCH", str(max(1, total // 15)))   # about 15 chunks
    old = backend.active_version()

    wrong: list = []
    answered = {"thread": 0, "between_chunks": 0}
    stop = threading.Event()
    # A post is added while the reindex runs (below); while it is being written and indexed,
    # a query may find it or not.
    state = {"phase": "before", "added": None}

    def acceptable(got: set[str], phases: set[str]) -> bool:
        if "changing" in phases or phases == {"before", "after"}:
            return got == expected or (len(got - expected) == 1 and expected <= got)
        if phases == {"after"}:
            return got == expected | {state["added"]}
        return got == expected

    def check(where: str) -> None:
        phase = state["phase"]
        try:
            got = set(query(w, u["reader"], limit=100).post_ids)
            if not acceptable(got, {phase, state["phase"]}):
                wrong.append((where, phase, state["phase"], len(got)))
        except Exception as exc:   # noqa: BLE001 - reported by the assertion below
            wrong.append((where, repr(exc)))
        answered[where] += 1

    def keep_querying() -> None:
        while not stop.is_set():
            check("thread")

    # The dirty pass writes the new post to both versions, the active one and the one being built.
    def progress(done: int, total: int) -> None:
        check("between_chunks")
        if state["phase"] == "before":
            state["phase"] = "changing"
            state["added"] = rows.post(u["author"], f"{w} written during the reindex")
            backend.drain()
            state["phase"] = "after"

    thread = threading.Thread(target=keep_querying)
    thread.start()
    try:
        result = reindexing.reindex(backend.engine, progress=progress)
    finally:
        stop.set()
        thread.join(30)
    check("thread")
    # An empty page is the symptom of the swap race below (PostgreSQL); anything else fails here.
    empty = [entry for entry in wrong if entry[-1] == 0]
    assert not [entry for entry in wrong if entry not in empty], wrong[:5]
    assert answered["between_chunks"] >= 3 and answered["thread"] >= 3, answered
    assert (result.replaced, result.version) == (old, backend.active_version())
    assert result.version != old
    assert not backend.version_exists(old)
    assert backend.version_exists(result.version)
    assert state["phase"] == "after"
    assert backend.found(w, u["reader"]) == expected | {state["added"]}
    assert backend.indexed(state["added"])
    with backend.db.connect() as conn:
        statuses = dict(conn.execute(text("SELECT id, status FROM search_index_versions WHERE id IN (:a, :b)"),
                                     {"a": old, "b": result.version}).all())
    assert statuses == {old: "retired", result.version: "active"}
    assert not empty, empty[:5]


def test_a_query_that_read_the_version_just_before_the_swap_still_answers(backend, rows, monkeypatch):
    """The narrowest window of the swap, made deterministic: the query has read the active
    version; a reindex swaps in a new one meanwhile. The query still answers from the old
    version, whose drop waits for it (versions.READERS), and the drop happens once it is done."""
    u, w, expected = _expect_during_reindex(backend, rows)
    old = backend.active_version()
    real_active = searching.versions.active
    done: list = []
    worker = threading.Thread(target=lambda: done.append(reindexing.reindex(backend.engine)))

    def active_then_swap(session, name):
        current = real_active(session, name)
        if not worker.is_alive() and not done:
            worker.start()
            deadline = time.monotonic() + 120
            while backend.active_version() == old:   # the swap commits; the drop must wait for us
                assert time.monotonic() < deadline, "the reindex did not swap"
                time.sleep(0.05)
            time.sleep(0.3)
            assert backend.version_exists(old), "the old version was dropped under a running query"
        return current

    monkeypatch.setattr(searching.versions, "active", active_then_swap)
    got = set(query(w, u["reader"], limit=100).post_ids)
    worker.join(120)
    assert done and done[0].replaced == old
    assert got == expected
    assert not backend.version_exists(old)


# --- Verify ---------------------------------------------------------------------------------------


def _verifications(backend) -> int:
    with backend.db.connect() as conn:
        return conn.execute(text("SELECT count(*) FROM search_verifications WHERE backend = :b"),
                            {"b": backend.name}).scalar_one()


def test_verify_removes_stale_documents_and_queues_missing_ones(backend, rows):
    u = rows.users("author", "reader")
    w = word()
    stale = rows.post(u["author"], f"{w} deleted behind the indexer's back")
    missing = rows.post(u["author"], f"{w} lost by the engine")
    wrong_audience = rows.post(u["author"], f"{w} made public quietly", privacy="friends")
    fine = rows.post(u["author"], f"{w} all in order")
    backend.drain()
    # Drift the triggers never saw: a delete whose mark is lost, a document the engine lost,
    # an audience changed with its mark lost.
    with backend.db.begin() as conn:
        conn.execute(text("DELETE FROM posts WHERE id = CAST(:p AS uuid)"), {"p": stale})
        conn.execute(text("UPDATE posts SET privacy_level = 'public' WHERE id = CAST(:p AS uuid)"),
                     {"p": wrong_audience})
        conn.execute(text("DELETE FROM search_dirty WHERE entity_id IN (:a, :b)"), {"a": stale, "b": wrong_audience})
    backend.delete_document(missing)
    assert backend.indexed(stale) and not backend.indexed(missing)
    assert backend.backlog([stale, missing, wrong_audience, fine]) == 0
    assert backend.found(w, u["reader"]) == {fine}
    before = _verifications(backend)

    day = date(2026, 11, 30)
    with session_scope() as session:
        result = verification.verify(session, backend.engine, day)
    assert result.status == "ok" and result.version == backend.active_version()
    assert result.removed >= 1 and result.missing >= 2
    assert not backend.indexed(stale)
    assert backend.backlog([missing, wrong_audience]) == 2
    assert backend.backlog([stale, fine]) == 0
    with backend.db.connect() as conn:
        recorded = conn.execute(text(
            "SELECT backend, version, day, expected, indexed, removed, missing FROM search_verifications "
            "WHERE backend = :b ORDER BY id DESC LIMIT 1"), {"b": backend.name}).one()
        readable = conn.execute(text("SELECT count(*) FROM posts WHERE is_public AND deleted_at IS NULL "
                                     "AND NOT moderation_hidden")).scalar_one()
    assert _verifications(backend) == before + 1
    assert tuple(recorded) == (backend.name, result.version, day, result.expected, result.indexed,
                               result.removed, result.missing)
    assert result.expected == readable

    backend.drain()
    assert backend.indexed(missing)
    assert backend.found(w, u["reader"]) == {missing, wrong_audience, fine}
    with session_scope() as session:
        again = verification.verify(session, backend.engine, day)
    assert (again.removed, again.missing) == (0, 0)
    assert again.indexed == again.expected
