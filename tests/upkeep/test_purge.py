"""The soft-delete purge (tasks/upkeep/purge.py) on real PostgreSQL: what is old enough goes for
good, what hangs off it cascades, counters are repaired by the engagement dirty path, the photo
variants leave the disk, and the hooks hear about it."""
from __future__ import annotations

import hashlib
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import text

from tasks.engagement.runs import run_dirty
from tasks.images import storage
from tasks.upkeep import jobs, purge
# The hand-written oracle of what each counter counts (not generated from the code's counter table).
from tests.engagement.conftest import TRUE_COUNT_SQL as TRUE_COUNTS

NOW = datetime(2025, 3, 10, 12, 0, tzinfo=timezone.utc)
OLD = NOW - timedelta(days=31)
RECENT = NOW - timedelta(days=29)


# --- building rows -----------------------------------------------------------------------

def user(conn, name: str, deleted_at: datetime | None = None) -> int:
    return conn.execute(text(
        "INSERT INTO users (email, username, hashed_password, deleted_at) VALUES (:e, :n, '!', :d) RETURNING id"),
        {"e": f"{name}@example.com", "n": name, "d": deleted_at}).scalar_one()


def post(conn, author: int, deleted_at: datetime | None = None) -> str:
    return conn.execute(text(
        "INSERT INTO posts (author_id, content, deleted_at) VALUES (:a, 'hello', :d) RETURNING id::text"),
        {"a": author, "d": deleted_at}).scalar_one()


def comment(conn, author: int, post_id: str, deleted_at: datetime | None = None, parent: str | None = None) -> str:
    return conn.execute(text(
        "INSERT INTO comments (author_id, post_id, parent_id, content, deleted_at) "
        "VALUES (:a, :p, :c, 'nice', :d) RETURNING id::text"),
        {"a": author, "p": post_id, "c": parent, "d": deleted_at}).scalar_one()


def like(conn, user_id: int, post_id: str) -> None:
    conn.execute(text("INSERT INTO likes (user_id, post_id) VALUES (:u, :p)"), {"u": user_id, "p": post_id})


def react(conn, user_id: int, post_id: str) -> None:
    conn.execute(text("INSERT INTO emoji_reactions (user_id, post_id, emoji_code) VALUES (:u, :p, 'heart')"),
                 {"u": user_id, "p": post_id})


def share(conn, user_id: int, post_id: str) -> None:
    conn.execute(text("INSERT INTO shares (user_id, post_id, platform) VALUES (:u, :p, 'internal')"),
                 {"u": user_id, "p": post_id})


def follow(conn, follower: int, followed: int) -> None:
    conn.execute(text("INSERT INTO follows (follower_id, followed_id) VALUES (:a, :b)"), {"a": follower, "b": followed})


def media_row(conn, *, purpose: str, user_id: int, post_id: str | None, filename: str | None) -> str:
    return conn.execute(text(
        "INSERT INTO media_files (user_id, post_id, purpose, dedupe_key, filename, original_name, storage_path, "
        "processing_status) VALUES (:u, :p, :purpose, :k, :f, 'x.jpg', :sp, 'COMPLETED') RETURNING id::text"),
        {"u": user_id, "p": post_id, "purpose": purpose, "k": hashlib.sha256(uuid.uuid4().bytes).hexdigest(),
         "f": filename, "sp": storage.FOLDERS[purpose]}).scalar_one()


def true_up_counters(conn) -> None:
    """Stored counters = true counts, then an empty dirty queue: what the purge marks is all there is."""
    for (table, column), truth in TRUE_COUNTS.items():
        conn.execute(text(f"UPDATE {table} p SET {column} = ({truth})"))
    conn.execute(text("DELETE FROM counter_dirty"))


def wrong_counters(engine) -> list[tuple]:
    wrong = []
    with engine.connect() as conn:
        for (table, column), truth in TRUE_COUNTS.items():
            wrong += [(table, column, *row) for row in conn.execute(text(
                f"SELECT p.id::text, p.{column}, ({truth}) FROM {table} p "
                f"WHERE p.{column} IS DISTINCT FROM ({truth})")).all()]
    return wrong


def scalar(engine, sql: str, **params):
    with engine.connect() as conn:
        return conn.execute(text(sql), params).scalar()


def exists(engine, table: str, id_) -> bool:
    cast = "integer" if table == "users" else "uuid"
    return scalar(engine, f"SELECT EXISTS (SELECT 1 FROM {table} WHERE id = CAST(:i AS {cast}))", i=str(id_))


def write_variants(purpose: str, base: str) -> list:
    paths = list(storage.variant_paths(purpose, base).values())
    paths[0].parent.mkdir(parents=True, exist_ok=True)
    for path in paths:
        path.write_bytes(b"\xff\xd8 jpeg")
    return paths


