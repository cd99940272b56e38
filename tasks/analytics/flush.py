"""Move the web tier's Redis view counters into PostgreSQL, each increment exactly once.

A flush has two steps, and survives a SIGKILL between any two instructions:

1. **Claim** (one Lua script, atomic in Redis): each live counters hash
   ``analytics:c:DAY`` is renamed to ``analytics:f:<flush id>:DAY``, made
   persistent, and the flush id is added to the ``analytics:pending`` sorted
   set. From then on the web tier's increments go to a new live hash, and the
   renamed one never changes again.
2. **Apply**, for every pending flush (this run's and any a killed flusher
   left behind), oldest first: read its hashes, then in one PostgreSQL
   transaction insert its id into ``analytics_flushes`` and add the counts.
   The id is the primary key, so a flush applied before (by a flusher killed
   before it could clean up, or by a second flusher at the same time, whose
   insert waits for the first's commit) adds nothing. Only after the commit
   are its Redis keys deleted.

Unique viewers are HyperLogLogs, which cannot be added up, so they are not
renamed: the flush reads their current estimate and stores the greater of it
and the stored value (``greatest``), which is idempotent.

Discourse's ``ApplicationRequest`` flushes with ``INCRBY -n`` instead (read n,
then subtract it); that never double counts, but a crash between its write to
PostgreSQL and the subtraction does. The rename makes the Redis side of the
step atomic and the flush id makes the PostgreSQL side idempotent.
"""
from __future__ import annotations

import logging
import re
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone

from sqlalchemy import text
from sqlalchemy.orm import Session

from tasks.analytics import client as keys
from tasks.analytics.rollup import refresh_view_columns
from workers.errors import TRANSIENT_ERRORS, JobError

log = logging.getLogger("tasks.analytics.flush")

PENDING = keys.PREFIX + "pending"
FLUSH_PREFIX = keys.PREFIX + "f:"
LIVE_DAYS = keys.KEY_TTL_SECONDS // 86400 + 1   # every day a live hash can still exist
_MAX_COUNT = 2**31   # the daily columns are integers
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")

# KEYS: the pending set, then pairs (live hash, its flush name). ARGV: flush id, now.
_CLAIM = """
local claimed = 0
for i = 2, #KEYS, 2 do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    redis.call('RENAME', KEYS[i], KEYS[i + 1])
    redis.call('PERSIST', KEYS[i + 1])
    claimed = claimed + 1
  end
end
if claimed > 0 then redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1]) end
return claimed
"""

Checkpoint = Callable[[str], None]
"""Called at each step ("claim", "claimed", "read", "upserted", "committed"): the tests' crash points."""


def _no_checkpoint(step: str) -> None:
    pass


def analytics_redis():
    """ANALYTICS_REDIS_URL's Redis, else the broker's (workers/broker.py); one client per process."""
    from workers.broker import shared_redis

    found = shared_redis()
    if found is None:
        raise RuntimeError("analytics needs Redis: set ANALYTICS_REDIS_URL when the broker is not Redis")
    return found


def flush_key(flush_id: str, day: str) -> str:
    return f"{FLUSH_PREFIX}{flush_id}:{day}"


def claim(client, now: datetime, flush_id: str | None = None) -> str | None:
    """Rename the live counters to a new flush; its id, or None when there was nothing to count."""
    flush_id = flush_id or uuid.uuid4().hex
    today = now.astimezone(timezone.utc).date()
    days = [(today - timedelta(days=back)).strftime("%Y%m%d") for back in range(LIVE_DAYS)]
    script_keys = [PENDING]
    for day in days:
        script_keys += [keys.counters_key(day), flush_key(flush_id, day)]
    claimed = client.eval(_CLAIM, len(script_keys), *script_keys, flush_id, now.timestamp())
    return flush_id if claimed else None


@dataclass
class FlushData:
    """One flush read back from Redis: counts per (day, subject), and what was refused."""

    flush_id: str
    views: dict[tuple[date, str], int] = field(default_factory=lambda: defaultdict(int))
    impressions: dict[tuple[date, str], int] = field(default_factory=lambda: defaultdict(int))
    profile_views: dict[tuple[date, int], int] = field(default_factory=lambda: defaultdict(int))
    unique_viewers: dict[tuple[date, str], int] = field(default_factory=dict)
    impression_reach: dict[tuple[date, str], int] = field(default_factory=dict)
    profile_viewers: dict[tuple[date, int], int] = field(default_factory=dict)
    counters: int = 0
    increments: int = 0
    rejected: int = 0
    flush_keys: list[str] = field(default_factory=list)


