"""One delivery from its claimed row to SENT, against the real SMTP server and push service of conftest."""
from __future__ import annotations

import contextlib
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import text

from tasks.delivery import sending, unsubscribe
from tests.delivery.conftest import deliveries, dispatch, subscribe
from tests.notifications.builders import record


@pytest.fixture
def same_session(db_session):
    """``deliver``'s session factory, on the test's rolled-back transaction (one savepoint per step)."""
    @contextlib.contextmanager
    def factory():
        with db_session.begin_nested():
            yield db_session
    return factory


def _settled(graph, session, kind: str = "comment", actors: int = 1, *, email_likes: bool = False):
    author, *others = graph.users(1 + actors)
    post = graph.post(author)
    at = datetime.now(timezone.utc) - timedelta(minutes=5)
    if email_likes:
        session.execute(text("INSERT INTO notification_preferences VALUES (:u, 'like', 'email', true)"), {"u": author})
    if kind == "comment":
        record(session, "comment", *[graph.comment(o, post, "so good", at) for o in others])
    else:
        record(session, "like", *[graph.like(o, post, at) for o in others])
    return author, post


def _deliver_all(claimed, factory):
    config = sending.DeliveryConfig.from_settings()
    return [sending.deliver(channel, row_id, sessions=factory, config=config) for channel, row_id in claimed]


def test_email_is_multipart_from_templates_with_a_signed_one_click_unsubscribe(
        graph, db_session, delivery_env, same_session):
    author, _post = _settled(graph, db_session)
    claimed = dispatch(db_session, datetime.now(timezone.utc), push=False)
    assert [o["status"] for o in _deliver_all(claimed, same_session)] == ["sent"]
    [mail] = delivery_env["mail"].wait_for(1)
    message = mail.message
    address = db_session.execute(text("SELECT email FROM users WHERE id = :u"), {"u": author}).scalar()
    assert mail.rcpt_tos == [address] and message["Subject"] == "New Comment"
    plain = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    assert "commented on your post" in plain and "commented on your post" in html and "<html>" in html
    header = message["List-Unsubscribe"]
    assert header.startswith("<http") and message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    token = header.split("token=", 1)[1].rstrip(">")
    assert unsubscribe.verify(token) == (author, "comment")
    with pytest.raises(unsubscribe.BadToken):
        unsubscribe.verify(token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1])
    [row] = deliveries(db_session, author)
    assert row["status"] == "sent" and row["message_id"] == message["Message-ID"]


def test_html_escapes_what_users_wrote(graph, db_session, delivery_env, same_session):
    author, other = graph.users(2)
    db_session.execute(text("UPDATE users SET username = '<b>x</b>' WHERE id = :u"), {"u": other})
    post = graph.post(author)
    record(db_session, "comment", graph.comment(other, post, "hi", datetime.now(timezone.utc) - timedelta(minutes=5)))
    _deliver_all(dispatch(db_session, datetime.now(timezone.utc), push=False), same_session)
    [mail] = delivery_env["mail"].wait_for(1)
    html = mail.message.get_body(("html",)).get_content()
    assert "&lt;b&gt;x&lt;/b&gt;" in html and "<b>x</b>" not in html


def test_push_is_encrypted_to_the_device_with_the_batch_topic(graph, db_session, delivery_env, same_session):
    receiver = delivery_env["push"]
    author, post = graph.users(1)[0], None
    subscribe(db_session, author, receiver)
    post = graph.post(author)
    likers = graph.users(3)
    record(db_session, "like", *[graph.like(u, post, datetime.now(timezone.utc) - timedelta(minutes=5))
                                 for u in likers])
    claimed = dispatch(db_session, datetime.now(timezone.utc), email=False)
    assert [o["status"] for o in _deliver_all(claimed, same_session)] == ["sent"]
    [push] = receiver.wait_for(1)
    payload = push.json()
    assert payload["body"] == "3 people liked your post" and payload["count"] == 3
    [row] = deliveries(db_session, author)
    assert push.topic == row["message_id"] and len(push.topic) <= 32
    assert receiver.rejected == []


