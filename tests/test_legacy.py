"""Legacy mode: with the analytics API refused, the summary and the advice do not change."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session

from monitor import advisor
from monitor.collect import collect_source
from monitor.simulator import SimulatorServer, analytics_refused, build_scenario
from monitor.sources import build as build_source
from monitor.summary import build_summary
from tests.simkit import settings_for

# Figures the legacy report cannot give (it has no request counts), left out of the comparison.
NO_COUNTS = ("batch_share_requests",)


def _collect(session: Session, sim: SimulatorServer) -> Any:
    settings = settings_for(sim, backfill=timedelta(days=3))
    for name in ("batches", "usage", "cost"):
        src = build_source(name, settings)
        assert src is not None
        result = collect_source(src, session, sim.now())
        assert result.ok, result.run.error
    return settings


def _money(data: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in data.items() if k not in (*NO_COUNTS, "sources", "notes")}
    return out


def test_legacy_reports_give_the_same_summary_and_advice(engine: Engine) -> None:
    scenario = build_scenario("small")
    results: dict[str, Any] = {}
    for mode in ("analytics", "legacy"):
        faults = [analytics_refused(403)] if mode == "legacy" else []
        with SimulatorServer(scenario, faults=faults) as sim, Session(engine) as session:
            for table in reversed(__import__("sqlmodel").SQLModel.metadata.sorted_tables):
                session.execute(table.delete())
            session.commit()
            settings = _collect(session, sim)
            now = sim.now()
            since = scenario.start
            default_ws = scenario.default_workspace.id
            results[mode] = {
                "summary": _money(build_summary(session, since, now, now).to_json()),
                "default_ws": _money(
                    build_summary(session, since, now, now, workspace=default_ws).to_json()
                ),
                "advice": sorted(
                    (r.workload, r.model, r.recommendation, str(r.monthly_savings_usd))
                    for r in advisor.advise(session, now, settings, window=timedelta(days=30))
                ),
            }
    analytics, legacy = results["analytics"], results["legacy"]
    assert analytics["summary"]["realtime_cost_usd"] not in (None, "0.00")
    assert legacy["summary"] == analytics["summary"]
    # The default workspace is named by no id in the legacy report: still its own workspace.
    assert legacy["default_ws"] == analytics["default_ws"]
    assert analytics["default_ws"]["realtime_cost_usd"] not in (None, "0.00")
    assert all(row["workspace"] for row in legacy["summary"]["by_workspace"])
    assert legacy["advice"] and legacy["advice"] == analytics["advice"]
