"""The one place that reads the wall clock.

Everything else takes ``now`` as an argument, so tests and replays can move time freely.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime


def utcnow() -> datetime:
    """Return the current time as an aware UTC datetime."""
    return datetime.now(UTC)


def monotonic() -> float:
    """Return a monotonic clock reading in seconds (for durations, never for timestamps)."""
    return time.monotonic()


def sleep(seconds: float) -> None:
    """Sleep for ``seconds`` (kept here so tests can see every wait the code makes)."""
    if seconds > 0:
        time.sleep(seconds)