@pytest.fixture
def media_root(tmp_path, monkeypatch):
    root = tmp_path / "media"
    root.mkdir()
    monkeypatch.setenv("MEDIA_ROOT", str(root))
    return root


@pytest.fixture
def hook_calls():
    """A recording hook registered for the test and removed after it."""
    calls: list = []

    def record(kind, ids):
        calls.append((kind, list(ids)))

    purge.on_purged(record)
    yield calls
    purge.PURGE_HOOKS.remove(record)


# --- what is purged -------------------------------------------------------------------------

def test_purges_rows_soft_deleted_before_the_cutoff_only(fresh, monkeypatch):
    monkeypatch.delenv("PURGE_SOFT_DELETED_DAYS", raising=False)
    with fresh.begin() as conn:
        alive = user(conn, "alive")
        old_user, recent_user = user(conn, "old", OLD), user(conn, "recent", RECENT)
        kept_post = post(conn, alive)
        old_post, recent_post = post(conn, alive, OLD), post(conn, alive, RECENT)
        kept_comment = comment(conn, alive, kept_post)
        old_comment, recent_comment = comment(conn, alive, kept_post, OLD), comment(conn, alive, kept_post, RECENT)

    report = purge.purge(NOW)

    assert report["failed"] == []
    assert report["cutoff"] == (NOW - timedelta(days=30)).isoformat()
    assert {k: v["deleted"] for k, v in report["tables"].items()} == {"comments": 1, "posts": 1, "users": 1}
    for table, gone, kept in (("users", [old_user], [alive, recent_user]),
                              ("posts", [old_post], [kept_post, recent_post]),
                              ("comments", [old_comment], [kept_comment, recent_comment])):
        assert [exists(fresh, table, i) for i in gone] == [False] * len(gone), table
        assert [exists(fresh, table, i) for i in kept] == [True] * len(kept), table
    # Nothing left to do: a second run deletes nothing.
    assert {k: v["deleted"] for k, v in purge.purge(NOW)["tables"].items()} == {"comments": 0, "posts": 0, "users": 0}


def test_purge_days_override_and_the_job_records_its_run(fresh, monkeypatch):
    monkeypatch.setenv("PURGE_SOFT_DELETED_DAYS", "10")
    now = datetime.now(timezone.utc)
    with fresh.begin() as conn:
        alive = user(conn, "alive")
        eleven, nine = post(conn, alive, now - timedelta(days=11)), post(conn, alive, now - timedelta(days=9))
        old_user = user(conn, "old", now - timedelta(days=11))

    report = jobs.purge_soft_deleted()

    assert report["status"] == "ok"
    assert report["tables"]["posts"]["deleted"] == 1 and report["tables"]["users"]["deleted"] == 1
    assert not exists(fresh, "posts", eleven) and not exists(fresh, "users", old_user)
    assert exists(fresh, "posts", nine) and exists(fresh, "users", alive)
    with fresh.connect() as conn:
        runs = conn.execute(text("SELECT status, dry_run FROM upkeep_runs WHERE job = 'purge_soft_deleted'")).all()
    assert [tuple(r) for r in runs] == [("ok", False)]


def test_cascade_of_a_purged_post(fresh):
    with fresh.begin() as conn:
        author, fan = user(conn, "author"), user(conn, "fan")
        doomed, kept = post(conn, author, OLD), post(conn, author)
        for target in (doomed, kept):
            like(conn, fan, target)
            react(conn, fan, target)
            share(conn, fan, target)
            top = comment(conn, fan, target)
            comment(conn, author, target, parent=top)

    purge.purge(NOW)

    for table in ("likes", "emoji_reactions", "shares", "comments"):
        assert scalar(fresh, f"SELECT count(*) FROM {table} WHERE post_id = CAST(:p AS uuid)", p=doomed) == 0, table
        assert scalar(fresh, f"SELECT count(*) FROM {table} WHERE post_id = CAST(:p AS uuid)", p=kept) > 0, table
    assert exists(fresh, "users", author) and exists(fresh, "users", fan)


# --- counters, through the dirty path -----------------------------------------------------------

