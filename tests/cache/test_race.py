"""Never stale-overwrite: a fill that read PostgreSQL before a committed change and its
invalidation must not write afterwards. Real threads, their own PostgreSQL connections
and Redis connections, against the real cache."""
from __future__ import annotations

import json
import random
import threading
import time

import redis
from sqlalchemy import text

from tests.cache.conftest import add_feed, add_post, add_users, utcnow
from tests.waiting import wait_for


def cache_client():
    import settings

    return redis.Redis.from_url(settings.current().cache_url)


def invalidate_committed(event: str, ids: list) -> None:
    """What the cache.invalidate task does once the writer committed: its own transaction."""
    from db.session import session_scope
    from tasks.cache.invalidation import check, invalidate

    spec, ids = check(event, ids)
    with session_scope() as session:
        invalidate(session, cache_client(), spec, ids, utcnow())


def in_thread(target) -> tuple[threading.Thread, list]:
    out: list = []

    def run():
        try:
            out.append(target())
        except BaseException as exc:  # noqa: BLE001 - re-raised by the test
            out.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def warm_in_thread():
    from db.session import session_scope
    from tasks.cache.warm import warm_active

    def warm():
        with session_scope() as session:
            return warm_active(session, cache_client(), utcnow(), active_minutes=15, budget_seconds=60)

    return in_thread(warm)


def test_a_warm_that_read_before_an_update_and_its_invalidation_writes_nothing_stale(clean_db, cache, gate):
    with clean_db.begin() as conn:
        u = add_users(conn, "alice", "bob")
        post = add_post(conn, u["alice"])            # alice is active: the warm picks her
        add_feed(conn, u["alice"], [post])
        conn.execute(text("UPDATE users SET display_name = 'Old' WHERE id = :u"), {"u": u["alice"]})

    thread, out = warm_in_thread()
    assert gate.loaded.wait(30), "the warm never reached its write"
    # The warm has read PostgreSQL. Now a writer commits a new name and an emptied feed,
    # and the invalidations run after the commit, as the tasks sent on commit do.
    with clean_db.begin() as conn:
        conn.execute(text("UPDATE users SET display_name = 'New' WHERE id = :u"), {"u": u["alice"]})
        conn.execute(text("DELETE FROM feed_items WHERE user_id = :u"), {"u": u["alice"]})
    invalidate_committed("user_updated", [u["alice"]])
    invalidate_committed("feed_rebuilt", [u["alice"]])
    gate.release()
    thread.join(30)
    [result] = out
    assert not isinstance(result, BaseException), result

    assert (result.written, result.refused) == (1, 2)   # friends list written; profile and feed refused
    assert cache.get(f"user:{u['alice']}") is None
    assert cache.get(f"feed:{u['alice']}:page:1") is None
    assert json.loads(cache.get(f"user:{u['alice']}:friends")) == {"user_id": u["alice"], "friend_ids": []}
    # The next fill reads the new row and is welcome.
    from db.session import session_scope
    from tasks.cache.store import get_or_fill

    with session_scope() as session:
        assert get_or_fill(session, "user", u["alice"], client=cache)["display_name"] == "New"
        assert get_or_fill(session, "feed", (u["alice"], 1), client=cache)["items"] == []


def test_the_same_warm_without_a_change_in_between_writes_everything(clean_db, cache, gate):
    with clean_db.begin() as conn:
        u = add_users(conn, "alice")
        add_post(conn, u["alice"])
    thread, out = warm_in_thread()
    assert gate.loaded.wait(30)
    invalidate_committed("user_updated", [u["alice"] + 1000])   # someone else's: no effect on alice
    gate.release()
    thread.join(30)
    assert (out[0].written, out[0].refused) == (3, 0)
    assert json.loads(cache.get(f"user:{u['alice']}"))["id"] == u["alice"]


