"""Coalesced ingest: messages sent one per event, applied in bulk by the worker.

The web tier calls ``notifications.record(kind, source_id)`` once per like. Run
one at a time, every event pays a pool dispatch, a transaction and a commit,
and the worker tops out near the no-op task's rate. A task declared with
``@job(..., coalesce=Coalesce(apply_many))`` keeps its name, arguments and
per-message contract, but its messages take this path in the worker:

1. **Buffer (consumer process).** Each message is decoded into a Celery
   request as usual and held in a buffer instead of going to the pool. The
   buffer raises the channel's prefetch by one per held message (as Celery does
   for ETA tasks), so the consumer keeps reading while prefetch stays 1 for
   every other task; a ceiling on those credits bounds what one worker holds.
2. **Flush.** At ``INGEST_COALESCE_MAX_ITEMS`` (or a family's weight limit),
   or after ``INGEST_COALESCE_MAX_WAIT_MS`` when a pool process is free for it,
   the buffer goes to a pool process as one job: ``apply_many(session, calls)``
   in one transaction, then the messages' results are stored in one round
   trip. While every pool process is busy the buffer keeps filling, so bulks
   grow with the load and a lone event waits only the short timer.
3. **Ack after commit.** The consumer acks each message only when the job
   returns, i.e. after the bulk transaction committed (``acks_late``). A pool
   process killed mid-bulk requeues every message of the bulk (as
   ``reject_on_worker_lost`` does), so nothing is lost and the effects, being
   idempotent, happen once.

Anything that is not a plain first delivery runs alone, through Celery's own
path, with every per-task guarantee (retries, dead letters, poison pill):
messages with an ETA or a retry number, steps of a chain, group or chord (their
continuation runs in Celery's tracer), arguments the validator refuses,
a family's ``HANDOFF`` answer (say, an unknown kind), redeliveries (their
delivery counter is above one, so a message that kills its process cannot take
its bulk-mates' delivery budget with it), a transient error (the bulk is handed
off whole: each message then retries with backoff), and the one message a
bisection isolates when a bulk fails for another reason. One poisoned event
therefore costs its bulk-mates a few retried transactions, never a failure.

``INGEST_COALESCE=off`` turns the whole path off (each message runs alone), and
so does a pool without the event loop (threads, solo, gevent): the buffer runs
on the consumer's loop, the prefork pool's.
"""
from __future__ import annotations

import functools
import inspect
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from billiard.exceptions import SoftTimeLimitExceeded, WorkerLostError
from celery import signals, states
from celery.backends.redis import RedisBackend
from celery.utils.imports import symbol_by_name
from celery.worker.request import create_request_cls
from celery.worker.state import task_accepted, task_ready, task_reserved
from celery.worker.strategy import default as default_strategy
from kombu.transport import redis as kombu_redis
from kombu.transport.virtual.base import QoS as VirtualQoS

import settings
from workers.errors import TRANSIENT_ERRORS, InvalidArguments
from workers.reliability.deliveries import MAX_DELIVERIES, count_first_tries, uncount_first_tries

log = logging.getLogger("workers.coalescing")

HANDOFF = type("Handoff", (), {"__repr__": lambda self: "HANDOFF"})()
"""What ``apply_many`` returns for a call it will not apply in bulk: that message runs alone."""


@dataclass(frozen=True)
class Coalesce:
    """How a task's messages are applied together.

    ``apply_many(session, calls)`` gets each message's bound arguments (a dict,
    defaults filled in) and returns one result per call, in order: a JSON value
    (the message's task result) or ``HANDOFF``. It must not commit, and a
    ``HANDOFF`` call must have had no effect. ``weight(call)`` is what a call
    adds toward ``max_weight`` (say, the length of an id list); a single call
    heavier than that runs alone.
    """
    apply_many: Callable
    weight: Callable[[dict], int] | None = None
    max_weight: int | None = None


def _settings():
    found = settings.current()
    return found.ingest_coalesce == "ON", found.ingest_coalesce_max_items, found.ingest_coalesce_max_wait_ms


# --- Consumer process -----------------------------------------------------------


def strategy(task, app, consumer, **kwargs):
    """The task's Celery strategy (``Task.Strategy``): coalesce first deliveries, else Celery's default."""
    run_alone = default_strategy(task, app, consumer, **kwargs)
    enabled, max_items, max_wait_ms = _settings()
    if not enabled or consumer.hub is None:
        # Without the event loop (threads, solo, gevent pools) pool callbacks and timers run on
        # other threads than the consumer; the buffer is single-threaded, so each message runs alone.
        return run_alone
    return _Buffer(task, app, consumer, run_alone, max_items, max_wait_ms / 1000.0).on_message


