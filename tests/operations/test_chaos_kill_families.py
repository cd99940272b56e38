"""SIGKILL pool processes in the middle of image and notification tasks (issue 7, chaos item 1).

Real data (users, posts, likes, upload files), a real prefork worker on the
images and notifications queues, and real SIGKILLs. To be sure every kill lands
*mid-task*, the test holds the very advisory locks the tasks take (the image
subject lock taken in ``service.finish`` after the photo was rendered, and the
notification batch-key lock taken by ``load_events``) in a transaction of its
own: while it holds them no task can finish, so any task the worker reports as
active is in flight when its process is killed (its media_files row is already
PROCESSING, its database connection mid-transaction). Then the gates open,
a couple of unaimed kills hit whatever runs, and every effect is counted:
one media_files row per upload, four variant files per photo and no other file,
one notification batch with one child per liker.
"""
from __future__ import annotations

import random
import time
from pathlib import Path

import pytest
import redis
from sqlalchemy import select, text

from db.models import Like, MediaFile, Notification, Post, ProcessingStatus, User
from db.session import session_scope
from tasks.images import storage
from tasks.notifications.batching import lock_name
from tests.images import corpus
from tests.operations.chaos import Figures, redeliveries
from tests.operations.conftest import dead_letter_count, wait_until
from tests.operations.procs import children, kill

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

MAX_KILLS_PER_TASK = 2  # stay well below the poison-pill limit (5 deliveries)


def build_world(media: Path, likers: int, profiles: int, post_photos: int) -> dict:
    """Users, posts and likes committed for the worker to read, and the upload files."""
    tag = str(time.monotonic_ns())[-8:]
    with session_scope() as session:
        users = [User(email=f"c{i}_{tag}@example.com", username=f"c{i}_{tag}", hashed_password="!")
                 for i in range(1 + likers)]
        session.add_all(users)
        session.flush()
        author, liker_ids = users[0].id, [u.id for u in users[1:]]
        liked = Post(author_id=author, content="liked by everyone")
        photo_posts = [Post(author_id=liker_ids[i % likers], content=f"photo {i}", post_type="photo")
                       for i in range(post_photos)]
        session.add_all([liked, *photo_posts])
        session.flush()
        likes = [Like(user_id=uid, post_id=liked.id) for uid in liker_ids]
        session.add_all(likes)
        session.flush()
        world = {"author": author, "liked_post": liked.id, "like_ids": [like.id for like in likes],
                 "likers": liker_ids, "photo_posts": [p.id for p in photo_posts]}
    uploads = media / "uploads"
    uploads.mkdir(parents=True, exist_ok=True)
    world["profile_uploads"] = {}
    for uid in liker_ids[:profiles]:
        (uploads / f"profile_{uid}.jpg").write_bytes(corpus.photo_jpeg(800, 600))
        world["profile_uploads"][uid] = f"profile_{uid}.jpg"
    world["post_uploads"] = {}
    for i, pid in enumerate(world["photo_posts"]):
        (uploads / f"post_{i}.webp").write_bytes(corpus.save(corpus.photo_like(900, 700), "WEBP", quality=80))
        world["post_uploads"][pid] = f"post_{i}.webp"
    return world


def gate_names(world: dict) -> list[str]:
    """The advisory-lock names the tasks of this world take (see the module docstring)."""
    names = [f"images.subject:profile_photo:{uid}" for uid in world["profile_uploads"]]
    names += [f"images.subject:post_photo:{pid}" for pid in world["post_uploads"]]
    names.append(lock_name(world["author"], f"post_interaction:post:{world['liked_post']}"))
    return names


def workload(world: dict, twice_every: int) -> list[tuple[str, list]]:
    """Image and like tasks interleaved; every ``twice_every``-th one is sent a second time too."""
    images = [("images.process_profile_photo", [uid, path]) for uid, path in world["profile_uploads"].items()]
    images += [("images.process_post_photo", [pid, path]) for pid, path in world["post_uploads"].items()]
    likes = [("notifications.record", ["like", like_id]) for like_id in world["like_ids"]]
    mixed = []
    while images or likes:
        if images:
            mixed.append(images.pop(0))
        if likes:
            mixed.append(likes.pop(0))
    return mixed + mixed[::twice_every]


