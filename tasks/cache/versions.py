"""Never stale-overwrite: version counters, the check-and-set write, and the drop.

The race: a fill reads PostgreSQL, a writer commits a change and its
invalidation drops the key, then the fill writes what it read. Without a guard
the cache now holds the old value until its TTL.

The guard, per key family (``KeySpec.version_pattern``: ``v:user:{id}``,
``v:feed:{id}`` for all of a user's pages, …):

1. An invalidation runs after the writer's commit (a task sent on commit) and,
   in one MULTI, INCRs the version (and renews its TTL) *before* it deletes the
   key (``drop``). A fill that wrote before the INCR is deleted by the DEL; a fill
   that had read before the INCR is refused below.
2. A fill reads the versions, and Redis's clock, *before* it reads PostgreSQL
   (``read_versions``; a missing version reads "0"). PostgreSQL must run at READ
   COMMITTED (the default), so the load sees everything committed before it began.
3. The fill writes with ``CAS_SCRIPT``: per key, SET … EX ttl only if the version
   still equals what it read, atomically in Redis.

A version key expires VERSION_TTL_SECONDS after its last INCR, so counters of
things nobody changes do not pile up. An expired counter reads "0" again, which
could equal what an old fill read before the INCR. The script therefore also
refuses a whole write whose versions were read more than MAX_FILL_AGE_SECONDS
ago (measured on Redis's own clock, both ends): for a counter to be INCR'd after
the read and expire before the write, at least VERSION_TTL_SECONDS must pass
between them, and VERSION_TTL_SECONDS > MAX_FILL_AGE_SECONDS (keys.py asserts it).

Eviction (``allkeys-lru``) can drop a counter early. A just-INCR'd counter is
the most recently used key, the last LRU picks, so a stale write would need the
counter evicted within the few milliseconds between a fill's read and write;
``noeviction`` (or enough memory) removes even that. Evicting a value or a
feed's page set only costs a miss or, for a page set, leaves pages to expire by
their TTL (15 min).

Feed pages: a fill adds its page number to ``feed:{id}:pages`` in the same
script, so a drop finds the pages without SCAN or KEYS (step 1 INCRs and reads
the set in one MULTI, step 2 deletes those pages and removes them from the set).
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import redis

from tasks.cache.keys import KEYS, MAX_FILL_AGE_SECONDS, VERSION_TTL_SECONDS

# One call writes entries of one TTL, all with or all without a page set.
# KEYS per entry: the value key, its version key and, with pages, the page set.
# ARGV: read time (µs), max age (µs), TTL, '1' with pages, then per entry: the expected
# version, the value and, with pages, the page number.
CAS_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
if now - tonumber(ARGV[1]) > tonumber(ARGV[2]) then return -1 end
local ttl, pages = ARGV[3], ARGV[4] == '1'
local stride = pages and 3 or 2
local written, a = 0, 5
for i = 1, #KEYS, stride do
  if (redis.call('GET', KEYS[i + 1]) or '0') == ARGV[a] then
    redis.call('SET', KEYS[i], ARGV[a + 1], 'EX', ttl)
    if pages then
      redis.call('SADD', KEYS[i + 2], ARGV[a + 2])
      redis.call('EXPIRE', KEYS[i + 2], ttl)
    end
    written = written + 1
  end
  a = a + stride
end
return written
"""

ENTRIES_PER_SCRIPT = 500      # one script call blocks Redis for well under a millisecond
KEYS_PER_ROUND = 5000         # versions read per MGET, entities dropped per MULTI

_script = None


def _cas(client: redis.Redis):
    """The script object; always called with ``client=`` a pipeline, which loads it there if needed."""
    global _script
    if _script is None:
        _script = client.register_script(CAS_SCRIPT)
    return _script


def _chunks(items: list, size: int) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


@dataclass
class Snapshot:
    """The versions a fill read, and when (Redis's clock, µs), before it read PostgreSQL."""
    versions: dict[str, str]
    read_at_us: int


@dataclass(frozen=True)
class Entry:
    key: str
    version_key: str
    ttl_seconds: int
    value: str
    pages_key: str | None = None
    page: int | None = None


@dataclass
class WriteResult:
    written: int = 0
    refused: int = 0      # the version moved since the read, or the read is too old


def _now_us(reply) -> int:
    seconds, micros = reply
    return int(seconds) * 1_000_000 + int(micros)


