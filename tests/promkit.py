"""Real Prometheus for tests: start Debian's ``prometheus`` binary, query it, stop it.

``PrometheusServer`` runs ``prometheus`` on 127.0.0.1 on a free port with a temporary TSDB and
a generated config that scrapes the given targets every second; ``prometheus_server`` is the
pytest fixture (a factory: every server it started is stopped at teardown). ``check_metrics``
pipes an exposition to ``promtool check metrics`` and returns its complaints; ``check_promql``
parses expressions with promtool; ``replica_problems`` checks statically that a PromQL
expression stays right when several replicas export the same stored totals.

Without the binaries a test skips loudly, unless ``MONITOR_REQUIRE_POSTGRES=1`` (CI) where it
fails: CI installs them (``.ci/run``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

REQUIRED = os.environ.get("MONITOR_REQUIRE_POSTGRES") == "1"


def binary(name: str) -> str:
    """Return the path of ``name`` (prometheus, promtool), or skip loudly (fail in CI)."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (apt-get install prometheus)"
        if REQUIRED:
            pytest.fail(message + "; MONITOR_REQUIRE_POSTGRES=1 (CI) requires it", pytrace=False)
        pytest.skip("!!! SKIPPING PROMETHEUS TESTS: " + message)
    return path


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PromQLError(RuntimeError):
    """Prometheus refused a query."""