def active_tasks(inspector, pool: set[int]) -> dict[int, dict]:
    """pool pid -> the task it runs, as the worker reports it."""
    active = inspector.active() or {}
    return {task["worker_pid"]: task for tasks in active.values() for task in tasks
            if task.get("worker_pid") in pool}


def family_chaos(isolated, engine, media: Path, tmp_path, *, kills: int, likers: int, profiles: int,
                 post_photos: int, name: str) -> tuple[Figures, dict]:
    world = build_world(media, likers, profiles, post_photos)
    gate = engine.connect()
    transaction = gate.begin()
    gate.execute(text("SELECT count(pg_advisory_xact_lock(hashtextextended(k, 0))) FROM unnest(CAST(:k AS text[])) k"),
                 {"k": gate_names(world)})
    worker = isolated.start_worker("families", ["images", "notifications"], concurrency=2,
                                   extra_env={"MEDIA_ROOT": str(media)}, log_path=tmp_path / "worker.log")
    plan = workload(world, twice_every=3)
    results = [isolated.app.send_task(task, args=args) for task, args in plan]
    inspector = isolated.app.control.inspect(timeout=1.0, limit=1)
    rng = random.Random(11)
    killed_pids: set[int] = set()
    kills_per_task: dict[str, int] = {}
    killed = {"images": 0, "notifications": 0}
    recoveries: list[float] = []

    def busy(want: str | None = None) -> dict[int, dict]:
        pool = set(children(worker.pid)) - killed_pids
        found = {pid: task for pid, task in active_tasks(inspector, pool).items()
                 if kills_per_task.get(task["id"], 0) < MAX_KILLS_PER_TASK}
        preferred = {pid: task for pid, task in found.items() if want and task["name"].startswith(want)}
        return preferred or found

    def kill_one(candidates: dict[int, dict]) -> None:
        pid = rng.choice(sorted(candidates))
        task = candidates[pid]
        kill(pid)
        killed_pids.add(pid)
        kills_per_task[task["id"]] = kills_per_task.get(task["id"], 0) + 1
        killed[task["name"].split(".")[0]] += 1

    # Gated kills: no task can finish while the gates are shut, so each one is cut off mid-task.
    try:
        for i in range(kills):
            want = "images" if i % 2 == 0 else "notifications"
            candidates = wait_until(lambda: busy(want), timeout=30, interval=0.05, what="a pool process mid-task")
            killed_at = time.monotonic()
            kill_one(candidates)
            # Recovery: the worker replaced the process and runs a task again.
            wait_until(lambda: busy(), timeout=60, interval=0.05, what="a new pool process at work")
            recoveries.append(time.monotonic() - killed_at)
        assert not any(r.ready() for r in results), "a task finished behind a shut gate"
    finally:
        transaction.rollback()
        gate.close()
    released_at = time.monotonic()

    # Unaimed kills while everything drains: wherever they land (or just after a task).
    unaimed = 0
    for _ in range(2):
        candidates = busy()
        if not candidates or all(r.ready() for r in results):
            break
        kill_one(candidates)
        unaimed += 1
        time.sleep(0.3)
    outcomes = [r.get(timeout=120) for r in results]
    settle_s = time.monotonic() - released_at
    assert worker.poll() is None

    figures = Figures(name, sent=len(results), completed=sum(r.successful() for r in results),
                      duplicated=redeliveries(redis.Redis.from_url(isolated.broker_url), [r.id for r in results]),
                      recovery_s=max(recoveries) if recoveries else None,
                      extra={"kills": len(recoveries) + unaimed, "mid_task_kills": len(recoveries),
                             "killed_images": killed["images"], "killed_notifications": killed["notifications"],
                             "sent_twice": len(plan) - len({(task, tuple(args)) for task, args in plan}),
                             "drain_s": round(settle_s, 1)})
    figures.lost = figures.sent - figures.completed
    return figures, {"world": world, "outcomes": outcomes, "plan": plan, "mid_task_kills": len(recoveries)}


