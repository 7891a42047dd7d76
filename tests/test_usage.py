"""The usage and cost report collectors and the ``summary`` command, against the simulator.

Every test runs the real ``anthropic`` SDK over HTTP against ``monitor.simulator`` on 127.0.0.1
and checks what was stored against the scenario's ground truth (``Scenario.truth``), which is
computed from the scenario model, not from HTTP responses. Both databases via the fixtures.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import delete
from sqlmodel import Session, col, select
from typer.testing import CliRunner

from monitor import cli, db
from monitor.collect import CollectResult, RunStats, collect_source
from monitor.config import CollectSection, Settings, Workspace
from monitor.fmt import to_cents
from monitor.models import CostBucket, SourceCursor, UsageBucket
from monitor.pricing import default_book
from monitor.simulator import (
    ADMIN_KEY,
    TOKEN_TYPES,
    UNKNOWN_MODEL,
    Scenario,
    SimulatorServer,
    analytics_refused,
    build_scenario,
    late_revision,
    price_drift,
    rate_limit,
    repeat_page,
    skip_page,
)
from monitor.sources import batches as batches_source
from monitor.sources import usage as U
from monitor.summary import build_summary, daily_drift, nearest_rank

D = Decimal
T0 = datetime(2026, 11, 15, tzinfo=UTC)  # the "small" scenario's start
DAY1 = (T0, T0 + timedelta(days=1))
USAGE_DIMS = ("product", "service_tier", "model", "workspace_id", "context_window", "inference_geo")
# The one bucket of the "small" scenario whose price the report cannot determine: Haiku 5.5
# charges its >100K-prompt tier per request, and this bucket's weekly-report batch mixes
# prompts below and above 100K under the same context window "0-200k". A bucket only gives
# totals, so it is priced from the average prompt per request (documented in price_row).
MIXED_TIER_BUCKET = (
    datetime(2026, 11, 15, 3, tzinfo=UTC),
    "message_batches_api",
    "batch",
    "claude-haiku-5-5",
    "wrkspc_default",
    "0-200k",
    "global",
)


# --- fixtures and helpers -------------------------------------------------------------------


@pytest.fixture
def scenario() -> Scenario:
    return build_scenario("small")


@pytest.fixture
def sim(scenario: Scenario) -> Iterator[SimulatorServer]:
    with SimulatorServer(scenario) as server:
        yield server


def settings_for(sim: SimulatorServer, **collect: Any) -> Settings:
    """Settings that point every source at the simulator (admin key and workspace keys)."""
    return Settings(
        anthropic_base_url=sim.url,
        anthropic_admin_key=SecretStr(ADMIN_KEY),
        workspaces=tuple(
            Workspace(w.id, w.name, SecretStr(w.api_key), w.id == sim.scenario.default_workspace.id)
            for w in sim.scenario.workspaces
        ),
        collect=CollectSection(
            **{"backfill": timedelta(days=3), "max_retries": 0, **collect}  # type: ignore[arg-type]
        ),
    )


def build(name: str, sim: SimulatorServer, page_limit: int | None = None, **collect: Any) -> Any:
    src = U.from_settings(name, settings_for(sim, **collect))
    assert src is not None
    src.progress = False
    src.page_limit = page_limit
    return src


def run(src: Any, session: Session, now: datetime) -> CollectResult:
    result = collect_source(src, session, now, [ADMIN_KEY])
    assert result.ok, result.run.error
    return result


def rows_of(session: Session, model: Any) -> list[Any]:
    """Read every row afresh (the collectors write through Core, past the identity map)."""
    session.expire_all()
    return list(session.exec(select(model)))


def truth_key(e_key: tuple[Any, ...]) -> tuple[Any, ...]:
    """Map a truth group (None for an unset region) to the stored spelling."""
    *head, geo = e_key
    return (*head, geo or "not_available")


def stored_usage(session: Session, source: str | None = None) -> dict[tuple[Any, ...], Any]:
    session.expire_all()
    stmt = select(UsageBucket)
    if source is not None:
        stmt = stmt.where(col(UsageBucket.source) == source)
    return {
        (
            r.bucket_start,
            r.product,
            r.service_tier,
            r.model,
            r.workspace_id,
            r.context_window,
            r.inference_geo,
        ): r
        for r in session.exec(stmt)
    }


def assert_tokens(row: UsageBucket, t: Any) -> None:
    assert (
        row.input_tokens,
        row.output_tokens,
        row.cache_read_tokens,
        row.cache_write_5m_tokens,
        row.cache_write_1h_tokens,
        row.web_searches,
    ) == (
        t.input_tokens,
        t.output_tokens,
        t.cache_read_tokens,
        t.cache_write_5m_tokens,
        t.cache_write_1h_tokens,
        t.web_searches,
    )


# --- pure helpers ---------------------------------------------------------------------------


def test_cents_to_usd_is_exact() -> None:
    # The docs' own example: "123.45" cents is $1.2345, not $123.45.
    assert U.cents_to_usd("123.45") == D("1.2345")
    assert U.cents_to_usd("12378.912") == D("123.78912")
    assert U.cents_to_usd("0") == 0


def test_plan_spans_split_at_the_analytics_floor_into_31_days_or_a_week_of_hours() -> None:
    now = datetime(2026, 1, 20, tzinfo=UTC)
    spans = U.plan_spans(datetime(2025, 11, 1, tzinfo=UTC), now, now, U.DAY)
    assert [(s.start.date().isoformat(), s.end.date().isoformat(), s.api) for s in spans] == [
        ("2025-11-01", "2025-12-02", "legacy"),
        ("2025-12-02", "2026-01-01", "legacy"),
        ("2026-01-01", "2026-01-20", "analytics"),
    ]
    assert all(s.end - s.start <= U.MAX_SPAN for s in spans)
    # Hourly buckets a week at a time: a span is held in memory whole before it is stored.
    hourly = U.plan_spans(datetime(2025, 12, 20, tzinfo=UTC), now, now, U.HOUR)
    assert [(s.start.date().isoformat(), s.end.date().isoformat(), s.api) for s in hourly] == [
        ("2025-12-20", "2025-12-27", "legacy"),
        ("2025-12-27", "2026-01-01", "legacy"),
        ("2026-01-01", "2026-01-08", "analytics"),
        ("2026-01-08", "2026-01-15", "analytics"),
        ("2026-01-15", "2026-01-20", "analytics"),
    ]
    # Older than 365 days is legacy too, whatever the date.
    late = datetime(2027, 6, 1, tzinfo=UTC)
    spans = U.plan_spans(late - timedelta(days=400), late - timedelta(days=300), late, U.DAY)
    assert spans[0].api == "legacy" and spans[-1].api == "analytics"
    assert next(s for s in spans if s.api == "analytics").start == late - timedelta(days=365)


@pytest.fixture
def host_not_on_utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Run the test on a host whose local time is UTC+5:30 (POSIX TZ: no tz database needed)."""
    monkeypatch.setenv("TZ", "XST-5:30")
    time.tzset()
    try:
        yield
    finally:
        monkeypatch.undo()
        time.tzset()


