"""The cache tasks through real brokers and real workers: a spawned prefork worker takes bad
messages (typed, dead-lettered, never retried) and stays up to drop and warm keys; the demo."""
from __future__ import annotations

import re

import pytest
from celery.result import ResultSet
from sqlalchemy import text

from tests.cache.conftest import add_post, add_users, cached_keys
from tests.waiting import wait_for
from workers.errors import InvalidArguments

pytestmark = pytest.mark.integration


def test_a_worker_dead_letters_bad_invalidations_and_stays_up_to_drop_and_warm(clean_db, cache, isolated):
    with clean_db.begin() as conn:
        u = add_users(conn, "alice", "bob")
        add_post(conn, u["alice"])
    isolated.start_worker("cache-worker", ["cache"], concurrency=1)
    send = isolated.app.send_task

    bad = [send("cache.invalidate", args=["user_deleted", [u["alice"]]]),
           send("cache.invalidate", args=["user_updated", ["alice"]]),
           send("cache.invalidate", args=["friendship_changed", [u["alice"]]]),
           send("cache.invalidate", kwargs={"event": "user_updated"})]
    for result, message in zip(bad, ("unknown cache event", "must be a user id", "exactly 2", "missing")):
        with pytest.raises(Exception, match=message) as info:
            result.get(timeout=60)
        assert isinstance(info.value, InvalidArguments), type(info.value)

    def letters():
        with clean_db.connect() as conn:
            return conn.execute(text("SELECT error_code, attempts FROM dead_letters WHERE task_id = ANY(:ids) "
                                     "ORDER BY error_code"), {"ids": [r.id for r in bad]}).all()

    found = wait_for(lambda: len(letters()) == 4 and letters(), 30, what="four dead letters")
    assert sorted(row.error_code for row in found) == ["invalid_arguments"] * 3 + ["unknown_cache_event"]

    # The same worker process then warms alice (active: she just posted) and drops her profile.
    warmed = send("cache.warm_active").get(timeout=60)
    assert (warmed["status"], warmed["users"], warmed["written"]) == ("ok", 1, 3)
    assert cached_keys(cache) == {f"user:{u['alice']}", f"user:{u['alice']}:friends",
                                  f"feed:{u['alice']}:page:1", f"feed:{u['alice']}:pages"}
    dropped = send("cache.invalidate", args=["user_updated", [u["alice"], u["bob"]]]).get(timeout=60)
    assert (dropped["dropped"], dropped["versions_bumped"]) == (1, 2)
    assert not cache.exists(f"user:{u['alice']}") and cache.exists(f"user:{u['alice']}:friends")


def test_the_cache_demo_warms_and_invalidates(clean_db, cache, celery_worker):
    from tasks.cache import demo
    from workers.dev.demo import load_demo_graph

    graph = load_demo_graph()
    ResultSet(demo.enqueue(graph)).join_native(timeout=90, propagate=True)
    line = demo.summarize(graph)
    assert re.fullmatch(rf"warm_active: \d+ active user\(s\), \d+ key\(s\) written \(ok\); "
                        rf"user:{graph.user_ids['alice']} cached, TTL 3[56]\d\d s; "
                        rf"user_updated\(bob\): user:{graph.user_ids['bob']} gone, 1 dropped", line), line
