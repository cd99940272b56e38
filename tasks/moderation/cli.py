"""``python -m workers moderation queue | approve ID | reject ID --reason …``: the review queue."""
from __future__ import annotations

import json
from datetime import datetime, timezone

from db.session import session_scope
from tasks.moderation import review
from workers.console import printable, table


def queue_main(limit: int, as_json: bool = False) -> int:
    with session_scope() as session:
        rows = review.queue(session, limit)
    if as_json:
        print(json.dumps([{**row, "automated_score": str(row["automated_score"]),
                           "created_at": row["created_at"].isoformat()} for row in rows], indent=2))
        return 0
    if not rows:
        print("the moderation queue is empty")
        return 0
    print(table(("id", "type", "content id", "score", "profanity", "repeat", "links", "flagged at (UTC)", "text"),
                [(row["id"], row["content_type"].lower(), row["content_id"], str(row["automated_score"]),
                  row["signals"].get("profanity"), row["signals"].get("repetition"),
                  row["signals"].get("link_density"), f"{row['created_at']:%Y-%m-%d %H:%M}",
                  printable(row["snippet"] or "(deleted)")) for row in rows]))
    print(f"\n{len(rows)} flagged, oldest first; decide with `moderation approve ID` or `moderation reject ID`")
    return 0


def decide_main(moderation_id: str, *, approve: bool, moderator_id: int, reason: str | None = None) -> int:
    try:
        with session_scope() as session:
            decision = review.decide(session, moderation_id, approve=approve, moderator_id=moderator_id,
                                     reason=reason, now=datetime.now(timezone.utc))
    except review.NotFound as exc:
        print(f"error: {exc}")
        return 1
    verb = "approved" if approve else "rejected"
    effect = ("shown again" if approve else "hidden") if decision.hidden_changed else "unchanged"
    if not decision.current_version:
        effect = "unchanged: the content's text has changed since this version"
    print(f"{verb} {decision.moderation_id} (was {decision.previous}); visibility {effect}"
          + ("; the author was notified" if decision.author_notified else ""))
    return 0
