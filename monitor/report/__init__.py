"""The weekly report: what Claude cost last week, what changed against the week before, and why.

- ``weeks``: report weeks (Monday to Monday) in the report's time zone, and when each is due;
- ``decompose``: the change split into drivers by Shapley values, exact to the cent;
- ``weekly``: ``build_weekly`` and the ``WeeklyReport`` it returns (every figure, the
  regressions, what is missing);
- ``render``: the JSON, Markdown, HTML, CSV and Slack forms; ``chart``: the PNG;
- ``delivery``: ``deliver_due``, the daemon's call (exactly once per week, retried, never doubled).

Method and worked example: ``docs/report.md``.
"""

from __future__ import annotations

from monitor.report.chart import chart_png
from monitor.report.delivery import (
    ReportOutcome,
    default_holder,
    deliver_due,
    deliver_week,
    due_week,
    write_files,
)
from monitor.report.render import render, to_csv, to_html, to_json, to_markdown
from monitor.report.weekly import WeeklyReport, build_weekly
from monitor.report.weeks import Week, WeekError, last_complete_week, parse_week_start

__all__ = [
    "ReportOutcome",
    "Week",
    "WeekError",
    "WeeklyReport",
    "build_weekly",
    "chart_png",
    "default_holder",
    "deliver_due",
    "deliver_week",
    "due_week",
    "last_complete_week",
    "parse_week_start",
    "render",
    "to_csv",
    "to_html",
    "to_json",
    "to_markdown",
    "write_files",
]
