"""Celery settings: the one place for broker, serialization, queues, routing and limits.

Settings only; the start-up check that validates them lives in workers/lifecycle.py.
"""
from kombu import Exchange, Queue

import settings
from workers import broker
from schedules import beat_schedule  # noqa: F401  (celery reads it from here)

_settings = settings.current()
# None when unset: workers and beat then refuse to start (workers/lifecycle.py);
# nothing here ever falls back to a local server.
broker_url = _settings.broker_url
result_backend = _settings.result_backend_url
result_expires = 24 * 3600
# Off: extended results would copy every task's name, args, kwargs, worker and
# queue into the result backend (Redis, and its AOF on disk) for result_expires.
# Nothing reads them back: dead letters keep their own arguments in PostgreSQL,
# `dead retry` re-sends from there, and Flower takes args from task events.
result_extended = False

# --- Serialization: JSON only, so no message can execute code on a worker.
task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
result_accept_content = ["json"]
event_serializer = "json"

# --- Delivery: at-least-once. A task is acked after it returns, and requeued if
# the worker process dies under it; every task is idempotent to make that safe.
task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = 1
task_track_started = False
task_send_sent_event = True
worker_send_task_events = True
broker_connection_retry_on_startup = True
broker_connection_max_retries = None
worker_cancel_long_running_tasks_on_connection_loss = True
enable_utc = True
timezone = "UTC"

# --- Queues and routing (by task-name prefix; nowhere else).
QUEUE_NAMES = ("images", "mentions", "notifications", "engagement", "feed", "delivery", "upkeep", "analytics",
               "graph", "moderation", "search", "cache", "maintenance")

# On RabbitMQ every queue is a quorum queue (replicated by Raft, durable). Its
# x-delivery-limit is the poison-pill guard there: RabbitMQ counts each return of a
# message (a killed worker process, a lost connection) and, past the limit,
# dead-letters it into DEAD_LETTER_QUEUE, which the workers consume into the
# dead_letters table (workers/reliability/dead_letter_intake.py). RabbitMQ allows
# limit + 1 deliveries, so limit = TASK_MAX_DELIVERIES - 1 runs a task as often as
# the Redis counter does. Topic exchanges, because Celery's native delayed
# delivery (ETA, countdown, retries) cannot route through a direct one.
DEAD_LETTER_EXCHANGE = "dead_letters"
DEAD_LETTER_QUEUE = "dead_letters"


def quorum_queue_arguments(max_deliveries: int) -> dict:
    """The arguments every task queue is declared with on RabbitMQ; a client declaring
    a queue with other ones gets PRECONDITION_FAILED (docs/operations.md, "Brokers")."""
    return {
        "x-queue-type": "quorum",
        "x-delivery-limit": max(0, max_deliveries - 1),
        "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE,
        "x-dead-letter-strategy": "at-least-once",  # the dead letter is not dropped in transit
        "x-overflow": "reject-publish",             # required by at-least-once dead-lettering
    }


def task_queues_for(broker_url: str | None, max_deliveries: int) -> tuple[Queue, ...]:
    if broker.is_amqp(broker_url):
        arguments = quorum_queue_arguments(max_deliveries)
        return tuple(Queue(name, Exchange(name, type="topic"), routing_key=name, queue_arguments=arguments)
                     for name in QUEUE_NAMES)
    return tuple(Queue(name, Exchange(name, type="direct"), routing_key=name) for name in QUEUE_NAMES)


def transport_options_for(broker_url: str | None, visibility_timeout: int) -> dict:
    if broker.is_amqp(broker_url):
        # Publisher confirms: apply_async returns only once RabbitMQ has the message
        # (on a quorum queue: once a majority of its replicas has written it).
        return {"confirm_publish": True}
    # Redis redelivers an unacked message after visibility_timeout. It must exceed the
    # longest hard time limit and the longest countdown; workers/lifecycle.py refuses
    # to start otherwise.
    return {"visibility_timeout": visibility_timeout, "max_retries": 5,
            "interval_start": 0, "interval_step": 0.5, "interval_max": 3}


def broker_conf(broker_url: str | None) -> dict:
    """The settings that depend on the broker: what a second app on another broker updates."""
    return {"task_queues": task_queues_for(broker_url, _settings.task_max_deliveries),
            "broker_transport_options": transport_options_for(broker_url, _settings.broker_visibility_timeout)}


