"""Demo: alice's browser subscribes to the dev push service, she gets a high-priority mention,
and one dispatch sends it to her by email and by push (the dev SMTP sink and push receiver
write what arrived under .data/mail and .data/push). Her likes batch goes out by push once
it has settled, while ``make run`` keeps running."""
from __future__ import annotations

import time
from datetime import datetime, timezone

from sqlalchemy import text

from db.session import session_scope
from tasks.delivery.tasks import dispatch_due
from workers.dev import delivery_peers
from workers.dev.demo import DemoGraph

FAMILY = "delivery"
WAIT_FOR_SENDS = 30.0


def enqueue(graph: DemoGraph) -> list:
    alice = graph.user_ids["alice"]
    peers = delivery_peers.current()
    with session_scope() as session:
        if peers is not None and peers.push_receiver is not None:
            sub = peers.push_receiver.new_subscription()
            session.execute(text(
                "INSERT INTO push_subscriptions (user_id, endpoint, p256dh, auth) VALUES (:u, :e, :p, :a) "
                "ON CONFLICT (endpoint) DO NOTHING"),
                {"u": alice, "e": sub["endpoint"], "p": sub["keys"]["p256dh"], "a": sub["keys"]["auth"]})
        # What the web tier writes for an urgent notification: high priority skips the settle wait.
        graph.notes["delivery_notification"] = session.execute(text(
            "INSERT INTO notifications (user_id, type, priority, title, message, last_updated_at) "
            "VALUES (:u, 'mention', 'high', 'Bob mentioned you', 'Bob mentioned you in a post: thanks @alice', "
            ":now) RETURNING id::text"), {"u": alice, "now": datetime.now(timezone.utc)}).scalar_one()
    return [dispatch_due.delay()]


def summarize(graph: DemoGraph) -> str:
    notification = graph.notes.get("delivery_notification")
    deadline = time.monotonic() + WAIT_FOR_SENDS
    while True:  # the sends are tasks of their own, fanned out by the dispatch
        with session_scope() as session:
            rows = dict(session.execute(text(
                "SELECT channel, status FROM deliveries WHERE notification_id = :n"), {"n": notification}).all())
        if all(status in ("sent", "skipped", "failed") for status in rows.values()) and rows \
                or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    peers = delivery_peers.current()
    where = f"; files in {peers.mail_dir} and {peers.push_dir}" if peers and peers.mail_dir else ""
    return ("alice's mention: " + (", ".join(f"{channel} {status}" for channel, status in sorted(rows.items()))
                                   or "no delivery yet") + where)
