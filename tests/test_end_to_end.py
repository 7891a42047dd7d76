"""End to end: the simulator's scenario, collected, evaluated and delivered to a fake Slack.

Time is moved by the test (the simulator's clock and the ``now`` given to every step). The
expected alerts are derived from the scenario's ground truth, not from the monitor's figures.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from pydantic import SecretStr
from sqlmodel import Session

from monitor import db
from monitor.alerts import evaluate_all
from monitor.collect import collect_source
from monitor.config import AlertingSection, Settings
from monitor.notifiers.delivery import deliver_pending
from monitor.notifiers.slack import from_settings as slack_from_settings
from monitor.rules import load_rules
from monitor.simulator import SimulatorServer, Truth, build_scenario
from monitor.sources.batches import from_settings as batches_from_settings
from tests.fakeslack import FakeSlack
from tests.simkit import settings_for

H = timedelta(hours=1)
RULES = [
    {"name": "batch_failure_rate", "kind": "batch_failure_rate", "threshold": 0.005,
     "window": "24h", "severity": "critical", "repeat_interval": "7d"},
    {"name": "batch_expiry_risk", "kind": "batch_expiry_risk", "threshold": "12h",
     "severity": "warning", "repeat_interval": "7d"},
    {"name": "batch_turnaround_p95", "kind": "batch_turnaround_p95", "threshold": "90m",
     "window": "24h", "severity": "warning", "repeat_interval": "7d"},
    {"name": "batch_turnaround_p95", "kind": "batch_turnaround_p95", "threshold": "2h",
     "window": "24h", "severity": "critical", "repeat_interval": "7d"},
]  # fmt: skip


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        yield fake


def _settings(sim: SimulatorServer, slack: FakeSlack) -> Settings:
    base = settings_for(sim)
    return Settings(
        **{
            **base.__dict__,
            "rules": tuple(RULES),
            "alerting": AlertingSection(default_rules=False),
            "slack_bot_token": SecretStr(slack.token),
            "slack_channel": "#alerts",
            "slack_base_url": slack.base_url,
        }
    )


def _oracle(truth: Truth, now: datetime) -> dict[str, bool]:
    """Say which rule conditions hold at ``now``, straight from the scenario's truth."""
    ended = [
        b for b in truth.batches.values()
        if b.ended_at is not None and now - 24 * H <= b.ended_at < now
    ]  # fmt: skip
    requests = sum(b.request_count for b in ended)
    failed = sum(b.counts["errored"] + b.counts["expired"] for b in ended)
    turnarounds = sorted(b.turnaround_seconds or 0.0 for b in ended)
    p95 = turnarounds[max(0, -(-len(turnarounds) * 95 // 100) - 1)] if turnarounds else None
    ages = [(now - b.created_at) for b in truth.batches.values() if b.ended_at is None]
    return {
        "failure": requests > 0 and failed / requests > 0.005,
        "expiry": any(a >= 12 * H for a in ages),
        "turnaround_warning": p95 is not None and p95 > 90 * 60,
        "turnaround_critical": p95 is not None and p95 > 2 * 3600,
    }


def test_scenario_alerts_reach_slack_once_each(db_url: str, slack: FakeSlack) -> None:
    scenario = build_scenario("small")
    hours = (4, 8, 12, 16, 20, 24, 28, 32, 40)
    with SimulatorServer(scenario, now=scenario.start) as sim:
        settings = _settings(sim, slack)
        rules = load_rules(settings)
        engine = db.make_engine(db_url)
        expected: list[list[tuple[str, bool, str, str]]] = []
        got: list[list[tuple[str, bool, str, str]]] = []
        seen = 0
        previous: dict[str, bool] = {}
        try:
            for h in hours:
                now = scenario.start + h * H
                sim.set_now(now)
                if h == 16:
                    slack.start_outage()  # the expiry warning is queued, not lost
                if h == 20:
                    slack.end_outage()
                    engine.dispose()  # a restart: new engine, new notifier, same database
                    engine = db.make_engine(db_url)
                with Session(engine) as session:
                    src = batches_from_settings("batches", settings)
                    assert src is not None
                    assert collect_source(src, session, now).run.status == "ok"
                    evaluate_all(session, now, rules, settings=settings)
                    notifier = slack_from_settings(settings)
                    assert notifier is not None
                    deliver_pending(session, now, [notifier], "e2e")
                # Compare step by step; within one step the order of rules is not a contract.
                expected.append(
                    sorted(_transitions(previous, _oracle(scenario.truth(now), now), h))
                )
                got.append(sorted(_calls(slack.requests[seen:])))
                seen = len(slack.requests)
        finally:
            engine.dispose()

    assert list(zip(hours, got, strict=True)) == list(zip(hours, expected, strict=True))
    # Sanity: the scenario exercised every transition kind this test is about.
    assert {(m, k) for step in got for m, _, k, _ in step} >= {
        ("chat.postMessage", "firing"), ("chat.update", "resolved"),
        ("chat.postMessage", "resolved"),
    }  # fmt: skip


def _transitions(previous: dict[str, bool], now: dict[str, bool], h: int) -> list[Any]:
    """Turn the oracle's conditions into the Slack calls the monitor should make."""
    out: list[Any] = []
    # The failure-rate alert fires once and stays firing while the window has failures.
    if now["failure"] and not previous.get("failure"):
        out.append(("chat.postMessage", False, "firing", "batch_failure_rate"))
    if now["expiry"] and not previous.get("expiry") and h != 16:
        out.append(("chat.postMessage", False, "firing", "batch_expiry_risk"))
    if h == 20 and previous.get("expiry"):
        # Queued during the outage at 16 h, delivered once Slack is back.
        out.append(("chat.postMessage", False, "firing", "batch_expiry_risk"))
    if previous.get("expiry") and not now["expiry"]:
        out.append(("chat.update", False, "resolved", "batch_expiry_risk"))  # edits by ts
        out.append(("chat.postMessage", True, "resolved", "batch_expiry_risk"))
    # A firing critical turnaround alert mutes the warning of the same rule and scope.
    if (now["turnaround_critical"] and not previous.get("turnaround_critical")) or (
        now["turnaround_warning"] and not previous.get("turnaround_warning")
    ):
        out.append(("chat.postMessage", False, "firing", "batch_turnaround_p95"))
    previous.clear()
    previous.update(now)
    return out


def _calls(requests: Any) -> list[tuple[str, bool, str, str]]:
    """Summarise the Slack calls that succeeded: method, threaded?, firing/resolved, rule."""
    return [
        (r.method, r.body.get("thread_ts") is not None, _kind(r.title), _rule(r.title))
        for r in requests
        if r.status == 200 and r.error is None and r.method != "auth.test"
    ]


def _kind(title: str) -> str:
    return "resolved" if "Resolved" in title else "firing"


def _rule(title: str) -> str:
    for name in ("batch_failure_rate", "batch_expiry_risk", "batch_turnaround_p95"):
        if name in title:
            return name
    return title
