"""The one table of denormalized counters, and the SQL generated from it.

Adding a counter means adding one ``CounterSpec`` row to ``COUNTERS`` (plus the
column and its CHECK in a migration, and a migration that re-installs the
dirty triggers with ``trigger_ddl()``). Every recount, drift check and trigger
below is generated from this table; no counter is named anywhere else.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ParentSpec:
    """A table that carries counters, with the type of its primary key."""

    table: str
    key_type: str  # SQL type of ``id``: the dirty table stores ids as text


@dataclass(frozen=True)
class CounterSpec:
    parent_table: str          # table that holds the counter
    column: str                # the counter column
    source_table: str          # rows being counted
    source_fk: str             # column of the source that points at the parent's id
    filter_sql: str | None = None        # extra condition on source rows (in the source's terms)
    filter_columns: tuple[str, ...] = ()  # columns the filter reads: an UPDATE of them marks dirty
    # A symmetric relation: the row counts once for the parent at each end (a friendship
    # counts for user1 and for user2). None for an ordinary one-sided count.
    second_fk: str | None = None

    @property
    def fks(self) -> tuple[str, ...]:
        return (self.source_fk,) if self.second_fk is None else (self.source_fk, self.second_fk)


PARENTS: dict[str, ParentSpec] = {
    "posts": ParentSpec("posts", "uuid"),
    "users": ParentSpec("users", "integer"),
    "comments": ParentSpec("comments", "uuid"),
    "groups": ParentSpec("groups", "uuid"),
    # '<conversation id>:<user id>', computed (db/models/graph.py: ConversationMember).
    "conversation_members": ParentSpec("conversation_members", "text"),
}

COUNTERS: tuple[CounterSpec, ...] = (
    CounterSpec("posts", "hearts_count", "likes", "post_id"),
    CounterSpec("posts", "reactions_count", "emoji_reactions", "post_id"),
    CounterSpec("posts", "shares_count", "shares", "post_id"),
    CounterSpec("posts", "comments_count", "comments", "post_id"),
    CounterSpec("comments", "replies_count", "comments", "parent_id"),
    CounterSpec("users", "followers_count", "follows", "followed_id", "status = 'active'", ("status",)),
    CounterSpec("users", "following_count", "follows", "follower_id", "status = 'active'", ("status",)),
    CounterSpec("users", "posts_count", "posts", "author_id"),
    # Seed 004's graph (db/models/graph.py).
    CounterSpec("users", "friends_count", "friendships", "user1_id", "status = 'accepted'", ("status",),
                second_fk="user2_id"),
    CounterSpec("users", "unread_messages_count", "messages", "receiver_id", "NOT is_read", ("is_read",)),
    CounterSpec("conversation_members", "unread_count", "messages", "inbox_id", "NOT is_read", ("is_read",)),
    CounterSpec("comments", "like_count", "comment_reactions", "comment_id"),
    CounterSpec("groups", "member_count", "group_members", "group_id"),
)

# The source tables of the Grateful schema (migrations 0004 and 0010 install their triggers).
GRATEFUL_SOURCES = ("likes", "emoji_reactions", "shares", "comments", "follows", "posts")


def counters_on(sources: tuple[str, ...], counters: tuple[CounterSpec, ...] = COUNTERS) -> tuple[CounterSpec, ...]:
    """The counters of these source tables: what a migration that knows only them installs."""
    return tuple(c for c in counters if c.source_table in sources)


def counters_of(parent_table: str, counters: tuple[CounterSpec, ...] = COUNTERS) -> tuple[CounterSpec, ...]:
    return tuple(c for c in counters if c.parent_table == parent_table)


def parent_tables(counters: tuple[CounterSpec, ...] = COUNTERS) -> tuple[str, ...]:
    return tuple(dict.fromkeys(c.parent_table for c in counters))


def source_tables(counters: tuple[CounterSpec, ...] = COUNTERS) -> tuple[str, ...]:
    return tuple(dict.fromkeys(c.source_table for c in counters))


# --- recount SQL -----------------------------------------------------------------

def _parent_ids(counter: CounterSpec, key_filter: str) -> str:
    """SELECT parent_id: one row per counted source row and end (two ends for a symmetric count)."""
    selects = []
    for fk in counter.fks:
        conditions = [f"{fk} IS NOT NULL", key_filter.format(fk=fk)]
        if counter.filter_sql:
            conditions.append(f"({counter.filter_sql})")
        selects.append(f"SELECT {fk} AS parent_id FROM {counter.source_table} WHERE {' AND '.join(conditions)}")
    return " UNION ALL ".join(selects)


def _aggregate(counter: CounterSpec, index: int, key_filter: str) -> str:
    """``count(*)`` of one counter's source rows, grouped by parent id, bounded by ``key_filter``
    (a condition on the placeholder ``{fk}``) so the scan is a range or an id list, never the table."""
    if counter.second_fk is None:
        conditions = [f"{counter.source_fk} IS NOT NULL", key_filter.format(fk=counter.source_fk)]
        if counter.filter_sql:
            conditions.append(f"({counter.filter_sql})")
        source = (f"SELECT {counter.source_fk} AS parent_id, count(*) AS n FROM {counter.source_table} "
                  f"WHERE {' AND '.join(conditions)} GROUP BY {counter.source_fk}")
    else:
        source = f"SELECT parent_id, count(*) AS n FROM ({_parent_ids(counter, key_filter)}) e GROUP BY parent_id"
    return f"LEFT JOIN ({source}) s{index} ON s{index}.parent_id = p.id"


def truth_select(parent_table: str, parent_filter: str, key_filter: str,
                 counters: tuple[CounterSpec, ...] = COUNTERS, only_drifted: bool = True,
                 with_ctid: bool = False) -> str:
    """SELECT id, then stored and true value of every counter of ``parent_table``.

    Columns: ``id, <col>__stored, <col>__true`` per counter (after ``row_ctid``, the
    row's physical address, with ``with_ctid``). ``parent_filter`` bounds the parent
    rows (``p.id = ANY(:ids)`` or a key range); ``key_filter`` bounds each source scan
    the same way, written against ``{fk}``.
    """
    specs = counters_of(parent_table, counters)
    columns = ["p.ctid AS row_ctid", "p.id AS id"] if with_ctid else ["p.id AS id"]
    for i, c in enumerate(specs):
        columns.append(f"p.{c.column} AS {c.column}__stored")
        columns.append(f"coalesce(s{i}.n, 0)::integer AS {c.column}__true")
    joins = " ".join(_aggregate(c, i, key_filter) for i, c in enumerate(specs))
    where = parent_filter
    if only_drifted:
        stored = ", ".join(f"p.{c.column}" for c in specs)
        truth = ", ".join(f"coalesce(s{i}.n, 0)" for i, c in enumerate(specs))
        where += f" AND ROW({stored}) IS DISTINCT FROM ROW({truth})"
    return f"SELECT {', '.join(columns)} FROM {parent_table} p {joins} WHERE {where}"


def ids_param(parent_table: str) -> str:
    """The ``:ids`` bind cast to the parent's key type (psycopg sends a str list as text[])."""
    return f"CAST(:ids AS {PARENTS[parent_table].key_type}[])"


def repair_sql(parent_table: str, counters: tuple[CounterSpec, ...] = COUNTERS) -> str:
    """One statement: recount the locked ids (``:ids``), write only counters that differ,
    and append one ``counter_drift`` row per fixed counter. Returns one row per fix.

    The caller holds the row locks on ``:ids`` (taken in an earlier statement), so the
    stored values read here are the ones being overwritten and a concurrent writer's
    committed rows are all visible to this fresh statement. The locks also pin each
    row's version, so the UPDATE finds its rows by the ctid just read (a TID scan)
    instead of probing the primary key a second time: 13% of the statement at 1 M posts.
    """
    specs = counters_of(parent_table, counters)
    ids = ids_param(parent_table)
    truth = truth_select(parent_table, f"p.id = ANY({ids})", "{fk} = ANY(" + ids + ")", counters,
                         with_ctid=True)
    assignments = ", ".join(f"{c.column} = d.{c.column}__true" for c in specs)
    returning = ", ".join(f"d.{c.column}__stored, d.{c.column}__true" for c in specs)
    values = ", ".join(f"('{c.column}', fixed.{c.column}__stored, fixed.{c.column}__true)" for c in specs)
    return f"""
WITH d AS ({truth}),
fixed AS (
    UPDATE {parent_table} t SET {assignments} FROM d WHERE t.ctid = d.row_ctid
    RETURNING d.id, {returning}
)
INSERT INTO counter_drift (run_id, table_name, column_name, entity_id, stored_value, true_value)
SELECT :run_id, '{parent_table}', v.column_name, fixed.id::text, v.stored, v.truth
FROM fixed CROSS JOIN LATERAL (VALUES {values}) v(column_name, stored, truth)
WHERE v.stored IS DISTINCT FROM v.truth
RETURNING column_name, entity_id, stored_value, true_value
"""


def drift_sql(parent_table: str, counters: tuple[CounterSpec, ...] = COUNTERS) -> str:
    """Read-only: the drifted rows among ``:ids`` with stored and true values (dry runs)."""
    ids = ids_param(parent_table)
    return truth_select(parent_table, f"p.id = ANY({ids})", "{fk} = ANY(" + ids + ")", counters)


def range_condition(parent_table: str, column: str, bounded_below: bool, bounded_above: bool) -> str:
    """``after < column <= upto`` (either side optional): a keyset chunk of a sweep."""
    key_type = PARENTS[parent_table].key_type
    parts = []
    if bounded_below:
        parts.append(f"{column} > CAST(:after AS {key_type})")
    if bounded_above:
        parts.append(f"{column} <= CAST(:upto AS {key_type})")
    return " AND ".join(parts) or "TRUE"


def range_sweep_sql(parent_table: str, bounded_below: bool, bounded_above: bool,
                    counters: tuple[CounterSpec, ...] = COUNTERS) -> str:
    """Read-only, one statement per keyset chunk: ``checked`` (the chunk's rows) and
    ``drifted`` (a JSON array of its drifted rows, in ``truth_select``'s columns).

    Each source is scanned by the same key range (an index range scan), so a chunk costs
    O(chunk), not O(table), and the parent range is read once: counting it in a second
    statement cost a sixth of the detection time.
    """
    specs = counters_of(parent_table, counters)
    stored = ", ".join(f"t.{c.column}__stored" for c in specs)
    truth = ", ".join(f"t.{c.column}__true" for c in specs)
    rows = truth_select(parent_table, range_condition(parent_table, "p.id", bounded_below, bounded_above),
                        range_condition(parent_table, "{fk}", bounded_below, bounded_above), counters,
                        only_drifted=False)
    return (f"SELECT count(*) AS checked, coalesce(jsonb_agg(to_jsonb(t)) FILTER "
            f"(WHERE ROW({stored}) IS DISTINCT FROM ROW({truth})), '[]') AS drifted FROM ({rows}) t")


def chunk_end_sql(parent_table: str, bounded_below: bool) -> str:
    """The id ``:size`` rows after ``:after`` in key order (an index-only keyset step),
    or no row when fewer remain: then the chunk is the table's last."""
    # Qualified p.id: a bare "ORDER BY id" would sort by the text output column and lose the index.
    where = f"WHERE p.id > CAST(:after AS {PARENTS[parent_table].key_type})" if bounded_below else ""
    return f"SELECT p.id::text AS chunk_end FROM {parent_table} p {where} ORDER BY p.id OFFSET :size - 1 LIMIT 1"


def lock_sql(parent_table: str) -> str:
    """Lock a batch's parent rows in key order, skipping rows a writer holds.

    FOR NO KEY UPDATE, not FOR UPDATE: it is the lock our UPDATE of a non-key column
    takes anyway, and unlike FOR UPDATE it does not conflict with the FOR KEY SHARE
    lock every INSERT INTO likes/follows/... takes on its parent through the foreign
    key, so a reconcile never blocks the web tier's inserts.
    """
    return (f"SELECT p.id::text AS locked_id FROM {parent_table} p WHERE p.id = ANY({ids_param(parent_table)}) "
            f"ORDER BY p.id FOR NO KEY UPDATE SKIP LOCKED")


def exists_sql(parent_table: str) -> str:
    """Which of ``:ids`` still exist (a plain read: it sees rows other transactions hold)."""
    return (f"SELECT p.id::text AS existing_id FROM {parent_table} p "
            f"WHERE p.id = ANY({ids_param(parent_table)}) ORDER BY p.id")


def aggregate_floor_sql(counter: CounterSpec) -> str:
    """The bare aggregate over one counter's whole source: the benchmark's floor."""
    if counter.second_fk is not None:
        return f"SELECT parent_id, count(*) FROM ({_parent_ids(counter, 'TRUE')}) e GROUP BY parent_id"
    where = f" WHERE {counter.filter_sql}" if counter.filter_sql else ""
    return (f"SELECT {counter.source_fk}, count(*) FROM {counter.source_table}{where} "
            f"GROUP BY {counter.source_fk}")


# --- dirty-marking triggers ------------------------------------------------------

def _trigger_name(source_table: str, event: str) -> str:
    return f"counter_dirty_{source_table}_{event.lower()}"


def _function_name(source_table: str, event: str) -> str:
    return f"counter_dirty_mark_{source_table}_{event.lower()}"


def _parent_fks(specs: tuple[CounterSpec, ...]) -> list[tuple[str, str]]:
    """The distinct (parent table, fk column) pairs of a source's counters."""
    return list(dict.fromkeys((c.parent_table, fk) for c in specs for fk in c.fks))


def _mark_selects(specs: tuple[CounterSpec, ...], alias: str, from_clause: str) -> list[str]:
    """One SELECT of (parent table, parent id) per distinct (parent table, fk) of a source."""
    selects = []
    for parent, fk in _parent_fks(specs):
        where = f"{alias}.{fk} IS NOT NULL"
        selects.append(f"SELECT DISTINCT '{parent}'::text, {alias}.{fk}::text FROM {from_clause} WHERE {where}")
    return selects


def trigger_ddl(counters: tuple[CounterSpec, ...] = COUNTERS) -> list[str]:
    """CREATE FUNCTION / CREATE TRIGGER statements for every source table.

    INSERT and DELETE: statement-level AFTER triggers with transition tables, one
    INSERT INTO counter_dirty per statement whatever its row count, so a bulk write
    costs one set-based insert.

    UPDATE: a row-level trigger on the foreign-key and filter columns only
    (``AFTER UPDATE OF … FOR EACH ROW WHEN (old IS DISTINCT FROM new)``), marking
    the old and the new parent. Almost no update changes those columns: an edit, an
    emoji change, the counter repair's own ``UPDATE posts SET hearts_count``, a
    flush of ``views_count`` or the trending scores touch none of them, and then
    PostgreSQL does not fire the trigger at all. A statement-level UPDATE trigger
    had to capture both transition tables of every such statement and join them
    (about 90 ms per 20,000 rows), and PL/pgSQL kept the plan of a connection's
    first UPDATE: after a first update of no rows, a nested loop that made a later
    20,000-row update take a minute.
    """
    statements = []
    for source in source_tables(counters):
        specs = tuple(c for c in counters if c.source_table == source)
        watched = list(dict.fromkeys([fk for c in specs for fk in c.fks]
                                     + [col for c in specs for col in c.filter_columns]))
        bodies = {
            "INSERT": "INSERT INTO counter_dirty (parent_table, parent_id)\n    "
                      + "\n    UNION\n    ".join(_mark_selects(specs, "n", "new_rows n")),
            "DELETE": "INSERT INTO counter_dirty (parent_table, parent_id)\n    "
                      + "\n    UNION\n    ".join(_mark_selects(specs, "o", "old_rows o")),
            "UPDATE": _update_mark(specs),
        }
        fired = {
            "INSERT": f"AFTER INSERT ON {source} REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT",
            "DELETE": f"AFTER DELETE ON {source} REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT",
            "UPDATE": f"AFTER UPDATE OF {', '.join(watched)} ON {source} FOR EACH ROW "
                      f"WHEN (ROW({', '.join('OLD.' + c for c in watched)}) IS DISTINCT FROM "
                      f"ROW({', '.join('NEW.' + c for c in watched)}))",
        }
        for event, body in bodies.items():
            function = _function_name(source, event)
            statements.append(
                f"CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $$\n"
                f"BEGIN\n"
                f"    {body};\n"
                f"    RETURN NULL;\n"
                f"END\n$$")
            statements.append(f"DROP TRIGGER IF EXISTS {_trigger_name(source, event)} ON {source}")
            statements.append(f"CREATE TRIGGER {_trigger_name(source, event)} {fired[event]} "
                              f"EXECUTE FUNCTION {function}()")
    return statements


def _update_mark(specs: tuple[CounterSpec, ...]) -> str:
    """The old and the new parent of one updated row, for every (parent table, fk) of a source."""
    values = []
    for parent, fk in _parent_fks(specs):
        values += [f"('{parent}', OLD.{fk}::text)", f"('{parent}', NEW.{fk}::text)"]
    return ("INSERT INTO counter_dirty (parent_table, parent_id)\n    "
            f"SELECT DISTINCT t, id FROM (VALUES {', '.join(values)}) AS m(t, id) WHERE id IS NOT NULL")


def drop_trigger_ddl(counters: tuple[CounterSpec, ...] = COUNTERS) -> list[str]:
    statements = []
    for source in source_tables(counters):
        for event in ("INSERT", "DELETE", "UPDATE"):
            statements.append(f"DROP TRIGGER IF EXISTS {_trigger_name(source, event)} ON {source}")
            statements.append(f"DROP FUNCTION IF EXISTS {_function_name(source, event)}()")
    return statements


def trigger_names(counters: tuple[CounterSpec, ...] = COUNTERS) -> list[tuple[str, str]]:
    """(source table, trigger name) of every installed dirty trigger."""
    return [(s, _trigger_name(s, e)) for s in source_tables(counters) for e in ("INSERT", "DELETE", "UPDATE")]
