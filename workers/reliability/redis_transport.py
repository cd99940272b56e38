"""kombu's Redis transport, with the one message a broker restart could lose kept in memory.

The transport receives a message with BRPOP, which removes it from the queue,
and only then records it in the ``unacked`` hash that makes redelivery
possible. If Redis goes away between the two (a restart under load), that
write fails and the message exists nowhere but in the consumer's memory: it
was lost, about one message per consuming connection per restart (the chaos
test measured it). Here the failed bookkeeping keeps the raw message in
``LIMBO``; the consumer (workers/reliability/consumer.py) puts it back at the head of its
queue as soon as it has reconnected.

It also turns the AttributeError kombu raises when a released channel is used
after a connection loss into the connection error it is (see Channel).

Installed by celeryconfig.py as kombu's ``redis``/``rediss`` transport (see
``install``), so URLs stay ``redis://`` for Flower, logs and operators.
"""
from __future__ import annotations

import logging
import threading

from kombu.transport import redis as kombu_redis

log = logging.getLogger("workers.reliability.redis_transport")

# (raw message, exchange, routing key) that were popped but never recorded as unacked.
LIMBO: list[tuple[dict, str, str]] = []
_limbo_lock = threading.Lock()


class QoS(kombu_redis.QoS):
    def append(self, message, delivery_tag):
        try:
            return super().append(message, delivery_tag)
        except Exception:
            delivery = message.delivery_info or {}
            with _limbo_lock:
                LIMBO.append((message._raw, delivery.get("exchange"), delivery.get("routing_key")))
            log.warning("broker lost while recording a received message as unacked; "
                        "it is kept and requeued after reconnecting", extra={"delivery_tag": delivery_tag})
            raise


def restore_limbo(channel) -> int:
    """Requeue the messages kept by QoS.append at the head of their queues; returns how many."""
    with _limbo_lock:
        pending, LIMBO[:] = list(LIMBO), []
    restored = 0
    for index, (payload, exchange, routing_key) in enumerate(pending):
        try:
            with channel.conn_or_acquire() as client:
                with client.pipeline() as pipe:
                    channel._do_restore_message(payload, exchange, routing_key, pipe, leftmost=False)
                    pipe.execute()
            restored += 1
        except Exception as exc:  # noqa: BLE001 - keep the rest for the next reconnect
            log.warning("could not requeue a kept message yet: %s", exc)
            with _limbo_lock:
                LIMBO.extend(pending[index:])
            break
    return restored


class Channel(kombu_redis.Channel):
    QoS = QoS

    def _connparams(self, asynchronous=False):
        # After a connection loss Celery releases the transport connection, and
        # a late ack or the channel's close then asks this channel for a new
        # client: kombu dereferences the released connection and raises
        # AttributeError, which Celery treats as unrecoverable and the worker
        # exits. A connection error is what it is, and Celery handles those.
        if getattr(self.connection, "client", None) is None:
            import redis

            raise redis.exceptions.ConnectionError("the channel's broker connection was released")
        return super()._connparams(asynchronous=asynchronous)


class Transport(kombu_redis.Transport):
    Channel = Channel


def install() -> None:
    """Make ``redis://`` and ``rediss://`` URLs use this transport, in this process."""
    from kombu import transport

    path = f"{__name__}:Transport"
    for scheme in ("redis", "rediss"):
        transport.TRANSPORT_ALIASES[scheme] = path
        transport._transport_cache.pop(scheme, None)
