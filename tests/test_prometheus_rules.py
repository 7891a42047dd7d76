"""Prometheus files: generated = committed, promtool accepts them, every alert is unit-tested.

Also tests ``tests/promkit.py`` itself against a real Prometheus scraping a tiny exposition
server, and loads ``alerts.yml`` into it.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest, start_http_server

from prometheus import build
from tests import promkit
from tests.promkit import PrometheusServer

prometheus_server = promkit.prometheus_server  # the fixture, for this module

PROM_DIR = build.ROOT
MONITOR_RULES = Path(__file__).resolve().parent.parent / "monitor" / "rules.py"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    """Run promtool in prometheus/ and return the finished process."""
    return subprocess.run(
        [promkit.binary("promtool"), *args],
        cwd=PROM_DIR,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_generated_files_are_committed() -> None:
    stale = build.stale_files()
    assert not stale, f"regenerate with `python -m prometheus.build`: {stale}"


def test_promtool_check_rules() -> None:
    proc = promtool("check", "rules", "alerts.yml")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(build.RECORDS) + len(build.ALERTS)} rules found" in proc.stdout


def test_promtool_check_config() -> None:
    proc = promtool("check", "config", "prometheus.yml")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_promtool_test_rules() -> None:
    proc = promtool("test", "rules", *build.TEST_FILES)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("SUCCESS") == len(build.TEST_FILES)


def test_every_alert_fires_in_one_case_and_stays_quiet_in_another() -> None:
    cases = build.cases()
    for alert in build.ALERTS:
        mine = [c for c in cases if c.alert == alert.name]
        fires = [c for c in mine if any(lb["severity"] == alert.severity for lb, _ in c.fires)]
        quiet = [c for c in mine if all(lb["severity"] != alert.severity for lb, _ in c.fires)]
        assert fires, f"no case where {alert.name} ({alert.severity}) fires"
        assert quiet, f"no case where {alert.name} ({alert.severity}) stays quiet"


def test_builtin_alerts_mirror_the_product_defaults() -> None:
    """Names and severities match monitor/rules.py default_entries; thresholds appear as set."""
    from monitor.rulekinds import default_entries

    defaults = {(e["name"], e["severity"]) for e in default_entries()}
    mirrored = {(a.name, a.severity) for a in build.BUILTIN}
    assert mirrored == defaults
    by_key = {(a.name, a.severity): a for a in build.BUILTIN}
    expected = {
        ("batch_share_requests", "warning"): ("< 0.5", "30m"),
        ("batch_share_spend", "warning"): ("< 0.4", "30m"),
        ("batch_turnaround_p95", "warning"): ("> 5400", ""),
        ("batch_turnaround_p95", "critical"): ("> 7200", ""),
        ("batch_failure_rate", "critical"): ("> 0.005", ""),
        ("batch_expiry_risk", "warning"): (">= 43200", ""),
        ("cost_drift", "warning"): ("> 0.02", ""),
        ("spend_increase", "warning"): ("> 0.25", ""),
        ("batch_candidate", "info"): (">= 10", ""),
        ("collector_stale", "critical"): ("> 1800", ""),
    }
    for e in default_entries():
        want_expr, want_for = expected[(e["name"], e["severity"])]
        alert = by_key[(e["name"], e["severity"])]
        assert want_expr in alert.expr, (alert.name, alert.expr)
        assert alert.for_ == e.get("for", ""), alert.name
        assert alert.for_ == want_for


def test_rules_stay_right_with_several_replicas(tmp_path: Path) -> None:
    exprs = [e for _, e in build.alert_promql()]
    assert promkit.check_promql(exprs, tmp_path) == ""
    problems = [p for e in exprs for p in promkit.replica_problems(e)]
    assert not problems, "\n".join(problems)


# --- promkit itself ---------------------------------------------------------------------------


@pytest.fixture
def exposition() -> Iterator[tuple[str, Gauge, CollectorRegistry]]:
    """Serve a fresh registry with one gauge on a free port; yield (host:port, gauge, reg)."""
    registry = CollectorRegistry()
    gauge = Gauge(
        "promkit_test_value", "A value set by the test.", ["scheduler"], registry=registry
    )
    gauge.labels(scheduler="collect_usage").set(42.5)
    port = promkit.free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        yield f"127.0.0.1:{port}", gauge, registry
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_promkit_scrapes_a_local_exposition(
    exposition: tuple[str, Gauge, CollectorRegistry],
    prometheus_server: Callable[..., PrometheusServer],
) -> None:
    target, gauge, _ = exposition
    prom = prometheus_server([target])
    prom.wait_for_scrapes(1)
    result = prom.query("promkit_test_value")
    assert len(result) == 1
    assert float(result[0]["value"][1]) == 42.5
    labels = result[0]["metric"]
    assert labels["instance"] == target
    assert labels["job"] == "batch-monitor"
    # A new value comes back through PromQL after the next scrape.
    gauge.labels(scheduler="collect_usage").set(7)
    prom.wait_for("promkit_test_value == 7", lambda r: len(r) == 1, timeout=10)
    with pytest.raises(promkit.PromQLError):
        prom.query("sum(")


def test_promkit_stops_the_server(
    exposition: tuple[str, Gauge, CollectorRegistry], tmp_path: Path
) -> None:
    target, _, _ = exposition
    with PrometheusServer(tmp_path / "p", [target]) as prom:
        assert prom.value("vector(1)") == 1.0
        proc = prom.proc
    assert proc is not None and proc.poll() is not None


def test_exported_job_label_is_renamed(
    prometheus_server: Callable[..., PrometheusServer],
) -> None:
    """The exporter's scheduler label `job` arrives as `exported_job` (honor_labels: false)."""
    registry = CollectorRegistry()
    g = Gauge("batch_monitor_job_duration_seconds", "d", ["job"], registry=registry)
    g.labels(job="collect_usage").set(1.5)
    port = promkit.free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        prom = prometheus_server([f"127.0.0.1:{port}"])
        prom.wait_for_scrapes(1)
        [sample] = prom.query("batch_monitor_job_duration_seconds")
        assert sample["metric"]["exported_job"] == "collect_usage"
        assert sample["metric"]["job"] == "batch-monitor"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_alert_rules_load_into_a_real_prometheus(
    prometheus_server: Callable[..., PrometheusServer],
) -> None:
    prom = prometheus_server(["127.0.0.1:1"], rule_files=[PROM_DIR / "alerts.yml"])
    data = prom.wait_for_rules()
    names = {r["name"] for g in data["groups"] for r in g["rules"]}
    assert names == {str(r["record"]) for r in build.RECORDS} | {a.name for a in build.ALERTS}
    # Nothing is scraped, so the dead-man's switch is pending (for: 5m) within a few seconds.
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        alerts = prom.api("alerts")["alerts"]
        if any(a["labels"]["alertname"] == "BatchMonitorDown" for a in alerts):
            break
        time.sleep(0.3)
    else:
        raise AssertionError(f"BatchMonitorDown is not pending: {alerts}")