task_queues = task_queues_for(broker_url, _settings.task_max_deliveries)
task_default_queue = "maintenance"
task_create_missing_queues = False
task_routes = {f"{name}.*": {"queue": name, "routing_key": name} for name in QUEUE_NAMES}

# Soft / hard time limits in seconds, per queue. The soft limit raises inside the
# task so it can clean up; the hard limit kills the child process.
QUEUE_TIME_LIMITS = {
    "images": (30, 45),          # one photo is < 1 s; anything near 30 s is hostile input
    "mentions": (20, 30),
    "notifications": (20, 30),
    "engagement": (120, 180),    # one sweep chunk
    "feed": (240, 300),          # one chunk of users
    # One email or push (network timeouts of 20 s each); send_digests builds every due digest at once.
    "delivery": (120, 180),
    # Nightly retention (its own budget is 1,200 s) and pg_dump; kept below the visibility timeout.
    "upkeep": (1500, 1700),
    # A flush of a minute's counters, one day's rollup (a few seconds at 1 M rows), a sample.
    "analytics": (120, 180),
    "graph": (60, 90),           # one pair's notifications, one conversation's mark-read
    # One text through the classifier is milliseconds; the sweep scores a bounded chunk.
    "moderation": (60, 90),
    # One dirty pass (its own budget is 20 s) or one verify chunk; a reindex runs in the CLI, not here.
    "search": (120, 180),
    # One invalidation fan-out or one warm pass (its own budget is 60 s).
    "cache": (90, 120),
    "maintenance": (600, 900),   # dispatchers and sweeps
}


class _QueueTimeLimits:
    """Give every task the soft and hard time limit of the queue it is routed to."""

    def annotate(self, task):
        queue = task.name.split(".", 1)[0]
        soft, hard = QUEUE_TIME_LIMITS.get(queue, QUEUE_TIME_LIMITS["maintenance"])
        return {"soft_time_limit": soft, "time_limit": hard}


task_annotations = (_QueueTimeLimits(),)

# Retries back off exponentially with jitter, capped here. Countdowns and ETAs of
# any task must stay below the visibility timeout, or Redis redelivers them early
# and the task runs twice at the same time.
TASK_RETRY_BACKOFF_MAX = 600
TASK_MAX_COUNTDOWN = 1800

broker_transport_options = transport_options_for(broker_url, _settings.broker_visibility_timeout)
# RabbitMQ: quorum queues take no global QoS (Celery then sets prefetch per consumer),
# and ETAs and countdowns go through Celery's native delayed delivery (the
# celery_delayed_* quorum queues) instead of waiting in a worker's memory.
worker_detect_quorum_queues = True
# A worker host that vanishes (power, network) holds its unacked messages until RabbitMQ
# notices the silence: about two heartbeats (Celery's default is 120 s).
broker_heartbeat = _settings.broker_heartbeat
broker_native_delayed_delivery_queue_type = "quorum"
result_backend_transport_options = {"retry_policy": {"timeout": 5.0}}

# --- Worker process hygiene.
worker_max_tasks_per_child = 10_000
worker_max_memory_per_child = 400_000  # KiB; an image decode that balloons recycles the child
worker_hijack_root_logger = False
worker_redirect_stdouts = False

# --- Beat
beat_max_loop_interval = 5

# --- Bad messages: the consumer dead-letters unknown, undecodable and oversized
# messages (workers/reliability/consumer.py) instead of only logging them.
worker_consumer = "workers.reliability.consumer:GuardedConsumer"

# --- Singleton beat: only the beat holding a PostgreSQL advisory lock dispatches
# (workers/reliability/singleton_beat.py), so two beats started by mistake still fire each entry once.
beat_scheduler = "workers.reliability.singleton_beat:SingletonScheduler"

# --- kombu's Redis transport, keeping a message popped just as Redis goes away
# (workers/reliability/redis_transport.py) so a broker restart cannot lose it. Installed as
# the redis:// transport itself, so URLs (Flower, logs) stay redis://.
from workers.reliability import redis_transport  # noqa: E402

redis_transport.install()
