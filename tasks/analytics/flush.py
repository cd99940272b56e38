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
import os
import re
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone

from sqlalchemy import text
from sqlalchemy.orm import Session

import settings
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


_clients: dict[tuple[int, str], object] = {}


def analytics_redis():
    """ANALYTICS_REDIS_URL's Redis, else the broker's; one client per process."""
    url = settings.current().analytics_redis_url
    if url is None:
        from workers.broker import redis_client

        found = redis_client()
        if found is None:
            raise RuntimeError("analytics needs Redis: set ANALYTICS_REDIS_URL when the broker is not Redis")
        return found
    key = (os.getpid(), url)   # a forked child builds its own
    if key not in _clients:
        import redis

        _clients[key] = redis.Redis.from_url(url, socket_timeout=5.0, socket_connect_timeout=2.0)
    return _clients[key]


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
    for name in data.flush_keys:
        day = datetime.strptime(name.rsplit(":", 1)[1], "%Y%m%d").date()
        # One reply: a renamed hash never changes again, and holds one field per post or profile seen
        # in a minute (tens of thousands at most: milliseconds of Redis time).
        for raw_field, raw_count in client.hgetall(name).items():
            kind, _, subject = raw_field.decode().partition(":")
            count = int(raw_count)
            data.counters += 1
            data.increments += count
            if not 0 < count < _MAX_COUNT:
                data.rejected += 1   # no minute has two billion views of one post: a broken writer
            elif kind in (keys.VIEW, keys.IMPRESSION) and _UUID.match(subject):
                (data.views if kind == keys.VIEW else data.impressions)[(day, subject)] += count
            elif kind == keys.PROFILE and subject.isdecimal() and 0 < int(subject) < 2**31:
                data.profile_views[(day, int(subject))] += count
            else:
                data.rejected += 1   # written by something other than the client; counted, never applied
    _read_uniques(client, data)
    return data


# PFCOUNT of many keys, counted in Redis: one round trip per chunk instead of one command each.
_PFCOUNTS = """
local counts = {}
for i, key in ipairs(KEYS) do counts[i] = redis.call('PFCOUNT', key) end
return counts
"""
_PFCOUNT_CHUNK = 5000


def _read_uniques(client, data: FlushData) -> None:
    wanted = ([(data.unique_viewers, keys.VIEW, k) for k in data.views]
              + [(data.impression_reach, keys.IMPRESSION, k) for k in data.impressions]
              + [(data.profile_viewers, keys.PROFILE, k) for k in data.profile_views])
    script = client.register_script(_PFCOUNTS)
    buckets: dict[date, str] = {}
    for start in range(0, len(wanted), _PFCOUNT_CHUNK):
        chunk = wanted[start:start + _PFCOUNT_CHUNK]
        names = [keys.uniques_key(kind, buckets.get(day) or buckets.setdefault(day, day.strftime("%Y%m%d")),
                                  str(subject)) for _t, kind, (day, subject) in chunk]
        for (target, _kind, key), estimate in zip(chunk, script(keys=names)):
            target[key] = int(estimate)


_CLAIM_FLUSH_SQL = text(
    "INSERT INTO analytics_flushes (id, counters, increments, rejected) VALUES (:id, :counters, :increments, "
    ":rejected) ON CONFLICT (id) DO NOTHING RETURNING id")

# One pass over posts: the UPDATE of views_count returns the authors the daily rows need (posts
# shown but not opened, with no views to add, are looked up on their own). Posts that no longer
# exist drop out, and are counted as rejected.
_POST_VIEWS_SQL = text("""
    WITH counted AS (
        -- Ids arrive as one comma-separated string and days as indexes into a short list of
        -- days: adapting 20,000 Python strings or dates one by one costs more than the upsert.
        SELECT c.post_id, (CAST(:day_list AS date[]))[c.day_index] AS day, c.views, c.unique_viewers,
               c.impressions, c.impression_reach
        FROM unnest(CAST(string_to_array(:post_ids, ',') AS uuid[]), CAST(:day_indexes AS int[]),
                    CAST(:views AS int[]), CAST(:uniques AS int[]), CAST(:impressions AS int[]),
                    CAST(:reach AS int[]))
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


def apply(session: Session, data: FlushData, checkpoint: Checkpoint = _no_checkpoint) -> bool:
    """Add one flush's counts in the caller's transaction; False if it was applied before."""
    claimed = session.execute(_CLAIM_FLUSH_SQL, {
        "id": data.flush_id, "counters": data.counters, "increments": data.increments,
        "rejected": data.rejected}).first()
    if claimed is None:
        return False
    post_keys = sorted(set(data.views) | set(data.impressions))
    touched: dict[date, set[int]] = defaultdict(set)
    kept = 0
    if post_keys:
        day_list = sorted({d for d, _p in post_keys})
        index_of = {d: n + 1 for n, d in enumerate(day_list)}
        for author, day, posts in session.execute(_POST_VIEWS_SQL, {
                "post_ids": ",".join(p for _d, p in post_keys), "day_list": day_list,
                "day_indexes": [index_of[d] for d, _p in post_keys],
                "views": [data.views.get(k, 0) for k in post_keys],
                "uniques": [data.unique_viewers.get(k, 0) for k in post_keys],
                "impressions": [data.impressions.get(k, 0) for k in post_keys],
                "reach": [data.impression_reach.get(k, 0) for k in post_keys]}):
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
