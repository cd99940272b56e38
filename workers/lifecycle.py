"""Process lifecycle signals: configuration checks at start-up, logging, fork safety,
the publish header and task timing.

Per-task hooks (the poison-pill guard, dead letters, close-out) live with the
task class in workers/task.py.
"""
from __future__ import annotations

import logging
import time

from celery import signals
from celery.exceptions import ImproperlyConfigured

import settings
from workers.logs import configure_logging
from workers.observability import metrics

log = logging.getLogger("workers.lifecycle")


def check_visibility_timeout(conf) -> None:
    """Refuse a visibility timeout that would let Redis redeliver a running task.

    A message still unacked after ``visibility_timeout`` is handed to another
    worker. If a task may legitimately run (hard time limit) or wait (countdown,
    retry backoff) longer than that, it runs twice concurrently.
    """
    import celeryconfig

    transport = conf.broker_transport_options or {}
    visibility = transport.get("visibility_timeout")
    if settings.broker_kind(conf.broker_url) != "redis":
        return  # only the Redis transport redelivers by timeout
    if visibility is None:
        raise ImproperlyConfigured(
            "broker_transport_options.visibility_timeout is unset; Redis would use 3600 s implicitly. "
            "Set it explicitly above the longest hard time limit and countdown.")
    hard_limits = {queue: hard for queue, (_soft, hard) in celeryconfig.QUEUE_TIME_LIMITS.items()}
    longest_queue, longest_hard = max(hard_limits.items(), key=lambda item: item[1])
    longest_countdown = max(getattr(celeryconfig, "TASK_MAX_COUNTDOWN", 0),
                            getattr(celeryconfig, "TASK_RETRY_BACKOFF_MAX", 0))
    if visibility <= longest_hard:
        raise ImproperlyConfigured(
            f"visibility_timeout={visibility}s is not above the longest hard time limit "
            f"({longest_hard}s on queue {longest_queue!r}): Redis would redeliver tasks that are still running.")
    if visibility <= longest_countdown:
        raise ImproperlyConfigured(
            f"visibility_timeout={visibility}s is not above the longest countdown/retry backoff "
            f"({longest_countdown}s): delayed tasks would be redelivered early and run twice.")
    for queue, (soft, hard) in celeryconfig.QUEUE_TIME_LIMITS.items():
        if soft >= hard:
            raise ImproperlyConfigured(
                f"queue {queue!r}: soft time limit {soft}s must be below its hard limit {hard}s.")


def check_broker_companions(conf) -> None:
    """On RabbitMQ, refuse to start without the Redis that the analytics counters live in.

    The view counters are Redis hashes written by the web tier; on a Redis broker they
    share its server, on RabbitMQ they need their own (ANALYTICS_REDIS_URL).
    """
    if settings.broker_kind(conf.broker_url) == "amqp" and not settings.current().analytics_redis_url:
        raise ImproperlyConfigured(
            "the broker is RabbitMQ, so the analytics counters need a Redis of their own: "
            "set ANALYTICS_REDIS_URL=redis://host:6379/0")


@signals.setup_logging.connect
def _setup_logging(loglevel=None, **_kwargs):
    configure_logging(loglevel if isinstance(loglevel, str) else None)


def _refuse_to_start_on_bad_config(sender=None, instance=None, **_kwargs):
    app = getattr(sender, "app", None) or getattr(instance, "app", None)
    try:
        settings.require_services("a worker or beat")
        if app is not None:
            check_visibility_timeout(app.conf)
            check_broker_companions(app.conf)
    except (settings.SettingsError, ImproperlyConfigured) as exc:
        log.critical("refusing to start: %s", exc)
        # Celery's signal dispatch swallows ordinary exceptions from receivers;
        # SystemExit is not swallowed, so the process really stops.
        raise SystemExit(f"configuration error: {exc}") from exc


# celeryd_init is the worker's first signal, before its components (and the result
# backend) are set up; worker_init repeats the check for programmatic workers.
signals.celeryd_init.connect(_refuse_to_start_on_bad_config, weak=False)
signals.worker_init.connect(_refuse_to_start_on_bad_config, weak=False)
signals.beat_init.connect(_refuse_to_start_on_bad_config, weak=False)


@signals.worker_init.connect
def _import_the_driver_before_fork(**_kwargs):
    # Pool processes inherit the parent's modules: loading the PostgreSQL driver and its
    # SQLAlchemy dialect here spares each new process ~60 ms on its first task.
    import psycopg  # noqa: F401
    import sqlalchemy.dialects.postgresql.psycopg  # noqa: F401


@signals.worker_process_init.connect
def _fresh_engine_after_fork(**_kwargs):
    from db.session import reset_engine

    reset_engine()


@signals.before_task_publish.connect
def _stamp_sent_at(headers=None, **_):
    # The exporter reads the oldest message's age from this header; Celery's
    # protocol carries no send time of its own.
    if headers is not None and "sent_at" not in headers:
        headers["sent_at"] = time.time()


signals.task_prerun.connect(metrics.task_started, weak=False)
signals.task_postrun.connect(metrics.task_finished, weak=False)
signals.worker_process_shutdown.connect(lambda **_: metrics.flush(), weak=False)
signals.worker_shutdown.connect(lambda **_: metrics.flush(), weak=False)
