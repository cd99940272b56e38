"""Demo: canary round trips through every layer."""
from workers.dev.demo import DemoGraph
from tasks.maintenance.tasks import echo, noop

FAMILY = "maintenance"


def enqueue(graph: DemoGraph) -> list:
    return [noop.delay() for _ in range(20)] + [echo.delay("hello")]


def summarize(graph: DemoGraph) -> str:
    return "20 no-op tasks and 1 echo round-tripped through the broker"
