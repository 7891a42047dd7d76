"""The weekly report against the ``weekly`` scenario's ground truth, on SQLite and PostgreSQL.

The scenario's second week carries planted causes, one workspace each (more contentgen batches,
digest moved to real-time, review moved to a pricier model, a cache-miss streak in support, the
Sonnet 5.5 cache-read price cut), plus slow batches and a batch that failed whole. It is
collected over HTTP by the real collectors; every number of the report's JSON is checked
against the truth computed from the scenario model, the drivers against the planted amounts
(computed by re-pricing the changed calls, not by the report's method), and the regressions
against the planted ones.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import delete, select
from sqlmodel import Session, col
from typer.testing import CliRunner

from monitor import cli, db
from monitor.config import ReportSection
from monitor.fmt import to_cents
from monitor.models import AlertEvent, Batch, BatchUsage, CallBucket, CostBucket, UsageBucket
from monitor.pricing import Usage, cost_of
from monitor.report import Week, build_weekly
from monitor.simulator import Scenario, Truth
from monitor.simulator.calls import RealtimeCall
from monitor.summary import build_summary, nearest_rank
from tests.reportkit import WEEK2, collected_url, report_now, report_settings, scenario

D = Decimal
PLANTED_REGRESSIONS = {
    ("batch_share_drop", "requests"),
    ("batch_share_drop", "spend"),
    ("spend_increase", "organisation"),
    ("tier_regression", "workload:digest"),
    ("model_upgrade_cost", "workload:review"),
    ("cache_drop", "model:claude-haiku-4-5"),
    ("cache_drop", "workload:support"),
    ("new_batch_candidate", "workload:digest"),
    ("turnaround_p95", "batches"),
    ("failure_rate", "batches"),
    ("budget_overrun", "organisation"),
}


@pytest.fixture(params=["sqlite", "postgresql"])
def planted_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A fresh database holding the planted scenario, collected."""
    return collected_url(request.param, tmp_path_factory)


@pytest.fixture
def planted(planted_url: str) -> Iterator[Session]:
    engine = db.make_engine(planted_url)
    try:
        with Session(engine) as session:
            yield session
    finally:
        engine.dispose()


def _cents(value: Decimal) -> str:
    return str(to_cents(value))


def _price(call: RealtimeCall, at: datetime, model: str | None = None) -> Decimal:
    usage = Usage(
        input_tokens=call.input_tokens,
        output_tokens=call.output_tokens,
        cache_read_tokens=call.cache_read_tokens,
        cache_write_5m_tokens=call.cache_write_5m_tokens,
        cache_write_1h_tokens=call.cache_write_1h_tokens,
        web_searches=call.web_searches,
        inference_geo=call.inference_geo,
    )
    cost = cost_of(model or call.model, usage, at).standard_usd
    assert cost is not None
    return cost


def planted_amounts(s: Scenario, truth: Truth) -> dict[str, Decimal]:
    """Return what each planted cause changed, each computed on its own terms.

    Volume, tier shift and the cache streak as their workspace's change (each workspace repeats
    its first week exactly but for its cause); the tier shift, the model switch, the cache
    streak and the price cut are also computed by re-pricing the changed calls, and must agree.
    """
    w1, w2 = (
        truth.window(WEEK2.previous.start, WEEK2.previous.end),
        truth.window(WEEK2.start, WEEK2.end),
    )
    plan = s.options["planted"]

    def delta(ws: str) -> Decimal:
        return w2.by_workspace.get(ws, D(0)) - w1.by_workspace.get(ws, D(0))

    week2 = [c for c in truth.realtime_calls if WEEK2.start <= c.at < WEEK2.end]
    # The digest requests sent in real time forgo the batch discount: half their cost.
    tier = sum((_price(c, c.at) / 2 for c in week2 if c.workload == "digest"), D(0))
    # The review calls on Opus 4.7 instead of the Sonnet 4.6 they ran on the week before.
    model = sum(
        (
            _price(c, c.at) - _price(c, c.at, "claude-sonnet-4-6")
            for c in week2
            if c.workload == "review"
        ),
        D(0),
    )
    # The support calls of the streak, against the same calls with their cache reads back.
    before = {c.at: c for c in truth.realtime_calls if c.workload == "support"}
    cache = sum(
        (_price(c, c.at) - _price(before[c.at - timedelta(days=7)], c.at)
         for c in week2 if c.workload == "support"),
        D(0),
    )  # fmt: skip
    # The research calls at this week's prices against the same calls at last week's.
    price = sum(
        (
            _price(c, c.at) - _price(c, c.at - timedelta(days=7))
            for c in week2
            if c.workload == "research"
        ),
        D(0),
    )
    assert tier == delta(plan["tier_shift"])
    assert model == delta(plan["model_mix"])
    assert cache == delta(plan["cache"])
    assert price == delta(plan["price"]) and price < 0
    return {
        "volume": delta(plan["volume"]),
        "tier_shift": tier,
        "model_mix": model,
        "cache": cache,
        "price": price,
    }


