"""Prometheus metrics from the store, and the small HTTP server that serves them.

``CostMetrics`` is one collector whose ``collect()`` reads the database on every scrape:
nothing is kept in process-global gauges, so every replica and every restart shows the same
numbers. Counters come from tables that only grow (``spend_total``, ``batch_total``,
``tally``), so they survive restarts and pruning; window gauges come from the same functions
as ``batch-monitor summary`` (``summary.window_figures``), so both say the same to the last
digit. Label cardinality is bounded: no batch ids, and models, workspaces and workloads
beyond ``[metrics] top_n`` (by all-time spend or savings) fold into ``other``. The exceptions
are what only this process can know: whether it leads, and what it saw of the database
(``batch_monitor_database_up``, ``batch_monitor_database_errors_total``), served even when
the store cannot be read.

The HTTP server answers ``GET /metrics``, ``/healthz`` and ``/readyz`` and nothing else (405
for other methods, 404 for other paths), on 127.0.0.1 by default. Each connection gets its
own thread, a short socket timeout and a deadline for its request, and a full server drops
its slowest client for a new one, so slow or broken clients cannot hold up a scrape.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import orjson
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, col

from monitor import __version__, clock, db
from monitor.models import (
    TURNAROUND_BUCKETS,
    Advice,
    AlertState,
    BatchTotal,
    JobRun,
    Notification,
    SpendTotal,
    Tally,
)

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from monitor.config import Settings
    from monitor.lease import Leadership

log = logging.getLogger(__name__)

TOKEN_TYPES = {
    "input": "input_tokens",
    "output": "output_tokens",
    "cache_read": "cache_read_tokens",
    "cache_write_5m": "cache_write_5m_tokens",
    "cache_write_1h": "cache_write_1h_tokens",
}
OTHER = "other"
JOB_OUTCOMES = ("ok", "failed", "timeout")
NOTIFICATION_OUTCOMES = ("ok", "transient", "permanent")


def _f(value: Decimal | float | int | None) -> float:
    return float(value) if value is not None else 0.0


def top_names(amounts: Mapping[str, Decimal | float], n: int) -> set[str]:
    """Return the ``n`` names with the largest amounts (ties broken by name)."""
    ranked = sorted(amounts.items(), key=lambda kv: (-float(kv[1]), kv[0]))
    return {name for name, _ in ranked[:n]}


class CostMetrics(Collector):
    """Every figure batch-monitor knows, read from the database at each scrape."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        *,
        leadership: Leadership | None = None,
        now: Callable[[], datetime] | None = None,
        job_intervals: Mapping[str, timedelta] | None = None,
    ) -> None:
        from monitor import clock

        self.engine = engine
        self.settings = settings
        self.leadership = leadership
        self.now = now or clock.utcnow
        self.job_intervals = dict(job_intervals or {})
        from monitor import notifiers

        # The configured delivery channels, so their counters start at 0 (Slack or the log).
        self.channels = sorted({n.name for n in notifiers.from_settings(settings)})

    def describe(self) -> Iterable[Metric]:
        """Describe nothing up front, so registering does not read the database."""
        return []

    def collect(self) -> Iterator[Metric]:
        """Read the store and yield every metric family.

        When the database cannot be read (unreachable, failing), the scrape still answers,
        with what this process knows itself (``batch_monitor_database_up`` 0 among them): a
        failed scrape would read as a dead process, not as a database that is down.
        """
        now = self.now()
        try:
            with db.session_scope(self.engine) as session:
                families = [
                    *self._spend(session),
                    *self._batches(session, now),
                    *self._windows(session, now),
                    *self._advice(session),
                    *self._service(session),
                ]
        except SQLAlchemyError as exc:
            if db.fault_kind(exc) is None:
                raise  # a bug, not the database: the scrape fails loudly (500)
            log.warning("/metrics: the database cannot be read: %s", db.fault_detail(exc))
            families, readable = [], False
        else:
            readable = True
        yield from families
        yield from self._process(readable)

    # -- from the store

    def _spend(self, session: Session) -> list[Metric]:
        # Plain column tuples, not ORM objects: a year of a large organisation is hundreds of
        # rows per scrape, and building objects for them was most of the scrape's own time.
        t = SpendTotal
        money = (col(t.cost_usd), col(t.billed_cost_usd), col(t.standard_cost_usd))
        counts = (col(t.requests), col(t.unpriced_tokens))
        tokens_cols = tuple(col(getattr(t, c)) for c in TOKEN_TYPES.values())
        rows = session.execute(
            select(col(t.service_tier), col(t.model), col(t.workspace_id), *money, *counts,
                   *tokens_cols)
        ).all()  # fmt: skip
        n = self.settings.metrics.top_n
        by_model: dict[str, Decimal] = defaultdict(Decimal)
        by_ws: dict[str, Decimal] = defaultdict(Decimal)
        for r in rows:
            by_model[r[1]] += r[3]
            by_ws[r[2]] += r[3]
        models, workspaces = top_names(by_model, n), top_names(by_ws, n)
        # Per (tier, model, workspace), models and workspaces past the top N folded into
        # "other": cost, billed, standard, requests, unpriced, then each token type.
        sums: dict[tuple[str, str, str], list[Any]] = {}
        for r in rows:
            key = (
                r[0],
                r[1] if r[1] in models else OTHER,
                r[2] if r[2] in workspaces else OTHER,
            )
            acc = sums.get(key)
            if acc is None:
                sums[key] = list(r[3:])
            else:
                for i, v in enumerate(r[3:]):
                    acc[i] += v

        labels = ["service_tier", "model", "workspace"]
        cost = CounterMetricFamily(
            "claude_cost_usd", "Computed cost of all recorded usage (USD).", labels=labels
        )
        billed = CounterMetricFamily(
            "claude_billed_cost_usd", "Billed cost from the cost report (USD).", labels=labels
        )
        requests = CounterMetricFamily("claude_requests", "Requests recorded.", labels=labels)
        tokens = CounterMetricFamily(
            "claude_tokens", "Tokens recorded, by type.", labels=[*labels, "token_type"]
        )
        savings = CounterMetricFamily(
            "claude_batch_savings_usd",
            "What batch work saved against real-time prices (USD).",
            labels=["model", "workspace"],
        )
        unpriced = CounterMetricFamily(
            "batch_monitor_unpriced_tokens",
            "Tokens of models without a known price (their cost is not counted).",
            labels=["model"],
        )
        saved: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
        unpriced_by: dict[str, int] = defaultdict(int)
        token_names = list(TOKEN_TYPES)
        for key, acc in sorted(sums.items()):
            values = list(key)
            c_cost, c_billed, c_standard, c_requests, c_unpriced = acc[:5]
            cost.add_metric(values, _f(c_cost))
            billed.add_metric(values, _f(c_billed))
            requests.add_metric(values, float(c_requests))
            for name, count in zip(token_names, acc[5:], strict=True):
                tokens.add_metric([*values, name], float(count))
            if key[0] == "batch":
                saved[(key[1], key[2])] += c_standard - c_cost
            unpriced_by[key[1]] += c_unpriced
        for (model, ws), amount in sorted(saved.items()):
            savings.add_metric([model, ws], _f(amount))
        for model, count in sorted(unpriced_by.items()):
            if count:
                unpriced.add_metric([model], float(count))
        return [cost, billed, requests, tokens, savings, unpriced]

    def _batches(self, session: Session, now: datetime) -> list[Metric]:
        from monitor.summary import in_progress

        n = self.settings.metrics.top_n
        totals = list(session.execute(select(BatchTotal)).scalars())
        workspaces = top_names({t.workspace_id: t.ended for t in totals}, n)
        batches = CounterMetricFamily(
            "claude_batches",
            "Message Batches that ended (status: ended, or the subsets canceled, expired, "
            "archived).",
            labels=["workspace", "status"],
        )
        requests = CounterMetricFamily(
            "claude_batch_requests",
            "Requests of ended batches by result.",
            labels=["workspace", "result"],
        )
        counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        buckets = [0] * len(TURNAROUND_BUCKETS)
        total_sum, total_count = 0.0, 0
        for t in totals:
            ws = t.workspace_id if t.workspace_id in workspaces else OTHER
            for name in ("ended", "canceled", "expired", "archived"):
                counts[ws][name] += getattr(t, name)
            for result in ("succeeded", "errored", "canceled", "expired"):
                counts[ws][f"r_{result}"] += getattr(t, f"requests_{result}")
            for i, bound in enumerate(TURNAROUND_BUCKETS):
                buckets[i] += getattr(t, f"turnaround_le_{bound}")
            total_sum += t.turnaround_sum
            total_count += t.turnaround_count
        for ws, c in sorted(counts.items()):
            for name in ("ended", "canceled", "expired", "archived"):
                batches.add_metric([ws, name], float(c[name]))
            for result in ("succeeded", "errored", "canceled", "expired"):
                requests.add_metric([ws, result], float(c[f"r_{result}"]))
        cumulative, running = [], 0
        for bound, count in zip(TURNAROUND_BUCKETS, buckets, strict=True):
            running += count
            cumulative.append((str(float(bound)), float(running)))
        cumulative.append(("+Inf", float(total_count)))
        turnaround = HistogramMetricFamily(
            "claude_batch_turnaround_seconds",
            "Turnaround of ended Message Batches (created to ended).",
            buckets=cumulative,
            sum_value=total_sum,
        )
        running_now = in_progress(session, now)
        in_prog = GaugeMetricFamily(
            "claude_batches_in_progress", "Batches not ended yet.", labels=["workspace"]
        )
        oldest = GaugeMetricFamily(
            "claude_batch_oldest_in_progress_age_seconds",
            "Age of the oldest batch not ended yet (batches expire at 24 h).",
            labels=["workspace"],
        )
        per_ws: dict[str, list[float]] = defaultdict(list)
        for b in running_now:
            per_ws[b.workspace_id if b.workspace_id in workspaces else OTHER].append(b.age_seconds)
        for ws, ages in sorted(per_ws.items()):
            in_prog.add_metric([ws], float(len(ages)))
            oldest.add_metric([ws], max(ages))
        return [batches, requests, turnaround, in_prog, oldest]

    def _windows(self, session: Session, now: datetime) -> list[Metric]:
        from monitor import gauges

        share = GaugeMetricFamily(
            "claude_batch_share_ratio",
            "Batch share of requests or spend over the window (target 0.5-0.7).",
            labels=["basis", "window"],
        )
        failure = GaugeMetricFamily(
            "claude_batch_failure_ratio",
            "(errored + expired) / requests of batches that ended in the window.",
            labels=["window"],
        )
        expired = GaugeMetricFamily(
            "claude_batch_expired_ratio",
            "Expired / requests of batches that ended in the window.",
            labels=["window"],
        )
        p50 = GaugeMetricFamily(
            "claude_batch_turnaround_p50_seconds",
            "Median turnaround of batches that ended in the window.",
            labels=["window"],
        )
        p95 = GaugeMetricFamily(
            "claude_batch_turnaround_p95_seconds",
            "95th percentile turnaround of batches that ended in the window.",
            labels=["window"],
        )
        drift = GaugeMetricFamily(
            "claude_cost_drift_ratio",
            "Computed / billed - 1 over the whole UTC days of the window.",
            labels=["window"],
        )
        # Stored by the daemon's gauges job (fresh within a few of its intervals), else
        # computed here: the same figures either way.
        max_age = max(3 * self.settings.run.rollup_interval, timedelta(minutes=5))
        figures = gauges.read(session, now, max_age) or gauges.compute(session, now)
        for name in gauges.WINDOWS:
            v = {f: figures.values.get((name, f)) for f in gauges.FIGURES}
            # No data is no sample, never a misleading 0.
            for basis, value in (
                ("requests", v["batch_share_requests"]),
                ("spend", v["batch_share_spend"]),
            ):
                if value is not None:
                    share.add_metric([basis, name], value)
            for family, value in (
                (failure, v["batch_failure_ratio"]),
                (expired, v["batch_expired_ratio"]),
                (p50, v["batch_turnaround_p50_seconds"]),
                (p95, v["batch_turnaround_p95_seconds"]),
                (drift, v["cost_drift_ratio"]),
            ):
                if value is not None:
                    family.add_metric([name], value)
        return [share, failure, expired, p50, p95, drift]

    def _advice(self, session: Session) -> list[Metric]:
        rows = list(session.execute(select(Advice)).scalars())
        keep = top_names(
            {r.workload: r.monthly_savings_usd or Decimal(0) for r in rows},
            self.settings.metrics.top_n,
        )
        family = GaugeMetricFamily(
            "claude_advisor_monthly_savings_usd",
            "What moving each real-time workload as advised would save per month (USD).",
            labels=["workload", "recommendation"],
        )
        sums: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
        for r in rows:
            if r.monthly_savings_usd is None:
                continue
            sums[(r.workload if r.workload in keep else OTHER, r.recommendation)] += (
                r.monthly_savings_usd
            )
        for key, amount in sorted(sums.items()):
            family.add_metric(list(key), _f(amount))
        return [family]

    # -- the service itself

    def _process(self, readable: bool) -> list[Metric]:
        """Return what this process knows by itself (served even when the store is down)."""
        build = GaugeMetricFamily(
            "batch_monitor_build_info", "The running version.", labels=["version"]
        )
        build.add_metric([__version__], 1.0)
        leader = GaugeMetricFamily(
            "batch_monitor_leader", "1 when this process holds the scheduler lease."
        )
        leader.add_metric([], 1.0 if self.leadership and self.leadership.is_leader() else 0.0)
        health = db.health(self.engine).state()
        up = GaugeMetricFamily(
            "batch_monitor_database_up",
            "1 when the database can be read and this process's last write to it succeeded.",
        )
        up.add_metric([], 1.0 if readable and health.failing is None else 0.0)
        faults = CounterMetricFamily(
            "batch_monitor_database_errors",
            "Database faults this process met (unreachable, locked, disk_full, io_error, "
            "other), counted since it started.",
            labels=["kind"],
        )
        for kind, count in health.faults.items():
            faults.add_metric([kind], float(count))
        return [build, leader, up, faults]

    def _service(self, session: Session) -> list[Metric]:
        from monitor.summary import last_success

        success = GaugeMetricFamily(
            "batch_monitor_collect_last_success_timestamp_seconds",
            "When each source last collected successfully (Unix time).",
            labels=["source"],
        )
        for source, at in sorted(last_success(session).items()):
            if at is not None:
                success.add_metric([source], at.timestamp())
        errors = CounterMetricFamily(
            "batch_monitor_collect_errors", "Failed collections per source.", labels=["source"]
        )
        known = {s for s in ("batches", "usage", "cost", "logs")}
        failed: dict[str, int] = dict.fromkeys(sorted(known), 0)
        for key, value in _tally(session, "collect_runs").items():
            source, _, status = key.partition("|")
            if status == "failed":
                failed[source] = failed.get(source, 0) + value
        for source, value in sorted(failed.items()):
            errors.add_metric([source], float(value))
        runs = CounterMetricFamily(
            "batch_monitor_job_runs", "Scheduled job runs by outcome.", labels=["job", "outcome"]
        )
        # Every configured job and outcome from 0, so increase() sees the first failure too.
        run_counts = {(j, o): 0 for j in self.job_intervals for o in JOB_OUTCOMES}
        for key, value in _tally(session, "job_runs").items():
            job, _, outcome = key.partition("|")
            run_counts[(job, outcome)] = run_counts.get((job, outcome), 0) + value
        for (job, outcome), value in sorted(run_counts.items()):
            runs.add_metric([job, outcome], float(value))
        duration = GaugeMetricFamily(
            "batch_monitor_job_duration_seconds",
            "How long each job's last finished run took.",
            labels=["job"],
        )
        for job, seconds in sorted(_last_durations(session).items()):
            duration.add_metric([job], seconds)
        interval = GaugeMetricFamily(
            "batch_monitor_job_interval_seconds",
            "Each job's configured interval (business time).",
            labels=["job"],
        )
        for job, span in sorted(self.job_intervals.items()):
            interval.add_metric([job], span.total_seconds())
        alerts = GaugeMetricFamily(
            "batch_monitor_alerts",
            "Alerts by rule, severity and state.",
            labels=["rule", "severity", "state"],
        )
        for rule, severity, state, count in session.execute(
            select(
                col(AlertState.rule), col(AlertState.severity), col(AlertState.state), func.count()
            ).group_by(col(AlertState.rule), col(AlertState.severity), col(AlertState.state))
        ):
            alerts.add_metric([rule, severity, state], float(count))
        notes = CounterMetricFamily(
            "batch_monitor_notifications",
            "Notification attempts by channel and outcome.",
            labels=["channel", "outcome"],
        )
        counts: dict[tuple[str, str], int] = {
            (c, o): 0 for c in self.channels for o in NOTIFICATION_OUTCOMES
        }
        for key, value in _tally(session, "notifications").items():
            channel, _, outcome = key.partition("|")
            counts[(channel, outcome)] = counts.get((channel, outcome), 0) + value
        for channel, outcome, count in session.execute(
            select(col(Notification.channel), col(Notification.outcome), func.count()).group_by(
                col(Notification.channel), col(Notification.outcome)
            )
        ):
            counts[(channel, outcome)] = counts.get((channel, outcome), 0) + int(count)
        for (channel, outcome), count in sorted(counts.items()):
            notes.add_metric([channel, outcome], float(count))
        failures = CounterMetricFamily(
            "batch_monitor_notification_failures",
            "Failed notification attempts by channel, outcome (transient, permanent) and kind "
            "(the channel's error: ratelimited, server_error, network, invalid_auth, "
            "channel_not_found, ...).",
            labels=["channel", "outcome", "kind"],
        )
        for key, value in sorted(_tally(session, "notification_failures").items()):
            channel, outcome, kind = [*key.split("|"), "", ""][:3]
            failures.add_metric([channel, outcome, kind], float(value))
        return [success, errors, runs, duration, interval, alerts, notes, failures]


