"""The one place that reads the clock.

Everything else takes ``now`` as an argument, so tests and replays can move time freely.

Two clocks, for two purposes:

- ``utcnow()`` is *business* time: what ``now`` means for collection windows, rules, alerts
  and reports. In production it is the wall clock. For end-to-end tests only, the environment
  variable ``MONITOR_CLOCK`` (``"<origin ISO 8601>@<wall epoch seconds>x<speed>"``) makes it
  follow the Anthropic simulator's simulated time: ``origin + (wall - epoch) * speed``. The
  simulator computes its own time the same way, so both agree without talking.
- ``wallnow()`` and ``monotonic()`` are *real* time: leadership leases, job deadlines and
  shutdown grace are about processes being alive, so they never speed up.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta


@dataclass(frozen=True)
class SimulatedClock:
    """Business time running ``speed`` times faster than the wall from ``origin`` at ``epoch``."""

    origin: datetime
    epoch: float
    speed: float

    def now(self, wall: float) -> datetime:
        """Return the simulated time at the wall-clock reading ``wall``."""
        return self.origin + timedelta(seconds=(wall - self.epoch) * self.speed)

    def spec(self) -> str:
        """Return the ``MONITOR_CLOCK`` value that reproduces this clock."""
        return f"{self.origin.isoformat().replace('+00:00', 'Z')}@{self.epoch:.6f}x{self.speed:g}"


def parse_clock(spec: str) -> SimulatedClock:
    """Parse a ``MONITOR_CLOCK`` value; raise ValueError naming what is wrong."""
    try:
        origin_text, rest = spec.split("@", 1)
        epoch_text, speed_text = rest.split("x", 1)
        origin = datetime.fromisoformat(origin_text.replace("Z", "+00:00"))
        epoch, speed = float(epoch_text), float(speed_text)
    except ValueError:
        raise ValueError(
            f"MONITOR_CLOCK={spec!r}: expected '<origin ISO 8601>@<wall epoch seconds>x<speed>'"
        ) from None
    if origin.tzinfo is None or speed <= 0:
        raise ValueError(f"MONITOR_CLOCK={spec!r}: the origin needs a time zone, speed must be > 0")
    return SimulatedClock(origin.astimezone(UTC), epoch, speed)


_SIMULATED: SimulatedClock | None = (
    parse_clock(os.environ["MONITOR_CLOCK"]) if os.environ.get("MONITOR_CLOCK") else None
)


def utcnow() -> datetime:
    """Return the current business time as an aware UTC datetime."""
    if _SIMULATED is not None:
        return _SIMULATED.now(time.time())
    return datetime.now(UTC)


def speed() -> float:
    """Return how many business seconds pass per real second (1 outside simulated tests)."""
    return _SIMULATED.speed if _SIMULATED is not None else 1.0


def wallnow() -> datetime:
    """Return the real current time (for leases and deadlines), aware UTC."""
    return datetime.now(UTC)


def epoch() -> float:
    """Return the real current time as seconds since the Unix epoch (for ``MONITOR_CLOCK``)."""
    return time.time()


def monotonic() -> float:
    """Return a monotonic clock reading in seconds (for durations, never for timestamps)."""
    return time.monotonic()


def sleep(seconds: float) -> None:
    """Sleep for ``seconds`` (kept here so tests can see every wait the code makes)."""
    if seconds > 0:
        time.sleep(seconds)