def test_check_metrics_reports_problems() -> None:
    registry = CollectorRegistry()
    Counter("batch_monitor_good_total", "A well-named counter.", registry=registry).inc()
    assert promkit.check_metrics(generate_latest(registry)) == []
    bad = (
        b"# HELP claude_cost_usd A counter without _total.\n"
        b"# TYPE claude_cost_usd counter\nclaude_cost_usd 1\n"
    )
    complaints = promkit.check_metrics(bad)
    assert any("_total" in c for c in complaints), complaints


def test_replica_problems_catch_double_counting() -> None:
    assert promkit.replica_problems("max by(workspace)(claude_batches_in_progress)") == []
    assert promkit.replica_problems("sum(max by(workspace)(claude_batches_in_progress))") == []
    assert promkit.replica_problems("sum(claude_batches_in_progress)")  # adds replicas up
    assert promkit.replica_problems("claude_batches_in_progress")  # one series per replica
    assert promkit.replica_problems("max by(instance)(claude_batches_in_progress)")
    assert promkit.replica_problems("max without(instance)(claude_batches_in_progress)")
    assert promkit.replica_problems("max without(instance, job)(claude_batches_in_progress)") == []
    assert promkit.replica_problems("max by(instance)(batch_monitor_leader)") == []
    assert promkit.replica_problems("sum by(exported_job)(batch_monitor_job_runs_total)") == []
    assert promkit.replica_problems("absent(batch_monitor_build_info)") == []