def _tally(session: Session, metric: str) -> dict[str, int]:
    rows = session.execute(
        select(col(Tally.key), col(Tally.value)).where(col(Tally.metric) == metric)
    )
    return {k: int(v) for k, v in rows}


def _last_durations(session: Session) -> dict[str, float]:
    latest = (
        select(col(JobRun.job), func.max(col(JobRun.id)).label("id"))
        .where(col(JobRun.duration_seconds).is_not(None))
        .group_by(col(JobRun.job))
        .subquery()
    )
    rows = session.execute(
        select(col(JobRun.job), col(JobRun.duration_seconds)).join(
            latest, col(JobRun.id) == latest.c.id
        )
    )
    return {job: float(seconds) for job, seconds in rows}


def registry_for(metrics: CostMetrics) -> CollectorRegistry:
    """Return a fresh registry holding only ``metrics`` (no process or platform collectors)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(metrics)
    return registry


def exposition(registry: CollectorRegistry, accept: str | None = None) -> tuple[bytes, str]:
    """Render ``registry`` in the format the client asks for (OpenMetrics or text 0.0.4)."""
    from prometheus_client.exposition import choose_encoder

    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type


# --- health -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """One readiness check: its name, whether it passed and why."""

    name: str
    ok: bool
    detail: str


def readiness(
    engine: Engine, settings: Settings, now: datetime, sources: Mapping[str, timedelta]
) -> list[Check]:
    """Check the database, the schema and every configured source's freshness.

    ``sources`` maps each configured source to its staleness limit.
    """
    from monitor.summary import last_success

    checks: list[Check] = []
    try:
        db.check_reachable(engine)
    except db.DatabaseError as exc:
        return [Check("database", False, str(exc))]
    # Reachable is not enough: a SQLite file locked by another process, or on a full disk,
    # still answers reads while every write fails. The engine's health says so.
    health = db.health(engine).state()
    if health.failing is not None:
        kind = db.FAULT_TEXT.get(health.failing, health.failing)
        checks.append(
            Check(
                "database",
                False,
                f"{kind} for {int(health.seconds)}s (no write succeeded since): {health.detail}",
            )
        )
    else:
        checks.append(Check("database", True, "reachable"))
    try:
        db.require_migrated(engine)
        checks.append(Check("migrations", True, f"at {db.head_revision()}"))
    except db.DatabaseError as exc:
        checks.append(Check("migrations", False, str(exc)))
        return checks
    try:
        with db.session_scope(engine) as session:
            seen = last_success(session)
    except Exception as exc:  # a broken query must read as not ready, not as a crash
        return [*checks, Check("sources", False, f"{type(exc).__name__}: {exc}")]
    for source, limit in sorted(sources.items()):
        at = seen.get(source)
        if at is None:
            checks.append(Check(f"source:{source}", False, "never collected successfully"))
        elif now - at > limit:
            checks.append(
                Check(
                    f"source:{source}",
                    False,
                    f"last success {int((now - at).total_seconds())}s ago "
                    f"(limit {int(limit.total_seconds())}s)",
                )
            )
        else:
            checks.append(Check(f"source:{source}", True, "fresh"))
    return checks


# --- the HTTP server --------------------------------------------------------------------

# A client that sends nothing for this long is dropped; scrapes take milliseconds.
SOCKET_TIMEOUT = 5.0
# A client must have sent its whole request (line and headers) this long after connecting, or
# it is dropped: a slowloris client that sends a byte a second never trips SOCKET_TIMEOUT.
REQUEST_DEADLINE = 10.0
MAX_CONNECTIONS = 64


class _Handler(BaseHTTPRequestHandler):
    server: MetricsServer
    timeout = SOCKET_TIMEOUT
    protocol_version = "HTTP/1.0"  # one request per connection: nothing lingers
    # Headers and body go out in two writes: without TCP_NODELAY the body waits for the
    # scraper's delayed ACK of the headers, 40 ms on every scrape.
    disable_nagle_algorithm = True

    def setup(self) -> None:
        """Note the connection as still sending its request (see MetricsServer)."""
        super().setup()
        self.server.reading(self.connection)

    def parse_request(self) -> bool:
        """Read the request line and headers; from here on the deadline no longer applies."""
        try:
            return super().parse_request()
        finally:
            self.server.done_reading(self.connection)

    def finish(self) -> None:
        """Forget the connection, whichever way its request ended."""
        self.server.done_reading(self.connection)
        super().finish()

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        app = self.server.app
        try:
            if path == "/metrics":
                body, ctype = app.metrics(self.headers.get("Accept"))
                self._send(200, body, ctype)
            elif path == "/healthz":
                self._send(200, b'{"status":"ok"}\n', "application/json")
            elif path == "/readyz":
                ok, payload = app.ready()
                self._send(200 if ok else 503, payload, "application/json")
            else:
                self._send(404, b'{"error":"not found"}\n', "application/json")
        except (BrokenPipeError, ConnectionResetError):  # the client left: nobody to answer
            log.debug("http: %s: the client closed the connection first", path)
        except Exception as exc:  # a failed scrape is a 500 with a reason, not a dead server
            log.warning("%s failed: %s", path, exc)
            self._send(500, orjson.dumps({"error": type(exc).__name__}) + b"\n", "application/json")

    def _not_allowed(self) -> None:
        self._send(405, b'{"error":"method not allowed"}\n', "application/json", allow=True)

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = _not_allowed

    def _send(self, code: int, body: bytes, ctype: str, *, allow: bool = False) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        if allow:
            self.send_header("Allow", "GET")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http: " + format, *args)


@dataclass
class App:
    """What the endpoints serve: an exposition function and a readiness function."""

    metrics: Callable[[str | None], tuple[bytes, str]]
    ready: Callable[[], tuple[bool, bytes]]


class MetricsServer(ThreadingHTTPServer):
    """A threaded HTTP server with a cap on concurrent connections that slow clients cannot fill.

    A connection still sending its request is dropped ``REQUEST_DEADLINE`` after it opened. And
    when every slot is taken, the connection that has waited longest for its request is dropped
    to make room: a scrape sends its request at once, so slow or stalled clients, however many,
    never keep it out.
    """

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], app: App) -> None:
        self.app = app
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._lock = threading.Lock()
        self._reading: dict[socket.socket, float] = {}  # connection -> when it was accepted
        super().__init__(address, _Handler)

    def reading(self, connection: socket.socket) -> None:
        """Note that ``connection`` is sending its request."""
        with self._lock:
            self._reading[connection] = clock.monotonic()

    def done_reading(self, connection: socket.socket) -> None:
        """Note that ``connection`` has sent its request, or is gone."""
        with self._lock:
            self._reading.pop(connection, None)

    def _drop(self, connection: socket.socket) -> None:
        # Under the lock. Shutting the socket down wakes its thread (its read sees the end)
        # and frees its slot; the thread closes the socket itself.
        self._reading.pop(connection, None)
        with contextlib.suppress(OSError):  # already closed by its thread
            connection.shutdown(socket.SHUT_RDWR)

    def service_actions(self) -> None:
        """Drop connections whose request has not arrived in time (runs every poll)."""
        cutoff = clock.monotonic() - REQUEST_DEADLINE
        with self._lock:
            for connection in [c for c, t in self._reading.items() if t < cutoff]:
                log.debug("http: dropped a client that sent no request in %gs", REQUEST_DEADLINE)
                self._drop(connection)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Serve in a thread; when every slot is taken, drop the slowest request to make room."""
        if not self._slots.acquire(blocking=False):
            with self._lock:
                if self._reading:
                    self._drop(min(self._reading, key=self._reading.__getitem__))
            # Its thread ends at once and gives its slot back.
            if not self._slots.acquire(timeout=1.0):
                self.shutdown_request(request)
                return
        super().process_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Log a connection that failed (a client gone mid-answer) quietly, not to stderr."""
        log.debug("http: a connection failed", exc_info=True)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """Release the connection's slot when its thread ends."""
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


def serve(host: str, port: int, app: App) -> tuple[MetricsServer, threading.Thread]:
    """Start serving ``app`` on ``host:port`` in a daemon thread; return the server and thread."""
    server = MetricsServer((host, port), app)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="metrics", daemon=True
    )
    thread.start()
    return server, thread


def make_app(
    engine: Engine,
    settings: Settings,
    metrics: CostMetrics,
    sources: Mapping[str, timedelta],
    now: Callable[[], datetime],
) -> App:
    """Wire the endpoints to the store: /metrics from ``metrics``, /readyz from ``readiness``."""
    registry = registry_for(metrics)

    def ready() -> tuple[bool, bytes]:
        checks = readiness(engine, settings, now(), sources)
        ok = all(c.ok for c in checks)
        body = {
            "status": "ready" if ok else "not ready",
            "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in checks],
            "failed": [c.name for c in checks if not c.ok],
        }
        return ok, orjson.dumps(body) + b"\n"

    return App(metrics=lambda accept: exposition(registry, accept), ready=ready)
