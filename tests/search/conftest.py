"""The search tests run once per backend: PostgreSQL full-text and a real Typesense 0.24 server.

``backend`` points SEARCH_URL at one engine, makes sure it has an active index
version and drains ``search_dirty`` before and after the test. The test
database is shared by the whole session (other tests' posts are in it), so
each test writes and searches its own random words (``word()``).
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import pytest
from sqlalchemy import text

from db.session import session_scope
from tasks.search import engines, indexing, versions
from tasks.search.reindex import ensure_current
from tests.typesense_server import typesense_server


def word(prefix: str = "zq") -> str:
    """A token no other test writes: letters and digits only, one token for both tokenizers."""
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def pytest_collection_modifyitems(items):
    # The typesense 2.x client warns about its own v30 API renames on every client it builds.
    here = __file__.rsplit("/", 1)[0]
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.filterwarnings("ignore::DeprecationWarning:typesense"))


@pytest.fixture(scope="session")
def typesense_url() -> str:
    with typesense_server() as url:
        yield url


@dataclass
class Backend:
    name: str
    url: str | None
    db: object   # the SQLAlchemy engine of the test database

    @property
    def engine(self) -> engines.Engine:
        return engines._engine_for(self.url)

    # --- the index ---------------------------------------------------------------------

    def drain(self, **kwargs) -> indexing.DirtyRun:
        run = indexing.index_dirty(session_scope, self.engine, budget_seconds=kwargs.pop("budget_seconds", 120),
                                   **kwargs)
        assert run.status == "ok", run
        assert not run.backlog_left, run
        return run

    def backlog(self, ids: list[str] | None = None) -> int:
        with self.db.connect() as conn:
            if ids is None:
                return conn.execute(text("SELECT count(*) FROM search_dirty")).scalar_one()
            return conn.execute(text("SELECT count(*) FROM search_dirty WHERE entity_id = ANY(:ids)"),
                                {"ids": [str(i) for i in ids]}).scalar_one()

    def active_version(self) -> int:
        with session_scope() as session:
            return versions.active(session, self.name).id

    def indexed(self, post_id: str) -> bool:
        """Whether the active version holds a document for the post (the raw index, no live check)."""
        version = self.active_version()
        if self.name == "postgresql":
            with self.db.connect() as conn:
                return conn.execute(text("SELECT count(*) FROM search_documents WHERE version = :v "
                                         "AND post_id = CAST(:p AS uuid)"), {"v": version, "p": post_id}).scalar_one() == 1
        from typesense import exceptions as ts

        try:
            self.engine.client.collections[engines.collection(version)].documents[post_id].retrieve()
            return True
        except ts.ObjectNotFound:
            return False

    def version_exists(self, version: int) -> bool:
        """The version's partition (PostgreSQL) or collection (Typesense) is still there."""
        if self.name == "postgresql":
            with self.db.connect() as conn:
                return conn.execute(text("SELECT to_regclass(:t) IS NOT NULL"),
                                    {"t": engines.partition(version)}).scalar_one()
        from typesense import exceptions as ts

        try:
            self.engine.client.collections[engines.collection(version)].retrieve()
            return True
        except ts.ObjectNotFound:
            return False

    def delete_document(self, post_id: str) -> None:
        """Remove a post's document from the active version behind PostgreSQL's back."""
        with session_scope() as session:
            assert self.engine.delete(session, versions.active(session, self.name).id, [post_id]) == 1

    # --- the query -----------------------------------------------------------------------

    def search(self, q: str, viewer: int) -> list[str]:
        from tasks.search import query

        page = query(q, viewer, limit=100)
        assert page.next_cursor is None
        return page.post_ids

    def found(self, q: str, viewer: int) -> set[str]:
        ids = self.search(q, viewer)
        assert len(ids) == len(set(ids)), ids
        return set(ids)


@pytest.fixture(params=["postgresql", "typesense"])
def backend(request, monkeypatch, engine) -> Backend:
    if request.param == "typesense":
        url = request.getfixturevalue("typesense_url")
        monkeypatch.setenv("SEARCH_URL", url)
    else:
        url = None
        monkeypatch.delenv("SEARCH_URL", raising=False)
    chosen = Backend(request.param, url, engine)
    assert engines.engine().name == request.param
    # Other tests' clean_db truncates search_index_versions: build again when needed.
    ensure_current(chosen.engine)
    chosen.drain()
    yield chosen
    chosen.drain()


@pytest.fixture
def typesense(request, monkeypatch, engine) -> Backend:
    """The Typesense backend alone (for what only it can do: a dead server)."""
    url = request.getfixturevalue("typesense_url")
    monkeypatch.setenv("SEARCH_URL", url)
    chosen = Backend("typesense", url, engine)
    ensure_current(chosen.engine)
    chosen.drain()
    yield chosen
    monkeypatch.setenv("SEARCH_URL", url)   # the test may have pointed it at a dead port
    chosen.drain()


def dead_typesense_url(live_url: str) -> str:
    """The live server's key on a port nobody listens on."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"typesense://{engines.TypesenseAddress.parse(live_url).api_key}@127.0.0.1:{port}"


# --- Builders: committed rows (the indexer and the query read them on their own connections) ---


class Rows:
    def __init__(self, db):
        self.db = db

    def sql(self, statement: str, **params):
        with self.db.begin() as conn:
            result = conn.execute(text(statement), params)
            return result.all() if result.returns_rows else None

    def users(self, *names: str) -> dict[str, int]:
        """One user per name, with the username ``<name><random>`` (one token for both tokenizers)."""
        with self.db.begin() as conn:
            return {name: conn.execute(text(
                "INSERT INTO users (email, username, hashed_password) VALUES (:e, :u, '!') RETURNING id"),
                {"e": f"{handle}@example.com", "u": handle}).scalar_one()
                for name in names for handle in [word(name[:6])]}

    def username(self, user_id: int) -> str:
        return self.sql("SELECT username FROM users WHERE id = :u", u=user_id)[0][0]

    def post(self, author: int, content: str, *, privacy: str = "public", title: str | None = None,
             at: datetime | None = None) -> str:
        return self.sql(
            "INSERT INTO posts (author_id, title, content, privacy_level, created_at) "
            "VALUES (:a, :t, :c, :p, coalesce(CAST(:at AS timestamptz), now())) RETURNING id::text",
            a=author, t=title, c=content, p=privacy, at=at)[0][0]

    def update_post(self, post_id: str, assignments: str, **params) -> None:
        self.sql(f"UPDATE posts SET {assignments} WHERE id = CAST(:post_id AS uuid)", post_id=post_id, **params)

    def friends(self, user1: int, user2: int, status: str = "accepted") -> None:
        self.sql("INSERT INTO friendships (user1_id, user2_id, status) VALUES (:a, :b, :s)", a=user1, b=user2, s=status)

    def follow(self, follower: int, followed: int, status: str = "active") -> None:
        self.sql("INSERT INTO follows (follower_id, followed_id, status) VALUES (:a, :b, :s)",
                 a=follower, b=followed, s=status)

    def tag(self, name: str, *post_ids: str) -> int:
        tag_id = self.sql("INSERT INTO tags (name) VALUES (:n) RETURNING id", n=name)[0][0]
        if post_ids:
            self.sql("INSERT INTO post_tags (post_id, tag_id) SELECT CAST(p AS uuid), :t FROM unnest(CAST(:ids AS text[])) p",
                     t=tag_id, ids=list(post_ids))
        return tag_id


@pytest.fixture
def rows(engine) -> Rows:
    return Rows(engine)
