"""Collection bookkeeping (``monitor/collect.py``) and the source registry (``monitor.sources``).

``collect_source`` runs one source and records the run whatever happens. The sources here are
small real implementations of the ``Source`` protocol (a ``name`` and ``collect(session, now,
stats)``) that write a real row; one run is of the real batches source, with the real SDK,
against the simulator over HTTP. On SQLite and PostgreSQL.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import Engine, delete, func, select
from sqlmodel import Session, col

from monitor import simulator, sources
from monitor.collect import CollectResult, RunStats, collect_source
from monitor.config import CollectSection, Settings
from monitor.models import Batch, CollectRun, SourceCursor
from monitor.retention import tallies
from monitor.simulator import SimulatorServer, build_scenario
from tests.conftest import utc
from tests.simkit import assert_matches_truth, settings_for

NOW = utc(2026, 11, 20, 12, 30)
SECRET = "hunter2-configured-secret"
KEY_SHAPED = "sk-ant-api03-AbCdEfGh12345678_xyz"  # nobody listed it: masked by its shape


@dataclass
class CursorSource:
    """A source that writes its cursor row, counts what it did and, when told to, fails.

    ``commit_first`` commits a first cursor row (``<name>:done``) before the failure, as a
    source that commits per unit of work does; the row written after it is never committed.
    """

    name: str
    fail_with: str | None = None
    commit_first: bool = False
    seen_runs: list[tuple[str, datetime | None]] = field(default_factory=list)

    def collect(self, session: Session, now: datetime, stats: RunStats) -> None:
        """Record what this run's own collect_run row says, write a cursor, count, maybe fail."""
        # The newest run of this source is this one.
        run = session.execute(
            select(CollectRun)
            .where(col(CollectRun.source) == self.name)
            .order_by(col(CollectRun.id).desc())
            .limit(1)
        ).scalar_one()
        self.seen_runs.append((run.status, run.finished_at))
        if self.commit_first:
            session.add(SourceCursor(source=f"{self.name}:done", cursor="{}", updated_at=now))
            session.commit()
        session.add(SourceCursor(source=self.name, cursor='{"page": 7}', updated_at=now))
        session.flush()
        stats.items += 3
        stats.api_calls += 2
        stats.bad_lines += 1
        stats.note(f"{self.name}: 3 item(s), 1 bad line skipped")
        if self.fail_with is not None:
            raise RuntimeError(self.fail_with)


def _cursors(engine: Engine) -> list[str]:
    """Return the committed cursor rows' sources, read on a connection of their own."""
    with Session(engine) as other:
        return sorted(other.execute(select(col(SourceCursor.source))).scalars())


def _run_row(engine: Engine, run_id: int | None) -> CollectRun:
    with Session(engine) as other:
        row = other.get(CollectRun, run_id)
        assert row is not None
        return row


def test_a_source_that_succeeds_records_an_ok_run(engine: Engine, session: Session) -> None:
    source = CursorSource("probe")
    result = collect_source(source, session, NOW)
    assert isinstance(result, CollectResult) and result.ok
    # While the source ran, its run was recorded (committed) as running, not finished.
    assert source.seen_runs == [("running", None)]
    stored = _run_row(engine, result.run.id)
    assert (stored.source, stored.status, stored.error) == ("probe", "ok", None)
    assert (stored.items, stored.api_calls, stored.bad_lines) == (3, 2, 1)
    assert stored.started_at == NOW
    assert stored.finished_at is not None and stored.finished_at >= stored.started_at
    assert result.stats.notes == ["probe: 3 item(s), 1 bad line skipped"]
    assert _cursors(engine) == ["probe"]  # what the source wrote is committed
    assert tallies(session, "collect_runs") == {"probe|ok": 1}

    session.execute(delete(SourceCursor))  # each run writes the cursor row anew
    session.commit()
    collect_source(CursorSource("probe"), session, NOW + timedelta(minutes=5))
    collect_source(CursorSource("other"), session, NOW + timedelta(minutes=5))
    assert tallies(session, "collect_runs") == {"probe|ok": 2, "other|ok": 1}
    count = session.execute(select(func.count()).select_from(CollectRun)).scalar_one()
    assert count == 3


def test_a_failing_source_is_recorded_scrubbed_and_rolled_back(
    engine: Engine, session: Session, caplog: pytest.LogCaptureFixture
) -> None:
    message = (
        f"upstream refused token {SECRET} at postgresql://bob:pw1234@db.internal/x "
        f"(key {KEY_SHAPED})"
    )
    source = CursorSource("probe", fail_with=message, commit_first=True)
    with caplog.at_level(logging.WARNING, logger="monitor.collect"):
        result = collect_source(source, session, NOW, secrets=[SECRET])  # does not raise
    assert not result.ok
    stored = _run_row(engine, result.run.id)
    assert stored.status == "failed"
    assert stored.error == (
        "RuntimeError: upstream refused token *** at postgresql://***@db.internal/x (key ***)"
    )
    # What it counted before failing is kept; so are its notes.
    assert (stored.items, stored.api_calls, stored.bad_lines) == (3, 2, 1)
    assert stored.finished_at is not None and stored.finished_at >= stored.started_at == NOW
    assert result.stats.notes == ["probe: 3 item(s), 1 bad line skipped"]
    # The uncommitted write is rolled back; what the source had committed stays.
    assert _cursors(engine) == ["probe:done"]
    assert tallies(session, "collect_runs") == {"probe|failed": 1}
    # The log line says what failed, scrubbed too.
    assert "collect probe failed: RuntimeError: upstream refused token ***" in caplog.text
    for secret in (SECRET, KEY_SHAPED, "pw1234"):
        assert secret not in caplog.text and secret not in (stored.error or "")

    # The session is usable after the failure: the next run of the source succeeds.
    again = collect_source(CursorSource("probe"), session, NOW + timedelta(minutes=5))
    assert again.ok and _cursors(engine) == ["probe", "probe:done"]
    assert tallies(session, "collect_runs") == {"probe|failed": 1, "probe|ok": 1}