def test_purged_comment_is_recounted_by_the_dirty_pass(fresh):
    with fresh.begin() as conn:
        author = user(conn, "author")
        target = post(conn, author)
        comment(conn, author, target)
        comment(conn, author, target)
        doomed = comment(conn, author, target, OLD)
        comment(conn, author, target, parent=doomed)  # a reply: cascades with it
        true_up_counters(conn)
    assert scalar(fresh, "SELECT comments_count FROM posts WHERE id = CAST(:p AS uuid)", p=target) == 4

    assert purge.purge(NOW)["tables"]["comments"]["deleted"] == 1

    # The purge does not touch counters itself: it leaves the post marked dirty.
    assert scalar(fresh, "SELECT comments_count FROM posts WHERE id = CAST(:p AS uuid)", p=target) == 4
    assert scalar(fresh, "SELECT count(*) FROM counter_dirty WHERE parent_table = 'posts' AND parent_id = :p",
                  p=target) >= 1

    report = run_dirty(budget_seconds=30)

    assert report.result.rows_fixed >= 1
    assert scalar(fresh, "SELECT comments_count FROM posts WHERE id = CAST(:p AS uuid)", p=target) == 2
    assert wrong_counters(fresh) == []


def test_purged_user_likes_follows_and_comments_are_recounted(fresh):
    with fresh.begin() as conn:
        owner, friend = user(conn, "owner"), user(conn, "friend")
        leaver = user(conn, "leaver", OLD)
        target = post(conn, owner)
        like(conn, friend, target)
        like(conn, leaver, target)
        react(conn, leaver, target)
        share(conn, leaver, target)
        comment(conn, leaver, target)
        follow(conn, leaver, owner)
        follow(conn, owner, leaver)
        follow(conn, friend, owner)
        true_up_counters(conn)
    before = scalar(fresh, "SELECT ARRAY[hearts_count, reactions_count, shares_count, comments_count] FROM posts "
                           "WHERE id = CAST(:p AS uuid)", p=target)
    assert before == [2, 1, 1, 1]

    assert purge.purge(NOW)["tables"]["users"]["deleted"] == 1
    assert not exists(fresh, "users", leaver)
    assert scalar(fresh, "SELECT hearts_count FROM posts WHERE id = CAST(:p AS uuid)", p=target) == 2  # stale yet

    run_dirty(budget_seconds=30)

    assert scalar(fresh, "SELECT ARRAY[hearts_count, reactions_count, shares_count, comments_count] FROM posts "
                         "WHERE id = CAST(:p AS uuid)", p=target) == [1, 0, 0, 0]
    assert scalar(fresh, "SELECT ARRAY[followers_count, following_count] FROM users WHERE id = :u",
                  u=owner) == [1, 0]
    assert wrong_counters(fresh) == []


# --- photo variants on disk ----------------------------------------------------------------------

def test_variant_files_of_purged_posts_and_users_are_deleted(fresh, media_root):
    with fresh.begin() as conn:
        author = user(conn, "author")
        leaver = user(conn, "leaver", OLD)
        doomed, kept = post(conn, author, OLD), post(conn, author)
        leavers_post = post(conn, leaver)  # not soft-deleted itself: goes with its author
        bases = {}
        for name, post_id, owner in (("doomed", doomed, author), ("kept", kept, author),
                                     ("leavers_post", leavers_post, leaver)):
            bases[name] = storage.variant_base("post_photo", post_id, name)
            media_row(conn, purpose="post_photo", user_id=owner, post_id=post_id, filename=bases[name])
        bases["leaver_profile"] = storage.variant_base("profile_photo", str(leaver), "p")
        media_row(conn, purpose="profile_photo", user_id=leaver, post_id=None, filename=bases["leaver_profile"])
        bases["author_profile"] = storage.variant_base("profile_photo", str(author), "p")
        media_row(conn, purpose="profile_photo", user_id=author, post_id=None, filename=bases["author_profile"])
    files = {name: write_variants("profile_photo" if name.endswith("profile") else "post_photo", base)
             for name, base in bases.items()}
    assert all(p.is_file() for paths in files.values() for p in paths)

    report = purge.purge(NOW)

    assert report["tables"]["posts"] == {"deleted": 1, "files_deleted": 4}
    assert report["tables"]["users"] == {"deleted": 1, "files_deleted": 8}
    for name in ("doomed", "leavers_post", "leaver_profile"):
        assert [p.exists() for p in files[name]] == [False] * 4, name
    for name in ("kept", "author_profile"):
        assert [p.exists() for p in files[name]] == [True] * 4, name
    assert scalar(fresh, "SELECT count(*) FROM media_files") == 2