def _plain_first_delivery(message) -> bool:
    """A message that may join a bulk: a first delivery, with no ETA, retry or canvas around it.

    A chain's next step, a callback, an errback, a chord's counter or a group's
    bookkeeping run in Celery's tracer after the task; a bulk has no tracer, so
    such a message runs alone.
    """
    headers = message.headers or {}
    payload = message.payload
    if not isinstance(payload, (list, tuple)) or len(payload) != 3:
        return False  # protocol 1 or malformed: leave it to Celery
    embed = payload[2] if isinstance(payload[2], dict) else {}
    if any(embed.get(key) for key in ("callbacks", "errbacks", "chain", "chord")) or headers.get("group"):
        return False
    if headers.get("eta") or headers.get("retries"):
        return False
    return not (message.delivery_info or {}).get("redelivered")


class _Buffer:
    """The held requests of one coalesced task in one consumer (all calls on the consumer's thread)."""

    def __init__(self, task, app, consumer, run_alone, max_items: int, max_wait: float):
        self.task, self.app, self.consumer, self.run_alone = task, app, consumer, run_alone
        self.spec: Coalesce = task.coalesce
        self.max_items = max_items
        self.max_weight = self.spec.max_weight or max_items
        self.max_wait = max_wait
        self.processes = consumer.pool.num_processes if consumer.pool else 1
        self.bulks_in_flight = 0
        # Prefetch credits outstanding; the ceiling keeps a busy worker from holding the whole queue.
        self.credit_ceiling = max_items * (self.processes + 1)
        self.credits = 0
        self.held: list[tuple] = []   # (request, call, qos that was raised or None)
        self.weight = 0
        self.timer = None
        self.signature = inspect.signature(task.run)
        self.Request = create_request_cls(symbol_by_name(task.Request), task, consumer.pool, consumer.hostname,
                                          consumer.event_dispatcher, app=app)

    def on_message(self, message, body, ack, reject, callbacks, **kwargs):
        if not _plain_first_delivery(message):
            return self.run_alone(message, body, ack, reject, callbacks, **kwargs)
        request = self.Request(message, on_ack=ack, on_reject=reject, app=self.app,
                               hostname=self.consumer.hostname, eventer=self.consumer.event_dispatcher,
                               task=self.task, connection_errors=self.consumer.connection_errors,
                               body=message.body, headers=message.headers, decoded=False,
                               utc=self.app.uses_utc_timezone())
        call = self._bound_call(request)
        weight = 1 if call is None or self.spec.weight is None else self.spec.weight(call)
        if call is None or weight > self.max_weight:
            # Refused arguments fail through the validator, with its typed error and dead letter.
            return self.run_alone(message, body, ack, reject, callbacks, **kwargs)
        if (request.expires or request.id in self.consumer.controller.state.revoked) and request.revoked():
            return None
        # No task-received event: Flower learns of a coalesced message from its task-succeeded
        # event (sent after the ack), which saves the consumer a third of its event cost.
        signals.task_received.send(sender=self.consumer, request=request)
        task_reserved(request)
        for callback in callbacks or ():
            callback(request)
        qos = None
        if self.credits < self.credit_ceiling:
            qos = self.consumer.qos
            qos.increment_eventually()
            self.credits += 1
        self.held.append((request, call, qos))
        self.weight += weight
        if len(self.held) >= self.max_items or self.weight >= self.max_weight:
            self.flush()
        elif self.timer is None:
            self.timer = self.consumer.timer.call_after(self.max_wait, self.on_timer)
        return None

    def on_timer(self) -> None:
        self.timer = None
        if self.bulks_in_flight < self.processes:
            self.flush()
        elif self.held:  # every process is busy: let the bulk grow, look again shortly
            self.timer = self.consumer.timer.call_after(self.max_wait, self.on_timer)

    def _bound_call(self, request) -> dict | None:
        args, kwargs = request.args, request.kwargs
        if not isinstance(args, (list, tuple)) or not isinstance(kwargs, dict):
            return None
        try:
            self.task.validate_arguments(args, kwargs)
            bound = self.signature.bind(*args, **kwargs)
        except (InvalidArguments, TypeError):
            return None
        bound.apply_defaults()
        return dict(bound.arguments)

    def flush(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        held, self.held, self.weight = self.held, [], 0
        if not held:
            return
        items = [(request.id, call) for request, call, _qos in held]
        self.bulks_in_flight += 1
        try:
            self.consumer.pool.apply_async(
                run_many, (self.task.name, items),
                accept_callback=functools.partial(self._on_accepted, held),
                callback=functools.partial(self._on_applied, held),
                error_callback=functools.partial(self._on_pool_error, held),
                soft_timeout=self.task.soft_time_limit, timeout=self.task.time_limit)
        except Exception:  # noqa: BLE001 - the pool is closing: the messages stay unacked and come back
            log.warning("could not hand %d coalesced %s message(s) to the pool; they stay unacked and "
                        "are redelivered", len(held), self.task.name, exc_info=True)
            self.bulks_in_flight -= 1
            for request, _call, qos in held:
                self._release(request, qos)

    def _release(self, request, qos) -> None:
        task_ready(request)
        self._return_credit(qos)

    def _return_credit(self, qos) -> None:
        if qos is not None:
            self.credits -= 1
            if qos is self.consumer.qos:  # a reconnect builds a new QoS at the base prefetch
                qos.decrement_eventually()

    @staticmethod
    def _on_accepted(held: list, pid: int, time_accepted: float) -> None:
        # Active with its pool process, as a message run alone is: `inspect active`, Flower and a
        # revoke with terminate see which process holds each coalesced message (no started event).
        started = time.time() - (time.monotonic() - time_accepted)
        for request, _call, _qos in held:
            request.worker_pid, request.time_start = pid, started
            task_accepted(request)

    def _bulk_finished(self) -> None:
        self.bulks_in_flight -= 1
        if self.held and self.timer is None:  # a process is free: the waiting bulk goes now
            self.timer = self.consumer.timer.call_after(0, self.on_timer)

    def _on_applied(self, held: list, outcome: dict) -> None:
        self._bulk_finished()
        self._settle(held, outcome)

    def _settle(self, held: list, outcome: dict) -> None:
        done, runtime = set(outcome["done"]), outcome["seconds"]
        _acknowledge_together([request for request, _call, _qos in held if request.id in done])
        for request, _call, qos in held:
            if request.id in done:
                request.send_event("task-succeeded", result="coalesced", runtime=runtime)
                self._release(request, qos)
                continue
            # Run alone, through Celery's own path (it is already reserved).
            self._return_credit(qos)
            self.consumer.on_task_request(request)

    def _on_pool_error(self, held: list, exc_info) -> None:
        self._bulk_finished()
        exception = getattr(exc_info, "exception", exc_info)
        if isinstance(exception, WorkerLostError):
            # As reject_on_worker_lost: every message of the bulk goes back to the queue, whole.
            log.warning("the pool process applying %d coalesced %s message(s) died; requeued them",
                        len(held), self.task.name)
            for request, _call, qos in held:
                request.reject(requeue=True)
                self._release(request, qos)
            return
        # A hard time limit (the bulk rolled back) or a fault in this module: each runs alone.
        log.warning("coalesced %s bulk of %d failed (%s); running each message alone",
                    self.task.name, len(held), type(exception).__name__)
        self._settle(held, {"done": [], "seconds": 0.0})


def _acknowledge_together(requests: list) -> None:
    """Ack a bulk's messages: on kombu's Redis transport in one round trip (its per-message
    ack is a round trip each, a sixth of the consumer's time), elsewhere one by one."""
    by_channel: dict[int, list] = {}
    for request in requests:
        by_channel.setdefault(id(request.message.channel), []).append(request)
    for group in by_channel.values():
        channel = group[0].message.channel
        qos = getattr(channel, "qos", None)
        if not isinstance(qos, kombu_redis.QoS):
            for request in group:
                request.acknowledge()
            continue
        try:
            with qos.pipe_or_acquire() as pipe:
                for request in group:
                    qos._remove_from_indices(request.message.delivery_tag, pipe)
                pipe.execute()
        except Exception as exc:  # noqa: BLE001 - as Celery's own ack: logged; the messages come back
            log.warning("could not ack %d coalesced message(s): %s; they are redelivered and find their "
                        "effects already applied", len(group), type(exc).__name__)
            continue
        for request in group:   # the transport's in-memory bookkeeping, as QoS.ack does after its write
            VirtualQoS.ack(qos, request.message.delivery_tag)
            request.message._state = "ACK"
            request.acknowledged = True


# --- Pool process ---------------------------------------------------------------


def run_many(task_name: str, items: list[tuple[str, dict]]) -> dict:
    """Apply one bulk in a pool process: ``{"done": [task ids], "seconds": wall time}``.

    Ids not in ``done`` are run alone by the consumer; their effects were rolled back.
    """
    from db.session import session_scope
    from workers.celery_app import app

    started = time.monotonic()
    task = app.tasks[task_name]
    fresh = _claim_first_deliveries(items)
    results: dict[str, object] = {}
    try:
        _apply_bisecting(task.coalesce, fresh, results, session_scope)
    except SoftTimeLimitExceeded:
        log.warning("coalesced %s bulk hit its soft time limit; the rest run alone", task_name)
    done = _store_results(task, results)
    # Each message handed back runs alone, and its own run counts this delivery.
    uncount_first_tries(set(task_id for task_id, _call in fresh) - set(done))
    seconds = time.monotonic() - started
    _observe(task_name, seconds, len(done))
    log.info("applied %d coalesced %s message(s) in one bulk, %d run alone", len(done), task_name,
             len(items) - len(done), extra={"task_name": task_name, "runtime": round(seconds, 4)})
    return {"done": done, "seconds": seconds}


def _claim_first_deliveries(items: list[tuple[str, dict]]) -> list[tuple[str, dict]]:
    """Count each message's delivery (the poison-pill counter) and keep only first deliveries.

    A message delivered before may be the one that killed a pool process; it runs
    alone, and its count is given back so that its own run counts this delivery once.
    """
    counts = count_first_tries([task_id for task_id, _call in items])
    if counts is None:
        return items
    again = {task_id for task_id, count in counts.items() if count > 1}
    if again:
        uncount_first_tries(again)
        log.info("%d redelivered message(s) of a coalesced bulk run alone (limit %d deliveries)",
                 len(again), MAX_DELIVERIES)
    return [item for item in items if item[0] not in again]


def _apply_bisecting(spec: Coalesce, items: list, results: dict, session_scope) -> None:
    """Apply ``items`` in one transaction; on a permanent error, split and try each half.

    A transient error hands the whole bulk back: its messages then retry one by
    one with backoff, instead of hammering a database that is down.
    """
    if not items:
        return
    try:
        with session_scope() as session:
            outputs = spec.apply_many(session, [call for _task_id, call in items])
            if len(outputs) != len(items):
                raise RuntimeError(f"apply_many returned {len(outputs)} results for {len(items)} calls")
    except TRANSIENT_ERRORS as exc:
        log.warning("coalesced bulk of %d hit a transient error (%s); each runs alone", len(items),
                    type(exc).__name__)
        return
    except SoftTimeLimitExceeded:
        raise
    except Exception as exc:  # noqa: BLE001 - isolate the poisoned call(s)
        if len(items) == 1:
            log.warning("a coalesced call failed in bulk (%s); it runs alone", type(exc).__name__)
            return
        middle = len(items) // 2
        _apply_bisecting(spec, items[:middle], results, session_scope)
        _apply_bisecting(spec, items[middle:], results, session_scope)
        return
    for (task_id, _call), output in zip(items, outputs):
        if output is not HANDOFF:
            results[task_id] = output


def _store_results(task, results: dict) -> list[str]:
    """Store each applied message's result, as its own run would; a message whose result
    cannot be stored runs alone again (its effect is already there: it reports a duplicate)."""
    backend = task.backend
    if isinstance(backend, RedisBackend) and results:
        # One round trip for the bulk instead of a read and a write per message: the same
        # key, value, expiry and pub/sub notice as BaseKeyValueStoreBackend._store_result.
        # Its read (never overwrite a SUCCESS) is not needed: every write here is a SUCCESS.
        try:
            with backend.client.pipeline() as pipe:
                for task_id, result in results.items():
                    key = backend.get_key_for_task(task_id)
                    meta = backend._get_result_meta(result, states.SUCCESS, None, None)
                    meta["task_id"] = task_id
                    value = backend.encode(meta)
                    pipe.set(key, value, ex=backend.expires or None)
                    pipe.publish(key, value)
                pipe.execute()
            return list(results)
        except Exception as exc:  # noqa: BLE001
            log.warning("could not store a bulk's results (%s); its messages run alone", type(exc).__name__)
            return []
    stored = []
    for task_id, result in results.items():
        try:
            task.backend.store_result(task_id, result, states.SUCCESS)
            stored.append(task_id)
        except Exception as exc:  # noqa: BLE001
            log.warning("could not store a coalesced result (%s); the message runs alone", type(exc).__name__)
    return stored


def _observe(task_name: str, seconds: float, count: int) -> None:
    if not count:
        return
    from workers.observability import metrics

    metrics.add(task_name, states.SUCCESS, seconds, count=count)
