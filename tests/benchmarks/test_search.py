"""Search (issue 15): indexing and querying on both backends, each figure beside its bare baseline.

One scratch database of its own (dropped at the end, so other benchmarks never see the
data) and one Typesense 0.24 server (tests/typesense_server.py), built once per module
with set-based SQL: 20 k users, 1 M posts whose text is drawn from a 5,000-word
vocabulary with a Zipf-like (log-uniform rank) distribution, titles on 30 %, tags on
10 %, audiences 80 % public / 15 % friends / 5 % custom, 1 % deleted and 1 % held by
moderation; viewers 1-200 have 40 accepted friends and 3 blocks each.

- Indexing, 100 k posts: the first 100 k posts are inserted with the triggers on, so
  ``search_dirty`` holds their marks as a real import leaves them; ``index_dirty`` drains
  them (batches of 1,000) into a fresh active version. Baselines: one bare INSERT … SELECT
  of the same documents into a plain table of the partition's shape and indexes; the same
  documents imported into a fresh collection by the client alone.
- Querying, 1 M posts: both backends filled by a bulk path side by side (untimed, printed;
  see ``indexed_1m``), then ``tasks.search.query`` against the bare engine call on the same
  mixed queries (common, mid-frequency and rare words, two-word queries; 200 viewers).
"""
from __future__ import annotations

import random
import threading
import time

import pytest
from sqlalchemy import create_engine, text

from db.visibility import readable_post_sql
from tasks.search.documents import DOCUMENT_COLUMNS_SQL, SCHEMA_HASH, TSVECTOR_SQL
from tests.benchmarks.conftest import Goal, NoGoal
from tests.conftest import scratch_database

USERS = 20_000
POSTS = 1_000_000
INDEXED = 100_000            # the posts the indexing benchmarks write (the first ones, triggers on)
WORDS = 5_000
FRAGMENTS = 50_000
VIEWERS = 200                # users 1..VIEWERS have friends and blocks
FRIENDS_PER_VIEWER = 40
BLOCKS_PER_VIEWER = 3
DIRTY_BATCH = 1_000          # SEARCH_BATCH's default: the dirty pass's batch, and the bare import's
QUERIES = 200
LIMIT = 20

SYLLABLES = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"] + ["sha", "tho", "qui", "cre", "pla", "bro"]

# Word of rank i (1 = most frequent): short words are the frequent ones, as in natural text.
_WORD_SQL = """
INSERT INTO bench_words (rank, word)
SELECT i, s[1 + i % 76] || s[1 + (i / 76) % 76] || CASE WHEN i > 600 THEN s[1 + (i * 7) % 76] ELSE '' END
FROM generate_series(1, :words) i, (SELECT CAST(:syllables AS text[]) AS s) x
"""

BUILD = f"""
SELECT setseed(0.15);
CREATE TABLE bench_words (rank integer PRIMARY KEY, word text NOT NULL);
{_WORD_SQL};
CREATE TABLE bench_fragments (id integer PRIMARY KEY, body text NOT NULL);
INSERT INTO bench_fragments (id, body)
    SELECT f, string_agg(w.word, ' ' ORDER BY k)
    FROM generate_series(1, :fragments) f, generate_series(1, 3 + f % 6) k
    CROSS JOIN LATERAL (SELECT floor(power(:words, random() + 0 * k))::int AS r) z
    JOIN bench_words w ON w.rank = greatest(z.r, 1)
    GROUP BY f;
SET session_replication_role = replica;
INSERT INTO users (id, email, username, hashed_password)
    SELECT g, 's' || g || '@example.com', 'u' || g, '!' FROM generate_series(1, :users) g;
SELECT setval(pg_get_serial_sequence('users', 'id'), :users + 1);
INSERT INTO friendships (user1_id, user2_id, status)
    SELECT v, v + 37 * k, 'accepted' FROM generate_series(1, :viewers) v, generate_series(1, :friends) k;
INSERT INTO friendships (user1_id, user2_id, status)
    SELECT v, v + 1000 + 7 * k, 'blocked' FROM generate_series(1, :viewers) v, generate_series(1, :blocks) k;
INSERT INTO tags (name) SELECT 'tag' || word FROM bench_words WHERE rank <= 300;
"""

