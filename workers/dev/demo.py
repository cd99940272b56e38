"""The demo workload behind ``make run``: a small social graph, then tasks
enqueued the way the web tier would, then a summary table per job family.

Each family contributes ``tasks/<family>/demo.py`` with ``enqueue(graph)``
(returns the AsyncResults it sent) and ``summarize(graph)`` (one line about
the effect, read back from PostgreSQL).
"""
from __future__ import annotations

import importlib
import pkgutil
import time
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert

import tasks
from db.models import Follow, Like, Post, User
from db.session import session_scope
from workers.console import progress_bar, table

DEMO_USERS = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"]
DEMO_FOLLOWS = [("bob", "alice"), ("carol", "alice"), ("dave", "alice"), ("alice", "bob"),
                ("erin", "carol"), ("frank", "carol"), ("grace", "dave"), ("heidi", "alice")]


@dataclass
class DemoGraph:
    user_ids: dict[str, int]
    post_ids: list[str] = field(default_factory=list)
    notes: dict = field(default_factory=dict)


def load_demo_graph() -> DemoGraph:
    with session_scope() as session:
        session.execute(insert(User).values([
            {"email": f"{name}@example.com", "username": name, "hashed_password": "!demo",
             "display_name": name.title()} for name in DEMO_USERS]).on_conflict_do_nothing())
        user_ids = dict(session.execute(
            select(User.username, User.id).where(User.username.in_(DEMO_USERS))).all())
        session.execute(insert(Follow).values([
            {"follower_id": user_ids[a], "followed_id": user_ids[b]} for a, b in DEMO_FOLLOWS
        ]).on_conflict_do_nothing())
        posts = [
            Post(author_id=user_ids["alice"], content="Grateful for @bob and @carol today", post_type="daily"),
            Post(author_id=user_ids["bob"], content="Morning light, thanks @alice", post_type="photo"),
            Post(author_id=user_ids["carol"], content="A quiet walk. cc @dave @nobody_here", post_type="spontaneous"),
        ]
        session.add_all(posts)
        session.flush()
        post_ids = [post.id for post in posts]
        session.execute(insert(Like).values([
            {"user_id": user_ids[name], "post_id": post_ids[0]} for name in ("bob", "carol", "dave", "erin")
        ]).on_conflict_do_nothing())
    return DemoGraph(user_ids=user_ids, post_ids=post_ids)


def family_demo_modules() -> list:
    modules = []
    for info in pkgutil.iter_modules(tasks.__path__):
        try:
            modules.append(importlib.import_module(f"tasks.{info.name}.demo"))
        except ModuleNotFoundError as exc:
            if exc.name != f"tasks.{info.name}.demo":
                raise
    return modules


def run_demo(timeout: float = 180.0) -> bool:
    """Run the whole demo; return True when every task finished without an unexpected failure."""
    graph = load_demo_graph()
    print(f"demo graph: {len(graph.user_ids)} users, {len(graph.post_ids)} new posts")
    sent = []
    for module in family_demo_modules():
        results = module.enqueue(graph)
        sent.append((module, results))
    all_results = [r for _module, results in sent for r in results]
    deadline = time.monotonic() + timeout
    show = progress_bar("tasks done")
    while True:
        done = sum(1 for r in all_results if r.ready())
        show(done, len(all_results))
        if done == len(all_results):
            break
        if time.monotonic() > deadline:
            print()
            break
        time.sleep(0.2)
    ok = True
    rows = []
    for module, results in sent:
        succeeded = sum(1 for r in results if r.successful())
        failed = sum(1 for r in results if r.failed())
        pending = len(results) - succeeded - failed
        expected_failures = getattr(module, "EXPECTED_FAILURES", 0)
        ok &= pending == 0 and failed <= expected_failures
        rows.append((module.FAMILY, len(results), succeeded, failed, pending, module.summarize(graph)))
    print(table(("family", "sent", "ok", "failed", "pending", "effect"), rows))
    return ok