def test_times_without_a_zone_are_utc_never_the_hosts_local_time(host_not_on_utc: None) -> None:
    three = datetime(2026, 11, 20, 3, tzinfo=UTC)
    # On this host astimezone() reads a naive 03:00 as 21:30 UTC the day before.
    assert datetime(2026, 11, 20, 3).astimezone(UTC) != three
    # Report and cursor times: the API and the cursors speak UTC, so a missing zone is UTC.
    assert U.parse_time("2026-11-20T03:00:00") == three
    assert U.parse_time(datetime(2026, 11, 20, 3)) == three
    assert U.parse_time("2026-11-20T03:00:00Z") == three
    assert U.parse_time("2026-11-20T08:30:00+05:30") == three
    # Times computed here are always aware: a naive one is a bug, refused (not shifted).
    naive = datetime(2026, 11, 20, 3, 30)
    for helper in (lambda: U.floor_to(naive, U.HOUR), lambda: U.ceil_to(naive, U.DAY)):
        with pytest.raises(ValueError, match="naive datetime"):
            helper()
    with pytest.raises(ValueError, match="naive datetime"):
        U.iso(naive)
    assert U.floor_to(three.replace(minute=30), U.DAY) == datetime(2026, 11, 20, tzinfo=UTC)
    assert U.iso(three) == "2026-11-20T03:00:00Z"


def test_from_settings_needs_the_admin_key() -> None:
    assert U.from_settings("usage", Settings()) is None
    assert U.from_settings("cost", Settings(anthropic_admin_key=SecretStr(""))) is None


# --- the analytics path ---------------------------------------------------------------------


