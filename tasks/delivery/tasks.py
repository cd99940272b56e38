"""Celery entry points of the delivery family: thin, the logic is in planning, sending and digests."""
from __future__ import annotations

import random
import time
import uuid
from datetime import datetime, timezone

import settings
from db.session import session_scope
from tasks.delivery import digests, planning, sending
from tasks.delivery.errors import NotConfigured, TemporaryFailure
from workers.reliability.dead_letters import Failure
from workers.reliability.enqueue import enqueue_on_commit
from workers.task import UuidStr, job

DISPATCH_BUDGET_SECONDS = 10.0  # one run stays well inside the 15 s beat interval
MAX_RETRIES = 8
RETRY_CAP_SECONDS = 600


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _transports() -> planning.Transports:
    found = settings.current()
    return planning.Transports(email=bool(found.smtp_url), push=bool(found.vapid_private_key))


def _send_task(channel: str):
    return {"email": send_email, "push": send_push, "digest": send_digest}[channel]


@job("delivery.dispatch_due")
def dispatch_due() -> dict:
    """Beat, every 15 s: plan settled notifications, claim due deliveries, send one task each."""
    found, deadline, totals = settings.current(), time.monotonic() + DISPATCH_BUDGET_SECONDS, {}
    chunk = found.delivery_dispatch_chunk
    for step in ("plan", "claim", "reclaim"):
        while time.monotonic() < deadline:
            with session_scope() as session:
                if step == "plan":
                    done = planning.plan_ripe(session, now=_now(), settle_seconds=found.delivery_settle_seconds,
                                              chunk=chunk, transports=_transports()).taken
                else:
                    claim = planning.claim_due if step == "claim" else planning.reclaim_stale
                    claimed = claim(session, now=_now(), chunk=chunk)
                    for channel, row_id in claimed:
                        enqueue_on_commit(session, _send_task(channel).si(row_id))
                    done = len(claimed)
            totals[step] = totals.get(step, 0) + done
            if done < chunk:
                break
    return {"status": "ok", **totals}


def _retry(task, exc: TemporaryFailure):
    """Back off exponentially from DELIVERY_RETRY_SECONDS, or as long as the provider's Retry-After asks."""
    if exc.retry_after is not None:
        countdown = min(exc.retry_after, RETRY_CAP_SECONDS)
    else:
        base = settings.current().delivery_retry_seconds * 2 ** task.request.retries
        countdown = min(base, RETRY_CAP_SECONDS) * random.uniform(0.8, 1.2)
    return task.retry(countdown=countdown, exc=exc, max_retries=MAX_RETRIES)


def _close_out(table: str):
    def hook(args: list, kwargs: dict, failure: Failure) -> None:
        row_id = (args or [None])[0] or kwargs.get("delivery_id") or kwargs.get("digest_id")
        try:
            uuid.UUID(str(row_id))
        except ValueError:
            return  # arguments the task refused (invalid_arguments): there is no row to close
        if failure.error_code == NotConfigured.code:
            return  # this worker's setup, not the row: it stays claimed; reclaim or `dead retry` re-sends it
        if row_id:
            with session_scope() as session:
                sending.fail(session, table, str(row_id), f"{failure.error_code}: retries exhausted or dead-lettered")
    return hook


def _send(task, run) -> dict:
    """A send task's body: the provider's "later" becomes a Celery retry with our backoff."""
    try:
        return run()
    except TemporaryFailure as exc:
        raise _retry(task, exc) from None


@job("delivery.send_email", on_dead_letter=_close_out("deliveries"))
def send_email(delivery_id: UuidStr) -> dict:
    """One email for one delivery row; a 4xx reply retries with backoff, a 5xx is FAILED."""
    return _send(send_email, lambda: sending.deliver(
        "email", delivery_id, sessions=session_scope, config=sending.DeliveryConfig.from_settings()))


@job("delivery.send_push", on_dead_letter=_close_out("deliveries"))
def send_push(delivery_id: UuidStr) -> dict:
    """One Web Push to each of the user's subscriptions; 404/410 delete one, 429/5xx retry."""
    return _send(send_push, lambda: sending.deliver(
        "push", delivery_id, sessions=session_scope, config=sending.DeliveryConfig.from_settings()))


@job("delivery.send_digest", on_dead_letter=_close_out("digests"))
def send_digest(digest_id: UuidStr) -> dict:
    """One digest email, built by ``delivery.send_digests``."""
    return _send(send_digest, lambda: digests.deliver(
        digest_id, sessions=session_scope, config=sending.DeliveryConfig.from_settings()))


@job("delivery.send_digests")
def send_digests() -> dict:
    """Beat, hourly: build the digests of users whose local time is 08:00–08:59 (dispatch_due sends them)."""
    if not settings.current().smtp_url:
        return {"status": "skipped", "reason": "SMTP_URL is not set"}
    with session_scope() as session:
        ids = digests.build(session, now=_now())
    return {"status": "ok", "digests": len(ids)}
