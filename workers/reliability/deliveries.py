"""Delivery counting: the poison-pill guard.

With ``acks_late`` and ``reject_on_worker_lost`` a task whose worker process
dies under it (SIGKILL, the out-of-memory killer, a segfault in an image
decoder) is requeued and runs again. If it kills every worker it touches, it
would loop forever. So each delivery of a task id is counted in Redis at task
start (INCR, expiring after a day), keyed by task id *and* retry number, since
a Celery retry re-sends the same id on purpose. A delivery beyond
``MAX_DELIVERIES`` is not run: it is failed with ``PoisonPill`` and becomes a
dead letter.

The count lives in Redis, not PostgreSQL, because it must be written before
the task touches anything and cost well under a millisecond; if Redis cannot
be reached the guard steps aside (logs a warning) rather than block the task.

On RabbitMQ there is no broker Redis: the quorum queues' ``x-delivery-limit``
does this job in the broker (workers/reliability/dead_letter_intake.py), and
every function here steps aside.
"""
from __future__ import annotations

import logging

import settings
from workers.broker import redis_client
from workers.errors import JobError

log = logging.getLogger("workers.reliability.deliveries")

MAX_DELIVERIES = settings.current().task_max_deliveries
COUNTER_TTL_S = 24 * 3600  # longer than any countdown plus visibility timeout
KEY_PREFIX = "jobs:deliveries:"


class PoisonPill(JobError):
    code = "poison_pill"

    def __init__(self, message: str, *, code: str | None = None, deliveries: int = 0):
        super().__init__(message, code=code)
        self.deliveries = deliveries

    def __reduce__(self):
        return (self.__class__, (self.message,), {"code": self.code, "deliveries": self.deliveries})


def glob_escape(text: str) -> str:
    """``text`` as a literal inside a Redis MATCH pattern."""
    return "".join("\\" + char if char in "*?[]\\^-" else char for char in text)


def key(task_id: str, retries: int) -> str:
    return f"{KEY_PREFIX}{task_id}:{retries}"


# INCR and EXPIRE as one command: a pipeline of two costs the no-op task ~4% more.
_COUNT_SCRIPT = "local n = redis.call('INCR', KEYS[1]) redis.call('EXPIRE', KEYS[1], ARGV[1]) return n"
_scripts: dict[int, object] = {}


def count_delivery(task_id: str, retries: int) -> int | None:
    """Count this delivery and return the total so far, or None when Redis is unavailable."""
    client = redis_client()
    if client is None:
        return None
    try:
        script = _scripts.get(id(client))
        if script is None:
            script = _scripts[id(client)] = client.register_script(_COUNT_SCRIPT)
        return int(script(keys=[key(task_id, retries)], args=[COUNTER_TTL_S]))
    except Exception as exc:  # noqa: BLE001 - a guard must not take the task down
        log.warning("delivery counter unavailable: %s", exc)
        return None


def count_first_tries(task_ids: list[str]) -> dict[str, int] | None:
    """Count a delivery of each task id's first try in one round trip: {id: total so far},
    or None when Redis is unavailable (a coalesced bulk, workers/coalescing.py)."""
    client = redis_client()
    if client is None or not task_ids:
        return None
    try:
        pipe = client.pipeline(transaction=False)
        for task_id in task_ids:
            pipe.incr(key(task_id, 0))
            pipe.expire(key(task_id, 0), COUNTER_TTL_S)
        return {task_id: int(count) for task_id, count in zip(task_ids, pipe.execute()[::2])}
    except Exception as exc:  # noqa: BLE001 - a guard must not take the task down
        log.warning("delivery counter unavailable: %s", exc)
        return None


def uncount_first_tries(task_ids) -> None:
    """Take back one counted delivery of each first try: the message runs alone, and its own
    run counts this delivery (so a bulk never spends a message's budget twice)."""
    client = redis_client()
    if client is None or not task_ids:
        return
    try:
        pipe = client.pipeline(transaction=False)
        for task_id in task_ids:
            pipe.decr(key(task_id, 0))
        pipe.execute()
    except Exception as exc:  # noqa: BLE001 - worst case the message's budget is one delivery short
        log.warning("could not take back delivery counts: %s", exc)


def check_delivery(task_id: str | None, retries: int | None) -> int | None:
    """Raise PoisonPill when this task id has been delivered too many times."""
    if not task_id:
        return None
    count = count_delivery(task_id, retries or 0)
    if count is not None and count > MAX_DELIVERIES:
        raise PoisonPill(
            f"delivered {count} times without finishing (limit {MAX_DELIVERIES}): "
            "its worker died every time; not running it again", deliveries=count)
    return count


def deliveries(task_id: str, retries: int = 0) -> int:
    client = redis_client()
    value = client.get(key(task_id, retries)) if client is not None else None
    return int(value) if value else 0


def forget(task_id: str) -> None:
    """Clear a task id's counters (before `dead retry` re-sends it)."""
    client = redis_client()
    if client is None:
        return
    # The id is the sender's text: escape it, or an id of `*` would match every task's counter.
    keys = list(client.scan_iter(match=f"{KEY_PREFIX}{glob_escape(task_id)}:*", count=100))
    if keys:
        client.delete(*keys)