def read_versions(client: redis.Redis, version_keys: list[str]) -> Snapshot:
    """Read these versions ("0" when missing) and the time; call before reading PostgreSQL."""
    unique = list(dict.fromkeys(version_keys))
    pipe = client.pipeline(transaction=False)
    pipe.time()   # first: the age is measured from no later than the reads
    chunks = list(_chunks(unique, KEYS_PER_ROUND))
    for chunk in chunks:
        pipe.mget(chunk)
    replies = pipe.execute()
    versions = {}
    for chunk, values in zip(chunks, replies[1:]):
        versions.update((key, value.decode() if value is not None else "0") for key, value in zip(chunk, values))
    return Snapshot(versions, _now_us(replies[0]))


def write_if_unchanged(client: redis.Redis, entries: list[Entry], snapshot: Snapshot) -> WriteResult:
    """Write each entry only if its version is still the one in ``snapshot``: one round trip."""
    if not entries:
        return WriteResult()
    groups: dict[tuple[int, bool], list[Entry]] = {}
    for entry in entries:
        groups.setdefault((entry.ttl_seconds, entry.pages_key is not None), []).append(entry)
    script, pipe, batches = _cas(client), client.pipeline(transaction=False), []
    max_age_us = int(MAX_FILL_AGE_SECONDS * 1_000_000)
    for (ttl, with_pages), group in groups.items():
        for batch in _chunks(group, ENTRIES_PER_SCRIPT):
            keys, args = [], [snapshot.read_at_us, max_age_us, ttl, "1" if with_pages else "0"]
            for entry in batch:
                expected = snapshot.versions[entry.version_key]
                if with_pages:
                    keys += (entry.key, entry.version_key, entry.pages_key)
                    args += (expected, entry.value, entry.page)
                else:
                    keys += (entry.key, entry.version_key)
                    args += (expected, entry.value)
            script(keys=keys, args=args, client=pipe)
            batches.append(len(batch))
    result = WriteResult()
    for size, written in zip(batches, pipe.execute()):
        written = max(int(written), 0)   # -1: the whole batch was read too long ago
        result.written += written
        result.refused += size - written
    return result


def drop(client: redis.Redis, items: list[tuple[str, object]]) -> int:
    """Invalidate (kind, id) pairs (a feed: the user id, for all its pages): INCR each version,
    then delete the values. Call after the change committed. Returns the values deleted."""
    deleted = 0
    for chunk in _chunks(list(dict.fromkeys(items)), KEYS_PER_ROUND):
        pipe = client.pipeline(transaction=True)
        for kind, owner in chunk:
            spec = KEYS[kind]
            version_key = spec.version_pattern.format(id=owner)
            pipe.incr(version_key)
            pipe.expire(version_key, VERSION_TTL_SECONDS)
            if spec.pages_pattern is None:
                pipe.delete(spec.key(owner))
            else:
                pipe.smembers(spec.pages_pattern.format(id=owner))
        replies = pipe.execute()
        pages_of = []
        for index, (kind, owner) in enumerate(chunk):
            found = replies[3 * index + 2]
            if KEYS[kind].pages_pattern is None:
                deleted += found
            elif found:
                pages_of.append((KEYS[kind], owner, sorted(int(page) for page in found)))
        deleted += _drop_pages(client, pages_of)
    return deleted


def _drop_pages(client: redis.Redis, pages_of: list) -> int:
    # After the INCR: a fill that read before it can no longer add a page, and a page a
    # fresh fill adds now is fresh; deleting one of those too only costs a miss.
    if not pages_of:
        return 0
    pipe = client.pipeline(transaction=False)
    for spec, owner, pages in pages_of:
        pipe.delete(*(spec.key((owner, page)) for page in pages))
        pipe.srem(spec.pages_pattern.format(id=owner), *pages)
    return sum(reply for index, reply in enumerate(pipe.execute()) if index % 2 == 0)


def bump_for_refresh(client: redis.Redis, kind: str, idents: list) -> Snapshot:
    """Drop these values and return the versions the drop set, as the snapshot of a refill
    that reads PostgreSQL next (a refresh: ``notification:{id}:unread``)."""
    spec, idents = KEYS[kind], list(dict.fromkeys(idents))
    pipe = client.pipeline(transaction=True)
    pipe.time()
    for ident in idents:
        pipe.incr(spec.version_key(ident))
        pipe.expire(spec.version_key(ident), VERSION_TTL_SECONDS)
        pipe.delete(spec.key(ident))
    replies = pipe.execute()
    versions = {spec.version_key(ident): str(replies[1 + 3 * index]) for index, ident in enumerate(idents)}
    return Snapshot(versions, _now_us(replies[0]))
