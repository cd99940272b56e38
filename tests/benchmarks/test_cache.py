"""cache.warm_active for 10,000 active users against a bare pipelined SET of the same values.

Ours is the whole warm: the keyset walk over the active users (the feed's activity
rule), per 500-user chunk one MGET of the versions, three set-based statements (profiles,
friends lists, first feed pages through the web tier's read query, JSON built by
PostgreSQL) and one pipelined round trip of check-and-set scripts (overlapping the next
chunk's reads). The baseline writes exactly the values the warm wrote, with plain
``SET key value EX ttl`` in one pipeline, no versions and no PostgreSQL: the floor of
getting those bytes into Redis.

Two more figures say where the time goes: the same warm with the guard taken out (same
walk, same statements, bare pipelined SETs per chunk), and the Redis half alone (versions
and check-and-set for the same 30,000 values) against the bare SET.
"""
from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest
import redis
from sqlalchemy import text

from tests.benchmarks.conftest import Goal, NoGoal

pytestmark = pytest.mark.bench

USERS = 10_000
FRIENDS_EACH = 10      # accepted friendships per user (either side)
FEED_ROWS = 30         # stored feed rows per user: page 1 is full
RUNS = 3               # each figure is the best of this many runs, each from an empty cache


def best_of(run, reset) -> tuple[float, object]:
    """The fastest of RUNS timed calls of ``run`` (after one untimed warm-up), ``reset`` before each."""
    reset()
    outcome = run()
    times = []
    for _ in range(RUNS):
        reset()
        started = time.perf_counter()
        outcome = run()
        times.append(time.perf_counter() - started)
    return min(times), outcome


def _seed(engine) -> None:
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO users (email, username, hashed_password, display_name, bio, followers_count) "
            "SELECT 'c' || g || '@example.com', 'c' || g, '!', 'User ' || g, repeat('grateful ', 8), g % 97 "
            "FROM generate_series(1, :n) AS g"), {"n": USERS})
        conn.execute(text(
            "INSERT INTO posts (author_id, content, created_at) "
            "SELECT id, 'thanks for today #' || id, now() - interval '5 minutes' FROM users"))
        conn.execute(text(
            "INSERT INTO friendships (user1_id, user2_id, status) "
            "SELECT u.id, (u.id + k * 37 - 1) % :n + 1, 'accepted' FROM users u, generate_series(1, :half) AS k "
            "ON CONFLICT DO NOTHING"), {"n": USERS, "half": FRIENDS_EACH // 2})
        conn.execute(text(
            "INSERT INTO feed_items (user_id, post_id, score, reason, expires_at) "
            "SELECT u.id, p.id, 1000 - k, 'followed', now() + interval '1 day' "
            "FROM users u CROSS JOIN generate_series(1, :rows) AS k "
            "JOIN posts p ON p.author_id = (u.id + k - 1) % :n + 1"), {"n": USERS, "rows": FEED_ROWS})
        for table in ("users", "posts", "friendships", "feed_items", "likes", "emoji_reactions", "comments",
                      "follows"):
            conn.execute(text(f"ANALYZE {table}"))


def kind_of(key: bytes) -> str:
    """The kind of a key the warm writes: user:{id}, user:{id}:friends or feed:{id}:page:1."""
    if key.startswith(b"feed:"):
        return "feed"
    return "friends" if key.endswith(b":friends") else "user"


def test_warm_active_against_a_bare_pipelined_set(clean_db, bench_record):
    import settings
    from db.session import session_scope
    from tasks.cache.keys import KEYS
    from tasks.cache.warm import warm_active

    _seed(clean_db)
    client = redis.Redis.from_url(settings.current().cache_url)
    client.flushdb()
    now = datetime.now(timezone.utc)

    def warm():
        with session_scope() as session:
            return warm_active(session, client, now, active_minutes=15, budget_seconds=600)

    ours, result = best_of(warm, client.flushdb)
    assert (result.status, result.users, result.refused, result.absent) == ("ok", USERS, 0, 0)
    assert result.written == 3 * USERS

    keys = [key for key in client.scan_iter(count=10_000) if not key.endswith(b":pages")]
    values = dict(zip(keys, client.mget(keys)))
    assert len(values) == 3 * USERS
    value_bytes = sum(len(v) for v in values.values())
    client.flushdb()

    def bare_set():
        pipe = client.pipeline(transaction=False)
        for key, value in values.items():
            pipe.set(key, value, ex=KEYS[kind_of(key)].ttl_seconds)
        pipe.execute()

    bare, _ = best_of(bare_set, client.flushdb)
    client.flushdb()

    bench_record("cache.warm_active_10k_users", ours, "s", bare,
                 "one pipelined SET … EX of the same 30,000 values (same run, no PostgreSQL, no versions)",
                 users=USERS, keys=3 * USERS, value_bytes=value_bytes,
                 goal=Goal("ratio", "<=", 2, "the whole warm, reads included, within twice the bare write"))

    # The same walk and statements with the guard taken out: what versions, check-and-set
    # and the page sets cost on top of reading PostgreSQL.
    from tasks.cache import versions
    from tasks.cache.values import LOADERS
    from tasks.cache.warm import active_users, warm_wanted

    def unguarded_warm():
        with session_scope() as session:
            after_id, since = 0, now - timedelta(minutes=15)
            while page := active_users(session, since, after_id, 500):
                pipe = client.pipeline(transaction=False)
                for kind, ids in warm_wanted(page).items():
                    for ident, value in LOADERS[kind](session, ids, now).items():
                        pipe.set(KEYS[kind].key(ident), value, ex=KEYS[kind].ttl_seconds)
                pipe.execute()
                after_id = page[-1]

    unguarded, _ = best_of(unguarded_warm, client.flushdb)
    assert len(client.keys("*")) == 3 * USERS
    client.flushdb()
    bench_record("cache.warm_active_10k_users_vs_unguarded", ours, "s", unguarded,
                 "the same walk and statements with bare pipelined SETs per chunk (no versions, no "
                 "check-and-set, no page sets; same run)",
                 goal=Goal("ratio", "<=", 1.5, "the no-stale-overwrite guard costs little beside the reads"))

    # The Redis half alone: version reads and check-and-set scripts for the same values.
    entries = []
    for key, value in values.items():
        kind = kind_of(key)
        spec, owner = KEYS[kind], int(key.split(b":")[1])
        ident = (owner, 1) if kind == "feed" else owner
        entries.append(versions.Entry(key.decode(), spec.version_key(ident), spec.ttl_seconds, value,
                                      spec.pages_key(ident), 1 if kind == "feed" else None))
    def guarded_write():
        snapshot = versions.read_versions(client, [entry.version_key for entry in entries])
        return versions.write_if_unchanged(client, entries, snapshot)

    guarded, written = best_of(guarded_write, client.flushdb)
    assert written.written == 3 * USERS
    client.flushdb()
    bench_record("cache.guarded_write_30k_keys", guarded, "s", bare,
                 "one pipelined SET … EX of the same 30,000 values (same run)",
                 goal=NoGoal("the Redis half of the warm: version reads and check-and-set scripts, "
                             "what the never-stale guarantee costs over a bare SET"))
