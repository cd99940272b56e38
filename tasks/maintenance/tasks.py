from db.session import session_scope
from tasks.maintenance.heartbeat import record_heartbeat
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
