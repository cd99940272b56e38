"""A task that careless code could have written, for tests/operations/test_log_privacy.py only.

It is loaded into that test's worker with ``--include`` and never into the app:
it fails unexpectedly with its argument in the messages of a chained exception.
"""
from workers.task import job


@job("maintenance.leak_probe")
def leak_probe(value: str) -> None:
    try:
        {}[value]
    except KeyError:
        raise ValueError(f"cannot handle {value}")  # noqa: B904 - the implicit chain is the point
