"""The worker's message consumer, guarded against bad messages.

Celery already refuses most garbage without dying: an unknown task name, a
body that is not JSON, a disallowed content type (pickle) or a message without
task headers is logged and dropped. This subclass adds the two things an
operator needs on top: every such message becomes a dead letter (so it is
accounted for and inspectable with ``python -m workers dead``), and a message
over ``MAX_MESSAGE_BYTES`` (headers, properties and body together) is refused
before its body is decoded or handed to a pool process. Wrong argument types
and missing arguments are caught later, at the task boundary, by ``@job``'s
validator (``InvalidArguments``).

Selected with ``worker_consumer`` in celeryconfig.py.
"""
from __future__ import annotations

import json
import logging

from celery.worker.consumer import Consumer

import settings

from workers.reliability.dead_letters import Failure, record_now

log = logging.getLogger("workers.reliability.consumer")

# Ids and short strings only travel in messages; 256 KB is far above any real
# task (a 10,000-id list is ~400 KB only with uuids, and those are chunked),
# and far below what would hurt Redis or a pool process.
MAX_MESSAGE_BYTES = settings.current().task_max_message_bytes


def _headers(message) -> dict:
    headers = getattr(message, "headers", None)
    return headers if isinstance(headers, dict) else {}


def _preview(message) -> str:
    body = getattr(message, "body", b"")
    if isinstance(body, bytes):
        return body[:500].decode("utf-8", errors="backslashreplace")
    return repr(body)[:500]


def _body_size(message) -> int:
    body = getattr(message, "body", b"") or b""
    return len(body) if isinstance(body, (bytes, str)) else 0


def _envelope_size(message) -> int:
    """Bytes of the headers and properties, as JSON: a hostile or buggy client can pad a
    header (or ``reply_to``) as easily as the body, and Celery copies headers into every
    request a pool process receives."""
    envelope = {"headers": _headers(message), "properties": getattr(message, "properties", None) or {}}
    try:
        return len(json.dumps(envelope, default=repr, separators=(",", ":"), ensure_ascii=False)
                   .encode("utf-8", "surrogatepass"))
    except (TypeError, ValueError, RecursionError):
        # Headers that cannot even be measured are no task's headers: refuse them as too large.
        return MAX_MESSAGE_BYTES + 1


def message_sizes(message) -> tuple[int, int]:
    """(headers and properties, body) in bytes; their sum is held against MAX_MESSAGE_BYTES."""
    return _envelope_size(message), _body_size(message)


def _decoded_arguments(message) -> tuple[list | None, dict | None]:
    """(args, kwargs) of a protocol-2 JSON body, or (None, None) if it cannot be read."""
    if getattr(message, "content_type", None) != "application/json":
        return None, None
    try:
        body = json.loads(message.body)
        args, kwargs = body[0], body[1]
        if isinstance(args, list) and isinstance(kwargs, dict):
            return args, kwargs
    except Exception:  # noqa: BLE001 - garbage is the case being handled
        pass
    return None, None


def _queue(message) -> str | None:
    info = getattr(message, "delivery_info", None) or {}
    return info.get("routing_key") or info.get("exchange") or None


def bad_message_failure(message, error_code: str, exc_type: str, text: str) -> Failure:
    headers = _headers(message)
    args, kwargs = _decoded_arguments(message) if error_code == "unknown_task" else (None, None)
    task_name = headers.get("task") if isinstance(headers.get("task"), str) else None
    task_id = headers.get("id") if isinstance(headers.get("id"), str) else None
    return Failure(
        task_id=task_id, task_name=task_name or "<no task header>",
        exception_type=exc_type, exception_message=text, error_code=error_code,
        args=args, kwargs=kwargs, queue=_queue(message),
        raw_preview=None if args is not None else _preview(message),
    )


def _unacked_tags(connection) -> set[str]:
    transport_connection = getattr(connection, "connection", None)
    tags: set[str] = set()
    for channel in list(getattr(transport_connection, "channels", None) or []):
        qos = getattr(channel, "_qos", None)
        delivered = getattr(qos, "_delivered", None)
        if delivered:
            tags.update(delivered.keys())
    return tags


def _protocol2_shape_error(message) -> Exception | None:
    """A task message (protocol 2) must carry ``[args, kwargs, embed]``.

    Celery unpacks the body without checking it: a JSON string of three
    characters unpacks into args/kwargs strings, the pool callback fails, and the
    message is never acked (redelivered every visibility timeout, forever).
    ``message.payload`` caches the decoded body, so Celery does not decode twice.
    """
    headers = _headers(message)
    if "task" not in headers or getattr(message, "content_type", None) != "application/json":
        return None
    try:
        payload = message.payload
    except Exception:  # noqa: BLE001 - undecodable bodies take Celery's own path
        return None
    if (isinstance(payload, list) and len(payload) == 3 and isinstance(payload[0], list)
            and isinstance(payload[1], dict) and isinstance(payload[2], (dict, type(None)))):
        return None
    return ValueError(f"a task message body must be [args, kwargs, embed], got {type(payload).__name__} "
                      f"{json.dumps(payload, default=repr)[:80]}")


