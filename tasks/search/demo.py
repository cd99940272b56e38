"""Demo: alice posts about a sunrise twice, once for everyone and once for friends only; grace is
her friend, frank is not. After ``search.index_dirty`` the two of them search for it: grace finds
both posts, frank only the public one."""
from __future__ import annotations

from sqlalchemy import text

from db.session import session_scope
from tasks.search import query
from tasks.search.tasks import index_dirty
from workers.dev.demo import DemoGraph

FAMILY = "search"
WORD = "sunrise"

_FRIENDS_SQL = text("""
INSERT INTO friendships (user1_id, user2_id, status) VALUES (:a, :b, 'accepted')
ON CONFLICT ((least(user1_id, user2_id)), (greatest(user1_id, user2_id))) DO NOTHING
""")


def enqueue(graph: DemoGraph) -> list:
    u = graph.user_ids
    with session_scope() as session:
        session.execute(_FRIENDS_SQL, {"a": u["grace"], "b": u["alice"]})
        graph.notes["search"] = [session.execute(text(
            "INSERT INTO posts (author_id, content, privacy_level) VALUES (:a, :c, :p) RETURNING id::text"),
            {"a": u["alice"], "c": content, "p": privacy}).scalar_one()
            for content, privacy in ((f"A {WORD} over the harbour, for everyone", "public"),
                                     (f"The {WORD} from my balcony, friends only", "friends"))]
    return [index_dirty.delay()]


def summarize(graph: DemoGraph) -> str:
    ours = set(graph.notes.get("search", []))
    found = {name: [p for p in query(WORD, graph.user_ids[name], limit=100).post_ids if p in ours]
             for name in ("grace", "frank")}
    return (f"search {WORD!r}: grace (alice's friend) finds {len(found['grace'])} of alice's 2 posts, "
            f"frank finds {len(found['frank'])}")
