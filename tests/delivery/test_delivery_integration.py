"""Delivery through real parts: real PostgreSQL, real Redis, real workers, a real SMTP server and a
real Web Push service (tests/delivery/conftest.py). Nothing is mocked.

- 25 likes recorded twice by 2 worker processes, dispatched by concurrent ``dispatch_due``
  runs: exactly one email and one push, saying "25 people liked your post".
- Read in-app before it settled: nothing sent, both channels recorded as skipped.
- SMTP 451 is retried and then succeeds; SMTP 550 is FAILED with the reply.
- Push 410 deletes the subscription; push 429 waits for its Retry-After, then succeeds.
- A poison argument is a typed dead letter, and the worker keeps serving.
"""
from __future__ import annotations

import time
from datetime import datetime, timezone

import pytest
from celery.result import ResultSet
from sqlalchemy import text

from db.session import session_scope
from tests.delivery.conftest import deliveries, dispatch, subscribe
from tests.notifications.builders import Graph, record
from tests.waiting import wait_for

pytestmark = pytest.mark.integration

SETTLE_SECONDS = 1


def _email_of(session, user_id: int) -> str:
    return session.execute(text("SELECT email FROM users WHERE id = :u"), {"u": user_id}).scalar_one()


def _row(engine, row_id: str) -> dict:
    with engine.connect() as connection:
        return dict(connection.execute(text(
            "SELECT status, attempts, error, message_id, provider_message_id, delivered_to::text[] AS delivered_to "
            "FROM deliveries WHERE id = :id"), {"id": row_id}).mappings().one())


def _comment_world(receiver=None) -> dict:
    """An author whose post got a comment, recorded (email is on for comments by default)."""
    with session_scope() as session:
        graph = Graph(session)
        author, commenter = graph.users(2)
        post = graph.post(author)
        record(session, "comment", graph.comment(commenter, post, "what a lovely post"))
        world = {"author": author, "email": _email_of(session, author)}
        if receiver is not None:
            world["subscription"] = subscribe(session, author, receiver)
    return world


def _claim(*, email: bool = True, push: bool = False) -> dict[str, str]:
    """Plan and claim whatever has settled (settle 0), as one dispatch_due run would: channel -> row id."""
    with session_scope() as session:
        claimed = dispatch(session, datetime.now(timezone.utc), settle=0, email=email, push=push)
    return {channel: row_id for channel, row_id in claimed}


def _settled(engine) -> bool:
    """Every due mark is older than DELIVERY_SETTLE_SECONDS by the database's clock (which wrote it)."""
    with engine.connect() as connection:
        return bool(connection.scalar(text(
            "SELECT bool_and(quiet_since < now() - make_interval(secs => :s)) FROM delivery_due"),
            {"s": SETTLE_SECONDS + 0.2}))


def _dead_letter(engine, task_id: str) -> dict | None:
    with engine.connect() as connection:
        found = connection.execute(text("SELECT * FROM dead_letters WHERE task_id = :id"),
                                   {"id": task_id}).mappings().first()
        return dict(found) if found else None


# --- 25 likes, recorded twice, two workers ---------------------------------------------


def _queues_idle(iso) -> bool:
    import redis

    client = redis.Redis.from_url(iso.broker_url)
    if client.llen("delivery") or client.llen("notifications") or client.hlen("unacked"):
        return False
    return True