# One page of a renamed hash with each field's unique count beside it: HSCAN, then PFCOUNT of
# the field's HyperLogLog, in Redis, so a page is one round trip and Redis is never held for
# more than a page (about 5,000 fields, milliseconds). KEYS: the hash. ARGV: the cursor, the
# uniques' key prefix, the day. Returns the next cursor, then field, count, unique, field, …
# (The HyperLogLog names are built here from the fields, so a Redis Cluster would need the
# counters on one node; see docs/operations.md.)
_READ_PAGE = """
local page = redis.call('HSCAN', KEYS[1], ARGV[1], 'COUNT', 5000)
local out = {page[1]}
local fields = page[2]
for i = 1, #fields, 2 do
  local kind, subject = string.match(fields[i], '^(%a):(.+)$')
  local unique = 0
  if kind then unique = redis.call('PFCOUNT', ARGV[2] .. kind .. ':' .. ARGV[3] .. ':' .. subject) end
  out[#out + 1] = fields[i]
  out[#out + 1] = fields[i + 1]
  out[#out + 1] = unique
end
return out
"""


def read(client, flush_id: str) -> FlushData:
    data = FlushData(flush_id)
    # Its hashes can only be named after the days a live hash can exist for (a day either side of
    # the claim's, for a clock a little off): no SCAN of the whole (broker's) keyspace.
    claimed_at = client.zscore(PENDING, flush_id)
    newest = datetime.fromtimestamp(claimed_at or datetime.now(timezone.utc).timestamp(), timezone.utc).date()
    names = [flush_key(flush_id, (newest - timedelta(days=back)).strftime("%Y%m%d")) for back in range(-1, LIVE_DAYS)]
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.exists(name)
    data.flush_keys = [name for name, found in zip(names, pipe.execute()) if found]
    read_page = client.register_script(_READ_PAGE)
    for name in data.flush_keys:
        bucket = name.rsplit(":", 1)[1]
        day = datetime.strptime(bucket, "%Y%m%d").date()
        cursor = b"0"
        while True:
            reply = read_page(keys=[name], args=[cursor, keys.UNIQUES, bucket])
            cursor = reply[0]
            for n in range(1, len(reply), 3):
                _add(data, day, reply[n].decode(), int(reply[n + 1]), int(reply[n + 2]))
            if cursor in (b"0", 0, "0"):
                break
    return data


def _add(data: FlushData, day: date, name: str, count: int, unique: int) -> None:
    kind, _, subject = name.partition(":")
    data.counters += 1
    data.increments += count
    if not 0 < count < _MAX_COUNT:
        data.rejected += 1   # no minute has two billion views of one post: a broken writer
    elif kind in (keys.VIEW, keys.IMPRESSION) and _UUID.match(subject):
        counts, uniques = ((data.views, data.unique_viewers) if kind == keys.VIEW
                           else (data.impressions, data.impression_reach))
        counts[(day, subject)] += count
        uniques[(day, subject)] = unique
    elif kind == keys.PROFILE and subject.isdecimal() and 0 < int(subject) < 2**31:
        data.profile_views[(day, int(subject))] += count
        data.profile_viewers[(day, int(subject))] = unique
    else:
        data.rejected += 1   # written by something other than the client; counted, never applied


_CLAIM_FLUSH_SQL = text(
    "INSERT INTO analytics_flushes (id, counters, increments, rejected) VALUES (:id, :counters, :increments, "
    ":rejected) ON CONFLICT (id) DO NOTHING RETURNING id")

