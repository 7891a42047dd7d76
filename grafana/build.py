"""Build the Grafana dashboards and provisioning files of the batch-monitor stack.

Run ``python -m grafana.build`` (or ``python grafana/build.py``) from the repository root: it
writes ``grafana/dashboards/*.json`` and ``grafana/provisioning/**.yaml``. The generated files
are committed; ``tests/test_dashboards.py`` rebuilds them and fails when they differ, so edit
this file and re-run it rather than editing the JSON (``--check`` only compares).

Conventions every panel follows (the test lints them):

- Prometheus serves rates, health and alerts; money over long ranges reads the ``spend_day``
  table through PostgreSQL, because the 30-day backfill predates the first scrape.
- Every replica exports the same stored totals, so a query first takes ``max by(<the metric's own
  labels>)`` (which drops ``instance``, ``job`` and any other target label) and only then sums.
  Per-process metrics (leader, build info, scheduler jobs) keep ``instance`` on purpose.
- Rates use ``$__rate_interval``; stat panels over the whole range use ``$__range``.
- The scheduler's ``job`` label collides with Prometheus' target label ``job``; with the default
  ``honor_labels: false`` Prometheus stores it as ``exported_job``, which is what these queries
  read.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from grafana.yamlout import dump

ROOT = Path(__file__).resolve().parent
DASHBOARD_DIR = ROOT / "dashboards"
PROVISIONING_DIR = ROOT / "provisioning"
SCHEMA_VERSION = 39  # Grafana 11.0-11.2 write this; later versions migrate it on load
GRAFANA_VERSION = "11.2.0"

PROMETHEUS_UID = "batch-monitor-prometheus"
POSTGRES_UID = "batch-monitor-postgres"
PROMETHEUS_TYPE = "prometheus"
POSTGRES_TYPE = "grafana-postgresql-datasource"
PROM_DS = {"type": PROMETHEUS_TYPE, "uid": "${prometheus_datasource}"}
SQL_DS = {"type": POSTGRES_TYPE, "uid": "${postgres_datasource}"}

# Targets the product's rules use (monitor/rules.py default_entries).
SHARE_LOW, SHARE_HIGH = 0.50, 0.70
TURNAROUND_WARN, TURNAROUND_CRIT = 5400, 7200  # 90 min, 2 h
FAILURE_MAX = 0.005
BATCH_LIFE = 86400  # a batch expires 24 h after creation
EXPIRY_RISK = 43200  # 12 h of its life
STALE_AFTER = 1800  # collector_stale: 30 min
DRIFT_MAX = 0.02

# SQL filters: multi-value variables are written 'a','b' (Grafana's sqlstring format).
WS_SQL = "workspace_id IN (${workspace:sqlstring})"
MODEL_SQL = "model IN (${model:sqlstring})"
WS = 'workspace=~"$workspace"'
MODEL = 'model=~"$model"'

DASHBOARDS = {
    "spend": ("bm-spend", "Claude spend: real-time vs batch"),
    "batches": ("bm-batches", "Message Batches"),
    "health": ("bm-health", "batch-monitor health"),
}


# --- building blocks ----------------------------------------------------------------------


def prom(
    expr: str, legend: str = "__auto", *, instant: bool = False, ref: str = "A", table: bool = False
) -> dict:
    """Return a Prometheus target (``table``: one row per series, for table panels)."""
    target: dict[str, Any] = {
        "datasource": PROM_DS,
        "editorMode": "code",
        "expr": expr,
        "legendFormat": legend,
        "range": not instant,
        "instant": instant,
        "refId": ref,
    }
    if instant:
        target["format"] = "table" if table else "time_series"
    return target


def sql(raw: str, fmt: str = "time_series", ref: str = "A") -> dict:
    """Return a PostgreSQL target (raw SQL with Grafana macros)."""
    return {
        "datasource": SQL_DS,
        "editorMode": "code",
        "format": fmt,
        "rawQuery": True,
        "rawSql": raw.strip(),
        "refId": ref,
    }


def steps(*pairs: tuple[float | None, str]) -> dict:
    """Return absolute thresholds from ``(value, color)`` pairs; the first value is None."""
    return {"mode": "absolute", "steps": [{"color": c, "value": v} for v, c in pairs]}


OK_ONLY = steps((None, "green"))


def panel(
    kind: str,
    title: str,
    description: str,
    unit: str,
    targets: list[dict],
    size: tuple[int, int],
    *,
    thresholds: dict | None = None,
    custom: dict | None = None,
    options: dict | None = None,
    overrides: list[dict] | None = None,
    minmax: tuple[float | None, float | None] = (None, None),
    no_value: str | None = None,
    decimals: int | None = None,
) -> dict:
    """Return one panel; ``size`` is (width, height), positions are assigned by ``layout``."""
    defaults: dict[str, Any] = {
        "unit": unit,
        "color": {"mode": "thresholds" if kind in ("stat", "gauge") else "palette-classic"},
        "thresholds": thresholds or OK_ONLY,
        "mappings": [],
    }
    if minmax[0] is not None:
        defaults["min"] = minmax[0]
    if minmax[1] is not None:
        defaults["max"] = minmax[1]
    if no_value is not None:
        defaults["noValue"] = no_value
    if decimals is not None:
        defaults["decimals"] = decimals
    if kind == "timeseries":
        defaults["custom"] = {
            "drawStyle": "line",
            "lineWidth": 1,
            "fillOpacity": 10,
            "showPoints": "never",
            "spanNulls": False,
            "stacking": {"mode": "none", "group": "A"},
            "thresholdsStyle": {"mode": "off"},
            "axisSoftMin": 0,
            **(custom or {}),
        }
    elif custom:
        defaults["custom"] = custom
    opts: dict[str, Any] = {}
    if kind == "timeseries":
        opts = {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        }
    elif kind in ("stat", "gauge"):
        opts = {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "orientation": "auto",
        }
        if kind == "stat":
            opts.update({"colorMode": "value", "graphMode": "none", "textMode": "auto"})
        else:
            opts.update({"showThresholdMarkers": True, "showThresholdLabels": False})
    elif kind == "table":
        opts = {"showHeader": True, "cellHeight": "sm", "footer": {"show": False}}
    elif kind == "bargauge":
        opts = {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "orientation": "horizontal",
            "displayMode": "basic",
            "showUnfilled": True,
        }
    opts.update(options or {})
    datasource = targets[0]["datasource"]
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": datasource,
        "targets": targets,
        "fieldConfig": {"defaults": defaults, "overrides": overrides or []},
        "options": opts,
        "gridPos": {"w": size[0], "h": size[1]},
    }


def unit_override(column: str, unit: str) -> dict:
    """Return a field override setting ``column``'s unit (tables with mixed units)."""
    return {
        "matcher": {"id": "byName", "options": column},
        "properties": [{"id": "unit", "value": unit}],
    }