def test_25_likes_recorded_twice_by_2_workers_give_one_email_and_one_push(
        clean_db, delivery_env, isolated, monkeypatch, tmp_path):
    mail, push = delivery_env["mail"], delivery_env["push"]
    with session_scope() as session:
        graph = Graph(session)
        author, *likers = graph.users(26)
        post = graph.post(author)
        like_ids = [graph.like(liker, post) for liker in likers]
        subscribe(session, author, push)
        # Email is off for likes by default (they go to the digest); this author wants them.
        session.execute(text("INSERT INTO notification_preferences (user_id, notification_type, channel, enabled) "
                             "VALUES (:u, 'like', 'email', true)"), {"u": author})
        author_email = _email_of(session, author)

    # spawn_worker copies os.environ: the delivery settings must be in place before the start.
    monkeypatch.setenv("DELIVERY_SETTLE_SECONDS", str(SETTLE_SECONDS))
    for name in ("deliver-a", "deliver-b"):
        isolated.start_worker(name, ["notifications", "delivery"], concurrency=2,
                              log_path=tmp_path / f"{name}.log")

    recorded = [isolated.app.send_task("notifications.record", args=["like", like_id])
                for _ in range(2) for like_id in like_ids]
    outcomes = ResultSet(recorded).join_native(timeout=120, propagate=True)
    assert sorted(o["status"] for o in outcomes).count("duplicate") == 25

    # Settled: the batch's newest event is DELIVERY_SETTLE_SECONDS old (measured by the database clock).
    wait_for(lambda: _settled(clean_db), timeout=30, what="the batch settled")

    dispatched = []
    for _ in range(3):  # two at once, three times: SKIP LOCKED must hand each delivery to one of them
        pair = [isolated.app.send_task("delivery.dispatch_due") for _ in range(2)]
        dispatched += ResultSet(pair).join_native(timeout=60, propagate=True)
    assert sum(d.get("claim", 0) for d in dispatched) == 2, dispatched

    def all_final():
        with session_scope() as session:
            rows = deliveries(session, author)
        return rows if rows and all(r["status"] in ("sent", "skipped", "failed") for r in rows) else None

    rows = wait_for(all_final, timeout=60, what="both deliveries final")
    # Once more after the fact: a late dispatch must not send anything again.
    ResultSet([isolated.app.send_task("delivery.dispatch_due") for _ in range(2)]).join_native(timeout=60)
    wait_for(lambda: _queues_idle(isolated), timeout=30, what="the delivery queue drained")
    with session_scope() as session:
        rows = deliveries(session, author)

    assert [(r["channel"], r["status"], r["version"]) for r in rows] == [("email", "sent", 25), ("push", "sent", 25)]
    assert len(mail.messages) == 1, [m.message["Subject"] for m in mail.messages]
    letter = mail.messages[0]
    assert letter.rcpt_tos == [author_email]
    assert letter.message["Message-ID"] == rows[0]["message_id"]
    assert "25 people liked your post" in letter.message.get_body(("plain",)).get_content()
    assert len(push.pushes) == 1, push.pushes
    payload = push.pushes[0].json()
    assert payload["body"] == "25 people liked your post" and payload["count"] == 25
    assert push.pushes[0].topic == rows[1]["message_id"]
    assert push.rejected == []


# --- Read before it settled -------------------------------------------------------------


def test_read_in_app_before_it_settled_sends_nothing_and_records_skipped(
        clean_db, delivery_env, celery_worker, monkeypatch):
    from tasks.delivery.tasks import dispatch_due
    from tasks.notifications.tasks import mark_read

    monkeypatch.setenv("DELIVERY_SETTLE_SECONDS", str(SETTLE_SECONDS))
    world = _comment_world(delivery_env["push"])
    with clean_db.connect() as connection:
        (notification_id,) = connection.execute(text(
            "SELECT id::text FROM notifications WHERE user_id = :u AND parent_id IS NULL"),
            {"u": world["author"]}).scalars().all()
    # Read in the app while the batch is still settling.
    assert mark_read.delay(world["author"], [notification_id]).get(timeout=30)["marked"] >= 1
    wait_for(lambda: _settled(clean_db), timeout=30, what="the notification settled")

    outcome = dispatch_due.delay().get(timeout=60)

    assert outcome.get("claim", 0) == 0, outcome
    with session_scope() as session:
        rows = deliveries(session, world["author"])
    assert [(r["channel"], r["status"], r["error"]) for r in rows] == [
        ("email", "skipped", "read before it was due"), ("push", "skipped", "read before it was due")]
    assert delivery_env["mail"].messages == [] and delivery_env["push"].pushes == []


# --- SMTP replies -----------------------------------------------------------------------


def test_smtp_451_is_retried_and_then_succeeds(clean_db, delivery_env, celery_worker):
    from tasks.delivery.tasks import send_email

    mail = delivery_env["mail"]
    world = _comment_world()
    row_id = _claim()["email"]
    mail.fail_next(451, "4.3.0 Try again later")

    outcome = send_email.delay(row_id).get(timeout=60)

    assert outcome["status"] == "sent"
    assert len(mail.messages) == 1 and mail.messages[0].rcpt_tos == [world["email"]]
    row = _row(clean_db, row_id)
    assert row["status"] == "sent" and row["attempts"] == 2 and row["error"] is None
    assert row["provider_message_id"].startswith("250")
    assert mail.messages[0].message["Message-ID"] == row["message_id"]