def _movers(report: dict[str, Any], key: str) -> dict[str, tuple[str, str, str]]:
    return {
        r["name"]: (r["cost_usd"], r["previous_cost_usd"], r["change_usd"]) for r in report[key]
    }


def _expected_movers(
    w1: dict[str, Decimal], w2: dict[str, Decimal]
) -> dict[str, tuple[str, str, str]]:
    out = {}
    for name in set(w1) | set(w2):
        now, before = to_cents(w2.get(name, D(0))), to_cents(w1.get(name, D(0)))
        out[name] = (str(now), str(before), str(now - before))
    return out


def _month(truth: Truth, budget: Decimal) -> dict[str, Any]:
    """Month to date, projection and budget, from the truth (October 2026, UTC)."""
    month = datetime(2026, 10, 1, tzinfo=UTC)
    mtd = truth.window(month, WEEK2.end).total_usd
    rate = truth.window(WEEK2.start, WEEK2.end).total_usd / 7
    projected = mtd + rate * 20  # 12 October to 1 November
    runs_out = None
    if mtd >= budget:
        spent, day = D(0), month
        while runs_out is None:
            spent += truth.window(day, day + timedelta(days=1)).total_usd
            runs_out = day.date().isoformat() if spent >= budget else None
            day += timedelta(days=1)
    elif projected > budget:
        days = math.ceil((budget - mtd) / rate)
        runs_out = (date(2026, 10, 12) + timedelta(days=int(days) - 1)).isoformat()
    return {
        "month_to_date_usd": _cents(mtd),
        "projected_month_usd": _cents(projected),
        "monthly_budget_usd": _cents(budget),
        "budget_runs_out_on": runs_out,
    }


