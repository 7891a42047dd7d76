"""The report's forms escape upstream text for where it lands, and read the same numbers.

Workload, model and workspace names come from call logs, custom_ids and the usage report:
anybody who can send a request controls them. In HTML they must not become markup, in Markdown
not a link or a table break, in Slack not a mention, and in a spreadsheet not a formula.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal
from typing import Any

import orjson
import pytest
from sqlmodel import Session

from monitor import db
from monitor.models import CallBucket, UsageBucket
from monitor.report import build_weekly, to_csv, to_html, to_json, to_markdown
from monitor.report.render import slack_blocks, slack_text
from monitor.report.weekly import Regression, WeeklyReport
from tests.reportkit import WEEK2, collected_url, report_now, report_settings, scenario

EVIL_WORKLOAD = "<!channel> & <script>alert(1)</script> |*x*"
EVIL_MODEL = '=HYPERLINK("http://evil.example","click")'
EVIL_WORKSPACE = "@evil"


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> WeeklyReport:
    """The planted week, plus real-time usage under hostile names."""
    engine = db.make_engine(collected_url("sqlite", tmp_path_factory))
    at = WEEK2.start + timedelta(days=1, hours=10)
    try:
        with Session(engine) as session:
            session.add(
                CallBucket(
                    hour=at, workload=EVIL_WORKLOAD, model="claude-haiku-4-5", calls=100,
                    input_tokens=1_000, output_tokens=100, cost_usd=Decimal("500"),
                    batch_cost_usd=Decimal("250"),
                )
            )  # fmt: skip
            session.add(
                UsageBucket(
                    bucket_start=at, bucket_end=at + timedelta(hours=1), width="1h",
                    source="analytics", product="messages_api", model=EVIL_MODEL,
                    service_tier="standard", workspace_id=EVIL_WORKSPACE, requests=100,
                    input_tokens=1_000, output_tokens=100, cost_usd=Decimal("500"),
                    standard_cost_usd=Decimal("500"), final=True, fetched_at=at,
                )
            )  # fmt: skip
            session.flush()
            s = scenario()
            built = build_weekly(session, WEEK2, report_now(s), report_settings())
            session.rollback()
    finally:
        engine.dispose()
    return replace(
        built,
        regressions=(
            *built.regressions,
            Regression("cache_drop", f"workload:{EVIL_WORKLOAD}", "see <https://evil|here>"),
        ),
        missing=("no usage report data for <@U123>",),
    )


def _slack_texts(blocks: list[dict[str, Any]]) -> list[str]:
    out: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("text"), str):
                out.append(node["text"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(blocks)
    return out


def test_html_shows_names_as_text(report: WeeklyReport) -> None:
    page = to_html(report, b"\x89PNG")
    assert "<script>alert(1)</script>" not in page and "<!channel>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;!channel&gt; &amp; &lt;script&gt;" in page
    assert "&lt;https://evil|here&gt;" in page
    assert "=HYPERLINK(&quot;http://evil.example&quot;,&quot;click&quot;)" in page


def test_markdown_keeps_names_out_of_links_tables_and_emphasis(report: WeeklyReport) -> None:
    md = to_markdown(report)
    # No "<" opens an HTML tag or an autolink: every one is escaped.
    assert re.search(r"(?<!\\)<", md) is None
    assert r"\<!channel\> &amp; \<script\>alert(1)\</script\> \|\*x\*" in md
    # Every table row has exactly as many cells as its header (no "|" got through).
    for line in md.splitlines():
        if line.startswith("| ") and "\\|" in line:
            assert line.replace("\\|", "").count("|") in (4, 5)


def test_slack_blocks_cannot_mention_or_link(report: WeeklyReport) -> None:
    texts = [slack_text(report), *_slack_texts(slack_blocks(report, files_note="in <reports/>"))]
    joined = "\n".join(texts)
    for raw in ("<!channel>", "<@U123>", "<https://evil|here>", "<script>", "<reports/>"):
        assert raw not in joined
    assert "&lt;!channel&gt; &amp; &lt;script&gt;" in joined
    assert "&lt;@U123&gt;" in joined
    for block in slack_blocks(report, files_note=""):
        if block["type"] == "header":
            assert len(block["text"]["text"]) <= 150
        for text in _slack_texts([block]):
            assert len(text) <= 3000


def test_csv_cells_never_run_as_formulas(report: WeeklyReport) -> None:
    rows = list(csv.DictReader(io.StringIO(to_csv(report))))
    evil = [r for r in rows if "HYPERLINK" in r["model"]]
    assert len(evil) == 1
    assert evil[0]["model"] == "'" + EVIL_MODEL
    assert evil[0]["workspace"] == "'" + EVIL_WORKSPACE
    assert evil[0]["cost_usd"] == "500.00" and evil[0]["requests"] == "100"
    for r in rows:
        assert r["model"][:1] not in ("=", "+", "-", "@")


def test_json_keeps_names_as_they_are(report: WeeklyReport) -> None:
    data = orjson.loads(to_json(report))
    assert EVIL_WORKLOAD in {m["name"] for m in data["by_workload"]}
    assert EVIL_MODEL in {m["name"] for m in data["by_model"]}
    assert data["missing"] == ["no usage report data for <@U123>"]
