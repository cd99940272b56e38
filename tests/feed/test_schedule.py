"""The feed beat entries: names are a contract, and each expires after its interval."""
import pytest

from schedules import beat_schedule


@pytest.mark.parametrize("entry, task, seconds", [
    ("feed-score-active", "feed.score_active", 600),
    ("feed-update-trending", "feed.update_trending", 300),
    ("feed-expire-items", "feed.expire_items", 900),
])
def test_feed_beat_entries(celery_app, entry, task, seconds):
    config = beat_schedule[entry]
    assert config["task"] == task and task in celery_app.tasks
    assert config["schedule"].total_seconds() == seconds
    assert config["options"]["expires"] == seconds
    assert celery_app.amqp.router.route({}, task)["queue"].name == "feed"
