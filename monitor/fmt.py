"""Formatting for people and for JSON: each kind of value is written one way, here.

The CLI, the rules' sentences, Slack, the log notifier and the weekly report all format through
these functions, so "$1,234.50", "0.5 %", "1h30m" and "2026-11-15T00:00:00Z" read the same
everywhere. Money for JSON is a decimal string rounded half-up to the cent (``money_json``);
money for people carries a dollar sign and thousands separators (``usd``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

CENT = Decimal("0.01")
# Labels that name an alert rather than its scope (never shown as "where").
IDENTITY_LABELS = ("rule", "severity")


def to_cents(value: Decimal) -> Decimal:
    """Round a USD amount half-up to the cent (for display; storage keeps full precision)."""
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def money_json(value: Decimal | None) -> str | None:
    """Format money for JSON: a decimal string to the cent (``"1234.50"``), None stays None."""
    if value is None:
        return None
    return str(to_cents(value))


def usd(value: Decimal | float | int | str | None, *, missing: str = "-") -> str:
    """Format a USD amount for people, to the cent (``"$1,234.50"``); ``missing`` for None."""
    if value is None:
        return missing
    amount = value if isinstance(value, Decimal) else Decimal(str(value))
    cents = to_cents(amount)
    sign = "-" if cents < 0 else ""
    return f"{sign}${abs(cents):,}"


def percent(value: Decimal | float | None, *, digits: int | None = None, missing: str = "-") -> str:
    """Format a ratio as a percentage.

    With ``digits`` the number has exactly that many decimals (``"12.3 %"``); without, at most
    two and no trailing zeros (``0.005 -> "0.5 %"``), which reads better in sentences.
    """
    if value is None:
        return missing
    if digits is not None:
        return f"{value * 100:.{digits}f} %"
    text = f"{value * 100:.2f}".rstrip("0").rstrip(".")
    return f"{text} %"


def duration(value: timedelta) -> str:
    """Format a duration in the TOML syntax (``"1h30m"``, ``"7d"``, ``"0s"``)."""
    total = int(value.total_seconds())
    if total == 0:
        return "0s"
    sign = "-" if total < 0 else ""
    total = abs(total)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if total >= size:
            parts.append(f"{total // size}{unit}")
            total %= size
    return sign + "".join(parts)


# Longer than any window, retention or interval can sensibly be, and far from datetime's limits.
MAX_DURATION = timedelta(days=36500)
_DURATION_RE = re.compile(
    r"^\s*(?:(\d+)\s*d)?\s*(?:(\d+)\s*h)?\s*(?:(\d+)\s*m)?\s*(?:(\d+)\s*s)?\s*$",
    re.ASCII,  # "٣d" is not three days
)


def parse_duration(value: Any) -> timedelta:
    """Parse ``"90s"``, ``"15m"``, ``"2h"``, ``"7d"`` or combinations like ``"1h30m"``."""
    if isinstance(value, timedelta):
        return value
    if not isinstance(value, str):
        raise ValueError(
            f'a duration must be a string like "90s", "15m", "2h" or "7d", got {value!r}'
        )
    match = _DURATION_RE.match(value)
    if not value.strip() or not match or not any(match.groups()):
        raise ValueError(
            f'invalid duration {_quoted(value)}: use a number and a unit s, m, h or d, like "15m"'
        )
    try:
        # More than 12 digits is over 100 years in any unit (and int() refuses 4,300 digits).
        if any(g and len(g) > 12 for g in match.groups()):
            raise OverflowError
        days, hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
        span = timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
    except OverflowError:
        span = MAX_DURATION * 2
    if span > MAX_DURATION:
        raise ValueError(f"invalid duration {_quoted(value)}: longer than 100 years")
    return span


def _quoted(value: str) -> str:
    """Quote a refused duration in its error, cut to 60 characters."""
    text = repr(value)
    return text if len(text) <= 60 else text[:56] + "...'"


def span(value: timedelta) -> str:
    """Format a window for people: ``"24h"`` rather than ``"1d"``, ``"3d"``, ``"1h30m"``."""
    seconds = int(value.total_seconds())
    if seconds > 86400 and seconds % 86400 == 0:
        return f"{seconds // 86400}d"
    if seconds and seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    return duration(value)


def seconds(value: Decimal | float) -> str:
    """Format a number of seconds as a duration (``"1h35m"``; under a minute ``"42s"``)."""
    return span(timedelta(seconds=round(value)))


def minutes(value: float | None, *, missing: str = "-") -> str:
    """Format seconds as minutes with one decimal (``"12.5 min"``), for tables."""
    return f"{value / 60:.1f} min" if value is not None else missing


def iso(ts: datetime | None) -> str | None:
    """Format a timestamp as ISO 8601 in UTC ending in ``Z`` (None stays None)."""
    if ts is None:
        return None
    if ts.tzinfo is None:
        raise ValueError(f"naive datetime {ts!r}: every timestamp inside is aware UTC")
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z")


def day_floor(ts: datetime) -> datetime:
    """Return 00:00 of the day holding ``ts`` (in ``ts``'s own time zone; UTC inside)."""
    return ts.replace(hour=0, minute=0, second=0, microsecond=0)


def hour_floor(ts: datetime) -> datetime:
    """Return the start of the hour holding ``ts``."""
    return ts.replace(minute=0, second=0, microsecond=0)


def scope_text(labels: Mapping[str, str], *, sep: str = ", ", empty: str = "-") -> str:
    """Say where an alert applies: its labels but ``rule`` and ``severity``, sorted."""
    scope = sorted((k, v) for k, v in labels.items() if k not in IDENTITY_LABELS)
    return sep.join(f"{k}={v}" for k, v in scope) or empty


def against(value_text: str, threshold_text: str | None) -> str:
    """Write a value next to its threshold: ``"12 % (threshold < 50 %)"``."""
    if not threshold_text:
        return value_text
    return f"{value_text} (threshold {threshold_text})"


# C0 and C1 control characters (ESC starts terminal escape sequences) except tab and newline.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def terminal(text: str) -> str:
    """Make upstream text safe to print on a terminal: control characters become ``\\xNN``.

    Workload and model names come from call logs and ``custom_id``s, which anybody who can
    submit a request controls; an ESC sequence in one must not move the cursor or retitle the
    window of the person reading ``batch-monitor`` output. (Rich markup is handled separately
    by printing with ``markup=False`` or ``rich.markup.escape``.)
    """
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
