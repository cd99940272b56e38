"""The multi-host test's data and its web tier, run inside host a as ``python -m tests.multihost.workload``.

``seed``: 20 k users with follows and posts (the feed's fan-out), likes on a few posts
(the notifications), and profile photos in MEDIA_ROOT/uploads (the images). Prints
what the test needs to check effects, as JSON.

``send``: the mixed workload as the web tier would send it, interleaved: one
``notifications.record`` per like, one ``images.process_profile_photo`` per upload,
and the 20 k users in ``feed.score_users`` chunks. ``send-feed`` sends only the feed
chunks (the scaling run). Prints the task ids sent.
"""
from __future__ import annotations

import json
import sys

from sqlalchemy import text

USERS, FOLLOWS_PER_USER, POSTS = 20_000, 20, 100_000
LIKED_POSTS, LIKES_PER_POST = 20, 50
PHOTOS = 40
CHUNK = 250

BUILD_SQL = [
    "SELECT setseed(0.42)",
    f"""INSERT INTO users (email, username, hashed_password)
        SELECT 'mh' || g || '@example.com', 'mh' || g, '!' FROM generate_series(1, {USERS}) g""",
    f"""INSERT INTO follows (follower_id, followed_id, status, created_at)
        SELECT u.id, b.min_id + ((u.id - b.min_id + k * 101) % {USERS}), 'active', now() - interval '60 days'
        FROM users u, (SELECT min(id) AS min_id FROM users) b, generate_series(1, {FOLLOWS_PER_USER}) k""",
    f"""INSERT INTO posts (author_id, content, is_public, created_at, hearts_count)
        SELECT b.min_id + (g % {USERS}), 'grateful', true, now() - (g::float8 / {POSTS}) * interval '7 days',
               floor(power(random(), 3) * 200)
        FROM generate_series(1, {POSTS}) g, (SELECT min(id) AS min_id FROM users) b""",
    # LIKES_PER_POST likes on each of LIKED_POSTS recent posts, never by the author.
    f"""INSERT INTO likes (user_id, post_id)
        SELECT p.author_id + 1 + k, p.id
        FROM (SELECT id, author_id FROM posts ORDER BY created_at DESC LIMIT {LIKED_POSTS}) p,
             generate_series(1, {LIKES_PER_POST}) k
        WHERE p.author_id + 1 + k <= (SELECT max(id) FROM users)""",
]


def seed() -> dict:
    from db.session import session_scope
    from tasks.images import storage
    from tests.images import corpus

    from db.session import get_engine

    with session_scope() as session:
        for statement in BUILD_SQL:
            session.execute(text(statement))
    with get_engine().connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("VACUUM ANALYZE users, follows, posts, likes"))  # planner statistics
    with session_scope() as session:
        user_ids = list(session.execute(text("SELECT id FROM users ORDER BY id")).scalars())
        like_ids = [str(i) for i in session.execute(text("SELECT id FROM likes ORDER BY id")).scalars()]
    uploads = storage.uploads_dir()
    uploads.mkdir(parents=True, exist_ok=True)
    photo = corpus.photo_jpeg(800, 600)
    photos = []
    for user_id in user_ids[:PHOTOS]:
        (uploads / f"mh-{user_id}.jpg").write_bytes(photo)
        photos.append([user_id, f"mh-{user_id}.jpg"])
    return {"user_ids": user_ids, "like_ids": like_ids, "photos": photos}


def feed_chunks(user_ids: list[int]) -> list[list[int]]:
    return [user_ids[i:i + CHUNK] for i in range(0, len(user_ids), CHUNK)]


def send(plan: dict, feed_only: bool = False) -> list[str]:
    from workers.celery_app import app

    feed = [("feed.score_users", [chunk]) for chunk in feed_chunks(plan["user_ids"])]
    others = [] if feed_only else (
        [("images.process_profile_photo", photo) for photo in plan["photos"]]
        + [("notifications.record", ["like", like_id]) for like_id in plan["like_ids"]])
    # Interleaved, as a live web tier would: every family is in flight when the link goes.
    messages, step = [], max(1, len(others) // max(1, len(feed)))
    for index, call in enumerate(feed):
        messages.append(call)
        messages.extend(others[index * step:(index + 1) * step])
    messages.extend(others[len(feed) * step:])
    return [app.send_task(name, args=args).id for name, args in messages]


if __name__ == "__main__":
    command = sys.argv[1]
    if command == "seed":
        print(json.dumps(seed()))
    else:
        plan = json.loads(sys.stdin.read())
        print(json.dumps({"ids": send(plan, feed_only=command == "send-feed")}))
