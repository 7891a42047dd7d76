"""Helpers for the weekly-report tests: the ``weekly`` scenario, collected into a database.

The scenario is served by the simulator over HTTP and read by the real collectors (batches,
usage and cost reports, call logs), as the daemon would, once at the Monday 09:00 after its
second week, into a schema built by the real migrations. Collecting takes several seconds, so
each process collects each variant once per database kind and hands every test its own copy:
a file copy on SQLite, ``CREATE DATABASE ... TEMPLATE`` on PostgreSQL.
"""

from __future__ import annotations

import itertools
import os
import shutil
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text
from sqlmodel import Session

from monitor import db
from monitor.collect import collect_source
from monitor.config import CollectSection, Settings, Workload
from monitor.report import Week
from monitor.simulator import Scenario, SimulatorServer, build_scenario
from monitor.sources import build as build_source
from tests import conftest
from tests.simkit import settings_for

# The scenario's second week (Monday 2026-10-05, UTC): the week with the planted causes.
WEEK2 = Week(date(2026, 10, 5), "UTC")
REPORT_HOUR = timedelta(hours=9)  # the default [report] time, Monday 09:00 UTC
WORKLOADS = (
    Workload("digest", None, timedelta(hours=24), False),
    Workload("review", None, timedelta(minutes=2), True),
    Workload("support", None, timedelta(minutes=1), True),
    Workload("research", None, timedelta(minutes=1), True),
)


def report_settings(base: Settings | None = None, **changes: Any) -> Settings:
    """Return settings with the scenario's workload declarations (and ``changes``)."""
    return replace(base or Settings(), workloads=WORKLOADS, **changes)


def scenario(planted: bool = True) -> Scenario:
    """Return the weekly scenario (built once per variant and process)."""
    if planted not in _SCENARIOS:
        _SCENARIOS[planted] = build_scenario("weekly", planted=planted)
    return _SCENARIOS[planted]


def report_now(s: Scenario) -> Any:
    """Return when the scenario's second week is reported: the Monday 09:00 after it."""
    return s.end + REPORT_HOUR


def collect(s: Scenario, engine: Engine, tmp: Path) -> None:
    """Serve ``s`` and collect every source into ``engine`` as of the Monday 09:00 after it."""
    now = report_now(s)
    log = tmp / "calls.jsonl"
    s.write_call_logs(log)
    with SimulatorServer(s, now=now) as sim:
        base = settings_for(sim)
        options = {**base.collect.model_dump(), "call_logs": [str(log)], "list_page_size": 1000}
        settings = replace(base, collect=CollectSection(**options))
        with Session(engine) as session:
            for name in ("batches", "usage", "cost", "logs"):
                source = build_source(name, settings)
                assert source is not None, name
                result = collect_source(source, session, now)
                assert result.run.status == "ok", (name, result.run.error)


_SCENARIOS: dict[bool, Scenario] = {}
_SOURCES: dict[tuple[str, bool], str] = {}
_COPIES = itertools.count(1)


def collected_url(kind: str, tmp_factory: Any, planted: bool = True) -> str:
    """Return the URL of a fresh database holding the collected scenario (``kind``: sqlite or
    postgresql; PostgreSQL skips or fails as the suite's other PostgreSQL tests do)."""
    key = (kind, planted)
    tag = "planted" if planted else "quiet"
    if kind == "sqlite":
        if key not in _SOURCES:
            base = Path(tmp_factory.mktemp(f"weekly_{tag}"))
            url = f"sqlite:///{base / 'source.db'}"
            _fill(url, scenario(planted), base)
            _SOURCES[key] = str(base / "source.db")
        copy = Path(tmp_factory.mktemp("weekly_copy")) / "weekly.db"
        shutil.copy(_SOURCES[key], copy)
        return f"sqlite:///{copy}"
    base_url = conftest._pg_database_url()  # skips, or fails when PostgreSQL is required
    server = base_url.rsplit("/", 1)[0]
    suffix = f"{conftest._worker()}_{os.getpid()}"
    if key not in _SOURCES:
        name = f"bm_weekly_{tag}_{suffix}"
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', f'CREATE DATABASE "{name}"')
        conftest._pg_state.setdefault("created", []).append(name)  # type: ignore[attr-defined]
        _fill(f"{server}/{name}", scenario(planted), Path(tmp_factory.mktemp(f"weekly_{tag}")))
        _SOURCES[key] = name
    copy_name = f"bm_weekly_copy{next(_COPIES)}_{suffix}"
    _admin(
        f'DROP DATABASE IF EXISTS "{copy_name}" WITH (FORCE)',
        f'CREATE DATABASE "{copy_name}" TEMPLATE "{_SOURCES[key]}"',
    )
    conftest._pg_state.setdefault("created", []).append(copy_name)  # type: ignore[attr-defined]
    return f"{server}/{copy_name}"


def _fill(url: str, s: Scenario, tmp: Path) -> None:
    engine = db.make_engine(url)
    try:
        db.upgrade(engine)
        collect(s, engine, tmp)
    finally:
        engine.dispose()


def _admin(*statements: str) -> None:
    admin = db.make_engine(conftest.pg_admin_url())
    try:
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            for statement in statements:
                conn.execute(text(statement))
    finally:
        admin.dispose()
