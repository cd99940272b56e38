"""What hiding a post or comment does, and what showing it again undoes.

``moderation_hidden`` is the one flag every reader checks (db/visibility.py):
feeds, popular_posts, trending, notifications and search. Flipping it here also:

- hidden: removes the notifications the content sent to others (the comment's
  notification to the post's author, the mentions in it), so no one is pointed
  at it, and drops the post from every stored feed at once;
- shown again: re-records those notifications (their dedupe keys make this
  exactly once), and the next feed refresh brings the post back.

Notifications the content's own author received (likes of their post) are theirs
to keep: they show the content to no one else.
"""
from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.orm import Session

from db.session import session_scope

from tasks.mentions.parser import extract_mentions
from tasks.mentions.service import load_source, notify_mentions, validate_usernames
from tasks.notifications.batching import apply_events, retract_dedupe_keys
from tasks.notifications.sources import load_events
from tasks.upkeep.purge import on_purged

CONTENT_TABLES = {"POST": "posts", "COMMENT": "comments"}

_SET_HIDDEN_SQL = {
    content_type: text(f"UPDATE {table} SET moderation_hidden = :hidden "
                       f"WHERE id = CAST(:id AS uuid) AND moderation_hidden <> :hidden RETURNING id")
    for content_type, table in CONTENT_TABLES.items()
}


_POST_AUTHOR_OF_COMMENT_SQL = text(
    "SELECT p.author_id FROM comments c JOIN posts p ON p.id = c.post_id WHERE c.id = CAST(:id AS uuid)")


def sent_notifications(session: Session, content_type: str, content_id: str) -> list[tuple[int, str]]:
    """(recipient, dedupe key) of the notifications the content sent to other users: the
    users its text mentions and, for a comment, the post's author."""
    kind = content_type.lower()
    source = load_source(session, kind, content_id)
    if source is None:
        return []
    mentioned = validate_usernames(session, extract_mentions(source.content))
    recorded = [(user_id, f"mention:{kind}:{content_id}") for user_id, _name in mentioned.values()]
    if content_type == "COMMENT":
        post_author = session.execute(_POST_AUTHOR_OF_COMMENT_SQL, {"id": content_id}).scalar()
        recorded.append((post_author, f"comment:{content_id}"))
    return recorded


def set_hidden(session: Session, content_type: str, content_id: str, hidden: bool) -> bool:
    """Hide or show the content with its side effects; False if it already was (or is gone)."""
    changed = session.execute(_SET_HIDDEN_SQL[content_type], {"id": content_id, "hidden": hidden}).first()
    if changed is None:
        return False
    if hidden:
        retract_dedupe_keys(session, sent_notifications(session, content_type, content_id))
        if content_type == "POST":
            session.execute(text("DELETE FROM feed_items WHERE post_id = CAST(:id AS uuid)"), {"id": content_id})
    else:
        if content_type == "COMMENT":
            apply_events(session, load_events(session, "comment", [content_id]))
        source = load_source(session, content_type.lower(), content_id)
        if source is not None:
            notify_mentions(session, source)
    return True


_PURGED_KINDS = {"posts": "POST", "comments": "COMMENT"}


@on_purged
def forget_purged_content(kind: str, ids: list) -> None:
    """The versions of posts and comments purged for good (a purged user's go by cascade)."""
    if kind in _PURGED_KINDS and ids:
        with session_scope() as session:
            session.execute(text("DELETE FROM content_moderation WHERE content_type = :type "
                                 "AND content_id = ANY(CAST(:ids AS uuid[]))"),
                            {"type": _PURGED_KINDS[kind], "ids": [str(i) for i in ids]})
