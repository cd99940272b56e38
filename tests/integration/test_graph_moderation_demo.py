"""The make-run demo of the graph and moderation families, against a real worker."""
import re

import pytest
from celery.result import ResultSet

pytestmark = pytest.mark.integration


def test_graph_and_moderation_demos_enqueue_and_summarize(clean_db, celery_worker):
    from tasks.graph import demo as graph_demo
    from tasks.moderation import demo as moderation_demo
    from workers.dev.demo import load_demo_graph

    graph = load_demo_graph()
    results = graph_demo.enqueue(graph) + moderation_demo.enqueue(graph)
    ResultSet(results).join_native(timeout=90, propagate=True)
    line = graph_demo.summarize(graph)
    # erin accepted (frank's request is pending); bob's 3 unread, carol's 2 read by the chain.
    assert line.startswith("alice: 1 friend(s), 3 unread message(s)"), line
    assert re.search(r"'3 new messages from bob'|'2 new messages from carol'", line), line
    assert line.endswith("group size 3"), line
    summary = moderation_demo.summarize(graph)
    assert re.fullmatch(r"grace's posts: APPROVED 0\.\d\d, FLAGGED (0\.[89]\d|1\.00) \(hidden\); review queue: 1",
                        summary), summary
