"""Test-only tasks for the broker tests, loaded into their workers with ``--include``."""
from workers.celery_app import app
from workers.task import JobTask


@app.task(name="maintenance.retry_twice", base=JobTask, bind=True, acks_late=True, max_retries=5)
def retry_twice(self, countdown: int) -> int:
    """Fails its first two runs with a countdown retry, then returns how many retries it took.

    Two, not one: the second retry re-sends a message whose routing key already carries
    the first delay, the case Celery dropped on RabbitMQ before 5.6.3 (#9867, #10095)."""
    if self.request.retries < 2:
        raise self.retry(countdown=countdown)
    return self.request.retries


@app.task(name="maintenance.mark_and_hold", base=JobTask, bind=True, acks_late=True, reject_on_worker_lost=True)
def mark_and_hold(self, prefix: str, seconds: float) -> None:
    """Commits one ``job_heartbeats`` row per run (``prefix:pid``), then holds: each run is
    counted in PostgreSQL whatever the broker, so a test can kill the process holding it."""
    import os
    import time

    from db.heartbeats import record_heartbeat
    from db.session import session_scope

    with session_scope() as session:
        record_heartbeat(session, f"{prefix}:{os.getpid()}:{time.monotonic_ns()}", {"run": True})
    time.sleep(seconds)


@app.task(name="maintenance.counted_canary", base=JobTask, bind=True, acks_late=True, reject_on_worker_lost=True)
def counted_canary(self, name: str, hold_seconds: float = 0.0) -> str:
    """``maintenance.canary`` that also counts its runs, whatever the broker: a ``run:NAME:…``
    row committed as it starts, then the hold, then the canary row ``NAME`` (the effect,
    an idempotent upsert). Runs beyond the first per name are the redeliveries."""
    import os
    import time

    from db.heartbeats import record_heartbeat
    from db.session import session_scope

    with session_scope() as session:
        record_heartbeat(session, f"run:{name}:{os.getpid()}:{time.monotonic_ns()}", {"run": True})
    time.sleep(hold_seconds)
    with session_scope() as session:
        record_heartbeat(session, name, {"canary": True})
    return name