def layout(panels: list[dict]) -> list[dict]:
    """Give panels ids and grid positions, left to right, wrapping at Grafana's 24 columns."""
    x = y = row_h = 0
    for n, p in enumerate(panels, start=1):
        w, h = p["gridPos"]["w"], p["gridPos"]["h"]
        if x + w > 24:
            x, y, row_h = 0, y + row_h, 0
        p["id"] = n
        p["gridPos"] = {"h": h, "w": w, "x": x, "y": y}
        x += w
        row_h = max(row_h, h)
    return panels


def datasource_var(name: str, plugin: str, label: str, uid: str, text: str) -> dict:
    """Return a datasource variable preset to the provisioned data source."""
    return {
        "name": name,
        "label": label,
        "type": "datasource",
        "query": plugin,
        "current": {"selected": False, "text": text, "value": uid},
        "hide": 0,
        "includeAll": False,
        "multi": False,
        "options": [],
        "refresh": 1,
        "regex": "",
        "skipUrlSync": False,
    }


def label_var(name: str, label: str, query: str, description: str) -> dict:
    """Return a multi-value query variable over label values (All selects every value)."""
    return {
        "name": name,
        "label": label,
        "description": description,
        "type": "query",
        "datasource": PROM_DS,
        "definition": query,
        "query": {"query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "hide": 0,
        "includeAll": True,
        "multi": True,
        "options": [],
        "refresh": 2,
        "regex": "",
        "skipUrlSync": False,
        "sort": 1,
    }


def variables(with_sql: bool) -> list[dict]:
    """Return the dashboard variables: data sources, then workspace and model."""
    out = [
        datasource_var(
            "prometheus_datasource",
            PROMETHEUS_TYPE,
            "Prometheus data source",
            PROMETHEUS_UID,
            "Prometheus",
        )
    ]
    if with_sql:
        out.append(
            datasource_var(
                "postgres_datasource",
                POSTGRES_TYPE,
                "Postgres data source",
                POSTGRES_UID,
                "batch-monitor PostgreSQL",
            )
        )
    out.append(
        label_var(
            "workspace",
            "Workspace",
            "label_values(claude_cost_usd_total, workspace)",
            "Anthropic workspaces recorded by batch-monitor (the default workspace is 'default').",
        )
    )
    out.append(
        label_var(
            "model",
            "Model",
            'label_values(claude_cost_usd_total{workspace=~"$workspace"}, model)',
            "Claude models with recorded usage in the selected workspaces.",
        )
    )
    return out


def dashboard(key: str, description: str, panels: list[dict], time_from: str) -> dict:
    """Return one dashboard with links to the other two."""
    uid, title = DASHBOARDS[key]
    with_sql = any(p["datasource"]["type"] == POSTGRES_TYPE for p in panels)
    links = [
        {
            "title": other_title,
            "type": "link",
            "url": f"/d/{other_uid}",
            "icon": "dashboard",
            "tooltip": f"Open '{other_title}' with the same time range and variables",
            "keepTime": True,
            "includeVars": True,
            "asDropdown": False,
            "targetBlank": False,
            "tags": [],
        }
        for other_key, (other_uid, other_title) in DASHBOARDS.items()
        if other_key != key
    ]
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["batch-monitor", "claude"],
        "timezone": "utc",
        "editable": False,
        "graphTooltip": 1,
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "refresh": "1m",
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "time": {"from": time_from, "to": "now"},
        "timepicker": {},
        "weekStart": "",
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "links": links,
        "templating": {"list": variables(with_sql)},
        "panels": layout(panels),
    }


# --- "Claude spend: real-time vs batch" ---------------------------------------------------

