"""`advise` against the simulator's ground truth: the org scenario's call log, to the cent."""

from __future__ import annotations

import math
from datetime import timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

from sqlalchemy import Engine
from sqlmodel import Session

from monitor.advisor import advise
from monitor.collect import collect_source
from monitor.config import CollectSection, load_settings
from monitor.simulator import build_scenario
from monitor.sources.call_logs import from_settings

CENT = Decimal("0.01")
WORKLOADS = """
[[workloads]]
name = "chat"
max_latency = "1m"
user_facing = true

[[workloads]]
name = "codereview"
max_latency = "2h"

[[workloads]]
name = "research"
max_latency = "24h"
user_facing = false
"""


def _cents(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def test_advise_matches_the_scenario_truth(engine: Engine, tmp_path: Path) -> None:
    scenario = build_scenario("org")
    log = tmp_path / "calls.jsonl"
    scenario.write_call_logs(log)
    toml = tmp_path / "monitor.toml"
    toml.write_text(WORKLOADS)
    settings = load_settings({}, toml)
    settings = type(settings)(
        **{**settings.__dict__, "collect": CollectSection(call_logs=[str(log)])}
    )
    truth = scenario.truth()
    with Session(engine) as session:
        source = from_settings("logs", settings)
        assert source is not None
        assert collect_source(source, session, scenario.end).run.status == "ok"
        recs = {r.workload: r for r in advise(session, scenario.end, settings)}

    assert {r: recs[r].recommendation for r in ("chat", "codereview", "research")} == {
        "chat": "REAL-TIME",  # user-facing, 1 minute
        "codereview": "HYBRID",  # 2 h gray zone with priority-high calls
        "research": "BATCH",  # 24 h, nobody waits
    }
    for name in ("chat", "research"):
        calls = [c for c in truth.realtime_calls if c.workload == name]
        span = max(1, math.ceil((calls[-1].at - calls[0].at) / timedelta(days=1)))
        standard = truth.workloads[name].realtime.standard_cost_usd  # priced calls only
        r = recs[name]
        assert r.latency_source == "declared"
        assert r.requests_per_day is not None
        assert abs(r.requests_per_day - len(calls) / span) < 1e-9
        assert r.monthly_standard_usd is not None and r.monthly_batch_usd is not None
        assert _cents(r.monthly_standard_usd) == _cents(standard * 30 / span)
        # Batch is exactly half of every token category, cache and data residency included.
        assert _cents(r.monthly_batch_usd) == _cents(standard / 2 * 30 / span)
        assert r.monthly_savings_usd == r.monthly_standard_usd - r.monthly_batch_usd