def test_every_figure_matches_the_truth(planted: Session) -> None:
    s = scenario()
    truth = s.truth(report_now(s))
    w1, w2 = (
        truth.window(WEEK2.previous.start, WEEK2.previous.end),
        truth.window(WEEK2.start, WEEK2.end),
    )
    settings = report_settings(report=ReportSection(monthly_budget=D(600)))
    report = build_weekly(planted, WEEK2, report_now(s), settings).to_json()

    assert (report["week_start"], report["week_end"], report["timezone"]) == (
        "2026-10-05", "2026-10-12", "UTC",
    )  # fmt: skip
    assert report["complete"] is True and report["missing"] == []
    assert report["total_cost_usd"] == _cents(w2.total_usd)
    assert report["previous_total_cost_usd"] == _cents(w1.total_usd)
    change = to_cents(w2.total_usd) - to_cents(w1.total_usd)
    assert report["change_usd"] == str(change)
    assert report["realtime_cost_usd"] == _cents(w2.realtime.cost_usd)
    assert report["batch_cost_usd"] == _cents(w2.batch.cost_usd)
    assert report["billed_cost_usd"] == _cents(sum(w2.billed_by_day.values(), D(0)))
    assert report["billing"]["days"] == [
        (date(2026, 10, 5) + timedelta(days=i)).isoformat() for i in range(7)
    ]
    assert report["batch_share_requests"] == pytest.approx(w2.share_requests, abs=1e-12)
    assert report["batch_share_spend"] == pytest.approx(w2.share_spend, abs=1e-12)
    assert report["previous_batch_share_requests"] == pytest.approx(w1.share_requests, abs=1e-12)
    assert report["savings_usd"] == _cents(w2.savings_usd)
    # The advisor's one candidate is digest, now real-time: moving it back saves half its cost,
    # at the daily rate of the days it ran (the advisor's month is 30 of them, a week 7).
    digest = truth.usage(WEEK2.start, WEEK2.end, product="messages_api", workload="digest").cost_usd
    calls = [c.at for c in truth.realtime_calls if c.workload == "digest" and c.at >= WEEK2.start]
    span = math.ceil((max(calls) - min(calls)) / timedelta(days=1))
    assert report["missed_savings_monthly_usd"] == _cents(digest / 2 / span * 30)
    assert report["missed_savings_usd"] == _cents(digest / 2 / span * 30 * 7 / 30)
    assert [c["workload"] for c in report["batch_candidates"]] == ["digest"]

    # Why it changed: the drivers add up to the change to the cent, each planted cause carries
    # its planted amount (within 1 %), and other is (nearly) nothing.
    drivers = {d["cause"]: D(d["change_usd"]) for d in report["drivers"]}
    assert [d["cause"] for d in report["drivers"]] == [
        "volume", "model_mix", "tier_shift", "cache", "price", "other",
    ]  # fmt: skip
    assert sum(drivers.values()) == change
    for cause, amount in planted_amounts(s, truth).items():
        assert abs(drivers[cause] - amount) <= abs(amount) / 100, (cause, drivers[cause], amount)
    assert abs(drivers["other"]) <= D("0.02")

    assert _movers(report, "by_model") == _expected_movers(w1.by_model, w2.by_model)
    assert _movers(report, "by_workspace") == _expected_movers(w1.by_workspace, w2.by_workspace)
    assert _movers(report, "by_workload") == _expected_movers(w1.by_workload, w2.by_workload)
    changes = [D(r["change_usd"]) for r in report["by_workload"]]
    assert changes == sorted(changes, reverse=True)  # biggest rise first, biggest fall last

    b = report["batches"]
    ended = sorted(w2.batches, key=lambda x: x.id)
    requests = sum(x.request_count for x in ended)
    failed = sum(x.counts["errored"] + x.counts["expired"] for x in ended)
    turnarounds = [x.turnaround_seconds or 0.0 for x in ended]
    assert (b["ended"], b["requests"]) == (len(ended), requests)
    assert b["turnaround_p50_seconds"] == nearest_rank(turnarounds, 50)
    assert b["turnaround_p95_seconds"] == nearest_rank(turnarounds, 95)
    assert b["failure_rate"] == pytest.approx(failed / requests)
    assert b["expired_rate"] == pytest.approx(sum(x.counts["expired"] for x in ended) / requests)
    slowest = sorted(ended, key=lambda x: (-(x.turnaround_seconds or 0), x.id))[:3]
    assert [x["id"] for x in b["worst"]["slowest"]] == [x.id for x in slowest]
    whole = [x.id for x in ended if x.counts["errored"] == x.request_count]
    assert [x["id"] for x in b["worst"]["most_failed"]] == whole and len(whole) == 1
    assert report["alerts"] == []

    assert {k: report[k] for k in _month(truth, D(600))} == _month(truth, D(600))
    assert report["budget_runs_out_on"] == "2026-10-16"
    regressions = {(r["kind"], r["subject"]) for r in report["regressions"]}
    assert regressions == PLANTED_REGRESSIONS
    assert len(report["regressions"]) == len(PLANTED_REGRESSIONS)  # each flagged once


def test_budget_already_spent_names_the_day_it_ran_out(planted: Session) -> None:
    s = scenario()
    truth = s.truth(report_now(s))
    settings = report_settings(report=ReportSection(monthly_budget=D(250)))
    report = build_weekly(planted, WEEK2, report_now(s), settings).to_json()
    expected = _month(truth, D(250))
    assert {k: report[k] for k in expected} == expected
    assert (
        expected["budget_runs_out_on"] is not None and expected["budget_runs_out_on"] < "2026-10-12"
    )


def test_without_a_budget_nothing_is_said_about_it(planted: Session) -> None:
    s = scenario()
    report = build_weekly(planted, WEEK2, report_now(s), report_settings()).to_json()
    assert report["monthly_budget_usd"] is None and report["budget_runs_out_on"] is None
    assert "budget_overrun" not in {r["kind"] for r in report["regressions"]}