def assert_effects_exactly_once(engine, media: Path, world: dict) -> dict:
    """Rows, files and counts, each exactly once. Returns the effect counts."""
    with session_scope() as session:
        rows = session.scalars(select(MediaFile)).all()
        by_source = {}
        for row in rows:
            by_source.setdefault((row.purpose, row.original_name), []).append(row)
        expected = {("profile_photo", p) for p in world["profile_uploads"].values()}
        expected |= {("post_photo", p) for p in world["post_uploads"].values()}
        assert set(by_source) == expected
        assert all(len(found) == 1 for found in by_source.values()), "an upload got two media_files rows"
        assert {row.processing_status for row in rows} == {ProcessingStatus.COMPLETED}

        wanted_files = {"profile_photos": set(), "post_photos": set()}
        for row in rows:
            wanted_files[storage.FOLDERS[row.purpose]] |= set(storage.variant_names(row.filename).values())
        for folder, names in wanted_files.items():
            assert len(names) == 4 * sum(1 for r in rows if storage.FOLDERS[r.purpose] == folder)
            present = {p.name for p in (media / folder).iterdir()}
            assert present == names, f"{folder}: missing {names - present}, orphans {present - names}"

        prefix = storage.media_url()
        for uid, path in world["profile_uploads"].items():
            url = session.get(User, uid).profile_image_url
            row = by_source[("profile_photo", path)][0]
            assert url == storage.variant_url("profile_photo", row.filename)
            assert (media / url.removeprefix(prefix + "/")).is_file()
        for pid, path in world["post_uploads"].items():
            url = session.get(Post, pid).image_url
            row = by_source[("post_photo", path)][0]
            assert url == storage.variant_url("post_photo", row.filename)
            assert (media / url.removeprefix(prefix + "/")).is_file()

        notes = session.scalars(select(Notification).where(Notification.user_id == world["author"])).all()
        parents = [n for n in notes if n.parent_id is None]
        assert len(parents) == 1, f"{len(parents)} top-level notifications for one post's likes"
        parent = parents[0]
        assert parent.is_batch and parent.batch_key == f"post_interaction:post:{world['liked_post']}"
        kids = [n for n in notes if n.parent_id == parent.id]
        assert len(kids) == len(notes) - 1
        assert parent.batch_count == len(kids) == len(world["likers"])
        assert sorted(k.dedupe_key for k in kids) == sorted(f"like:{i}" for i in world["like_ids"])
        assert sorted(k.data["actor_id"] for k in kids) == sorted(world["likers"])  # one child per liker
    assert dead_letter_count(engine) == 0
    return {"media_rows": len(rows), "notifications": len(notes)}


@pytest.fixture
def media(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "media"
    (root / "uploads").mkdir(parents=True)
    monkeypatch.setenv("MEDIA_ROOT", str(root))
    return root


def run(isolated, clean_db, media, tmp_path, **kwargs) -> Figures:
    figures, info = family_chaos(isolated, clean_db, media, tmp_path, **kwargs)
    effects = assert_effects_exactly_once(clean_db, media, info["world"])
    image_outcomes = [o for (task, _args), o in zip(info["plan"], info["outcomes"]) if task.startswith("images.")]
    assert {o["status"] for o in image_outcomes} == {"COMPLETED"}
    figures.extra.update(effects)
    figures.report()
    assert figures.lost == 0 and figures.completed == figures.sent
    # Each aimed kill cut a running task off, so that task was delivered again.
    assert figures.duplicated >= info["mid_task_kills"] == kwargs["kills"]
    assert figures.extra["killed_images"] >= 1 and figures.extra["killed_notifications"] >= 1
    return figures


def test_sigkill_mid_image_and_notification_tasks_bounded(isolated, clean_db, media, tmp_path):
    run(isolated, clean_db, media, tmp_path, kills=3, likers=6, profiles=3, post_photos=2,
        name="sigkill_families_x3")


@pytest.mark.slow_chaos
def test_sigkill_mid_image_and_notification_tasks_x10(isolated, clean_db, media, tmp_path):
    run(isolated, clean_db, media, tmp_path, kills=10, likers=12, profiles=5, post_photos=4,
        name="sigkill_families_x10")