SPEND_WHERE = f"$__timeFilter(day) AND {WS_SQL} AND {MODEL_SQL}"
SHARE_BAND = steps((None, "red"), (SHARE_LOW, "green"), (SHARE_HIGH, "blue"))
# Month to date and a naive month-end projection, both as of the end of the time range: the
# spend so far this (UTC) month, divided by the days elapsed, times the days in the month.
MONTH_SQL = f"""
WITH bounds AS (
  SELECT CAST($__timeTo() AS timestamptz) AS now_at,
         date_trunc('month', CAST($__timeTo() AS timestamptz) AT TIME ZONE 'UTC') AS m0
), mtd AS (
  SELECT coalesce(sum(cost_usd), 0) AS spend
  FROM spend_day, bounds
  WHERE day >= m0 AT TIME ZONE 'UTC' AND day < now_at AND {WS_SQL} AND {MODEL_SQL}
)
SELECT
  spend AS "month to date",
  spend / greatest(extract(epoch FROM now_at - m0 AT TIME ZONE 'UTC') / 86400.0, 1.0 / 24)
    * extract(day FROM m0 + interval '1 month' - interval '1 day') AS "month-end projection"
FROM mtd, bounds
"""


def spend_panels() -> list[dict]:
    """Return the spend dashboard's panels."""
    tier_sum = "max by(service_tier, model, workspace)"
    return [
        panel(
            "stat",
            "Spend in range",
            "Computed cost of all usage (real-time, batch and priority) on the UTC days that "
            "start in the time range, from the spend_day table: the figures "
            "`batch-monitor summary` gives.",
            "currencyUSD",
            [sql(f'SELECT sum(cost_usd) AS "spend" FROM spend_day WHERE {SPEND_WHERE}', "table")],
            (4, 4),
        ),
        panel(
            "stat",
            "Month to date and month-end projection",
            "Spend so far in the UTC month that contains the end of the time range, and a naive "
            "projection: that spend divided by the days elapsed, times the days in the month.",
            "currencyUSD",
            [sql(MONTH_SQL, "table")],
            (6, 4),
        ),
        panel(
            "stat",
            "Batch share of requests (24 h)",
            "Batch requests as a fraction of all requests over the last 24 h, whole "
            "organisation (the exporter's claude_batch_share_ratio has no workspace label). "
            "Target band 50-70 %; the batch_share_requests alert fires below 50 %.",
            "percentunit",
            [prom('max(claude_batch_share_ratio{basis="requests", window="1d"})', instant=True)],
            (4, 4),
            thresholds=SHARE_BAND,
            decimals=1,
        ),
        panel(
            "stat",
            "Batch share of spend (24 h)",
            "Batch spend as a fraction of all spend over the last 24 h, whole organisation. "
            "Target band 50-70 %; the batch_share_spend alert fires below 40 %.",
            "percentunit",
            [prom('max(claude_batch_share_ratio{basis="spend", window="1d"})', instant=True)],
            (4, 4),
            thresholds=steps(
                (None, "red"), (0.40, "orange"), (SHARE_LOW, "green"), (SHARE_HIGH, "blue")
            ),
            decimals=1,
        ),
        panel(
            "stat",
            "Savings realised by batch in range",
            "What the batch usage in the time range would have cost at real-time prices, minus "
            "what it cost (spend_day: standard_cost_usd - cost_usd on batch rows).",
            "currencyUSD",
            [
                sql(
                    'SELECT sum(standard_cost_usd - cost_usd) AS "saved" FROM spend_day '
                    f"WHERE service_tier = 'batch' AND {SPEND_WHERE}",
                    "table",
                )
            ],
            (6, 4),
        ),
        panel(
            "timeseries",
            "Spend per day by service tier",
            "Computed cost per UTC day, stacked by service tier (standard = real-time, batch, "
            "priority), from spend_day. Today's bar grows until the day closes.",
            "currencyUSD",
            [
                sql(
                    f"""
SELECT day AS "time", service_tier AS metric, sum(cost_usd) AS value
FROM spend_day
WHERE {SPEND_WHERE}
GROUP BY 1, 2
ORDER BY 1, 2
"""
                )
            ],
            (12, 8),
            custom={
                "drawStyle": "bars",
                "fillOpacity": 80,
                "stacking": {"mode": "normal", "group": "A"},
            },
        ),
        panel(
            "timeseries",
            "Batch share against the 50-70 % target",
            "Batch share of requests and of spend over the trailing 24 h, as the exporter "
            "computes it (whole organisation). Red below 50 %, green inside the target band, "
            "blue above 70 %.",
            "percentunit",
            [prom('max by(basis)(claude_batch_share_ratio{window="1d"})', "{{basis}}")],
            (12, 8),
            thresholds=SHARE_BAND,
            custom={"thresholdsStyle": {"mode": "line+area"}},
            minmax=(0, 1),
        ),
        panel(
            "timeseries",
            "Savings realised by batch per day",
            "Per UTC day: the real-time price of the batch usage minus its batch cost "
            "(spend_day, batch rows), by model.",
            "currencyUSD",
            [
                sql(
                    f"""
SELECT day AS "time", model AS metric, sum(standard_cost_usd - cost_usd) AS value
FROM spend_day
WHERE service_tier = 'batch' AND {SPEND_WHERE}
GROUP BY 1, 2
ORDER BY 1, 2
"""
                )
            ],
            (8, 8),
            custom={
                "drawStyle": "bars",
                "fillOpacity": 80,
                "stacking": {"mode": "normal", "group": "A"},
            },
        ),
        panel(
            "bargauge",
            "Savings still missed: batch candidates",
            "The advisor's monthly savings if each real-time workload moved to the Message "
            "Batches API (recommendation BATCH or HYBRID), from "
            "claude_advisor_monthly_savings_usd. The batch_candidate alert fires at $10 a month. "
            "Not filtered by workspace or model (the gauge has neither label).",
            "currencyUSD",
            [
                prom(
                    "sort_desc(max by(workload, recommendation)"
                    '(claude_advisor_monthly_savings_usd{recommendation=~"BATCH|HYBRID"}))',
                    "{{workload}} ({{recommendation}})",
                    instant=True,
                )
            ],
            (8, 8),
            thresholds=steps((None, "green"), (10, "orange")),
        ),
        panel(
            "timeseries",
            "Spend rate by service tier",
            "Dollars per hour of computed cost, from the rate of claude_cost_usd_total. Usage "
            "arrives in report buckets, so this is spiky; the daily panels hold the totals.",
            "currencyUSD",
            [
                prom(
                    f"3600 * sum by(service_tier)({tier_sum}"
                    f"(rate(claude_cost_usd_total{{{WS}, {MODEL}}}[$__rate_interval])))",
                    "{{service_tier}}",
                )
            ],
            (8, 8),
        ),
        panel(
            "timeseries",
            "Spend per day by model",
            "Computed cost per UTC day by model, all tiers (spend_day).",
            "currencyUSD",
            [
                sql(
                    f"""
SELECT day AS "time", model AS metric, sum(cost_usd) AS value
FROM spend_day
WHERE {SPEND_WHERE}
GROUP BY 1, 2
ORDER BY 1, 2
"""
                )
            ],
            (12, 8),
            custom={
                "drawStyle": "bars",
                "fillOpacity": 80,
                "stacking": {"mode": "normal", "group": "A"},
            },
        ),
        panel(
            "timeseries",
            "Spend per day by workspace",
            "Computed cost per UTC day by workspace, all tiers (spend_day).",
            "currencyUSD",
            [
                sql(
                    f"""
SELECT day AS "time", workspace_id AS metric, sum(cost_usd) AS value
FROM spend_day
WHERE {SPEND_WHERE}
GROUP BY 1, 2
ORDER BY 1, 2
"""
                )
            ],
            (12, 8),
            custom={
                "drawStyle": "bars",
                "fillOpacity": 80,
                "stacking": {"mode": "normal", "group": "A"},
            },
        ),
        panel(
            "timeseries",
            "Computed vs billed cost per day",
            "Cost computed from usage and the price table next to what the cost report billed, "
            "per UTC day (spend_day). Billed is empty until Anthropic bills the day.",
            "currencyUSD",
            [
                sql(
                    f"""
SELECT day AS "time", sum(cost_usd) AS "computed", sum(billed_cost_usd) AS "billed"
FROM spend_day
WHERE {SPEND_WHERE}
GROUP BY 1
ORDER BY 1
"""
                )
            ],
            (12, 8),
        ),
        panel(
            "timeseries",
            "Cost drift per day",
            "|computed - billed| / billed per UTC day, over the rows the cost report has billed "
            "(spend_day). The cost_drift alert fires above 2 % on any of the last 3 closed days.",
            "percentunit",
            [
                sql(
                    f"""
SELECT day AS "time",
       abs(sum(cost_usd) FILTER (WHERE billed_cost_usd IS NOT NULL) - sum(billed_cost_usd))
         / sum(billed_cost_usd) AS "drift"
FROM spend_day
WHERE {SPEND_WHERE}
GROUP BY 1
HAVING sum(billed_cost_usd) > 0
ORDER BY 1
"""
                )
            ],
            (8, 8),
            thresholds=steps((None, "green"), (DRIFT_MAX, "red")),
            custom={"thresholdsStyle": {"mode": "line"}},
        ),
        panel(
            "stat",
            "Cost drift (exporter, 7 d)",
            "claude_cost_drift_ratio over the last 7 days as the exporter computes it; red "
            "above the 2 % tolerance.",
            "percentunit",
            [prom('max(claude_cost_drift_ratio{window="7d"})', instant=True)],
            (4, 8),
            thresholds=steps((None, "green"), (DRIFT_MAX, "red")),
            decimals=2,
        ),
    ]


