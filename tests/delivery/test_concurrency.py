"""Two dispatchers at once, on two real connections: SKIP LOCKED gives each a disjoint share."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sqlalchemy import text
from sqlalchemy.orm import Session

from tasks.delivery import planning
from tests.notifications.builders import Graph, record

BOTH = planning.Transports(email=True, push=True)


def _seed(engine, posts: int) -> int:
    with Session(engine) as session, session.begin():
        graph = Graph(session)
        author, commenter = graph.users(2)
        session.execute(text("INSERT INTO push_subscriptions (user_id, endpoint, p256dh, auth) "
                             "VALUES (:u, 'https://push.example/1', 'k', 'a')"), {"u": author})
        at = datetime.now(timezone.utc) - timedelta(minutes=5)
        record(session, "comment", *[graph.comment(commenter, graph.post(author), "hi", at) for _ in range(posts)])
    return author


def test_two_dispatchers_plan_and_claim_disjoint_shares(clean_db):
    engine = clean_db
    _seed(engine, 20)  # 20: the per-hour single limit would fold more into one batch
    now = datetime.now(timezone.utc)
    first, second = Session(engine), Session(engine)
    try:
        # The first holds its share (locked, uncommitted) while the second runs.
        taken_first = planning.plan_ripe(first, now=now, settle_seconds=120, chunk=12, transports=BOTH).taken
        taken_second = planning.plan_ripe(second, now=now, settle_seconds=120, chunk=100, transports=BOTH).taken
        assert (taken_first, taken_second) == (12, 8)
        first.commit()
        second.commit()
        claimed_first = planning.claim_due(first, now=now, chunk=30)
        claimed_second = planning.claim_due(second, now=now, chunk=100)
        first.commit()
        second.commit()
    finally:
        first.close()
        second.close()
    assert len(claimed_first) == 30 and len(claimed_second) == 10
    assert not {row for _, row in claimed_first} & {row for _, row in claimed_second}
    with engine.connect() as connection:
        per_channel = dict(connection.execute(text(
            "SELECT channel, count(*) FROM deliveries WHERE status = 'queued' GROUP BY channel")).all())
        assert per_channel == {"email": 20, "push": 20}
        assert connection.execute(text("SELECT count(*) FROM delivery_due")).scalar() == 0
