"""Upkeep: partitions, retention, soft-delete purges, stuck media and backups (nightly, on beat)."""
