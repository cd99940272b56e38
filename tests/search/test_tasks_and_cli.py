"""``search.index_dirty`` and ``search.verify`` through a real worker, and the operator's commands
``python -m workers search reindex [--since DATE] | verify``, on both backends."""
from __future__ import annotations

import re
from datetime import datetime, timezone

import pytest
from sqlalchemy import text

from db.locks import try_xact_lock
from db.session import new_session
from tests.search.conftest import dead_typesense_url, word
from workers.cli import main


def _drop_behind_the_indexers_back(backend, post_id: str) -> None:
    """Delete a post with its search mark: a document the index should no longer hold."""
    with backend.db.begin() as conn:
        conn.execute(text("DELETE FROM posts WHERE id = CAST(:p AS uuid)"), {"p": post_id})
        conn.execute(text("DELETE FROM search_dirty WHERE entity_id = :p"), {"p": post_id})


def _heartbeat(backend, name: str):
    with backend.db.connect() as conn:
        return conn.execute(text("SELECT last_success_at, last_result FROM job_heartbeats WHERE name = :n"),
                            {"n": name}).first()


def _last_verification(backend):
    with backend.db.connect() as conn:
        return conn.execute(text(
            "SELECT id, version, day, expected, indexed, removed, missing FROM search_verifications "
            "WHERE backend = :b ORDER BY id DESC LIMIT 1"), {"b": backend.name}).first()


# --- Through a real worker -------------------------------------------------------------------------


@pytest.mark.integration
def test_index_dirty_through_a_worker(backend, rows, celery_worker):
    from tasks.search.tasks import index_dirty

    u = rows.users("author", "reader")
    w = word()
    posts = {rows.post(u["author"], f"{w} {n}") for n in range(4)}
    hidden = rows.post(u["author"], f"{w} hidden")
    backend.drain()
    rows.update_post(hidden, "moderation_hidden = true")
    assert backend.indexed(hidden)
    sent_at = datetime.now(timezone.utc)
    more = {rows.post(u["author"], f"{w} more {n}") for n in range(3)}

    result = index_dirty.delay().get(timeout=60)
    assert result["status"] == "ok" and not result["backlog_left"]
    assert result["marks"] >= 4 and result["upserted"] >= 3 and result["deleted"] >= 1
    assert backend.backlog() == 0
    assert not backend.indexed(hidden)
    assert backend.found(w, u["reader"]) == posts | more
    beat = _heartbeat(backend, "search.index_dirty")
    assert beat is not None and beat.last_success_at >= sent_at and beat.last_result == result


@pytest.mark.integration
def test_verify_through_a_worker(backend, rows, celery_worker):
    from tasks.search.tasks import verify

    u = rows.users("author")
    w = word()
    stale = rows.post(u["author"], f"{w} stale")
    lost = rows.post(u["author"], f"{w} lost")
    backend.drain()
    _drop_behind_the_indexers_back(backend, stale)
    backend.delete_document(lost)
    assert backend.indexed(stale)

    result = verify.delay().get(timeout=60)
    assert result["status"] == "ok" and result["version"] == backend.active_version()
    assert result["removed"] >= 1 and result["missing"] >= 1
    assert not backend.indexed(stale)
    assert backend.backlog([lost]) == 1
    recorded = _last_verification(backend)
    assert recorded.day == datetime.now(timezone.utc).date()
    assert (recorded.version, recorded.expected, recorded.indexed, recorded.removed, recorded.missing) == (
        result["version"], result["expected"], result["indexed"], result["removed"], result["missing"])
    assert _heartbeat(backend, "search.verify").last_result == result


# --- The CLI ---------------------------------------------------------------------------------------


