"""Fill keys from PostgreSQL without ever overwriting a newer value: versions, load, write.

``fill(session, client, {kind: [id, …]}, now)`` reads every version first (one
round trip), then runs one loader statement per kind, then writes everything
with the check-and-set script (one round trip). ``load`` is the first half, for
a caller that writes later (the warm overlaps one chunk's write with the next
chunk's reads). ``cache.warm_active``, the read-through helpers of store.py and
the refresh of invalidation.py all fill through here.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime

import redis
from sqlalchemy.orm import Session

from tasks.cache import versions
from tasks.cache.keys import KEYS
from tasks.cache.values import LOADERS


@dataclass
class FillResult:
    requested: int = 0
    written: int = 0
    refused: int = 0      # a newer write or an invalidation came first: left alone
    absent: int = 0       # nothing to cache (a deleted user, an unreadable post, …)
    values: dict = field(default_factory=dict, repr=False)   # {kind: {id: JSON text}} as loaded

    def add(self, other: FillResult) -> None:
        self.requested += other.requested
        self.written += other.written
        self.refused += other.refused
        self.absent += other.absent

    def as_dict(self) -> dict:
        counts = asdict(self)
        counts.pop("values")
        return counts


@dataclass
class Loaded:
    """Values read from PostgreSQL under a snapshot of their versions, ready to write."""
    entries: list[versions.Entry]
    snapshot: versions.Snapshot
    result: FillResult

    def write(self, client: redis.Redis) -> FillResult:
        written = versions.write_if_unchanged(client, self.entries, self.snapshot)
        self.result.written, self.result.refused = written.written, written.refused
        return self.result


def fill(session: Session, client: redis.Redis, wanted: dict[str, list], now: datetime) -> FillResult:
    """Load and cache ``wanted`` ({kind: ids}; a feed's ids are (user_id, page)). Never commits."""
    return load(session, client, wanted, now).write(client)


def load(session: Session, client: redis.Redis, wanted: dict[str, list], now: datetime) -> Loaded:
    """Read the versions, then PostgreSQL: the first half of a fill."""
    wanted = {kind: list(dict.fromkeys(ids)) for kind, ids in wanted.items() if ids}
    snapshot = versions.read_versions(client, [KEYS[kind].version_key(ident)
                                               for kind, ids in wanted.items() for ident in ids])
    return load_under(session, wanted, now, snapshot)


def load_under(session: Session, wanted: dict[str, list], now: datetime, snapshot: versions.Snapshot) -> Loaded:
    """Load ``wanted`` for writing under ``snapshot``, which was read before this load began."""
    result, entries = FillResult(), []
    for kind, ids in wanted.items():
        spec = KEYS[kind]
        loaded = LOADERS[kind](session, ids, now)
        result.values[kind] = loaded
        result.requested += len(ids)
        result.absent += len(ids) - len(loaded)
        for ident, value in loaded.items():
            page = ident[1] if spec.pages_pattern is not None else None
            entries.append(versions.Entry(spec.key(ident), spec.version_key(ident), spec.ttl_seconds, value,
                                          spec.pages_key(ident), page))
    return Loaded(entries, snapshot, result)
