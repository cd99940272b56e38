"""RabbitMQ's dead letters, consumed into the dead_letters table.

On RabbitMQ the poison-pill guard is the broker's: every task queue is a quorum
queue with ``x-delivery-limit`` (celeryconfig.py). RabbitMQ counts each return of
a message (a killed pool process, a worker that lost its connection) and, past
the limit, moves it through the ``dead_letters`` exchange into the
``dead_letters`` queue, with an ``x-death`` header saying why. The Redis
delivery counter steps aside there (workers/reliability/deliveries.py).

Every worker on RabbitMQ consumes that queue (a consumer bootstep). Per message
it does what the Redis guard does for a poison pill, then acks:

1. records the dead letter (an upsert keyed by task id),
2. lets the task's family close out its state (``on_dead_letter``),
3. stores the task's FAILURE result, so a caller waiting on it is answered.

If PostgreSQL cannot take the row, the message goes back to the queue after
``RETRY_SECONDS`` instead of being acked: nothing is lost while the database is down.

A message dead-lettered because a worker *rejected* it (``reason=rejected``) was
recorded by that worker before it rejected it (workers/reliability/consumer.py):
it is acked without a second row. One that *expired* (``reason=expired``: sent with
``expires``, as every beat entry is, and not consumed in time) is what a worker on
Redis drops as revoked: its result is marked REVOKED, and it is no dead letter.
"""
from __future__ import annotations

import json
import logging

from celery import bootsteps
from kombu import Consumer, Exchange, Queue

import settings
from workers.reliability.dead_letters import Failure, settle

log = logging.getLogger("workers.reliability.dead_letter_intake")

RETRY_SECONDS = 5.0
RECORDED_AT_SOURCE = "rejected"
EXPIRED = "expired"


def dead_letter_queue() -> Queue:
    import celeryconfig

    # Fanout: a dead-lettered message keeps its original routing key (its task queue's name).
    return Queue(celeryconfig.DEAD_LETTER_QUEUE, Exchange(celeryconfig.DEAD_LETTER_EXCHANGE, type="fanout"),
                 queue_arguments={"x-queue-type": "quorum"})


def declare_topology(app, connection) -> None:
    """Declare every task queue with its exchange, the dead-letter exchange and its queue.

    Each worker consumes only its ``-Q`` queues, so by itself it would declare only those;
    but a client may publish to any queue before its worker first starts, and Celery's
    native delayed delivery binds every queue's exchange at start-up (and logs it
    CRITICAL when one is missing). Declarations are idempotent; run on every connect.
    """
    channel = connection.default_channel
    dead_letter_queue()(channel).declare()
    for queue in app.amqp.queues.values():
        queue(channel).declare()


def death_reason(headers: dict) -> str:
    deaths = headers.get("x-death")
    if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict):
        return str(deaths[0].get("reason") or "unknown")
    return str(headers.get("x-first-death-reason") or "unknown")


def _arguments(body) -> tuple[list | None, dict | None]:
    try:
        decoded = json.loads(body)
        args, kwargs = decoded[0], decoded[1]
    except Exception:  # noqa: BLE001 - whatever a client sent; kept as a preview instead
        return None, None
    return (args, kwargs) if isinstance(args, list) and isinstance(kwargs, dict) else (None, None)


def failure_of(message) -> tuple[str, Failure]:
    """(reason, the dead letter) of a message RabbitMQ dead-lettered."""
    headers = message.headers if isinstance(message.headers, dict) else {}
    reason = death_reason(headers)
    args, kwargs = _arguments(message.body)
    deliveries = headers.get("x-delivery-count")
    limit = settings.current().task_max_deliveries
    attempts = deliveries if isinstance(deliveries, int) and deliveries > 0 else limit
    if reason == "delivery_limit":
        code, exc_type = "poison_pill", "PoisonPill"
        text = (f"delivered {attempts} times without finishing (limit {limit}): its worker died every "
                "time; RabbitMQ dead-lettered it")
    else:
        code, exc_type = f"dead_lettered_{reason}"[:100], "DeadLettered"
        text = f"RabbitMQ dead-lettered the message ({reason})"
    deaths = headers.get("x-death")
    queue = deaths[0].get("queue") if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict) else None
    task_name, task_id = headers.get("task"), headers.get("id")
    preview = None
    if args is None:
        body = message.body if isinstance(message.body, bytes) else str(message.body).encode()
        preview = body[:500].decode("utf-8", errors="backslashreplace")
    return reason, Failure(
        task_id=task_id if isinstance(task_id, str) else None,
        task_name=task_name if isinstance(task_name, str) else "<no task header>",
        exception_type=exc_type, exception_message=text, error_code=code,
        args=args, kwargs=kwargs, queue=str(queue) if queue else None, attempts=attempts, raw_preview=preview)


class DeadLetterIntake(bootsteps.ConsumerStep):
    """Consume ``dead_letters`` on a RabbitMQ broker (included only there)."""

    def include_if(self, c) -> bool:
        return settings.broker_kind(c.app.conf.broker_url) == "amqp"

    def start(self, c) -> None:
        self.app, self.timer = c.app, c.timer
        super().start(c)

    def get_consumers(self, channel):
        # on_message, not callbacks: kombu would decode each body first, and a pickle body a
        # worker rejected (then dead-lettered here) would raise ContentDisallowed in the event
        # loop and take the worker down. The body is only ever read as JSON, by failure_of.
        return [Consumer(channel, queues=[dead_letter_queue()], on_message=self.on_message, prefetch_count=10)]

    def on_message(self, message) -> None:
        try:
            self._take(message)
        except Exception:  # noqa: BLE001 - the intake must never stop the worker's event loop
            log.exception("could not take a dead-lettered message; it is handed back in %g s", RETRY_SECONDS)
            self.timer.call_after(RETRY_SECONDS, message.requeue)

    def _take(self, message) -> None:
        reason, failure = failure_of(message)
        if reason == RECORDED_AT_SOURCE:
            message.ack()
            return
        if reason == EXPIRED:
            if failure.task_id:
                self.app.backend.mark_as_revoked(failure.task_id, reason="expired")
            message.ack()
            return
        task = self.app.tasks.get(failure.task_name)
        if not settle(task, failure, failure.args, failure.kwargs):
            # The row is the record: without it, the message must not go. Hand it back later,
            # not at once, or a database outage would spin it between broker and worker.
            self.timer.call_after(RETRY_SECONDS, message.requeue)
            return
        if failure.task_id and reason == "delivery_limit":
            from workers.reliability.deliveries import PoisonPill

            try:
                self.app.backend.mark_as_failure(
                    failure.task_id, PoisonPill(failure.exception_message, deliveries=failure.attempts))
            except Exception as exc:  # noqa: BLE001 - the dead letter is recorded; the result is a courtesy
                log.warning("could not store the FAILURE result of a dead-lettered task: %s", type(exc).__name__)
        message.ack()
