"""Grafana dashboards: a linter (the rules of Grafana's dashboard-linter that apply), the SQL
panels run against PostgreSQL, and every PromQL panel run against a real Prometheus scraping
two replicas of a stand-in exporter.

Linter rules enforced here (dashboard-linter names where one exists):
- generated files equal ``python -m grafana.build``'s output; every file is valid JSON;
- ``schemaVersion`` >= 39; provisioned boards are not editable (uneditable-dashboard-rule);
- unique panel ids; grid positions inside 24 columns and never overlapping;
- template-datasource-rule: a datasource variable per data source type, named
  ``<type>_datasource``, preset to a uid the provisioning file defines;
- panel-datasource-rule: every panel and target uses a templated datasource of its type;
- template-on-time-change-reload: query variables refresh on time range change (2);
- template-label-promql-rule: variable queries are ``label_values(<valid PromQL>, label)``;
- template-unused-rule: every variable is used by some query (datasource ones by a panel);
- ``workspace`` and ``model`` are multi-value with All; every board links to the other two;
- panel-title-description-rule: a title and a description on every panel;
- panel-units-rule: a unit from Grafana's list on every panel;
- target-promql-rule: every expression parses (promtool);
- target-rate-interval-rule: ranges are ``$__rate_interval`` (and rate/irate/increase in
  time series use it); stat-like instant panels use ``$__range``;
- target-counter-agg-rule: counters (``_total``, ``_bucket``) are read with rate/irate/increase;
- replicas: selectors of ``claude_*``/``batch_monitor_*`` are aggregated so ``instance`` and
  ``job`` go away, deduplicating (max/min/avg/group) before any sum (tests/promkit.py).
Not applied: template-job-rule, template-instance-rule, target-job-rule and
target-instance-rule (the boards aggregate replicas away instead of selecting one).
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, start_http_server
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, SQLModel

from grafana import build
from monitor import db
from monitor.models import Batch, SpendDay
from prometheus import build as prom_build
from tests import conftest, promkit
from tests.promkit import PrometheusServer

prometheus_server = promkit.prometheus_server  # the fixture, for this module

BOARDS = build.build()
PROVISIONED = {d["uid"]: d["type"] for d in build.datasources()["datasources"]}
# Units Grafana knows (the subset of dashboard-linter's list these boards may use).
UNITS = {
    "none", "short", "percent", "percentunit", "currencyUSD", "s", "ms", "m", "h", "d",
    "dtdurations", "reqps", "ops", "rps", "bytes", "dateTimeAsIso", "dateTimeFromNow", "bool",
}  # fmt: skip
INSTANT_KINDS = {"stat", "gauge", "bargauge", "table"}
VAR_REF = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")


def panels() -> Iterator[tuple[str, dict[str, Any]]]:
    for name, board in BOARDS.items():
        for p in board["panels"]:
            yield name, p


def targets() -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    for name, p in panels():
        for t in p["targets"]:
            yield name, p, t


def query_text(t: dict[str, Any]) -> str:
    return str(t.get("expr") or t.get("rawSql") or "")


# --- the linter -------------------------------------------------------------------------------


def test_generated_files_equal_the_builder_output() -> None:
    stale = build.stale_files()
    assert not stale, f"regenerate with `python -m grafana.build`: {stale}"
    on_disk = sorted(p.name for p in build.DASHBOARD_DIR.glob("*.json"))
    assert on_disk == sorted(BOARDS), "a dashboard JSON file the builder does not write"


def test_files_are_valid_json_with_a_current_schema() -> None:
    for path in build.DASHBOARD_DIR.glob("*.json"):
        board = json.loads(path.read_text())
        assert board["schemaVersion"] >= 39, path
        assert board["uid"] and board["title"], path
        assert board["editable"] is False, f"{path}: provisioned boards are read-only"


def test_panel_ids_are_unique_and_the_grid_does_not_overlap() -> None:
    for name, board in BOARDS.items():
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids)), name
        cells: dict[tuple[int, int], str] = {}
        for p in board["panels"]:
            g = p["gridPos"]
            assert g["x"] >= 0 and g["w"] > 0 and g["x"] + g["w"] <= 24, (name, p["title"])
            for x in range(g["x"], g["x"] + g["w"]):
                for y in range(g["y"], g["y"] + g["h"]):
                    assert (x, y) not in cells, f"{name}: {p['title']} overlaps {cells[(x, y)]}"
                    cells[(x, y)] = p["title"]


def test_datasources_are_templated_and_provisioned() -> None:
    for name, board in BOARDS.items():
        ds_vars = {v["name"]: v for v in board["templating"]["list"] if v["type"] == "datasource"}
        assert "prometheus_datasource" in ds_vars, name
        for var in ds_vars.values():
            plugin = var["query"]
            assert var["name"] in (f"{plugin}_datasource", "postgres_datasource"), var["name"]
            assert PROVISIONED.get(var["current"]["value"]) == plugin, var
        by_ref = {f"${{{n}}}": v["query"] for n, v in ds_vars.items()}
        for _, p in ((name, p) for p in board["panels"]):
            for ds in [p["datasource"]] + [t["datasource"] for t in p["targets"]]:
                assert by_ref.get(ds["uid"]) == ds["type"], f"{name}: {p['title']}: {ds}"
    # The provisioning file holds these uids and types.
    text_ = (build.PROVISIONING_DIR / "datasources" / "datasources.yaml").read_text()
    for uid, kind in PROVISIONED.items():
        assert f"uid: {uid}" in text_ and f"type: {kind}" in text_


def test_template_variables_are_used_multi_value_and_reload() -> None:
    for name, board in BOARDS.items():
        variables = board["templating"]["list"]
        names = {v["name"] for v in variables}
        assert {"workspace", "model"} <= names, name
        used = set()
        for p in board["panels"]:
            for t in p["targets"]:
                used |= {next(g for g in m.groups() if g) for m in VAR_REF.finditer(query_text(t))}
            used |= {m.group(1) for m in VAR_REF.finditer(p["datasource"]["uid"]) if m.group(1)}
        for v in variables:
            assert v["name"] in used, f"{name}: variable {v['name']} is used by no query"
            if v["type"] == "query":
                assert v["refresh"] == 2, v["name"]
                assert v["multi"] and v["includeAll"], v["name"]
                assert re.fullmatch(r"label_values\((.+), *(\w+)\)", v["definition"]), v


def test_boards_link_to_each_other() -> None:
    uids = {b["uid"] for b in BOARDS.values()}
    for board in BOARDS.values():
        linked = {link["url"].removeprefix("/d/") for link in board["links"]}
        assert linked == uids - {board["uid"]}, board["title"]
        assert all(link["keepTime"] and link["includeVars"] for link in board["links"])


def test_every_panel_has_a_title_description_and_unit() -> None:
    for name, p in panels():
        assert p["title"].strip(), name
        assert len(p["description"].strip()) >= 20, f"{name}: {p['title']}: no description"
        unit = p["fieldConfig"]["defaults"].get("unit")
        assert unit in UNITS, f"{name}: {p['title']}: unit {unit!r}"
        for o in p["fieldConfig"]["overrides"]:
            for prop in o["properties"]:
                if prop["id"] == "unit":
                    assert prop["value"] in UNITS, (p["title"], prop)


def test_ranges_use_grafana_intervals() -> None:
    for name, p, t in targets():
        expr = t.get("expr")
        if expr is None:
            continue
        where = f"{name}: {p['title']}: {expr}"
        for rng in promkit.range_selectors(expr):
            if p["type"] in INSTANT_KINDS:
                assert rng in ("$__range", "$__rate_interval"), where
                assert t["instant"], f"{where}: stat-like panels query one instant"
            else:
                assert rng == "$__rate_interval", f"{where}: use $__rate_interval"
        if p["type"] in INSTANT_KINDS and "increase(" in expr:
            assert "[$__range]" in expr, f"{where}: a stat over the range uses $__range"


def test_counters_are_read_as_rates() -> None:
    problems = [
        pr for _, _, t in targets() if "expr" in t for pr in promkit.counter_problems(t["expr"])
    ]
    assert not problems, "\n".join(problems)


def test_queries_stay_right_with_several_replicas() -> None:
    problems = [
        pr for _, _, t in targets() if "expr" in t for pr in promkit.replica_problems(t["expr"])
    ]
    assert not problems, "\n".join(problems)


def test_promql_parses(tmp_path: Path) -> None:
    exprs = [e for _, _, e in build.dashboard_promql()]
    for board in BOARDS.values():
        for v in board["templating"]["list"]:
            if v["type"] == "query":
                inner = re.fullmatch(r"label_values\((.+), *\w+\)", v["definition"])
                assert inner
                exprs.append(build.substitute(inner.group(1)))
    assert all("$" not in e for e in exprs), [e for e in exprs if "$" in e]
    assert promkit.check_promql(exprs, tmp_path) == ""


def test_dashboard_promql_lists_every_prometheus_target() -> None:
    listed = build.dashboard_promql()
    assert len(listed) == sum(1 for _, _, t in targets() if "expr" in t)
    assert any("[1m]" in e for _, _, e in listed) and any("[1h]" in e for _, _, e in listed)
    assert all('=~".*"' in e for _, _, e in listed if "workspace=~" in e)


# --- every PromQL query against a real Prometheus, one replica and two ----------------------


@pytest.fixture
def replicas() -> Iterator[list[str]]:
    """Serve two stand-in exporter replicas (same stored totals; the first is the leader)."""
    t0 = time.time() - 120
    servers = []
    try:
        for leader in (True, False):
            registry = CollectorRegistry()
            registry.register(promkit.ContractMetrics(t0, leader=leader))  # type: ignore[arg-type]
            port = promkit.free_port()
            server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
            servers.append((server, thread, f"127.0.0.1:{port}"))
        yield [s[2] for s in servers]
    finally:
        for server, thread, _ in servers:
            server.shutdown()
            server.server_close()
            thread.join(5)


def _close(a: float, b: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return math.isclose(a, b, rel_tol=0.15, abs_tol=1e-6)


def test_every_query_runs_and_replicas_change_nothing(
    replicas: list[str], prometheus_server: Callable[..., PrometheusServer]
) -> None:
    """Every board query returns series without target labels, the same from one replica as
    from two; every rule expression evaluates without an error or a target label.

    Ranges are 5 s here (scrapes are 1 s apart) so both servers cover them fully within seconds.
    """
    one = prometheus_server(replicas[:1])
    two = prometheus_server(replicas)
    for prom in (one, two):
        prom.wait_for_scrapes(8, timeout=40)
    at = time.time() - 1
    short = {"__rate_interval": "5s", "__range": "5s"}
    dashboard = [(f"{b} / {p}", e, True) for b, p, e in build.dashboard_promql(short)]
    rules = [(n, e, False) for n, e in prom_build.alert_promql()]
    for label, expr, is_board in dashboard + rules:
        per_replica = any(m in promkit.PER_REPLICA for m in promkit.selectors(expr))
        got_two = two.query(expr, at)
        got_one = one.query(expr, at)
        if is_board:
            assert got_two, f"{label}: {expr} returned no series"
        for sample in got_two:
            keep = {"job"} if per_replica else {"instance", "job"}
            assert not keep & set(sample["metric"]), f"{label}: {expr} keeps {sample['metric']}"
        if per_replica or not is_board:
            continue  # per-process metrics differ on purpose (one leader)

        def key(s: dict[str, Any]) -> tuple[tuple[str, str], ...]:
            return tuple(sorted(s["metric"].items()))

        assert sorted(map(key, got_one)) == sorted(map(key, got_two)), f"{label}: {expr}"
        ones = {key(s): float(s["value"][1]) for s in got_one}
        for s in got_two:
            a, b = ones[key(s)], float(s["value"][1])
            assert _close(a, b), f"{label}: {expr}: one replica {a}, two replicas {b}"


# --- SQL panels against PostgreSQL ------------------------------------------------------------

SONNET, HAIKU = "claude-sonnet-4-6", "claude-haiku-4-5"
# (day, tier, model, workspace, requests, cost, standard cost, billed)
SPEND_ROWS = [
    ("2026-10-31", "standard", SONNET, "default", 10, "100", "100", "100"),  # before the month
    ("2026-11-01", "standard", SONNET, "default", 100, "10", "10", "10.10"),
    ("2026-11-01", "batch", SONNET, "default", 300, "5", "10", "5"),
    ("2026-11-02", "standard", HAIKU, "wrkspc_b", 50, "2", "2", "2"),
    ("2026-11-02", "batch", HAIKU, "wrkspc_b", 150, "1", "2", None),  # not billed yet
    ("2026-11-03", "priority", SONNET, "default", 10, "4", "4", None),
    ("2026-11-05", "standard", SONNET, "default", 10, "50", "50", None),  # after the range
]
FROM, TO = datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 4, 12, tzinfo=UTC)
ALL = {"workspace": ["default", "wrkspc_b"], "model": [SONNET, HAIKU]}


def _batch(
    bid: str, ws: str, workload: str | None, created: str, ended: str | None, **kw: Any
) -> Batch:
    created_at = datetime.fromisoformat(created).replace(tzinfo=UTC)
    ended_at = datetime.fromisoformat(ended).replace(tzinfo=UTC) if ended else None
    return Batch(
        id=bid,
        workspace_id=ws,
        workload=workload,
        processing_status="ended" if ended else "in_progress",
        created_at=created_at,
        ended_at=ended_at,
        turnaround_seconds=(ended_at - created_at).total_seconds() if ended_at else None,
        first_seen_at=created_at,
        updated_at=created_at,
        **kw,
    )


BATCHES = [
    _batch("b1", "default", "summarize", "2026-11-01T01:00", "2026-11-01T02:00",
           requests=100, succeeded=98, errored=1, expired=1),
    _batch("b2", "default", "summarize", "2026-11-02T00:00", "2026-11-02T03:00",
           requests=200, succeeded=200),
    _batch("b3", "default", "classify", "2026-11-02T05:00", "2026-11-02T05:30",
           requests=1000, succeeded=999, canceled=1),
    _batch("b4", "wrkspc_b", None, "2026-11-03T00:00", "2026-11-03T01:00",
           requests=10, succeeded=10),
    _batch("b5", "default", "summarize", "2026-11-04T00:00", None, requests=50, processing=50),
]  # fmt: skip


@pytest.fixture(scope="module")
def pg() -> Iterator[Engine]:
    """Yield an engine on a private PostgreSQL database with spend_day and batch filled."""
    name = f"bm_dash_{os.environ.get('PYTEST_XDIST_WORKER', 'main')}_{os.getpid()}"
    try:
        admin = db.make_engine(conftest.pg_admin_url())
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError as exc:
        conftest._pg_unavailable(f"{type(exc).__name__}: {str(exc).splitlines()[0]}")
    engine = db.make_engine(conftest.pg_admin_url().rsplit("/", 1)[0] + "/" + name)
    try:
        SQLModel.metadata.create_all(engine)
        with Session(engine) as session:
            for day, tier, model, ws, req, cost, std, billed in SPEND_ROWS:
                session.add(
                    SpendDay(
                        day=datetime.fromisoformat(day).replace(tzinfo=UTC),
                        service_tier=tier,
                        model=model,
                        workspace_id=ws,
                        requests=req,
                        cost_usd=Decimal(cost),
                        standard_cost_usd=Decimal(std),
                        billed_cost_usd=Decimal(billed) if billed is not None else None,
                        complete=True,
                        updated_at=datetime.fromisoformat(day).replace(tzinfo=UTC),
                    )
                )
            session.commit()
        with Session(engine) as session:
            session.add_all([b.model_copy() for b in BATCHES])
            session.commit()
        yield engine
    finally:
        engine.dispose()
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def sql_panel(board: str, title: str) -> str:
    [p] = [p for p in BOARDS[board]["panels"] if p["title"] == title]
    [t] = p["targets"]
    return str(t["rawSql"])


def run(
    engine: Engine, raw: str, values: dict[str, list[str]] | None = None
) -> list[tuple[Any, ...]]:
    sql = build.render_sql(raw, FROM, TO, values or ALL)
    assert "$" not in sql, sql
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(sql))]


def d(day: str) -> datetime:
    return datetime.fromisoformat(day).replace(tzinfo=UTC)


@pytest.mark.postgres
def test_every_sql_panel_runs(pg: Engine) -> None:
    sql_targets = [(n, p, t) for n, p, t in targets() if "rawSql" in t]
    assert len(sql_targets) >= 10
    for name, p, t in sql_targets:
        rows = run(pg, t["rawSql"])
        assert rows, f"{name}: {p['title']} returned no rows"
        if t["format"] == "time_series":
            assert '"time"' in t["rawSql"], p["title"]


@pytest.mark.postgres
def test_spend_panels_give_the_expected_figures(pg: Engine) -> None:
    spend = sql_panel("spend.json", "Spend in range")
    assert run(pg, spend) == [(Decimal(22),)]
    assert run(pg, spend, {**ALL, "workspace": ["default"]}) == [(Decimal(19),)]
    assert run(pg, spend, {**ALL, "model": [HAIKU]}) == [(Decimal(3),)]
    [(mtd, projection)] = run(pg, sql_panel("spend.json", "Month to date and month-end projection"))
    assert mtd == 22
    assert float(projection) == pytest.approx(22 / 3.5 * 30)
    saved = sql_panel("spend.json", "Savings realised by batch in range")
    assert run(pg, saved) == [(Decimal(6),)]
    by_tier = run(pg, sql_panel("spend.json", "Spend per day by service tier"))
    assert by_tier == [
        (d("2026-11-01"), "batch", 5),
        (d("2026-11-01"), "standard", 10),
        (d("2026-11-02"), "batch", 1),
        (d("2026-11-02"), "standard", 2),
        (d("2026-11-03"), "priority", 4),
    ]
    assert run(pg, sql_panel("spend.json", "Savings realised by batch per day")) == [
        (d("2026-11-01"), SONNET, 5),
        (d("2026-11-02"), HAIKU, 1),
    ]
    by_ws = run(pg, sql_panel("spend.json", "Spend per day by workspace"))
    assert by_ws == [
        (d("2026-11-01"), "default", 15),
        (d("2026-11-02"), "wrkspc_b", 3),
        (d("2026-11-03"), "default", 4),
    ]
    by_model = run(
        pg, sql_panel("spend.json", "Spend per day by model"), {**ALL, "workspace": ["default"]}
    )
    assert by_model == [(d("2026-11-01"), SONNET, 15), (d("2026-11-03"), SONNET, 4)]
    assert run(pg, sql_panel("spend.json", "Computed vs billed cost per day")) == [
        (d("2026-11-01"), 15, Decimal("15.10")),
        (d("2026-11-02"), 3, 2),
        (d("2026-11-03"), 4, None),
    ]
    drift = run(pg, sql_panel("spend.json", "Cost drift per day"))
    assert [(day, round(float(v), 6)) for day, v in drift] == [
        (d("2026-11-01"), round(0.1 / 15.1, 6)),
        (d("2026-11-02"), 0.0),
    ]


@pytest.mark.postgres
def test_batch_panels_give_the_expected_figures(pg: Engine) -> None:
    workloads = run(pg, sql_panel("batches.json", "Slowest and most-failed workloads"))
    assert [
        (w, n, r, p95, slowest, round(float(f), 6), e) for w, n, r, p95, slowest, f, e in workloads
    ] == [
        ("summarize", 2, 300, 3600 + 0.95 * 7200, 10800, round(2 / 300, 6), 1),
        ("unassigned", 1, 10, 3600, 3600, 0.0, 0),
        ("classify", 1, 1000, 1800, 1800, 0.0, 0),
    ]
    only_b = run(
        pg,
        sql_panel("batches.json", "Slowest and most-failed workloads"),
        {**ALL, "workspace": ["wrkspc_b"]},
    )
    assert [w for w, *_ in only_b] == ["unassigned"]
    sizes = run(pg, sql_panel("batches.json", "Batch sizes per day"))
    assert sizes == [
        (d("2026-11-01"), 100, 100),
        (d("2026-11-02"), 600, 1000),
        (d("2026-11-03"), 10, 10),
        (d("2026-11-04"), 50, 50),
    ]
