"""Celery entry points of the images family: the web tier's contract.

Each task is one call to the orchestrator (tasks/images/workflow.py). If a task
is dead-lettered for any reason, ``workflow.close_out`` fails its upload's row.
"""
from __future__ import annotations

from tasks.images import workflow
from workers.task import UuidStr, job


@job("images.process_profile_photo", on_dead_letter=workflow.close_out("profile_photo"))
def process_profile_photo(user_id: int, source_path: str) -> dict:
    """Make the four variants of a profile photo and point users.profile_image_url at the medium one."""
    return workflow.process_upload("profile_photo", user_id, source_path)


@job("images.process_post_photo", on_dead_letter=workflow.close_out("post_photo"))
def process_post_photo(post_id: UuidStr, source_path: str) -> dict:
    """Make the four variants of a post photo and point posts.image_url at the large one."""
    return workflow.process_upload("post_photo", post_id, source_path)
