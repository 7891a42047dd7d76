"""The ranges a time, a count and an amount from outside may take, checked where they enter.

Call logs, batch results, batch objects, report pages, the command line and the TOML file are
all written by someone else. A value outside these ranges is a bad item, reported with where it
came from (a file and line, a batch id, a report bucket) and left out, while the rest is kept:
a year-9999 timestamp or a token count of 10**30 must never reach the store, where it would
overflow a date or a column and wedge the source on every run.

The ranges are far wider than anything real and far inside what the store holds: times from
2000 to 2999 (hour and day arithmetic never overflows), counts up to 10**12 (a sum of a million
of them, 10**18, still fits a 64-bit column, whose limit is 9.2 * 10**18: an hour of call-log
lines or a 100,000-request batch at the limit cannot overflow its bucket), amounts up to a
trillion dollars.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(3000, 1, 1, tzinfo=UTC)  # exclusive
MAX_COUNT = 10**12
MAX_USD = Decimal(10**12)
TIME_RANGE = "between 2000-01-01 and 2999-12-31 (UTC)"


class OutOfRange(ValueError):
    """A value from outside is not a time, count or amount this monitor can keep."""


def time_ok(at: datetime) -> bool:
    """Return whether an aware ``at`` lies in the range every stored time takes."""
    return EARLIEST <= at < LATEST


def instant(value: Any, what: str) -> datetime:
    """Return ``value`` (an aware or naive datetime, or ISO 8601 text) as an aware UTC time.

    A time without a zone is UTC. Raise OutOfRange naming ``what`` when it is not a time or
    lies outside the range.
    """
    if isinstance(value, datetime):
        at = value
    elif isinstance(value, str):
        try:
            at = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise OutOfRange(f"{what}: not an ISO 8601 time: {show(value)}") from None
    else:
        raise OutOfRange(f"{what}: not a time: {show(value)}")
    at = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    if not time_ok(at):
        raise OutOfRange(f"{what}: {show(value)} is not {TIME_RANGE}")
    return at


def optional_instant(value: Any, what: str) -> datetime | None:
    """Return :func:`instant` of ``value``, or None for None."""
    return None if value is None else instant(value, what)


def count(value: Any, what: str) -> int:
    """Return ``value`` as a count: a whole number from 0 to 10**12 (None counts 0).

    Raise OutOfRange naming ``what`` otherwise (a bool, a fraction, text, a negative number).
    """
    if value is None:
        return 0
    if type(value) is float and value.is_integer():
        value = int(value)  # JSON writers that print 12.0 for 12
    if type(value) is not int:
        raise OutOfRange(f"{what}: must be a whole number, got {show(value)}")
    if not 0 <= value <= MAX_COUNT:
        raise OutOfRange(f"{what}: {value} is not between 0 and {MAX_COUNT:,}")
    return value


def usd(value: Any, what: str) -> Decimal:
    """Return ``value`` as exact money no larger than a trillion dollars either way."""
    try:
        amount = value if isinstance(value, Decimal) else Decimal(str(value))
    except (InvalidOperation, ValueError):
        raise OutOfRange(f"{what}: not an amount: {show(value)}") from None
    if isinstance(value, bool) or not amount.is_finite() or abs(amount) > MAX_USD:
        raise OutOfRange(f"{what}: {show(value)} is not an amount within ${MAX_USD:,}")
    return amount


def finite(value: Any, what: str, *, most: float) -> float:
    """Return ``value`` as a finite number from 0 to ``most``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise OutOfRange(f"{what}: must be a number, got {show(value)}")
    if not math.isfinite(value) or not 0 <= value <= most:
        raise OutOfRange(f"{what}: {show(value)} is not between 0 and {most:g}")
    return float(value)


def show(value: Any) -> str:
    """Return ``value`` as it reads in an error message: its repr, cut to 60 characters."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