def test_a_version_that_expired_after_its_invalidation_still_refuses_the_stale_write(db_session, cache, monkeypatch):
    """The counter of a key nobody touched reads "0"; an invalidation makes it 1, and once it
    expires it reads "0" again, equal to what the old fill read. The fill's age refuses it."""
    from tasks.cache import versions

    monkeypatch.setattr(versions, "VERSION_TTL_SECONDS", 1)
    monkeypatch.setattr(versions, "MAX_FILL_AGE_SECONDS", 0.5)   # < VERSION_TTL, as keys.py asserts
    snapshot = versions.read_versions(cache, ["v:user:7"])
    assert snapshot.versions == {"v:user:7": "0"}
    versions.drop(cache, [("user", 7)])
    assert cache.get("v:user:7") == b"1"
    wait_for(lambda: not cache.exists("v:user:7"), 5, what="the version to expire")

    entry = versions.Entry("user:7", "v:user:7", 3600, '{"stale": true}')
    assert versions.read_versions(cache, ["v:user:7"]).versions == {"v:user:7": "0"}   # the version check alone passes
    assert (versions.write_if_unchanged(cache, [entry], snapshot).refused, cache.get("user:7")) == (1, None)
    # A fresh read of the same (missing) version is young enough: written.
    fresh = versions.read_versions(cache, ["v:user:7"])
    assert versions.write_if_unchanged(cache, [entry], fresh).written == 1


def test_concurrent_warms_and_updates_leave_no_stale_value(clean_db, cache, monkeypatch):
    """Three fillers loop over every user's profile while a writer renames users and
    invalidates after each commit; random pauses between each fill's read and write widen
    the window. After each invalidation, and at the end, whatever is cached for the user
    must be what PostgreSQL holds."""
    from db.session import session_scope
    from tasks.cache import versions
    from tasks.cache.fill import fill

    real_write = versions.write_if_unchanged
    totals = {"written": 0, "refused": 0}
    lock = threading.Lock()

    def slow_write(client, entries, snapshot):
        time.sleep(random.uniform(0, 0.01))
        result = real_write(client, entries, snapshot)
        with lock:
            totals["written"] += result.written
            totals["refused"] += result.refused
        return result

    monkeypatch.setattr(versions, "write_if_unchanged", slow_write)
    with clean_db.begin() as conn:
        users = list(add_users(conn, *(f"u{i}" for i in range(6))).values())
    writer_done = threading.Event()
    stale: list = []

    def cached_name(user_id):
        raw = cache.get(f"user:{user_id}")
        return None if raw is None else json.loads(raw)["display_name"]

    def filler():
        client = cache_client()
        while not writer_done.is_set():
            with session_scope() as session:
                fill(session, client, {"user": users}, utcnow())

    def writer():
        try:
            for step in range(120):
                user_id, name = random.choice(users), f"name-{step}"
                with clean_db.begin() as conn:
                    conn.execute(text("UPDATE users SET display_name = :n WHERE id = :u"), {"n": name, "u": user_id})
                invalidate_committed("user_updated", [user_id])
                # Longer than a filler's pause: a fill that read the old name has tried its write by now.
                time.sleep(0.015)
                if cached_name(user_id) not in (None, name):
                    stale.append((step, user_id, cached_name(user_id), name))
        finally:
            writer_done.set()

    threads = [in_thread(filler) for _ in range(3)] + [in_thread(writer)]
    for thread, out in threads:
        thread.join(120)
        assert not thread.is_alive()
        assert not any(isinstance(item, BaseException) for item in out), out

    with clean_db.connect() as conn:
        truth = dict(conn.execute(text("SELECT id, display_name FROM users WHERE id = ANY(:ids)"),
                                  {"ids": users}).all())
    stale += [("end", user_id, cached_name(user_id), truth[user_id]) for user_id in users
              if cached_name(user_id) not in (None, truth[user_id])]
    assert not stale, f"stale values left in the cache: {stale[:5]}"
    assert totals["refused"] > 0, "the race never happened: the test proved nothing"
    assert totals["written"] > 0