# --- "Message Batches" -----------------------------------------------------------------------

TURNAROUND_STEPS = steps((None, "green"), (TURNAROUND_WARN, "orange"), (TURNAROUND_CRIT, "red"))
AGE_STEPS = steps((None, "green"), (EXPIRY_RISK, "orange"), (BATCH_LIFE * 0.9, "red"))
FAILURE_STEPS = steps((None, "green"), (FAILURE_MAX, "red"))
WORKLOADS_SQL = f"""
SELECT coalesce(workload, 'unassigned') AS "workload",
       count(*) AS "batches",
       sum(requests) AS "requests",
       percentile_cont(0.95) WITHIN GROUP (ORDER BY turnaround_seconds) AS "p95 turnaround",
       max(turnaround_seconds) AS "slowest",
       (sum(errored) + sum(expired))::float8 / nullif(sum(requests), 0) AS "failure rate",
       sum(expired) AS "expired requests"
FROM batch
WHERE ended_at IS NOT NULL AND $__timeFilter(ended_at) AND {WS_SQL}
GROUP BY 1
ORDER BY "failure rate" DESC NULLS LAST, "p95 turnaround" DESC NULLS LAST, 1
LIMIT 20
"""


def batch_panels() -> list[dict]:
    """Return the Message Batches dashboard's panels."""
    return [
        panel(
            "stat",
            "Batches in progress",
            "Message Batches not yet ended, in the selected workspaces.",
            "short",
            [
                prom(
                    f"sum(max by(workspace)(claude_batches_in_progress{{{WS}}}))",
                    instant=True,
                )
            ],
            (4, 5),
        ),
        panel(
            "gauge",
            "Oldest unended batch",
            "Age of the oldest batch still in progress against its 24 h life: unfinished "
            "requests expire at 24 h. The batch_expiry_risk alert fires at 12 h.",
            "s",
            [prom(f"max(claude_batch_oldest_in_progress_age_seconds{{{WS}}})", instant=True)],
            (4, 5),
            thresholds=AGE_STEPS,
            minmax=(0, BATCH_LIFE),
            no_value="none in progress",
        ),
        panel(
            "stat",
            "Turnaround p50 / p95 (24 h)",
            "Median and 95th percentile time from creation to end of the batches that ended "
            "in the last 24 h, whole organisation. batch_turnaround_p95 warns above 90 min "
            "and is critical above 2 h.",
            "s",
            [
                prom('max(claude_batch_turnaround_p50_seconds{window="1d"})', "p50", instant=True),
                prom(
                    'max(claude_batch_turnaround_p95_seconds{window="1d"})',
                    "p95",
                    instant=True,
                    ref="B",
                ),
            ],
            (6, 5),
            thresholds=TURNAROUND_STEPS,
        ),
        panel(
            "stat",
            "Turnaround p50 / p95 in range (histogram)",
            "Quantiles of claude_batch_turnaround_seconds over the batches that ended in the "
            "time range (estimated from the histogram buckets).",
            "s",
            [
                prom(
                    "histogram_quantile(0.5, max by(le)"
                    "(increase(claude_batch_turnaround_seconds_bucket[$__range])))",
                    "p50",
                    instant=True,
                ),
                prom(
                    "histogram_quantile(0.95, max by(le)"
                    "(increase(claude_batch_turnaround_seconds_bucket[$__range])))",
                    "p95",
                    instant=True,
                    ref="B",
                ),
            ],
            (6, 5),
            thresholds=TURNAROUND_STEPS,
        ),
        panel(
            "stat",
            "Failure / expiry rate (24 h)",
            "(errored + expired) / requests, and expired / requests, of the batch requests "
            "that ended in the last 24 h. batch_failure_rate is critical above 0.5 %.",
            "percentunit",
            [
                prom('max(claude_batch_failure_ratio{window="1d"})', "failed", instant=True),
                prom(
                    'max(claude_batch_expired_ratio{window="1d"})',
                    "expired",
                    instant=True,
                    ref="B",
                ),
            ],
            (4, 5),
            thresholds=FAILURE_STEPS,
            decimals=2,
        ),
        panel(
            "timeseries",
            "Oldest unended batch against the 24 h limit",
            "Age of the oldest batch in progress, per workspace. Orange from 12 h (the "
            "batch_expiry_risk alert), red near the 24 h expiry.",
            "s",
            [
                prom(
                    f"max by(workspace)(claude_batch_oldest_in_progress_age_seconds{{{WS}}})",
                    "{{workspace}}",
                )
            ],
            (12, 8),
            thresholds=AGE_STEPS,
            custom={"thresholdsStyle": {"mode": "line+area"}},
            minmax=(0, BATCH_LIFE),
        ),
        panel(
            "timeseries",
            "Batches in progress",
            "Message Batches not yet ended, per workspace.",
            "short",
            [prom(f"max by(workspace)(claude_batches_in_progress{{{WS}}})", "{{workspace}}")],
            (12, 8),
        ),
        panel(
            "timeseries",
            "Turnaround p50 and p95 against 90 min and 2 h",
            "Trailing-24 h turnaround quantiles as the exporter computes them. Orange above "
            "90 min (warning), red above 2 h (critical).",
            "s",
            [
                prom('max(claude_batch_turnaround_p50_seconds{window="1d"})', "p50"),
                prom('max(claude_batch_turnaround_p95_seconds{window="1d"})', "p95", ref="B"),
            ],
            (12, 8),
            thresholds=TURNAROUND_STEPS,
            custom={"thresholdsStyle": {"mode": "line"}},
        ),
        panel(
            "timeseries",
            "Failure and expiry rates against 0.5 %",
            "Trailing-24 h (errored + expired) / requests and expired / requests of ended "
            "batch requests; red above 0.5 %.",
            "percentunit",
            [
                prom('max(claude_batch_failure_ratio{window="1d"})', "failed (errored + expired)"),
                prom('max(claude_batch_expired_ratio{window="1d"})', "expired", ref="B"),
            ],
            (12, 8),
            thresholds=FAILURE_STEPS,
            custom={"thresholdsStyle": {"mode": "line"}},
        ),
        panel(
            "timeseries",
            "Ended batch requests by result",
            "Requests of ended batches per second, by result (succeeded, errored, canceled, "
            "expired).",
            "reqps",
            [
                prom(
                    "sum by(result)(max by(workspace, result)"
                    f"(rate(claude_batch_requests_total{{{WS}}}[$__rate_interval])))",
                    "{{result}}",
                )
            ],
            (12, 8),
            custom={"stacking": {"mode": "normal", "group": "A"}, "fillOpacity": 40},
        ),
        panel(
            "timeseries",
            "Batches ended by status",
            "Batches that reached each final status per interval (ended, canceled, expired, "
            "archived).",
            "short",
            [
                prom(
                    "sum by(status)(max by(workspace, status)"
                    f"(increase(claude_batches_total{{{WS}}}[$__rate_interval])))",
                    "{{status}}",
                )
            ],
            (12, 8),
            custom={
                "drawStyle": "bars",
                "fillOpacity": 80,
                "stacking": {"mode": "normal", "group": "A"},
            },
        ),
        panel(
            "timeseries",
            "Batch sizes per day",
            "Requests per batch created each UTC day: median and largest (batch table).",
            "short",
            [
                sql(
                    f"""
SELECT date_trunc('day', created_at) AS "time",
       percentile_cont(0.5) WITHIN GROUP (ORDER BY requests) AS "median requests",
       max(requests) AS "largest"
FROM batch
WHERE $__timeFilter(created_at) AND {WS_SQL}
GROUP BY 1
ORDER BY 1
"""
                )
            ],
            (12, 8),
        ),
        panel(
            "timeseries",
            "Batch spend rate by model",
            "Dollars per hour of batch-tier computed cost, by model.",
            "currencyUSD",
            [
                prom(
                    "3600 * sum by(model)(max by(service_tier, model, workspace)"
                    f'(rate(claude_cost_usd_total{{service_tier="batch", {WS}, {MODEL}}}'
                    "[$__rate_interval])))",
                    "{{model}}",
                )
            ],
            (12, 8),
        ),
        panel(
            "table",
            "Slowest and most-failed workloads",
            "Workloads of the batches that ended in the time range, worst failure rate first "
            "((errored + expired) / requests), then slowest p95 turnaround (batch table). "
            "'unassigned' batches have unread results.",
            "short",
            [sql(WORKLOADS_SQL, "table")],
            (24, 9),
            overrides=[
                unit_override("p95 turnaround", "s"),
                unit_override("slowest", "s"),
                unit_override("failure rate", "percentunit"),
            ],
        ),
    ]


