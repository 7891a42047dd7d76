"""batch-monitor: cost monitoring for Claude Message Batches versus real-time spend."""

__version__ = "0.1.0"
