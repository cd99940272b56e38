from db.session import session_scope
from db.heartbeats import record_heartbeat
from workers.task import job


@job("maintenance.noop")
def noop() -> None:
    """Does nothing: the throughput baseline and the health probe's canary."""
    return None


@job("maintenance.echo")
def echo(value: str) -> str:
    """Round-trips a string: proves arguments and results survive the broker."""
    return value


@job("maintenance.beat_heartbeat")
def beat_heartbeat() -> None:
    """Fired by beat every 30 s; its age tells the status probe that beat, broker and a worker all work."""
    with session_scope() as session:
        record_heartbeat(session, "maintenance.beat_heartbeat")


MAX_HOLD_SECONDS = 30.0


@job("maintenance.canary")
def canary(name: str, hold_seconds: float = 0.0) -> str:
    """Upserts the ``job_heartbeats`` row ``name``: a round trip through broker, worker and database.

    Deploy smoke tests and chaos tests send it with a fresh name and wait for the
    row; ``hold_seconds`` (at most 30) keeps the task running first, to probe
    shutdown, time limits and worker loss. Idempotent: a rerun moves the time only.
    """
    _hold(hold_seconds)
    with session_scope() as session:
        record_heartbeat(session, name, {"canary": True})
    return name


@job("maintenance.sleep")
def sleep(seconds: float) -> float:
    """Holds a worker slot for ``seconds`` (at most 30): drain, shutdown and poison-pill drills."""
    return _hold(seconds)


def _hold(seconds: float) -> float:
    import time

    from workers.errors import InvalidArguments

    if not 0 <= seconds <= MAX_HOLD_SECONDS:
        raise InvalidArguments(f"seconds must be between 0 and {MAX_HOLD_SECONDS:g}, got {seconds!r}")
    time.sleep(seconds)
    return seconds