# One post per n; its text is three random fragments. The trigger state is set by the caller.
POSTS_SQL = """
INSERT INTO posts (id, author_id, title, content, privacy_level, deleted_at, moderation_hidden, created_at)
SELECT md5('p' || g.n)::uuid, g.n % :users + 1,
       CASE WHEN g.n % 10 < 3 THEN ft.body END,
       f1.body || ' ' || f2.body || ' ' || f3.body,
       CASE WHEN g.n % 20 < 16 THEN 'public' WHEN g.n % 20 < 19 THEN 'friends' ELSE 'custom' END,
       CASE WHEN g.n % 100 = 7 THEN now() END, g.n % 100 = 13,
       now() - g.n * interval '30 seconds'
FROM (SELECT n, 1 + floor(random() * :fragments)::int AS a, 1 + floor(random() * :fragments)::int AS b,
             1 + floor(random() * :fragments)::int AS c, 1 + floor(random() * :fragments)::int AS t
      FROM generate_series(CAST(:first AS integer), CAST(:last AS integer)) n) g
JOIN bench_fragments f1 ON f1.id = g.a JOIN bench_fragments f2 ON f2.id = g.b
JOIN bench_fragments f3 ON f3.id = g.c JOIN bench_fragments ft ON ft.id = g.t
ORDER BY g.n
"""

POST_TAGS_SQL = """
SET session_replication_role = replica;
INSERT INTO post_tags (post_id, tag_id)
    SELECT DISTINCT md5('p' || n)::uuid, 1 + (n * 31 + k * 97) % 300
    FROM generate_series(5, :posts, 10) n, generate_series(0, n % 3) k
"""


SECONDARY_INDEXES_SQL = """
SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid) FROM pg_index i
WHERE i.indrelid = 'posts'::regclass AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)
"""


def _run_script(connection, script: str, params: dict) -> None:
    for statement in script.split(";\n"):
        if statement.strip():
            connection.execute(text(statement), params)


@pytest.fixture(scope="module")
def search_db(database_url):
    """The scratch database, built, and DATABASE_URL pointed at it for session_scope and query()."""
    from db.migrate import upgrade
    from db.session import reset_engine

    with scratch_database(database_url, "bench_search") as url:
        upgrade(url)
        engine = create_engine(url)
        params = {"users": USERS, "words": WORDS, "fragments": FRAGMENTS, "viewers": VIEWERS,
                  "friends": FRIENDS_PER_VIEWER, "blocks": BLOCKS_PER_VIEWER, "syllables": SYLLABLES,
                  "posts": POSTS}
        started = time.perf_counter()
        with engine.begin() as conn:
            _run_script(conn, BUILD, params)
            # posts' secondary indexes are built once after the load: three times faster than row by row.
            indexes = conn.execute(text(SECONDARY_INDEXES_SQL)).all()
            for name, _ in indexes:
                conn.execute(text(f"DROP INDEX {name}"))
            # The first INDEXED posts as an import leaves them: the triggers mark them dirty.
            conn.execute(text("SET session_replication_role = origin"))
            conn.execute(text(POSTS_SQL), {**params, "first": 1, "last": INDEXED})
            conn.execute(text("SET session_replication_role = replica"))
            conn.execute(text(POSTS_SQL), {**params, "first": INDEXED + 1, "last": POSTS})
            conn.execute(text("SET LOCAL maintenance_work_mem = '256MB'"))
            for _, definition in indexes:
                conn.execute(text(definition))
            _run_script(conn, POST_TAGS_SQL, params)
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))
            marks = conn.execute(text("SELECT count(*) FROM search_dirty")).scalar_one()
        assert marks == INDEXED, marks
        print(f"\nsearch bench build: {time.perf_counter() - started:.0f} s for {POSTS:,} posts")
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("DATABASE_URL", url)
            mp.setenv("SEARCH_URL", "postgresql")
            reset_engine()
            try:
                yield engine
            finally:
                engine.dispose()
                reset_engine()
    reset_engine()


