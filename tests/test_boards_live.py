"""The real exporter under a real Prometheus: every board and alert query finds its series.

A store is filled by the daemon's own jobs (one round of ``run --once`` in-process) from the
simulator, served by the exporter, and scraped by the Debian ``prometheus`` binary. Then every
PromQL expression of the dashboards runs through Prometheus' HTTP API and returns series, every
metric selector of ``prometheus/alerts.yml`` matches series, and the key values equal the store.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select
from sqlmodel import Session

from grafana.build import dashboard_promql
from monitor import db, exporter, lease
from monitor.config import Settings
from monitor.models import SpendTotal
from monitor.scheduler import Daemon, build_jobs
from monitor.simulator import SimulatorServer, build_scenario
from monitor.summary import window_figures
from monitor.workloads import Workload
from prometheus.build import alert_promql
from tests import promkit
from tests.conftest import migrate_fresh
from tests.daemonkit import free_port
from tests.simkit import settings_for

prometheus_server = promkit.prometheus_server  # the fixture, for this module
# A selector of one of our metrics, with its label matchers (recorded series have a ':').
_SELECTOR = re.compile(r"\b(?:claude|batch_monitor)_[a-z0-9_]+(?:\{[^}]*\})?")
WORKLOADS = (
    Workload("chat", None, timedelta(minutes=1), True),
    Workload("codereview", None, timedelta(hours=2), False),
    Workload("research", None, timedelta(hours=24), False),
)


@pytest.fixture
def exporter_url(db_url: str, tmp_path: Path) -> Iterator[tuple[str, Engine, datetime]]:
    """Serve the exporter over a store the daemon's jobs filled from the org scenario."""
    migrate_fresh(db_url)
    engine = db.make_engine(db_url)
    scenario = build_scenario("org")
    calls = tmp_path / "calls.jsonl"
    scenario.write_call_logs(calls)
    with SimulatorServer(scenario) as sim:  # frozen at the scenario's end
        base = settings_for(sim, backfill=timedelta(days=10), call_logs=[str(calls)])
        # The advisor needs to know what each workload can wait for (as in the demo).
        settings = Settings(**{**base.__dict__, "workloads": WORKLOADS})
        now = sim.now()
        daemon = Daemon(settings, engine)
        outcomes = daemon.run_once(only_due=False)
        assert all(o.outcome == "ok" for o in outcomes), outcomes
        leading = lease.Leadership(engine, timedelta(minutes=5))
        assert leading.tick()  # this replica leads: the health board reads its job durations
        metrics = exporter.CostMetrics(
            engine,
            settings,
            leadership=leading,
            now=lambda: now,
            job_intervals={j.name: j.interval for j in build_jobs(settings)},
        )
        app = exporter.make_app(engine, settings, metrics, {}, lambda: now)
        port = free_port()
        server, thread = exporter.serve("127.0.0.1", port, app)
        try:
            yield f"127.0.0.1:{port}", engine, now
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=10)
            leading.stop()
            engine.dispose()


def test_every_board_and_alert_query_finds_series(
    exporter_url: tuple[str, Engine, datetime],
    prometheus_server: Callable[..., promkit.PrometheusServer],
) -> None:
    target, engine, now = exporter_url
    prom = prometheus_server([target], scrape_interval="1s")
    prom.wait_for_scrapes(3, timeout=60)
    empty = []
    for board, panel, expr in dashboard_promql():
        if not prom.query(expr):
            empty.append(f"{board} / {panel}: {expr}")
    assert empty == [], "\n".join(empty)
    missing = []
    for name, expr in alert_promql():
        prom.query(expr)  # evaluates without error (it may well be quiet)
        for selector in _SELECTOR.findall(expr):
            if not prom.query(selector):
                missing.append(f"{name}: {selector}")
    assert missing == [], "\n".join(missing)

    # Key values through Prometheus equal the store.
    with Session(engine) as session:
        by_tier: dict[str, float] = {}
        for t in session.execute(select(SpendTotal)).scalars():
            by_tier[t.service_tier] = by_tier.get(t.service_tier, 0.0) + float(t.cost_usd)
        day = window_figures(session, now - timedelta(days=1), now)
    for tier, amount in by_tier.items():
        selector = f'claude_cost_usd_total{{service_tier="{tier}"}}'
        got = prom.value(f"sum(max by(service_tier, model, workspace)({selector}))")
        assert got == pytest.approx(amount, rel=1e-9), tier
    share = prom.value('max(claude_batch_share_ratio{basis="requests", window="1d"})')
    assert share == pytest.approx(day.spend.batch_share_requests)
    p95 = prom.value('max(claude_batch_turnaround_p95_seconds{window="1d"})')
    assert p95 == pytest.approx(day.batches.turnaround_p95_seconds)