class PrometheusServer:
    """One Prometheus process scraping ``targets`` (``host:port``) every ``scrape_interval``."""

    def __init__(
        self,
        workdir: Path,
        targets: Sequence[str],
        *,
        job: str = "batch-monitor",
        scrape_interval: str = "1s",
        rule_files: Sequence[Path] = (),
    ) -> None:
        self.workdir = workdir
        self.targets = list(targets)
        self.job = job
        self.scrape_interval = scrape_interval
        self.rule_files = list(rule_files)
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Return the server's base URL."""
        return f"http://127.0.0.1:{self.port}"

    def config(self) -> str:
        """Return the generated prometheus.yml (JSON is valid YAML)."""
        cfg = {
            "global": {
                "scrape_interval": self.scrape_interval,
                "evaluation_interval": self.scrape_interval,
            },
            "rule_files": [str(p) for p in self.rule_files],
            "scrape_configs": [
                {
                    "job_name": self.job,
                    "scrape_interval": self.scrape_interval,
                    "scrape_timeout": self.scrape_interval,
                    "static_configs": [{"targets": self.targets}],
                }
            ],
        }
        return json.dumps(cfg, indent=2)

    def start(self, timeout: float = 30.0) -> PrometheusServer:
        """Start Prometheus and wait (at most ``timeout`` s) until it is ready."""
        exe = binary("prometheus")
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "prometheus.yml"
        config.write_text(self.config())
        self.port = free_port()
        self.log = self.workdir / "prometheus.log"
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [
                    exe,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={self.workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited {self.proc.returncode}: {self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=1) as resp:
                    if resp.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"prometheus not ready after {timeout}s: {self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        """Return the end of the server's log."""
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the process: terminate, wait, kill if it does not exit in ``timeout`` s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout)

    def __enter__(self) -> PrometheusServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def api(self, path: str, **params: str) -> Any:
        """Return the ``data`` of a GET on the HTTP API; raise PromQLError on an error."""
        url = f"{self.url}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                body = json.load(resp)
        except urllib.error.HTTPError as exc:
            body = json.load(exc)
        if body.get("status") != "success":
            raise PromQLError(f"{body.get('errorType')}: {body.get('error')} ({params})")
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """Evaluate ``expr`` (instant query, now or at ``at``) and return the vector.

        A scalar result is returned as one sample without labels.
        """
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self.api("query", **params)
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        return list(data["result"])

    def value(self, expr: str, at: float | None = None) -> float | None:
        """Return the value of a one-sample result (None when empty)."""
        result = self.query(expr, at)
        if not result:
            return None
        assert len(result) == 1, f"{expr} returned {len(result)} series: {result}"
        return float(result[0]["value"][1])

    def wait_for(
        self, expr: str, ready: Callable[[list[dict[str, Any]]], bool], timeout: float = 20.0
    ) -> list[dict[str, Any]]:
        """Poll ``expr`` until ``ready(result)``; raise TimeoutError after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        result: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            result = self.query(expr)
            if ready(result):
                return result
            time.sleep(0.2)
        raise TimeoutError(f"{expr} not ready after {timeout}s (last: {result})")

    def wait_for_rules(self, timeout: float = 20.0) -> Any:
        """Wait until the rule files are loaded; return ``/api/v1/rules``' data."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            data = self.api("rules")
            if data["groups"]:
                return data
            time.sleep(0.2)
        raise TimeoutError(f"no rule groups loaded after {timeout}s: {self.log_tail()}")

    def wait_for_scrapes(self, scrapes: int = 1, timeout: float = 20.0) -> None:
        """Wait until every target is up and has been scraped at least ``scrapes`` times."""
        expr = f'count_over_time(up{{job="{self.job}"}}[1h]) >= {scrapes}'
        want = len(self.targets)
        self.wait_for(expr, lambda r: len(r) == want, timeout)
        up = self.query(f'up{{job="{self.job}"}} == 0')
        assert not up, f"targets down: {up}"


@pytest.fixture
def prometheus_server(
    tmp_path: Path,
) -> Iterator[Callable[..., PrometheusServer]]:
    """Yield a factory ``start(targets, **kw) -> PrometheusServer``; all are stopped after."""
    started: list[PrometheusServer] = []

    def start(targets: Sequence[str], **kw: Any) -> PrometheusServer:
        server = PrometheusServer(tmp_path / f"prometheus-{len(started)}", targets, **kw)
        started.append(server)
        return server.start()

    try:
        yield start
    finally:
        for server in started:
            server.stop()


# --- promtool --------------------------------------------------------------------------------


def check_metrics(exposition: str | bytes) -> list[str]:
    """Return ``promtool check metrics``' complaints about an exposition (empty when clean)."""
    data = exposition.encode() if isinstance(exposition, str) else exposition
    proc = subprocess.run(
        [binary("promtool"), "check", "metrics"],
        input=data,
        capture_output=True,
        timeout=60,
        check=False,
    )
    out = (proc.stdout + proc.stderr).decode(errors="replace")
    lines = [ln.strip() for ln in out.splitlines() if ln.strip()]
    if proc.returncode not in (0, 3) and not lines:  # 3: lint problems only
        lines = [f"promtool check metrics exited {proc.returncode}"]
    return lines


def check_promql(exprs: Sequence[str], workdir: Path) -> str:
    """Parse every expression with promtool (as recording rules); return its complaints.

    Returns an empty string when all parse.
    """
    rules = {
        "groups": [
            {
                "name": "parse-only",
                "rules": [{"record": f"parse:check{n}", "expr": e} for n, e in enumerate(exprs)],
            }
        ]
    }
    path = workdir / "parse-check.rules.yml"
    path.write_text(json.dumps(rules))
    proc = subprocess.run(
        [binary("promtool"), "check", "rules", str(path)],
        capture_output=True,
        timeout=60,
        check=False,
    )
    if proc.returncode == 0:
        return ""
    return (proc.stdout + proc.stderr).decode(errors="replace")


# --- PromQL shape --------------------------------------------------------------------------

AGGREGATIONS = frozenset(
    {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values"}
    | {"bottomk", "topk", "quantile", "limitk", "limit_ratio"}
)
# Aggregations that give the same answer whether one replica or several export a series.
DEDUPLICATING = frozenset({"max", "min", "avg", "group"})
LABEL_LISTS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
NO_LABELS = frozenset({"absent", "absent_over_time"})
TARGET_LABELS = ("instance", "job")
OUR_METRICS = re.compile(r"^(claude|batch_monitor)_[a-z0-9_]*$")
# Per-process metrics: each replica exports its own value (they may keep `instance`).
PER_REPLICA = frozenset(
    {
        "batch_monitor_leader",
        "batch_monitor_build_info",
        "batch_monitor_job_duration_seconds",
        "batch_monitor_job_interval_seconds",
        "batch_monitor_job_runs_total",
    }
)
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_TOKEN = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*|[0-9][0-9.eE+-]*[a-z]*|\S")


def _tokens(expr: str) -> list[str]:
    text = _STRINGS.sub('""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    return _TOKEN.findall(text)


def selectors(expr: str) -> list[str]:
    """Return the metric names ``expr`` selects (ours and others)."""
    toks = _tokens(expr)
    out = []
    for i, t in enumerate(toks):
        nxt = toks[i + 1] if i + 1 < len(toks) else ""
        if re.match(r"^[A-Za-z_:]", t) and nxt != "(" and re.match(r"^[a-z_:]+[a-z0-9_:]*$", t):
            if t in LABEL_LISTS or t in {"bool", "offset", "and", "or", "unless", "atan2"}:
                continue
            out.append(t)
    return out


def replica_problems(expr: str) -> list[str]:
    """Return why ``expr`` would be wrong with several replicas (empty when it is right).

    Every replica exports the same stored totals, so each selector of a ``claude_*`` or
    ``batch_monitor_*`` metric must sit inside an aggregation that drops the target labels
    ``instance`` and ``job`` (``by(...)`` without them, ``without(instance, job)``, or no
    grouping), and for stored totals the innermost aggregation must be one that ignores
    duplicates (max, min, avg, group): a ``sum`` straight over replicas would double the
    figure. Per-process metrics (``PER_REPLICA``) may keep ``instance`` and may be summed.
    Only the prefix form ``max by(l) (...)`` is understood.
    """
    toks = _tokens(expr)
    problems: list[str] = []
    # Each frame: (kind, name, grouping) where grouping is None, ("by", labels) or
    # ("without", labels).
    stack: list[tuple[str, str, tuple[str, frozenset[str]] | None]] = []
    i = 0

    def label_list(j: int) -> tuple[frozenset[str], int]:
        # toks[j] == "(": return the labels up to the matching ")" and the index after it
        labels = []
        j += 1
        while j < len(toks) and toks[j] != ")":
            if toks[j] != ",":
                labels.append(toks[j])
            j += 1
        return frozenset(labels), j + 1

    while i < len(toks):
        t = toks[i]
        nxt = toks[i + 1] if i + 1 < len(toks) else ""
        if t == "(":
            stack.append(("paren", "", None))
        elif t == ")":
            if stack:
                stack.pop()
            if i + 1 < len(toks) and toks[i + 1] in ("by", "without"):
                problems.append(f"{expr!r}: write the grouping before the body: max by(...) (...)")
        elif t in LABEL_LISTS and nxt == "(":
            _, i = label_list(i + 1)
            continue
        elif t in AGGREGATIONS and nxt in ("by", "without"):
            labels, j = label_list(i + 2)
            stack.append(("agg", t, (nxt, labels)))
            i = j + 1  # skip the body's "("
            continue
        elif t in AGGREGATIONS and nxt == "(":
            stack.append(("agg", t, None))
            i += 2
            continue
        elif re.match(r"^[A-Za-z_]", t) and nxt == "(":
            stack.append(("func", t, None))
            i += 2
            continue
        elif OUR_METRICS.match(t):
            problems.extend(_check_selector(expr, t, stack))
        i += 1
    return problems


def _check_selector(
    expr: str, metric: str, stack: list[tuple[str, str, tuple[str, frozenset[str]] | None]]
) -> list[str]:
    per_replica = metric in PER_REPLICA
    if any(kind == "func" and name in NO_LABELS for kind, name, _ in stack):
        return []
    aggs = [(name, grouping) for kind, name, grouping in stack if kind == "agg"]
    if not aggs:
        return [f"{expr!r}: {metric} is not aggregated (it would give one series per replica)"]
    name, grouping = aggs[-1]  # the innermost aggregation meets the replicas first
    must_drop = ("job",) if per_replica else TARGET_LABELS
    if grouping is not None:
        how, labels = grouping
        kept = [lb for lb in must_drop if (lb in labels) == (how == "by")]
        if kept:
            return [f"{expr!r}: {name} {how}({', '.join(sorted(labels))}) keeps {kept} of {metric}"]
    if not per_replica and name not in DEDUPLICATING:
        return [
            f"{expr!r}: {name} over {metric} adds up the replicas' copies of the same stored "
            "total; take max by(...) first"
        ]
    return []


def range_selectors(expr: str) -> list[str]:
    """Return the contents of every ``[...]`` range (or subquery) in ``expr``."""
    return re.findall(r"\[([^\]]*)\]", _STRINGS.sub('""', expr))


def counter_problems(expr: str) -> list[str]:
    """Return counters (``_total``, ``_bucket``) not read through rate/irate/increase."""
    toks = _tokens(expr)
    stack: list[str] = []
    problems = []
    for i, t in enumerate(toks):
        nxt = toks[i + 1] if i + 1 < len(toks) else ""
        if t == "(":
            prev = toks[i - 1] if i else ""
            stack.append(prev if re.match(r"^[A-Za-z_]", prev) else "")
        elif t == ")":
            if stack:
                stack.pop()
        elif nxt != "(" and t.endswith(("_total", "_bucket")) and OUR_METRICS.match(t):
            funcs = [f for f in stack if f and f not in AGGREGATIONS and f not in LABEL_LISTS]
            if not funcs or funcs[-1] not in ("rate", "irate", "increase"):
                problems.append(f"{expr!r}: counter {t} is not read with rate/irate/increase")
    return problems


# --- a stand-in exporter serving the metric contract (issue 9) ----------------------------

# name -> (type, labels): the names and labels the exporter serves and the boards/rules read.
CONTRACT: dict[str, tuple[str, tuple[str, ...]]] = {
    "claude_cost_usd_total": ("counter", ("service_tier", "model", "workspace")),
    "claude_billed_cost_usd_total": ("counter", ("service_tier", "model", "workspace")),
    "claude_tokens_total": ("counter", ("service_tier", "model", "workspace", "token_type")),
    "claude_requests_total": ("counter", ("service_tier", "model", "workspace")),
    "claude_batch_savings_usd_total": ("counter", ("model", "workspace")),
    "claude_batches_total": ("counter", ("workspace", "status")),
    "claude_batch_requests_total": ("counter", ("workspace", "result")),
    "claude_batch_turnaround_seconds": ("histogram", ()),
    "claude_batches_in_progress": ("gauge", ("workspace",)),
    "claude_batch_oldest_in_progress_age_seconds": ("gauge", ("workspace",)),
    "claude_batch_share_ratio": ("gauge", ("basis", "window")),
    "claude_batch_failure_ratio": ("gauge", ("window",)),
    "claude_batch_expired_ratio": ("gauge", ("window",)),
    "claude_batch_turnaround_p50_seconds": ("gauge", ("window",)),
    "claude_batch_turnaround_p95_seconds": ("gauge", ("window",)),
    "claude_cost_drift_ratio": ("gauge", ("window",)),
    "claude_advisor_monthly_savings_usd": ("gauge", ("workload", "recommendation")),
    "batch_monitor_build_info": ("gauge", ("version",)),
    "batch_monitor_leader": ("gauge", ()),
    "batch_monitor_collect_last_success_timestamp_seconds": ("gauge", ("source",)),
    "batch_monitor_collect_errors_total": ("counter", ("source",)),
    "batch_monitor_job_duration_seconds": ("gauge", ("job",)),
    "batch_monitor_job_interval_seconds": ("gauge", ("job",)),
    "batch_monitor_job_runs_total": ("counter", ("job", "outcome")),
    "batch_monitor_alerts": ("gauge", ("rule", "severity", "state")),
    "batch_monitor_notifications_total": ("counter", ("channel", "outcome")),
    "batch_monitor_unpriced_tokens_total": ("counter", ("model",)),
}
TURNAROUND_BUCKETS = (60, 300, 900, 1800, 3600, 5400, 7200, 14400, 43200, 86400)
SAMPLE_LABELS: dict[str, tuple[str, ...]] = {
    "service_tier": ("standard", "batch"),
    "model": ("claude-sonnet-4-6", "claude-haiku-4-5"),
    "workspace": ("default", "wrkspc_research"),
    "token_type": ("input", "output"),
    "status": ("ended", "expired"),
    "result": ("succeeded", "errored"),
    "basis": ("requests", "spend"),
    "window": ("1d", "7d"),
    "workload": ("summarize",),
    "recommendation": ("BATCH",),
    "version": ("0.1.0",),
    "source": ("batches", "usage"),
    "job": ("collect_batches",),
    "outcome": ("ok", "failed", "permanent"),
    "rule": ("batch_share_requests",),
    "severity": ("warning",),
    "state": ("firing",),
    "channel": ("slack",),
}


class ContractMetrics:
    """A collector serving every CONTRACT metric with sample labels (a stand-in exporter).

    Counters grow linearly from ``t0`` and gauges are fixed, so every replica built with the
    same ``t0`` exports the same stored totals; ``leader`` sets batch_monitor_leader.
    """

    def __init__(self, t0: float, *, leader: bool) -> None:
        self.t0 = t0
        self.leader = leader

    def collect(self) -> Iterator[Any]:
        """Yield one metric family per contract metric."""
        import itertools

        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        elapsed = time.time() - self.t0
        for n, (name, (kind, labels)) in enumerate(CONTRACT.items()):
            if kind == "histogram":
                ended = 10 + elapsed  # one batch ends per second
                buckets = [
                    (str(float(le)), ended * min(1.0, le / 7200)) for le in TURNAROUND_BUCKETS
                ]
                yield HistogramMetricFamily(
                    name, "contract", buckets=[*buckets, ("+Inf", ended)], sum_value=ended * 3000
                )
                continue
            family: Any
            if kind == "counter":
                family = CounterMetricFamily(name.removesuffix("_total"), "contract", labels=labels)
            else:
                family = GaugeMetricFamily(name, "contract", labels=labels)
            combos = itertools.product(*(SAMPLE_LABELS[lb] for lb in labels))
            for k, values in enumerate(combos):
                family.add_metric(list(values), self._value(name, kind, n + k, elapsed))
            yield family

    def _value(self, name: str, kind: str, seed: int, elapsed: float) -> float:
        if name == "batch_monitor_leader":
            return 1.0 if self.leader else 0.0
        if name == "batch_monitor_collect_last_success_timestamp_seconds":
            return self.t0 - 60 * seed
        if name.endswith("_ratio"):
            return 0.1 + 0.05 * (seed % 10)
        if kind == "counter":
            return 100.0 * (seed + 1) + (seed + 1) * elapsed
        return float(60 * (seed + 1))