@pytest.fixture(scope="module")
def typesense_url():
    from tests.typesense_server import typesense_server

    with typesense_server() as url:
        yield url


def _fresh_version(search_engine) -> int:
    """A new, empty, active version (the previous active one dropped): what the dirty pass writes to."""
    from db.session import session_scope
    from tasks.search import versions

    with session_scope() as session:
        versions.lock(session, search_engine.name)
        version = versions.create(session, search_engine.name, SCHEMA_HASH)
        search_engine.create_version(session, version)
        previous = versions.activate(session, search_engine.name, version, 0)
        search_engine.activate(session, version)
        if previous is not None:
            search_engine.drop_version(session, previous)
    return version


def _indexed_ids(engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(text(
            "SELECT md5('p' || n)::uuid::text FROM generate_series(1, :n) n ORDER BY n"), {"n": INDEXED}).scalars())


def _mark(engine, ids: list[str]) -> float:
    """What the posts insert trigger does for these posts: one statement, their marks in order."""
    started = time.perf_counter()
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO search_dirty (entity, entity_id) "
                          "SELECT 'post', id FROM unnest(CAST(:ids AS text[])) WITH ORDINALITY x(id, n) ORDER BY n"),
                     {"ids": ids})
    return time.perf_counter() - started


def _readable(engine, ids: list[str]) -> int:
    with engine.connect() as conn:
        return conn.execute(text(f"SELECT count(*) FROM posts p WHERE p.id = ANY(CAST(:ids AS uuid[])) "
                                 f"AND {readable_post_sql('p')}"), {"ids": ids}).scalar_one()


def test_index_dirty_postgres_against_a_bare_insert(search_db, bench_record):
    from db.session import session_scope
    from tasks.search.engines import PostgresEngine
    from tasks.search.indexing import index_dirty

    engine = search_db
    ids = _indexed_ids(engine)
    readable = _readable(engine, ids)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE bench_bare_documents (LIKE search_documents)"))
        conn.execute(text("ALTER TABLE bench_bare_documents ADD PRIMARY KEY (version, post_id)"))
        conn.execute(text("CREATE INDEX ON bench_bare_documents USING gin (document)"))
        conn.execute(text("CREATE INDEX ON bench_bare_documents (user_id)"))
        # Both paths read the same rows from a warm cache.
        conn.execute(text(f"SELECT count(*) FROM ({DOCUMENT_COLUMNS_SQL}) d"), {"ids": ids})

    started = time.perf_counter()
    with engine.begin() as conn:
        inserted = conn.execute(text(
            f"INSERT INTO bench_bare_documents (version, post_id, user_id, username, tags, privacy_level, "
            f"created_at, document) SELECT 0, d.post_id, d.user_id, d.username, d.tags, d.privacy_level, "
            f"d.created_at, {TSVECTOR_SQL} FROM ({DOCUMENT_COLUMNS_SQL}) d"), {"ids": ids}).rowcount
    bare = time.perf_counter() - started
    assert inserted == readable

    search_engine = PostgresEngine()
    version = _fresh_version(search_engine)
    started = time.perf_counter()
    run = index_dirty(session_scope, search_engine, budget_seconds=3600, limit=DIRTY_BATCH)
    ours = time.perf_counter() - started
    assert run.status == "ok" and not run.backlog_left and run.posts == INDEXED, run.as_dict()
    assert run.applied.upserted == readable
    with engine.begin() as conn:
        assert search_engine.count(conn, version) == readable
        conn.execute(text("DROP TABLE bench_bare_documents"))
    bench_record("search_index_pg", ours, "s", bare,
                 "one bare INSERT ... SELECT of the same documents and tsvectors (documents.DOCUMENT_COLUMNS_SQL, "
                 "TSVECTOR_SQL) into a plain table of the partition's shape and indexes (pk, GIN, user_id)",
                 goal=Goal("ratio", "<=", 2, "the dirty pass, batches and all, vs one bare statement"),
                 posts=INDEXED, documents=readable, batches=run.batches, batch=DIRTY_BATCH,
                 posts_per_second=round(INDEXED / ours), baseline_posts_per_second=round(INDEXED / bare),
                 table_posts=POSTS)