# --- "batch-monitor health" ---------------------------------------------------------------

LAG = "time() - max by(source)(batch_monitor_collect_last_success_timestamp_seconds)"
ON_LEADER = "and on(instance) (batch_monitor_leader == 1)"


def health_panels() -> list[dict]:
    """Return the health dashboard's panels."""
    return [
        panel(
            "stat",
            "Replicas holding the lease",
            "How many replicas report batch_monitor_leader = 1. Exactly one must: 0 means no "
            "scheduled job runs, 2 means the lease is broken. The BatchMonitorLeaderCount "
            "alert fires after 5 min.",
            "none",
            [prom("count(batch_monitor_leader == 1) or vector(0)", instant=True)],
            (4, 4),
            thresholds=steps((None, "red"), (1, "green"), (2, "red")),
        ),
        panel(
            "stat",
            "Replicas scraped",
            "Replicas exporting batch_monitor_build_info, by version.",
            "none",
            [prom("count by(version)(batch_monitor_build_info)", "{{version}}", instant=True)],
            (4, 4),
            no_value="0: no replica is scraped",
        ),
        panel(
            "stat",
            "Oldest last success (dead-man's switch)",
            "Time since the least recently successful collect source last succeeded. Red past "
            "30 min (collector_stale); 'no data' means no replica is scraped at all.",
            "s",
            [prom(f"max({LAG})", instant=True)],
            (4, 4),
            thresholds=steps((None, "green"), (STALE_AFTER, "red")),
            no_value="NO DATA: is batch-monitor scraped?",
        ),
        panel(
            "stat",
            "Sources past 30 min",
            "Collect sources (batches, usage, cost, logs) whose last success is older than 30 min.",
            "none",
            [prom(f"count(({LAG}) > {STALE_AFTER}) or vector(0)", instant=True)],
            (4, 4),
            thresholds=steps((None, "green"), (1, "red")),
        ),
        panel(
            "stat",
            "Firing alerts",
            "Alerts batch-monitor itself holds in the firing state (all rules).",
            "none",
            [
                prom(
                    'sum(max by(rule, severity, state)(batch_monitor_alerts{state="firing"})) '
                    "or vector(0)",
                    instant=True,
                )
            ],
            (4, 4),
            thresholds=steps((None, "green"), (1, "orange")),
        ),
        panel(
            "stat",
            "Permanent notification failures in range",
            "Notifications that failed permanently (invalid token, unknown channel) in the "
            "time range; they are not retried.",
            "none",
            [
                prom(
                    "sum(max by(channel, outcome)(increase("
                    'batch_monitor_notifications_total{outcome="permanent"}[$__range]))) '
                    "or vector(0)",
                    instant=True,
                )
            ],
            (4, 4),
            thresholds=steps((None, "green"), (1, "red")),
            decimals=0,
        ),
        panel(
            "timeseries",
            "Leader per replica",
            "batch_monitor_leader per replica: 1 on the replica holding the scheduler lease.",
            "none",
            [prom("max by(instance)(batch_monitor_leader)", "{{instance}}")],
            (12, 8),
            custom={"drawStyle": "line", "lineInterpolation": "stepAfter"},
            minmax=(0, 1),
        ),
        panel(
            "timeseries",
            "Job duration against its interval",
            "Last run's duration of each scheduled job on the leader, as a fraction of the "
            "job's configured interval: near 100 % the job cannot keep up.",
            "percentunit",
            [
                prom(
                    f"max by(exported_job)(batch_monitor_job_duration_seconds {ON_LEADER}) / "
                    "max by(exported_job)(batch_monitor_job_interval_seconds)",
                    "{{exported_job}}",
                )
            ],
            (12, 8),
            thresholds=steps((None, "green"), (0.5, "orange"), (1, "red")),
            custom={"thresholdsStyle": {"mode": "line"}},
        ),
        panel(
            "timeseries",
            "Job durations",
            "Duration of each scheduled job's last run on the leader, in seconds.",
            "s",
            [
                prom(
                    f"max by(exported_job)(batch_monitor_job_duration_seconds {ON_LEADER})",
                    "{{exported_job}}",
                )
            ],
            (12, 8),
        ),
        panel(
            "timeseries",
            "Job runs by outcome",
            "Scheduled job runs per second by outcome (ok, failed, timeout), summed over "
            "replicas (each counts the runs it made).",
            "ops",
            [
                prom(
                    "sum by(exported_job, outcome)"
                    "(rate(batch_monitor_job_runs_total[$__rate_interval]))",
                    "{{exported_job}} {{outcome}}",
                )
            ],
            (12, 8),
        ),
        panel(
            "timeseries",
            "Collector lag per source",
            "Time since each source's last successful collection; red above 30 min "
            "(collector_stale).",
            "s",
            [prom(LAG, "{{source}}")],
            (12, 8),
            thresholds=steps((None, "green"), (STALE_AFTER, "red")),
            custom={"thresholdsStyle": {"mode": "line"}},
        ),
        panel(
            "timeseries",
            "Collect errors per source",
            "Failed collections per interval, by source.",
            "short",
            [
                prom(
                    "max by(source)"
                    "(increase(batch_monitor_collect_errors_total[$__rate_interval]))",
                    "{{source}}",
                )
            ],
            (12, 8),
            custom={"drawStyle": "bars", "fillOpacity": 80},
        ),
        panel(
            "timeseries",
            "Alerts by state",
            "batch-monitor's own alerts by state (pending, firing, ...), all rules.",
            "none",
            [
                prom(
                    "sum by(state)(max by(rule, severity, state)(batch_monitor_alerts))",
                    "{{state}}",
                )
            ],
            (12, 8),
            custom={"stacking": {"mode": "normal", "group": "A"}, "fillOpacity": 40},
        ),
        panel(
            "table",
            "Alert states by rule",
            "Current count of alerts per rule, severity and state.",
            "none",
            [prom("max by(rule, severity, state)(batch_monitor_alerts)", instant=True, table=True)],
            (12, 8),
            options={"sortBy": [{"displayName": "Value", "desc": True}]},
        ),
        panel(
            "timeseries",
            "Notification outcomes",
            "Notification attempts per second by channel and outcome (ok, transient = will be "
            "retried, permanent = given up).",
            "ops",
            [
                prom(
                    "max by(channel, outcome)"
                    "(rate(batch_monitor_notifications_total[$__rate_interval]))",
                    "{{channel}} {{outcome}}",
                )
            ],
            (12, 8),
        ),
        panel(
            "timeseries",
            "Unpriced tokens",
            "Tokens recorded per interval for models without a price (their cost is unknown, "
            "never $0): add a [[prices]] entry for the model.",
            "short",
            [
                prom(
                    "max by(model)"
                    f"(increase(batch_monitor_unpriced_tokens_total{{{MODEL}}}[$__rate_interval]))",
                    "{{model}}",
                )
            ],
            (12, 8),
            custom={"drawStyle": "bars", "fillOpacity": 80},
        ),
        panel(
            "timeseries",
            "Recorded requests by workspace",
            "Requests recorded per second (all tiers), by workspace: a flat zero while the "
            "API is in use means collection stopped.",
            "reqps",
            [
                prom(
                    "sum by(workspace)(max by(service_tier, model, workspace)"
                    f"(rate(claude_requests_total{{{WS}, {MODEL}}}[$__rate_interval])))",
                    "{{workspace}}",
                )
            ],
            (24, 8),
        ),
    ]


