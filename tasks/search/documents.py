"""What a search document is: one home for its fields, its source SQL and its schema hash.

Seed 004's Elasticsearch mapping, field by field (docs/tasks.md has the table):
``id`` (the post's uuid), ``content``, ``user_id``, ``username``, ``tags``,
``created_at`` and ``privacy_level``; our posts also have a ``title``.

A post has a document when readers could see it at all (db/visibility.py's
``readable_post_sql``: published, not soft-deleted, not held by moderation).
Its audience (public, friends, custom) is a field the query filters on; the
author always finds their own posts, ``custom`` ones included.
"""
from __future__ import annotations

import hashlib
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.orm import Session

from db.visibility import readable_post_sql

# Untrusted text is cut before it is tokenized: to_tsvector and Typesense's
# tokenizer both work in time and memory proportional to it.
MAX_INDEXED_CHARS = 20_000

# The username by key, per post: a join let the planner hash the whole users table
# for every batch of 1,000. Tags come from post_tags and the tag's name (the trigger on tags marks a renamed
# tag's posts); ordered, so an unchanged post builds an identical document.
DOCUMENT_COLUMNS_SQL = f"""
SELECT p.id AS post_id, p.author_id AS user_id,
       (SELECT u.username FROM users u WHERE u.id = p.author_id) AS username,
       coalesce(left(p.title, 500), '') AS title, left(p.content, {MAX_INDEXED_CHARS}) AS content,
       ARRAY(SELECT t.name FROM post_tags pt JOIN tags t ON t.id = pt.tag_id
             WHERE pt.post_id = p.id ORDER BY t.name)::text[] AS tags,
       p.privacy_level, p.created_at
FROM posts p
WHERE p.id = ANY(CAST(:ids AS uuid[])) AND {readable_post_sql('p')}
"""

# The weighted tsvector of the PostgreSQL backend. 'simple' (lower-case, no
# stemming, no stop words) is the closest PostgreSQL configuration to
# Elasticsearch's standard analyzer, and matches Typesense's default tokenizing.
TSVECTOR_SQL = """(setweight(to_tsvector('simple', d.title), 'A')
 || setweight(to_tsvector('simple', array_to_string(d.tags, ' ')), 'A')
 || setweight(to_tsvector('simple', d.content), 'B')
 || setweight(to_tsvector('simple', d.username), 'C'))"""

TSQUERY_SQL = "websearch_to_tsquery('simple', :q)"

# Typesense: user_id is a string because the seed maps it as a keyword (exact
# match; also Typesense 0.24 can exclude a list of strings, not of numbers).
TYPESENSE_FIELDS = (
    {"name": "title", "type": "string"},
    {"name": "content", "type": "string"},
    {"name": "user_id", "type": "string"},
    {"name": "username", "type": "string"},
    {"name": "tags", "type": "string[]"},
    {"name": "privacy_level", "type": "string"},
    {"name": "created_at", "type": "int64"},
)
TYPESENSE_QUERY_BY = ("title", "tags", "content", "username")
TYPESENSE_QUERY_WEIGHTS = (4, 4, 2, 1)    # the A, A, B, C weights above

SCHEMA_HASH = hashlib.sha256(
    "\n".join([DOCUMENT_COLUMNS_SQL, TSVECTOR_SQL, TSQUERY_SQL, repr(TYPESENSE_FIELDS),
               repr(TYPESENSE_QUERY_BY), repr(TYPESENSE_QUERY_WEIGHTS)]).encode()).hexdigest()[:16]
"""Stored with each index version: a version built with another hash is rebuilt by ``ensure_current``."""


def load(session: Session, post_ids: list[str]) -> list[dict]:
    """The documents of those posts that search may show; the others have none."""
    if not post_ids:
        return []
    rows = session.execute(text(DOCUMENT_COLUMNS_SQL), {"ids": post_ids}).mappings().all()
    return [dict(row, post_id=str(row["post_id"])) for row in rows]


def typesense_document(row: dict) -> dict:
    created: datetime = row["created_at"]
    return {"id": row["post_id"], "title": row["title"], "content": row["content"], "user_id": str(row["user_id"]),
            "username": row["username"], "tags": list(row["tags"]), "privacy_level": row["privacy_level"],
            "created_at": int(created.timestamp())}