def test_index_dirty_typesense_against_a_bare_import(search_db, typesense_url, bench_record):
    from db.session import session_scope
    from tasks.search import documents
    from tasks.search.engines import TypesenseAddress, TypesenseEngine
    from tasks.search.indexing import index_dirty

    engine = search_db
    ids = _indexed_ids(engine)
    readable = _readable(engine, ids)
    search_engine = TypesenseEngine(TypesenseAddress.parse(typesense_url))
    client = search_engine.client
    with engine.connect() as conn:
        rows = [dict(row, post_id=str(row["post_id"])) for row in conn.execute(
            text(documents.DOCUMENT_COLUMNS_SQL), {"ids": ids}).mappings()]
    order = {post_id: n for n, post_id in enumerate(ids)}
    docs = [documents.typesense_document(row) for row in sorted(rows, key=lambda r: order[r["post_id"]])]
    assert len(docs) == readable

    bare_name = "bench_bare_posts"
    client.collections.create({"name": bare_name, "fields": list(documents.TYPESENSE_FIELDS),
                               "default_sorting_field": "created_at"})
    started = time.perf_counter()
    for start in range(0, len(docs), DIRTY_BATCH):
        results = client.collections[bare_name].documents.import_(docs[start:start + DIRTY_BATCH],
                                                                    {"action": "upsert"})
        assert all(r.get("success") for r in results)
    bare = time.perf_counter() - started
    assert int(client.collections[bare_name].retrieve()["num_documents"]) == readable
    client.collections[bare_name].delete()

    # The marks again (the PostgreSQL pass drained them), as the insert trigger wrote them.
    marking = _mark(engine, ids)
    version = _fresh_version(search_engine)
    started = time.perf_counter()
    run = index_dirty(session_scope, search_engine, budget_seconds=3600, limit=DIRTY_BATCH)
    ours = time.perf_counter() - started
    assert run.status == "ok" and not run.backlog_left and run.posts == INDEXED, run.as_dict()
    assert run.applied.upserted == readable
    with engine.connect() as conn:
        assert search_engine.count(conn, version) == readable
    bench_record("search_index_typesense", ours, "s", bare,
                 f"the same documents, built beforehand, imported by the client alone into a fresh collection "
                 f"(documents.import_, action upsert) in batches of {DIRTY_BATCH}, as ours writes them",
                 goal=Goal("ratio", "<=", 1.5, "the dirty pass (claim, load, build, import, deletes) vs the bare "
                                                "import"),
                 posts=INDEXED, documents=readable, batches=run.batches, batch=DIRTY_BATCH,
                 posts_per_second=round(INDEXED / ours), baseline_posts_per_second=round(INDEXED / bare),
                 marking_seconds=round(marking, 3), table_posts=POSTS)


# --- Queries at 1 M posts -----------------------------------------------------------------

# Every readable post's document, by halves of the uuid space (two PostgreSQL sessions at once).
_IDS_FILTER = "p.id = ANY(CAST(:ids AS uuid[]))"
assert _IDS_FILTER in DOCUMENT_COLUMNS_SQL
ALL_DOCUMENTS_SQL = DOCUMENT_COLUMNS_SQL.replace(_IDS_FILTER, "p.id BETWEEN CAST(:lo AS uuid) AND CAST(:hi AS uuid)")
HALVES = (("00000000-0000-0000-0000-000000000000", "7fffffff-ffff-ffff-ffff-ffffffffffff"),
          ("80000000-0000-0000-0000-000000000000", "ffffffff-ffff-ffff-ffff-ffffffffffff"))
