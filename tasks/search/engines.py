"""The two search backends behind one interface: PostgreSQL full-text and Typesense.

Each engine writes the documents of tasks/search/documents.py into one index
version and answers a query for a viewer. Both read PostgreSQL through the
caller's session and never commit; the caller holds the version lock.

- ``PostgresEngine``: rows of ``search_documents``, one partition per version
  (``search_documents_v<N>``, GIN on the tsvector), ranked by ``ts_rank_cd``.
- ``TypesenseEngine``: one collection per version (``posts_v<N>``) and the
  alias ``posts`` on the active one, which a swap moves atomically.

``engine()`` picks one from SEARCH_URL.
"""
from __future__ import annotations

import functools
import io
import json
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import text
from sqlalchemy.orm import Session

import settings
from tasks.search import documents
from workers.errors import ServiceUnavailable


@dataclass
class Applied:
    upserted: int = 0
    deleted: int = 0

    def add(self, other: Applied) -> None:
        self.upserted += other.upserted
        self.deleted += other.deleted


@dataclass(frozen=True)
class Audience:
    """Who is asking: their accepted friends and everyone blocked either way (db/visibility.py)."""
    viewer_id: int
    friends: tuple[int, ...]
    blocked: tuple[int, ...]


class Engine(Protocol):
    name: str

    def create_version(self, session: Session, version: int) -> None: ...
    def drop_version(self, session: Session, version: int) -> None: ...
    def activate(self, session: Session, version: int) -> None: ...
    def apply(self, session: Session, version: int, post_ids: list[str]) -> Applied: ...
    def delete(self, session: Session, version: int, post_ids: list[str]) -> int: ...
    def count(self, session: Session, version: int) -> int: ...
    def index_rows(self, session: Session, version: int) -> str: ...
    def search(self, session: Session, version: int, q: str, audience: Audience, page: int,
               per_page: int) -> list[str]: ...


# --- PostgreSQL ---------------------------------------------------------------------

def partition(version: int) -> str:
    return f"search_documents_v{int(version)}"


_PG_APPLY = text(f"""
WITH docs AS MATERIALIZED ({documents.DOCUMENT_COLUMNS_SQL}),
removed AS (
    DELETE FROM search_documents s WHERE s.version = :v AND s.post_id = ANY(CAST(:ids AS uuid[]))
      AND NOT EXISTS (SELECT 1 FROM docs WHERE docs.post_id = s.post_id)
    RETURNING 1),
written AS (
    INSERT INTO search_documents AS s (version, post_id, user_id, username, tags, privacy_level, created_at, document)
    SELECT :v, d.post_id, d.user_id, d.username, d.tags, d.privacy_level, d.created_at, {documents.TSVECTOR_SQL}
    FROM docs d
    ON CONFLICT (version, post_id) DO UPDATE SET
        user_id = EXCLUDED.user_id, username = EXCLUDED.username, tags = EXCLUDED.tags,
        privacy_level = EXCLUDED.privacy_level, created_at = EXCLUDED.created_at, document = EXCLUDED.document
    -- An unchanged document is not rewritten: no dead tuple, no GIN churn.
    WHERE (s.user_id, s.username, s.tags, s.privacy_level, s.created_at, s.document)
          IS DISTINCT FROM (EXCLUDED.user_id, EXCLUDED.username, EXCLUDED.tags, EXCLUDED.privacy_level,
                            EXCLUDED.created_at, EXCLUDED.document)
    RETURNING 1)
SELECT (SELECT count(*) FROM written), (SELECT count(*) FROM removed)
""")

# Audience filter on the document's own fields; the caller re-checks the page
# against the live rows (tasks/search/searching.py), so a document the dirty pass
# has not caught up with yet never shows.
_PG_SEARCH = text(f"""
SELECT d.post_id::text
FROM search_documents d, {documents.TSQUERY_SQL} query
WHERE d.version = :v AND d.document @@ query
  AND (d.user_id = :viewer OR d.privacy_level = 'public'
       OR (d.privacy_level = 'friends' AND d.user_id = ANY(CAST(:friends AS integer[]))))
  AND d.user_id <> ALL(CAST(:blocked AS integer[]))
ORDER BY ts_rank_cd(d.document, query) DESC, d.created_at DESC, d.post_id
LIMIT :n OFFSET :o
""")


