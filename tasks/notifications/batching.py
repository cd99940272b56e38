"""Seed 001's batching flow, made exactly-once and race-free.

Per (recipient, batch key), in event-time order:
1. an open batch (created within ``max_age_hours`` of the event and below
   ``max_batch_size``) gets the event as a child, its ``batch_count`` is
   recounted from its children and it is re-marked unread;
2. else a single younger than 1 hour is converted: a new parent, the single
   and the event become its children;
3. else a new single is created, unless the recipient already got 20 new
   singles of this type in the event's clock hour: then the event folds into
   the recipient's overflow batch ``<type>:user:<recipient>`` (see
   ``BatchConfig.overflow_key``), so nothing is lost.

Every window is measured against the event's own time (the source row's
``created_at``), passed in from Python, never the database's ``now()``.

Concurrency: the caller's transaction takes ``pg_advisory_xact_lock`` on every
(recipient, batch key) it touches, in sorted order (no deadlock between single
and bulk calls), later the rate-limit counter rows and, only for an event over
the limit, the (recipient, overflow key) lock; then it checks dedupe keys, so
two workers never open two batches for one key and a redelivered task finds
its own row. The unique index on (user_id, dedupe_key) is the backstop. This
relies on READ COMMITTED (the default): every statement after the lock sees
what the previous lock holder committed.

Writes: one statement inserts all new rows and recounts the existing parents
that grew from their children (never ``+= 1``); a parent created in this call
gets its exact count from the plan, since all its children are in it.

``apply_events`` takes any number of events: ``notifications.record`` passes
one, ``notifications.record_many`` thousands, with the same few set-based
statements either way.
"""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from sqlalchemy import text
from sqlalchemy.orm import Session

from db.locks import xact_lock_many
from tasks.notifications.config import (
    BATCH_CONFIGS, BATCH_TEXTS, RATE_LIMIT_PER_HOUR, SINGLE_CONVERSION_HOURS, batch_texts,
)

MAX_AGE = timedelta(hours=max(c.max_age_hours for c in BATCH_CONFIGS.values()))


@dataclass
class Event:
    kind: str
    recipient_id: int
    actor_id: int
    actor_name: str
    post_id: str | None
    event_at: datetime
    dedupe_key: str
    extra: dict = field(default_factory=dict)
    scope_id: str | None = None   # the comment or conversation a batch gathers; the post by default

    def __post_init__(self):
        # Rate-limit windows are UTC clock hours, whatever the session's TimeZone.
        self.event_at = self.event_at.astimezone(timezone.utc)
        if self.scope_id is None:
            self.scope_id = self.post_id

    @property
    def config(self):
        return BATCH_CONFIGS[self.kind]

    @property
    def batch_key(self) -> str:
        return self.config.batch_key(scope_id=self.scope_id, recipient_id=self.recipient_id)

    @property
    def overflow_key(self) -> str:
        return self.config.overflow_key(self.recipient_id)

    @property
    def rate_window(self) -> tuple[int, str, datetime]:
        return (self.recipient_id, self.kind, self.event_at.replace(minute=0, second=0, microsecond=0))


@dataclass
class Outcome:
    status: str                  # created | batched | converted | folded | duplicate | self
    notification_id: str | None = None
    parent_id: str | None = None

    @property
    def wrote(self) -> bool:
        """The recipient's notifications changed (a duplicate or a self-event writes nothing)."""
        return self.status not in ("duplicate", "self")

    def as_dict(self) -> dict:
        return {"status": self.status, "notification_id": self.notification_id, "parent_id": self.parent_id}


@dataclass
class _Top:
    """A top-level row of one (recipient, batch key): the latest batch or single."""
    id: str
    created_at: datetime
    count: int
    type: str
    row: dict | None = None      # set when inserted by this call


def lock_name(user_id: int, key: str) -> str:
    """The advisory lock of one (recipient, batch key): pg_advisory_xact_lock(hashtextextended(name, 0)).

    sources.load_events(lock=True) builds the same names in SQL.
    """
    return f"notif:{user_id}:{key}"


