"""How long the weekly report takes for a year-old organisation, on SQLite and PostgreSQL.

The data is ``bench_rules``' year of history (50,000 batches, 5.26 million hourly usage rows
for 20 models x 10 workspaces x 3 tiers, daily cost lines, call-log buckets, collection runs),
loaded the same way, into databases of this bench's own. The days the report reads (its two
weeks and the month to date) are then rolled up as the daemon keeps them (``rollups.refresh``).

The figures, each the median of several runs, next to a floor measured in the same run: the
``summary`` of the same two weeks (two ``build_summary`` calls), the work any report must do.

- ``build_weekly`` + JSON (target under 1 s);
- ``build_weekly`` + chart PNG + HTML (target under 3 s).

``BENCH_RULES_SCALE=0.1`` runs on a tenth of the data; ``BENCH_REPORT_DB`` (or
``BENCH_RULES_DB``) picks ``sqlite`` or ``postgresql`` only; ``BENCH_PG_URL`` points at
another PostgreSQL server.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event, text
from sqlmodel import Session

from bench import bench_rules, median_ms
from monitor import clock, db, rollups
from monitor.config import Settings, Workload
from monitor.report import build_weekly, chart_png, last_complete_week, to_html, to_json
from monitor.summary import build_summary

PG_DB = "bm_bench_report"
REPEATS = 5
NOW = bench_rules.NOW
JSON_TARGET_MS = 1000.0
HTML_TARGET_MS = 3000.0


def _roll_up(engine: Engine, settings: Settings) -> int:
    """Roll up every day the report reads, as the daemon's rollup job keeps them."""
    week = last_complete_week(NOW, settings.report.timezone)
    first = min(week.previous.start, week.start.replace(day=1)) - timedelta(days=1)
    with Session(engine) as session:
        rollups.mark_dirty(session, rollups.days_between(first, NOW), NOW)
        session.commit()
        done = rollups.refresh(session, NOW).days
        session.commit()
    return done


def measure(engine: Engine, settings: Settings) -> dict[str, float]:
    """Return the median milliseconds of the floor and of the report's two forms."""
    week = last_complete_week(NOW, settings.report.timezone)
    out: dict[str, float] = {}
    with Session(engine) as session:

        def floor() -> None:
            build_summary(session, week.previous.start, week.previous.end, NOW)
            build_summary(session, week.start, week.end, NOW)

        def as_json() -> None:
            to_json(build_weekly(session, week, NOW, settings))

        def as_html() -> None:
            report = build_weekly(session, week, NOW, settings)
            to_html(report, chart_png(report))

        as_html()  # warm the caches (and matplotlib's import) as a running daemon has them
        out["floor"] = median_ms(floor, REPEATS)
        out["json"] = median_ms(as_json, REPEATS)
        out["html"] = median_ms(as_html, REPEATS)
        out["queries"] = float(_count_queries(engine, as_json))
    return out


def _count_queries(engine: Engine, fn: Callable[[], None]) -> int:
    seen = [0]

    def count(*_: Any) -> None:
        seen[0] += 1

    event.listen(engine, "before_cursor_execute", count)
    try:
        fn()
    finally:
        event.remove(engine, "before_cursor_execute", count)
    return seen[0]


@contextmanager
def _pg_engine() -> Iterator[Engine]:
    admin = db.make_engine(bench_rules.PG_URL)
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{PG_DB}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{PG_DB}"'))
    engine = db.make_engine(db.normalize_url(bench_rules.PG_URL).rsplit("/", 1)[0] + "/" + PG_DB)
    try:
        yield engine
    finally:
        engine.dispose()
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{PG_DB}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def _sqlite_engine(tmp: Path) -> Iterator[Engine]:
    engine = db.make_engine(f"sqlite:///{tmp / 'bench_report.db'}")
    try:
        yield engine
    finally:
        engine.dispose()


def main() -> None:
    """Load a year of history into each database, roll up the report's days, time the report."""
    settings = Settings(
        workloads=tuple(
            Workload(name, None, timedelta(hours=24) if i % 2 == 0 else None, None)
            for i, name in enumerate(bench_rules.WORKLOADS)
        )
    )
    wanted = os.environ.get("BENCH_REPORT_DB") or os.environ.get("BENCH_RULES_DB")
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench_report_") as tmp:
        factories: list[tuple[str, Callable[[], AbstractContextManager[Engine]]]] = [
            ("sqlite", lambda: _sqlite_engine(Path(tmp))),
            ("postgresql", _pg_engine),
        ]
        for name, factory in factories:
            if wanted and wanted != name:
                continue
            print(f"{name}: loading a year of history (scale {bench_rules.SCALE:g})", flush=True)
            with factory() as engine:
                bench_rules.load(engine)
                started = clock.monotonic()
                days = _roll_up(engine, settings)
                print(f"  rolled up {days} days in {clock.monotonic() - started:.1f} s", flush=True)
                results[name] = measure(engine, settings)

    week = last_complete_week(NOW, settings.report.timezone)
    print(f"\nthe report of the week of {week.start_date.isoformat()} as of {NOW.isoformat()}")
    for name, res in results.items():
        print(f"\n{name}: median of {REPEATS} runs, milliseconds")
        print(f"{'measurement':<52} {'ms':>9} {'x floor':>8}")
        labels = {
            "floor": "floor: summary of the same two weeks",
            "json": "build_weekly + JSON",
            "html": "build_weekly + chart PNG + HTML",
        }
        for key, label in labels.items():
            ms = res[key]
            print(f"{label:<52} {ms:>9.1f} {ms / res['floor']:>8.1f}")
        print(f"{'SQL statements in one build_weekly':<52} {res['queries']:>9.0f}")
    for name, res in results.items():
        for key, target in (("json", JSON_TARGET_MS), ("html", HTML_TARGET_MS)):
            verdict = "within" if res[key] < target else "OVER"
            print(f"{name}: {key} {res[key]:.0f} ms, {verdict} the {target / 1000:g} s target")


if __name__ == "__main__":
    main()
