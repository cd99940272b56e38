"""The dirty pass and the reindex's guard, on both backends: batches of SEARCH_BATCH, a username
change expanded in chunks, two passes at once, an engine failing mid-batch, two reindexes at once."""
from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import text

from db.locks import try_xact_lock
from db.session import new_session, session_scope
from tasks.search import engines, indexing, reindex as reindexing, versions
from tests.search.conftest import dead_typesense_url, word
from tests.waiting import in_threads, wait_for
from workers.errors import ServiceUnavailable


class FlakyEngine:
    """The backend's engine, with a hook run around each ``apply`` (to fail, pause or write)."""

    def __init__(self, real, before=None, after=None):
        self.real, self.before, self.after = real, before, after
        self.calls = 0

    def __getattr__(self, name):
        return getattr(self.real, name)

    def apply(self, session, version, post_ids):
        self.calls += 1
        if self.before:
            self.before(self.calls, post_ids)
        applied = self.real.apply(session, version, post_ids)
        if self.after:
            self.after(self.calls, post_ids)
        return applied


def _fail_on(call: int):
    def hook(calls, post_ids):
        if calls == call:
            raise ServiceUnavailable("the engine went away mid-batch")
    return hook


def _user_marks(backend, user_id: int) -> int:
    with backend.db.connect() as conn:
        return conn.execute(text("SELECT count(*) FROM search_dirty WHERE entity = 'user' AND entity_id = :u"),
                            {"u": str(user_id)}).scalar_one()


# --- Batches ------------------------------------------------------------------------------------


def test_small_batches_drain_everything(backend, rows, monkeypatch):
    monkeypatch.setenv("SEARCH_BATCH", "3")
    u = rows.users("author")
    w = word()
    posts = [rows.post(u["author"], f"{w} {n}") for n in range(10)]
    assert backend.backlog(posts) == 10

    run = indexing.index_dirty(session_scope, backend.engine)
    assert run.status == "ok" and not run.backlog_left
    assert run.batches >= 4 and run.marks >= 10 and run.posts >= 10 and run.applied.upserted >= 10
    assert backend.backlog() == 0
    assert backend.found(w, u["author"]) == set(posts)


def test_a_spent_budget_leaves_the_rest_for_the_next_run(backend, rows, monkeypatch):
    monkeypatch.setenv("SEARCH_BATCH", "3")
    u = rows.users("author")
    w = word()
    posts = [rows.post(u["author"], f"{w} {n}") for n in range(10)]

    run = indexing.index_dirty(session_scope, backend.engine, budget_seconds=0)
    assert (run.status, run.batches, run.marks, run.backlog_left) == ("ok", 1, 3, True)
    assert backend.backlog(posts) == 7
    assert len(backend.found(w, u["author"])) == 3
    backend.drain()
    assert backend.backlog(posts) == 0
    assert backend.found(w, u["author"]) == set(posts)


def test_a_username_change_is_expanded_into_post_marks_processed_in_chunks(backend, rows, monkeypatch):
    monkeypatch.setenv("SEARCH_BATCH", "4")
    u = rows.users("author", "reader")
    old = rows.username(u["author"])
    w = word()
    posts = sorted(rows.post(u["author"], f"{w} {n}") for n in range(25))
    backend.drain()
    new = word("renamed")
    rows.sql("UPDATE users SET username = :n WHERE id = :u", n=new, u=u["author"])
    assert backend.backlog() == 1 and _user_marks(backend, u["author"]) == 1

    run = indexing.DirtyRun()
    with session_scope() as session:       # the user's mark becomes one mark per post, queued
        assert indexing.index_batch(session, backend.engine, 4, run) == 1
    assert run.expanded == 25 and _user_marks(backend, u["author"]) == 0
    assert backend.backlog(posts) == 25
    assert backend.found(new, u["reader"]) == set()
    with session_scope() as session:       # one chunk: the first four posts
        assert indexing.index_batch(session, backend.engine, 4, run) == 4
    assert backend.backlog(posts) == 21
    assert backend.found(new, u["reader"]) == set(posts[:4])
    assert backend.found(old, u["reader"]) == set(posts[4:])

    rest = indexing.index_dirty(session_scope, backend.engine)
    assert rest.status == "ok" and rest.batches >= 6 and rest.posts >= 21
    assert backend.backlog() == 0
    assert backend.found(new, u["reader"]) == set(posts)
    assert backend.found(old, u["reader"]) == set()