def lock_keys(session: Session, keys: set[tuple[int, str]]) -> None:
    """Lock in the database's sort order of the names, the order every caller uses."""
    xact_lock_many(session, [lock_name(user_id, key) for user_id, key in keys])


_STATE_SQL = text("""
SELECT 'dup' AS what, n.user_id, n.dedupe_key AS key, NULL::boolean AS is_batch, NULL::text AS id,
       NULL::timestamptz AS created_at, NULL::integer AS batch_count, NULL::text AS type
FROM notifications AS n
JOIN unnest(CAST(:dedupe_users AS integer[]), CAST(:dedupe_keys AS text[])) AS d(user_id, dedupe_key)
  ON n.user_id = d.user_id AND n.dedupe_key = d.dedupe_key
UNION ALL
SELECT * FROM (
  SELECT DISTINCT ON (n.user_id, n.batch_key, n.is_batch)
         'top', n.user_id, n.batch_key, n.is_batch, n.id::text, n.created_at, n.batch_count, n.type
  FROM notifications AS n
  JOIN unnest(CAST(:group_users AS integer[]), CAST(:group_keys AS text[])) AS g(user_id, batch_key)
    ON n.user_id = g.user_id AND n.batch_key = g.batch_key
  WHERE n.parent_id IS NULL AND n.created_at >= :since
  ORDER BY n.user_id, n.batch_key, n.is_batch, n.created_at DESC
) AS latest
""")

_PEEK_COUNTERS_SQL = text("""
INSERT INTO notification_rate_limits (user_id, type, window_start, count)
SELECT u, t, w, 0 FROM unnest(CAST(:users AS integer[]), CAST(:types AS text[]),
                              CAST(:windows AS timestamptz[])) AS v(u, t, w)
ORDER BY u, t, w
ON CONFLICT (user_id, type, window_start) DO UPDATE SET count = notification_rate_limits.count
RETURNING user_id, type, window_start, count
""")

_ADD_COUNTERS_SQL = text("""
UPDATE notification_rate_limits AS r SET count = r.count + v.n
FROM unnest(CAST(:users AS integer[]), CAST(:types AS text[]), CAST(:windows AS timestamptz[]),
            CAST(:added AS integer[])) AS v(u, t, w, n)
WHERE r.user_id = v.u AND r.type = v.t AND r.window_start = v.w
""")

_CONVERT_SQL = text("""
UPDATE notifications AS n SET parent_id = CAST(v.parent AS uuid)
FROM unnest(CAST(:ids AS uuid[]), CAST(:parents AS text[])) AS v(id, parent)
WHERE n.id = v.id
""")

# Which BATCH_TEXTS entry a parent uses; mirrors config.batch_text_key.
_TEXT_KEY_SQL = """CASE WHEN p.type = 'post_interaction'
                THEN 'post_interaction:' || CASE WHEN {ntypes} = 1 THEN {only_type} ELSE '*' END
              ELSE p.type || ':' || split_part(p.batch_key, ':', 2) END"""

# The batch message from its template: the count, and the sender a conversation batch names.
_MESSAGE_SQL = ("replace(replace(CAST(:texts AS jsonb) -> counted.text_key ->> 1, '{count}', counted.n::text), "
                "'{actor}', coalesce(n.data ->> 'actor_username', ''))")

# Recompute batch_count from the children (never "+= 1": a retried task must not
# drift the count) and refresh the texts, in one statement (used by retract).
_RECOUNT_SQL = text("""
WITH counted AS (
  SELECT p.id, count(c.id) AS n,
         """ + _TEXT_KEY_SQL.format(ntypes="count(DISTINCT c.type)", only_type="min(c.type)") + """ AS text_key
  FROM notifications AS p LEFT JOIN notifications AS c ON c.parent_id = p.id
  WHERE p.id = ANY(CAST(:ids AS uuid[]))
  GROUP BY p.id, p.type, p.batch_key
), bumps AS (
  SELECT * FROM unnest(CAST(:bump_ids AS uuid[]), CAST(:bump_at AS timestamptz[])) AS b(id, at)
)
UPDATE notifications AS n
SET batch_count = counted.n,
    title = CAST(:texts AS jsonb) -> counted.text_key ->> 0,
    message = """ + _MESSAGE_SQL + """,
    last_updated_at = greatest(n.last_updated_at, coalesce(bumps.at, n.last_updated_at)),
    read = CASE WHEN bumps.at IS NULL THEN n.read ELSE false END,
    read_at = CASE WHEN bumps.at IS NULL THEN n.read_at ELSE NULL END
FROM counted LEFT JOIN bumps ON bumps.id = counted.id
WHERE n.id = counted.id AND counted.n > 0
""")

