"""A post's hashtags, kept in two shapes that must agree: ``post_tags`` rows (seed
002) and the ``posts.tags`` array (seeds 003/004), written in one transaction.

Run by ``mentions.extract`` on the same create or edit event, so the web tier
sends nothing new. The post row is locked (``FOR NO KEY UPDATE``, which does not
block likes or comments referencing it) and its current text is parsed, so two
extractions of the same post racing (a create and a quick edit) end with the
tags of the newest text, whichever commits last.
"""
from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.orm import Session

from tasks.analytics.hashtags import extract_hashtags

_SET_TAGS_SQL = text("""
    WITH wanted AS (
        SELECT id FROM tags WHERE name = ANY(CAST(:names AS text[]))
    ), removed AS (
        DELETE FROM post_tags WHERE post_id = CAST(:post_id AS uuid) AND tag_id NOT IN (SELECT id FROM wanted)
    ), added AS (
        INSERT INTO post_tags (post_id, tag_id) SELECT CAST(:post_id AS uuid), id FROM wanted ORDER BY id
        ON CONFLICT DO NOTHING
    )
    UPDATE posts SET tags = CAST(:names AS varchar[]) WHERE id = CAST(:post_id AS uuid) AND tags <> CAST(:names AS varchar[])
""")


def tag_post(session: Session, post_id: str) -> list[str] | None:
    """Set the post's tags from its current text; None if the post is gone."""
    content = session.execute(text("SELECT content FROM posts WHERE id = CAST(:id AS uuid) FOR NO KEY UPDATE"),
                              {"id": post_id}).scalar()
    if content is None:
        return None
    names = extract_hashtags(content)
    if names:
        # Sorted: two posts adding the same new tags insert them in one order, never deadlocking.
        session.execute(text("INSERT INTO tags (name) SELECT unnest(CAST(:names AS text[])) AS n ORDER BY n "
                             "ON CONFLICT (name) DO NOTHING"), {"names": sorted(names)})
    session.execute(_SET_TAGS_SQL, {"post_id": post_id, "names": names})
    return names