# --- provisioning ---------------------------------------------------------------------------


def datasources() -> dict:
    """Return the datasource provisioning file (fixed uids the dashboards use)."""
    return {
        "apiVersion": 1,
        "datasources": [
            {
                "name": "Prometheus",
                "type": PROMETHEUS_TYPE,
                "uid": PROMETHEUS_UID,
                "access": "proxy",
                "url": "http://prometheus:9090",
                "isDefault": True,
                "editable": False,
                "jsonData": {"timeInterval": "15s", "httpMethod": "POST"},
            },
            {
                "name": "batch-monitor PostgreSQL",
                "type": POSTGRES_TYPE,
                "uid": POSTGRES_UID,
                "access": "proxy",
                "url": "db:5432",
                "user": "grafana_reader",
                "editable": False,
                "jsonData": {
                    "database": "monitor",
                    "sslmode": "disable",
                    "postgresVersion": 1500,
                    "timescaledb": False,
                    "maxOpenConns": 5,
                },
                "secureJsonData": {"password": "${GRAFANA_POSTGRES_PASSWORD}"},
            },
        ],
    }


def dashboard_provider() -> dict:
    """Return the dashboard provisioning file (the mounted JSON directory)."""
    return {
        "apiVersion": 1,
        "providers": [
            {
                "name": "batch-monitor",
                "orgId": 1,
                "folder": "batch-monitor",
                "folderUid": "batch-monitor",
                "type": "file",
                "disableDeletion": True,
                "allowUiUpdates": False,
                "updateIntervalSeconds": 30,
                "options": {
                    "path": "/var/lib/grafana/dashboards",
                    "foldersFromFilesStructure": False,
                },
            }
        ],
    }


