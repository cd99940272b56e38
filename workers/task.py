"""The one decorator every task uses, and the one place its per-task hooks are wired.

``@job("family.verb_noun")`` gives a task the shared policy: acks late and
requeue on worker loss, retries of transient errors with exponential backoff
and jitter, typed permanent errors that are never retried, and validation of
the message's arguments against the function's type hints before any work.
Routing and time limits come from celeryconfig.py, by task-name prefix.

Per-task hooks, all here: every delivery is counted before the task runs (the
poison-pill guard, workers/reliability/deliveries.py), and a final failure of
any kind becomes a dead letter (workers/reliability/dead_letters.py), after
which the task's family may close out its own state (``on_dead_letter``).
Process-wide signals (config checks, logging, fork safety, metrics) live in
workers/lifecycle.py.
"""
from __future__ import annotations

import functools
import inspect
import logging
import types
import typing
import uuid
from collections.abc import Callable
from typing import Any, NewType

from celery import Task, signals

from workers.celery_app import app
from workers.coalescing import Coalesce
from workers.errors import TRANSIENT_ERRORS, InvalidArguments, JobError
from workers.reliability.dead_letters import Failure, settle
from workers.reliability.deliveries import check_delivery

log = logging.getLogger("workers.task")

UuidStr = NewType("UuidStr", str)
"""A string that must parse as a UUID (post, comment and notification ids)."""

MAX_LIST_ITEMS = 10_000


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _check_value(name: str, value: Any, hint: Any) -> None:
    if hint is Any or hint is inspect.Parameter.empty:
        return
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [option for option in typing.get_args(hint) if option is not type(None)]
        if len(options) == 1 and value is not None:
            return _check_value(name, value, options[0])   # Optional[X]: X's own, clearer error
        for option in typing.get_args(hint):
            try:
                _check_value(name, value, option)
                return
            except InvalidArguments:
                continue
        raise InvalidArguments(f"argument {name!r} must be {_type_name(hint)}, got {type(value).__name__}")
    if hint is type(None):
        if value is not None:
            raise InvalidArguments(f"argument {name!r} must be null")
        return
    if hint is UuidStr:
        if not isinstance(value, str):
            raise InvalidArguments(f"argument {name!r} must be a UUID string, got {type(value).__name__}")
        try:
            uuid.UUID(value)
        except ValueError:
            raise InvalidArguments(f"argument {name!r} is not a valid UUID: {value[:64]!r}") from None
        return
    if origin is list:
        if not isinstance(value, list):
            raise InvalidArguments(f"argument {name!r} must be a list, got {type(value).__name__}")
        if len(value) > MAX_LIST_ITEMS:
            raise InvalidArguments(f"argument {name!r} has {len(value)} items; the limit is {MAX_LIST_ITEMS}")
        (item_hint,) = typing.get_args(hint) or (Any,)
        for index, item in enumerate(value):
            _check_value(f"{name}[{index}]", item, item_hint)
        return
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise InvalidArguments(f"argument {name!r} must be an object, got {type(value).__name__}")
        return
    if hint is int:
        # bool is an int subclass in Python; a JSON true is not an id.
        if not isinstance(value, int) or isinstance(value, bool):
            raise InvalidArguments(f"argument {name!r} must be an integer, got {type(value).__name__}")
        return
    if hint is float:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise InvalidArguments(f"argument {name!r} must be a number, got {type(value).__name__}")
        return
    if isinstance(hint, type) and not isinstance(value, hint):
        raise InvalidArguments(f"argument {name!r} must be {_type_name(hint)}, got {type(value).__name__}")


def argument_validator(fn: Callable) -> Callable[[tuple, dict], None]:
    signature = inspect.signature(fn)
    hints = typing.get_type_hints(fn)

    def validate(args: tuple, kwargs: dict) -> None:
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise InvalidArguments(f"{fn.__name__}: {exc}") from None
        for name, value in bound.arguments.items():
            _check_value(name, value, hints.get(name, Any))

    return validate


DeadLetterHook = Callable[[list, dict, Failure], None]
"""``hook(args, kwargs, failure)``: close out a family's state for a task that will not run again."""


class JobTask(Task):
    """Base class of every ``@job`` task: the delivery guard before, the dead letter after.

    Every delivery is counted first: a task id delivered more than
    ``TASK_MAX_DELIVERIES`` times fails with ``PoisonPill`` without running.
    """

    abstract = True
    throws = (JobError,)  # expected failures: logged without a traceback
    on_dead_letter: DeadLetterHook | None = None

    def __call__(self, *args, **kwargs):
        request = self.request
        if request.id and not request.is_eager and request.delivery_info:
            check_delivery(request.id, request.retries)
        return super().__call__(*args, **kwargs)


@signals.task_failure.connect
def _dead_letter_and_close_out(sender=None, task_id=None, exception=None, args=None, kwargs=None, **_):
    # task_failure fires only for a final failure (an error that is not retried,
    # exhausted retries, a poison pill, a hard time limit): a retry raises Retry
    # (no signal), and a lost worker with reject_on_worker_lost requeues (no signal).
    if not isinstance(sender, JobTask) or exception is None:
        return
    settle(sender, Failure.from_exception(sender, task_id, exception, args, kwargs), args, kwargs)


def job(name: str, *, max_retries: int = 5, transient: tuple = TRANSIENT_ERRORS,
        on_dead_letter: DeadLetterHook | None = None, coalesce: Coalesce | None = None, **options):
    """Register a task under a stable ``family.verb_noun`` name with the shared policy.

    ``on_dead_letter(args, kwargs, failure)`` runs after the task is dead-lettered
    for any reason, so the family can close out its own state (say, mark an
    upload FAILED) instead of leaving it in progress forever.

    ``coalesce=Coalesce(apply_many)``: the worker applies this task's messages in
    bulk (workers/coalescing.py); the task's own body still runs any message that
    cannot join a bulk, and every eager or direct call.
    """
    from celeryconfig import TASK_RETRY_BACKOFF_MAX

    def decorator(fn: Callable) -> Task:
        validate = argument_validator(fn)

        @functools.wraps(fn)
        def run(*args, **kwargs):
            validate(args, kwargs)
            return fn(*args, **kwargs)

        run.validate_arguments = validate  # type: ignore[attr-defined]
        return app.task(
            name=name,
            base=JobTask,
            acks_late=True,
            reject_on_worker_lost=True,
            autoretry_for=transient,
            dont_autoretry_for=(JobError,),
            retry_backoff=True,
            retry_backoff_max=TASK_RETRY_BACKOFF_MAX,
            retry_jitter=True,
            max_retries=max_retries,
            on_dead_letter=staticmethod(on_dead_letter) if on_dead_letter else None,
            validate_arguments=staticmethod(validate),
            **({"coalesce": coalesce, "Strategy": "workers.coalescing:strategy"} if coalesce else {}),
            **options,
        )(run)

    return decorator
