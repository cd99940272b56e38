"""The graph's counters (friends, unread messages per user and per conversation member,
comment likes, group members) under real concurrent writers, then after injected drift.

Each writer thread is its own connection committing small transactions; a reconciler
thread runs dirty passes at the same time. Every check compares with a count by hand
(tests/graph/conftest.py: TRUE_COUNT_SQL), never with the code's own recount SQL.
"""
from __future__ import annotations

import itertools
import random
import threading

import pytest
from sqlalchemy import text

from db.models.graph import REACTION_TYPES
from tasks.engagement import reconcile as rc
from tasks.engagement import runs
from tests.graph.conftest import (add_comment, add_conversation, add_post, add_users, counter,
                                  wrong_graph_counters)
from tests.waiting import in_threads

WRITERS = 3
OPS_PER_WRITER = 120


def build_world(engine) -> dict:
    with engine.begin() as conn:
        users = list(add_users(conn, *(f"c{i}" for i in range(8))).values())
        post = add_post(conn, users[0])
        comments = [add_comment(conn, author, post) for author in users[1:4]]
        groups = [conn.execute(text("INSERT INTO groups (name, admin_id) VALUES (:n, :a) RETURNING id::text"),
                               {"n": f"g{i}", "a": users[0]}).scalar_one() for i in range(2)]
        conversations = {
            add_conversation(conn, users[0], users[1]): (users[0], users[1]),
            add_conversation(conn, users[0], users[2]): (users[0], users[2]),
            add_conversation(conn, users[1], users[2]): (users[1], users[2]),
            add_conversation(conn, *users[:4]): tuple(users[:4]),   # a group conversation
        }
    return {"users": users, "post": post, "comments": comments, "groups": groups, "conversations": conversations}


