"""The web tier's Redis cache (CACHE_URL): six documented keys, filled without ever
writing a stale value over a newer one, dropped or refreshed after writes.

- ``keys.py``: the key table (pattern, TTL, version counter, JSON value);
- ``values.py``: one set-based loader per key kind (the SQL);
- ``versions.py``: version counters and the check-and-set write (the guarantee);
- ``fill.py``: read versions, load, write: shared by the warm and the read-through;
- ``store.py``: read-through helpers for the web tier (``get``, ``get_or_fill``);
- ``invalidation.py``: the events of ``cache.invalidate`` and their fan-out;
- ``warm.py``: ``cache.warm_active``'s budgeted keyset walk;
- ``hooks.py``: what other families call after their writes (sent only when CACHE_URL is set);
- ``client.py``: the Redis client on CACHE_URL.
"""