_WRITE_SQL = text("""
WITH new_rows AS (
  SELECT * FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r(
    id uuid, user_id integer, type text, title text, message text, data jsonb, read boolean,
    created_at timestamptz, last_updated_at timestamptz, parent_id uuid, is_batch boolean,
    batch_count integer, batch_key text, dedupe_key text)
), inserted AS (
  INSERT INTO notifications (id, user_id, type, title, message, data, read, created_at, last_updated_at,
                             parent_id, is_batch, batch_count, batch_key, dedupe_key)
  SELECT id, user_id, type, title, message, data, read, created_at, last_updated_at,
         parent_id, is_batch, batch_count, batch_key, dedupe_key FROM new_rows
  RETURNING 1
), counted AS (
  SELECT p.id, b.at, k.n, """ + _TEXT_KEY_SQL.format(ntypes="k.ntypes", only_type="k.only_type") + """ AS text_key
  FROM unnest(CAST(:bump_ids AS uuid[]), CAST(:bump_at AS timestamptz[])) AS b(id, at)
  JOIN notifications AS p ON p.id = b.id
  CROSS JOIN LATERAL (
    SELECT count(*) AS n, count(DISTINCT t) AS ntypes, min(t) AS only_type FROM (
      SELECT c.type AS t FROM notifications AS c WHERE c.parent_id = p.id
      UNION ALL SELECT r.type FROM new_rows AS r WHERE r.parent_id = p.id) AS children) AS k
)
UPDATE notifications AS n
SET batch_count = counted.n,
    title = CAST(:texts AS jsonb) -> counted.text_key ->> 0,
    message = """ + _MESSAGE_SQL + """,
    last_updated_at = greatest(n.last_updated_at, counted.at), read = false, read_at = NULL
FROM counted WHERE n.id = counted.id
""")


def _json_default(value):
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


_DELETE_EMPTY_PARENTS_SQL = text("""
DELETE FROM notifications AS p
WHERE p.id = ANY(CAST(:ids AS uuid[])) AND p.is_batch
  AND NOT EXISTS (SELECT 1 FROM notifications AS c WHERE c.parent_id = p.id)
""")

_TEXTS_JSON = json.dumps({key: list(value) for key, value in BATCH_TEXTS.items()}, ensure_ascii=False)


def _single_texts(event: Event) -> tuple[str, str]:
    config = event.config
    values = {"actor": event.actor_name, "emoji": event.extra.get("emoji_code") or "an emoji",
              "where": "comment" if event.extra.get("comment_id") else "post",
              "reason": event.extra.get("reason") or "it broke the community rules"}
    return config.single_title, config.single_template.format_map(values)


def _row(event: Event, *, parent_id: str | None, batch_key: str) -> dict:
    title, message = _single_texts(event)
    data = {"actor_id": event.actor_id, "actor_username": event.actor_name, **event.extra}
    if event.post_id is not None:
        data["post_id"] = event.post_id
    return {"id": str(uuid.uuid4()), "user_id": event.recipient_id, "type": event.kind, "title": title,
            "message": message, "data": data, "read": False, "created_at": event.event_at,
            "last_updated_at": event.event_at, "parent_id": parent_id, "is_batch": False, "batch_count": 1,
            "batch_key": batch_key, "dedupe_key": event.dedupe_key}