def test_a_malicious_stored_name_is_never_a_path(fresh, media_root, caplog):
    # Where '../../etc/x' would lead from MEDIA_ROOT/post_photos/: files that must survive.
    decoys = [media_root.parent / "etc" / f"x_{size}.jpg" for size in ("thumbnail", "small", "medium", "large")]
    decoys[0].parent.mkdir()
    for decoy in decoys:
        decoy.write_bytes(b"precious")
    with fresh.begin() as conn:
        author = user(conn, "author")
        doomed = post(conn, author, OLD)
        media_row(conn, purpose="post_photo", user_id=author, post_id=doomed, filename="../../etc/x")
        good = storage.variant_base("post_photo", doomed, "good")
        media_row(conn, purpose="post_photo", user_id=author, post_id=doomed, filename=good)
    good_files = write_variants("post_photo", good)

    report = purge.purge(NOW)

    assert report["failed"] == []
    assert report["tables"]["posts"] == {"deleted": 1, "files_deleted": 4}
    assert not exists(fresh, "posts", doomed)
    assert all(decoy.read_bytes() == b"precious" for decoy in decoys)
    assert not any(p.exists() for p in good_files)
    assert any("does not trust" in r.getMessage() for r in caplog.records)


# --- hooks -----------------------------------------------------------------------------------

def test_hooks_hear_each_committed_batch_and_a_failing_hook_stops_nothing(fresh, hook_calls):
    seen_in_db: list = []
    failing_calls: list = []

    def failing(kind, ids):
        failing_calls.append(kind)
        raise RuntimeError("search index is down")

    def look(kind, ids):
        # After the commit: another connection no longer sees the rows.
        if kind == "posts":
            seen_in_db.extend(exists(fresh, "posts", i) for i in ids)

    purge.PURGE_HOOKS.insert(0, failing)
    purge.on_purged(look)
    try:
        with fresh.begin() as conn:
            author = user(conn, "author")
            doomed = [post(conn, author, OLD) for _ in range(2)]
            old_comment = comment(conn, author, post(conn, author), OLD)
            old_user = user(conn, "old", OLD)
        report = purge.purge(NOW)
    finally:
        purge.PURGE_HOOKS.remove(failing)
        purge.PURGE_HOOKS.remove(look)

    assert report["failed"] == []
    assert {k: v["deleted"] for k, v in report["tables"].items()} == {"comments": 1, "posts": 2, "users": 1}
    assert [kind for kind, _ids in hook_calls] == ["comments", "posts", "users"]
    calls = dict(hook_calls)
    assert calls["comments"] == [old_comment]
    assert sorted(calls["posts"]) == sorted(doomed)
    assert calls["users"] == [old_user]
    assert seen_in_db == [False, False]
    assert failing_calls == ["comments", "posts", "users"]  # it ran first each time, and the others still ran


def test_small_batches_purge_everything(fresh, monkeypatch, hook_calls):
    monkeypatch.setenv("UPKEEP_BATCH_ROWS", "2")
    with fresh.begin() as conn:
        author = user(conn, "author")
        doomed = [post(conn, author, OLD - timedelta(minutes=i)) for i in range(5)]
        kept = post(conn, author)

    report = purge.purge(NOW)

    assert report["tables"]["posts"]["deleted"] == 5
    assert [len(ids) for kind, ids in hook_calls if kind == "posts"] == [2, 2, 1]
    assert sorted(i for kind, ids in hook_calls if kind == "posts" for i in ids) == sorted(doomed)
    assert scalar(fresh, "SELECT array_agg(id::text) FROM posts") == [kept]


def test_dry_run_deletes_nothing(fresh, media_root, hook_calls):
    now = datetime.now(timezone.utc)  # the job below purges as of now
    with fresh.begin() as conn:
        author = user(conn, "author")
        old_user = user(conn, "old", now - timedelta(days=31))
        doomed = [post(conn, author, now - timedelta(days=31)) for _ in range(3)]
        post(conn, author, now - timedelta(days=29))
        comment(conn, author, doomed[0], now - timedelta(days=31))
        base = storage.variant_base("post_photo", doomed[0], "x")
        media_row(conn, purpose="post_photo", user_id=author, post_id=doomed[0], filename=base)
    files = write_variants("post_photo", base)
    counts = {t: scalar(fresh, f"SELECT count(*) FROM {t}") for t in ("users", "posts", "comments", "media_files")}

    report = purge.purge(now, dry_run=True)

    assert report["tables"] == {"comments": {"would_delete": 1}, "posts": {"would_delete": 3},
                                "users": {"would_delete": 1}}
    assert {t: scalar(fresh, f"SELECT count(*) FROM {t}") for t in counts} == counts
    assert exists(fresh, "users", old_user)
    assert all(p.is_file() for p in files)
    assert hook_calls == []

    recorded = jobs.purge_soft_deleted(dry_run=True)
    assert recorded["tables"]["posts"] == {"would_delete": 3}
    assert {t: scalar(fresh, f"SELECT count(*) FROM {t}") for t in counts} == counts
    assert scalar(fresh, "SELECT bool_and(dry_run) FROM upkeep_runs WHERE job = 'purge_soft_deleted'") is True
