"""``python -m workers search reindex [--since DATE] | verify``: the operator's search commands."""
from __future__ import annotations

import sys
from datetime import date, datetime, timezone

from db.session import session_scope
from tasks.search import reindex as reindexing, verify as verification
from tasks.search.engines import engine
from workers.console import progress_bar
from workers.errors import ServiceUnavailable


def reindex_main(since: date | None = None) -> int:
    search_engine = engine()
    started = datetime.combine(since, datetime.min.time(), timezone.utc) if since else None
    what = f"posts created or edited since {since}" if since else "every post into a new version"
    print(f"reindexing {what} ({search_engine.name})")
    try:
        result = reindexing.reindex(search_engine, since=started, progress=progress_bar("posts", stream=sys.stderr))
    except reindexing.ReindexRunning as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except ServiceUnavailable as exc:
        print(f"error: the search engine is unavailable: {exc}", file=sys.stderr)
        return 1
    if result.version is None:
        print(f"{result.posts} posts rewritten in the live versions: {result.applied.upserted} written, "
              f"{result.applied.deleted} removed")
    else:
        replaced = f", replacing version {result.replaced}" if result.replaced else ""
        print(f"version {result.version} is active{replaced}: {result.applied.upserted} documents "
              f"from {result.posts} posts")
    return 0


def verify_main() -> int:
    try:
        with session_scope() as session:
            result = verification.verify(session, engine(), datetime.now(timezone.utc).date())
    except ServiceUnavailable as exc:
        print(f"error: the search engine is unavailable: {exc}", file=sys.stderr)
        return 1
    if result.status != "ok":
        print("no active index: run `python -m workers search reindex`")
        return 1
    print(f"version {result.version}: {result.expected} posts to show, {result.indexed} documents; "
          f"{result.removed} stale removed, {result.missing} queued for the dirty pass")
    return 0
