"""The exporter: every figure from the store, equal to `summary`, valid exposition, safe server."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine
from sqlmodel import Session, select

from monitor import db, exporter, gauges, rollups
from monitor.collect import collect_source
from monitor.config import MetricsSection, Settings
from monitor.models import Batch, SpendTotal
from monitor.simulator import SimulatorServer, build_scenario
from monitor.sources import build as build_source
from monitor.summary import window_figures
from tests.conftest import migrate_fresh
from tests.daemonkit import free_port, http_get
from tests.simkit import settings_for

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _samples(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _by(samples: Samples, name: str, label: str) -> dict[str, float]:
    sums: dict[str, float] = defaultdict(float)
    for (n, labels), value in samples.items():
        if n == name:
            sums[dict(labels)[label]] += value
    return dict(sums)


@pytest.fixture
def store(db_url: str) -> Iterator[tuple[Engine, Settings, datetime]]:
    """A store holding the small scenario, collected from the simulator and rolled up."""
    migrate_fresh(db_url)  # /readyz checks the schema is the migrated one
    engine = db.make_engine(db_url)
    scenario = build_scenario("small")
    with SimulatorServer(scenario) as sim:
        settings = settings_for(sim, backfill=timedelta(days=3))
        now = sim.now()
        with Session(engine) as session:
            for name in ("batches", "usage", "cost"):
                src = build_source(name, settings)
                assert src is not None
                assert collect_source(src, session, now).ok
            rollups.refresh(session, now)
        try:
            yield engine, settings, now
        finally:
            engine.dispose()


def _scrape(engine: Engine, settings: Settings, now: datetime) -> str:
    metrics = exporter.CostMetrics(engine, settings, now=lambda: now)
    body, _ = exporter.exposition(exporter.registry_for(metrics))
    return body.decode()


def test_counters_equal_the_stored_totals_and_windows_equal_the_summary(
    store: tuple[Engine, Settings, datetime],
) -> None:
    engine, settings, now = store
    samples = _samples(_scrape(engine, settings, now))
    with Session(engine) as session:
        totals = list(session.execute(select(SpendTotal)).scalars())
        want_cost: dict[str, Decimal] = defaultdict(Decimal)
        for t in totals:
            want_cost[t.service_tier] += t.cost_usd
        assert set(want_cost) >= {"standard", "batch"}
        got_cost = _by(samples, "claude_cost_usd_total", "service_tier")
        for tier, amount in want_cost.items():
            assert got_cost[tier] == pytest.approx(float(amount), abs=1e-6), tier
        # The window gauges are summary's figures for the same window, to the last digit.
        for name, span in gauges.WINDOWS.items():
            w = window_figures(session, now - span, now)
            share = samples.get(
                ("claude_batch_share_ratio", (("basis", "requests"), ("window", name)))
            )
            assert share == w.spend.batch_share_requests, name
            p95 = samples.get(("claude_batch_turnaround_p95_seconds", (("window", name),)))
            assert p95 == w.batches.turnaround_p95_seconds, name
        ended = session.execute(select(Batch).where(Batch.ended_at.is_not(None))).all()  # type: ignore[union-attr]
    count = samples[("claude_batch_turnaround_seconds_count", ())]
    assert count == len(ended)
    le_2h = samples[("claude_batch_turnaround_seconds_bucket", (("le", "7200.0"),))]
    le_90m = samples[("claude_batch_turnaround_seconds_bucket", (("le", "5400.0"),))]
    assert le_90m <= le_2h <= count
    assert samples[("batch_monitor_build_info", (("version", "0.1.0"),))] == 1.0


def test_a_scrape_reads_the_stored_window_figures_while_they_are_fresh(
    store: tuple[Engine, Settings, datetime],
) -> None:
    from sqlalchemy import update

    from monitor.models import WindowFigure

    engine, settings, now = store
    key = ("claude_batch_turnaround_p95_seconds", (("window", "7d"),))
    computed = _samples(_scrape(engine, settings, now))[key]
    with Session(engine) as session:
        gauges.store(session, now)
        # Mark the stored row, to see which one a scrape shows.
        session.execute(
            update(WindowFigure)
            .where(
                WindowFigure.window == "7d", WindowFigure.figure == "batch_turnaround_p95_seconds"
            )  # type: ignore[arg-type]
            .values(value=12345.0)
        )
        session.commit()
    assert _samples(_scrape(engine, settings, now + timedelta(minutes=1)))[key] == 12345.0
    # Once older than a few of the job's intervals (the daemon stopped), computed afresh.
    later = now + timedelta(minutes=10)
    with Session(engine) as session:
        fresh = gauges.compute(session, later).values[("7d", "batch_turnaround_p95_seconds")]
    assert _samples(_scrape(engine, settings, later))[key] == fresh
    assert fresh is not None and computed is not None


def test_promtool_finds_nothing_wrong_with_a_scrape(
    store: tuple[Engine, Settings, datetime], tmp_path: Path
) -> None:
    engine, settings, now = store
    text = _scrape(engine, settings, now)
    result = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and result.stdout.strip() == "" and result.stderr.strip() == "", (
        result.stdout + result.stderr
    )


def test_labels_beyond_the_top_n_fold_into_other(
    store: tuple[Engine, Settings, datetime],
) -> None:
    engine, settings, now = store
    full = _samples(_scrape(engine, settings, now))
    narrow = Settings(**{**settings.__dict__, "metrics": MetricsSection(top_n=1)})
    folded = _samples(_scrape(engine, narrow, now))
    models_full = set(_by(full, "claude_cost_usd_total", "model"))
    models_folded = set(_by(folded, "claude_cost_usd_total", "model"))
    assert len(models_full) > 2 and len(models_folded) == 2 and "other" in models_folded
    total = sum(_by(full, "claude_cost_usd_total", "model").values())
    assert sum(_by(folded, "claude_cost_usd_total", "model").values()) == pytest.approx(total)


def test_counters_survive_a_restart(store: tuple[Engine, Settings, datetime], db_url: str) -> None:
    engine, settings, now = store
    first = _samples(_scrape(engine, settings, now))
    engine2 = db.make_engine(db_url)  # a new process: a new engine, nothing in memory
    try:
        second = _samples(_scrape(engine2, settings, now + timedelta(minutes=5)))
    finally:
        engine2.dispose()
    counters = {k: v for k, v in first.items() if k[0].endswith(("_total", "_count", "_bucket"))}
    assert counters
    for key, value in counters.items():
        assert second.get(key, 0.0) >= value, key


# --- the HTTP server ----------------------------------------------------------------------


@pytest.fixture
def server(store: tuple[Engine, Settings, datetime]) -> Iterator[int]:
    engine, settings, now = store
    metrics = exporter.CostMetrics(engine, settings, now=lambda: now)
    app = exporter.make_app(
        engine, settings, metrics, {"batches": timedelta(days=365)}, lambda: now
    )
    port = free_port()
    srv, thread = exporter.serve("127.0.0.1", port, app)
    try:
        yield port
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=10)


def test_only_the_read_only_paths_answer(server: int) -> None:
    base = f"http://127.0.0.1:{server}"
    assert http_get(base + "/metrics")[0] == 200
    assert http_get(base + "/healthz") == (200, b'{"status":"ok"}\n')
    assert http_get(base + "/readyz")[0] == 200
    assert http_get(base + "/admin")[0] == 404
    for method in ("POST", "PUT", "DELETE"):
        assert http_get(base + "/metrics", method=method)[0] == 405


def test_openmetrics_when_the_scraper_asks_for_it(server: int) -> None:
    import urllib.request

    request = urllib.request.Request(
        f"http://127.0.0.1:{server}/metrics",
        headers={"Accept": "application/openmetrics-text; version=1.0.0"},
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert resp.headers["Content-Type"].startswith("application/openmetrics-text")
        assert resp.read().rstrip().endswith(b"# EOF")


def test_slow_and_malformed_clients_do_not_block_scrapes(server: int) -> None:
    # Slowloris: connections that send half a request and then nothing.
    idle = []
    for _ in range(10):
        s = socket.create_connection(("127.0.0.1", server), timeout=5)
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        idle.append(s)
    # Garbage and a huge header.
    junk = socket.create_connection(("127.0.0.1", server), timeout=5)
    junk.sendall(b"\x16\x03\x01garbage\r\n\r\n")
    huge = socket.create_connection(("127.0.0.1", server), timeout=5)
    huge.sendall(b"GET /metrics HTTP/1.1\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n")
    started = time.monotonic()
    status, body = http_get(f"http://127.0.0.1:{server}/metrics", timeout=10)
    assert status == 200 and b"claude_cost_usd_total" in body
    assert time.monotonic() - started < 5
    # Both get an error answer and are closed (no thread kept waiting on them).
    assert b"400" in _read_all(junk)
    assert b"431" in _read_all(huge) or b"400" in _read_all(huge)
    for s in [*idle, junk, huge]:
        s.close()


def _read_all(s: socket.socket) -> bytes:
    chunks = []
    while chunk := s.recv(4096):
        chunks.append(chunk)
    return b"".join(chunks)


def test_the_server_binds_loopback_by_default() -> None:
    assert Settings().metrics_host == "127.0.0.1"


def test_concurrent_scrapes_agree(server: int) -> None:
    bodies: list[bytes] = []

    def scrape() -> None:
        bodies.append(http_get(f"http://127.0.0.1:{server}/metrics", timeout=30)[1])

    threads = [threading.Thread(target=scrape) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(bodies) == 4 and len({b for b in bodies}) == 1
