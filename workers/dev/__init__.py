"""Dev-only tooling: embedded PostgreSQL and Redis, the dev runner and the demo workload.

Production modules never import this package (tests/test_layout.py keeps it so).
"""
