"""Demo: warm the recently active users (the demo's posters and likers), then bob edits his
profile and the web tier sends ``user_updated``; the summary shows alice's key warmed with
its TTL and bob's gone."""
from __future__ import annotations

from celery import chain

from tasks.cache.client import cache_redis
from tasks.cache.keys import KEYS
from tasks.cache.tasks import invalidate, warm_active
from workers.dev.demo import DemoGraph

FAMILY = "cache"


def enqueue(graph: DemoGraph) -> list:
    if cache_redis() is None:
        return []
    bob = graph.user_ids["bob"]
    result = chain(warm_active.si(), invalidate.si("user_updated", [bob])).apply_async()
    graph.notes["cache"] = {"warm": result.parent, "invalidate": result}
    return [result.parent, result]


def summarize(graph: DemoGraph) -> str:
    client, notes = cache_redis(), graph.notes.get("cache")
    if client is None or not notes:
        return "CACHE_URL unset: no cache kept"
    warmed, dropped = notes["warm"].result, notes["invalidate"].result
    if not isinstance(warmed, dict) or not isinstance(dropped, dict):
        return f"warm: {warmed!r}; invalidate: {dropped!r}"
    alice_key = KEYS["user"].key(graph.user_ids["alice"])
    bob_key = KEYS["user"].key(graph.user_ids["bob"])
    ttl = client.ttl(alice_key)
    alice = f"{alice_key} cached, TTL {ttl} s" if ttl > 0 else f"{alice_key} not cached"
    bob = f"{bob_key} {'gone' if not client.exists(bob_key) else 'still cached'}"
    return (f"warm_active: {warmed.get('users', 0)} active user(s), {warmed.get('written', 0)} key(s) written "
            f"({warmed.get('status')}); {alice}; user_updated(bob): {bob}, {dropped.get('dropped', 0)} dropped")