# One pass over posts: the UPDATE of views_count returns the authors the daily rows need (posts
# shown but not opened, with no views to add, are looked up on their own). Posts that no longer
# exist drop out, and are counted as rejected.
_POST_VIEWS_SQL = text("""
    WITH counted AS (
        -- Every column arrives as one comma-separated string (days as indexes into a short list):
        -- adapting 20,000 Python values one by one costs as much as the upsert.
        SELECT c.post_id, (CAST(:day_list AS date[]))[c.day_index] AS day, c.views, c.unique_viewers,
               c.impressions, c.impression_reach
        FROM unnest(CAST(string_to_array(:post_ids, ',') AS uuid[]),
                    CAST(string_to_array(:day_indexes, ',') AS int[]), CAST(string_to_array(:views, ',') AS int[]),
                    CAST(string_to_array(:uniques, ',') AS int[]),
                    CAST(string_to_array(:impressions, ',') AS int[]), CAST(string_to_array(:reach, ',') AS int[]))
             AS c(post_id, day_index, views, unique_viewers, impressions, impression_reach)
    ), totals AS (
        SELECT post_id, sum(views) AS views FROM counted GROUP BY post_id
    ), bumped AS (
        UPDATE posts AS p SET views_count = p.views_count + t.views
        FROM totals AS t WHERE p.id = t.post_id AND t.views > 0
        RETURNING p.id, p.author_id
    ), authors AS (
        SELECT id, author_id FROM bumped
        UNION ALL
        SELECT p.id, p.author_id FROM posts AS p
        WHERE p.id IN (SELECT post_id FROM totals WHERE views = 0)
    ), kept AS (
        INSERT INTO post_daily_views AS d (post_id, day, author_id, views, unique_viewers, impressions,
                                           impression_reach)
        SELECT c.post_id, c.day, a.author_id, c.views, c.unique_viewers, c.impressions, c.impression_reach
        FROM counted AS c JOIN authors AS a ON a.id = c.post_id
        ORDER BY c.post_id, c.day
        ON CONFLICT (post_id, day) DO UPDATE SET
            views = d.views + EXCLUDED.views,
            unique_viewers = greatest(d.unique_viewers, EXCLUDED.unique_viewers),
            impressions = d.impressions + EXCLUDED.impressions,
            impression_reach = greatest(d.impression_reach, EXCLUDED.impression_reach)
        RETURNING d.author_id, d.day
    )
    SELECT author_id, day, count(*) FROM kept GROUP BY author_id, day
""")

_PROFILE_VIEWS_SQL = text("""
    WITH counted AS (
        SELECT * FROM unnest(CAST(:user_ids AS int[]), CAST(:days AS date[]), CAST(:views AS int[]),
                             CAST(:uniques AS int[])) AS c(user_id, day, views, unique_viewers)
    )
    INSERT INTO profile_daily_views AS d (user_id, day, views, unique_viewers)
    SELECT c.user_id, c.day, c.views, c.unique_viewers FROM counted AS c JOIN users AS u ON u.id = c.user_id
    ORDER BY c.user_id, c.day
    ON CONFLICT (user_id, day) DO UPDATE SET
        views = d.views + EXCLUDED.views,
        unique_viewers = greatest(d.unique_viewers, EXCLUDED.unique_viewers)
    RETURNING d.user_id, d.day
""")


def _post_columns(data: FlushData, post_keys: list[tuple[date, str]]) -> dict:
    """The statement's columns, each one comma-separated string, built in one pass."""
    day_list = sorted({day for day, _post in post_keys})
    index_of = {day: str(n + 1) for n, day in enumerate(day_list)}
    views, uniques, impressions, reach = data.views, data.unique_viewers, data.impressions, data.impression_reach
    columns: dict[str, list[str]] = {name: [] for name in
                                     ("post_ids", "day_indexes", "views", "uniques", "impressions", "reach")}
    post_ids, day_indexes = columns["post_ids"].append, columns["day_indexes"].append
    view_counts, unique_counts = columns["views"].append, columns["uniques"].append
    impression_counts, reach_counts = columns["impressions"].append, columns["reach"].append
    for key in post_keys:
        post_ids(key[1])
        day_indexes(index_of[key[0]])
        view_counts(str(views.get(key, 0)))
        unique_counts(str(uniques.get(key, 0)))
        impression_counts(str(impressions.get(key, 0)))
        reach_counts(str(reach.get(key, 0)))
    return {"day_list": day_list, **{name: ",".join(values) for name, values in columns.items()}}


