"""Reliability: bad-message consumer, Redis transport fixes, the poison-pill guard, dead letters,
the singleton beat and enqueue-on-commit."""