class GuardedConsumer(Consumer):
    _orphaned_tags: set[str]

    # --- Surviving a broker restart ----------------------------------------
    def on_connection_error_after_connected(self, exc):
        if self.connection is not None and settings.broker_kind(self.app.conf.broker_url) == "redis":
            # Closing the lost connection cannot restore its unacked messages (Redis is
            # gone); remember their tags and restore them once reconnected. (RabbitMQ requeues
            # a closed connection's unacked messages itself; there, reading the connection's
            # channels would even try to reconnect, and a refused attempt stopped the worker.)
            self._orphaned_tags = getattr(self, "_orphaned_tags", set()) | _unacked_tags(self.connection)
        super().on_connection_error_after_connected(exc)

    def connect(self):
        connection = super().connect()
        if settings.broker_kind(self.app.conf.broker_url) == "amqp":
            from workers.reliability.dead_letter_intake import declare_topology

            try:
                declare_topology(self.app, connection)  # before the steps that bind or consume
            except Exception as exc:  # noqa: BLE001 - the connection broke again: Celery's own retry follows
                log.warning("could not declare the RabbitMQ topology on connect: %s", type(exc).__name__)
        orphans = getattr(self, "_orphaned_tags", set())
        if orphans:
            self._restore_orphans(connection, orphans)
        from workers.reliability.redis_transport import LIMBO, restore_limbo

        if LIMBO and hasattr(connection.default_channel, "_do_restore_message"):
            log.warning("reconnected to the broker; requeued %d message(s) received as the connection broke",
                        restore_limbo(connection.default_channel))
        return connection

    def _restore_orphans(self, connection, tags: set[str]) -> None:
        """Put the lost connection's unacked messages back at the head of their queues now,
        rather than after the visibility timeout (an hour). Tags already restored or acked
        are no longer in Redis's unacked hash and are skipped by kombu."""
        qos = getattr(connection.default_channel, "qos", None)
        if qos is None or not hasattr(qos, "restore_by_tag"):
            return
        restored = 0
        for tag in list(tags):
            try:
                qos.restore_by_tag(tag, leftmost=False)  # the right end is consumed next
                restored += 1
                tags.discard(tag)
            except Exception as exc:  # noqa: BLE001 - they still come back after the visibility timeout
                log.warning("could not restore unacked message %s after reconnecting: %s", tag, exc)
        log.warning("reconnected to the broker; restored %d message tag(s) unacked at the connection loss "
                    "(tags already acked or restored are skipped)", restored)

    # --- Bad messages ---------------------------------------------------------
    def create_task_handler(self, *args, **kwargs):
        on_task_received = super().create_task_handler(*args, **kwargs)

        recoverable = tuple(self.connection_errors) + tuple(self.channel_errors)

        def guarded(message):
            envelope, body = message_sizes(message)
            if envelope + body > MAX_MESSAGE_BYTES:
                return self.on_oversized_message(message, envelope, body)
            shape_error = _protocol2_shape_error(message)
            if shape_error is not None:
                return self.on_malformed_message(message, shape_error)
            try:
                return on_task_received(message)
            except KeyError as exc:
                # kombu's Redis transport counts KeyError as a *connection* error, so a
                # message without an `id` header made the worker drop its connection,
                # get the message back on reconnect, and loop forever (fuzz test).
                return self.on_malformed_message(message, exc)
            except recoverable:
                raise
            except Exception as exc:  # noqa: BLE001
                # Celery handles the malformations it expects; anything else it lets
                # escape, and the worker exits with "Unrecoverable error" (the fuzz
                # test found e.g. a JSON body `[1]`, or a list as the task header).
                return self.on_malformed_message(message, exc)

        return guarded

    def on_malformed_message(self, message, exc: Exception) -> None:
        log.error("rejected malformed message: %s: %s", type(exc).__name__, str(exc)[:300],
                  extra={"bad_message": "malformed", "preview": _preview(message)[:200]}, exc_info=True)
        record_now(bad_message_failure(message, "malformed_message", type(exc).__name__, str(exc)))
        try:
            message.reject_log_error(log, self.connection_errors)
        except Exception as reject_error:  # noqa: BLE001 - e.g. already acknowledged
            log.warning("could not reject the malformed message: %s", reject_error)

    def on_oversized_message(self, message, envelope: int, body: int) -> None:
        headers = _headers(message)
        log.error("rejected oversized message: %d bytes (headers and properties %d, body %d) > limit %d",
                  envelope + body, envelope, body, MAX_MESSAGE_BYTES,
                  extra={"bad_message": "oversized", "task_name": str(headers.get("task"))[:200],
                         "task_id": str(headers.get("id"))[:200]})
        record_now(bad_message_failure(
            message, "message_too_large", "MessageTooLarge",
            f"message is {envelope + body} bytes (headers and properties {envelope}, body {body}); "
            f"the limit is {MAX_MESSAGE_BYTES}"))
        message.ack()

    def on_unknown_task(self, body, message, exc):
        super().on_unknown_task(body, message, exc)
        record_now(bad_message_failure(message, "unknown_task", "NotRegistered",
                                       f"no task named {_headers(message).get('task')!r} is registered"))

    def on_invalid_task(self, body, message, exc):
        super().on_invalid_task(body, message, exc)
        code = "content_disallowed" if type(exc).__name__ == "ContentDisallowed" else "invalid_message"
        record_now(bad_message_failure(message, code, type(exc).__name__, str(exc)))

    def on_unknown_message(self, body, message):
        super().on_unknown_message(body, message)
        record_now(bad_message_failure(message, "unknown_message", "UnknownMessage",
                                       "message has no task headers or payload"))

    def on_decode_error(self, message, exc):
        super().on_decode_error(message, exc)
        record_now(bad_message_failure(message, "undecodable", type(exc).__name__, str(exc)))