# --- output -----------------------------------------------------------------------------------

HEADER = "Generated by `python -m grafana.build`; edit grafana/build.py, not this file."


def build() -> dict[str, dict]:
    """Return every dashboard by file name."""
    return {
        "spend.json": dashboard(
            "spend",
            "Where Claude money goes: real-time versus Message Batches spend, the batch share "
            "against its 50-70 % target, savings realised and still missed, computed versus "
            "billed cost.",
            spend_panels(),
            "now-30d",
        ),
        "batches.json": dashboard(
            "batches",
            "Message Batches in flight and ended: age against the 24 h limit, turnaround, "
            "failures and expiries, sizes, and the worst workloads.",
            batch_panels(),
            "now-7d",
        ),
        "health.json": dashboard(
            "health",
            "Is batch-monitor itself working: leader lease, scheduled jobs, collector lag, "
            "alerts and notifications, unpriced models.",
            health_panels(),
            "now-6h",
        ),
    }


def rendered() -> dict[Path, str]:
    """Return the text of every generated file by path."""
    files = {
        DASHBOARD_DIR / name: json.dumps(board, indent=2, ensure_ascii=False) + "\n"
        for name, board in build().items()
    }
    files[PROVISIONING_DIR / "datasources" / "datasources.yaml"] = dump(
        datasources(),
        HEADER
        + "\nGrafana reads PostgreSQL as the read-only role grafana_reader; its password comes"
        "\nfrom GRAFANA_POSTGRES_PASSWORD (docker-compose.yml requires it).",
    )
    files[PROVISIONING_DIR / "dashboards" / "dashboards.yaml"] = dump(dashboard_provider(), HEADER)
    return files


