"""The simulator's HTTP server: routing, authentication, faults, the Message Batches API.

It serves, over plain HTTP on 127.0.0.1, what the real ``anthropic`` SDK calls (shapes from
``shared/reference/anthropic-api.md``); the report endpoints come from
:class:`~monitor.simulator.reports.ReportEndpoints`. Everything it shows is a function of the
:class:`~monitor.simulator.organisation.Scenario` and the server's own clock (``set_now``/
``advance``, or ``speed`` times wall time), and of the :class:`~monitor.simulator.faults.Fault` s
added to it.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import struct
import tempfile
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import orjson

from monitor import clock
from monitor.simulator.batches import BatchSpec
from monitor.simulator.faults import Fault
from monitor.simulator.organisation import ApiKey, Scenario
from monitor.simulator.protocol import ApiError, Query, invalid_request
from monitor.simulator.reports import ReportEndpoints

ANALYTICS_BETA = "analytics-usage-cost-2026-08-24"
CHUNK_BYTES = 64 * 1024

# Endpoint names, as routing gives them and Fault.endpoint names them (or their family).
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


@dataclass(frozen=True)
class _Principal:
    admin: bool
    key: ApiKey | None = None


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
    # Headers and body go out in separate writes: with Nagle's algorithm on, each answer
    # waits for the client's delayed ACK (tens of milliseconds), which dominated test time.
    disable_nagle_algorithm = True
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


class SimulatorServer(ReportEndpoints):
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
            from monitor.simulator.scenarios import build_scenario

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

    def freeze(self) -> datetime:
        """Stop simulated time where it is now (speed mode ends); return that time."""
        with self._lock:
            if self.speed:
                elapsed = (clock.monotonic() - self._base_mono) * self.speed
                self._base_sim += timedelta(seconds=elapsed)
                self.speed = None
            return self._base_sim

    def clock_spec(self) -> str:
        """Return a ``MONITOR_CLOCK`` value that makes batch-monitor follow this server's time.

        Only meaningful with ``speed`` (a frozen simulator has no rate to follow).
        """
        if not self.speed:
            raise ValueError("the simulator's clock is frozen (no speed): nothing to follow")
        return clock.SimulatedClock(self.now(), clock.epoch(), self.speed).spec()

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

    def _count_fired(self, fault: Fault) -> None:
        with self._lock:
            fault.fired += 1

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
        query = Query(split.query)
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
            if self._take("connection_reset", endpoint) is not None:
                _reset(h)
                return
            if endpoint == "not_found":
                raise ApiError(404, "not_found_error", f"Not found: {method} {path}")
            principal = self._authenticate(h)
            self._inject_errors(endpoint, h)
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

    def _inject_errors(self, endpoint: str, h: _Handler) -> None:
        if self._take("echo_headers", endpoint) is not None:
            echoed = "; ".join(f"{k}: {v}" for k, v in h.headers.items())
            raise ApiError(400, "invalid_request_error", f"bad request, headers were: {echoed}")
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
        query: Query,
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
                raise invalid_request("Request body is not valid JSON") from None
            if not isinstance(data, dict):
                raise invalid_request("Request body must be a JSON object")
            try:
                spec = scenario.create_batch(key.workspace_id, key.id, data.get("requests"), now)
            except ValueError as exc:
                raise invalid_request(str(exc)) from None
            return 200, scenario.view(spec, now).to_api(base)
        spec = self._visible_spec(key, batch_id, now)
        if endpoint == "batches.cancel":
            scenario.cancel_batch(spec.id, now)
        elif endpoint == "batches.delete":
            try:
                scenario.delete_batch(spec.id, now)
            except ValueError as exc:
                raise invalid_request(str(exc)) from None
            return 200, {"id": spec.id, "type": "message_batch_deleted"}
        return 200, scenario.view(spec, now).to_api(base)

    def _list(self, key: ApiKey, query: Query, now: datetime, base: str) -> dict[str, Any]:
        limit = query.integer("limit", 20, 1, 1000)
        after, before = query.one("after_id"), query.one("before_id")
        if after and before:
            raise invalid_request("Only one of after_id and before_id may be given")
        specs = self.scenario.visible_batches(key.workspace_id, now)
        ids = [s.id for s in specs]
        if after:
            if after not in ids:
                raise invalid_request(f"after_id: no batch found with id {after!r}")
            pos = ids.index(after) + 1
            page = specs[pos : pos + limit]
            has_more = pos + limit < len(specs)
        elif before:
            if before not in ids:
                raise invalid_request(f"before_id: no batch found with id {before!r}")
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
        lines = spec.n  # one results line per request, processed or not
        cut_after = cut_byte = None
        if cut is not None and cut.at is None:
            cut_after = cut.line
        bad_line = None
        if bad is not None:
            bad_line = bad.line if bad.at is None else 1 + min(lines - 1, int(bad.at * lines))
        if cut is not None and cut.at is not None:
            if bad_line is None:
                path = self._results_path(spec)
                if not os.path.exists(path):
                    self._render_results(spec)
                size = os.path.getsize(path)
                cut_byte = max(1, min(size - 1, int(cut.at * size)))
            else:  # both at once: cut at a line, the broken one comes first or not at all
                cut_after = max(1, int(cut.at * lines))
        try:
            h.send_response(200)
            h.send_header("Content-Type", "application/binary")
            h.send_header("Transfer-Encoding", "chunked")
            h.send_header("request-id", request_id)
            h.send_header("anthropic-workspace-id", key.workspace_id)
            h.end_headers()
            if cut_byte is not None:
                with open(self._results_path(spec), "rb") as fh:
                    left = cut_byte
                    while left > 0 and (chunk := fh.read(min(CHUNK_BYTES, left))):
                        _write_chunk(h, chunk)
                        left -= len(chunk)
                _hang_up(h)
                return
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
                    _hang_up(h)
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

    def _reports(self, h: _Handler, endpoint: str, query: Query, now: datetime) -> tuple[int, Any]:
        if endpoint.startswith("analytics."):
            betas = {b.strip() for b in (h.headers.get("anthropic-beta") or "").split(",")}
            if ANALYTICS_BETA not in betas:
                raise invalid_request(
                    f"This endpoint is in beta: send the header anthropic-beta: {ANALYTICS_BETA}"
                )
            return 200, self.analytics(endpoint.split(".")[1], query, now)
        if endpoint == "usage_report.messages":
            return 200, self.legacy_usage(query, now)
        return 200, self.legacy_cost(query, now)


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


def _hang_up(h: _Handler) -> None:
    """Drop the connection without the closing chunk: the client sees a truncated body, as
    when a real download breaks midway."""
    h.close_connection = True
    h.wfile.flush()
    h.connection.shutdown(socket.SHUT_RDWR)


def _reset(h: _Handler) -> None:
    """Reset the connection (RST, not FIN) without answering: a dropped proxy or peer."""
    h.close_connection = True
    try:
        # Linger on with a zero timeout: close() discards the socket and sends a reset.
        h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        h.connection.close()
    except OSError:
        pass


def _write_chunk(h: _Handler, data: bytes) -> None:
    if data:
        h.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