def test_analytics_usage_every_page_and_field_priced_like_the_truth(
    session: Session, sim: SimulatorServer, caplog: pytest.LogCaptureFixture
) -> None:
    now = sim.now()
    src = build("usage", sim, page_limit=7)
    with caplog.at_level(logging.INFO, logger="monitor.sources.usage"):
        result = run(src, session, now)
    # Three inference-region passes, each over several pages of at most 7 rows.
    pages = sim.request_counts["analytics.usage"]
    assert pages > 6 and result.run.api_calls == pages
    assert any("read from the analytics API" in n for n in result.stats.notes)

    truth = sim.scenario.truth(now)
    since = now - timedelta(days=3)
    expected = {truth_key(k): v for k, v in truth.usage_by("1h", USAGE_DIMS, start=since).items()}
    rows = stored_usage(session)
    assert set(rows) == set(expected) and len(rows) > 30
    final_before = now - timedelta(hours=1)
    for key, t in expected.items():
        row = rows[key]
        assert row.source == "analytics" and row.width == "1h" and row.api_key_id == ""
        assert row.bucket_end == row.bucket_start + timedelta(hours=1)
        assert row.requests == t.requests
        assert_tokens(row, t)
        assert row.final is (row.bucket_end <= final_before)
        assert row.fetched_at == now
        if row.model == UNKNOWN_MODEL:
            assert (row.priced, row.cost_usd, row.standard_cost_usd) == (False, None, None)
            continue
        assert row.priced
        if key == MIXED_TIER_BUCKET:
            continue  # checked below
        # Computed cost per bucket equals the truth (exact, so certainly to the cent).
        assert row.cost_usd == t.cost_usd, key
        assert row.standard_cost_usd == t.standard_cost_usd, key
    # The unknown model is named in a warning and a note, never priced at $0.
    assert any(UNKNOWN_MODEL in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)
    assert any(UNKNOWN_MODEL in n for n in result.stats.notes)
    # The mixed-tier bucket: 5 requests, their average prompt under 100K, so the base tier.
    mixed, t = rows[MIXED_TIER_BUCKET], expected[MIXED_TIER_BUCKET]
    assert mixed.requests == t.requests and mixed.cost_usd is not None
    assert mixed.cost_usd != t.cost_usd  # the truth bills some of them at the >100K tier


def test_an_unpriced_model_is_warned_once_per_poll_over_many_spans(
    sim: SimulatorServer, caplog: pytest.LogCaptureFixture
) -> None:
    now = sim.now()
    src = build("usage", sim)
    whole = U.Span(U.floor_to(now - timedelta(days=3), U.HOUR), now, "analytics")
    rows = [r for r in src.read_analytics(whole) if r["model"] == UNKNOWN_MODEL]
    assert rows
    stats = RunStats()  # one poll, whose spans each hold the unpriced model
    with caplog.at_level(logging.WARNING, logger="monitor.sources.usage"):
        for _span in range(3):
            finished = src._finish_rows([dict(r) for r in rows], now, stats)
            assert all(r["priced"] is False and r["cost_usd"] is None for r in finished)
    warned = [r.getMessage() for r in caplog.records if UNKNOWN_MODEL in r.getMessage()]
    assert len(warned) == 1, warned
    assert sum(UNKNOWN_MODEL in n for n in stats.notes) == 1, stats.notes


def test_analytics_cost_lines_in_cents_to_the_cent(session: Session, sim: SimulatorServer) -> None:
    now = sim.now()
    result = run(build("cost", sim, page_limit=5), session, now)
    assert sim.request_counts["analytics.cost"] > 3
    assert any("analytics API" in n for n in result.stats.notes)
    truth = sim.scenario.truth(now)
    # Expected billed USD per (day, model, tier, token type) from the truth's event amounts.
    expected: dict[tuple[Any, ...], Decimal] = {}
    for e in truth.events:
        if e.service_tier == "priority" or e.at < now - timedelta(days=3):
            continue
        day = e.at.replace(hour=0, minute=0, second=0, microsecond=0)
        names = [*(("tokens", n) for n in TOKEN_TYPES), ("web_search", "")]
        for (cost_type, token_type), usd in zip(names, e.amounts, strict=True):
            if usd:
                k = (day, e.product, e.model, e.service_tier, cost_type, token_type)
                expected[k] = expected.get(k, D(0)) + usd
    got: dict[tuple[Any, ...], Decimal] = {}
    for r in rows_of(session, CostBucket):
        assert r.source == "analytics" and r.description == ""
        assert r.list_amount_usd == r.amount_usd
        k = (r.day, r.product, r.model, r.service_tier, r.cost_type, r.token_type)
        got[k] = got.get(k, D(0)) + r.amount_usd
    assert set(got) == set(expected)
    for k, usd in expected.items():
        assert to_cents(got[k]) == to_cents(usd), k
    # Per day, the bill equals the truth's to the cent (a 100x error could not hide here).
    days = truth.billed_by_day(start=now - timedelta(days=3))
    per_day: dict[Any, Decimal] = {}
    for k, usd in got.items():
        per_day[k[0].date()] = per_day.get(k[0].date(), D(0)) + usd
    assert {d: to_cents(v) for d, v in per_day.items()} == {d: to_cents(v) for d, v in days.items()}


# --- the legacy fallback --------------------------------------------------------------------