def stale_files() -> list[Path]:
    """Return the generated files whose committed text differs from the builder's output."""
    return [p for p, text in rendered().items() if not p.exists() or p.read_text() != text]


# --- PromQL of the dashboards (for tests that run them against a real Prometheus) ------------

VAR_DEFAULTS = {
    "workspace": ".*",
    "model": ".*",
    "__rate_interval": "1m",
    "__range": "1h",
    "__interval": "15s",
}
_VAR = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")


def substitute(expr: str, values: dict[str, str] | None = None) -> str:
    """Replace Grafana variables in a PromQL expression (``$workspace`` -> ``.*`` etc.)."""
    table = {**VAR_DEFAULTS, **(values or {})}

    def repl(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        return table[name] if name in table else m.group(0)

    return _VAR.sub(repl, expr)


def render_sql(
    raw: str, time_from: datetime, time_to: datetime, values: dict[str, list[str]]
) -> str:
    """Expand Grafana's PostgreSQL macros and variables the way the data source does.

    ``$__timeFilter(col)`` -> ``col BETWEEN '<from>' AND '<to>'``, ``$__timeFrom()`` and
    ``$__timeTo()`` -> the quoted RFC 3339 instants (UTC), and ``${var:sqlstring}`` (or
    ``$var``) -> the selected values quoted and comma-separated (All: every value).
    """
    start, end = (f"'{t.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}'" for t in (time_from, time_to))
    text = re.sub(r"\$__timeFilter\(([^)]*)\)", rf"\1 BETWEEN {start} AND {end}", raw)
    text = text.replace("$__timeFrom()", start).replace("$__timeTo()", end)

    def repl(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        if name not in values:
            return m.group(0)
        return ",".join("'" + v.replace("'", "''") + "'" for v in values[name])

    return _VAR.sub(repl, text)


def iter_targets(board: dict) -> Iterator[tuple[dict, dict]]:
    """Yield ``(panel, target)`` for every query target of a dashboard."""
    for p in board["panels"]:
        for t in p.get("targets", []):
            yield p, t


def dashboard_promql(values: dict[str, str] | None = None) -> list[tuple[str, str, str]]:
    """Return ``(dashboard title, panel title, PromQL)`` for every Prometheus query.

    Template variables are substituted (``$workspace``/``$model`` -> ``.*``, ``$__rate_interval``
    -> ``1m``, ``$__range`` -> ``1h``; override with ``values``), so each can be sent as is to
    ``/api/v1/query`` of a Prometheus that scrapes the exporter.
    """
    out = []
    for board in build().values():
        for p, t in iter_targets(board):
            if "expr" in t:
                out.append((board["title"], p["title"], substitute(t["expr"], values)))
    return out


def main(argv: list[str] | None = None) -> int:
    """Write the generated files (or, with --check, list the stale ones and exit 1)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 if stale")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files()
        for p in stale:
            print(f"stale: {p} (run python -m grafana.build)")
        return 1 if stale else 0
    for path, text in rendered().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path.relative_to(ROOT.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
