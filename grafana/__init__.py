"""Grafana dashboards and provisioning as code (``python -m grafana.build`` writes them)."""
