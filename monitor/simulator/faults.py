"""Faults: ways to make the simulator misbehave on purpose, and the CLI's fault specs.

429/500/529, slow replies (a timeout, for a client that waits less), a connection reset with
no answer, a results stream cut off (after a line or at any byte) or with a malformed line, a
report page that repeats an earlier page or has more after it but no cursor to it, the
analytics API refused, billed-price drift, late revisions and a server that echoes the
request's headers (keys included) in its error body; :func:`parse_fault` reads
``KIND[:key=value,...]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal, InvalidOperation

FAULT_KINDS = (
    "rate_limit",
    "server_error",
    "overloaded",
    "slow",
    "connection_reset",
    "cut_stream",
    "malformed_line",
    "repeat_page",
    "skip_page",
    "analytics_refused",
    "price_drift",
    "late_revision",
    "echo_headers",
)
# Faults of the report pages: they fire on the report endpoints only.
REPORT_ENDPOINTS = ("analytics.usage", "analytics.cost", "usage_report.messages", "cost_report")


@dataclass
class Fault:
    """One way for the simulator to misbehave; see the constructors below for each kind.

    ``endpoint`` limits it to one endpoint name (``batches.list``) or family (``batches``,
    ``analytics``); None means every endpoint. ``times`` makes it fire for the first N
    matching requests only (None: always); ``fired`` counts how often it did (for
    ``late_revision``: how many report rows it showed at a provisional value). ``at`` is a
    fraction of a results file (0 to 1): where ``cut_stream`` cuts it (in bytes, so possibly
    inside a line) or which line ``malformed_line`` breaks; it takes precedence over ``line``.
    """

    kind: str
    endpoint: str | None = None
    times: int | None = None
    status: int | None = None
    retry_after: float | None = None
    retry_after_ms: int | None = None
    delay: float = 0.0
    batch_id: str | None = None
    line: int = 0
    at: float | None = None
    drift: dict[str, Decimal] = field(default_factory=dict)
    fraction: Decimal = Decimal("0.8")
    lag: timedelta = timedelta(minutes=10)
    fired: int = 0

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; one of {', '.join(FAULT_KINDS)}")
        if self.at is not None and not 0 <= self.at <= 1:
            raise ValueError(f"at must be a fraction between 0 and 1, got {self.at}")

    def matches(self, endpoint: str) -> bool:
        """Return whether this fault applies to requests of ``endpoint``."""
        if self.endpoint is None:
            return True
        return endpoint == self.endpoint or endpoint.startswith(self.endpoint + ".")

    @property
    def exhausted(self) -> bool:
        """Return True once a ``times``-limited fault has fired that often."""
        return self.times is not None and self.fired >= self.times


def rate_limit(
    *,
    retry_after: float | None = 1,
    retry_after_ms: int | None = None,
    times: int | None = None,
    endpoint: str | None = None,
) -> Fault:
    """Answer 429 rate_limit_error with ``retry-after`` (seconds) and/or ``retry-after-ms``."""
    return Fault(
        "rate_limit",
        endpoint=endpoint,
        times=times,
        retry_after=retry_after,
        retry_after_ms=retry_after_ms,
    )


def server_error(*, times: int | None = None, endpoint: str | None = None) -> Fault:
    """Answer 500 api_error."""
    return Fault("server_error", endpoint=endpoint, times=times)


def echo_headers(*, times: int | None = None, endpoint: str | None = None) -> Fault:
    """Answer 400 with the request's headers (its API key among them) in the error message.

    A hostile or buggy proxy does this; the monitor must never print, log or store the key.
    """
    return Fault("echo_headers", endpoint=endpoint, times=times)


def overloaded(
    *, times: int | None = None, endpoint: str | None = None, retry_after: float | None = None
) -> Fault:
    """Answer 529 overloaded_error."""
    return Fault("overloaded", endpoint=endpoint, times=times, retry_after=retry_after)


def slow(delay: float, *, times: int | None = None, endpoint: str | None = None) -> Fault:
    """Wait ``delay`` wall-clock seconds before answering."""
    return Fault("slow", endpoint=endpoint, times=times, delay=delay)


def connection_reset(*, times: int | None = None, endpoint: str | None = None) -> Fault:
    """Reset the connection (TCP RST) once the request is read, without any answer."""
    return Fault("connection_reset", endpoint=endpoint, times=times)


def cut_stream(
    after_lines: int = 0,
    *,
    at: float | None = None,
    batch_id: str | None = None,
    times: int | None = 1,
) -> Fault:
    """Close the results stream after ``after_lines`` lines, or after the fraction ``at`` of
    its bytes (a cut anywhere, mid-line included), of one batch or any."""
    if at is None and after_lines < 1:
        raise ValueError("cut_stream needs after_lines >= 1 or at")
    return Fault(
        "cut_stream",
        endpoint="batches.results",
        batch_id=batch_id,
        line=after_lines,
        at=at,
        times=times,
    )


def malformed_line(
    line: int = 0, *, at: float | None = None, batch_id: str | None = None, times: int | None = 1
) -> Fault:
    """Replace results line ``line`` (1-based; or the line at fraction ``at`` of the file) with
    broken JSON, of one batch or any."""
    if at is None and line < 1:
        raise ValueError("malformed_line needs line >= 1 or at")
    return Fault(
        "malformed_line",
        endpoint="batches.results",
        batch_id=batch_id,
        line=line,
        at=at,
        times=times,
    )


def repeat_page(*, times: int | None = 1, endpoint: str | None = None) -> Fault:
    """Serve a report page whose cursor points back: the previous page again, with the cursor
    the client just sent as its ``next_page`` (the first page: itself, under a new cursor).

    A client that follows the cursors blindly reads rows twice, or loops forever.
    """
    return Fault("repeat_page", endpoint=endpoint, times=times)


def skip_page(*, times: int | None = 1, endpoint: str | None = None) -> Fault:
    """Serve a report page that has more after it without its cursor (``has_more: true``,
    ``next_page: null``); it fires on such a page only.

    A client that stops at the missing cursor silently loses the rest of the range.
    """
    return Fault("skip_page", endpoint=endpoint, times=times)


def analytics_refused(status: int = 403, *, times: int | None = None) -> Fault:
    """Refuse the analytics endpoints (403 permission_error or 404 not_found_error)."""
    if status not in (403, 404):
        raise ValueError("analytics_refused status must be 403 or 404")
    return Fault("analytics_refused", endpoint="analytics", status=status, times=times)


def price_drift(drift: dict[str, Decimal | str | float]) -> Fault:
    """Multiply what the cost reports bill for each model by a factor (1.05 = +5 %)."""
    return Fault("price_drift", drift={k: Decimal(str(v)) for k, v in drift.items()})


def late_revision(
    fraction: Decimal | str | float = "0.8", lag: timedelta = timedelta(minutes=10)
) -> Fault:
    """Show report buckets ending within ``lag`` of now at ``fraction`` of their final value."""
    return Fault("late_revision", fraction=Decimal(str(fraction)), lag=lag)


def parse_fault(spec: str) -> Fault:
    """Parse a CLI fault spec: ``KIND[:key=value,...]``.

    Examples: ``rate_limit:times=3,retry_after=2,endpoint=batches.list``, ``slow:delay=1.5``,
    ``cut_stream:after_lines=100,batch_id=msgbatch_...`` (or ``line=``, or ``at=0.37``),
    ``malformed_line:at=0.5``, ``connection_reset:times=2``, ``repeat_page:times=1``,
    ``analytics_refused:status=404``,
    ``price_drift:claude-sonnet-4-6=1.05``, ``late_revision:fraction=0.8,lag=600``.
    """
    kind, _, rest = spec.partition(":")
    kind = kind.strip()
    args: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        key, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"fault option {part!r} is not key=value")
        args[key.strip()] = value.strip()
    try:
        if kind == "price_drift":
            return price_drift({k: Decimal(v) for k, v in args.items()})
        fault = Fault(kind)
        for key, value in args.items():
            if key == "after_lines":  # the keyword of cut_stream(), as the README writes it
                key = "line"
            if key in ("times", "line", "status", "retry_after_ms"):
                setattr(fault, key, int(value))
            elif key in ("retry_after", "delay", "at"):
                setattr(fault, key, float(value))
            elif key == "fraction":
                fault.fraction = Decimal(value)
            elif key == "lag":
                fault.lag = timedelta(seconds=float(value))
            elif key in ("endpoint", "batch_id"):
                setattr(fault, key, value)
            else:
                raise ValueError(f"unknown fault option {key!r}")
        if fault.at is not None and not 0 <= fault.at <= 1:
            raise ValueError(f"at must be a fraction between 0 and 1, got {fault.at}")
    except (InvalidOperation, ValueError) as exc:
        raise ValueError(f"bad fault {spec!r}: {exc}") from exc
    if kind in ("cut_stream", "malformed_line"):
        fault.endpoint = "batches.results"
    if kind in ("cut_stream", "malformed_line", "repeat_page", "skip_page") and "times" not in args:
        fault.times = 1
    if kind == "analytics_refused":
        fault.endpoint = "analytics"
        fault.status = fault.status or 403
    if kind == "rate_limit" and fault.retry_after is None and fault.retry_after_ms is None:
        fault.retry_after = 1
    return fault