class PostgresEngine:
    name = "postgresql"

    def create_version(self, session: Session, version: int) -> None:
        table = partition(version)
        session.execute(text(f"CREATE TABLE IF NOT EXISTS {table} PARTITION OF search_documents "
                             f"FOR VALUES IN ({int(version)})"))
        session.execute(text(f"CREATE INDEX IF NOT EXISTS idx_{table}_document ON {table} USING gin (document)"))
        session.execute(text(f"CREATE INDEX IF NOT EXISTS idx_{table}_user ON {table} (user_id)"))

    def drop_version(self, session: Session, version: int) -> None:
        session.execute(text(f"DROP TABLE IF EXISTS {partition(version)}"))

    def activate(self, session: Session, version: int) -> None:
        """Nothing to move: queries read the active id from search_index_versions."""

    def apply(self, session: Session, version: int, post_ids: list[str]) -> Applied:
        if not post_ids:
            return Applied()
        written, removed = session.execute(_PG_APPLY, {"v": version, "ids": post_ids}).one()
        return Applied(written, removed)

    def delete(self, session: Session, version: int, post_ids: list[str]) -> int:
        return session.execute(text("DELETE FROM search_documents WHERE version = :v "
                                    "AND post_id = ANY(CAST(:ids AS uuid[]))"),
                               {"v": version, "ids": post_ids}).rowcount

    def count(self, session: Session, version: int) -> int:
        return session.execute(text("SELECT count(*) FROM search_documents WHERE version = :v"),
                               {"v": version}).scalar_one()

    def index_rows(self, session: Session, version: int) -> str:
        return f"(SELECT post_id, user_id, privacy_level FROM search_documents WHERE version = {int(version)})"

    def search(self, session: Session, version: int, q: str, audience: Audience, page: int,
               per_page: int) -> list[str]:
        return list(session.execute(_PG_SEARCH, {
            "v": version, "q": q, "viewer": audience.viewer_id, "friends": list(audience.friends),
            "blocked": list(audience.blocked), "n": per_page, "o": page * per_page}).scalars())


# --- Typesense ----------------------------------------------------------------------

ALIAS = "posts"
DELETE_CHUNK = 100   # ids per delete-by-filter request: a 36-character uuid each, in the URL


def collection(version: int) -> str:
    return f"{ALIAS}_v{int(version)}"


@dataclass(frozen=True)
class TypesenseAddress:
    api_key: str
    host: str
    port: int
    protocol: str

    @classmethod
    def parse(cls, url: str) -> TypesenseAddress:
        protocol, key, host, port = settings.parse_search_url("SEARCH_URL", url)
        return cls(key, host, port, protocol)


def _unavailable(exc: Exception) -> ServiceUnavailable:
    # Never the request itself: its URL can hold the query, and the key is in a header.
    return ServiceUnavailable(f"typesense: {type(exc).__name__}: {str(exc)[:200]}")