def _parent_row(event: Event, *, batch_key: str, parent_type: str) -> dict:
    scope = batch_key.split(":")[1]
    data = None if scope == "user" else {f"{scope}_id": event.scope_id}
    if scope == "conversation":
        data["actor_username"] = event.actor_name
    return {"id": str(uuid.uuid4()), "user_id": event.recipient_id, "type": parent_type, "title": "",
            "message": "", "data": data, "read": False, "created_at": event.event_at,
            "last_updated_at": event.event_at, "parent_id": None, "is_batch": True, "batch_count": 0,
            "batch_key": batch_key, "dedupe_key": None}


class _Plan:
    """The batching flow run in memory over the locked state; flushed with set-based SQL."""

    def __init__(self, state: dict, loaded: set, counters: dict | None):
        self.state = state                  # (user_id, key) -> {"batch": _Top|None, "single": _Top|None}
        self.loaded = loaded                # groups locked and read from the database
        self.missing_groups: set = set()    # overflow groups this plan needs but were not loaded
        self.counters = counters            # (user_id, type, window) -> count, None = not loaded
        self.consumed: dict = {}
        self.parents: list[dict] = []
        self.rows: list[dict] = []
        self.conversions: list[tuple[str, str]] = []
        self.touched: dict[str, datetime] = {}          # existing parents that grew -> newest event
        self.new_parent_child_types: dict[str, set[str]] = {}
        self.singles_wanted = False

    def _group(self, user_id: int, key: str) -> dict:
        return self.state.setdefault((user_id, key), {"batch": None, "single": None})

    def _add_child(self, event: Event, batch: _Top, key: str) -> dict:
        row = _row(event, parent_id=batch.id, batch_key=key)
        self.rows.append(row)
        batch.count += 1
        if batch.row is not None:
            # A parent inserted by this call: every child is in this plan, under the
            # lock, so its count and texts are exact here.
            batch.row["batch_count"] = batch.count
            batch.row["last_updated_at"] = max(batch.row["last_updated_at"], event.event_at)
            self.new_parent_child_types[batch.id].add(event.kind)
            batch.row["title"], batch.row["message"] = batch_texts(
                batch.row["type"], batch.row["batch_key"], batch.count, self.new_parent_child_types[batch.id],
                (batch.row["data"] or {}).get("actor_username", ""))
        else:
            last = self.touched.get(batch.id)
            self.touched[batch.id] = event.event_at if last is None else max(last, event.event_at)
        return row

    def _convert(self, event: Event, group: dict, key: str, parent_type: str) -> dict:
        single: _Top = group["single"]
        parent = _parent_row(event, batch_key=key, parent_type=parent_type)
        self.parents.append(parent)
        if single.row is not None:
            single.row["parent_id"] = parent["id"]
        else:
            self.conversions.append((single.id, parent["id"]))
        group["single"] = None
        group["batch"] = _Top(parent["id"], event.event_at, 1, parent_type, parent)
        self.new_parent_child_types[parent["id"]] = {single.type}
        return self._add_child(event, group["batch"], key)

    def apply(self, event: Event) -> Outcome:
        config = event.config
        key = event.batch_key
        group = self._group(event.recipient_id, key)
        batch: _Top | None = group["batch"]
        single: _Top | None = group["single"]
        if (batch is not None and batch.created_at >= event.event_at - timedelta(hours=config.max_age_hours)
                and (config.max_batch_size is None or batch.count < config.max_batch_size)):
            row = self._add_child(event, batch, key)
            return Outcome("batched", row["id"], batch.id)
        if single is not None and single.created_at >= event.event_at - timedelta(hours=SINGLE_CONVERSION_HOURS):
            row = self._convert(event, group, key, config.parent_type)
            return Outcome("converted", row["id"], row["parent_id"])
        self.singles_wanted = True
        if self.counters is not None:
            window = event.rate_window
            used = self.counters.get(window, 0) + self.consumed.get(window, 0)
            if used >= RATE_LIMIT_PER_HOUR:
                return self._fold(event)
            self.consumed[window] = self.consumed.get(window, 0) + 1
        row = _row(event, parent_id=None, batch_key=key)
        self.rows.append(row)
        group["single"] = _Top(row["id"], event.event_at, 1, event.kind, row)
        return Outcome("created", row["id"], None)

    def _fold(self, event: Event) -> Outcome:
        config = event.config
        key = event.overflow_key
        if (event.recipient_id, key) not in self.loaded:
            self.missing_groups.add((event.recipient_id, key))
        group = self._group(event.recipient_id, key)
        batch, single = group["batch"], group["single"]
        window = timedelta(hours=config.max_age_hours)
        if batch is not None and batch.created_at >= event.event_at - window:
            row = self._add_child(event, batch, key)
        elif single is not None and single.created_at >= event.event_at - window:
            row = self._convert(event, group, key, config.notification_type)
        else:
            parent = _parent_row(event, batch_key=key, parent_type=config.notification_type)
            self.parents.append(parent)
            group["batch"] = _Top(parent["id"], event.event_at, 0, config.notification_type, parent)
            self.new_parent_child_types[parent["id"]] = set()
            row = self._add_child(event, group["batch"], key)
        return Outcome("folded", row["id"], row["parent_id"])


