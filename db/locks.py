"""Advisory locks, spelt once: namespaced text keys hashed to PostgreSQL's 64-bit lock space.

Every lock is transaction-scoped (``pg_advisory_xact_lock``): released by the
commit or rollback that ends the work, so a pooled connection can never leak
one. A key is ``"<namespace>:<part>:<part>…"``; the namespace names the
family and the concept (``images.subject``, ``feed.user``), so two families can
never collide on the same number by accident.

Set-based callers that lock many keys in one statement build the SQL with
``key_sql`` (always in sorted key order, the order every caller uses, so two
transactions never wait on each other in a cycle).
"""
from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import TypeVar

from sqlalchemy import text
from sqlalchemy.orm import Session

T = TypeVar("T", bound=Hashable)

# Keys one transaction may lock. Every advisory lock sits in PostgreSQL's shared
# lock table until commit, and that table is small: max_locks_per_transaction (64)
# per server process, about 7,800 entries with the defaults. One transaction
# locking 10,000 keys (the most one task accepts) fits; two at once failed with
# "out of shared memory", for every other transaction on the server too. Bulk
# tasks therefore commit every KEYS_PER_TRANSACTION keys.
KEYS_PER_TRANSACTION = 500


def lock_key(namespace: str, *parts: object) -> str:
    return ":".join([namespace, *(str(part) for part in parts)])


def key_sql(text_expression: str) -> str:
    """SQL for the 64-bit lock id of a text key expression (a bind, a column or a concatenation)."""
    return f"hashtextextended({text_expression}, 0)"


def xact_lock(session: Session, namespace: str, *parts: object) -> None:
    """Wait for the key's lock; held until this transaction ends."""
    session.execute(text(f"SELECT pg_advisory_xact_lock({key_sql(':key')})"),
                    {"key": lock_key(namespace, *parts)})


def xact_lock_shared(session: Session, namespace: str, *parts: object) -> None:
    """Wait for the key's lock in shared mode (many holders; excludes ``xact_lock``); held until this transaction ends."""
    session.execute(text(f"SELECT pg_advisory_xact_lock_shared({key_sql(':key')})"),
                    {"key": lock_key(namespace, *parts)})


def try_xact_lock(session: Session, namespace: str, *parts: object) -> bool:
    """Take the key's lock if it is free; held until this transaction ends."""
    return bool(session.execute(text(f"SELECT pg_try_advisory_xact_lock({key_sql(':key')})"),
                                {"key": lock_key(namespace, *parts)}).scalar())


def xact_lock_many(session: Session, keys: list[str]) -> None:
    """Wait for every key's lock, in sorted order, in one statement."""
    session.execute(text(
        f"SELECT count(pg_advisory_xact_lock({key_sql('k')})) "
        "FROM (SELECT k FROM unnest(CAST(:keys AS text[])) AS k ORDER BY k) AS sorted"), {"keys": sorted(set(keys))})


def try_xact_lock_many(session: Session, keys: list[str]) -> list[str]:
    """Take the free ones of ``keys`` in sorted order; return the keys obtained."""
    return list(session.execute(text(
        "SELECT k FROM (SELECT k FROM unnest(CAST(:keys AS text[])) AS k ORDER BY k) AS sorted "
        f"WHERE pg_try_advisory_xact_lock({key_sql('k')})"), {"keys": sorted(set(keys))}).scalars())


def transaction_chunks(items: Sequence[T], size: int = KEYS_PER_TRANSACTION) -> list[list[T]]:
    """The distinct ``items``, in their order, in slices of at most ``size``: one transaction each."""
    unique = list(dict.fromkeys(items))
    return [unique[start:start + size] for start in range(0, len(unique), size)]
