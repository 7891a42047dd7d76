"""The API's shared formats: token-type order, RFC 3339 times, report buckets, names.

Every module of the simulator speaks in these; nothing here reads the clock or holds state.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

# Token types in the order every usage tuple in this package uses.
TOKEN_TYPES: tuple[str, ...] = (
    "uncached_input_tokens",
    "cache_creation.ephemeral_5m_input_tokens",
    "cache_creation.ephemeral_1h_input_tokens",
    "cache_read_input_tokens",
    "output_tokens",
)

_WORKLOAD = re.compile(r"^[A-Za-z]+(?:_[A-Za-z]+)*")


def iso(dt: datetime) -> str:
    """Format an aware datetime as RFC 3339 UTC with a ``Z`` (microseconds only if non-zero)."""
    dt = dt.astimezone(UTC)
    if dt.microsecond:
        return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def workload_of(custom_id: str) -> str:
    """Return the workload a custom_id names, its leading words: contentgen-12 -> contentgen."""
    match = _WORKLOAD.match(custom_id)
    return match.group(0) if match else custom_id


def context_window_of(prompt_tokens: int) -> str:
    """Return the report's context-window tier for a prompt of ``prompt_tokens``."""
    return "200k-1M" if prompt_tokens > 200_000 else "0-200k"


def model_display_name(model: str) -> str:
    """Return a human model name (``claude-sonnet-4-6`` -> ``Claude Sonnet 4.6``)."""
    parts = model.split("-")
    words = [p.capitalize() for p in parts if not p.isdigit()]
    version = ".".join(p for p in parts if p.isdigit() and len(p) < 8)
    return " ".join(words) + (f" {version}" if version else "")


def floor_time(dt: datetime, width: str) -> datetime:
    """Return the start of the ``1m``/``1h``/``1d`` bucket holding ``dt``."""
    dt = dt.astimezone(UTC)
    if width == "1m":
        return dt.replace(second=0, microsecond=0)
    if width == "1h":
        return dt.replace(minute=0, second=0, microsecond=0)
    if width == "1d":
        return dt.replace(hour=0, minute=0, second=0, microsecond=0)
    raise ValueError(f"unknown bucket width {width!r}")


WIDTHS: dict[str, timedelta] = {
    "1m": timedelta(minutes=1),
    "1h": timedelta(hours=1),
    "1d": timedelta(days=1),
}
