"""A faithful local simulator of the parts of the Anthropic API this product reads.

It serves, over plain HTTP on 127.0.0.1, what the real ``anthropic`` SDK calls (shapes from
``shared/reference/anthropic-api.md``):

- Message Batches: list (``after_id``/``before_id`` paging), retrieve, create, cancel, delete,
  and the results JSONL, streamed with chunked transfer encoding so a million-line file is
  served with flat memory;
- the Usage and Cost Analytics API (beta): ``/v1/organizations/analytics/{usage,cost}``;
- the legacy Admin reports: ``/v1/organizations/usage_report/messages`` and ``/cost_report``.

Everything it shows is a function of the :class:`~monitor.scenarios.Scenario` and the
simulator's own clock (``set_now``/``advance``, or ``speed`` times wall time). Faults
(:class:`Fault`) make it misbehave on purpose: 429/500/529, slow replies, a results stream cut
off or with a malformed line, the analytics API refused, billed-price drift and late revisions.

Usage in a test::

    with SimulatorServer(build_scenario("small")) as sim:
        client = anthropic.Anthropic(api_key=sim.scenario.workspaces[0].api_key,
                                     base_url=sim.url, max_retries=0)
        ...
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import socket
import tempfile
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson

from monitor import clock
from monitor.scenarios import (
    TOKEN_TYPES,
    WIDTHS,
    ApiKey,
    BatchSpec,
    Scenario,
    UsageEvent,
    floor_time,
    iso,
    model_display_name,
)

ANALYTICS_BETA = "analytics-usage-cost-2026-08-24"
# The analytics API holds nothing earlier: older history is only in the legacy reports.
ANALYTICS_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
CHUNK_BYTES = 64 * 1024

FAULT_KINDS = (
    "rate_limit",
    "server_error",
    "overloaded",
    "slow",
    "cut_stream",
    "malformed_line",
    "analytics_refused",
    "price_drift",
    "late_revision",
)
ENDPOINTS = (
    "batches.list",
    "batches.create",
    "batches.retrieve",
    "batches.cancel",
    "batches.delete",
    "batches.results",
    "analytics.usage",
    "analytics.cost",
    "usage_report.messages",
    "cost_report",
)

_ZERO = Decimal(0)
_HUNDRED = Decimal(100)


# --- faults -------------------------------------------------------------------------------


@dataclass
class Fault:
    """One way for the simulator to misbehave; see the constructors below for each kind.

    ``endpoint`` limits it to one endpoint name (``batches.list``) or family (``batches``,
    ``analytics``); None means every endpoint. ``times`` makes it fire for the first N
    matching requests only (None: always); ``fired`` counts how often it did.
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
    drift: dict[str, Decimal] = field(default_factory=dict)
    fraction: Decimal = Decimal("0.8")
    lag: timedelta = timedelta(minutes=10)
    fired: int = 0

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; one of {', '.join(FAULT_KINDS)}")

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


def overloaded(
    *, times: int | None = None, endpoint: str | None = None, retry_after: float | None = None
) -> Fault:
    """Answer 529 overloaded_error."""
    return Fault("overloaded", endpoint=endpoint, times=times, retry_after=retry_after)


def slow(delay: float, *, times: int | None = None, endpoint: str | None = None) -> Fault:
    """Wait ``delay`` wall-clock seconds before answering."""
    return Fault("slow", endpoint=endpoint, times=times, delay=delay)


def cut_stream(after_lines: int, *, batch_id: str | None = None, times: int | None = 1) -> Fault:
    """Close the results stream after ``after_lines`` lines (of one batch, or any)."""
    return Fault(
        "cut_stream", endpoint="batches.results", batch_id=batch_id, line=after_lines, times=times
    )


def malformed_line(line: int, *, batch_id: str | None = None, times: int | None = 1) -> Fault:
    """Replace results line ``line`` (1-based) with broken JSON (of one batch, or any)."""
    return Fault(
        "malformed_line", endpoint="batches.results", batch_id=batch_id, line=line, times=times
    )


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
    ``cut_stream:line=100,batch_id=msgbatch_...``, ``analytics_refused:status=404``,
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
            if key in ("times", "line", "status", "retry_after_ms"):
                setattr(fault, key, int(value))
            elif key in ("retry_after", "delay"):
                setattr(fault, key, float(value))
            elif key == "fraction":
                fault.fraction = Decimal(value)
            elif key == "lag":
                fault.lag = timedelta(seconds=float(value))
            elif key in ("endpoint", "batch_id"):
                setattr(fault, key, value)
            else:
                raise ValueError(f"unknown fault option {key!r}")
    except (InvalidOperation, ValueError) as exc:
        raise ValueError(f"bad fault {spec!r}: {exc}") from exc
    if kind in ("cut_stream", "malformed_line"):
        fault.endpoint = "batches.results"
        if "times" not in args:
            fault.times = 1
    if kind == "analytics_refused":
        fault.endpoint = "analytics"
        fault.status = fault.status or 403
    if kind == "rate_limit" and fault.retry_after is None and fault.retry_after_ms is None:
        fault.retry_after = 1
    return fault


# --- errors -------------------------------------------------------------------------------