def test_the_whole_username_expansion_in_one_run(backend, rows, monkeypatch):
    monkeypatch.setenv("SEARCH_BATCH", "4")
    u = rows.users("author", "reader")
    w = word()
    posts = {rows.post(u["author"], f"{w} {n}") for n in range(9)}
    backend.drain()
    new = word("renamed")
    rows.sql("UPDATE users SET username = :n WHERE id = :u", n=new, u=u["author"])
    run = backend.drain()   # a short first batch that expanded must not end the run
    assert run.expanded == 9 and run.batches >= 4
    assert backend.found(new, u["reader"]) == posts


# --- Two passes at once -----------------------------------------------------------------------


def test_a_held_lock_makes_a_pass_busy_and_touches_nothing(backend, rows):
    u = rows.users("author")
    w = word()
    posts = [rows.post(u["author"], f"{w} {n}") for n in range(3)]
    holder = new_session()
    try:
        assert versions.try_lock(holder, backend.name)
        run = indexing.index_dirty(session_scope, backend.engine)
        assert (run.status, run.batches, run.marks) == ("busy", 0, 0)
        assert backend.backlog(posts) == 3
    finally:
        holder.rollback()
        holder.close()
    run = indexing.index_dirty(session_scope, backend.engine)
    assert run.status == "ok" and run.marks >= 3
    assert backend.found(w, u["author"]) == set(posts)


def test_two_passes_at_once_lose_no_mark(backend, rows, monkeypatch):
    monkeypatch.setenv("SEARCH_BATCH", "5")
    u = rows.users("author", "reader")
    w = word()
    posts = [rows.post(u["author"], f"{w} {n}") for n in range(40)]
    changed: list[str] = []
    batches = iter(range(1000))
    guard = threading.Lock()

    def slow_and_busy(calls, post_ids):
        time.sleep(0.02)   # long enough for the other pass to find the lock taken
        with guard:
            second_batch = next(batches) == 1
        if second_batch:   # a post changes after this batch read it: its new mark must survive
            rows.update_post(posts[0], "moderation_hidden = true")
            changed.append(posts[0])

    first = FlakyEngine(backend.engine, after=slow_and_busy)
    second = FlakyEngine(backend.engine, after=slow_and_busy)
    runs = in_threads(lambda: indexing.index_dirty(session_scope, first),
                      lambda: indexing.index_dirty(session_scope, second))
    statuses = sorted(run.status for run in runs)
    assert statuses in (["busy", "ok"], ["ok", "ok"]), statuses
    assert sum(run.marks for run in runs) >= 40
    backend.drain()   # whatever a busy pass left
    assert backend.backlog() == 0
    assert changed and not backend.indexed(posts[0])
    assert backend.found(w, u["reader"]) == set(posts[1:])


def test_a_mark_written_during_a_batch_stays_queued(backend, rows, monkeypatch):
    monkeypatch.setenv("SEARCH_BATCH", "50")
    u = rows.users("author", "reader")
    w = word()
    posts = [rows.post(u["author"], f"{w} {n}") for n in range(3)]
    late: list[str] = []

    def write_during(calls, post_ids):
        if calls == 1:
            late.append(rows.post(u["author"], f"{w} late"))

    run = indexing.index_dirty(session_scope, FlakyEngine(backend.engine, after=write_during))
    assert run.status == "ok" and late
    # The batch committed without the late post's mark: it is still queued, or a later batch took it.
    assert backend.backlog(late) == 1 or backend.indexed(late[0])
    backend.drain()
    assert backend.found(w, u["reader"]) == {*posts, *late}


# --- An engine failing -------------------------------------------------------------------------


def test_an_engine_failure_mid_run_puts_the_batch_marks_back(backend, rows, monkeypatch):
    monkeypatch.setenv("SEARCH_BATCH", "3")
    u = rows.users("author", "reader")
    w = word()
    posts = [rows.post(u["author"], f"{w} {n}") for n in range(7)]

    with pytest.raises(ServiceUnavailable):
        indexing.index_dirty(session_scope, FlakyEngine(backend.engine, after=_fail_on(2)))
    # The first batch committed; the second one's claim was rolled back with it.
    assert backend.backlog(posts) == 4
    # The second batch's writes: rolled back with PostgreSQL's transaction; in Typesense they stay
    # (harmless: the marks are still queued, and writing again is idempotent).
    assert len(backend.found(w, u["reader"])) == {"postgresql": 3, "typesense": 6}[backend.name]
    backend.drain()
    assert backend.backlog() == 0
    assert backend.found(w, u["reader"]) == set(posts)