class TypesenseEngine:
    name = "typesense"

    def __init__(self, address: TypesenseAddress):
        import typesense

        self.address = address
        self.client = typesense.Client({
            "nodes": [{"host": address.host, "port": address.port, "protocol": address.protocol}],
            "api_key": address.api_key, "connection_timeout_seconds": 10, "num_retries": 2,
            "retry_interval_seconds": 0.2})

    def _call(self, fn, *args, **kwargs):
        """Run a client call; outages and 5xx become ServiceUnavailable (retried), other errors stay."""
        import httpx
        from typesense import exceptions as ts

        try:
            return fn(*args, **kwargs)
        except (httpx.HTTPError, ts.HTTPStatus0Error, ts.ServiceUnavailable, ts.ServerError, ts.Timeout) as exc:
            raise _unavailable(exc) from None

    def create_version(self, session: Session, version: int) -> None:
        from typesense import exceptions as ts

        schema = {"name": collection(version), "fields": list(documents.TYPESENSE_FIELDS),
                  "default_sorting_field": "created_at"}
        try:
            self._call(self.client.collections.create, schema)
        except ts.ObjectAlreadyExists:   # a reindex that died after creating it: start it over
            self.drop_version(session, version)
            self._call(self.client.collections.create, schema)

    def drop_version(self, session: Session, version: int) -> None:
        from typesense import exceptions as ts

        try:
            self._call(self.client.collections[collection(version)].delete)
        except ts.ObjectNotFound:
            pass

    def activate(self, session: Session, version: int) -> None:
        self._call(self.client.aliases.upsert, ALIAS, {"collection_name": collection(version)})

    def apply(self, session: Session, version: int, post_ids: list[str]) -> Applied:
        if not post_ids:
            return Applied()
        docs = [documents.typesense_document(row) for row in documents.load(session, post_ids)]
        found = {doc["id"] for doc in docs}
        if docs:
            results = self._call(self.client.collections[collection(version)].documents.import_, docs,
                                 {"action": "upsert"})
            failed = [r for r in results if not r.get("success")]
            if failed:
                raise ServiceUnavailable(f"typesense refused {len(failed)} of {len(docs)} documents: "
                                         f"{str(failed[0].get('error'))[:200]}")
        gone = [post_id for post_id in dict.fromkeys(post_ids) if post_id not in found]
        return Applied(len(docs), self.delete(session, version, gone))

    def delete(self, session: Session, version: int, post_ids: list[str]) -> int:
        deleted = 0
        docs = self.client.collections[collection(version)].documents
        for start in range(0, len(post_ids), DELETE_CHUNK):
            chunk = post_ids[start:start + DELETE_CHUNK]
            result = self._call(docs.delete, {"filter_by": f"id:[{','.join(chunk)}]"})
            deleted += int(result.get("num_deleted", 0))
        return deleted

    def count(self, session: Session, version: int) -> int:
        return int(self._call(self.client.collections[collection(version)].retrieve)["num_documents"])

    def index_rows(self, session: Session, version: int) -> str:
        """Every document's id, author and audience, copied into a temporary table for set-based checks."""
        exported = self._call(self.client.collections[collection(version)].documents.export,
                              {"include_fields": "id,user_id,privacy_level"})
        session.execute(text("CREATE TEMPORARY TABLE IF NOT EXISTS search_index_rows "
                             "(post_id uuid, user_id integer, privacy_level text) ON COMMIT DROP"))
        session.execute(text("TRUNCATE search_index_rows"))
        buffer = io.StringIO()
        for line in exported.splitlines():
            if line:
                doc = json.loads(line)
                buffer.write(f"{doc['id']}\t{int(doc['user_id'])}\t{doc['privacy_level']}\n")
        raw = session.connection().connection.driver_connection
        with raw.cursor().copy("COPY search_index_rows (post_id, user_id, privacy_level) FROM STDIN") as copy:
            copy.write(buffer.getvalue())
        return "search_index_rows"

    def filter_by(self, audience: Audience) -> str:
        allowed = [f"user_id:={audience.viewer_id}", "privacy_level:=public"]
        if audience.friends:
            allowed.append(f"(privacy_level:=friends && user_id:=[{','.join(map(str, audience.friends))}])")
        expression = f"({' || '.join(allowed)})"
        if audience.blocked:
            expression += f" && user_id:!=[{','.join(map(str, audience.blocked))}]"
        return expression

    def search(self, session: Session, version: int, q: str, audience: Audience, page: int,
               per_page: int) -> list[str]:
        # POST (multi_search): a long friends list does not fit a URL. The alias, not
        # ``version``: the swap moves it atomically, so a query never sees a half-built index.
        request = {"collection": ALIAS, "q": q, "query_by": ",".join(documents.TYPESENSE_QUERY_BY),
                   "query_by_weights": ",".join(map(str, documents.TYPESENSE_QUERY_WEIGHTS)),
                   "filter_by": self.filter_by(audience), "sort_by": "_text_match:desc,created_at:desc",
                   "page": page + 1, "per_page": per_page, "include_fields": "id",
                   # The same matching as PostgreSQL's: whole words, no typo tolerance, every word
                   # (Typesense would otherwise drop words that match nothing).
                   "prefix": "false", "num_typos": 0, "drop_tokens_threshold": 0}
        result = self._call(self.client.multi_search.perform, {"searches": [request]}, {})["results"][0]
        if "error" in result:
            raise ServiceUnavailable(f"typesense search failed: {str(result['error'])[:200]}")
        return [hit["document"]["id"] for hit in result.get("hits", [])]


@functools.lru_cache(maxsize=4)
def _engine_for(url: str | None) -> Engine:
    if url is None or settings.parse_search_url("SEARCH_URL", url) is None:
        return PostgresEngine()
    return TypesenseEngine(TypesenseAddress.parse(url))


def engine() -> Engine:
    """The engine SEARCH_URL names (one per process and URL)."""
    return _engine_for(settings.current().search_url)