def _load_state(session: Session, events: list[Event], groups: set[tuple[int, str]],
                since: datetime) -> tuple[set, dict]:
    """Dedupe keys already recorded for ``events``, and the latest batch and single of each group."""
    groups = sorted(groups)
    result = session.execute(_STATE_SQL, {
        "dedupe_users": [e.recipient_id for e in events], "dedupe_keys": [e.dedupe_key for e in events],
        "group_users": [g[0] for g in groups], "group_keys": [g[1] for g in groups],
        "since": since,
    })
    seen, state = set(), {}
    for what, user_id, key, is_batch, row_id, created_at, batch_count, row_type in result:
        if what == "dup":
            seen.add((user_id, key))
        else:
            group = state.setdefault((user_id, key), {"batch": None, "single": None})
            group["batch" if is_batch else "single"] = _Top(row_id, created_at, batch_count, row_type)
    return seen, state


def _peek_counters(session: Session, events: list[Event]) -> dict:
    windows = sorted({e.rate_window for e in events})
    rows = session.execute(_PEEK_COUNTERS_SQL, {
        "users": [w[0] for w in windows], "types": [w[1] for w in windows], "windows": [w[2] for w in windows]})
    return {(u, t, w): n for u, t, w, n in rows}


def recount_parents(session: Session, parent_ids: list[str], bumped: dict[str, datetime] | None = None, *,
                    delete_empty: bool = False) -> int:
    """Recompute batch_count (and texts) of parents from their children.

    A parent in ``bumped`` grew: it is re-marked unread and its last_updated_at
    moves forward to the newest event. With ``delete_empty`` a parent left
    without children is deleted; returns how many were.
    """
    if not parent_ids:
        return 0
    bumped = bumped or {}
    session.execute(_RECOUNT_SQL, {"ids": list(parent_ids), "bump_ids": list(bumped),
                                   "bump_at": list(bumped.values()), "texts": _TEXTS_JSON})
    if delete_empty:
        return session.execute(_DELETE_EMPTY_PARENTS_SQL, {"ids": list(parent_ids)}).rowcount
    return 0