def test_an_engine_failure_keeps_a_username_mark_unexpanded(backend, rows):
    u = rows.users("author", "reader")
    w = word()
    posts = {rows.post(u["author"], f"{w} {n}") for n in range(3)}
    backend.drain()
    new = word("renamed")
    rows.sql("UPDATE users SET username = :n WHERE id = :u", n=new, u=u["author"])

    with pytest.raises(ServiceUnavailable):
        indexing.index_dirty(session_scope, FlakyEngine(backend.engine, before=_fail_on(1)))
    assert _user_marks(backend, u["author"]) == 1
    assert backend.backlog(sorted(posts)) == 0     # the expansion was rolled back too
    backend.drain()
    assert backend.found(new, u["reader"]) == posts


def test_a_dead_typesense_loses_no_mark(typesense, rows, monkeypatch):
    u = rows.users("author", "reader")
    w = word()
    posts = [rows.post(u["author"], f"{w} {n}") for n in range(3)]
    monkeypatch.setenv("SEARCH_URL", dead_typesense_url(typesense.url))
    with pytest.raises(Exception):   # noqa: B017 - the type is the next test's subject
        indexing.index_dirty(session_scope, engines.engine())
    assert typesense.backlog(posts) == 3
    monkeypatch.setenv("SEARCH_URL", typesense.url)
    typesense.drain()
    assert typesense.found(w, u["reader"]) == set(posts)


def test_a_dead_typesense_is_service_unavailable(typesense, rows, monkeypatch):
    u = rows.users("author")
    rows.post(u["author"], f"{word()} waiting")
    monkeypatch.setenv("SEARCH_URL", dead_typesense_url(typesense.url))
    with pytest.raises(ServiceUnavailable):
        indexing.index_dirty(session_scope, engines.engine())
    with pytest.raises(ServiceUnavailable):
        from tasks.search import query

        query("anything", u["author"])


# --- The reindex's guard -------------------------------------------------------------------------


def _version_rows(backend) -> list:
    with backend.db.connect() as conn:
        return conn.execute(text("SELECT id, status FROM search_index_versions WHERE backend = :b ORDER BY id"),
                            {"b": backend.name}).all()


def test_a_reindex_refuses_to_start_while_another_holds_the_guard(backend):
    before = _version_rows(backend)
    holder = new_session()
    try:
        assert try_xact_lock(holder, "search.reindex", backend.name)
        with pytest.raises(reindexing.ReindexRunning) as info:
            reindexing.reindex(backend.engine)
        assert info.value.code == "reindex_running"
        assert _version_rows(backend) == before   # nothing was built
    finally:
        holder.rollback()
        holder.close()


def test_a_second_reindex_while_one_runs_raises_reindex_running(backend, rows):
    old = backend.active_version()
    started, release = threading.Event(), threading.Event()

    def hold(done: int, total: int) -> None:
        started.set()
        assert release.wait(60)

    results: list = []
    thread = threading.Thread(target=lambda: results.append(reindexing.reindex(backend.engine, progress=hold)))
    thread.start()
    try:
        wait_for(started.is_set, 60, what="the first reindex's first chunk")
        with pytest.raises(reindexing.ReindexRunning):
            reindexing.reindex(backend.engine)
        from datetime import datetime, timezone

        with pytest.raises(reindexing.ReindexRunning):
            reindexing.reindex(backend.engine, since=datetime(2026, 1, 1, tzinfo=timezone.utc))
    finally:
        release.set()
        thread.join(120)
    assert results and results[0].replaced == old
    assert backend.active_version() == results[0].version != old


def test_a_reindex_that_died_is_cleaned_up_by_the_next(backend, rows):
    u = rows.users("author")
    w = word()
    post = rows.post(u["author"], f"{w} survives")
    backend.drain()
    old = backend.active_version()

    with pytest.raises(ServiceUnavailable):
        reindexing.reindex(FlakyEngine(backend.engine, before=_fail_on(1)))
    statuses = dict(_version_rows(backend))
    dead = max(statuses)
    assert statuses[dead] == "building" and backend.version_exists(dead)
    assert backend.active_version() == old
    assert backend.found(w, u["author"]) == {post}   # queries still read the old version

    result = reindexing.reindex(backend.engine)
    statuses = dict(_version_rows(backend))
    assert statuses[dead] == "retired" and not backend.version_exists(dead)
    assert statuses[result.version] == "active" and result.replaced == old
    assert backend.found(w, u["author"]) == {post}
