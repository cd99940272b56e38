"""The beat schedule. Every entry carries ``expires`` equal to its interval, so a
backlog (beat running while workers are down) never piles up duplicate runs."""
import os
from datetime import timedelta


def every(seconds: float, task: str, **extra) -> dict:
    return {"task": task, "schedule": timedelta(seconds=seconds),
            "options": {"expires": seconds, **extra.pop("options", {})}, **extra}


beat_schedule = {
    # BEAT_HEARTBEAT_SECONDS shortens it for the two-beats chaos test.
    "beat-heartbeat": every(float(os.environ.get("BEAT_HEARTBEAT_SECONDS", "30")), "maintenance.beat_heartbeat"),
}
