"""Bring a pair's notifications in line with their friendships row, whatever happened to it.

The web tier writes ``friendships`` (request, withdraw, decline, accept,
unfriend, block, unblock) and sends ``graph.sync_friendship`` with the two ids.
The task reads the row as it is now and converges on it, so a redelivery, a
late message or two syncs in either order end in the same place:

- ``pending``: user1's request notifies user2 (once per request row);
- ``accepted``: user2's accept notifies user1 (once per row);
- either way, a request or accept of an earlier row of the pair is retracted;
- no row (withdrawn, declined, unfriended): both users' friend_request and
  friend_accept notifications from each other are retracted;
- ``blocked``: every notification either user got from the other is removed.

Which feeds to rebuild is returned: an accept, unfriend or block changes what
each may see (db/visibility.py), a pending request does not.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import text
from sqlalchemy.orm import Session

from db.locks import xact_lock
from tasks.notifications.batching import apply_events, lock_keys, retract_between
from tasks.notifications.config import BATCH_CONFIGS
from tasks.notifications.sources import load_events

PAIR_SQL = text("""
SELECT id::text, user1_id, user2_id, status FROM friendships
WHERE least(user1_id, user2_id) = least(:a, :b) AND greatest(user1_id, user2_id) = greatest(:a, :b)
""")

# The event each state notifies; the other states notify nothing.
NOTIFYING = {"pending": "friend_request", "accepted": "friend_accept"}
PAIR_KINDS = ("friend_request", "friend_accept")


@dataclass
class PairSync:
    state: str                                   # pending | accepted | blocked | none
    notification: str | None = None              # created, batched, duplicate, ... of the state's event
    retracted: int = 0                           # notifications removed
    refresh_users: list[int] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"status": "ok", "state": self.state, "notification": self.notification,
                "retracted": self.retracted, "feeds_refreshed": self.refresh_users}


def sync_pair(session: Session, user_id: int, other_id: int) -> PairSync:
    """Converge the pair's notifications on their row; the caller commits, then refreshes feeds."""
    low, high = sorted((user_id, other_id))
    xact_lock(session, "graph.pair", low, high)  # two syncs of one pair run one after the other
    # Both users' friend notification keys in one sorted pass: everything below re-takes
    # only these (or, for a block, more keys after them), so syncs never lock in a cycle.
    lock_keys(session, {(u, BATCH_CONFIGS[kind].batch_key(scope_id=None, recipient_id=u))
                        for u in (low, high) for kind in PAIR_KINDS})
    row = session.execute(PAIR_SQL, {"a": low, "b": high}).first()
    state = row.status if row else "none"
    result = PairSync(state)
    if state in NOTIFYING:
        # An earlier row's request or accept (unfriended or withdrawn, then asked again
        # before that sync ran) no longer holds: only this row's may stay.
        keep = (f"friend_request:{row.id}",) + ((f"friend_accept:{row.id}",) if state == "accepted" else ())
        result.retracted = retract_between(session, low, high, kinds=PAIR_KINDS, keep=keep)
        events = load_events(session, NOTIFYING[state], [row.id])
        if events:
            result.notification = apply_events(session, events)[0].status
    elif state == "none":
        result.retracted = retract_between(session, low, high, kinds=PAIR_KINDS)
    else:
        result.retracted = retract_between(session, low, high)
    if state != "pending":
        result.refresh_users = [low, high]
    return result
