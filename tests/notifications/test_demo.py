"""The make-run demo of both families, against a real worker."""
import pytest
from celery.result import ResultSet

pytestmark = pytest.mark.integration


def test_demo_enqueues_and_summarizes(clean_db, celery_worker):
    from tasks.mentions import demo as mentions_demo
    from tasks.notifications import demo as notifications_demo
    from workers.dev.demo import load_demo_graph

    graph = load_demo_graph()
    results = notifications_demo.enqueue(graph) + mentions_demo.enqueue(graph)
    ResultSet(results).join_native(timeout=60, propagate=True)
    line = notifications_demo.summarize(graph)
    assert "'4 people liked your post' (4 in one batch)" in line
    assert "follow notifications: 4 in 1 row(s)" in line
    mentions = mentions_demo.summarize(graph)
    assert mentions.startswith("4 mention notifications (@alice, @bob, @carol, @dave)")