def test_a_crash_after_the_hand_over_resends_once_with_the_same_message_id(
        graph, db_session, delivery_env, same_session):
    """SENDING is committed before the hand-over: a redelivered task re-sends with the same Message-ID."""
    author, _post = _settled(graph, db_session)
    [(channel, row_id)] = dispatch(db_session, datetime.now(timezone.utc), push=False)
    config = sending.DeliveryConfig.from_settings()
    with same_session() as session:   # the first attempt: marked SENDING, handed over, then "killed"
        attempt = sending.begin(session, channel, row_id, now=datetime.now(timezone.utc), config=config)
    from tasks.delivery import rendering, transports
    transports.send_email(config.smtp_url, rendering.notification_email(
        notification=attempt.notification, to=attempt.to, msg_id=attempt.message_id, mail_from=config.mail_from,
        links=config.links, secret=config.unsubscribe_secret, sent_at=datetime.now(timezone.utc)))
    assert sending.deliver(channel, row_id, sessions=same_session, config=config)["status"] == "sent"
    assert sending.deliver(channel, row_id, sessions=same_session, config=config)["status"] == "duplicate"
    mails = delivery_env["mail"].wait_for(2)
    assert len({m.message["Message-ID"] for m in mails}) == 1 and len(mails) == 2
    assert deliveries(db_session, author)[0]["attempts"] == 2


def test_over_the_hourly_push_limit_the_rest_fold_into_the_digest(
        graph, db_session, delivery_env, same_session, monkeypatch):
    monkeypatch.setenv("PUSH_MAX_PER_HOUR", "2")
    receiver = delivery_env["push"]
    [author] = graph.users(1)
    subscribe(db_session, author, receiver)
    commenters = graph.users(3)
    for commenter in commenters:   # three posts: three separate batches, three pushes wanted
        post = graph.post(author)
        record(db_session, "comment", graph.comment(commenter, post, "hi",
                                                    datetime.now(timezone.utc) - timedelta(minutes=5)))
    claimed = dispatch(db_session, datetime.now(timezone.utc), email=False)
    outcomes = [o["status"] for o in _deliver_all(claimed, same_session)]
    assert sorted(outcomes) == ["folded", "sent", "sent"]
    assert len(receiver.wait_for(2)) == 2
    assert sorted(r["status"] for r in deliveries(db_session, author)) == ["folded", "sent", "sent"]


def test_a_send_for_an_already_handled_row_or_a_wrong_channel_does_nothing(
        graph, db_session, delivery_env, same_session):
    author, _post = _settled(graph, db_session)
    [(channel, row_id)] = dispatch(db_session, datetime.now(timezone.utc), push=False)
    config = sending.DeliveryConfig.from_settings()
    with pytest.raises(sending.PermanentFailure):
        sending.deliver("push", row_id, sessions=same_session, config=config)
    assert sending.deliver("email", row_id, sessions=same_session, config=config)["status"] == "sent"
    assert sending.deliver("email", row_id, sessions=same_session, config=config) == {
        "status": "duplicate", "was": "sent"}
    assert sending.deliver("email", "00000000-0000-0000-0000-000000000000", sessions=same_session,
                           config=config) == {"status": "gone"}
    assert len(delivery_env["mail"].messages) == 1


def test_a_batch_merged_after_planning_is_skipped(graph, db_session, delivery_env, same_session):
    """A single planned for delivery that becomes a batch child: its parent carries the news."""
    author, a, b = graph.users(3)
    subscribe(db_session, author, delivery_env["push"])
    post = graph.post(author)
    at = datetime.now(timezone.utc) - timedelta(minutes=10)
    record(db_session, "like", graph.like(a, post, at))
    [(channel, single_delivery)] = dispatch(db_session, datetime.now(timezone.utc), email=False)
    record(db_session, "like", graph.like(b, post, at + timedelta(minutes=1)))   # converts the single
    outcome = sending.deliver(channel, single_delivery, sessions=same_session,
                              config=sending.DeliveryConfig.from_settings())
    assert outcome == {"status": "skipped", "reason": "merged into a batch"}


def test_a_title_with_line_breaks_cannot_inject_headers(graph, db_session, delivery_env, same_session):
    [user] = graph.users(1)
    db_session.execute(text(
        "INSERT INTO notifications (user_id, type, priority, title, message) "
        "VALUES (:u, 'mention', 'high', E'Hi\\r\\nBcc: victim@example.com', :m)"), {"u": user, "m": "x" * 100_000})
    claimed = dispatch(db_session, datetime.now(timezone.utc), push=False)
    assert [o["status"] for o in _deliver_all(claimed, same_session)] == ["sent"]
    [mail] = delivery_env["mail"].wait_for(1)
    assert mail.message["Subject"] == "Hi Bcc: victim@example.com" and mail.message["Bcc"] is None
    assert len(mail.rcpt_tos) == 1 and len(mail.raw) < 30_000


