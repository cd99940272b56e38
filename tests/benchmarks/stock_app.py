"""A bare Celery app with nothing of ours: the framework-overhead baseline of issue 18.

Same broker and result backend as the run (BROKER_URL, RESULT_BACKEND), JSON
only, ``acks_late``, prefetch 1 and task events on (``STOCK_EVENTS=off`` turns
them off, for the price of events), and one no-op task. It imports nothing
from the project, so the figure is stock Celery's own.
"""
import os

from celery import Celery

app = Celery("stock", broker=os.environ["BROKER_URL"], backend=os.environ["RESULT_BACKEND"])
events = os.environ.get("STOCK_EVENTS", "on") == "on"
app.conf.update(
    task_serializer="json", result_serializer="json", accept_content=["json"], result_accept_content=["json"],
    task_acks_late=True, worker_prefetch_multiplier=1, worker_send_task_events=events,
    task_send_sent_event=events, task_default_queue="stock", worker_hijack_root_logger=False,
)


@app.task(name="stock.noop", shared=False)   # not registered in every app (ours included)
def noop():
    return None
