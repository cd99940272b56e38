"""Structured logging: one JSON object per line, carrying an allowlist of fields.

Inside a task every line carries the task name, task id and queue, so an
operator can grep one task's whole story out of interleaved worker logs.

Task arguments, return values and exception messages hold user data (an email
in ``maintenance.echo``, a caption, an SQL error's ``DETAIL: Key (email)=(…)``),
so none of them is ever written:

- Only the fields in ``LOGGED_FIELDS`` leave a record's extras; Celery's
  ``data`` extra (the task's args, kwargs and result) and anything else is dropped.
- Celery's task lines ("received", "succeeded", "raised", "retry", …) are
  rebuilt from their task name, id, state, runtime and error code.
- An exception is written as its traceback (files, lines, code) ending in the
  exception's class and error code, never its message; no locals.
- Celery's multi-line reports (an unknown task's "full contents of the message
  body") are cut to their first paragraph, and exceptions passed as arguments to
  Celery's lines are written as their error code.

Records are left untouched: the rewriting happens when this formatter renders
them, so another handler (pytest's caplog) still sees the original.
"""
from __future__ import annotations

import json
import logging
import re
import sys
import time
import traceback
from collections.abc import Mapping

from celery.app import trace

from workers.errors import error_code

# The extras a line may carry; anything else a record holds is not written, so a
# new ``extra=`` key appears in the logs only once it is added here.
LOGGED_FIELDS = frozenset({
    "task_name", "task_id", "queue", "state", "runtime", "error_code",  # every task line
    "dead_task_name", "dead_task_id",  # workers/reliability/dead_letters.py, workers/task.py
    "unsent_task",  # workers/reliability/enqueue.py
    "bad_message", "delivery_tag",  # workers/reliability/consumer.py, redis_transport.py
    "beat_owner", "terminated_pid",  # workers/reliability/singleton_beat.py
    "upkeep_table",  # tasks/upkeep: the table a retention, purge or partition step failed on
})

# Celery's task lines pass their fields as one mapping (celery/app/trace.py,
# celery/worker/strategy.py); the template says which state the line reports,
# and for the shared failure template, the policy's description.
_TEMPLATE_STATES = {
    trace.LOG_RECEIVED.strip(): "received",
    trace.LOG_SUCCESS.strip(): "succeeded",
    trace.LOG_RETRY.strip(): "retry",
    trace.LOG_IGNORED.strip(): "ignored",
    trace.LOG_REJECTED.strip(): "rejected",
}
_DESCRIPTION_STATES = {
    trace.log_policy_expected.description: "failed",
    trace.log_policy_unexpected.description: "failed",
    trace.log_policy_internal.description: "internal_error",
    trace.log_policy_reject.description: "rejected",
}
_ERROR_STATES = ("failed", "internal_error", "rejected", "retry")
_PLACEHOLDER = re.compile(r"%(?:\([^)]*\))?[-#0 +]*\d*(?:\.\d+)?[diouxXeEfFgGcrsa]")
_CLASS_IN_REPR = re.compile(r"(?:^|: )([A-Za-z_][\w.]*)\(")


class TaskContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        from celery._state import get_current_task

        task = get_current_task()
        if task is not None and task.request.id is not None:
            record.task_name = task.name
            record.task_id = task.request.id
            delivery = task.request.delivery_info or {}
            record.queue = delivery.get("routing_key") or delivery.get("queue")
        return True


def _exception_code(record: logging.LogRecord, described: str = "") -> str | None:
    """The error code of the exception a Celery task line is about.

    Celery logs an expected failure (a JobError) and a retry without exc_info,
    but from inside the ``except`` block that handles it, so the exception is
    still ``sys.exc_info()`` while the record is emitted (logging is synchronous
    here). Failing that, the class named in Celery's repr of it.
    """
    exc = record.exc_info[1] if record.exc_info else sys.exc_info()[1]
    exc = getattr(exc, "exc", None) or exc  # a Retry carries the exception that caused it
    if exc is not None:
        return error_code(exc)
    found = _CLASS_IN_REPR.search(described)
    return found.group(1) if found else None


def _task_line(record: logging.LogRecord, context: Mapping) -> tuple[str, dict]:
    state = (_DESCRIPTION_STATES.get(str(context.get("description")))
             or _TEMPLATE_STATES.get(str(record.msg).strip()) or "logged")
    fields = {"task_name": str(context.get("name")), "task_id": str(context.get("id")), "state": state}
    message = f"Task {fields['task_name']}[{fields['task_id']}] {state}"
    if isinstance(context.get("runtime"), (int, float)):
        fields["runtime"] = round(float(context["runtime"]), 6)
        message += f" in {fields['runtime']}s"
    if state in _ERROR_STATES:
        code = _exception_code(record, str(context.get("exc") or ""))
        if code:
            fields["error_code"] = code
            message += f": {code}"
    return message, fields


def _safe_argument(value):
    if isinstance(value, BaseException):
        return error_code(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return f"<{type(value).__name__}>"


def _celery_line(record: logging.LogRecord) -> str:
    """One of Celery's own positional lines: its first paragraph, exceptions as their code."""
    template = str(record.msg)
    headline = template.split("\n\n", 1)[0].rstrip()
    args = record.args if isinstance(record.args, tuple) else ()
    used = len(_PLACEHOLDER.findall(headline))
    try:
        return headline % tuple(_safe_argument(arg) for arg in args[:used]) if used else headline
    except (TypeError, ValueError):
        return headline


def format_exception(exc: BaseException | None) -> str:
    """A traceback with every exception in its chain reduced to class and error code."""
    chain = []
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        chain.append(exc)
        if exc.__cause__ is not None:
            exc, link = exc.__cause__, "The above exception was the direct cause of the following exception:"
        elif exc.__context__ is not None and not exc.__suppress_context__:
            exc, link = exc.__context__, "During handling of the above exception, another exception occurred:"
        else:
            exc = None
        if exc is not None:
            chain.append(link)
    parts = []
    for item in reversed(chain):
        if isinstance(item, str):
            parts.append(f"\n{item}\n\n")
            continue
        if item.__traceback__ is not None:
            parts.append("Traceback (most recent call last):\n")
            parts.extend(traceback.format_list(traceback.extract_tb(item.__traceback__)))
        kind = type(item)
        name = kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
        code = error_code(item)
        parts.append(name + (f" (error_code={code})" if code != kind.__name__ else "") + "\n")
    return "".join(parts).rstrip("\n")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields: dict = {}
        if record.name.startswith("celery") and isinstance(record.args, Mapping) and "id" in record.args:
            message, fields = _task_line(record, record.args)
        elif record.name.startswith("celery") and record.args:
            message = _celery_line(record)
        else:
            message = record.getMessage()
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "msg": message,
        }
        for key in sorted(LOGGED_FIELDS):
            value = fields.get(key, getattr(record, key, None))
            if value is not None:
                entry[key] = value if isinstance(value, (str, int, float, bool)) else repr(value)
        if record.exc_info and record.exc_info[1] is not None:
            entry["exc"] = format_exception(record.exc_info[1])
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(level: str | None = None) -> None:
    import settings

    level = level or settings.current().log_level
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(TaskContextFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("sqlalchemy.engine", "alembic", "urllib3", "tornado.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