def apply_events(session: Session, events: list[Event], *, keys_locked: bool = False) -> list[Outcome]:
    """Record events as notifications (see the module docstring). The caller commits.

    ``keys_locked``: the caller already holds the lock of every event's batch
    key (sources.load_events(lock=True) takes it with the row).
    """
    outcomes: list[Outcome | None] = [None] * len(events)
    live: list[int] = []
    in_call: set[tuple[int, str]] = set()
    for index, event in enumerate(events):
        if event.actor_id == event.recipient_id:
            outcomes[index] = Outcome("self")
        elif (event.recipient_id, event.dedupe_key) in in_call:
            outcomes[index] = Outcome("duplicate")
        else:
            in_call.add((event.recipient_id, event.dedupe_key))
            live.append(index)
    if not live:
        return outcomes  # type: ignore[return-value]
    live_events = [events[i] for i in live]
    groups = {(e.recipient_id, e.batch_key) for e in live_events}
    if not keys_locked:
        lock_keys(session, groups)
    since = min(e.event_at for e in live_events) - MAX_AGE
    seen, state = _load_state(session, live_events, groups, since)
    todo = []
    for index in live:
        event = events[index]
        if (event.recipient_id, event.dedupe_key) in seen:
            outcomes[index] = Outcome("duplicate")
        else:
            todo.append(index)
    todo.sort(key=lambda i: events[i].event_at)

    def plan_with(counters):
        fresh_state = {k: {s: (None if t is None else _Top(t.id, t.created_at, t.count, t.type))
                           for s, t in v.items()}
                       for k, v in state.items()}
        plan = _Plan(fresh_state, groups, counters)
        return plan, {i: plan.apply(events[i]) for i in todo}

    # Plan without the rate limit first: most events join a batch, and then the
    # counters are never read or locked. If any would create a single, plan
    # again with the counters locked (row locks of the upsert). If an event is
    # over the limit, lock and read its overflow group and plan a last time.
    # Lock order is always batch keys -> counter rows -> overflow keys, each
    # sorted, so no two recording transactions can deadlock.
    plan, planned = plan_with(None)
    if plan.singles_wanted:
        counters = _peek_counters(session, [events[i] for i in todo])
        plan, planned = plan_with(counters)
        if plan.missing_groups:
            lock_keys(session, plan.missing_groups)
            _seen, overflow_state = _load_state(session, [], plan.missing_groups, since)
            state.update(overflow_state)
            groups |= plan.missing_groups
            plan, planned = plan_with(counters)
    for index, outcome in planned.items():
        outcomes[index] = outcome

    if plan.rows or plan.parents or plan.touched:
        # One statement: insert every new row (parents first; foreign keys are
        # checked at the end of the statement) and recount the existing parents
        # that grew from their stored children plus the ones inserted here.
        session.execute(_WRITE_SQL, {
            "rows": json.dumps(plan.parents + plan.rows, default=_json_default, ensure_ascii=False),
            "bump_ids": list(plan.touched), "bump_at": list(plan.touched.values()), "texts": _TEXTS_JSON})
    if plan.conversions:
        session.execute(_CONVERT_SQL, {"ids": [c[0] for c in plan.conversions],
                                       "parents": [c[1] for c in plan.conversions]})
    if plan.consumed:
        windows = sorted(plan.consumed)
        session.execute(_ADD_COUNTERS_SQL, {
            "users": [w[0] for w in windows], "types": [w[1] for w in windows],
            "windows": [w[2] for w in windows], "added": [plan.consumed[w] for w in windows]})
    return outcomes  # type: ignore[return-value]


def retract_actor(session: Session, *, kind: str, actor_id: int, recipient_id: int,
                  scope_id: str | None) -> dict:
    """Remove an actor's notifications of ``kind`` (unlike, unfollow, withdrawn request) about
    ``scope_id`` (the post or comment; None for user-scoped kinds); recount or delete parents."""
    config = BATCH_CONFIGS[kind]
    batch_key = config.batch_key(scope_id=scope_id, recipient_id=recipient_id)
    # Same order as apply_events: the batch key, then the overflow key.
    lock_keys(session, {(recipient_id, batch_key)})
    lock_keys(session, {(recipient_id, config.overflow_key(recipient_id))})
    match = {"actor_id": actor_id}
    if config.batch_scope != "user":
        match[f"{config.batch_scope}_id"] = scope_id
    parents = session.execute(text(
        "DELETE FROM notifications WHERE user_id = :user_id AND type = :kind AND is_batch = false "
        "AND data @> CAST(:match AS jsonb) RETURNING parent_id::text"),
        {"user_id": recipient_id, "kind": kind, "match": json.dumps(match)}).scalars().all()
    removed = len(parents)
    parent_ids = sorted({p for p in parents if p})
    deleted = recount_parents(session, parent_ids, delete_empty=True)
    return {"status": "retracted" if removed else "nothing", "removed": removed,
            "parents_recounted": len(parent_ids) - deleted, "parents_deleted": deleted}


