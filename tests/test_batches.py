"""The Message Batches collector, with the real SDK against the simulator over HTTP.

Every recorded figure is checked against the scenario's own ground truth, to the cent, on
SQLite and PostgreSQL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select
from sqlmodel import Session, col

from monitor import db, simulator
from monitor.collect import RunStats, SourceError, collect_source
from monitor.models import Batch, BatchUsage, CollectRun
from monitor.simulator import SimulatorServer, build_scenario
from monitor.sources.batches import BatchesSource, from_settings
from monitor.workloads import attribute as attribute_workload
from tests.conftest import migrate_fresh
from tests.simkit import assert_matches_truth, settings_for


@pytest.fixture
def sim() -> Iterator[SimulatorServer]:
    """Serve the small scenario, as of its end, for one test."""
    server = SimulatorServer(build_scenario("small")).start()
    try:
        yield server
    finally:
        server.close()


def _source(sim: SimulatorServer, **collect: object) -> BatchesSource:
    src = from_settings("batches", settings_for(sim, **collect))
    assert src is not None
    return src


def _collect(session: Session, src: BatchesSource, sim: SimulatorServer) -> CollectRun:
    return collect_source(src, session, sim.now()).run


def test_workload_attribution() -> None:
    assert attribute_workload("lead-123") == "lead"
    assert attribute_workload("weekly_report_17") == "weekly_report"
    assert attribute_workload("a-b-c-9") == "a-b-c"
    assert attribute_workload("classify-2026111503-0001") == "classify"
    assert attribute_workload("codereview-pr12-3") == "codereview"
    assert attribute_workload("weekly_report_17_3") == "weekly_report"
    assert attribute_workload("no-digits") == "no-digits"
    import re

    from monitor.workloads import Workload

    declared = [Workload("reports", re.compile(r"^weekly"), None, None)]
    assert attribute_workload("weekly_report_17", declared) == "reports"
    assert attribute_workload("lead-1", declared) == "lead"


def test_full_collection_matches_ground_truth(engine: Engine, sim: SimulatorServer) -> None:
    truth = sim.scenario.truth(sim.now())
    kinds = {k for b in truth.batches.values() for k, n in b.counts.items() if n}
    assert {"succeeded", "errored", "canceled", "expired", "processing"} <= kinds
    assert any(b.archived_at for b in truth.batches.values())
    assert any(len(b.by_model) > 1 for b in truth.batches.values())
    assert len({b.workspace_id for b in truth.batches.values()}) > 1
    with Session(engine) as session:
        run = _collect(session, _source(sim, list_page_size=2), sim)
        assert run.status == "ok", run.error
        assert_matches_truth(session, truth)


def test_unknown_model_is_unpriced_not_zero(engine: Engine, sim: SimulatorServer) -> None:
    truth = sim.scenario.truth(sim.now())
    assert truth.unpriced_models(), "the scenario should carry a model without a price"
    with Session(engine) as session:
        _collect(session, _source(sim), sim)
        rows = (
            session.exec(select(BatchUsage).where(col(BatchUsage.priced).is_(False)))
            .scalars()
            .all()
        )  # type: ignore[call-overload]
        assert {r.model for r in rows} == truth.unpriced_models()
        assert all(r.cost_usd is None and r.output_tokens > 0 for r in rows)


def test_an_unpriced_model_is_warned_once_per_poll(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    # One warning per batch flooded the log of a busy organisation (thousands of batches a
    # day); one per model per poll, with the count, says the same.
    scenario = build_scenario(
        "load", seed=3, days=0.5, workspaces=2, batches_per_day=400, big_per_day=0
    )
    with SimulatorServer(scenario) as sim, Session(engine) as session:
        truth = scenario.truth(sim.now())
        src = _source(sim)
        with caplog.at_level("WARNING", logger="monitor.sources.batches"):
            result = collect_source(src, session, sim.now())
        per_model: dict[str, int] = {}
        for row in session.execute(
            select(BatchUsage.model, BatchUsage.batch_id).where(col(BatchUsage.priced).is_(False))
        ):
            per_model[row[0]] = per_model.get(row[0], 0) + 1
    assert set(per_model) == truth.unpriced_models()
    assert max(per_model.values()) > 1, "the scenario should have several unpriced batches"
    warnings = [r.getMessage() for r in caplog.records if "no price for model" in r.getMessage()]
    assert len(warnings) == len(per_model), warnings
    for model, n in per_model.items():
        assert any(repr(model) in w and f"in {n} batch(es)" in w for w in warnings), warnings
    assert any("has no price" in n for n in result.stats.notes)


def test_second_poll_is_incremental(engine: Engine, sim: SimulatorServer) -> None:
    with Session(engine) as session:
        src = _source(sim, list_page_size=2)
        first = _collect(session, src, sim)
        unended = session.exec(select(Batch).where(Batch.processing_status != "ended")).all()
        sim.reset_counts()
        run = _collect(session, src, sim)
        assert run.status == "ok"
        # One listing page per workspace (it stops at the first known ended batch), one
        # retrieve per unended batch, nothing else: proportional to what changed.
        workspaces = len(sim.scenario.workspaces)
        assert sim.request_counts["batches.list"] <= workspaces
        assert sim.request_counts["batches.retrieve"] <= len(unended)
        assert sim.request_counts["batches.results"] == 0
        assert run.api_calls == sum(sim.request_counts.values())
        assert run.api_calls <= workspaces + len(unended) < first.api_calls


def test_unended_batches_are_followed_until_they_end(engine: Engine) -> None:
    scenario = build_scenario("small")
    with (
        SimulatorServer(scenario, now=scenario.start + timedelta(hours=12)) as sim,
        Session(engine) as session,
    ):
        src = _source(sim)
        _collect(session, src, sim)
        assert_matches_truth(session, scenario.truth(sim.now()))
        sim.set_now(scenario.end)
        run = _collect(session, src, sim)
        assert run.status == "ok", run.error
        assert_matches_truth(session, scenario.truth(sim.now()))


def test_restart_keeps_polling_unended_batches(db_url: str) -> None:
    scenario = build_scenario("small")
    with SimulatorServer(scenario, now=scenario.start + timedelta(hours=12)) as sim:
        first = db.make_engine(db_url)
        with Session(first) as session:
            _collect(session, _source(sim), sim)
        first.dispose()
        sim.set_now(scenario.end)
        # A new process: new engine, new source, same database.
        second = db.make_engine(db_url)
        with Session(second) as session:
            assert _collect(session, _source(sim), sim).status == "ok"
            assert_matches_truth(session, scenario.truth(sim.now()))
        second.dispose()


def test_rate_limit_and_server_errors_are_retried(engine: Engine, sim: SimulatorServer) -> None:
    sim.add_fault(simulator.rate_limit(retry_after=0.05, times=2, endpoint="batches.list"))
    sim.add_fault(simulator.server_error(times=1, endpoint="batches.results"))
    sim.add_fault(simulator.overloaded(times=1, endpoint="batches.retrieve"))
    with Session(engine) as session:
        run = _collect(session, _source(sim), sim)
        assert run.status == "ok", run.error
        assert_matches_truth(session, sim.scenario.truth(sim.now()))
        assert all(f.exhausted for f in sim.faults)


def test_long_retry_after_fails_fast_and_spares_other_workspaces(
    engine: Engine, sim: SimulatorServer
) -> None:
    # A retry-after of an hour must not stall the daemon: the poll fails now, retries later.
    sim.add_fault(simulator.rate_limit(retry_after=3600, times=1, endpoint="batches.list"))
    with Session(engine) as session:
        run = _collect(session, _source(sim), sim)
        assert run.status == "failed" and "RateLimitError" in (run.error or "")
        assert sim.request_counts["batches.list"] >= len(sim.scenario.workspaces)
        stored_ws = {w for (w,) in session.execute(select(Batch.workspace_id).distinct())}
        assert len(stored_ws) == len(sim.scenario.workspaces) - 1
        # Next poll (the fault has fired): everything is there.
        assert _collect(session, _source(sim), sim).status == "ok"
        assert_matches_truth(session, sim.scenario.truth(sim.now()))


def test_a_failed_workspace_is_a_source_error_naming_it(
    engine: Engine, sim: SimulatorServer
) -> None:
    # A failed poll is an expected, one-line failure of the source (SourceError, as the other
    # sources raise), not a RuntimeError that reads like a bug.
    sim.add_fault(simulator.rate_limit(retry_after=3600, times=1, endpoint="batches.list"))
    src = _source(sim)
    with Session(engine) as session, pytest.raises(SourceError) as err:
        src.collect(session, sim.now(), RunStats())
    assert str(err.value).startswith("workspace ") and "RateLimitError" in str(err.value)
    with Session(engine) as session:
        run = _collect(session, _source(sim), sim)
        assert run.status == "ok", run.error  # the fault fired once; the next poll reads all


@pytest.mark.parametrize("fault", ["cut", "malformed"])
def test_broken_results_write_nothing_and_are_retried(
    engine: Engine, sim: SimulatorServer, fault: str
) -> None:
    truth = sim.scenario.truth(sim.now())
    victim = max(
        (b for b in truth.batches.values() if b.results_available and b.ended_at),
        key=lambda b: b.request_count,
    )
    if fault == "cut":
        sim.add_fault(simulator.cut_stream(victim.request_count // 2, batch_id=victim.id))
    else:
        sim.add_fault(simulator.malformed_line(3, batch_id=victim.id))
    with Session(engine) as session:
        src = _source(sim)
        run = _collect(session, src, sim)
        assert run.status == "failed" and victim.id in (run.error or "")
        b = session.get(Batch, victim.id)
        assert b is not None and b.results_state == "retry" and b.results_attempts == 1
        assert b.cost_usd is None and b.input_tokens == 0 and b.workload is None
        n_usage = session.exec(select(BatchUsage).where(BatchUsage.batch_id == victim.id)).all()
        assert n_usage == []
        run2 = _collect(session, src, sim)
        assert run2.status == "ok", run2.error
        assert_matches_truth(session, truth)


def test_kill_during_results_then_restart_gives_same_totals(db_url: str, tmp_path: Path) -> None:
    migrate_fresh(db_url)
    scenario = build_scenario("small")
    with SimulatorServer(scenario) as sim:
        sim.add_fault(simulator.slow(30, endpoint="batches.results", times=1))
        env = {
            **os.environ,
            "MONITOR_DATABASE_URL": db_url,
            "ANTHROPIC_BASE_URL": sim.url,
            "MONITOR_CONFIG": str(_workspaces_toml(tmp_path, sim)),
            **{f"SIM_KEY_{i}": w.api_key for i, w in enumerate(scenario.workspaces)},
        }
        env.pop("ANTHROPIC_API_KEY", None)
        proc = subprocess.Popen(
            [sys.executable, "-m", "monitor", "collect", "--source", "batches"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            for _ in range(600):  # bounded wait: until the child is inside a results download
                if sim.request_counts["batches.results"] >= 1 or proc.poll() is not None:
                    break
                import time

                time.sleep(0.05)
            assert proc.poll() is None, proc.communicate()
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.wait(timeout=30)
        sim.clear_faults()
        engine = db.make_engine(db_url)
        with Session(engine) as session:
            partial = session.exec(select(Batch).where(Batch.results_state == "ingested")).all()
            assert len(partial) < len([b for b in scenario.truth().batches.values() if b.ended_at])
            assert _collect(session, _source(sim), sim).status == "ok"
            assert_matches_truth(session, scenario.truth(sim.now()))
        engine.dispose()


def _workspaces_toml(tmp_path: Path, sim: SimulatorServer) -> Path:
    lines = []
    for i, w in enumerate(sim.scenario.workspaces):
        wid = w.id if w.id.startswith("wrkspc_") else "default"
        lines += [
            "[[workspaces]]",
            f'id = "{wid}"',
            f'name = "{w.name}"',
            f'api_key_env = "SIM_KEY_{i}"',
        ]
    path = tmp_path / "monitor.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_batches_cli_json(
    db_url: str, sim: SimulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import orjson
    from typer.testing import CliRunner

    from monitor.cli import app

    migrate_fresh(db_url)
    engine = db.make_engine(db_url)
    with Session(engine) as session:
        _collect(session, _source(sim), sim)
    engine.dispose()
    monkeypatch.setenv("MONITOR_DATABASE_URL", db_url)
    result = CliRunner().invoke(app, ["batches", "--json"])
    assert result.exit_code == 0, result.output
    data = orjson.loads(result.stdout)
    truth = sim.scenario.truth(sim.now())
    assert len(data) == len(truth.batches)
    keys = {
        "id", "workspace", "workload", "status", "archived", "requests", "succeeded", "errored",
        "canceled", "expired", "processing", "created_at", "ended_at", "turnaround_seconds",
        "failure_rate", "input_tokens", "output_tokens", "cache_read_tokens",
        "cache_write_5m_tokens", "cache_write_1h_tokens", "cost_usd", "standard_cost_usd",
        "savings_usd", "models",
    }  # fmt: skip
    for d in data:
        assert keys <= set(d)
        t = truth.batches[d["id"]]
        if t.ended_at and t.results_available:
            assert d["cost_usd"] == str(t.cost_usd.quantize(Decimal("0.01"), "ROUND_HALF_UP"))
            assert (
                d["failure_rate"] == (t.counts["errored"] + t.counts["expired"]) / t.request_count
            )
            assert d["models"] == sorted(t.by_model)
        if t.ended_at is None:
            assert d["turnaround_seconds"] is None and d["failure_rate"] is None
        if t.ended_at and not t.results_available:
            # Archived before its results were read: its tokens are unknown, not zero.
            assert d["cost_usd"] is None and d["input_tokens"] is None
            assert d["output_tokens"] is None and d["cache_read_tokens"] is None
    assert any(
        truth.batches[d["id"]].ended_at and not truth.batches[d["id"]].results_available
        for d in data
    ), "the scenario should hold a batch archived unread"
    ended = CliRunner().invoke(app, ["batches", "--json", "--status", "in_progress"])
    assert all(d["status"] == "in_progress" for d in orjson.loads(ended.stdout))


# --- results that cannot be read: retried slowly, bounded per poll, never printed raw ---------


@pytest.fixture
def lite(tmp_path: Path) -> Iterator[Session]:
    """A SQLite store for the tests below, where the database does not matter."""
    url = f"sqlite:///{tmp_path / 'monitor.db'}"
    eng = db.make_engine(url)
    db.upgrade(eng)
    try:
        with Session(eng) as session:
            yield session
    finally:
        eng.dispose()


def _largest_readable(sim: SimulatorServer) -> str:
    truth = sim.scenario.truth(sim.now())
    return max(
        (b for b in truth.batches.values() if b.results_available and b.ended_at),
        key=lambda b: b.request_count,
    ).id


def test_failed_results_are_retried_slowly_until_read(lite: Session, sim: SimulatorServer) -> None:
    victim = _largest_readable(sim)
    sim.add_fault(simulator.cut_stream(3, batch_id=victim, times=None))
    src = _source(sim, results_max_attempts=2)
    now = sim.now()
    collect_source(src, lite, now)
    last = collect_source(src, lite, now)
    b = lite.get(Batch, victim)
    assert b is not None
    lite.refresh(b)
    assert (b.results_state, b.results_attempts) == ("failed", 2)
    assert b.results_retry_at == now + timedelta(hours=1)
    assert any("giving up for now" in n and victim in n for n in last.stats.notes)
    assert last.run.status == "failed"

    # Not before its time: no read, the run is fine, and it says what waits.
    reads = sim.request_counts["batches.results"]
    early = collect_source(src, lite, now + timedelta(minutes=59))
    assert early.ok and sim.request_counts["batches.results"] == reads
    assert any("wait for their next try" in n for n in early.stats.notes)

    # At its time it is read again, and the next wait doubles.
    collect_source(src, lite, now + timedelta(hours=1))
    assert sim.request_counts["batches.results"] == reads + 1
    lite.refresh(b)
    assert b.results_attempts == 3 and b.results_retry_at == now + timedelta(hours=3)

    # --retry-failed reads it at once; with the fault gone, its cost is recorded.
    sim.clear_faults()
    src.retry_failed = True
    done = collect_source(src, lite, now + timedelta(hours=1, minutes=5))
    assert done.ok, done.run.error
    lite.refresh(b)
    assert b.results_state == "ingested" and b.results_retry_at is None
    assert b.cost_usd == sim.scenario.truth(sim.now()).batches[victim].cost_usd


def test_failed_results_end_when_the_batch_is_archived(lite: Session, sim: SimulatorServer) -> None:
    victim = _largest_readable(sim)
    sim.add_fault(simulator.cut_stream(3, batch_id=victim, times=None))
    src = _source(sim, results_max_attempts=1)
    collect_source(src, lite, sim.now())
    b = lite.get(Batch, victim)
    assert b is not None and b.results_state == "failed"
    # 30 days on, upstream has archived it: the slow retry re-reads the batch and stops.
    later = sim.advance(timedelta(days=30))
    result = collect_source(src, lite, later)
    lite.refresh(b)
    assert b.results_state == "unavailable" and b.archived_at is not None
    assert b.cost_usd is None
    assert any(victim in n and "archived" in n for n in result.stats.notes)


def test_a_stuck_results_endpoint_trips_the_breaker(lite: Session, sim: SimulatorServer) -> None:
    sim.add_fault(simulator.server_error(endpoint="batches.results"))  # every time
    src = _source(sim, max_retries=0, results_breaker=2)
    result = collect_source(src, lite, sim.now())
    assert result.run.status == "failed"
    ended = lite.scalars(
        select(Batch).where(
            col(Batch.processing_status) == "ended", col(Batch.archived_at).is_(None)
        )
    ).all()
    by_ws: dict[str, list[int]] = {}
    for b in ended:
        by_ws.setdefault(b.workspace_id, []).append(b.results_attempts)
    for ws, attempts in by_ws.items():
        # Two failures in a row, then the rest of the workspace waits (no attempt spent).
        n = len(attempts)
        assert sorted(attempts, reverse=True) == [1] * min(2, n) + [0] * max(0, n - 2), ws
    assert sum(len(a) > 2 for a in by_ws.values()) >= 1  # the scenario has such a workspace
    assert any("failed 2 times in a row" in n for n in result.stats.notes)
    assert sim.request_counts["batches.results"] <= 2 * len(by_ws)


def test_the_time_budget_leaves_results_for_the_next_poll(
    lite: Session, sim: SimulatorServer
) -> None:
    src = _source(sim, poll_budget=timedelta(microseconds=1))
    first = collect_source(src, lite, sim.now())
    assert first.ok, first.run.error
    read = lite.scalars(select(Batch).where(col(Batch.results_state) == "ingested")).all()
    # One read per workspace and poll: the budget is spent, yet every poll makes progress.
    assert 0 < len(read) <= len(sim.scenario.workspaces)
    assert any("time budget" in n for n in first.stats.notes)
    for _ in range(60):  # bounded: the small scenario has far fewer batches per workspace
        if collect_source(src, lite, sim.now()).stats.items == 0:
            break
    assert_matches_truth(lite, sim.scenario.truth(sim.now()))


def test_an_echoed_key_is_scrubbed_from_every_output(
    tmp_path: Path,
    sim: SimulatorServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from typer.testing import CliRunner

    from monitor.cli import app

    url = f"sqlite:///{tmp_path / 'monitor.db'}"
    db.upgrade(db.make_engine(url))
    sim.add_fault(simulator.echo_headers(endpoint="batches.results"))
    monkeypatch.setenv("MONITOR_DATABASE_URL", url)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", sim.url)
    monkeypatch.setenv("MONITOR_CONFIG", str(_workspaces_toml(tmp_path, sim)))
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    for i, w in enumerate(sim.scenario.workspaces):
        monkeypatch.setenv(f"SIM_KEY_{i}", w.api_key)
    result = CliRunner().invoke(app, ["collect", "--source", "batches"])
    assert result.exit_code == 1
    keys = [w.api_key for w in sim.scenario.workspaces]
    # The fault did echo the key (the body names the header), and nothing printed it.
    assert "headers were" in result.output and "Bearer ***" in result.output
    engine = db.make_engine(url)
    with Session(engine) as session:
        stored = [b.results_error or "" for b in session.scalars(select(Batch))]
        stored += [r.error or "" for r in session.scalars(select(CollectRun))]
    engine.dispose()
    assert any("headers were" in s for s in stored)
    for key in keys:
        assert key not in result.output
        assert key not in caplog.text
        assert all(key not in s for s in stored)


def test_impossible_token_counts_make_the_results_file_unreadable() -> None:
    from monitor.sources.batches import ResultsError, ResultsTally

    def result(**usage: object) -> bytes:
        import orjson

        body = {"input_tokens": 10, "output_tokens": 5, **usage}
        message = {"model": "claude-sonnet-4-6", "usage": body}
        return orjson.dumps(
            {"custom_id": "job-1", "result": {"type": "succeeded", "message": message}}
        )

    for usage, problem in (
        ({"output_tokens": -1}, "usage.output_tokens: -1 is not between 0"),
        ({"input_tokens": 2 * 10**15}, "usage.input_tokens: 2000000000000000 is not between"),
        ({"input_tokens": "12"}, "usage.input_tokens: must be a whole number, got '12'"),
        ({"input_tokens": True}, "usage.input_tokens: must be a whole number, got True"),
        ({"cache_creation": {"ephemeral_1h_input_tokens": 1.5}}, "ephemeral_1h_input_tokens"),
    ):
        tally = ResultsTally()
        with pytest.raises(ResultsError) as err:
            tally.consume([result(), result(**usage)])
        assert str(err.value).startswith("results line 2: "), err.value
        assert problem in str(err.value)


def test_a_batch_object_out_of_range_is_left_out_and_named(
    lite: Session, sim: SimulatorServer
) -> None:
    from anthropic.types.messages import MessageBatch

    from monitor.collect import RunStats

    src = _source(sim)
    ws = src.workspaces[0]
    good = ws.client.messages.batches.list(limit=1).data[0]
    stats = RunStats()
    for change, problem in (
        ({"created_at": good.created_at.replace(year=9999)}, "created_at:"),
        ({"ended_at": good.created_at.replace(year=2001), "processing_status": "ended"},
         "ended_at: 2001"),
        ({"request_counts": good.request_counts.model_copy(update={"succeeded": -3})},
         "request_counts.succeeded: -3"),
    ):  # fmt: skip
        bad = MessageBatch.model_construct(**{**good.__dict__, **change})
        assert src._columns(bad, ws, sim.now(), stats) is None
        assert problem in stats.notes[-1] and good.id in stats.notes[-1]
    assert stats.bad_lines == 3
    assert src._columns(good, ws, sim.now(), stats) is not None


def test_the_time_budget_bounds_the_whole_poll_and_turns_the_workspace_order(
    lite: Session, sim: SimulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from monitor import clock

    src = _source(sim, poll_budget=timedelta(seconds=1))
    listed: list[str] = []
    original = src._list_new

    def spy(session: Session, now: datetime, stats: RunStats, ws: Any) -> Any:
        listed.append(ws.name)
        return original(session, now, stats, ws)

    monkeypatch.setattr(src, "_list_new", spy)
    # Each workspace's steps see a clock 10 s on from the last: one budget for the whole poll
    # means every workspace after the first is past it (one step each), not a fresh budget.
    ticks = iter(range(0, 10_000, 10))
    monkeypatch.setattr(clock, "monotonic", lambda: float(next(ticks)))
    now = sim.now()
    run = collect_source(src, lite, now)
    assert run.ok, run.run.error
    assert sorted(listed) == sorted(w.name for w in sim.scenario.workspaces)
    assert any("time budget" in n for n in run.stats.notes)
    first_order = list(listed)
    listed.clear()
    collect_source(src, lite, now + timedelta(minutes=1))
    # A minute later the poll starts from another workspace, so none is always last.
    assert listed[0] != first_order[0] and sorted(listed) == sorted(first_order)