BULK_IMPORT = 5_000


def _new_version(search_engine, create) -> int:
    from db.session import session_scope
    from tasks.search import versions

    with session_scope() as session:
        versions.lock(session, search_engine.name)
        version = versions.create(session, search_engine.name, SCHEMA_HASH)
        create(session, version)
    return version


def _swap_in(search_engine, version: int, count: int) -> None:
    from db.session import session_scope
    from tasks.search import versions

    with session_scope() as session:
        versions.lock(session, search_engine.name)
        previous = versions.activate(session, search_engine.name, version, count)
        search_engine.activate(session, version)
        if previous is not None:
            search_engine.drop_version(session, previous)


def _bulk_postgres(engine, search_engine) -> tuple[int, int]:
    """The documents in one INSERT ... SELECT per half into a bare partition, then the engine's own
    indexes built on the full table, then the swap."""
    from tasks.search.engines import partition

    version = _new_version(search_engine, lambda session, v: session.execute(text(
        f"CREATE TABLE {partition(v)} PARTITION OF search_documents FOR VALUES IN ({int(v)})")))

    def fill(lo: str, hi: str) -> None:
        with engine.begin() as conn:
            conn.execute(text(
                f"INSERT INTO {partition(version)} (version, post_id, user_id, username, tags, privacy_level, "
                f"created_at, document) SELECT :v, d.post_id, d.user_id, d.username, d.tags, d.privacy_level, "
                f"d.created_at, {TSVECTOR_SQL} FROM ({ALL_DOCUMENTS_SQL}) d"), {"v": version, "lo": lo, "hi": hi})

    _in_threads([lambda lo=lo, hi=hi: fill(lo, hi) for lo, hi in HALVES])
    with engine.begin() as conn:
        conn.execute(text("SET LOCAL maintenance_work_mem = '256MB'"))
        search_engine.create_version(conn, version)   # CREATE ... IF NOT EXISTS: only the indexes are new
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f"VACUUM ANALYZE {partition(version)}"))
        count = search_engine.count(conn, version)
    _swap_in(search_engine, version, count)
    return version, count


def _bulk_typesense(engine, search_engine) -> tuple[int, int]:
    """The same documents streamed from PostgreSQL (one reader per half) and imported as the engine does."""
    import queue

    from tasks.search.documents import typesense_document
    from tasks.search.engines import collection

    version = _new_version(search_engine, search_engine.create_version)
    chunks: queue.Queue = queue.Queue(maxsize=4)

    def read(lo: str, hi: str) -> None:
        with engine.connect().execution_options(stream_results=True) as conn:
            result = conn.execute(text(ALL_DOCUMENTS_SQL), {"lo": lo, "hi": hi}).mappings()
            for rows in result.partitions(BULK_IMPORT):
                chunks.put([typesense_document(dict(row, post_id=str(row["post_id"]))) for row in rows])

    def write() -> None:
        documents = search_engine.client.collections[collection(version)].documents
        while (docs := chunks.get()) is not None:
            results = documents.import_(docs, {"action": "upsert"})
            assert all(r.get("success") for r in results)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        _in_threads([lambda lo=lo, hi=hi: read(lo, hi) for lo, hi in HALVES])
    finally:
        chunks.put(None)
        writer.join()
    with engine.connect() as conn:
        count = search_engine.count(conn, version)
    _swap_in(search_engine, version, count)
    return version, count


def _in_threads(calls) -> None:
    errors: list[BaseException] = []

    def run(call) -> None:
        try:
            call()
        except BaseException as exc:   # re-raised below, in the caller's thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(call,)) for call in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


