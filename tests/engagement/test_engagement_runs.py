"""Runs with committed data and real concurrent connections: dirty path, sweeps, CLI."""
from __future__ import annotations

import random
import threading

import pytest

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from tasks.engagement import reconcile as rc
from tasks.engagement import runs
from tests.engagement.conftest import (add_posts, add_users, build_graph, graph_counts_by_hand, stored_counts,
                                      wrong_counters)
from tests.waiting import backend_pid, blocked_by, wait_for

STATE_TABLES = ("posts", "users", "comments", "counter_dirty", "counter_drift", "counter_runs", "counter_run_chunks")


def snapshot(engine) -> dict[str, str]:
    with engine.connect() as conn:
        return {t: conn.execute(text(f"SELECT md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) "
                                     f"FROM {t} x")).scalar() for t in STATE_TABLES}


def committed_graph(engine) -> dict:
    with engine.begin() as conn:
        return build_graph(conn)


def exact(engine) -> list:
    with engine.connect() as conn:
        return wrong_counters(conn)


def inject(engine, sql: str, **params) -> None:
    with engine.begin() as conn:
        conn.execute(text(sql), params)


def dirty_count(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(text("SELECT count(*) FROM counter_dirty")).scalar()


def test_dirty_pass_repairs_what_the_triggers_marked_and_records_the_run(clean_db):
    graph = committed_graph(clean_db)  # counters all 0: every source insert marked its parent
    drifted = exact(clean_db)
    assert drifted and dirty_count(clean_db) > 0
    report = runs.run_dirty()
    assert exact(clean_db) == [] and dirty_count(clean_db) == 0
    with clean_db.connect() as conn:
        assert stored_counts(conn, graph) == graph_counts_by_hand(graph)
    with clean_db.connect() as conn:
        run = rc.run_status(conn, report.run_id)
        ledger = conn.execute(text("SELECT table_name, column_name, entity_id, stored_value, true_value "
                                   "FROM counter_drift WHERE run_id = :r"), {"r": report.run_id}).all()
    assert run["mode"] == "dirty" and run["status"] == "finished"
    assert run["duration_seconds"] == pytest.approx((run["finished_at"] - run["started_at"]).total_seconds())
    assert run["finished_at"] >= run["started_at"]
    assert run["rows_fixed"] == len({(t, i) for t, _c, i, _s, _v in drifted})
    assert run["max_drift"] == max(v - s for *_x, s, v in drifted)
    assert sorted(tuple(r) for r in ledger) == sorted(drifted)
    assert runs.run_dirty().run_id is None  # an empty pass records nothing


def test_locked_parent_is_skipped_and_its_mark_survives(clean_db):
    graph = committed_graph(clean_db)
    held = graph["posts"][1]
    holder = clean_db.connect()
    tx = holder.begin()
    holder.execute(text("SELECT 1 FROM posts WHERE id = :p FOR NO KEY UPDATE"), {"p": held})
    try:
        report = runs.run_dirty()
        assert held in report.result.skipped
        with clean_db.connect() as conn:
            left = conn.execute(text("SELECT DISTINCT parent_id FROM counter_dirty")).scalars().all()
        assert left == [held]
        assert {w[2] for w in exact(clean_db)} == {held}
        refreshed = runs.refresh("posts", [held])  # the forced refresh skips too, and queues it
        assert refreshed.result.skipped == [held]
    finally:
        tx.rollback()
        holder.close()
    runs.run_dirty()
    assert exact(clean_db) == [] and dirty_count(clean_db) == 0


def test_a_batch_deletes_exactly_the_marks_it_read(clean_db):
    """Marks beyond what a batch read (here: newer marks of the very same parents, as a
    write committed during the pass would add) survive it."""
    from sqlalchemy.orm import Session

    with clean_db.begin() as conn:
        a, b = add_users(conn, 2)
        conn.execute(text("DELETE FROM counter_dirty"))
        conn.execute(text("INSERT INTO follows (follower_id, followed_id) VALUES (:a, :b)"), {"a": a, "b": b})
        conn.execute(text("UPDATE follows SET status = 'pending'"))
        read_first = conn.execute(text("SELECT id FROM counter_dirty ORDER BY id LIMIT 2")).scalars().all()
    with clean_db.begin() as conn:
        session = Session(bind=conn)
        batch = rc.reconcile_dirty_batch(session, "users", rc.start_run(session, "dirty"), 0, limit=2)
        assert batch.rows_read == 2 and batch.last_dirty_id == read_first[-1]
    with clean_db.connect() as conn:
        left = conn.execute(text("SELECT id, parent_id FROM counter_dirty ORDER BY id")).all()
    assert [i for i, _p in left if i in read_first] == []
    assert sorted(p for _i, p in left) == sorted([str(a), str(b)])


@pytest.mark.parametrize("connections", [1, 3])
def test_full_sweep_repairs_writes_the_triggers_never_saw(clean_db, connections):
    graph = committed_graph(clean_db)
    runs.run_dirty()
    assert exact(clean_db) == []
    with clean_db.begin() as conn:
        # An import with triggers off (replication role), then a manual edit.
        conn.execute(text("SET LOCAL session_replication_role = replica"))
        conn.execute(text("INSERT INTO likes (user_id, post_id) SELECT u, :p FROM unnest(CAST(:us AS integer[])) u "
                          "ON CONFLICT DO NOTHING"), {"p": graph["posts"][5], "us": graph["users"]})
        conn.execute(text("UPDATE users SET posts_count = posts_count + 7 WHERE id = :u"), {"u": graph["users"][0]})
    assert dirty_count(clean_db) == 0 and len(exact(clean_db)) == 2
    report = runs.run_full_sweep(chunk_size=2, connections=connections)
    assert exact(clean_db) == []
    with clean_db.connect() as conn:
        run = rc.run_status(conn, report.run_id)
    assert run["status"] == "finished" and run["chunks_done"] == run["chunks_total"] == report.chunks > 3
    assert run["rows_fixed"] == 2 and run["max_drift"] == 7
    with clean_db.connect() as conn:
        counts = dict(conn.execute(text("SELECT 'posts', count(*) FROM posts UNION ALL SELECT 'users', count(*) "
                                        "FROM users UNION ALL SELECT 'comments', count(*) FROM comments")).all())
    assert run["rows_checked"] == sum(counts.values())


def test_two_concurrent_sweeps_one_runs_the_other_exits_cleanly(clean_db):
    committed_graph(clean_db)
    barrier = threading.Barrier(2)
    claims = []

    def claim():
        barrier.wait()
        claims.append(runs.start_full_sweep(chunk_size=2))

    threads = [threading.Thread(target=claim) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [run_id for run_id, _chunks in claims if run_id]
    assert len(winners) == 1 and sorted(bool(c) for _r, c in claims) == [False, True]
    # While its chunks are still outstanding, a manual sweep is refused too.
    assert runs.run_full_sweep().status == "skipped"
    # And anyone holding the claim lock makes a sweep skip rather than wait.
    holder = clean_db.connect()
    tx = holder.begin()
    holder.execute(text("UPDATE counter_runs SET status = 'finished'"))
    holder.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"), {"k": rc.SWEEP_LOCK_NAMESPACE})
    try:
        assert runs.start_full_sweep() == (None, [])
    finally:
        tx.commit()
        holder.close()
    run_id, chunks = runs.start_full_sweep()
    with clean_db.connect() as conn:
        fresh = rc.run_status(conn, run_id)
    assert winners[0] != run_id and fresh["status"] == "running" and fresh["chunks_total"] == len(chunks) > 0


def test_a_stale_sweep_is_marked_failed_and_replaced(clean_db):
    run_id, _ = runs.start_full_sweep()
    assert runs.start_full_sweep()[0] is None
    inject(clean_db, "UPDATE counter_runs SET started_at = now() - interval '7 hours' WHERE id = :r", r=run_id)
    assert runs.start_full_sweep()[0] not in (None, run_id)
    with clean_db.connect() as conn:
        assert rc.run_status(conn, run_id)["status"] == "failed"


def test_cli_dry_run_writes_nothing(clean_db, capsys):
    from workers.cli import main

    graph = committed_graph(clean_db)
    inject(clean_db, "UPDATE posts SET hearts_count = hearts_count + 5 WHERE id = :p", p=graph["posts"][2])
    before = snapshot(clean_db)
    assert main(["reconcile", "--dry-run"]) == 0
    assert main(["reconcile", "--full", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert snapshot(clean_db) == before
    assert "dry run: nothing is written" in out and "would fix" in out
    assert graph["posts"][2] in out and "hearts_count" in out and "followers_count" in out


def test_cli_full_sweep_shows_progress_and_a_drift_table(clean_db, capsys, monkeypatch):
    from workers.cli import main

    graph = committed_graph(clean_db)
    runs.run_dirty()
    inject(clean_db, "UPDATE posts SET shares_count = shares_count + 4 WHERE id = :p", p=graph["posts"][3])
    monkeypatch.setattr(rc, "SWEEP_CHUNK", 2)
    assert main(["reconcile", "--full"]) == 0
    out = capsys.readouterr().out
    assert "chunks" in out and "[" + "#" * 30 + "]" in out
    assert "shares_count" in out and graph["posts"][3] in out and "fixed 1" in out
    assert exact(clean_db) == []


def test_counters_are_exact_after_concurrent_writers_sweeps_and_dirty_passes(clean_db):
    """2 writer connections like/unlike and follow/unfollow (maintaining the counters
    in their own transactions, as an inline web tier would) while a full sweep and the
    dirty path run on other connections. No recount may undo a write: every counter is
    exact the moment the writers stop, before any further pass."""
    with clean_db.begin() as conn:
        users = add_users(conn, 12)
        posts = add_posts(conn, users[:4], per_author=2)
    runs.run_dirty()
    # Drift for the reconcilers to find while writers run.
    inject(clean_db, "UPDATE posts SET hearts_count = hearts_count + 3")
    inject(clean_db, "UPDATE users SET followers_count = followers_count + 2")
    stop = threading.Event()
    errors: list[BaseException] = []
    writes = [0, 0]

    def writer(index: int) -> None:
        rnd = random.Random(index)
        mine = users[index * 6:(index + 1) * 6]  # each writer acts for its own users
        while not stop.is_set():
            try:
                with clean_db.begin() as conn:
                    if rnd.random() < 0.5:
                        user, post = rnd.choice(mine), rnd.choice(posts)
                        added = conn.execute(text("INSERT INTO likes (user_id, post_id) VALUES (:u, :p) "
                                                  "ON CONFLICT DO NOTHING"), {"u": user, "p": post}).rowcount
                        removed = 0 if added else conn.execute(text(
                            "DELETE FROM likes WHERE user_id = :u AND post_id = :p"), {"u": user, "p": post}).rowcount
                        conn.execute(text("UPDATE posts SET hearts_count = hearts_count + :d WHERE id = :p"),
                                     {"d": added - removed, "p": post})
                    else:
                        follower, followed = rnd.choice(mine), rnd.choice(users)
                        if follower == followed:
                            continue
                        before = conn.execute(text("SELECT status FROM follows WHERE follower_id = :a AND "
                                                   "followed_id = :b"), {"a": follower, "b": followed}).scalar()
                        if before is None:
                            conn.execute(text("INSERT INTO follows (follower_id, followed_id) VALUES (:a, :b)"),
                                         {"a": follower, "b": followed})
                            after = "active"
                        elif rnd.random() < 0.3:
                            conn.execute(text("DELETE FROM follows WHERE follower_id = :a AND followed_id = :b"),
                                         {"a": follower, "b": followed})
                            after = None
                        else:
                            after = "pending" if before == "active" else "active"
                            conn.execute(text("UPDATE follows SET status = :s WHERE follower_id = :a AND "
                                              "followed_id = :b"), {"s": after, "a": follower, "b": followed})
                        delta = (after == "active") - (before == "active")
                        if delta:
                            # Lock order by id: two writers never wait on each other in a cycle.
                            for uid, column in sorted([(follower, "following_count"), (followed, "followers_count")]):
                                conn.execute(text(f"UPDATE users SET {column} = {column} + :d WHERE id = :u"),
                                             {"d": delta, "u": uid})
                writes[index] += 1
            except DBAPIError as exc:  # a writer's own lock timeout would be retried by the web tier
                if "deadlock" not in str(exc) and "lock timeout" not in str(exc):
                    errors.append(exc)
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

    passes = {"sweep": 0, "dirty": 0}

    def reconciler(kind: str) -> None:
        while not stop.is_set():
            try:
                if kind == "sweep":
                    runs.run_full_sweep(chunk_size=3)
                else:
                    runs.run_dirty(budget_seconds=0.5, limit=5)
                passes[kind] += 1
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)
                return

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(2)]
    threads += [threading.Thread(target=reconciler, args=(k,)) for k in ("sweep", "dirty")]
    for thread in threads:
        thread.start()
    # Run until each writer has committed 30 times and the dirty path has passed 3 times
    # after the first full sweep finished: counted events, so a slow machine only takes longer.
    dirty_at_first_sweep = []

    def enough() -> bool:
        if not dirty_at_first_sweep and passes["sweep"] >= 1:
            dirty_at_first_sweep.append(passes["dirty"])
        return bool(errors) or (min(writes) >= 30 and bool(dirty_at_first_sweep)
                                and passes["dirty"] >= dirty_at_first_sweep[0] + 3)

    try:
        wait_for(enough, timeout=180, what="30 writes each, a full sweep and 3 dirty passes after it")
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    assert [t for t in threads if t.is_alive()] == []
    assert errors == []
    assert min(writes) >= 30 and passes["sweep"] >= 1 and passes["dirty"] >= 3
    assert exact(clean_db) == []
    runs.run_dirty()
    assert exact(clean_db) == [] and dirty_count(clean_db) == 0


def _like_and_increment(conn, user: int, post: str) -> None:
    conn.execute(text("INSERT INTO likes (user_id, post_id) VALUES (:u, :p)"), {"u": user, "p": post})
    conn.execute(text("UPDATE posts SET hearts_count = hearts_count + 1 WHERE id = :p"), {"p": post})


def test_a_recount_skips_a_row_a_writer_holds_instead_of_undoing_its_write(clean_db):
    """The writer holds the post (inline +1, not committed) while a recount of a drifted
    value runs: the recount must skip it, not wait and then write a count that misses the
    writer's like."""
    with clean_db.begin() as conn:
        (user, other) = add_users(conn, 2)
        (post,) = add_posts(conn, [user])
        conn.execute(text("INSERT INTO likes (user_id, post_id) VALUES (:u, :p)"), {"u": user, "p": post})
    runs.run_dirty()
    inject(clean_db, "UPDATE posts SET hearts_count = 5 WHERE id = :p", p=post)  # true: 1
    writer = clean_db.connect()
    tx = writer.begin()
    _like_and_increment(writer, other, post)
    writer_pid = backend_pid(writer)
    outcome, done = {}, threading.Event()

    def recount_now() -> None:
        try:
            outcome["report"] = runs.refresh("posts", [post])
        finally:
            done.set()

    recount = threading.Thread(target=recount_now)
    recount.start()
    try:
        waiting = blocked_by(clean_db, writer_pid, done)   # the recount ends, or it waits on the writer
    finally:
        tx.commit()
        writer.close()
        recount.join()
    assert waiting is None, f"the recount waited for the writer: {waiting}"
    assert outcome["report"].result.skipped == [post]
    with clean_db.connect() as conn:
        assert conn.execute(text("SELECT hearts_count FROM posts WHERE id = :p"), {"p": post}).scalar() == 6
    runs.run_dirty()  # the skipped id was queued
    assert exact(clean_db) == []


def test_a_writer_arriving_during_a_recount_is_not_blocked_from_inserting_and_its_write_survives(clean_db):
    """The recount locks first: the writer's INSERT (FOR KEY SHARE on the post through the
    foreign key) still goes through at once; its counter UPDATE waits for the recount's
    commit and then adds to the recounted value."""
    from sqlalchemy.orm import Session

    with clean_db.begin() as conn:
        (user, other) = add_users(conn, 2)
        (post,) = add_posts(conn, [user])
        conn.execute(text("INSERT INTO likes (user_id, post_id) VALUES (:u, :p)"), {"u": user, "p": post})
    runs.run_dirty()
    inject(clean_db, "UPDATE posts SET hearts_count = 9 WHERE id = :p", p=post)  # true: 1
    reconciler = clean_db.connect()
    rtx = reconciler.begin()
    session = Session(bind=reconciler)
    result = rc.repair_ids(session, "posts", [post], rc.start_run(session, "refresh"))
    assert [(f.stored, f.true) for f in result.fixes] == [(9, 1)]
    reconciler_pid = backend_pid(reconciler)
    inserted, done = threading.Event(), threading.Event()

    def write() -> None:
        try:
            with clean_db.begin() as conn:
                conn.execute(text("INSERT INTO likes (user_id, post_id) VALUES (:u, :p)"), {"u": other, "p": post})
                inserted.set()
                conn.execute(text("UPDATE posts SET hearts_count = hearts_count + 1 WHERE id = :p"), {"p": post})
        finally:
            done.set()

    writer = threading.Thread(target=write)
    writer.start()
    try:
        waiting = blocked_by(clean_db, reconciler_pid, done)
        inserted_while_held = inserted.is_set()
    finally:
        rtx.commit()
        reconciler.close()
        writer.join()
    # Its counter UPDATE waits for our row lock, but its INSERT already went through.
    assert (waiting or "").startswith("UPDATE posts SET hearts_count"), waiting
    assert inserted_while_held
    with clean_db.connect() as conn:
        assert conn.execute(text("SELECT hearts_count FROM posts WHERE id = :p"), {"p": post}).scalar() == 2
    assert exact(clean_db) == []


def test_marks_of_deleted_parents_are_cleared_not_retried_forever(clean_db):
    graph = committed_graph(clean_db)
    runs.run_dirty()
    gone = graph["posts"][4]
    inject(clean_db, "DELETE FROM posts WHERE id = :p", p=gone)  # cascades: likes, shares... mark it
    with clean_db.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM counter_dirty WHERE parent_id = :p"), {"p": gone}).scalar() > 0
    report = runs.run_dirty()
    assert report.result.skipped == [] and dirty_count(clean_db) == 0
    assert runs.refresh("posts", [gone]).result.skipped == [] and dirty_count(clean_db) == 0
    assert exact(clean_db) == []
