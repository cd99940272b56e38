"""Observability: task metrics, the Prometheus exporter, the status probe and Flower."""