@pytest.fixture(scope="module")
def indexed_1m(search_db, typesense_url):
    """Every post in a fresh active version of both backends, built side by side by a bulk path.

    Not ``reindex``: at 1 M posts both at once took 603 s on 2 cores (its chunk query's ORDER BY id
    binds to the output column ``id::text``, so every chunk sorts all the ids after it). The
    documents are the same (DOCUMENT_COLUMNS_SQL, TSVECTOR_SQL, typesense_document); the
    partition's indexes, the collection, the alias and the version rows are the engines' own.
    """
    from tasks.search.engines import PostgresEngine, TypesenseAddress, TypesenseEngine

    engines = {"postgresql": PostgresEngine(), "typesense": TypesenseEngine(TypesenseAddress.parse(typesense_url))}
    took: dict[str, float] = {}
    built: dict[str, tuple[int, int]] = {}

    def build(name: str, bulk) -> None:
        started = time.perf_counter()
        built[name] = bulk(search_db, engines[name])
        took[name] = time.perf_counter() - started

    started = time.perf_counter()
    _in_threads([lambda: build("postgresql", _bulk_postgres), lambda: build("typesense", _bulk_typesense)])
    wall = time.perf_counter() - started
    with search_db.begin() as conn:
        conn.execute(text("TRUNCATE search_dirty"))
        expected = conn.execute(text(f"SELECT count(*) FROM posts p WHERE {readable_post_sql('p')}")).scalar_one()
    assert {name: count for name, (_, count) in built.items()} == {"postgresql": expected, "typesense": expected}
    print(f"\nsearch bench index build of {POSTS:,} posts, both backends at once: {wall:.0f} s "
          f"(postgresql {took['postgresql']:.0f} s, typesense {took['typesense']:.0f} s); {expected:,} documents")
    return {"engines": engines, "versions": {name: version for name, (version, _) in built.items()},
            "build_seconds": {name: round(s, 1) for name, s in took.items()}}


def _queries(engine) -> list[tuple[str, str, int]]:
    """(kind, q, viewer): common, mid-frequency and rare words, and two-word queries, for varied viewers."""
    with engine.connect() as conn:
        words = dict(conn.execute(text("SELECT rank, word FROM bench_words")).all())
    rng = random.Random(15)
    picks = []
    for i in range(QUERIES):
        roll = rng.random()
        if roll < 0.20:
            kind, q = "common", words[rng.randint(10, 60)]
        elif roll < 0.60:
            kind, q = "mid", words[rng.randint(61, 600)]
        elif roll < 0.90:
            kind, q = "rare", words[rng.randint(601, WORDS)]
        else:
            kind, q = "two_words", f"{words[rng.randint(20, 300)]} {words[rng.randint(301, 3000)]}"
        picks.append((kind, q, 1 + i % VIEWERS))
    return picks


def _audiences(engine, viewers: set[int]) -> dict:
    from tasks.search.engines import Audience
    from tasks.search.searching import _AUDIENCE_SQL

    with engine.connect() as conn:
        return {v: Audience(v, *map(tuple, conn.execute(_AUDIENCE_SQL, {"viewer": v}).one())) for v in viewers}


def _percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def _side_by_side(queries, ours, bare) -> tuple[list[float], list[float], int]:
    """Each query through both paths, in ms: interleaved, so load on the machine hits both, and in
    alternating order, so neither always reads the pages the other just brought into the cache."""
    for kind, q, viewer in queries[:10]:   # warm both paths
        ours(q, viewer)
        bare(q, viewer)
    ours_ms, bare_ms, results = [], [], 0

    def timed(call, q: str, viewer: int, into: list[float]):
        started = time.perf_counter()
        answer = call(q, viewer)
        into.append((time.perf_counter() - started) * 1000)
        return answer

    for n, (kind, q, viewer) in enumerate(queries):
        if n % 2:
            timed(bare, q, viewer, bare_ms)
        page = timed(ours, q, viewer, ours_ms)
        if not n % 2:
            timed(bare, q, viewer, bare_ms)
        results += len(page.post_ids)
    return ours_ms, bare_ms, results


