"""Fixtures of the delivery tests: a real SMTP server and a real Web Push service, in-process.

``delivery_env`` points this process (and any worker started after it) at them,
with a VAPID key generated once per run.
"""
from __future__ import annotations

from datetime import datetime

import pytest
from sqlalchemy import text

from workers.dev.mail_sink import MailSink
from workers.dev.push_receiver import PushReceiver


@pytest.fixture(scope="session")
def vapid_pem() -> str:
    from py_vapid import Vapid02

    key = Vapid02()
    key.generate_keys()
    return key.private_pem().decode()


@pytest.fixture
def mail_sink():
    with MailSink() as sink:
        yield sink


@pytest.fixture
def push_receiver():
    with PushReceiver() as receiver:
        yield receiver


@pytest.fixture
def delivery_env(monkeypatch, mail_sink, push_receiver, vapid_pem):
    monkeypatch.setenv("SMTP_URL", mail_sink.url)
    monkeypatch.setenv("VAPID_PRIVATE_KEY", vapid_pem)
    monkeypatch.setenv("UNSUBSCRIBE_SECRET", "test-secret-" + "x" * 32)
    monkeypatch.setenv("DELIVERY_SETTLE_SECONDS", "120")
    monkeypatch.setenv("DELIVERY_RETRY_SECONDS", "0.2")
    monkeypatch.setenv("PUSH_MAX_PER_HOUR", "10")
    return {"mail": mail_sink, "push": push_receiver}


def subscribe(session, user_id: int, receiver: PushReceiver) -> dict:
    """Register a fresh browser subscription of ``receiver`` for ``user_id``; returns it with its row id."""
    sub = receiver.new_subscription()
    row_id = session.execute(text(
        "INSERT INTO push_subscriptions (user_id, endpoint, p256dh, auth) VALUES (:u, :e, :p, :a) RETURNING id::text"),
        {"u": user_id, "e": sub["endpoint"], "p": sub["keys"]["p256dh"], "a": sub["keys"]["auth"]}).scalar_one()
    return {**sub, "id": row_id}


def dispatch(session, now: datetime, *, settle: float = 120, email: bool = True, push: bool = True,
             chunk: int = 500) -> list[tuple[str, str]]:
    """What one delivery.dispatch_due run does, inside the caller's transaction: plan, then claim."""
    from tasks.delivery import planning

    planning.plan_ripe(session, now=now, settle_seconds=settle, chunk=chunk,
                       transports=planning.Transports(email=email, push=push))
    return planning.claim_due(session, now=now, chunk=chunk)


def deliveries(session, user_id: int) -> list[dict]:
    return [dict(r) for r in session.execute(text(
        "SELECT id::text, notification_id::text, channel, version, status, error, attempts, message_id, due_at "
        "FROM deliveries WHERE user_id = :u ORDER BY created_at, channel"), {"u": user_id}).mappings()]


@pytest.fixture
def graph(db_session):
    from tests.notifications.builders import Graph

    return Graph(db_session)