def test_an_unlisted_secret_is_kept_and_a_long_error_is_cut(session: Session) -> None:
    # Only configured secrets and key-shaped strings are masked: the list matters.
    plain = collect_source(CursorSource("probe", fail_with=f"got {SECRET}"), session, NOW)
    assert plain.run.error == f"RuntimeError: got {SECRET}"
    long = collect_source(CursorSource("probe", fail_with="x" * 10_000), session, NOW)
    assert long.run.error == ("RuntimeError: " + "x" * 10_000)[:4000]
    assert tallies(session, "collect_runs") == {"probe|failed": 2}


# --- the registry -------------------------------------------------------------------------------


def test_build_returns_none_until_a_source_is_configured(tmp_path: Path) -> None:
    nothing = Settings()
    assert sorted(sources.available()) == ["batches", "cost", "logs", "usage"]
    for name in sources.REGISTRY:
        assert sources.build(name, nothing) is None, name
    assert sources.requirement("batches") == "ANTHROPIC_API_KEY or [[workspaces]]"
    assert sources.requirement("usage") == sources.requirement("cost") == "ANTHROPIC_ADMIN_KEY"
    assert sources.requirement("logs") == "[collect] call_logs = [...] in monitor.toml"
    with pytest.raises(KeyError):
        sources.build("invoices", nothing)

    # What the requirement names is what builds the source.
    admin = Settings(anthropic_admin_key=SecretStr("sk-ant-admin01-test-only-key"))
    for name in ("usage", "cost"):
        built = sources.build(name, admin)
        assert built is not None and built.name == name
    assert sources.build("batches", admin) is None and sources.build("logs", admin) is None
    logs = Settings(collect=CollectSection(call_logs=[str(tmp_path / "*.jsonl")]))
    built = sources.build("logs", logs)
    assert built is not None and built.name == "logs"
    assert sources.build("usage", logs) is None


# --- the real batches source ------------------------------------------------------------------


@pytest.fixture
def sim() -> Iterator[SimulatorServer]:
    """Serve the small scenario, as of its end, for one test."""
    server = SimulatorServer(build_scenario("small")).start()
    try:
        yield server
    finally:
        server.close()


def test_the_batches_source_run_is_recorded_with_its_counts(
    engine: Engine, session: Session, sim: SimulatorServer
) -> None:
    settings = settings_for(sim)
    source = sources.build("batches", settings)
    assert source is not None and source.name == "batches"
    keys = [w.api_key for w in sim.scenario.workspaces]
    result = collect_source(source, session, sim.now(), secrets=keys)
    assert result.ok, result.run.error
    assert_matches_truth(session, sim.scenario.truth(sim.now()))
    stored = _run_row(engine, result.run.id)
    batches = session.execute(select(func.count()).select_from(Batch)).scalar_one()
    ingested = session.execute(
        select(func.count()).select_from(Batch).where(col(Batch.results_state) == "ingested")
    ).scalar_one()
    # Items: every batch listed, plus every results file read; calls: what the server answered.
    assert batches > 0 and ingested > 0
    assert stored.items == batches + ingested
    assert stored.api_calls == sum(sim.request_counts.values())
    assert (stored.status, stored.bad_lines, stored.error) == ("ok", 0, None)
    for w in sim.scenario.workspaces:
        listed = session.execute(
            select(func.count()).select_from(Batch).where(col(Batch.workspace_id) == w.id)
        ).scalar_one()
        assert f"{w.name}: {listed} new or changed batch(es) listed" in result.stats.notes
    assert tallies(session, "collect_runs") == {"batches|ok": 1}


def test_a_failing_batches_run_is_recorded_without_the_keys(
    engine: Engine, session: Session, sim: SimulatorServer
) -> None:
    # Every listing answers 400 with the request's headers (its API key among them).
    sim.add_fault(simulator.echo_headers(endpoint="batches.list"))
    source = sources.build("batches", settings_for(sim))
    assert source is not None
    keys = [w.api_key for w in sim.scenario.workspaces]
    result = collect_source(source, session, sim.now(), secrets=keys)
    assert not result.ok
    stored = _run_row(engine, result.run.id)
    error = stored.error or ""
    assert stored.status == "failed" and error.startswith("SourceError: workspace ")
    assert error.count("headers were") == len(keys)  # each workspace's failure is named
    assert all(key not in error for key in keys)
    assert stored.items == 0 and stored.api_calls == sum(sim.request_counts.values()) > 0
    assert session.execute(select(func.count()).select_from(Batch)).scalar_one() == 0
    assert tallies(session, "collect_runs") == {"batches|failed": 1}