def _one_like_push(graph, db_session, receiver, subscriptions: int = 1):
    author, liker = graph.users(2)
    subs = [subscribe(db_session, author, receiver) for _ in range(subscriptions)]
    post = graph.post(author)
    record(db_session, "like", graph.like(liker, post, datetime.now(timezone.utc) - timedelta(minutes=5)))
    [(channel, row_id)] = dispatch(db_session, datetime.now(timezone.utc), email=False)
    return author, subs, row_id


def test_a_device_refusing_for_good_is_counted_and_dropped_after_five(graph, db_session, delivery_env,
                                                                     same_session):
    receiver = delivery_env["push"]
    author, [sub], row_id = _one_like_push(graph, db_session, receiver)
    db_session.execute(text("UPDATE push_subscriptions SET failure_count = 3 WHERE id = :id"), {"id": sub["id"]})
    receiver.respond(sub["endpoint"], 403, times=2)
    config = sending.DeliveryConfig.from_settings()
    outcome = sending.deliver("push", row_id, sessions=same_session, config=config)
    assert outcome["status"] == "failed" and "403" in outcome["reason"]
    assert db_session.execute(text("SELECT failure_count FROM push_subscriptions WHERE id = :id"),
                              {"id": sub["id"]}).scalar() == 4
    [(_, second)] = _one_like_push_again(graph, db_session, author)
    assert sending.deliver("push", second, sessions=same_session, config=config)["status"] == "failed"
    assert db_session.execute(text("SELECT count(*) FROM push_subscriptions WHERE id = :id"),
                              {"id": sub["id"]}).scalar() == 0


def _one_like_push_again(graph, db_session, author):
    [liker] = graph.users(1)
    post = graph.post(author)
    record(db_session, "like", graph.like(liker, post, datetime.now(timezone.utc) - timedelta(minutes=5)))
    return dispatch(db_session, datetime.now(timezone.utc), email=False)


def test_a_retry_pushes_only_to_the_devices_that_said_later(graph, db_session, delivery_env, same_session):
    receiver = delivery_env["push"]
    author, (ok, later), row_id = _one_like_push(graph, db_session, receiver, subscriptions=2)
    receiver.respond(later["endpoint"], 429, headers={"Retry-After": "1"})
    config = sending.DeliveryConfig.from_settings()
    with pytest.raises(sending.TemporaryFailure) as raised:
        sending.deliver("push", row_id, sessions=same_session, config=config)
    assert raised.value.retry_after == 1
    assert [p.endpoint for p in receiver.wait_for(1)] == [ok["endpoint"]]
    assert sending.deliver("push", row_id, sessions=same_session, config=config)["status"] == "sent"
    assert sorted(p.endpoint for p in receiver.wait_for(2)) == sorted([ok["endpoint"], later["endpoint"]])
    # The device that said later unsubscribes before a third attempt: nothing left, the row is sent.
    db_session.execute(text("UPDATE deliveries SET status = 'queued', delivered_to = CAST(:ids AS uuid[]) "
                            "WHERE id = :id"), {"ids": [ok["id"]], "id": row_id})
    db_session.execute(text("DELETE FROM push_subscriptions WHERE id = :id"), {"id": later["id"]})
    assert sending.deliver("push", row_id, sessions=same_session, config=config)["status"] == "sent"
    assert len(receiver.pushes) == 2


def test_a_worker_without_transports_neither_plans_nor_marks_anything(graph, db_session, delivery_env,
                                                                      same_session, monkeypatch):
    from tasks.delivery import planning

    author, _post = _settled(graph, db_session)
    none = planning.Transports(email=False, push=False)
    result = planning.plan_ripe(db_session, now=datetime.now(timezone.utc), settle_seconds=120, chunk=10,
                                transports=none)
    assert result.taken == 0
    assert db_session.execute(text("SELECT count(*) FROM delivery_due")).scalar() == 1   # left for a configured one
    [(channel, row_id)] = dispatch(db_session, datetime.now(timezone.utc), push=False)
    monkeypatch.delenv("SMTP_URL")
    with pytest.raises(sending.NotConfigured):
        sending.deliver(channel, row_id, sessions=same_session, config=sending.DeliveryConfig.from_settings())
    [row] = deliveries(db_session, author)
    assert (row["status"], row["attempts"]) == ("queued", 0)   # never marked SENDING: nothing left
