"""A web tier's Celery client in another codebase: it imports nothing from this project.

Run as a script by tests/brokers/test_rabbitmq.py (``python bare_client.py MODE BROKER BACKEND``):

- ``default``: Celery's defaults. Sending declares a classic queue on a direct exchange,
  which RabbitMQ refuses (PRECONDITION_FAILED) because the workers declared quorum
  queues on topic exchanges. Prints the error.
- ``configured``: what docs/operations.md ("A web tier's client on RabbitMQ") tells a
  client to configure. Prints the results of a plain send and of a countdown.
"""
import json
import sys

from celery import Celery
from kombu import Exchange, Queue

mode, broker, backend = sys.argv[1:4]
app = Celery("web-tier", broker=broker, backend=backend)
app.conf.update(task_serializer="json", accept_content=["json"], result_serializer="json",
                result_accept_content=["json"])

if mode == "default":
    try:
        app.send_task("maintenance.echo", args=["from the web tier"], queue="maintenance").get(timeout=10)
        print(json.dumps({"error": None}))
    except Exception as exc:  # noqa: BLE001 - the point is which error
        print(json.dumps({"error": type(exc).__name__, "message": str(exc)}))
    sys.exit(0)

# --- What a client must configure to send to the workers' quorum queues ---------------
QUORUM = {
    "x-queue-type": "quorum",
    "x-delivery-limit": 4,                     # the workers' TASK_MAX_DELIVERIES - 1
    "x-dead-letter-exchange": "dead_letters",
    "x-dead-letter-strategy": "at-least-once",
    "x-overflow": "reject-publish",
}
QUEUES = ("images", "mentions", "notifications", "engagement", "feed", "delivery", "upkeep", "analytics",
          "graph", "moderation", "search", "cache", "maintenance")
app.conf.update(
    task_queues=[Queue(name, Exchange(name, type="topic"), routing_key=name, queue_arguments=QUORUM)
                 for name in QUEUES],
    task_routes={f"{name}.*": {"queue": name, "routing_key": name} for name in QUEUES},
    task_create_missing_queues=False,
    broker_transport_options={"confirm_publish": True},
)
now = app.send_task("maintenance.echo", args=["from the web tier"]).get(timeout=30)
later = app.send_task("maintenance.echo", args=["two seconds later"], countdown=2).get(timeout=30)
print(json.dumps({"error": None, "now": now, "later": later,
                  "project_imported": any(name.split(".")[0] in ("workers", "tasks", "celeryconfig", "settings")
                                          for name in sys.modules)}))