def _retract_where(session: Session, where: str, params: dict) -> int:
    """Remove the single and child rows matching ``where`` under their batch-key locks;
    recount their parents (deleting the emptied ones). Returns the rows removed."""
    groups = session.execute(text(f"SELECT DISTINCT user_id, batch_key FROM notifications "
                                  f"WHERE NOT is_batch AND ({where})"), params).all()
    if not groups:
        return 0
    lock_keys(session, {(user_id, key) for user_id, key in groups})
    parents = session.execute(text(f"DELETE FROM notifications WHERE NOT is_batch AND ({where}) "
                                   f"RETURNING parent_id::text"), params).scalars().all()
    recount_parents(session, sorted({p for p in parents if p}), delete_empty=True)
    return len(parents)


def retract_between(session: Session, user_a: int, user_b: int, *, kinds: tuple[str, ...] | None = None,
                    keep: tuple[str, ...] = ()) -> int:
    """A block: remove every notification either user got from the other, of any kind.

    With ``kinds``: only notifications of those types, and none recorded under a dedupe
    key in ``keep`` (a friendship sync keeps the current row's request and accept)."""
    where = ("((user_id = :a AND data ->> 'actor_id' = CAST(:b AS text)) "
             "OR (user_id = :b AND data ->> 'actor_id' = CAST(:a AS text)))")
    params = {"a": user_a, "b": user_b}
    if kinds is not None:
        where += " AND type = ANY(CAST(:kinds AS text[])) AND dedupe_key <> ALL(CAST(:keep AS text[]))"
        params.update(kinds=list(kinds), keep=list(keep))
    return _retract_where(session, where, params)


def retract_dedupe_keys(session: Session, recorded: list[tuple[int, str]]) -> int:
    """Remove the notifications recorded under these (recipient, dedupe key) pairs
    (moderation hiding a comment or the mentions in a post): the unique index finds each."""
    return _retract_where(
        session, "(user_id, dedupe_key) IN (SELECT * FROM unnest(CAST(:users AS integer[]), CAST(:keys AS text[])))",
        {"users": [user_id for user_id, _ in recorded], "keys": [key for _, key in recorded]})


def unread_count(session: Session, user_id: int) -> int:
    """Seed 001's unread count: parents (and singles) only, never batch children."""
    return session.execute(text(
        "SELECT count(*) FROM notifications WHERE user_id = :user_id AND read = false AND parent_id IS NULL"),
        {"user_id": user_id}).scalar_one()


def mark_read(session: Session, user_id: int, *, notification_ids: list[str] | None, all: bool,
              now: datetime) -> int:
    """Mark top-level notifications (and their children) read; returns top-level rows changed.

    ``read`` and ``read_at`` always change together (a check constraint holds them equal).
    """
    if all:
        condition, params = "TRUE", {}
    else:
        condition = "(id = ANY(CAST(:ids AS uuid[])) OR parent_id = ANY(CAST(:ids AS uuid[])))"
        params = {"ids": list(notification_ids or [])}
    return session.execute(text(
        f"WITH changed AS (UPDATE notifications SET read = true, read_at = :now "
        f"WHERE user_id = :user_id AND read = false AND {condition} RETURNING parent_id) "
        f"SELECT count(*) FROM changed WHERE parent_id IS NULL"),
        {"user_id": user_id, "now": now, **params}).scalar_one()


RATE_LIMIT_RETENTION = timedelta(hours=2)
PRUNE_CHUNK = 10_000


def prune_rate_limits(session: Session, *, now: datetime) -> int:
    """Delete one bounded chunk of rate-limit windows that ended over an hour ago."""
    return session.execute(text(
        "DELETE FROM notification_rate_limits WHERE ctid IN (SELECT ctid FROM notification_rate_limits "
        "WHERE window_start < :cutoff LIMIT :chunk)"),
        {"cutoff": now - RATE_LIMIT_RETENTION, "chunk": PRUNE_CHUNK}).rowcount