def apply(session: Session, data: FlushData, checkpoint: Checkpoint = _no_checkpoint) -> bool:
    """Add one flush's counts in the caller's transaction; False if it was applied before."""
    claimed = session.execute(_CLAIM_FLUSH_SQL, {
        "id": data.flush_id, "counters": data.counters, "increments": data.increments,
        "rejected": data.rejected}).first()
    if claimed is None:
        return False
    post_keys = list(data.views.keys() | data.impressions.keys())   # the SQL sorts what it writes
    touched: dict[date, set[int]] = defaultdict(set)
    kept = 0
    if post_keys:
        for author, day, posts in session.execute(_POST_VIEWS_SQL, _post_columns(data, post_keys)):
            touched[day].add(author)
            kept += posts
    checkpoint("upserted")
    profile_keys = sorted(data.profile_views)
    if profile_keys:
        for user, day in session.execute(_PROFILE_VIEWS_SQL, {
                "user_ids": [u for _d, u in profile_keys], "days": [d for d, _u in profile_keys],
                "views": [data.profile_views[k] for k in profile_keys],
                "uniques": [data.profile_viewers.get(k, 0) for k in profile_keys]}):
            touched[day].add(user)
            kept += 1
    gone = len(post_keys) + len(profile_keys) - kept
    if gone:
        session.execute(text("UPDATE analytics_flushes SET rejected = rejected + :n WHERE id = :id"),
                        {"n": gone, "id": data.flush_id})
    for day, users in sorted(touched.items()):
        refresh_view_columns(session, day, sorted(users))
    return True


def forget(client, data: FlushData) -> None:
    """Delete an applied flush from Redis (after its commit; repeating it is harmless)."""
    pipe = client.pipeline(transaction=False)
    if data.flush_keys:
        pipe.delete(*data.flush_keys)
    pipe.zrem(PENDING, data.flush_id)
    pipe.execute()


FLUSH_LAG_PROBLEM = timedelta(minutes=5)   # five missed beats of analytics.flush_counters


def health(client, now: datetime) -> tuple[dict, list[str]]:
    """For ``status``: counters waiting in Redis, and whether a flush has been pending too long."""
    oldest = client.zrange(PENDING, 0, 0, withscores=True)
    live = sum(client.hlen(keys.counters_key((now.date() - timedelta(days=back)).strftime("%Y%m%d")))
               for back in range(LIVE_DAYS))
    state = {"pending_flushes": client.zcard(PENDING), "live_counters": live,
             "oldest_pending_s": round(now.timestamp() - oldest[0][1]) if oldest else None}
    problems = []
    if oldest and now.timestamp() - oldest[0][1] > FLUSH_LAG_PROBLEM.total_seconds():
        problems.append(f"analytics: a flush has been pending {state['oldest_pending_s']} s "
                        "(is analytics.flush_counters failing? see dead letters)")
    return state, problems


def pending(client) -> list[str]:
    return [f.decode() if isinstance(f, bytes) else f for f in client.zrange(PENDING, 0, -1)]


@dataclass
class FlushResult:
    claimed: str | None = None
    applied: list[str] = field(default_factory=list)
    already_applied: list[str] = field(default_factory=list)
    increments: int = 0
    rejected: int = 0

    def as_dict(self) -> dict:
        return {"status": "ok", "claimed": self.claimed, "applied": len(self.applied),
                "already_applied": len(self.already_applied), "increments": self.increments,
                "rejected": self.rejected}


def flush(session_factory, client, now: datetime | None = None,
          checkpoint: Checkpoint = _no_checkpoint) -> FlushResult:
    """Claim the live counters, then apply every pending flush, one transaction each."""
    now = now or datetime.now(timezone.utc)
    result = FlushResult()
    checkpoint("claim")
    result.claimed = claim(client, now)
    checkpoint("claimed")
    failed = []
    for flush_id in pending(client):
        data = read(client, flush_id)
        checkpoint("read")
        try:
            with session_factory() as session:
                applied = apply(session, data, checkpoint)
        except TRANSIENT_ERRORS:
            raise   # the task retries; every pending flush is still there
        except Exception:  # noqa: BLE001 - one flush PostgreSQL refuses must not hold up the others
            log.exception("an analytics flush could not be applied; it stays pending in Redis")
            failed.append(flush_id)
            continue
        checkpoint("committed")
        forget(client, data)
        if applied:
            result.applied.append(flush_id)
            result.increments += data.increments
            result.rejected += data.rejected
        else:
            result.already_applied.append(flush_id)
    if failed:
        raise JobError(f"{len(failed)} analytics flush(es) could not be applied and stay pending "
                       f"({len(result.applied)} applied); see the worker log", code="flush_failed")
    return result
