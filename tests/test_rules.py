"""Rules: each kind measured from rows inserted directly, exact values; configuration checks."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlmodel import Session, select

from monitor.alerts import evaluate_all
from monitor.config import ConfigError, Settings, load_settings
from monitor.models import Advice, AlertEvent, AlertState, Batch, CallBucket
from monitor.rulekinds import SPECS as KINDS
from monitor.rulekinds import default_entries, validate_rule_entries
from monitor.rules import evaluate, load_rules
from monitor.workloads import Workload
from tests.conftest import utc
from tests.factories import RULES_WHERE as WHERE
from tests.factories import H, add_batch, add_billed, add_run, add_usage, measured, rule

NOW = utc(2026, 11, 20, 12)


# --- batch_share ----------------------------------------------------------------------------


def _share_rows(session: Session) -> None:
    add_usage(session, NOW - 2 * H, cost="6.00", requests=600, workspace="wrkspc_a")
    add_batch(session, "a1", created=NOW - 3 * H, ended=NOW - H, requests=400, cost="2.00")
    add_usage(session, NOW - 2 * H, cost="1.00", requests=100, workspace="wrkspc_b")
    add_batch(
        session, "b1", created=NOW - 3 * H, ended=NOW - H, requests=900, cost="9.00",
        workspace="wrkspc_b",
    )  # fmt: skip
    # Outside the 24 h window: must not count.
    add_usage(session, NOW - 30 * H, cost="500", requests=50_000, workspace="wrkspc_a")
    session.commit()


def test_batch_share_of_requests_and_spend(session: Session) -> None:
    _share_rows(session)
    by_requests = evaluate(rule("batch_share", 0.5), session, NOW)
    # 400 + 900 batch of 1,300 + 700 requests.
    assert measured(by_requests) == [({}, 0.65, False)]
    assert by_requests[0].reason == (
        "batch share of requests 65 % is not below 50 % over 24h (1,300 batch of 2,000 requests)"
    )
    ws_a = evaluate(rule("batch_share", 0.5, filters={"workspace": "wrkspc_a"}), session, NOW)
    assert measured(ws_a) == [({"workspace": "wrkspc_a"}, 0.4, True)]
    spend = evaluate(rule("batch_share", 0.6, basis="spend"), session, NOW)
    # batch $11 of $18 total
    assert measured(spend) == [({}, float(Decimal(11) / Decimal(18)), False)]


def test_batch_share_group_by_workspace(session: Session) -> None:
    _share_rows(session)
    evaluations = evaluate(rule("batch_share", 0.5, group_by=["workspace"]), session, NOW)
    assert measured(evaluations) == [
        ({"workspace": "wrkspc_a"}, 0.4, True),
        ({"workspace": "wrkspc_b"}, 0.9, False),
    ]
    assert evaluations[0].labels == {
        "rule": "t_batch_share",
        "severity": "warning",
        "workspace": "wrkspc_a",
    }
    assert evaluations[0].fingerprint != evaluations[1].fingerprint


def test_unread_batch_results_make_spend_rules_no_data(session: Session) -> None:
    from monitor import rollups
    from monitor.summary import build_summary, spend_figures

    _share_rows(session)
    # An ended batch whose results were not read yet: its cost is unknown, not $0.
    add_batch(session, "u1", created=NOW - 3 * H, ended=NOW - 2 * H, requests=300)
    unread = session.get(Batch, "u1")
    assert unread is not None
    unread.results_state, unread.cost_usd = "retry", None
    session.commit()
    fig = spend_figures(session, NOW - 24 * H, NOW)
    assert fig.batch_unread_share == 300 / 1600
    assert fig.batch_cost_usd == Decimal("11.00")  # what is known, said to be a lower bound
    [spend] = evaluate(rule("batch_share", 0.6, basis="spend"), session, NOW)
    assert (spend.value, spend.condition) == (None, None)
    assert "have results not read yet" in spend.reason and "18.75 %" in spend.reason
    # The request share does not depend on the results: it is still judged.
    [reqs] = evaluate(rule("batch_share", 0.5), session, NOW)
    assert reqs.value == 1600 / 2300 and reqs.condition is False

    # The summary says so, from the raw rows and from the rolled-up day alike.
    day = utc(2026, 11, 20)
    for rolled in (False, True):
        if rolled:
            rollups.mark_dirty(session, [day], NOW)
            session.commit()
            assert rollups.refresh(session, NOW).days == 1
        summary = build_summary(session, day, day + 24 * H, day + 48 * H)
        assert summary.to_json()["batches_results_unread"] == 1, rolled
        assert any("lower bound" in n and "not read yet" in n for n in summary.notes), rolled

    # Read at last: the rule judges the spend again.
    unread.results_state, unread.cost_usd = "ingested", Decimal("3.00")
    session.commit()
    [spend] = evaluate(rule("batch_share", 0.6, basis="spend"), session, NOW)
    assert spend.value == float(Decimal(14) / Decimal(21))


def test_unread_results_keep_spend_increase_from_judging(session: Session) -> None:
    add_usage(session, NOW - timedelta(days=14), cost="40.00")
    add_usage(session, NOW - timedelta(days=10), cost="60.00")
    add_usage(session, NOW - timedelta(days=2), cost="10.00")
    add_batch(session, "u1", created=NOW - timedelta(days=2), ended=NOW - timedelta(days=1),
              requests=500)  # fmt: skip
    unread = session.get(Batch, "u1")
    assert unread is not None
    unread.results_state, unread.cost_usd = "unavailable", None
    session.commit()
    [ev] = evaluate(rule("spend_increase", 0.25, window="7d"), session, NOW)
    # Without the guard, -90 % "growth" would be judged from spend that is only a lower bound.
    assert (ev.value, ev.condition) == (None, None)
    assert "last 7d have results not read yet" in ev.reason


def test_batch_share_without_requests_is_no_data(session: Session) -> None:
    [ev] = evaluate(rule("batch_share", 0.5), session, NOW)
    assert (ev.value, ev.condition, ev.state_word) == (None, None, "no-data")
    assert ev.reason.startswith("no data: no requests recorded in the window")


# --- batch_turnaround_p95 -----------------------------------------------------------------


def _turnaround_rows(session: Session) -> None:
    # 20 batches ending in the window, turnarounds 10, 20, ... 200 minutes.
    for i in range(1, 21):
        add_batch(
            session, f"t{i}", created=NOW - 5 * H - i * timedelta(minutes=10), ended=NOW - 5 * H,
            workload="reports" if i > 10 else "etl",
        )  # fmt: skip
    # Ended before the window (huge turnaround) and still running: both ignored.
    add_batch(session, "old", created=NOW - 50 * H, ended=NOW - 26 * H)
    add_batch(session, "running", created=NOW - 20 * H)
    session.commit()


def test_turnaround_p95_is_nearest_rank_over_ended_batches(session: Session) -> None:
    _turnaround_rows(session)
    # Nearest rank: ceil(20 * 0.95) = 19th of 20 sorted values = 190 minutes.
    warn = evaluate(rule("batch_turnaround_p95", "90m"), session, NOW)
    assert measured(warn) == [({}, 11400.0, True)]
    assert warn[0].reason == (
        "p95 batch turnaround 3h10m is above 1h30m over 24h (20 batches ended)"
    )
    assert measured(evaluate(rule("batch_turnaround_p95", "4h"), session, NOW)) == [
        ({}, 11400.0, False)
    ]
    # A number is read as seconds.
    assert evaluate(rule("batch_turnaround_p95", 11400), session, NOW)[0].condition is False


def test_turnaround_group_by_workload(session: Session) -> None:
    _turnaround_rows(session)
    evaluations = evaluate(rule("batch_turnaround_p95", "2h", group_by=["workload"]), session, NOW)
    # etl: 10..100 min (p95 = 100 min); reports: 110..200 min (p95 = 200 min).
    assert measured(evaluations) == [
        ({"workload": "etl"}, 6000.0, False),
        ({"workload": "reports"}, 12000.0, True),
    ]


def test_turnaround_without_ended_batches_is_no_data(session: Session) -> None:
    add_batch(session, "running", created=NOW - 2 * H)
    session.commit()
    [ev] = evaluate(rule("batch_turnaround_p95", "90m"), session, NOW)
    assert (ev.value, ev.condition) == (None, None)
    assert ev.reason == "no data: no batch ended in the last 24h"
    grouped = evaluate(rule("batch_turnaround_p95", "90m", group_by=["workspace"]), session, NOW)
    assert measured(grouped) == [({}, None, None)]


# --- batch_failure_rate -------------------------------------------------------------------


def _failure_rows(session: Session) -> None:
    add_batch(session, "a", created=NOW - 3 * H, ended=NOW - H, requests=1000, errored=3, expired=3)
    add_batch(
        session, "b", created=NOW - 3 * H, ended=NOW - H, requests=1000, errored=1,
        workspace="wrkspc_b",
    )  # fmt: skip
    session.commit()


def test_failure_rate_counts_errored_and_expired(session: Session) -> None:
    _failure_rows(session)
    # 3 + 3 + 1 of 2,000 requests.
    assert measured(evaluate(rule("batch_failure_rate", 0.005), session, NOW)) == [
        ({}, 0.0035, False)
    ]
    only_a = evaluate(
        rule("batch_failure_rate", 0.005, filters={"workspace": "wrkspc_a"}), session, NOW
    )
    assert measured(only_a) == [({"workspace": "wrkspc_a"}, 0.006, True)]
    assert only_a[0].reason == (
        "batch failure rate 0.6 % is above 0.5 % over 24h "
        "(3 errored + 3 expired of 1,000 requests in 1 batches)"
    )


def test_failure_rate_group_by_workspace(session: Session) -> None:
    _failure_rows(session)
    evaluations = evaluate(rule("batch_failure_rate", 0.005, group_by=["workspace"]), session, NOW)
    assert measured(evaluations) == [
        ({"workspace": "wrkspc_a"}, 0.006, True),
        ({"workspace": "wrkspc_b"}, 0.001, False),
    ]


def test_failure_rate_no_data_can_fire(session: Session) -> None:
    quiet = rule("batch_failure_rate", 0.005, name="quiet")
    loud = rule("batch_failure_rate", 0.005, name="loud", no_data="firing")
    results = {r.rule: r for r in evaluate_all(session, NOW, [quiet, loud])}
    assert results["quiet"].state == "inactive"
    assert results["quiet"].condition == "no-data"
    assert results["quiet"].reason == "inactive: no data: no batch request ended in the last 24h"
    assert results["loud"].state == "firing"
    assert results["loud"].event == "firing"
    events = session.execute(select(AlertEvent.rule, AlertEvent.transition)).all()
    assert [tuple(e) for e in events] == [("loud", "firing")]
    stored = {s.rule: s for s in session.execute(select(AlertState)).scalars()}
    assert stored["quiet"].reason is not None and "no data" in stored["quiet"].reason


# --- batch_expiry_risk --------------------------------------------------------------------


def test_expiry_risk_uses_the_oldest_unended_batch(session: Session) -> None:
    add_batch(session, "b13", created=NOW - 13 * H)
    add_batch(session, "b11", created=NOW - 11 * H, workspace="wrkspc_b")
    add_batch(session, "done", created=NOW - 20 * H, ended=NOW - H)
    session.commit()
    [ev] = evaluate(rule("batch_expiry_risk", "12h"), session, NOW)
    assert (ev.value, ev.condition) == (13 / 24, True)
    assert ev.reason.startswith("oldest unended batch used 54.17 % (13h) is at or above 50 % (12h)")
    assert "batch b13" in ev.reason
    grouped = evaluate(rule("batch_expiry_risk", 0.5, group_by=["workspace"]), session, NOW)
    assert measured(grouped) == [
        ({"workspace": "wrkspc_a"}, 13 / 24, True),
        ({"workspace": "wrkspc_b"}, 11 / 24, False),
    ]


def test_expiry_risk_honours_a_batchs_own_expiry(session: Session) -> None:
    add_batch(session, "short", created=NOW - 11 * H, expires=NOW + 3 * H)  # 14 h life
    add_batch(session, "long", created=NOW - 12 * H)
    session.commit()
    [ev] = evaluate(rule("batch_expiry_risk", 0.75), session, NOW)
    assert (ev.value, ev.condition) == (11 / 14, True)
    assert "batch short" in ev.reason


def test_expiry_risk_with_nothing_in_progress_is_fine_not_no_data(session: Session) -> None:
    add_batch(session, "done", created=NOW - 20 * H, ended=NOW - H)
    session.commit()
    [ev] = evaluate(rule("batch_expiry_risk", "12h", no_data="firing"), session, NOW)
    assert (ev.value, ev.condition, ev.reason) == (None, False, "no batch in progress")


# --- cost_drift ---------------------------------------------------------------------------


def _drift_rows(session: Session) -> None:
    day19, day18 = utc(2026, 11, 19), utc(2026, 11, 18)
    add_usage(session, day19 + 10 * H, cost="60.00")
    add_usage(session, day19 + 11 * H, cost="40.00")
    add_billed(session, day19, "103.00")
    add_usage(session, day18 + 10 * H, cost="50.00", model="claude-haiku-4-5")
    add_billed(session, day18, "50.00", model="claude-haiku-4-5")
    # Today is not billed yet: a computed cost with no bill must not count as drift.
    add_usage(session, NOW - H, cost="10.00")
    session.commit()


def test_cost_drift_compares_whole_days(session: Session) -> None:
    _drift_rows(session)
    [ev] = evaluate(rule("cost_drift", 0.02, window="3d"), session, NOW)
    assert (ev.value, ev.condition) == (float(Decimal(3) / Decimal(103)), True)
    assert ev.reason == (
        "cost drift 2.91 % is above 2 % over 3d "
        "(worst day 2026-11-19: computed $100.00, billed $103.00)"
    )
    assert evaluate(rule("cost_drift", 0.05, window="3d"), session, NOW)[0].condition is False


def test_cost_drift_group_by_model(session: Session) -> None:
    _drift_rows(session)
    evaluations = evaluate(rule("cost_drift", 0.02, window="3d", group_by=["model"]), session, NOW)
    assert measured(evaluations) == [
        ({"model": "claude-haiku-4-5"}, 0.0, False),
        ({"model": "claude-sonnet-4-6"}, float(Decimal(3) / Decimal(103)), True),
    ]


def test_cost_drift_without_a_bill_is_no_data(session: Session) -> None:
    add_usage(session, NOW - 30 * H, cost="10.00")
    session.commit()
    [ev] = evaluate(rule("cost_drift", 0.02), session, NOW)
    assert (ev.condition, ev.reason) == (None, "no data: no billed cost in the last 24h")


# --- spend_increase -----------------------------------------------------------------------


def test_spend_increase_week_over_week(session: Session) -> None:
    add_usage(session, NOW - timedelta(days=14), cost="40.00")
    add_usage(session, NOW - timedelta(days=10), cost="60.00")
    add_usage(session, NOW - timedelta(days=2), cost="130.00")
    session.commit()
    [ev] = evaluate(rule("spend_increase", 0.25, window="7d"), session, NOW)
    assert (ev.value, ev.condition) == (0.3, True)
    assert ev.reason == (
        "spend growth 30 % is above 25 % over 7d ($130.00 in the last 7d vs $100.00 before)"
    )
    assert evaluate(rule("spend_increase", 0.3, window="7d"), session, NOW)[0].condition is False


def test_spend_increase_without_a_previous_window_is_no_data(session: Session) -> None:
    add_usage(session, NOW - timedelta(days=2), cost="130.00")
    session.commit()
    [ev] = evaluate(rule("spend_increase", 0.25, window="7d"), session, NOW)
    assert (ev.value, ev.condition) == (None, None)


def test_spend_increase_needs_the_previous_window_fully_recorded(session: Session) -> None:
    # Collected only since 10 days ago: the week before last is partly missing, so its smaller
    # total would read as growth. No data until both windows are covered.
    add_usage(session, NOW - timedelta(days=10), cost="10.00")
    add_usage(session, NOW - timedelta(days=2), cost="130.00")
    # An old batch listed from the API's history says nothing about real-time coverage.
    add_batch(session, "old", created=NOW - timedelta(days=40), ended=NOW - timedelta(days=39),
              cost="1.00")  # fmt: skip
    session.commit()
    [ev] = evaluate(rule("spend_increase", 0.25, window="7d"), session, NOW)
    assert (ev.value, ev.condition) == (None, None)
    assert "not fully recorded" in ev.reason


def test_spend_increase_group_by_workspace(session: Session) -> None:
    for ws, before, after in (("wrkspc_a", "100", "110"), ("wrkspc_b", "10", "20")):
        add_usage(session, NOW - timedelta(days=14), cost=before, workspace=ws)
        add_usage(session, NOW - timedelta(days=2), cost=after, workspace=ws)
    session.commit()
    evaluations = evaluate(
        rule("spend_increase", 0.25, window="7d", group_by=["workspace"]), session, NOW
    )
    assert measured(evaluations) == [
        ({"workspace": "wrkspc_a"}, 0.1, False),
        ({"workspace": "wrkspc_b"}, 1.0, True),
    ]


# --- collector_stale ----------------------------------------------------------------------


def test_collector_stale_per_source(session: Session) -> None:
    m = timedelta(minutes=1)
    add_run(session, "batches", NOW - 40 * m, NOW - 31 * m)
    add_run(session, "batches", NOW - 10 * m, NOW - 9 * m, status="failed")
    add_run(session, "usage", NOW - 6 * m, NOW - 5 * m)
    add_run(session, "logs", NOW - 45 * m, NOW - 44 * m, status="failed")
    session.commit()
    evaluations = evaluate(rule("collector_stale", "30m"), session, NOW)
    # "logs" never succeeded: its age counts from its first attempt.
    assert measured(evaluations) == [
        ({"source": "batches"}, 1860.0, True),
        ({"source": "logs"}, 2700.0, True),
        ({"source": "usage"}, 300.0, False),
    ]
    assert evaluations[0].reason == (
        "time since a successful collection 31m is above 30m (last success 2026-11-20 11:29 UTC)"
    )
    only = evaluate(rule("collector_stale", "30m", filters={"source": "usage"}), session, NOW)
    assert measured(only) == [({"source": "usage"}, 300.0, False)]


def test_collector_stale_before_any_run_is_no_data(session: Session) -> None:
    [ev] = evaluate(rule("collector_stale", "30m"), session, NOW)
    assert (ev.condition, ev.reason) == (None, "no data: no collection has run yet")


# --- batch_candidate ----------------------------------------------------------------------


def test_batch_candidate_once_per_workload(session: Session) -> None:
    settings = Settings(
        workloads=(
            Workload("nightly", None, timedelta(hours=24), False),
            Workload("chat", None, None, True),
        )
    )
    for workload in ("nightly", "chat"):
        session.add(
            CallBucket(
                hour=NOW - 5 * H, workload=workload, model="claude-sonnet-4-6", calls=100,
                input_tokens=1_000_000, output_tokens=100_000,
                cost_usd=Decimal("10.00"), batch_cost_usd=Decimal("5.00"),
            )
        )  # fmt: skip
    session.commit()
    candidate = rule("batch_candidate", 25, window="30d")
    evaluations = evaluate(candidate, session, NOW, settings=settings)
    # One day of data: $5 a day saved is $150 a month; "chat" is user-facing and stays.
    assert measured(evaluations) == [
        ({"workload": "chat"}, 0.0, False),
        ({"workload": "nightly"}, 150.0, True),
    ]
    assert evaluations[1].reason.startswith(
        "monthly savings by moving to batch $150.00 is at or above $25.00 over 30d"
    )
    # Announced once: no reminder, however long it stays a candidate.
    once = rule("batch_candidate", 25, window="30d", repeat_interval="0s", send_resolved=False)
    for hours in (0, 24, 24 * 7):
        evaluate_all(session, NOW + hours * H, [once], settings=settings)
    events = session.execute(select(AlertEvent.transition, AlertEvent.labels)).all()
    assert [tuple(e) for e in events] == [
        ("firing", '{"rule":"t_batch_candidate","severity":"warning","workload":"nightly"}')
    ]


def test_batch_candidate_reads_the_daemons_stored_advice_while_fresh(session: Session) -> None:
    settings = Settings(workloads=(Workload("nightly", None, timedelta(hours=24), False),))
    session.add(
        CallBucket(
            hour=NOW - 5 * H, workload="nightly", model="claude-sonnet-4-6", calls=100,
            input_tokens=1_000_000, output_tokens=100_000,
            cost_usd=Decimal("10.00"), batch_cost_usd=Decimal("5.00"),
        )
    )  # fmt: skip
    # What the advise job stored 20 minutes ago (then the traffic changed).
    session.add(
        Advice(
            workload="nightly", model="claude-sonnet-4-6", recommendation="BATCH",
            monthly_savings_usd=Decimal("99.00"), computed_at=NOW - timedelta(minutes=20),
        )
    )  # fmt: skip
    session.commit()
    candidate = rule("batch_candidate", 25, window="30d")  # the advisor's window
    assert measured(evaluate(candidate, session, NOW, settings=settings)) == [
        ({"workload": "nightly"}, 99.0, True)
    ]
    # Older than two advisor intervals (2 x 15 min): computed from the call buckets again.
    later = NOW + timedelta(minutes=11)
    assert measured(evaluate(candidate, session, later, settings=settings)) == [
        ({"workload": "nightly"}, 150.0, True)
    ]
    # Another window than the one the job advises on is always computed.
    weekly = rule("batch_candidate", 25, window="7d")
    assert measured(evaluate(weekly, session, NOW, settings=settings)) == [
        ({"workload": "nightly"}, 150.0, True)
    ]


# --- defaults on an empty database --------------------------------------------------------


def test_default_rules_on_an_empty_database_fire_nothing(session: Session) -> None:
    rules = load_rules(Settings())
    results = evaluate_all(session, NOW, rules)
    assert {r.rule for r in results} >= {
        "batch_share_requests", "batch_share_spend", "batch_turnaround_p95",
        "batch_failure_rate", "batch_expiry_risk", "cost_drift", "spend_increase",
        "collector_stale",
    }  # fmt: skip
    assert [r for r in results if r.state != "inactive"] == []
    assert session.execute(select(AlertEvent)).first() is None


# --- configuration ------------------------------------------------------------------------


def test_every_problem_is_reported_with_where_entry_and_field() -> None:
    problems = validate_rule_entries(
        [
            {"name": "a", "kind": "nope", "threshold": 1},
            {"name": "b", "kind": "batch_failure_rate", "threshold": 1.5, "window": "5 min"},
            {"kind": "batch_share", "threshold": 0.5},
            {
                "name": "d",
                "kind": "batch_turnaround_p95",
                "threshold": "90m",
                "group_by": ["model"],
                "severity": "page",
                "colour": "red",
            },
            {"name": "e", "kind": "collector_stale", "threshold": "30m", "labels": {"rule": "x"}},
            {"name": "f", "kind": "cost_drift", "threshold": 0.02, "filters": {"workspace": "w"}},
            {"name": "g", "kind": "batch_share", "threshold": 0.5, "basis": "tokens"},
            {"name": "h", "kind": "batch_expiry_risk", "threshold": "25h", "for": -1},
        ],
        WHERE,
    )
    assert problems == [
        "monitor.toml [[rules]] #1 (a): kind: unknown kind 'nope' (known: batch_share, "
        "batch_turnaround_p95, batch_failure_rate, batch_expiry_risk, cost_drift, "
        "spend_increase, batch_candidate, collector_stale)",
        "monitor.toml [[rules]] #2 (b): threshold: out of range: must be >= 0 % and <= 100 %, "
        "got 1.5",
        "monitor.toml [[rules]] #2 (b): window: invalid duration '5 min': use a number and a "
        'unit s, m, h or d, like "15m"',
        "monitor.toml [[rules]] #3: name: required: letters, digits, '_', '.', '-', starting "
        "with a letter; got None",
        "monitor.toml [[rules]] #4 (d): colour: unknown key (known: annotations, basis, "
        "enabled, filters, for, group_by, keep_firing_for, kind, labels, name, no_data, "
        "repeat_interval, send_resolved, severity, threshold, window)",
        "monitor.toml [[rules]] #4 (d): severity: must be one of info, warning, critical, "
        "got 'page'",
        "monitor.toml [[rules]] #4 (d): group_by: batch_turnaround_p95 can be grouped by "
        "workload, workspace, not model",
        "monitor.toml [[rules]] #5 (e): labels: rule is set by the rule itself and cannot be "
        "a label",
        "monitor.toml [[rules]] #6 (f): filters: cost_drift can be filtered by model, not "
        "workspace",
        'monitor.toml [[rules]] #7 (g): basis: must be "requests" or "spend", got \'tokens\'',
        "monitor.toml [[rules]] #8 (h): threshold: out of range: must be > 0 % (0s) and "
        "<= 100 % (24h), got '25h'",
        'monitor.toml [[rules]] #8 (h): for: a duration must be a string like "90s", "15m", '
        '"2h" or "7d", got -1',
    ]


def test_duplicate_rules_are_rejected() -> None:
    entry = {"name": "x", "kind": "collector_stale", "threshold": "30m"}
    assert validate_rule_entries([entry, entry], WHERE) == [
        "monitor.toml [[rules]] #2 (x): name: a warning rule named 'x' is already #1"
    ]
    # The same name at two severities is one alert family (the critical inhibits the warning).
    assert validate_rule_entries([entry, {**entry, "severity": "critical"}], WHERE) == []


def test_bad_rules_fail_the_whole_configuration(tmp_path: Path) -> None:
    path = tmp_path / "monitor.toml"
    path.write_text(
        '[[rules]]\nname = "slow"\nkind = "batch_turnaround_p95"\nthreshold = "soon"\n\n'
        '[[rules]]\nname = "x"\nkind = "bogus"\nthreshold = 1\n'
    )
    with pytest.raises(ConfigError) as info:
        load_settings({}, config_path=path)
    assert info.value.problems == [
        f"{path} [[rules]] #1 (slow): threshold: invalid duration 'soon': use a number and a "
        'unit s, m, h or d, like "15m"',
        f"{path} [[rules]] #2 (x): kind: unknown kind 'bogus' (known: " + ", ".join(KINDS) + ")",
    ]


def test_defaults_and_replacement_by_name(tmp_path: Path) -> None:
    defaults = load_rules(Settings())
    assert [(r.name, r.severity) for r in defaults] == [
        (e["name"], e["severity"]) for e in default_entries()
    ]
    p95 = [r for r in defaults if r.name == "batch_turnaround_p95"]
    assert [(r.severity, r.threshold) for r in p95] == [("warning", 5400.0), ("critical", 7200.0)]
    expiry = next(r for r in defaults if r.kind == "batch_expiry_risk")
    assert expiry.threshold == 0.5  # "12h" of a 24 h life

    path = tmp_path / "monitor.toml"
    path.write_text(
        '[[rules]]\nname = "batch_failure_rate"\nthreshold = 0.01\n\n'
        '[[rules]]\nname = "batch_share_spend"\nenabled = false\n\n'
        '[[rules]]\nname = "mine"\nkind = "batch_share"\nthreshold = 0.7\n'
        'group_by = ["workspace"]\n[rules.annotations]\nrunbook_url = "https://wiki/x"\n'
    )
    rules = load_rules(load_settings({}, config_path=path))
    failure = [r for r in rules if r.name == "batch_failure_rate"]
    # The missing keys come from the default of the same name.
    assert [(r.kind, r.severity, r.window, r.threshold) for r in failure] == [
        ("batch_failure_rate", "critical", timedelta(hours=24), 0.01)
    ]
    assert [r.enabled for r in rules if r.name == "batch_share_spend"] == [False]
    mine = next(r for r in rules if r.name == "mine")
    assert (mine.group_by, mine.annotations) == (("workspace",), {"runbook_url": "https://wiki/x"})

    path.write_text(
        "[alerting]\ndefault_rules = false\n\n"
        '[[rules]]\nname = "mine"\nkind = "collector_stale"\nthreshold = "1h"\n'
    )
    assert [r.name for r in load_rules(load_settings({}, config_path=path))] == ["mine"]
