"""Queue depth and the age of the next message: read here, for `status` and the exporter alike.

Depth comes from kombu's passive ``queue_declare``, which works on every
transport and, on Redis, counts the priority sub-queues (``name\x06\x163`` and
so on) that a bare ``LLEN name`` misses.
"""
from __future__ import annotations

import json
import time

import celeryconfig


def queue_depths(app, names: tuple[str, ...] = celeryconfig.QUEUE_NAMES) -> dict[str, int]:
    depths = {}
    with app.connection_for_read() as connection:
        channel = connection.default_channel
        for name in names:
            try:
                depths[name] = channel.queue_declare(queue=name, passive=True).message_count
            except Exception:  # noqa: BLE001 - a queue nobody declared yet is empty
                depths[name] = 0
    return depths


def oldest_message_age(client, queue: str, now: float | None = None) -> float | None:
    """Seconds since the next message to be consumed was sent (its ``sent_at`` header); Redis only."""
    # kombu's Redis transport LPUSHes and BRPOPs: the oldest message is the last element.
    raw = client.lindex(queue, -1)
    if raw is None:
        return None
    try:
        sent_at = float(json.loads(raw)["headers"]["sent_at"])
    except (ValueError, KeyError, TypeError):
        return None
    return max(0.0, (now or time.time()) - sent_at)
