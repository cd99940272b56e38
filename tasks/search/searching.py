"""``tasks.search.query(q, viewer_id, limit=20, cursor=None)``: the web tier's search, a plain function.

It returns a ``SearchPage``: post ids, best first, and an opaque cursor for the
next page (None at the end). Both backends give the same shape.

Who sees what (db/visibility.py, the one home of the rules): the author always
finds their own posts; anyone else finds public posts, friends-only posts of an
accepted friend, never a post across a block (either way, friendships or
follows), never a hidden, deleted or unpublished one.

Two layers hold that. The engine filters on the document's author and audience,
so a page is not eaten by posts the viewer may not see. Then each page is
checked against the live rows, so a change the dirty pass has not indexed yet
(a post flagged or made friends-only a second ago) never shows either.
"""
from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass

from sqlalchemy import text

from db.session import session_scope
from db.visibility import blocks_of_sql, friends_of_sql, post_visible_sql, readable_post_sql
from tasks.search import versions
from tasks.search.engines import Audience, engine
from workers.errors import InvalidArguments

MAX_QUERY_CHARS = 200
MAX_LIMIT = 100
CANDIDATES_PER_PAGE = 100   # engine hits read per round; Typesense allows 250
MAX_ROUNDS = 5              # a page that needs more is returned short, with a cursor to go on

_AUDIENCE_SQL = text(f"""
SELECT ARRAY(SELECT friend_id FROM ({friends_of_sql('ARRAY[CAST(:viewer AS integer)]')}) f ORDER BY friend_id),
       ARRAY(SELECT other_id FROM ({blocks_of_sql('ARRAY[CAST(:viewer AS integer)]')}) b ORDER BY other_id)
""")

_VISIBLE_SQL = text(f"""
SELECT p.id::text FROM posts p
WHERE p.id = ANY(CAST(:ids AS uuid[]))
  AND ((p.author_id = :viewer AND {readable_post_sql('p')})
       OR ({post_visible_sql('p', 'p.author_id = ANY(CAST(:friends AS integer[]))')}
           AND p.author_id <> ALL(CAST(:blocked AS integer[]))))
""")


@dataclass(frozen=True)
class SearchPage:
    post_ids: list[str]
    next_cursor: str | None

    def as_dict(self) -> dict:
        return {"post_ids": self.post_ids, "next_cursor": self.next_cursor}


def _encode(page: int, skip: int) -> str:
    return base64.urlsafe_b64encode(json.dumps([page, skip]).encode()).decode().rstrip("=")


def _decode(cursor: str) -> tuple[int, int]:
    try:
        page, skip = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not (isinstance(page, int) and isinstance(skip, int) and 0 <= page < 10_000
                and 0 <= skip < CANDIDATES_PER_PAGE):
            raise ValueError
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise InvalidArguments("cursor is not one that search returned") from None
    return page, skip


def _validate(q: object, viewer_id: object, limit: object, cursor: object) -> str:
    if not isinstance(q, str) or not q.strip():
        raise InvalidArguments("q must be a non-empty string")
    if len(q) > MAX_QUERY_CHARS:
        raise InvalidArguments(f"q has {len(q)} characters; the limit is {MAX_QUERY_CHARS}")
    if not isinstance(viewer_id, int) or isinstance(viewer_id, bool) or viewer_id < 1:
        raise InvalidArguments("viewer_id must be a positive integer")
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_LIMIT:
        raise InvalidArguments(f"limit must be an integer from 1 to {MAX_LIMIT}")
    if cursor is not None and not isinstance(cursor, str):
        raise InvalidArguments("cursor must be a string from a previous page, or None")
    return q.strip()


def query(q: str, viewer_id: int, limit: int = 20, cursor: str | None = None) -> SearchPage:
    """Post ids matching ``q`` that ``viewer_id`` may see, best first; InvalidArguments for bad input."""
    q = _validate(q, viewer_id, limit, cursor)
    page, skip = _decode(cursor) if cursor else (0, 0)
    search_engine = engine()
    found: list[str] = []
    with session_scope() as session:
        current = versions.reading(session, search_engine.name)
        if current is None:
            return SearchPage([], None)
        friends, blocked = session.execute(_AUDIENCE_SQL, {"viewer": viewer_id}).one()
        audience = Audience(viewer_id, tuple(friends), tuple(blocked))
        for _ in range(MAX_ROUNDS):
            hits = search_engine.search(session, current.id, q, audience, page, CANDIDATES_PER_PAGE)
            candidates = hits[skip:]
            visible = set(session.execute(_VISIBLE_SQL, {
                "ids": candidates, "viewer": viewer_id, "friends": list(friends),
                "blocked": list(blocked)}).scalars()) if candidates else set()
            for index, post_id in enumerate(candidates, start=skip):
                if post_id in visible:
                    found.append(post_id)
                    if len(found) == limit:
                        more = index + 1 < len(hits) or len(hits) == CANDIDATES_PER_PAGE
                        following = (page, index + 1) if index + 1 < CANDIDATES_PER_PAGE else (page + 1, 0)
                        return SearchPage(found, _encode(*following) if more else None)
            if len(hits) < CANDIDATES_PER_PAGE:
                return SearchPage(found, None)
            page, skip = page + 1, 0
    return SearchPage(found, _encode(page, 0))