def test_the_report_agrees_with_summary(planted: Session) -> None:
    s = scenario()
    report = build_weekly(planted, WEEK2, report_now(s), report_settings())
    summary = build_summary(planted, WEEK2.start, WEEK2.end, report_now(s)).to_json()
    data = report.to_json()
    for key in (
        "total_cost_usd",
        "realtime_cost_usd",
        "batch_cost_usd",
        "savings_usd",
        "billed_cost_usd",
    ):
        assert data[key] == summary[key], key
    assert data["batch_share_requests"] == summary["batch_share_requests"]
    # The CSV's rows add up to each week's total.
    weeks: dict[str, Decimal] = {}
    for row in report.csv_rows:
        weeks[row.week_start.isoformat()] = weeks.get(row.week_start.isoformat(), D(0)) + (
            row.cell.cost_usd or D(0)
        )
    assert {k: str(to_cents(v)) for k, v in weeks.items()} == {
        "2026-09-28": data["previous_total_cost_usd"], "2026-10-05": data["total_cost_usd"],
    }  # fmt: skip
    # The chart's days add up to the weeks too.
    assert to_cents(sum((d.realtime_usd + d.batch_usd for d in report.days[7:]), D(0))) == D(
        data["total_cost_usd"]
    )


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_week_with_no_change_flags_nothing(
    kind: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    url = collected_url(kind, tmp_path_factory, planted=False)
    s = scenario(planted=False)
    week = Week((s.start + timedelta(days=7)).date(), "UTC")
    engine = db.make_engine(url)
    try:
        with Session(engine) as session:
            report = build_weekly(session, week, report_now(s), report_settings()).to_json()
    finally:
        engine.dispose()
    assert report["change_usd"] == "0.00"
    assert report["total_cost_usd"] == report["previous_total_cost_usd"] != "0.00"
    assert {d["cause"]: d["change_usd"] for d in report["drivers"]} == dict.fromkeys(
        ("volume", "model_mix", "tier_shift", "cache", "price", "other"), "0.00"
    )
    assert report["regressions"] == []
    assert report["complete"] is True


def test_drivers_add_up_in_another_time_zone(planted: Session) -> None:
    s = scenario()
    truth = s.truth(report_now(s))
    week = Week(date(2026, 10, 5), "America/New_York")
    report = build_weekly(planted, week, report_now(s), report_settings()).to_json()
    w1, w2 = (
        truth.window(week.previous.start, week.previous.end),
        truth.window(week.start, week.end),
    )
    assert week.start == datetime(2026, 10, 5, 4, tzinfo=UTC)
    assert report["total_cost_usd"] == _cents(w2.total_usd)
    assert report["previous_total_cost_usd"] == _cents(w1.total_usd)
    assert sum(D(d["change_usd"]) for d in report["drivers"]) == D(report["change_usd"])


# --- a partly recorded week -------------------------------------------------------------------


def test_collection_started_mid_week_is_named(planted: Session) -> None:
    s = scenario()
    started = datetime(2026, 9, 30, 12, tzinfo=UTC)  # Wednesday noon of the first week
    for table, column in (
        (UsageBucket, UsageBucket.bucket_start),
        (CallBucket, CallBucket.hour),
        (CostBucket, CostBucket.day),
    ):
        planted.execute(delete(table).where(col(column) < started))
    early = list(
        planted.execute(select(col(Batch.id)).where(col(Batch.ended_at) < started)).scalars()
    )
    planted.execute(delete(BatchUsage).where(col(BatchUsage.batch_id).in_(early)))
    planted.execute(delete(Batch).where(col(Batch.id).in_(early)))
    report = build_weekly(planted, WEEK2, report_now(s), report_settings()).to_json()
    planted.rollback()
    assert report["complete"] is False
    assert any(
        "collection started 2026-09-30T12:00:00Z" in m and "last week" in m
        for m in report["missing"]
    )
    # The markdown says it at the top, before any figure.
    assert report["missing"][0].startswith("collection started")


def test_a_day_without_usage_data_is_named_not_dropped(planted: Session) -> None:
    s = scenario()
    day = datetime(2026, 10, 7, tzinfo=UTC)
    planted.execute(
        delete(UsageBucket).where(
            col(UsageBucket.bucket_start) >= day,
            col(UsageBucket.bucket_start) < day + timedelta(days=1),
        )
    )
    report = build_weekly(planted, WEEK2, report_now(s), report_settings())
    planted.rollback()
    data = report.to_json()
    assert data["complete"] is False
    assert any("no usage report data for 2026-10-07" in m for m in data["missing"])
    from monitor.report import to_html, to_markdown

    md = to_markdown(report)
    assert md.index("Incomplete record") < md.index("this week")
    assert "2026-10-07" in to_html(report).split("<h2>", 1)[0]


def test_a_week_not_over_yet_is_named(planted: Session) -> None:
    now = datetime(2026, 10, 9, 12, tzinfo=UTC)
    report = build_weekly(planted, WEEK2, now, report_settings()).to_json()
    assert any(m.startswith("the week is not over yet") for m in report["missing"])


# --- the command ------------------------------------------------------------------------------


def _run(url: str, args: list[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    monkeypatch.setenv("MONITOR_DATABASE_URL", url)
    monkeypatch.chdir(tmp_path)  # no monitor.toml here
    monkeypatch.delenv("MONITOR_CONFIG", raising=False)
    for name in ("MONITOR_SLACK_BOT_TOKEN", "MONITOR_SLACK_WEBHOOK_URL", "MONITOR_SLACK_CHANNEL"):
        monkeypatch.delenv(name, raising=False)
    return CliRunner().invoke(cli.app, args)


def test_cli_prints_each_format_and_writes_files(
    planted_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    result = _run(
        planted_url,
        ["report", "weekly", "--week-start", "2026-10-05", "--format", "json"],
        monkeypatch,
        tmp_path,
    )
    assert result.exit_code == 0, result.output
    data = orjson.loads(result.stdout)
    assert data["week_start"] == "2026-10-05" and data["total_cost_usd"] != "0.00"
    assert sum(D(d["change_usd"]) for d in data["drivers"]) == D(data["change_usd"])

    html = _run(
        planted_url,
        ["report", "weekly", "--week-start", "2026-10-05", "--format", "html"],
        monkeypatch,
        tmp_path,
    )
    assert html.exit_code == 0 and html.stdout.startswith("<!doctype html>")
    assert "data:image/png;base64," in html.stdout and data["total_cost_usd"] in html.stdout

    md = _run(
        planted_url, ["report", "weekly", "--week-start", "2026-10-05"], monkeypatch, tmp_path
    )
    assert md.exit_code == 0 and md.stdout.startswith("# Claude spend, week of 2026-10-05 (UTC)")

    out = tmp_path / "out"
    csv = _run(
        planted_url,
        ["report", "weekly", "--week-start", "2026-10-05", "--format", "csv", "--out", str(out)],
        monkeypatch,
        tmp_path,
    )
    assert csv.exit_code == 0, csv.output
    paths = csv.stdout.split()
    assert paths == [str(out / "weekly-2026-10-05.csv"), str(out / "weekly-2026-10-05.png")]
    assert Path(paths[1]).read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    lines = Path(paths[0]).read_text().splitlines()
    assert lines[0].startswith("week_start,model,workspace,tier,requests,")
    assert {line.split(",")[0] for line in lines[1:]} == {"2026-09-28", "2026-10-05"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--week-start", "2026-10-06"],
            "2026-10-06 is a Tuesday; weeks start on Monday (that week starts on 2026-10-05)",
        ),
        (["--week-start", "5 Oct"], "'5 Oct' is not a date"),
        (["--week-start", "2099-01-05"], "has not started yet"),
        (["--format", "pdf"], "--format: 'pdf' is not one of md, html, json, csv"),
    ],
)
def test_cli_refuses_bad_input(
    args: list[str], message: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    engine = db.make_engine(url)
    db.upgrade(engine)
    engine.dispose()
    result = _run(url, ["report", "weekly", *args], monkeypatch, tmp_path)
    assert result.exit_code == 2
    assert message in result.stderr


def test_week_bounds_follow_the_time_zone() -> None:
    week = Week(date(2026, 10, 19), "Europe/Paris")  # summer time ends on 25 October
    assert week.start == datetime(2026, 10, 18, 22, tzinfo=UTC)
    assert week.end == datetime(2026, 10, 25, 23, tzinfo=UTC)
    assert week.end - week.start == timedelta(hours=169)


def test_alerts_that_fired_during_the_week_are_listed(planted: Session) -> None:
    s = scenario()
    labels = '{"rule": "batch_failure_rate", "severity": "critical", "workspace": "wrkspc_growth"}'
    for at, transition in (
        (datetime(2026, 10, 7, 12, 5, tzinfo=UTC), "firing"),
        (datetime(2026, 10, 7, 18, 0, tzinfo=UTC), "resolved"),  # not a firing
        (datetime(2026, 10, 2, 8, 0, tzinfo=UTC), "firing"),  # the week before
    ):
        planted.add(
            AlertEvent(
                fingerprint="f1", rule="batch_failure_rate", severity="critical", labels=labels,
                transition=transition, reason="1.5 % of batch requests failed", created_at=at,
            )
        )  # fmt: skip
    planted.flush()
    report = build_weekly(planted, WEEK2, report_now(s), report_settings())
    planted.rollback()
    assert report.to_json()["alerts"] == [
        {
            "rule": "batch_failure_rate",
            "severity": "critical",
            "scope": {"workspace": "wrkspc_growth"},
            "at": "2026-10-07T12:05:00Z",
            "reason": "1.5 % of batch requests failed",
        }
    ]
    from monitor.report import to_markdown

    assert "**batch\\_failure\\_rate** (critical, workspace=wrkspc\\_growth)" in to_markdown(report)
