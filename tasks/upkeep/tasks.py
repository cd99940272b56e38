"""Upkeep entry points: partitions, retention, soft-delete purge, stuck uploads, backups.

Every job is idempotent and safe to run twice at once: partition DDL under an
advisory lock per table, deletes of rows claimed with SKIP LOCKED, backups
named by their start time.
"""
from __future__ import annotations

from tasks.upkeep import jobs
from workers.task import job


@job("upkeep.ensure_partitions")
def ensure_partitions() -> dict:
    """Create the partitions missing ahead (and adopt rows stranded in a default partition)."""
    return jobs.ensure_partitions()


@job("upkeep.apply_retention")
def apply_retention() -> dict:
    """Retire partitions past retention whole; delete expired rows of the other tables in batches."""
    return jobs.apply_retention()


@job("upkeep.purge_soft_deleted")
def purge_soft_deleted() -> dict:
    """Hard-delete posts, comments and users soft-deleted more than PURGE_SOFT_DELETED_DAYS ago."""
    return jobs.purge_soft_deleted()


@job("upkeep.sweep_stuck_media")
def sweep_stuck_media() -> dict:
    """Re-send an upload stuck in PROCESSING or PENDING once; fail it as worker_lost the next time."""
    return jobs.sweep_stuck_media()


@job("upkeep.backup")
def backup() -> dict:
    """pg_dump -Fc, encrypted to BACKUP_KEY, rotated; restore-verified weekly."""
    return jobs.make_backup()