def test_cli_reindex_builds_and_swaps_in_a_new_version(backend, rows, capsys):
    u = rows.users("author")
    w = word()
    post = rows.post(u["author"], f"{w} kept across versions")
    backend.drain()
    old = backend.active_version()

    assert main(["search", "reindex"]) == 0
    out = capsys.readouterr().out
    new = backend.active_version()
    assert new != old
    assert f"({backend.name})" in out
    assert re.search(rf"version {new} is active, replacing version {old}: \d+ documents from \d+ posts", out), out
    assert not backend.version_exists(old) and backend.version_exists(new)
    assert backend.found(w, u["author"]) == {post}


def test_cli_reindex_since_rewrites_recent_posts_in_place(backend, rows, capsys):
    u = rows.users("author")
    w = word()
    recent = rows.post(u["author"], f"{w} recent")
    old_post = rows.post(u["author"], f"{w} from long ago", at=datetime(2020, 5, 1, tzinfo=timezone.utc))
    backend.drain()
    version = backend.active_version()
    for post in (recent, old_post):
        backend.delete_document(post)     # lost by the engine, say in an outage

    assert main(["search", "reindex", "--since", "2026-01-01"]) == 0
    out = capsys.readouterr().out
    with backend.db.connect() as conn:
        since = conn.execute(text("SELECT count(*) FROM posts WHERE created_at >= '2026-01-01T00:00:00Z' "
                                  "OR updated_at >= '2026-01-01T00:00:00Z'")).scalar_one()
    assert "since 2026-01-01" in out
    assert re.search(rf"\b{since} posts rewritten in the live versions: \d+ written, \d+ removed", out), out
    assert backend.active_version() == version   # in place: no new version
    assert backend.indexed(recent)
    assert not backend.indexed(old_post)          # older than --since: left alone
    assert backend.found(w, u["author"]) == {recent}


def test_cli_verify_repairs_and_records(backend, rows, capsys):
    u = rows.users("author")
    w = word()
    stale = rows.post(u["author"], f"{w} stale")
    lost = rows.post(u["author"], f"{w} lost")
    backend.drain()
    _drop_behind_the_indexers_back(backend, stale)
    backend.delete_document(lost)
    before = _last_verification(backend)

    assert main(["search", "verify"]) == 0
    out = capsys.readouterr().out
    found = re.search(r"version (\d+): (\d+) posts to show, (\d+) documents; (\d+) stale removed, "
                      r"(\d+) queued for the dirty pass", out)
    assert found, out
    numbers = tuple(int(n) for n in found.groups())
    recorded = _last_verification(backend)
    assert before is None or recorded.id > before.id
    assert numbers == (recorded.version, recorded.expected, recorded.indexed, recorded.removed, recorded.missing)
    assert recorded.version == backend.active_version()
    assert recorded.removed >= 1 and recorded.missing >= 1
    assert not backend.indexed(stale) and backend.backlog([lost]) == 1
    backend.drain()
    assert backend.found(w, u["author"]) == {lost}


def test_cli_reindex_while_one_runs_exits_1(backend, capsys):
    old = backend.active_version()
    holder = new_session()
    try:
        assert try_xact_lock(holder, "search.reindex", backend.name)
        assert main(["search", "reindex"]) == 1
    finally:
        holder.rollback()
        holder.close()
    assert f"error: a {backend.name} reindex is already running" in capsys.readouterr().err
    assert backend.active_version() == old


@pytest.mark.parametrize("since", ["yesterday", "2026-13-01", "01/02/2026", ""])
def test_cli_refuses_a_bad_since(backend, capsys, since):
    old = backend.active_version()
    with pytest.raises(SystemExit) as exit_info:
        main(["search", "reindex", "--since", since])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--since" in err and "invalid" in err
    assert backend.active_version() == old


def test_cli_with_a_dead_typesense_exits_1(typesense, monkeypatch, capsys):
    monkeypatch.setenv("SEARCH_URL", dead_typesense_url(typesense.url))
    assert main(["search", "verify"]) == 1
    assert "error: the search engine is unavailable" in capsys.readouterr().err
