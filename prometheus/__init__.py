"""Prometheus scrape config and rules as code (``python -m prometheus.build`` writes them)."""