@pytest.mark.parametrize("status", [403, 404])
def test_refused_analytics_falls_back_to_legacy_then_comes_back(
    session: Session, sim: SimulatorServer, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    sim.add_fault(analytics_refused(status))
    now = sim.now()
    usage, cost = build("usage", sim, page_limit=30), build("cost", sim, page_limit=2)
    with caplog.at_level(logging.INFO, logger="monitor.sources.usage"):
        ru, rc = run(usage, session, now), run(cost, session, now)
    for result in (ru, rc):
        assert any(f"analytics API refused (HTTP {status}" in n for n in result.stats.notes)
        assert any("legacy report" in n for n in result.stats.notes)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("refused" in w and "legacy" in w for w in warnings)
    assert sim.request_counts["usage_report.messages"] > 1  # paged: 30 hourly buckets a page
    assert sim.request_counts["cost_report"] > 1

    truth = sim.scenario.truth(now)
    since = now - timedelta(days=3)
    dims = ("service_tier", "model", "workspace_id", "api_key_id", "context_window")
    expected = truth.usage_by("1h", (*dims, "inference_geo"), start=since)
    rows = list(rows_of(session, UsageBucket))
    assert rows and all(r.source == "legacy" and r.product == "" for r in rows)
    assert all(r.requests is None for r in rows)  # the legacy report has no request counts
    got = {
        (r.bucket_start, r.service_tier, r.model, r.workspace_id, r.api_key_id, r.context_window,
         r.inference_geo): r
        for r in rows
    }  # fmt: skip
    assert len(got) == len(expected)
    for (start, tier, model, ws, key, window, geo), t in expected.items():
        # The legacy report shows the default workspace as null: it is recorded under the
        # configured default workspace's id, as the analytics report names it.
        row = got[(start, tier, model, ws, key, window, geo or "not_available")]
        assert_tokens(row, t)
        if model != UNKNOWN_MODEL and (start, "message_batches_api", tier, model, ws, window,
                                       geo or "not_available") != MIXED_TIER_BUCKET:  # fmt: skip
            assert row.cost_usd == t.cost_usd
    billed = truth.billed_by_day(start=since)
    cost_rows = list(rows_of(session, CostBucket))
    assert all(r.source == "legacy" and r.description and r.model for r in cost_rows)
    assert all(r.list_amount_usd is None for r in cost_rows)
    per_day: dict[Any, Decimal] = {}
    for r in cost_rows:
        per_day[r.day.date()] = per_day.get(r.day.date(), D(0)) + r.amount_usd
    assert {d: to_cents(v) for d, v in per_day.items()} == {
        d: to_cents(v) for d, v in billed.items()
    }

    # The analytics API comes back: the rows the legacy report stood in for are replaced.
    sim.clear_faults()
    later = sim.advance(timedelta(minutes=20))
    ru = run(usage, session, later)
    assert any("available again" in n for n in ru.stats.notes)
    assert {r.source for r in rows_of(session, UsageBucket)} == {"analytics"}
    assert sum(r.requests or 0 for r in rows_of(session, UsageBucket)) == sum(
        t.requests for t in expected.values()
    )
    run(cost, session, later)
    assert {r.source for r in rows_of(session, CostBucket)} == {"analytics"}


def test_backfill_before_2026_reads_the_legacy_report(session: Session) -> None:
    start = datetime(2025, 12, 31, tzinfo=UTC)
    scenario = build_scenario("small", start=start, days=2)
    with SimulatorServer(scenario) as sim:
        now = sim.now()  # 2026-01-02: the backfill reaches back into 2025
        result = run(build("usage", sim), session, now)
        cost = run(build("cost", sim), session, now)
    notes = " | ".join(result.stats.notes)
    assert "the analytics API and the legacy report" in notes, notes
    assert "the analytics API and the legacy report" in " | ".join(cost.stats.notes)
    rows = list(rows_of(session, UsageBucket))
    epoch = datetime(2026, 1, 1, tzinfo=UTC)
    assert {r.source for r in rows if r.bucket_start < epoch} == {"legacy"}
    assert {r.source for r in rows if r.bucket_start >= epoch} == {"analytics"}
    truth = scenario.truth(now)
    since = now - timedelta(days=3)
    assert sum(r.output_tokens for r in rows) == truth.usage(since, now).output_tokens
    days = {r.day: r.source for r in rows_of(session, CostBucket)}
    assert days[start] == "legacy" and days[epoch] == "analytics"


# --- revisions ------------------------------------------------------------------------------


def test_late_revisions_replace_values_and_buckets_become_final(
    session: Session, sim: SimulatorServer
) -> None:
    sim.add_fault(late_revision("0.8", lag=timedelta(minutes=10)))
    truth_all = sim.scenario.truth()
    hour = datetime(2026, 11, 15, 11, tzinfo=UTC)  # real-time traffic runs 09:00-12:00
    at = sim.scenario.end
    src = build("usage", sim, trailing_window=timedelta(hours=3), final_after=timedelta(hours=1))
    # A first run long after, so the backfill holds final rows older than the trailing window.
    run(src, session, at)

    def bucket_totals(when: datetime) -> tuple[int, int]:
        rows = [r for r in rows_of(session, UsageBucket) if r.bucket_start == when]
        return sum(r.output_tokens for r in rows), sum(r.requests or 0 for r in rows)

    want = truth_all.usage(hour, hour + timedelta(hours=1))
    assert bucket_totals(hour) == (want.output_tokens, want.requests)

    # Now replay the hour while it is being revised: start over at 11:58.
    session.execute(delete(UsageBucket))
    session.execute(delete(SourceCursor))
    session.commit()
    sim.set_now(hour + timedelta(minutes=58))
    run(src, session, sim.now())
    shown = bucket_totals(hour)
    partial = sim.scenario.truth(sim.now()).usage(hour, hour + timedelta(hours=1))
    assert 0 < shown[0] < partial.output_tokens  # 80 % of what was there
    assert all(not r.final for r in rows_of(session, UsageBucket) if r.bucket_start == hour)
    # A group the earlier read had and the re-read no longer shows is removed.
    ghost = UsageBucket(
        bucket_start=hour, bucket_end=hour + timedelta(hours=1), width="1h",
        source="analytics", model="claude-ghost", fetched_at=sim.now(),
    )  # fmt: skip
    session.add(ghost)
    session.commit()

    sim.set_now(hour + timedelta(minutes=90))
    run(src, session, sim.now())
    final_truth = sim.scenario.truth(sim.now()).usage(hour, hour + timedelta(hours=1))
    # Replaced, not added: exactly the final value, not 1.8x of it.
    assert bucket_totals(hour) == (final_truth.output_tokens, final_truth.requests)
    rows = [r for r in rows_of(session, UsageBucket) if r.bucket_start == hour]
    assert "claude-ghost" not in {r.model for r in rows}
    assert not any(r.final for r in rows)  # 12:00 is not yet an hour ago at 12:30

    sim.set_now(hour + timedelta(hours=2, minutes=5))
    result = run(src, session, sim.now())
    rows = [r for r in rows_of(session, UsageBucket) if r.bucket_start == hour]
    assert rows and all(r.final for r in rows), (result.stats.notes, rows)
    assert bucket_totals(hour) == (final_truth.output_tokens, final_truth.requests)
    # An incremental poll reads the trailing window, not the whole backfill again.
    assert any("2026-11-15T10:00:00Z" in n for n in result.stats.notes), result.stats.notes


def test_cost_rereads_the_current_and_previous_day(session: Session, sim: SimulatorServer) -> None:
    sim.add_fault(late_revision("0.5", lag=timedelta(hours=30)))
    day2 = T0 + timedelta(days=1)
    sim.set_now(day2 + timedelta(hours=3))
    src = build("cost", sim)
    run(src, session, sim.now())
    first = {r.day: r for r in rows_of(session, CostBucket)}
    billed = sim.scenario.truth(sim.now()).billed_by_day()

    def total(day: datetime) -> Decimal:
        return sum((r.amount_usd for r in rows_of(session, CostBucket) if r.day == day), D(0))

    assert to_cents(total(T0)) == to_cents(billed[T0.date()] / 2)
    sim.clear_faults()
    sim.set_now(day2 + timedelta(hours=4))
    run(src, session, sim.now())
    assert first and to_cents(total(T0)) == to_cents(billed[T0.date()])  # replaced, not added


def test_a_cost_day_read_provisional_is_read_again_after_a_day_long_outage(
    session: Session, sim: SimulatorServer
) -> None:
    # Read just after midnight: the day before is still being revised (shown at half).
    sim.add_fault(late_revision("0.5", lag=timedelta(minutes=50)))
    day2 = T0 + timedelta(days=1)
    src = build("cost", sim)
    sim.set_now(day2 + timedelta(minutes=10))
    run(src, session, sim.now())
    billed = sim.scenario.truth(sim.scenario.end).billed_by_day()

    def total(day: datetime) -> Decimal:
        return sum((r.amount_usd for r in rows_of(session, CostBucket) if r.day == day), D(0))

    assert to_cents(total(T0)) == to_cents(billed[T0.date()] / 2)
    # The cost report is down for a day: longer than the current-and-previous-day re-read.
    down = sim.add_fault(rate_limit(retry_after=3600, endpoint="analytics.cost"))
    sim.set_now(day2 + timedelta(hours=1))
    assert not collect_source(src, session, sim.now()).ok
    down.times = down.fired  # back
    sim.set_now(day2 + timedelta(days=1, hours=2))
    result = run(src, session, sim.now())
    assert to_cents(total(T0)) == to_cents(billed[T0.date()]), result.stats.notes
    assert any("2026-11-15T00:00:00Z" in n for n in result.stats.notes), result.stats.notes


@pytest.mark.parametrize("fault", ["repeat_page", "skip_page"])
@pytest.mark.parametrize("name", ["usage", "cost"])
def test_report_pages_that_do_not_chain_fail_the_run_and_store_nothing(
    session: Session, sim: SimulatorServer, fault: str, name: str
) -> None:
    """A cursor pointing back would double rows; a missing one would drop the rest of the
    range, silently, with the SDK's own paging. Either fails the run; the next one reads it."""
    now = sim.now()
    healthy = build(name, sim, page_limit=7)
    run(healthy, session, now)
    model = UsageBucket if name == "usage" else CostBucket
    want = sorted((r.model, str(r.cost_usd if name == "usage" else r.amount_usd))
                  for r in rows_of(session, model))  # fmt: skip
    session.execute(delete(model))
    session.execute(delete(SourceCursor))
    session.commit()
    src = build(name, sim, page_limit=7)
    for times in (1, None):  # the first page, and every page
        make = repeat_page if fault == "repeat_page" else skip_page
        injected = sim.add_fault(make(times=times, endpoint=f"analytics.{name}"))
        result = collect_source(src, session, now, [ADMIN_KEY])
        assert not result.ok and "ReportPagingError" in (result.run.error or "")
        assert injected.fired >= 1 and not rows_of(session, model)
        sim.clear_faults()
    run(src, session, now)
    got = sorted((r.model, str(r.cost_usd if name == "usage" else r.amount_usd))
                 for r in rows_of(session, model))  # fmt: skip
    assert got == want


def test_legacy_report_pages_that_do_not_chain_fail_the_run(
    session: Session, sim: SimulatorServer
) -> None:
    sim.add_fault(analytics_refused(404))
    src = build("usage", sim, page_limit=10)
    for fault in (repeat_page(endpoint="usage_report"), skip_page(endpoint="usage_report")):
        sim.add_fault(fault)
        result = collect_source(src, session, sim.now(), [ADMIN_KEY])
        assert not result.ok and "ReportPagingError" in (result.run.error or ""), result.run.error
        assert fault.fired == 1 and not rows_of(session, UsageBucket)
    run(src, session, sim.now())
    assert rows_of(session, UsageBucket)


# --- reconciliation -------------------------------------------------------------------------


def test_daily_drift_finds_an_injected_price_drift_and_none_without(
    session: Session, sim: SimulatorServer
) -> None:
    now = sim.now()
    run(build("usage", sim), session, now)
    run(build("cost", sim), session, now)
    since, until = T0, T0 + timedelta(days=2)
    # Without drift, only what the report cannot price exactly differs: the unknown model (not
    # priced, so computed $0) and the one mixed-tier Haiku 5.5 bucket.
    clean = daily_drift(session, since, until)
    assert clean
    off = {(r.day, r.model, r.service_tier) for r in clean if abs(r.drift_ratio or 0) > 1e-9}
    assert off == {(T0, UNKNOWN_MODEL, "batch"), (T0, "claude-haiku-5-5", "batch")}
    for r in clean:
        if (r.day, r.model, r.service_tier) not in off:
            assert r.computed_usd == r.billed_usd, r

    # The provider now bills Sonnet 4.6 5 % higher than our price table says.
    sim.add_fault(price_drift({"claude-sonnet-4-6": "1.05"}))
    session.execute(delete(CostBucket))
    session.execute(delete(SourceCursor).where(col(SourceCursor.source) == "cost"))
    session.commit()
    run(build("cost", sim), session, now)
    drifted = daily_drift(session, since, until)
    sonnet = [r for r in drifted if r.model == "claude-sonnet-4-6"]
    assert {r.service_tier for r in sonnet} == {"standard", "batch"}
    for r in sonnet:
        assert r.drift_ratio == pytest.approx(1 / 1.05 - 1, abs=1e-12)
    assert {
        (r.day, r.model, r.service_tier) for r in drifted if abs(r.drift_ratio or 0) > 1e-9
    } == (off | {(r.day, r.model, r.service_tier) for r in sonnet})


# --- the summary command --------------------------------------------------------------------


def collect_all(sim: SimulatorServer, session: Session, now: datetime) -> None:
    batches = batches_source.from_settings("batches", settings_for(sim))
    assert batches is not None
    run(batches, session, now)
    run(build("usage", sim), session, now)
    run(build("cost", sim), session, now)


def expected_summary(sim: SimulatorServer, since: datetime, until: datetime, now: datetime,
                     mixed_adjustment: Decimal) -> dict[str, Any]:  # fmt: skip
    """Work the summary figures out from the scenario's ground truth."""
    truth = sim.scenario.truth(now)
    ended = [b for b in truth.batches.values() if b.ended_at and since <= b.ended_at < until]
    requests = sum(b.request_count for b in ended)
    counts = {k: sum(b.counts[k] for b in ended) for k in ("errored", "expired")}
    batch = truth.batch_totals(since, until)
    realtime = truth.usage(since, until, product="messages_api")
    total = realtime.cost_usd + batch.cost_usd
    billed = sum(truth.billed_by_day(since, until).values(), D(0))
    computed = sum(truth.computed_by_day(since, until).values(), D(0)) + mixed_adjustment
    at = min(until, now)
    running = [
        b for b in truth.batches.values()
        if b.created_at < at and (b.ended_at is None or b.ended_at > at)
    ]  # fmt: skip
    turnarounds = [b.turnaround_seconds for b in ended if b.turnaround_seconds is not None]
    return {
        "realtime_cost_usd": str(to_cents(realtime.cost_usd)),
        "batch_cost_usd": str(to_cents(batch.cost_usd)),
        "total_cost_usd": str(to_cents(total)),
        "batch_share_requests": float(D(requests) / D(requests + realtime.requests)),
        "batch_share_spend": float(batch.cost_usd / total),
        "savings_usd": str(to_cents(batch.standard_cost_usd - batch.cost_usd)),
        "batches_ended": len(ended),
        "batch_failure_rate": float(D(counts["errored"] + counts["expired"]) / D(requests)),
        "batch_expired_rate": float(D(counts["expired"]) / D(requests)),
        "batch_turnaround_p50_seconds": nearest_rank(turnarounds, 50),
        "batch_turnaround_p95_seconds": nearest_rank(turnarounds, 95),
        "batches_in_progress": len(running),
        "billed_cost_usd": str(to_cents(billed)),
        "cost_drift_ratio": float(computed / billed - 1),
    }


def test_summary_figures_match_the_ground_truth(session: Session, sim: SimulatorServer) -> None:
    now = sim.now()
    collect_all(sim, session, now)
    since, until = T0, T0 + timedelta(days=2)
    data = build_summary(session, since, until, now).to_json()
    # The report prices the mixed-tier bucket from its average; the truth per request.
    mixed = stored_usage(session)[MIXED_TIER_BUCKET]
    truth_mixed = sim.scenario.truth(now).usage_by("1h", USAGE_DIMS)[
        (*MIXED_TIER_BUCKET[:-1], "global")
    ]
    assert mixed.cost_usd is not None
    want = expected_summary(sim, since, until, now, mixed.cost_usd - truth_mixed.cost_usd)
    for key, value in want.items():
        if isinstance(value, float):
            assert data[key] == pytest.approx(value, rel=1e-12), key
        else:
            assert data[key] == value, key
    assert data["since"] == "2026-11-15T00:00:00Z" and data["until"] == "2026-11-17T00:00:00Z"
    assert 0 < data["batch_share_requests"] < 1 and data["batches_in_progress"] >= 1
    assert data["sources"]["batch"].startswith("batch ledger")
    assert data["sources"]["realtime"] == "analytics usage report"
    assert data["sources"]["billed"] == "analytics cost report"
    # The ledger prices each request, the usage report each bucket: the note says they differ.
    assert any("differs between the batch ledger" in n for n in data["notes"])
    assert any("cost drift" in n and UNKNOWN_MODEL in n for n in data["notes"])
    # Per-model and per-workspace money adds up to the totals.
    for key in ("by_model", "by_workspace"):
        rows = data[key]
        slack = D("0.01") * len(rows)  # each row is rounded to the cent on its own
        for money in ("realtime_cost_usd", "batch_cost_usd"):
            parts = sum((D(r[money] or "0") for r in rows), D(0))
            assert abs(parts - D(data[money])) <= slack, (key, money)
    sonnet = next(r for r in data["by_model"] if r["model"] == "claude-sonnet-4-6")
    # A model without a price has null money, never $0.00.
    unknown = [r for r in data["by_model"] if r["model"] == UNKNOWN_MODEL]
    assert unknown and all(
        r[k] is None for r in unknown for k in ("realtime_cost_usd", "batch_cost_usd")
    )
    truth = sim.scenario.truth(now)
    assert sonnet["realtime_cost_usd"] == str(
        to_cents(truth.usage(since, until, product="messages_api", model="claude-sonnet-4-6")
                 .cost_usd)
    )  # fmt: skip

    # One workspace: the real-time and batch figures are that workspace's.
    prod = build_summary(session, since, until, now, workspace="wrkspc_prod").to_json()
    rt = truth.usage(since, until, product="messages_api", workspace_id="wrkspc_prod")
    assert prod["realtime_cost_usd"] == str(to_cents(rt.cost_usd))
    prod_batches = [
        b for b in truth.batches.values()
        if b.workspace_id == "wrkspc_prod" and b.ended_at and since <= b.ended_at < until
    ]  # fmt: skip
    assert prod["batch_cost_usd"] == str(to_cents(sum((b.cost_usd for b in prod_batches), D(0))))
    assert [r["workspace"] for r in prod["by_workspace"]] == ["wrkspc_prod"]


def test_summary_without_reports_says_so(session: Session, sim: SimulatorServer) -> None:
    batches = batches_source.from_settings("batches", settings_for(sim))
    assert batches is not None
    run(batches, session, sim.now())
    data = build_summary(session, T0, T0 + timedelta(days=2), sim.now()).to_json()
    assert data["billed_cost_usd"] is None and data["cost_drift_ratio"] is None
    assert data["realtime_cost_usd"] is None and data["batch_share_requests"] is None
    assert data["batch_cost_usd"] is not None
    assert any("billed cost unknown" in n for n in data["notes"])


def test_summary_command_json_and_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sim: SimulatorServer
) -> None:
    url = f"sqlite:///{tmp_path}/m.db"
    engine = db.make_engine(url)
    db.upgrade(engine)  # the command requires a migrated database
    now = sim.now()
    with Session(engine, expire_on_commit=False) as session:
        collect_all(sim, session, now)
        want = build_summary(session, T0, T0 + timedelta(days=2), now).to_json()
    engine.dispose()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MONITOR_DATABASE_URL", url)
    runner = CliRunner()
    args = ["summary", "--since", "2026-11-15", "--until", "2026-11-17T00:00:00Z"]
    out = runner.invoke(cli.app, [*args, "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    data.pop("batches_in_progress"), want.pop("batches_in_progress")
    assert data == want
    table = runner.invoke(cli.app, args)
    assert table.exit_code == 0, table.output
    assert "real-time" in table.stdout and "claude-sonnet-4-6" in table.stdout
    bad = runner.invoke(cli.app, ["summary", "--window", "7d", "--since", "2026-11-15"])
    assert bad.exit_code == 2 and "--window" in bad.stderr


def test_summary_window_options() -> None:
    now = datetime(2026, 11, 22, 12, tzinfo=UTC)
    assert cli.parse_window(None, None, None, now) == (now - timedelta(days=7), now)
    assert cli.parse_window(None, None, "24h", now) == (now - timedelta(hours=24), now)
    assert cli.parse_window("2026-11-01", "2026-11-08", None, now) == (
        datetime(2026, 11, 1, tzinfo=UTC),
        datetime(2026, 11, 8, tzinfo=UTC),
    )
    with pytest.raises(cli.UsageError):
        cli.parse_window("2026-11-08", "2026-11-01", None, now)
    with pytest.raises(cli.UsageError):
        cli.parse_window(None, None, "soon", now)


def test_default_book_prices_the_scenario_models() -> None:
    # Guard for the tests above: every scenario model but the unknown one has a price.
    book = default_book()
    for model in ("claude-sonnet-4-6", "claude-haiku-4-5", "claude-haiku-5-5", "claude-opus-4-7",
                  "claude-sonnet-5-5"):  # fmt: skip
        assert book.knows(model)
    assert not book.knows(UNKNOWN_MODEL)


# --- bad report items -------------------------------------------------------------------------


def test_bad_report_items_are_left_out_and_the_rest_is_kept(session: Session) -> None:
    """A page with a year-9999 bucket and impossible counts: those items go, the rest stays."""
    from urllib.parse import parse_qs, urlsplit

    from tests.httpkit import json_server

    def result(**tokens: Any) -> dict[str, Any]:
        return {"model": "claude-sonnet-4-6", "service_tier": "standard", "workspace_id": None,
                "uncached_input_tokens": 1000, "output_tokens": 100, **tokens}  # fmt: skip

    def report(request: Any) -> tuple[int, Any]:
        query = parse_qs(urlsplit(request.path).query)
        start = datetime.fromisoformat(query["starting_at"][0].replace("Z", "+00:00"))
        end = datetime.fromisoformat(query["ending_at"][0].replace("Z", "+00:00"))
        data = []
        at = start
        while at < end:
            data.append({"starting_at": U.iso(at), "ending_at": U.iso(at + U.HOUR),
                         "results": [result()]})  # fmt: skip
            at += U.HOUR
        data[0]["results"] += [result(output_tokens=-5), result(uncached_input_tokens=10**16)]
        data.append({"starting_at": "9999-12-31T23:00:00Z", "ending_at": "9999-12-31T23:59:59Z",
                     "results": [result()]})  # fmt: skip
        return 200, {"data": data, "has_more": False, "next_page": None}

    with json_server(report) as url:
        settings = Settings(
            anthropic_base_url=url,
            anthropic_admin_key=SecretStr("sk-ant-admin01-test"),
            collect=CollectSection(backfill=timedelta(hours=3), max_retries=0),
        )
        src = U.from_settings("usage", settings)
        assert src is not None
        src.progress = False
        # Before 2026 only the legacy report exists: no analytics request is made.
        now = datetime(2025, 6, 1, 3, 30, tzinfo=UTC)
        first = collect_source(src, session, now)
        second = collect_source(src, session, now + timedelta(hours=1))
    assert first.ok, first.run.error
    notes = "\n".join(first.stats.notes)
    assert "legacy usage page 1 bucket 1 result 2: output_tokens: -5 is not between 0" in notes
    assert "uncached_input_tokens: 10000000000000000 is not between 0" in notes
    assert "starting_at: '9999-12-31T23:00:00Z' is not between 2000-01-01" in notes
    # Every span's 9999 bucket and the first span's two bad results; the good rows are kept.
    assert first.run.bad_lines >= 3
    rows = rows_of(session, UsageBucket)
    # 00:00 to 03:00 from the first run, 04:00 from the second.
    assert {r.bucket_start for r in rows} == {
        datetime(2025, 6, 1, h, tzinfo=UTC) for h in range(0, 5)
    }
    assert all(r.input_tokens == 1000 and r.output_tokens == 100 for r in rows)
    assert second.ok, second.run.error  # nothing wedged