class Writer:
    """One thread's share of the writes. It owns its friendship pairs, its reaction type,
    its group members and its messages (so writers never fight over one unique key and
    never deadlock), while every parent row (users, comments, groups, conversation
    members) is shared with the other writers."""

    def __init__(self, engine, world: dict, index: int):
        self.engine, self.world, self.index = engine, world, index
        self.rng = random.Random(1400 + index)
        users = world["users"]
        self.pairs = {pair: None for n, pair in enumerate(itertools.combinations(users, 2)) if n % WRITERS == index}
        self.reaction_type = REACTION_TYPES[index]
        self.reactions: set[tuple[int, str]] = set()
        self.members = [u for n, u in enumerate(users) if n % WRITERS == index]
        self.joined: set[tuple[str, int]] = set()
        self.messages: dict[str, bool] = {}   # id -> is_read
        self.ops = 0

    def friendship(self, conn) -> None:
        pair = self.rng.choice(list(self.pairs))
        a, b = pair if self.rng.random() < 0.5 else pair[::-1]
        state = self.pairs[pair]
        where = "least(user1_id, user2_id) = least(:a, :b) AND greatest(user1_id, user2_id) = greatest(:a, :b)"
        if state is None:
            conn.execute(text("INSERT INTO friendships (user1_id, user2_id, status) VALUES (:a, :b, 'pending')"),
                         {"a": a, "b": b})
            self.pairs[pair] = "pending"
        elif state == "pending" and self.rng.random() < 0.8:
            conn.execute(text(f"UPDATE friendships SET status = 'accepted', updated_at = now() WHERE {where}"),
                         {"a": a, "b": b})
            self.pairs[pair] = "accepted"
        elif state == "accepted" and self.rng.random() < 0.4:
            # The blocker becomes user1: the row may swap its ends and change status at once.
            conn.execute(text(f"UPDATE friendships SET status = 'blocked', user1_id = :a, user2_id = :b, "
                              f"updated_at = now() WHERE {where}"), {"a": a, "b": b})
            self.pairs[pair] = "blocked"
        else:   # decline, unfriend, unblock
            conn.execute(text(f"DELETE FROM friendships WHERE {where}"), {"a": a, "b": b})
            self.pairs[pair] = None

    def reaction(self, conn) -> None:
        key = (self.rng.choice(self.world["users"]), self.rng.choice(self.world["comments"]))
        if key in self.reactions:
            conn.execute(text("DELETE FROM comment_reactions WHERE user_id = :u AND comment_id = CAST(:c AS uuid) "
                              "AND type = :t"), {"u": key[0], "c": key[1], "t": self.reaction_type})
            self.reactions.discard(key)
        else:
            conn.execute(text("INSERT INTO comment_reactions (user_id, comment_id, type) "
                              "VALUES (:u, CAST(:c AS uuid), :t)"), {"u": key[0], "c": key[1], "t": self.reaction_type})
            self.reactions.add(key)

    def membership(self, conn) -> None:
        key = (self.rng.choice(self.world["groups"]), self.rng.choice(self.members))
        if key in self.joined:
            conn.execute(text("DELETE FROM group_members WHERE group_id = CAST(:g AS uuid) AND user_id = :u"),
                         {"g": key[0], "u": key[1]})
            self.joined.discard(key)
        else:
            conn.execute(text("INSERT INTO group_members (group_id, user_id) VALUES (CAST(:g AS uuid), :u)"),
                         {"g": key[0], "u": key[1]})
            self.joined.add(key)

    def send(self, conn, count: int = 1) -> None:
        conversation, members = self.rng.choice(list(self.world["conversations"].items()))
        rows = [self.rng.sample(members, 2) for _ in range(count)]
        ids = conn.execute(text(
            "INSERT INTO messages (conversation_id, sender_id, receiver_id, content) "
            "SELECT CAST(:c AS uuid), s, r, 'm' FROM unnest(CAST(:s AS integer[]), CAST(:r AS integer[])) AS v(s, r) "
            "RETURNING id::text"), {"c": conversation, "s": [s for s, _ in rows], "r": [r for _, r in rows]}).scalars()
        self.messages.update((i, False) for i in ids)

    def flip(self, conn) -> None:
        """Read or unread some of our messages, several rows in one statement."""
        if not self.messages:
            return self.send(conn)
        chosen = self.rng.sample(list(self.messages), min(len(self.messages), self.rng.randint(1, 3)))
        conn.execute(text("UPDATE messages SET is_read = NOT is_read WHERE id = ANY(CAST(:ids AS uuid[]))"),
                     {"ids": chosen})
        for i in chosen:
            self.messages[i] = not self.messages[i]

    def delete_message(self, conn) -> None:
        if not self.messages:
            return self.send(conn)
        chosen = self.rng.choice(list(self.messages))
        conn.execute(text("DELETE FROM messages WHERE id = CAST(:i AS uuid)"), {"i": chosen})
        del self.messages[chosen]

    def tail(self) -> int:
        """Updates only, no insert or delete: accept every pending request, block every
        accepted pair, flip every message. Only the row-level UPDATE triggers mark these."""
        changed = 0
        for pair, state in self.pairs.items():
            if state in ("pending", "accepted"):
                new_state = {"pending": "accepted", "accepted": "blocked"}[state]
                with self.engine.begin() as conn:
                    changed += conn.execute(text(
                        "UPDATE friendships SET status = :s WHERE least(user1_id, user2_id) = :a "
                        "AND greatest(user1_id, user2_id) = :b"), {"s": new_state, "a": min(pair), "b": max(pair)}
                    ).rowcount
                self.pairs[pair] = new_state
        with self.engine.begin() as conn:
            changed += conn.execute(text(
                "UPDATE messages SET is_read = NOT is_read WHERE id = ANY(CAST(:ids AS uuid[]))"),
                {"ids": list(self.messages)}).rowcount
        self.messages = {i: not is_read for i, is_read in self.messages.items()}
        return changed

    def __call__(self, barrier: threading.Barrier, ops: int = OPS_PER_WRITER,
                 tail_barrier: threading.Barrier | None = None) -> int:
        steps = [self.friendship] * 4 + [self.reaction] * 3 + [self.membership] * 2 + [self.send] * 3 + \
                [self.flip] * 3 + [self.delete_message]
        barrier.wait(timeout=30)
        for _ in range(ops):
            with self.engine.begin() as conn:
                # Sometimes two writes in one transaction (an accept and a first message).
                for step in self.rng.sample(steps, 2 if self.rng.random() < 0.2 else 1):
                    step(conn)
            self.ops += 1
        if tail_barrier is not None:
            # Every writer is done inserting and deleting: nothing but the updates below
            # can mark a parent dirty from here on.
            tail_barrier.wait(timeout=60)
            self.tail_changes = self.tail()
        return self.ops


