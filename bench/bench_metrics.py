"""How long a Prometheus scrape of ``/metrics`` takes, and whether it grows with history.

The data: the ``bench_rules`` organisation (50,000 batches a year, hourly usage for 20 models x
10 workspaces x 3 tiers, daily cost lines, call-log buckets, a collect run per interval), once
with a month of history and once with a year, on SQLite and on PostgreSQL, rolled up as the
daemon's rollup job keeps it.

The figures, each the median of several scrapes:

- ``scrape``: ``CostMetrics.collect`` plus the text exposition, as ``GET /metrics`` runs them
  next to a daemon (whose ``gauges`` job keeps the window figures stored);
- ``no daemon``: the same when no stored window figures are fresh, so the scrape computes
  them (``batch-monitor metrics`` alone, or every daemon down for minutes);
- ``http``: the same through the exporter's HTTP server on 127.0.0.1 (what Prometheus sees);
- ``floor``: prometheus-client rendering the same samples from constants (no database): the
  scrape's own families (names, labels, values) captured once and rebuilt sample by sample at
  each render, so the floor's text is byte for byte the scrape's. The exposition format's cost
  grows with the labels per sample, so a floor of one-label samples would charge the format's
  own cost to the exporter; that earlier floor (as many one-label gauge samples) is printed
  too, as ``1-label floor``.

Targets (issue 9): a scrape under 100 ms and within 3x of the floor, and flat from a month to a
year of history (year / month <= 1.3).

``BENCH_METRICS_DB`` picks ``sqlite`` or ``postgresql`` only; ``BENCH_PG_URL`` points at another
PostgreSQL server.
"""

from __future__ import annotations

import os
import tempfile
import urllib.request
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from datetime import timedelta
from pathlib import Path

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector, CollectorRegistry
from sqlalchemy import Engine
from sqlmodel import Session

from bench import median_ms
from bench.bench_rules import NOW, YEAR, load, pg_engine, sqlite_engine
from monitor import gauges
from monitor.config import Settings
from monitor.exporter import CostMetrics, make_app, registry_for, serve

REPEATS = 15
SPANS = (("month", timedelta(days=30)), ("year", YEAR))


class _Constants(Collector):
    """The same families, samples and labels as a scrape's, rebuilt from constants."""

    def __init__(self, families: list[Metric]) -> None:
        self.shapes = [
            (f.name, f.documentation, f.type, [(s.name, s.labels, s.value) for s in f.samples])
            for f in families
        ]

    def collect(self) -> Iterable[Metric]:
        for name, doc, kind, samples in self.shapes:
            family = Metric(name, doc, kind)
            for sample_name, labels, value in samples:
                family.add_sample(sample_name, dict(labels), value)
            yield family


class _OneLabel(Collector):
    """As many one-label gauge samples, spread over as many families (the earlier floor)."""

    def __init__(self, samples: int, families: int) -> None:
        self.samples, self.families = samples, families

    def collect(self) -> Iterable[Metric]:
        per, left = max(1, self.samples // max(self.families, 1)), self.samples
        for f in range(self.families):
            family = GaugeMetricFamily(f"floor_family_{f}", "A constant family.", labels=["k"])
            for i in range(min(per, left) if f < self.families - 1 else left):
                family.add_metric([f"value_{i}"], float(i))
            left -= min(per, left)
            yield family


def _count(registry: CollectorRegistry) -> int:
    return sum(len(f.samples) for f in registry.collect())


def _measure(engine: Engine) -> dict[str, float]:
    settings = Settings()
    metrics = CostMetrics(engine, settings, now=lambda: NOW)
    registry = registry_for(metrics)
    # Without a daemon's stored window figures, a scrape computes them itself.
    live = median_ms(lambda: generate_latest(registry), REPEATS, warm=True)
    with Session(engine) as session:  # what the daemon's gauges job keeps fresh
        gauges.store(session, NOW)
        session.commit()
    samples = _count(registry)
    families = list(registry.collect())
    floor_registry = CollectorRegistry(auto_describe=False)
    floor_registry.register(_Constants(families))
    assert generate_latest(floor_registry) == generate_latest(registry)  # the very same text
    flat_registry = CollectorRegistry(auto_describe=False)
    flat_registry.register(_OneLabel(samples, len(families)))
    out = {
        "samples": float(samples),
        "scrape": median_ms(lambda: generate_latest(registry), REPEATS, warm=True),
        "live": live,
        "floor": median_ms(lambda: generate_latest(floor_registry), REPEATS, warm=True),
        "flat": median_ms(lambda: generate_latest(flat_registry), REPEATS, warm=True),
    }
    app = make_app(engine, settings, metrics, {}, lambda: NOW)
    server, thread = serve("127.0.0.1", 0, app)
    url = f"http://127.0.0.1:{server.server_address[1]}/metrics"
    try:

        def get() -> None:
            with urllib.request.urlopen(url, timeout=30) as resp:
                resp.read()

        out["http"] = median_ms(get, REPEATS, warm=True)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
    return out


def main() -> None:
    """Load a month and a year of history into each database and time the scrapes."""
    wanted = os.environ.get("BENCH_METRICS_DB")
    results: dict[tuple[str, str], dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench_metrics_") as tmp:
        for db_name in ("sqlite", "postgresql"):
            if wanted and wanted != db_name:
                continue
            for span_name, span in SPANS:
                factories: dict[str, Callable[[], AbstractContextManager[Engine]]] = {
                    "sqlite": lambda n=span_name: sqlite_engine(Path(tmp), f"metrics_{n}"),  # type: ignore[misc]
                    "postgresql": lambda n=span_name: pg_engine(f"bm_bench_metrics_{n}"),  # type: ignore[misc]
                }
                print(f"{db_name}: loading a {span_name} of history", flush=True)
                with factories[db_name]() as engine:
                    load(engine, span, scale=1.0)
                    results[(db_name, span_name)] = _measure(engine)
    _report(results)


def _report(results: dict[tuple[str, str], dict[str, float]]) -> None:
    print(f"\n{'database':<11} {'history':<7} {'samples':>8} {'floor ms':>9} {'scrape ms':>10} "
          f"{'x floor':>8} {'http ms':>8} {'no daemon ms':>13} {'1-label floor':>14} "
          f"{'x 1-label':>10}")  # fmt: skip
    for (db_name, span_name), r in results.items():
        print(
            f"{db_name:<11} {span_name:<7} {r['samples']:>8.0f} {r['floor']:>9.2f} "
            f"{r['scrape']:>10.2f} {r['scrape'] / r['floor']:>8.1f} {r['http']:>8.2f} "
            f"{r['live']:>13.2f} {r['flat']:>14.2f} {r['scrape'] / r['flat']:>10.1f}"
        )
    for db_name in sorted({d for d, _ in results}):
        month, year = results.get((db_name, "month")), results.get((db_name, "year"))
        if month is None or year is None:
            continue
        growth = year["scrape"] / month["scrape"]
        ok = year["scrape"] < 100 and year["scrape"] / year["floor"] <= 3 and growth <= 1.3
        print(
            f"{db_name}: a year's scrape {year['scrape']:.1f} ms "
            f"({year['scrape'] / year['floor']:.1f}x the floor), year/month {growth:.2f}: "
            + ("within" if ok else "OUTSIDE")
            + " the targets (< 100 ms, <= 3x floor, <= 1.3)"
        )