def test_smtp_550_is_failed_with_the_reply_and_the_worker_goes_on(clean_db, delivery_env, celery_worker):
    from tasks.delivery.tasks import send_email

    mail = delivery_env["mail"]
    bounced, other = _comment_world(), _comment_world()
    claimed = _claim_each(2)
    mail.fail_next(550, "5.1.1 <nobody@example.com>: Recipient address rejected")

    outcome = send_email.delay(claimed[bounced["author"]]).get(timeout=60)

    assert outcome["status"] == "failed"
    row = _row(clean_db, claimed[bounced["author"]])
    assert row["status"] == "failed" and row["attempts"] == 1
    assert row["error"].startswith("550 5.1.1 <nobody@example.com>: Recipient address rejected")
    assert mail.messages == []
    # The worker is up, and its SMTP session recovered from the refused transaction.
    assert send_email.delay(claimed[other["author"]]).get(timeout=60)["status"] == "sent"
    assert [m.rcpt_tos for m in mail.messages] == [[other["email"]]]


def _claim_each(count: int) -> dict[int, str]:
    """Claim the email deliveries of ``count`` recorded notifications: user id -> row id."""
    _claim()
    with session_scope() as session:
        found = dict(session.execute(text(
            "SELECT user_id, id::text FROM deliveries WHERE channel = 'email' AND status = 'queued'")).all())
    assert len(found) == count
    return found


# --- Push replies -----------------------------------------------------------------------


def test_push_410_deletes_the_subscription(clean_db, delivery_env, celery_worker):
    from tasks.delivery.tasks import send_push

    push = delivery_env["push"]
    world = _comment_world(push)
    row_id = _claim(email=False, push=True)["push"]
    push.respond(world["subscription"]["endpoint"], 410)

    outcome = send_push.delay(row_id).get(timeout=60)

    assert outcome["status"] == "skipped" and outcome["removed"] == 1
    with clean_db.connect() as connection:
        assert connection.scalar(text("SELECT count(*) FROM push_subscriptions WHERE user_id = :u"),
                                 {"u": world["author"]}) == 0
    row = _row(clean_db, row_id)
    assert row["status"] == "skipped" and row["error"] == "every subscription is gone"
    assert push.pushes == []


def test_push_429_waits_for_retry_after_then_succeeds(clean_db, delivery_env, celery_worker):
    from tasks.delivery.tasks import send_push

    push = delivery_env["push"]
    world = _comment_world(push)
    row_id = _claim(email=False, push=True)["push"]
    retry_after = 2  # ten times the DELIVERY_RETRY_SECONDS backoff of delivery_env
    push.respond(world["subscription"]["endpoint"], 429, headers={"Retry-After": str(retry_after)})

    started = time.monotonic()
    outcome = send_push.delay(row_id).get(timeout=60)
    arrived = push.wait_for(1, timeout=1)
    waited = time.monotonic() - started

    assert outcome["status"] == "sent"
    assert waited >= retry_after * 0.95, f"retried after {waited:.2f}s, Retry-After asked {retry_after}s"
    assert len(arrived) == 1 and arrived[0].json()["count"] == 1
    row = _row(clean_db, row_id)
    assert row["status"] == "sent" and row["attempts"] == 2
    assert row["delivered_to"] == [world["subscription"]["id"]]
    assert arrived[0].topic == row["message_id"]
    with clean_db.connect() as connection:
        failures, success = connection.execute(text(
            "SELECT failure_count, last_success_at FROM push_subscriptions WHERE id = :id"),
            {"id": world["subscription"]["id"]}).one()
    assert failures == 0 and success is not None


# --- A poison argument --------------------------------------------------------------------


def test_a_poison_argument_is_a_typed_dead_letter_and_the_worker_goes_on(clean_db, delivery_env, celery_worker):
    from tasks.delivery.tasks import send_email
    from workers.errors import InvalidArguments

    poisoned = send_email.delay("not-a-uuid")
    with pytest.raises(InvalidArguments, match="not a valid UUID"):
        poisoned.get(timeout=60)
    assert poisoned.retries in (0, None)
    letter = wait_for(lambda: _dead_letter(clean_db, poisoned.id), timeout=30, what="the dead letter")
    assert letter["error_code"] == "invalid_arguments" and letter["task_name"] == "delivery.send_email"

    world = _comment_world()
    assert send_email.delay(_claim()["email"]).get(timeout=60)["status"] == "sent"
    assert [m.rcpt_tos for m in delivery_env["mail"].messages] == [[world["email"]]]


def test_a_refused_argument_has_nothing_to_close_out(clean_db, delivery_env, celery_worker, caplog):
    from tasks.delivery.tasks import send_email
    from workers.errors import InvalidArguments

    poisoned = send_email.delay("not-a-uuid")
    with pytest.raises(InvalidArguments):
        poisoned.get(timeout=60)
    wait_for(lambda: _dead_letter(clean_db, poisoned.id), timeout=30, what="the dead letter")
    assert "could not close out" not in caplog.text