def reconciler(barrier: threading.Barrier, writers_done: threading.Event) -> int:
    passes = 0
    barrier.wait(timeout=30)
    while not writers_done.is_set() or passes == 0:
        runs.run_dirty()
        passes += 1
    return passes


def run_concurrently(engine, world: dict, extra=None, ops: int = OPS_PER_WRITER, writers=None,
                     tail: bool = False) -> list:
    writers = writers or [Writer(engine, world, i) for i in range(WRITERS)]
    others = [extra] if extra else []
    barrier = threading.Barrier(len(writers) + 1 + len(others))
    tail_barrier = threading.Barrier(len(writers)) if tail else None
    done = threading.Event()
    remaining = [len(writers)]
    lock = threading.Lock()

    def write(writer):
        try:
            return writer(barrier, ops, tail_barrier)
        finally:
            with lock:
                remaining[0] -= 1
                if remaining[0] == 0:
                    done.set()

    calls = [lambda w=w: write(w) for w in writers] + [lambda: reconciler(barrier, done)]
    calls += [lambda other=other: (barrier.wait(timeout=30), other())[1] for other in others]
    return in_threads(*calls, timeout=120)


def dirty_backlog(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(text("SELECT count(*) FROM counter_dirty")).scalar_one()


def assert_sane_totals(engine) -> None:
    """Counters that are right one by one also add up: a friendship counts at both ends,
    an unread message once for its receiver and once for its receiver's membership."""
    with engine.connect() as conn:
        accepted = conn.execute(text("SELECT count(*) FROM friendships WHERE status = 'accepted'")).scalar_one()
        unread = conn.execute(text("SELECT count(*) FROM messages WHERE NOT is_read")).scalar_one()
        reactions = conn.execute(text("SELECT count(*) FROM comment_reactions")).scalar_one()
        members = conn.execute(text("SELECT count(*) FROM group_members")).scalar_one()
        friends_total, unread_total = conn.execute(text(
            "SELECT sum(friends_count), sum(unread_messages_count) FROM users")).one()
        assert friends_total == 2 * accepted
        assert unread_total == unread == conn.execute(text(
            "SELECT sum(unread_count) FROM conversation_members")).scalar_one()
        assert conn.execute(text("SELECT sum(like_count) FROM comments")).scalar_one() == reactions
        assert conn.execute(text("SELECT sum(member_count) FROM groups")).scalar_one() == members
    # The writers left something to count in every table, or the checks above prove little.
    assert accepted > 0 and unread > 0 and reactions > 0 and members > 0


@pytest.mark.integration
def test_counters_are_exact_after_concurrent_writers_and_a_dirty_pass(clean_db):
    world = build_world(clean_db)
    writers = [Writer(clean_db, world, i) for i in range(WRITERS)]
    passes = run_concurrently(clean_db, world, writers=writers, tail=True)[-1]
    assert passes >= 1 and all(w.ops == OPS_PER_WRITER for w in writers)
    assert all(w.tail_changes > 0 for w in writers)

    report = runs.run_dirty()
    assert report.status == "finished"
    assert dirty_backlog(clean_db) == 0
    with clean_db.connect() as conn:
        assert wrong_graph_counters(conn) == []
        # The writers' own bookkeeping agrees with the stored counters too.
        for comment in world["comments"]:
            expected = sum(1 for w in writers for (_u, c) in w.reactions if c == comment)
            assert counter(conn, "comments", "like_count", comment) == expected
        for group in world["groups"]:
            expected = sum(1 for w in writers for (g, _u) in w.joined if g == group)
            assert counter(conn, "groups", "member_count", group) == expected
        for user in world["users"]:
            expected = sum(1 for w in writers for pair, state in w.pairs.items()
                           if state == "accepted" and user in pair)
            assert counter(conn, "users", "friends_count", user) == expected
    assert_sane_totals(clean_db)


# Wrong values written straight into the counter columns (a bug, a restore, a hand edit):
# each is its true value plus a positive amount, so none can be right by chance.
DRIFT_SQL = {
    "users": "UPDATE users SET friends_count = friends_count + 1 + id % 3, "
             "unread_messages_count = unread_messages_count + 2 RETURNING id::text",
    "conversation_members": "UPDATE conversation_members SET unread_count = unread_count + 4 RETURNING id",
    "comments": "UPDATE comments SET like_count = like_count + 5 RETURNING id::text",
    "groups": "UPDATE groups SET member_count = member_count + 1 RETURNING id::text",
}
DRIFTED_COLUMNS = {"users": ("friends_count", "unread_messages_count"), "conversation_members": ("unread_count",),
                   "comments": ("like_count",), "groups": ("member_count",)}


def inject_drift(engine) -> set[tuple[str, str, str]]:
    drifted = set()
    with engine.begin() as conn:
        for table, sql in DRIFT_SQL.items():
            for entity in conn.execute(text(sql)).scalars():
                drifted.update((table, column, entity) for column in DRIFTED_COLUMNS[table])
    return drifted


@pytest.mark.integration
def test_injected_drift_is_repaired_by_the_dirty_pass_and_the_full_sweep(clean_db):
    world = build_world(clean_db)
    run_concurrently(clean_db, world, ops=60)
    runs.run_dirty()
    with clean_db.connect() as conn:
        assert wrong_graph_counters(conn) == []

    drifted = inject_drift(clean_db)
    with clean_db.connect() as conn:
        wrong = wrong_graph_counters(conn)
    assert {(t, c, i) for t, c, i, _stored, _true in wrong} == drifted   # the oracle sees every injected value
    assert {"users", "conversation_members", "comments", "groups"} == {t for t, _c, _i in drifted}

    # The dirty pass repairs what is queued, and only that: queue the messages' and the
    # reactions' parents, as their triggers would after a write.
    queued = {"conversation_members", "comments"}
    with clean_db.begin() as conn:
        for table in queued:
            conn.execute(text(f"INSERT INTO counter_dirty (parent_table, parent_id) SELECT :t, id::text FROM {table}"),
                         {"t": table})
    dirty = runs.run_dirty()
    assert dirty.status == "finished"
    assert {(f.table, f.column, f.entity_id) for f in dirty.result.fixes} == {d for d in drifted if d[0] in queued}
    with clean_db.connect() as conn:
        assert {(t, c, i) for t, c, i, *_ in wrong_graph_counters(conn)} == {d for d in drifted if d[0] not in queued}

    # The full sweep finds the rest without any mark, in keyset chunks of 3 rows (so the
    # symmetric friends count and the text keys of conversation members cross chunk ends).
    sweep = runs.run_full_sweep(chunk_size=3)
    assert sweep.status == "finished" and sweep.chunks > len(DRIFT_SQL)
    with clean_db.connect() as conn:
        assert wrong_graph_counters(conn) == []
        ledger = {(f.table, f.column, f.entity_id): (f.stored, f.true) for f in rc.ledger(conn, sweep.run_id)}
        status = rc.run_status(conn, sweep.run_id)
    assert set(ledger) == {d for d in drifted if d[0] not in queued}
    assert all(stored > true for stored, true in ledger.values())
    assert status["status"] == "finished" and status["chunks_done"] == status["chunks_total"] == sweep.chunks
    assert_sane_totals(clean_db)


@pytest.mark.integration
def test_a_full_sweep_racing_the_writers_leaves_nothing_a_dirty_pass_cannot_finish(clean_db):
    """The sweep repairs under row locks while writers commit: whatever it recounted
    before a writer's commit, that writer's mark sends the parent to the next dirty pass."""
    world = build_world(clean_db)
    inject_drift(clean_db)   # on the empty counters: every parent starts wrong
    outcome = run_concurrently(clean_db, world, extra=lambda: runs.run_full_sweep(chunk_size=3), ops=60)
    assert outcome[-1].status == "finished"
    runs.run_dirty()
    with clean_db.connect() as conn:
        assert wrong_graph_counters(conn) == []
    assert_sane_totals(clean_db)