class ApiError(Exception):
    """An error answer: HTTP status, error type and message (the API's error shape)."""

    def __init__(
        self, status: int, error_type: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message
        self.headers = headers or {}


def _bad(message: str) -> ApiError:
    return ApiError(400, "invalid_request_error", message)


@dataclass(frozen=True)
class _Principal:
    admin: bool
    key: ApiKey | None = None


# --- query helpers ------------------------------------------------------------------------


class _Query:
    """Query parameters, with arrays sent as ``name[]=a&name[]=b``."""

    def __init__(self, raw: str) -> None:
        self.raw = parse_qs(raw, keep_blank_values=True)

    def one(self, name: str) -> str | None:
        values = self.raw.get(name)
        return values[-1] if values else None

    def many(self, name: str) -> list[str]:
        return [*self.raw.get(f"{name}[]", []), *self.raw.get(name, [])]

    def has(self, name: str) -> bool:
        return f"{name}[]" in self.raw or name in self.raw

    def names(self) -> set[str]:
        return {k[:-2] if k.endswith("[]") else k for k in self.raw}

    def time(self, name: str, *, required: bool = False) -> datetime | None:
        value = self.one(name)
        if value is None or value == "":
            if required:
                raise _bad(f"{name}: Field required")
            return None
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise _bad(f"{name}: Input should be a valid RFC 3339 datetime") from None
        if parsed.tzinfo is None:
            raise _bad(f"{name}: Input should have timezone info")
        return parsed.astimezone(UTC)

    def integer(self, name: str, default: int, lo: int, hi: int) -> int:
        value = self.one(name)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            raise _bad(f"{name}: Input should be a valid integer") from None
        if not lo <= number <= hi:
            raise _bad(f"{name}: Input should be between {lo} and {hi}")
        return number


def _page_token(offset: int) -> str:
    return "page_" + base64.urlsafe_b64encode(str(offset).encode()).decode().rstrip("=")


def _page_offset(token: str | None) -> int:
    if not token:
        return 0
    try:
        raw = token.removeprefix("page_")
        return int(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode())
    except (ValueError, UnicodeDecodeError):
        raise _bad("page: invalid page token") from None


def cents(usd: Decimal) -> str:
    """Format a USD amount as the reports do: a decimal string of (fractional) cents."""
    value = usd * _HUNDRED
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"


def _scale_int(value: int, fraction: Decimal) -> int:
    return int(Decimal(value) * fraction)


# --- report aggregation -------------------------------------------------------------------

_USAGE_GROUPS = (
    "actor",
    "actor_type",
    "agent_id",
    "api_key_id",
    "claude_tag_category",
    "claude_tag_user_id",
    "context_window",
    "deployment_id",
    "environment_id",
    "inference_geo",
    "model",
    "organization_id",
    "product",
    "rbac_group_id",
    "service_tier",
    "session_id",
    "slack_channel_id",
    "speed",
    "user_profile_id",
    "workspace_id",
)
_COST_FANOUT = ("cost_type", "token_type")
_COST_GROUPS = (*_USAGE_GROUPS, *_COST_FANOUT)

# Filters the simulated usage can match, by query name -> function of an event.
_FILTERS: dict[str, Callable[[UsageEvent], str | None]] = {
    "products": lambda e: e.product,
    "service_tiers": lambda e: e.service_tier,
    "models": lambda e: e.model,
    "workspace_ids": lambda e: e.workspace_id,
    "api_key_ids": lambda e: e.api_key_id,
    "context_windows": lambda e: e.context_window,
    "inference_geos": lambda e: e.inference_geo or "not_available",
    "speeds": lambda e: "standard",
    "actor_types": lambda e: "api_actor",
    "actor_ids": lambda e: e.api_key_id,
}
# Filters on dimensions the simulated usage never has (sessions, Slack, RBAC...): any value
# given matches nothing, as it would for an org that does not use those products.
_EMPTY_FILTERS = (
    "agent_ids",
    "claude_tag_categories",
    "claude_tag_user_ids",
    "deployment_ids",
    "environment_ids",
    "organization_ids",
    "rbac_group_ids",
    "session_ids",
    "slack_channel_ids",
    "user_profile_ids",
)
_LEGACY_FILTERS = {
    "api_key_ids": "api_key_ids",
    "workspace_ids": "workspace_ids",
    "models": "models",
    "service_tiers": "service_tiers",
    "context_window": "context_windows",
    "inference_geos": "inference_geos",
    "speeds": "speeds",
}
_LEGACY_EMPTY = ("account_ids", "service_account_ids")
_LEGACY_USAGE_GROUPS = (
    "api_key_id",
    "workspace_id",
    "model",
    "service_tier",
    "context_window",
    "inference_geo",
    "speed",
    "account_id",
    "service_account_id",
)
_LEGACY_LIMITS = {"1d": (7, 31), "1h": (24, 168), "1m": (60, 1440)}
_TOKEN_LABELS = {
    "uncached_input_tokens": "Input Tokens",
    "output_tokens": "Output Tokens",
    "cache_read_input_tokens": "Cache Read Input Tokens",
    "cache_creation.ephemeral_5m_input_tokens": "5m Cache Write Input Tokens",
    "cache_creation.ephemeral_1h_input_tokens": "1h Cache Write Input Tokens",
}


def _group_value(e: UsageEvent, dim: str, *, legacy: bool, default_ws: str) -> Any:
    """Return the value of report dimension ``dim`` for an event (hashable)."""
    if dim == "product":
        return e.product
    if dim == "model":
        return e.model
    if dim == "service_tier":
        return e.service_tier
    if dim == "workspace_id":
        # The legacy reports show the default workspace as null; analytics tags it.
        return None if legacy and e.workspace_id == default_ws else e.workspace_id
    if dim == "api_key_id":
        return e.api_key_id
    if dim == "context_window":
        return e.context_window
    if dim == "inference_geo":
        if e.inference_geo is None:
            return "not_available" if legacy else None
        return e.inference_geo
    if dim == "speed":
        return "standard"
    if dim == "actor":
        return ("api_actor", e.api_key_id)
    if dim == "actor_type":
        return "api_actor"
    return None


def _group_json(dims: Sequence[str], key: Sequence[Any], every: Sequence[str]) -> dict[str, Any]:
    values = dict(zip(dims, key, strict=True))
    out: dict[str, Any] = {}
    for dim in every:
        value = values.get(dim)
        if dim == "actor" and value is not None:
            value = {"type": value[0], "api_key_id": value[1]}
        out[dim] = value
    return out


@dataclass
class _Acc:
    """Accumulated tokens, requests and billed amounts of one report row."""

    tokens: list[int] = field(default_factory=lambda: [0, 0, 0, 0, 0])
    web_searches: int = 0
    requests: int = 0
    amounts: list[Decimal] = field(default_factory=lambda: [_ZERO] * 6)

    def add(self, e: UsageEvent, factor: Decimal) -> None:
        for i in range(5):
            self.tokens[i] += e.tokens[i]
        self.web_searches += e.web_searches
        self.requests += e.requests
        for i in range(6):
            self.amounts[i] += e.amounts[i] * factor

    def scaled(self, fraction: Decimal) -> _Acc:
        return _Acc(
            [_scale_int(t, fraction) for t in self.tokens],
            _scale_int(self.web_searches, fraction),
            _scale_int(self.requests, fraction),
            [a * fraction for a in self.amounts],
        )

    @property
    def total_tokens(self) -> int:
        return sum(self.tokens)

    @property
    def amount(self) -> Decimal:
        return sum(self.amounts, _ZERO)

    def usage_json(self, *, with_requests: bool) -> dict[str, Any]:
        t = self.tokens
        out: dict[str, Any] = {
            "uncached_input_tokens": t[0],
            "cache_creation": {
                "ephemeral_1h_input_tokens": t[2],
                "ephemeral_5m_input_tokens": t[1],
            },
            "cache_read_input_tokens": t[3],
            "output_tokens": t[4],
        }
        if with_requests:
            out["requests"] = self.requests
        out["server_tool_use"] = {"web_search_requests": self.web_searches}
        if with_requests:
            out["total_tokens"] = self.total_tokens
        return out


def _cost_parts(acc: _Acc, fanout: Sequence[str]) -> list[tuple[str | None, str | None, Decimal]]:
    """Split a row's cost into ``(cost_type, token_type, usd)`` fan-out rows (non-zero only)."""
    by_type = list(zip(TOKEN_TYPES, acc.amounts[:5], strict=True))
    web = acc.amounts[5]
    tokens_total = sum(acc.amounts[:5], _ZERO)
    parts: list[tuple[str | None, str | None, Decimal]] = []
    if "token_type" in fanout:
        parts = [("tokens", name, usd) for name, usd in by_type if usd]
        if web:
            # token_type alone has no row for non-token cost; keep it so rows sum to the total.
            parts.append(("web_search" if "cost_type" in fanout else None, None, web))
    elif "cost_type" in fanout:
        if tokens_total:
            parts.append(("tokens", None, tokens_total))
        if web:
            parts.append(("web_search", None, web))
    else:
        parts = [(None, None, acc.amount)]
    return parts


# --- the HTTP layer -----------------------------------------------------------------------


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    sim: SimulatorServer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "anthropic-simulator"
    sys_version = ""
    # Idle keep-alive connections are dropped after this long (seconds).
    timeout = 60
    server: _HTTPServer

    def do_GET(self) -> None:
        self.server.sim._dispatch(self, "GET")

    def do_POST(self) -> None:
        self.server.sim._dispatch(self, "POST")

    def do_DELETE(self) -> None:
        self.server.sim._dispatch(self, "DELETE")

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: tests and the demo print what matters themselves."""


_BATCH_PATH = re.compile(r"^/v1/messages/batches/([A-Za-z0-9_-]+)(/cancel|/results)?$")


class SimulatorServer:
    """The Anthropic API simulator: an HTTP server over a scenario, with its own clock.

    ``now`` is the simulated time at start (default: the scenario's end, so all history is
    visible; with ``speed``, the scenario's start). With ``speed`` X, simulated time runs X
    times as fast as wall time. ``port=0`` picks a free port; read it back from ``port``/``url``.
    """

    def __init__(
        self,
        scenario: Scenario | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        now: datetime | None = None,
        speed: float | None = None,
        faults: Iterable[Fault] = (),
    ) -> None:
        if scenario is None:
            from monitor.scenarios import build_scenario

            scenario = build_scenario("small")
        self.scenario = scenario
        self.host = host
        self.speed = speed
        self.faults: list[Fault] = list(faults)
        self.request_counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        start = now or (scenario.start if speed else scenario.end)
        self._base_sim = start.astimezone(UTC)
        self._base_mono = clock.monotonic()
        self._request_seq = 0
        self._results_dir: str | None = None
        self._httpd = _HTTPServer((host, port), _Handler)
        self._httpd.sim = self
        self._thread: threading.Thread | None = None

    # -- lifecycle

    @property
    def port(self) -> int:
        """Return the bound TCP port."""
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """Return the base URL, e.g. ``http://127.0.0.1:PORT`` (pass it as ``base_url``)."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> SimulatorServer:
        """Serve in a background daemon thread; return self."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._httpd.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"anthropic-simulator:{self.port}",
                daemon=True,
            )
            self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving, close the socket and join the server thread."""
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=10)
            self._thread = None
        self._httpd.server_close()
        if self._results_dir is not None:
            shutil.rmtree(self._results_dir, ignore_errors=True)
            self._results_dir = None

    def __enter__(self) -> SimulatorServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- simulated time

    def now(self) -> datetime:
        """Return the simulated now."""
        with self._lock:
            if self.speed:
                elapsed = (clock.monotonic() - self._base_mono) * self.speed
                return self._base_sim + timedelta(seconds=elapsed)
            return self._base_sim

    def set_now(self, now: datetime) -> None:
        """Set the simulated now (in speed mode, time runs on from there)."""
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        with self._lock:
            self._base_sim = now.astimezone(UTC)
            self._base_mono = clock.monotonic()

    def advance(self, delta: timedelta) -> datetime:
        """Move the simulated now forward by ``delta``; return the new now."""
        self.set_now(self.now() + delta)
        return self.now()

    # -- faults

    def add_fault(self, fault: Fault) -> Fault:
        """Add a fault at runtime; return it (its ``fired`` counts how often it fired)."""
        with self._lock:
            self.faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        """Remove every fault."""
        with self._lock:
            self.faults = []

    def reset_counts(self) -> None:
        """Zero ``request_counts``."""
        with self._lock:
            self.request_counts.clear()

    def _take(self, kind: str, endpoint: str, batch_id: str | None = None) -> Fault | None:
        """Return a live fault of ``kind`` for this request and count it as fired."""
        with self._lock:
            for fault in self.faults:
                if fault.kind != kind or not fault.matches(endpoint) or fault.exhausted:
                    continue
                if fault.batch_id is not None and fault.batch_id != batch_id:
                    continue
                fault.fired += 1
                return fault
        return None

    def _state_faults(self, kind: str) -> list[Fault]:
        with self._lock:
            return [f for f in self.faults if f.kind == kind]

    # -- dispatch

    def _next_request_id(self) -> str:
        with self._lock:
            self._request_seq += 1
            seq = self._request_seq
        return f"req_sim{self.port:05d}{seq:013d}"

    def _dispatch(self, h: _Handler, method: str) -> None:
        request_id = self._next_request_id()
        split = urlsplit(h.path)
        path = split.path.rstrip("/") or "/"
        query = _Query(split.query)
        body = b""
        length = int(h.headers.get("Content-Length") or 0)
        if length:
            body = h.rfile.read(length)
        endpoint, batch_id = _route(method, path)
        with self._lock:
            self.request_counts[endpoint] += 1
        workspace_header: str | None = None
        try:
            delay = self._take("slow", endpoint)
            if delay is not None:
                clock.sleep(delay.delay)
            if endpoint == "not_found":
                raise ApiError(404, "not_found_error", f"Not found: {method} {path}")
            principal = self._authenticate(h)
            self._inject_errors(endpoint)
            now = self.now()
            if endpoint.startswith("batches."):
                key = self._workspace_key(h, principal)
                workspace_header = key.workspace_id
                if endpoint == "batches.results":
                    assert batch_id is not None
                    self._stream_results(h, key, batch_id, now, request_id)
                    return
                status, payload = self._batches(h, endpoint, key, batch_id, query, body, now)
            else:
                if not principal.admin:
                    raise ApiError(
                        401,
                        "authentication_error",
                        "invalid x-api-key: this endpoint needs an Admin API key "
                        "(sk-ant-admin...); workspace API keys cannot read organization reports",
                    )
                status, payload = self._reports(h, endpoint, query, now)
        except ApiError as exc:
            status = exc.status
            payload = {
                "type": "error",
                "error": {"type": exc.error_type, "message": exc.message},
                "request_id": request_id,
            }
            self._send_json(h, status, payload, request_id, workspace_header, exc.headers)
            return
        except Exception as exc:  # a simulator bug: answer 500 and show it, don't hang up
            import traceback

            traceback.print_exc()
            payload = {
                "type": "error",
                "error": {"type": "api_error", "message": f"simulator error: {exc!r}"},
                "request_id": request_id,
            }
            self._send_json(h, 500, payload, request_id, workspace_header)
            return
        self._send_json(h, status, payload, request_id, workspace_header)

    def _authenticate(self, h: _Handler) -> _Principal:
        secret = h.headers.get("x-api-key")
        auth = h.headers.get("Authorization") or ""
        if not secret and auth.lower().startswith("bearer "):
            secret = auth[7:].strip()
        if secret and secret == self.scenario.admin_key:
            return _Principal(admin=True)
        key = self.scenario.key_for_secret(secret) if secret else None
        if key is None:
            raise ApiError(401, "authentication_error", "invalid x-api-key")
        return _Principal(admin=False, key=key)

    def _workspace_key(self, h: _Handler, principal: _Principal) -> ApiKey:
        if principal.admin or principal.key is None:
            # UNVERIFIED in the reference; we take the conservative view that an Admin key
            # cannot act on Message Batches, so collectors hold one key per workspace.
            raise ApiError(
                403,
                "permission_error",
                "Admin API keys cannot be used with the Message Batches API; "
                "use an API key of the workspace",
            )
        wanted = h.headers.get("anthropic-workspace-id")
        if wanted and wanted != principal.key.workspace_id:
            raise ApiError(
                403,
                "permission_error",
                f"This API key belongs to workspace {principal.key.workspace_id}, not {wanted}",
            )
        return principal.key

    def _inject_errors(self, endpoint: str) -> None:
        fault = self._take("analytics_refused", endpoint)
        if fault is not None:
            if fault.status == 404:
                raise ApiError(404, "not_found_error", "Not found")
            raise ApiError(
                403,
                "permission_error",
                "Your organization does not have access to the Usage and Cost Analytics API",
            )
        fault = self._take("rate_limit", endpoint)
        if fault is not None:
            headers = {}
            if fault.retry_after is not None:
                value = fault.retry_after
                headers["retry-after"] = str(int(value)) if value == int(value) else str(value)
            if fault.retry_after_ms is not None:
                headers["retry-after-ms"] = str(fault.retry_after_ms)
            raise ApiError(
                429,
                "rate_limit_error",
                "Number of requests has exceeded your per-minute rate limit "
                "(https://docs.claude.com/en/api/rate-limits); see the response headers for "
                "current usage. Please try again later.",
                headers,
            )
        fault = self._take("overloaded", endpoint)
        if fault is not None:
            headers = {}
            if fault.retry_after is not None:
                headers["retry-after"] = str(fault.retry_after)
            raise ApiError(529, "overloaded_error", "Overloaded", headers)
        if self._take("server_error", endpoint) is not None:
            raise ApiError(500, "api_error", "Internal server error")

    def _send_json(
        self,
        h: _Handler,
        status: int,
        payload: Any,
        request_id: str,
        workspace_id: str | None,
        extra: dict[str, str] | None = None,
    ) -> None:
        data = orjson.dumps(payload)
        try:
            h.send_response(status)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(data)))
            h.send_header("request-id", request_id)
            if workspace_id:
                h.send_header("anthropic-workspace-id", workspace_id)
            for name, value in (extra or {}).items():
                h.send_header(name, value)
            h.end_headers()
            h.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            h.close_connection = True

    # -- Message Batches

    def _base_url(self, h: _Handler) -> str:
        host = h.headers.get("Host")
        return f"http://{host}" if host else self.url

    def _visible_spec(self, key: ApiKey, batch_id: str | None, now: datetime) -> BatchSpec:
        spec = self.scenario.batch_spec(batch_id or "")
        if (
            spec is None
            or spec.workspace_id != key.workspace_id
            or spec.created_at > now
            or (spec.deleted_at is not None and spec.deleted_at <= now)
        ):
            # Another workspace's batch is indistinguishable from a missing one.
            raise ApiError(404, "not_found_error", f"No batch found with id {batch_id!r}")
        return spec

    def _batches(
        self,
        h: _Handler,
        endpoint: str,
        key: ApiKey,
        batch_id: str | None,
        query: _Query,
        body: bytes,
        now: datetime,
    ) -> tuple[int, Any]:
        base = self._base_url(h)
        scenario = self.scenario
        if endpoint == "batches.list":
            return 200, self._list(key, query, now, base)
        if endpoint == "batches.create":
            try:
                data = orjson.loads(body or b"null")
            except orjson.JSONDecodeError:
                raise _bad("Request body is not valid JSON") from None
            if not isinstance(data, dict):
                raise _bad("Request body must be a JSON object")
            try:
                spec = scenario.create_batch(key.workspace_id, key.id, data.get("requests"), now)
            except ValueError as exc:
                raise _bad(str(exc)) from None
            return 200, scenario.view(spec, now).to_api(base)
        spec = self._visible_spec(key, batch_id, now)
        if endpoint == "batches.cancel":
            scenario.cancel_batch(spec.id, now)
        elif endpoint == "batches.delete":
            try:
                scenario.delete_batch(spec.id, now)
            except ValueError as exc:
                raise _bad(str(exc)) from None
            return 200, {"id": spec.id, "type": "message_batch_deleted"}
        return 200, scenario.view(spec, now).to_api(base)

    def _list(self, key: ApiKey, query: _Query, now: datetime, base: str) -> dict[str, Any]:
        limit = query.integer("limit", 20, 1, 1000)
        after, before = query.one("after_id"), query.one("before_id")
        if after and before:
            raise _bad("Only one of after_id and before_id may be given")
        specs = self.scenario.visible_batches(key.workspace_id, now)
        ids = [s.id for s in specs]
        if after:
            if after not in ids:
                raise _bad(f"after_id: no batch found with id {after!r}")
            pos = ids.index(after) + 1
            page = specs[pos : pos + limit]
            has_more = pos + limit < len(specs)
        elif before:
            if before not in ids:
                raise _bad(f"before_id: no batch found with id {before!r}")
            pos = ids.index(before)
            lo = max(0, pos - limit)
            page = specs[lo:pos]
            has_more = lo > 0
        else:
            page = specs[:limit]
            has_more = limit < len(specs)
        data = [self.scenario.view(s, now).to_api(base) for s in page]
        return {
            "data": data,
            "has_more": has_more,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
        }

    def prepare_results(self, batch_id: str) -> None:
        """Render a batch's results file ahead of the first download (benchmarks warm up)."""
        spec = self.scenario.batch_spec(batch_id)
        if spec is None:
            raise KeyError(batch_id)
        if not os.path.exists(self._results_path(spec)):
            self._render_results(spec)

    def _results_path(self, spec: BatchSpec) -> str:
        """Return where an ended batch's rendered results file lives (it may not exist yet)."""
        with self._lock:
            if self._results_dir is None:
                self._results_dir = tempfile.mkdtemp(prefix="anthropic-sim-results-")
            return os.path.join(self._results_dir, f"{spec.id}.jsonl")

    def _render_results(self, spec: BatchSpec, sink: Callable[[bytes], None] | None = None) -> str:
        """Generate a batch's results in chunks, to a file (and to ``sink`` as they come).

        The first download streams while it renders, so it starts at once; later downloads
        read the file. A download that breaks off leaves no file behind.
        """
        path = self._results_path(spec)
        tmp = f"{path}.{threading.get_ident()}.part"
        try:
            with open(tmp, "wb") as fh:
                buf: list[bytes] = []
                size = 0
                for line in self.scenario.result_lines(spec):
                    buf.append(line)
                    size += len(line)
                    if size >= CHUNK_BYTES:
                        chunk = b"".join(buf)
                        fh.write(chunk)
                        if sink is not None:
                            sink(chunk)
                        buf, size = [], 0
                chunk = b"".join(buf)
                fh.write(chunk)
                if sink is not None and chunk:
                    sink(chunk)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        return path

    def _stream_results(
        self, h: _Handler, key: ApiKey, batch_id: str, now: datetime, request_id: str
    ) -> None:
        spec = self._visible_spec(key, batch_id, now)
        view = self.scenario.view(spec, now)
        if view.ended_at is None:
            raise ApiError(
                404,
                "not_found_error",
                f"Results for batch {batch_id} are not available until processing has ended",
            )
        if view.archived_at is not None:
            raise ApiError(
                404,
                "not_found_error",
                f"Results for batch {batch_id} are no longer available (archived)",
            )
        cut = self._take("cut_stream", "batches.results", batch_id)
        bad = self._take("malformed_line", "batches.results", batch_id)
        cut_after = cut.line if cut is not None else None
        bad_line = bad.line if bad is not None else None
        try:
            h.send_response(200)
            h.send_header("Content-Type", "application/binary")
            h.send_header("Transfer-Encoding", "chunked")
            h.send_header("request-id", request_id)
            h.send_header("anthropic-workspace-id", key.workspace_id)
            h.end_headers()
            if cut_after is None and bad_line is None:
                # Results are rendered to disk once, while the first download streams, so
                # repeated downloads (benchmarks, retries) cost I/O only; memory stays flat.
                path = self._results_path(spec)
                if os.path.exists(path):
                    with open(path, "rb") as fh:
                        while chunk := fh.read(CHUNK_BYTES):
                            _write_chunk(h, chunk)
                else:
                    self._render_results(spec, sink=lambda chunk: _write_chunk(h, chunk))
                h.wfile.write(b"0\r\n\r\n")
                return
            buf: list[bytes] = []
            size = 0
            for lineno, line in enumerate(self.scenario.result_lines(spec), start=1):
                if lineno == bad_line:
                    line = line[: max(10, len(line) // 2)].rstrip(b"\n") + b"\n"
                buf.append(line)
                size += len(line)
                if cut_after is not None and lineno >= cut_after:
                    _write_chunk(h, b"".join(buf))
                    # Drop the connection without the closing chunk: the client sees a
                    # truncated body, as when a real download breaks midway.
                    h.close_connection = True
                    h.wfile.flush()
                    h.connection.shutdown(socket.SHUT_RDWR)
                    return
                if size >= CHUNK_BYTES:
                    _write_chunk(h, b"".join(buf))
                    buf, size = [], 0
            if buf:
                _write_chunk(h, b"".join(buf))
            h.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError, OSError):
            h.close_connection = True

    # -- reports

    def _reports(self, h: _Handler, endpoint: str, query: _Query, now: datetime) -> tuple[int, Any]:
        if endpoint.startswith("analytics."):
            betas = {b.strip() for b in (h.headers.get("anthropic-beta") or "").split(",")}
            if ANALYTICS_BETA not in betas:
                raise _bad(
                    f"This endpoint is in beta: send the header anthropic-beta: {ANALYTICS_BETA}"
                )
            return 200, self.analytics(endpoint.split(".")[1], query, now)
        if endpoint == "usage_report.messages":
            return 200, self.legacy_usage(query, now)
        return 200, self.legacy_cost(query, now)

    def _drift(self) -> dict[str, Decimal]:
        out: dict[str, Decimal] = {}
        for fault in self._state_faults("price_drift"):
            for model, factor in fault.drift.items():
                out[model] = out.get(model, Decimal(1)) * factor
        return out

    def _revision(self, bucket_end: datetime, now: datetime) -> Decimal | None:
        """Return the fraction a still-being-revised bucket shows, or None if final."""
        for fault in self._state_faults("late_revision"):
            if bucket_end > now - fault.lag:
                return fault.fraction
        return None

    def _events(
        self,
        now: datetime,
        lo: datetime,
        hi: datetime,
        query: _Query,
        filters: dict[str, str],
        empty: Sequence[str],
        *,
        cost: bool,
    ) -> list[UsageEvent]:
        """Return events in ``[lo, hi)`` passing the query's filters (billed ones for cost)."""
        for name in empty:
            if any(v != "" for v in query.many(name)):
                return []
        wanted: list[tuple[Callable[[UsageEvent], str | None], set[str]]] = []
        for param, fname in filters.items():
            if query.has(param):
                wanted.append((_FILTERS[fname], set(query.many(param))))
        out = []
        for e in self.scenario.usage_events(now):
            if not lo <= e.at < hi:
                continue
            if cost and e.service_tier == "priority":
                continue  # the cost reports never include Priority Tier
            if all(get(e) in values for get, values in wanted):
                out.append(e)
        return out

    def analytics(self, kind: str, query: _Query, now: datetime) -> dict[str, Any]:
        """Answer ``/v1/organizations/analytics/{usage,cost}`` (kind ``usage`` or ``cost``)."""
        cost = kind == "cost"
        start = query.time("starting_at", required=True)
        assert start is not None
        if start < ANALYTICS_EPOCH:
            raise _bad(
                "starting_at must be no earlier than 2026-01-01T00:00:00Z; use the legacy "
                "usage and cost report endpoints for earlier data"
            )
        if start < now - timedelta(days=365):
            raise _bad("starting_at must be within the last 365 days")
        width = query.one("time_bucket_width")
        if width is not None and width not in WIDTHS:
            raise _bad("time_bucket_width: Input should be '1d', '1h' or '1m'")
        end = query.time("ending_at")
        if width and end is None:
            raise _bad("ending_at is required when time_bucket_width is set")
        if end is None:
            end = min(now, start + timedelta(days=31))
        if end <= start:
            raise _bad("ending_at must be after starting_at")
        if end - start > timedelta(days=31):
            raise _bad("The range from starting_at to ending_at may span at most 31 days")
        if width == "1m" and end - start > timedelta(hours=24):
            raise _bad("With time_bucket_width=1m the range may span at most 24 hours")
        allowed = _COST_GROUPS if cost else _USAGE_GROUPS
        group_by = query.many("group_by")
        for dim in group_by:
            if dim not in allowed:
                raise _bad(f"group_by: unknown dimension {dim!r}")
        dims = [d for d in dict.fromkeys(group_by) if d not in _COST_FANOUT]
        fanout = [d for d in dict.fromkeys(group_by) if d in _COST_FANOUT]
        if len(dims) > 5:
            raise _bad("group_by: at most 5 dimensions")
        limit = query.integer("limit", 20, 1, 1000)
        order = query.one("order") or "desc"
        if order not in ("asc", "desc"):
            raise _bad("order: Input should be 'asc' or 'desc'")
        metrics = ("amount", "list_amount", "time") if cost else _USAGE_ORDER
        order_by = query.one("order_by") or metrics[0]
        if order_by not in metrics:
            raise _bad(f"order_by: Input should be one of {', '.join(metrics)}")
        offset = _page_offset(query.one("page"))

        if width is None:
            lo, hi = floor_time(start, "1h"), floor_time(end, "1h")
        else:
            lo, hi = floor_time(start, width), end
        filters = {name: name for name in _FILTERS}
        events = self._events(now, lo, hi, query, filters, _EMPTY_FILTERS, cost=cost)
        default_ws = self.scenario.default_workspace.id
        drift = self._drift() if cost else {}
        rows: dict[tuple[Any, ...], _Acc] = {}
        for e in events:
            bucket = floor_time(e.at, width) if width else lo
            key = (
                bucket,
                tuple(_group_value(e, d, legacy=False, default_ws=default_ws) for d in dims),
            )
            acc = rows.get(key)
            if acc is None:
                acc = rows[key] = _Acc()
            acc.add(e, drift.get(e.model, Decimal(1)))

        items: list[tuple[datetime, datetime, tuple[Any, ...], _Acc]] = []
        for (bucket, group), acc in rows.items():
            bucket_end = bucket + WIDTHS[width] if width else hi
            fraction = self._revision(bucket_end, now)
            items.append((bucket, bucket_end, group, acc.scaled(fraction) if fraction else acc))

        def metric(item: tuple[datetime, datetime, tuple[Any, ...], _Acc]) -> Decimal | int:
            acc = item[3]
            if cost:
                return acc.amount
            if order_by in ("total_tokens", "time"):
                return acc.total_tokens
            if order_by == "requests":
                return acc.requests
            return acc.tokens[0] if order_by == "uncached_input_tokens" else acc.tokens[4]

        # Stable, deterministic order: a tie-break on bucket and group first.
        items.sort(key=lambda it: (it[0], repr(it[2])))
        if order_by == "time" and width:
            items.sort(key=metric, reverse=True)
            items.sort(key=lambda it: it[0], reverse=order == "desc")
        else:
            items.sort(key=metric, reverse=order == "desc")
        page = items[offset : offset + limit]
        has_more = offset + limit < len(items)
        every = _COST_GROUPS if cost else _USAGE_GROUPS
        data: list[dict[str, Any]] = []
        for bucket, bucket_end, group, acc in page:
            head = {"starting_at": iso(bucket), "ending_at": iso(bucket_end)}
            if not cost:
                data.append(
                    {
                        **head,
                        "group": _group_json(dims, group, every),
                        "usage": acc.usage_json(with_requests=True),
                    }
                )
                continue
            for cost_type, token_type, usd in _cost_parts(acc, fanout):
                group_json = _group_json(dims, group, every)
                group_json["cost_type"] = cost_type
                group_json["token_type"] = token_type
                data.append(
                    {
                        **head,
                        "group": group_json,
                        "cost": {
                            "amount": cents(usd),
                            "list_amount": cents(usd),
                            "currency": "USD",
                            "requests": None if fanout else acc.requests,
                        },
                    }
                )
        return {
            "data": data,
            "has_more": has_more,
            "next_page": _page_token(offset + limit) if has_more else None,
            "data_refreshed_at": iso(now.replace(microsecond=0)),
        }

    def _legacy_buckets(
        self, query: _Query, now: datetime, *, widths: Sequence[str]
    ) -> tuple[str, list[datetime], bool, str | None]:
        start = query.time("starting_at", required=True)
        assert start is not None
        width = query.one("bucket_width") or "1d"
        if width not in widths:
            raise _bad(f"bucket_width: Input should be {' or '.join(repr(w) for w in widths)}")
        default, most = _LEGACY_LIMITS[width]
        limit = query.integer("limit", default, 1, most)
        end = query.time("ending_at") or now
        if end <= start:
            raise _bad("ending_at must be after starting_at")
        step = WIDTHS[width]
        first = floor_time(start, width)
        total = -(-(end - first) // step)  # buckets that start before ending_at
        offset = _page_offset(query.one("page"))
        count = max(0, min(limit, total - offset))
        buckets = [first + step * (offset + k) for k in range(count)]
        has_more = offset + limit < total
        return width, buckets, has_more, _page_token(offset + limit) if has_more else None

    def legacy_usage(self, query: _Query, now: datetime) -> dict[str, Any]:
        """Answer ``/v1/organizations/usage_report/messages`` (no request counts)."""
        group_by = list(dict.fromkeys(query.many("group_by")))
        for dim in group_by:
            if dim not in _LEGACY_USAGE_GROUPS:
                raise _bad(f"group_by: unknown dimension {dim!r}")
        width, buckets, has_more, next_page = self._legacy_buckets(
            query, now, widths=("1d", "1h", "1m")
        )
        step = WIDTHS[width]
        default_ws = self.scenario.default_workspace.id
        data = []
        events: list[UsageEvent] = []
        if buckets:
            events = self._events(
                now, buckets[0], buckets[-1] + step, query, _LEGACY_FILTERS, _LEGACY_EMPTY,
                cost=False,
            )  # fmt: skip
        by_bucket = _by_bucket(events, width)
        for bucket in buckets:
            rows: dict[tuple[Any, ...], _Acc] = {}
            for e in by_bucket.get(bucket, ()):
                key = tuple(
                    _group_value(e, d, legacy=True, default_ws=default_ws) for d in group_by
                )
                rows.setdefault(key, _Acc()).add(e, Decimal(1))
            fraction = self._revision(bucket + step, now)
            results = []
            for key, acc in sorted(rows.items(), key=lambda kv: repr(kv[0])):
                shown = acc.scaled(fraction) if fraction else acc
                results.append(
                    {
                        **shown.usage_json(with_requests=False),
                        **_group_json(group_by, key, _LEGACY_USAGE_GROUPS),
                    }
                )
            data.append(
                {"starting_at": iso(bucket), "ending_at": iso(bucket + step), "results": results}
            )
        return {"data": data, "has_more": has_more, "next_page": next_page}

    def legacy_cost(self, query: _Query, now: datetime) -> dict[str, Any]:
        """Answer ``/v1/organizations/cost_report`` (1d buckets, amounts in cents)."""
        group_by = list(dict.fromkeys(query.many("group_by")))
        for dim in group_by:
            if dim not in ("workspace_id", "description"):
                raise _bad(f"group_by: Input should be 'workspace_id' or 'description' ({dim!r})")
        _, buckets, has_more, next_page = self._legacy_buckets(query, now, widths=("1d",))
        step = WIDTHS["1d"]
        default_ws = self.scenario.default_workspace.id
        by_description = "description" in group_by
        by_workspace = "workspace_id" in group_by
        drift = self._drift()
        events: list[UsageEvent] = []
        if buckets:
            filters = {"workspace_ids": "workspace_ids"}  # UNVERIFIED filter; harmless
            events = self._events(
                now, buckets[0], buckets[-1] + step, query, filters, (), cost=True
            )
        data = []
        by_bucket = _by_bucket(events, "1d")
        for bucket in buckets:
            rows: dict[tuple[Any, ...], Decimal] = {}
            for e in by_bucket.get(bucket, ()):
                ws = _group_value(e, "workspace_id", legacy=True, default_ws=default_ws)
                factor = drift.get(e.model, Decimal(1))
                geo = e.inference_geo or "not_available"
                parts: list[tuple[str | None, str | None, Decimal]]
                if by_description:
                    parts = [
                        ("tokens", name, usd * factor)
                        for name, usd in zip(TOKEN_TYPES, e.amounts[:5], strict=True)
                        if usd
                    ]
                    if e.amounts[5]:
                        parts.append(("web_search", None, e.amounts[5] * factor))
                else:
                    parts = [(None, None, e.billed_usd * factor)]
                for cost_type, token_type, usd in parts:
                    key: tuple[Any, ...] = (ws if by_workspace else None,)
                    if by_description:
                        key += (
                            e.model,
                            e.service_tier,
                            e.context_window,
                            geo,
                            cost_type,
                            token_type,
                        )
                    rows[key] = rows.get(key, _ZERO) + usd
            fraction = self._revision(bucket + step, now)
            results = []
            for key, usd in sorted(rows.items(), key=lambda kv: repr(kv[0])):
                shown = usd * fraction if fraction else usd
                row: dict[str, Any] = {
                    "amount": cents(shown),
                    "currency": "USD",
                    "cost_type": None,
                    "token_type": None,
                    "description": None,
                    "model": None,
                    "service_tier": None,
                    "context_window": None,
                    "inference_geo": None,
                    "workspace_id": key[0],
                }
                if by_description:
                    model, tier, window, geo, cost_type, token_type = key[1:]
                    row.update(
                        cost_type=cost_type,
                        token_type=token_type,
                        description=_description(model, tier, window, geo, cost_type, token_type),
                        model=model,
                        service_tier=tier,
                        context_window=window,
                        inference_geo=geo,
                    )
                results.append(row)
            data.append(
                {"starting_at": iso(bucket), "ending_at": iso(bucket + step), "results": results}
            )
        return {"data": data, "has_more": has_more, "next_page": next_page}


_USAGE_ORDER = ("total_tokens", "uncached_input_tokens", "output_tokens", "requests", "time")


def _description(
    model: str,
    tier: str,
    window: str,
    geo: str,
    cost_type: str | None,
    token_type: str | None,
) -> str:
    """Return a cost-report line description, unique per model/tier/window/geo/token type."""
    name = model_display_name(model)
    batch = " Batch" if tier == "batch" else ""
    if cost_type == "web_search":
        text = f"{name}{batch} Web Search"
    else:
        text = f"{name}{batch} Usage - {_TOKEN_LABELS.get(token_type or '', 'Tokens')}"
    if window == "200k-1M":
        text += " (Long Context)"
    if geo == "us":
        text += " (US Inference)"
    return text


def _route(method: str, path: str) -> tuple[str, str | None]:
    """Return ``(endpoint name, batch id)`` for a request."""
    if path == "/v1/messages/batches":
        if method == "GET":
            return "batches.list", None
        if method == "POST":
            return "batches.create", None
    match = _BATCH_PATH.match(path)
    if match:
        batch_id, tail = match.group(1), match.group(2)
        if tail == "/cancel" and method == "POST":
            return "batches.cancel", batch_id
        if tail == "/results" and method == "GET":
            return "batches.results", batch_id
        if tail is None and method == "GET":
            return "batches.retrieve", batch_id
        if tail is None and method == "DELETE":
            return "batches.delete", batch_id
    if method == "GET":
        if path == "/v1/organizations/analytics/usage":
            return "analytics.usage", None
        if path == "/v1/organizations/analytics/cost":
            return "analytics.cost", None
        if path == "/v1/organizations/usage_report/messages":
            return "usage_report.messages", None
        if path == "/v1/organizations/cost_report":
            return "cost_report", None
    return "not_found", None


def _by_bucket(events: Iterable[UsageEvent], width: str) -> dict[datetime, list[UsageEvent]]:
    """Group events by the start of their ``width`` bucket."""
    out: dict[datetime, list[UsageEvent]] = {}
    for e in events:
        out.setdefault(floor_time(e.at, width), []).append(e)
    return out


def _write_chunk(h: _Handler, data: bytes) -> None:
    if data:
        h.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
