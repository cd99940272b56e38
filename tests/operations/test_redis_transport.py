"""The Redis transport subclass: installed for redis:// URLs, and its two repairs on a real Redis."""
from __future__ import annotations

import json

import pytest
import redis


def test_redis_urls_use_the_project_transport(celery_app):
    from workers.reliability.redis_transport import QoS, Transport

    with celery_app.connection_for_write() as connection:
        assert isinstance(connection.transport, Transport)
        assert isinstance(connection.default_channel.qos, QoS)
        assert connection.as_uri().startswith("redis://")  # Flower and logs still see redis://


def test_a_kept_message_is_requeued_at_the_head_of_its_queue(isolated):
    from workers.reliability import redis_transport

    payload = {"body": "e30=", "headers": {"id": "kept-1", "task": "maintenance.noop"},
               "properties": {"delivery_info": {"exchange": "maintenance", "routing_key": "maintenance"}},
               "content-type": "application/json", "content-encoding": "utf-8"}
    client = redis.Redis.from_url(isolated.broker_url)
    with isolated.app.connection_for_write() as connection:
        channel = connection.default_channel
        channel.exchange_declare("maintenance", type="direct")
        channel.queue_declare("maintenance")
        channel.queue_bind("maintenance", "maintenance", "maintenance")
        client.lpush("maintenance", json.dumps({"headers": {"id": "already-queued"}}))
        redis_transport.LIMBO.append((payload, "maintenance", "maintenance"))
        assert redis_transport.restore_limbo(channel) == 1
    assert redis_transport.LIMBO == []
    # kombu consumes from the right: the kept message is next, ahead of the older one.
    head = json.loads(client.lindex("maintenance", -1))
    assert head["headers"]["id"] == "kept-1" and head["headers"]["redelivered"] is True
    assert client.llen("maintenance") == 2


def test_a_released_channel_raises_a_connection_error_not_attributeerror(celery_app):
    connection = celery_app.connection_for_write()
    channel = connection.default_channel
    connection.collect()  # what Celery does to a lost connection before closing it
    with pytest.raises(redis.exceptions.ConnectionError):
        channel._connparams()
