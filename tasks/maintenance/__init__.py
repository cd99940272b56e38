"""Maintenance: canaries and the no-op baseline every family measures against."""
