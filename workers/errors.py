"""Typed task errors.

A JobError is permanent: it is recorded with its stable ``code`` and never retried.
Anything in TRANSIENT_ERRORS is retried with exponential backoff and jitter.
"""
from __future__ import annotations

import redis.exceptions
import sqlalchemy.exc
from kombu.exceptions import OperationalError as KombuOperationalError


class JobError(Exception):
    """A permanent failure with a stable, machine-readable code."""

    code = "job_error"

    def __init__(self, message: str, *, code: str | None = None):
        super().__init__(message)
        if code is not None:
            self.code = code
        self.message = message

    def as_dict(self) -> dict:
        return {"error_code": self.code, "message": self.message}

    def __reduce__(self):  # keep code through pickling in the result backend / billiard
        return (self.__class__, (self.message,), {"code": self.code})


def error_code(exc: BaseException) -> str:
    """The stable code an operator sees for a failure: ours for a JobError, else the exception's class.

    Only JobError's code is ours; SQLAlchemy errors carry a ``code`` of their own (a docs link id).
    """
    return exc.code if isinstance(exc, JobError) else type(exc).__name__


class BadInput(JobError):
    code = "bad_input"


class InvalidArguments(BadInput):
    code = "invalid_arguments"


class ServiceUnavailable(Exception):
    """A remote service of ours (the search engine) refused, timed out or answered 5xx: retried."""


# Failures that a later attempt can succeed at: connections lost, lock and
# statement timeouts, serialization failures and deadlocks (all OperationalError
# in psycopg 3), and a broker or result backend going away.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.TimeoutError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    KombuOperationalError,
    ServiceUnavailable,
)