def _record_latencies(bench_record, backend: str, ours_ms, bare_ms, baseline_name: str, **extra) -> None:
    for p in (50, 95):
        bench_record(f"search_query_{backend}_p{p}", _percentile(ours_ms, p), "ms", _percentile(bare_ms, p),
                     baseline_name, goal=NoGoal("latency at 1 M posts; the ratio is our overhead over the bare "
                                                "engine call (audience, over-fetch of 100, live re-check)"),
                     queries=len(ours_ms), posts=POSTS, limit=LIMIT, **extra)


def test_query_postgres_at_1m_posts(search_db, indexed_1m, bench_record, monkeypatch):
    from tasks.search import query
    from tasks.search.engines import _PG_SEARCH

    monkeypatch.setenv("SEARCH_URL", "postgresql")
    queries = _queries(search_db)
    audiences = _audiences(search_db, {v for _, _, v in queries})
    version = indexed_1m["versions"]["postgresql"]
    conn = search_db.connect()
    try:
        def bare(q: str, viewer: int) -> list[str]:
            a = audiences[viewer]
            return list(conn.execute(_PG_SEARCH, {"v": version, "q": q, "viewer": viewer, "friends": list(a.friends),
                                                  "blocked": list(a.blocked), "n": LIMIT, "o": 0}).scalars())

        ours_ms, bare_ms, results = _side_by_side(queries, lambda q, v: query(q, v, limit=LIMIT), bare)
    finally:
        conn.rollback()
        conn.close()
    by_kind = {kind: round(_percentile([ms for (k, _, _), ms in zip(queries, ours_ms) if k == kind], 50), 1)
               for kind in ("common", "mid", "rare", "two_words")}
    print(f"\npg query p50 by kind (ms): {by_kind}")
    _record_latencies(bench_record, "pg", ours_ms, bare_ms,
                      f"engines._PG_SEARCH alone on one open connection, LIMIT {LIMIT}, audience precomputed",
                      p50_ms_by_kind=by_kind, results=results, build_seconds=indexed_1m["build_seconds"]["postgresql"])


def test_query_typesense_at_1m_posts(search_db, indexed_1m, typesense_url, bench_record, monkeypatch):
    from tasks.search import documents, query

    monkeypatch.setenv("SEARCH_URL", typesense_url)
    search_engine = indexed_1m["engines"]["typesense"]
    queries = _queries(search_db)
    filters = {v: search_engine.filter_by(a) for v, a in _audiences(search_db, {v for _, _, v in queries}).items()}

    def bare(q: str, viewer: int) -> list[str]:
        request = {"collection": "posts", "q": q, "query_by": ",".join(documents.TYPESENSE_QUERY_BY),
                   "query_by_weights": ",".join(map(str, documents.TYPESENSE_QUERY_WEIGHTS)),
                   "filter_by": filters[viewer], "sort_by": "_text_match:desc,created_at:desc",
                   "page": 1, "per_page": LIMIT, "include_fields": "id", "prefix": "false", "num_typos": 0}
        result = search_engine.client.multi_search.perform({"searches": [request]}, {})["results"][0]
        return [hit["document"]["id"] for hit in result.get("hits", [])]

    ours_ms, bare_ms, results = _side_by_side(queries, lambda q, v: query(q, v, limit=LIMIT), bare)
    by_kind = {kind: round(_percentile([ms for (k, _, _), ms in zip(queries, ours_ms) if k == kind], 50), 1)
               for kind in ("common", "mid", "rare", "two_words")}
    print(f"\ntypesense query p50 by kind (ms): {by_kind}")
    _record_latencies(bench_record, "typesense", ours_ms, bare_ms,
                      f"the same multi_search request alone through the client, per_page {LIMIT}, filter precomputed",
                      p50_ms_by_kind=by_kind, results=results, build_seconds=indexed_1m["build_seconds"]["typesense"])
