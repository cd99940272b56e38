from celery import Celery

# One module per job family; each holds only thin task entry points.
TASK_MODULES = [
    "tasks.maintenance.tasks",
    "tasks.images.tasks",
    "tasks.mentions.tasks",
    "tasks.notifications.tasks",
    "tasks.engagement.tasks",
    "tasks.feed.tasks",
    "tasks.delivery.tasks",
    "tasks.upkeep.tasks",
    "tasks.analytics.tasks",
    "tasks.graph.tasks",
    "tasks.moderation.tasks",
    "tasks.search.tasks",
    "tasks.cache.tasks",
]

app = Celery("social_jobs", include=TASK_MODULES)
app.config_from_object("celeryconfig")
# On RabbitMQ, every worker consumes the broker's dead letters into PostgreSQL. Named, not
# imported: the step loads when a worker starts, after the tasks it may close out.
app.steps["consumer"].add("workers.reliability.dead_letter_intake:DeadLetterIntake")

import workers.lifecycle  # noqa: E402,F401  (connects the signal handlers)
