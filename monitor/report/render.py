"""The report's forms: JSON, Markdown, one self-contained HTML file, CSV, and Slack blocks.

Every form formats the same ``WeeklyReport`` through ``monitor.fmt``, so the numbers read the
same everywhere. Upstream text (model, workspace, workload and batch names, alert reasons) is
escaped for the form it lands in: HTML entities, Markdown punctuation, Slack mrkdwn's ``&<>``,
and a leading ``'`` for CSV cells a spreadsheet would run as a formula.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import re
from collections.abc import Sequence
from typing import Any

import orjson

from monitor import fmt
from monitor.notifiers.base import escape_mrkdwn
from monitor.report.decompose import CAUSES
from monitor.report.weekly import BatchRef, Mover, WeeklyReport, band, signed_percent
from monitor.summary import TOKEN_KINDS

CAUSE_LABELS = {
    "volume": "volume (more or fewer tokens)",
    "model_mix": "model mix (work moved between models)",
    "tier_shift": "tier shift (real-time vs batch)",
    "cache": "cache (share of input read from cache)",
    "price": "price (price-table changes)",
    "other": "other (new or vanished models or workspaces, web search, modifiers)",
}
TOP_MOVERS = 3
FORMATS = ("md", "html", "json", "csv")


def to_json(report: WeeklyReport) -> str:
    """Return the report as indented JSON."""
    return orjson.dumps(report.to_json(), option=orjson.OPT_INDENT_2).decode() + "\n"


# --- shared wording -------------------------------------------------------------------------


def title(report: WeeklyReport) -> str:
    """Return the report's title line."""
    return f"Claude spend, week of {report.week.start_date.isoformat()} ({report.week.tz})"


def headline(report: WeeklyReport) -> str:
    """Return one sentence: this week, the change, last week."""
    ratio = report.change_ratio
    pct = f" ({signed_percent(ratio)})" if ratio is not None else ""
    return (
        f"{fmt.usd(report.total_usd)} this week, {_signed(report.change_usd)}{pct} "
        f"against last week ({fmt.usd(report.previous_total_usd)})"
    )


def _signed(value: Any) -> str:
    if value is None:
        return "-"
    return ("+" if fmt.to_cents(value) > 0 else "") + fmt.usd(value)


def figure_rows(report: WeeklyReport) -> list[tuple[str, str, str]]:
    """Return the headline figures as (label, this week, last week) rows."""
    cur, prev = report.current, report.previous
    missed = "-"
    if report.missed_savings_weekly_usd is not None:
        missed = (
            f"{fmt.usd(report.missed_savings_weekly_usd)} "
            f"({fmt.usd(report.missed_savings_monthly_usd)}/month)"
        )
    billing = report.billing
    billed_label = f"computed vs billed ({len(billing.days)} whole UTC days)"
    return [
        ("total", fmt.usd(report.total_usd), fmt.usd(report.previous_total_usd)),
        ("real-time", fmt.usd(cur.spend.realtime_cost_usd), fmt.usd(prev.spend.realtime_cost_usd)),
        ("batch", fmt.usd(cur.spend.batch_cost_usd), fmt.usd(prev.spend.batch_cost_usd)),
        (
            f"batch share of requests (target {band()})",
            fmt.percent(cur.spend.batch_share_requests, digits=1),
            fmt.percent(prev.spend.batch_share_requests, digits=1),
        ),
        (
            f"batch share of spend (target {band()})",
            fmt.percent(cur.spend.batch_share_spend, digits=1),
            fmt.percent(prev.spend.batch_share_spend, digits=1),
        ),
        (
            "saved by batching",
            fmt.usd(cur.spend.batch_savings_usd),
            fmt.usd(prev.spend.batch_savings_usd),
        ),
        ("still missed (advisor's candidates)", missed, ""),
        (billed_label, fmt.usd(billing.computed_usd), fmt.usd(billing.billed_usd)),
    ]


def month_sentence(report: WeeklyReport) -> str:
    """Return the month-to-date, projection and budget sentence."""
    b = report.budget
    text = (
        f"Month to date ({b.month_start.strftime('%B %Y')}): {fmt.usd(b.month_to_date_usd)}; "
        f"projected month {fmt.usd(b.projected_month_usd)} at {fmt.usd(b.daily_rate_usd)} a day "
        "(the last 7 days' rate)"
    )
    if b.monthly_budget_usd is not None:
        text += f"; budget {fmt.usd(b.monthly_budget_usd)}"
        text += (
            f", runs out on {b.runs_out_on.isoformat()}"
            if b.runs_out_on
            else ", enough for the month at this rate"
        )
    return text + "."


def top_movers(movers: Sequence[Mover], n: int = TOP_MOVERS) -> list[Mover]:
    """Return the ``n`` biggest rises and the ``n`` biggest falls."""
    ups = [m for m in movers if m.change_usd is not None and m.change_usd > 0][:n]
    downs = [m for m in reversed(movers) if m.change_usd is not None and m.change_usd < 0][:n]
    return ups + downs


def batch_rows(report: WeeklyReport) -> list[tuple[str, str, str]]:
    """Return batch operations as (label, this week, last week) rows."""
    cur, prev = report.current.batches, report.previous.batches
    return [
        ("batches ended", f"{cur.batches_ended:,}", f"{prev.batches_ended:,}"),
        ("requests", f"{cur.requests:,}", f"{prev.requests:,}"),
        (
            "turnaround p50",
            fmt.minutes(cur.turnaround_p50_seconds),
            fmt.minutes(prev.turnaround_p50_seconds),
        ),
        (
            "turnaround p95",
            fmt.minutes(cur.turnaround_p95_seconds),
            fmt.minutes(prev.turnaround_p95_seconds),
        ),
        (
            "failure rate",
            fmt.percent(cur.failure_rate, digits=2),
            fmt.percent(prev.failure_rate, digits=2),
        ),
        (
            "expired rate",
            fmt.percent(cur.expired_rate, digits=2),
            fmt.percent(prev.expired_rate, digits=2),
        ),
    ]


def _batch_line(b: BatchRef) -> str:
    where = f"{b.workspace}/{b.workload or '(no workload)'}"
    turnaround = fmt.minutes(b.turnaround_seconds)
    return (
        f"{b.id} ({where}): {b.requests:,} requests, {turnaround}, "
        f"{fmt.percent(b.failure_rate, digits=1)} failed"
    )


# --- Markdown -------------------------------------------------------------------------------

_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|~])")


def md(text: str) -> str:
    """Escape upstream text for Markdown (no emphasis, links, HTML or table breaks)."""
    return _MD_SPECIAL.sub(r"\\\1", text.replace("&", "&amp;")).replace("\n", " ")


def _md_table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = [
        "| " + " | ".join(head) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|",
    ]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def to_markdown(report: WeeklyReport) -> str:
    """Return the report as Markdown (for wikis and Slack)."""
    out = [f"# {md(title(report))}", ""]
    if report.missing:
        out.append("> **Incomplete record:**")
        out += [f"> - {md(m)}" for m in report.missing]
        out.append("")
    out += [f"**{md(headline(report))}**", ""]
    out += _md_table(
        ["", "this week", "last week"], [[md(a), md(b), md(c)] for a, b, c in figure_rows(report)]
    )
    out += ["", "## Why it changed", ""]
    out += _md_table(
        ["driver", "change"],
        [[CAUSE_LABELS[c], md(_signed(report.drivers[c]))] for c in CAUSES]
        + [["**total**", f"**{md(_signed(report.change_usd))}**"]],
    )
    if report.decomposition.other_detail:
        parts = "; ".join(
            f"{md(k)} {md(_signed(v))}"
            for k, v in sorted(report.decomposition.other_detail.items())
        )
        out += ["", f"Other is made of: {parts}."]
    out += ["", "## Regressions", ""]
    if report.regressions:
        out += [f"- **{r.kind}** {md(r.subject)}: {md(r.detail)}" for r in report.regressions]
    else:
        out.append("None this week.")
    out += ["", "## Month", "", md(month_sentence(report))]
    out += ["", "## Top movers"]
    for label, movers in (
        ("model", report.by_model),
        ("workspace", report.by_workspace),
        ("workload", report.by_workload),
    ):
        rows = top_movers(movers)
        out += ["", f"### By {label}", ""]
        if not rows:
            out.append("No change.")
            continue
        out += _md_table(
            [label, "this week", "last week", "change"],
            [
                [md(m.name or "(none)"), md(fmt.usd(m.cost_usd)), md(fmt.usd(m.previous_cost_usd)),
                 md(_signed(m.change_usd))]
                for m in rows
            ],
        )  # fmt: skip
    out += ["", "## Batch operations", ""]
    out += _md_table(
        ["", "this week", "last week"], [[md(a), md(b), md(c)] for a, b, c in batch_rows(report)]
    )
    for label, refs in (("Slowest", report.slowest), ("Most failed", report.most_failed)):
        if refs:
            out += ["", f"{label}:", ""]
            out += [f"- {md(_batch_line(b))}" for b in refs]
    out += ["", "## Alerts that fired", ""]
    if report.alerts:
        for a in report.alerts:
            scope = fmt.scope_text(a.scope)
            out.append(
                f"- {md(fmt.iso(a.at) or '')} **{md(a.rule)}** ({md(a.severity)}, {md(scope)}): "
                f"{md(a.reason or '')}"
            )
    else:
        out.append("None.")
    if report.notes:
        out += ["", "## Notes", ""]
        out += [f"- {md(n)}" for n in report.notes]
    out.append("")
    return "\n".join(out)


# --- HTML -----------------------------------------------------------------------------------

_CSS = """
*{box-sizing:border-box}
body{margin:0;color:#1d2433;background:#f6f7f9;
font:15px/1.45 -apple-system,BlinkMacSystemFont,"Segoe UI",Roboto,Helvetica,Arial,sans-serif}
main{max-width:960px;margin:0 auto;padding:16px}
h1{font-size:1.35em;margin:.2em 0 .4em}
h2{font-size:1.1em;margin:1.6em 0 .5em;border-bottom:1px solid #d8dce3;padding-bottom:.2em}
h3{font-size:1em;margin:1em 0 .4em}
.headline{font-size:1.15em;font-weight:600;margin:.5em 0 1em}
.missing{background:#fff4e5;border-left:4px solid #e08a00;padding:8px 12px;margin:0 0 1em}
.missing ul{margin:.3em 0 0;padding-left:1.2em}
.card{background:#fff;border:1px solid #e1e4ea;border-radius:8px;padding:12px;margin:0 0 12px}
table{width:100%;border-collapse:collapse;table-layout:auto}
th,td{padding:5px 6px;border-bottom:1px solid #eef0f3;vertical-align:top}
th{text-align:left;font-weight:600;color:#4a5568}
td.num,th.num{text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}
td.name{overflow-wrap:anywhere;word-break:break-word}
tr.total td{font-weight:700;border-top:2px solid #c9ced8}
.up{color:#b42318}.down{color:#067647}
ul.reg{padding-left:1.1em;margin:.3em 0}
ul.reg li{margin:.3em 0;overflow-wrap:anywhere}
.kind{font-weight:700}
img.chart{display:block;width:100%;max-width:100%;height:auto;border-radius:6px;background:#fff}
.small{color:#5b6475;font-size:.9em;overflow-wrap:anywhere}
@media (max-width:600px){body{font-size:13px}main{padding:10px}th,td{padding:4px 3px}}
"""


def _h(text: str) -> str:
    return html.escape(text, quote=True)


def _cls(value: Any) -> str:
    if value is None or value == 0:
        return "num"
    return "num up" if value > 0 else "num down"


def _html_rows(rows: Sequence[tuple[str, str, str]]) -> str:
    return "".join(
        f'<tr><td class="name">{_h(a)}</td><td class="num">{_h(b)}</td>'
        f'<td class="num">{_h(c)}</td></tr>'
        for a, b, c in rows
    )


def to_html(report: WeeklyReport, chart: bytes | None = None) -> str:
    """Return the report as one self-contained HTML page (inline CSS, chart embedded)."""
    from monitor.report.chart import HEIGHT, WIDTH

    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_h(title(report))}</title><style>{_CSS}</style></head><body><main>",
        f"<h1>{_h(title(report))}</h1>",
    ]
    if report.missing:
        items = "".join(f"<li>{_h(m)}</li>" for m in report.missing)
        parts.append(
            '<div class="missing" id="missing"><strong>Incomplete record:</strong>'
            f"<ul>{items}</ul></div>"
        )
    parts.append(f'<p class="headline" id="headline">{_h(headline(report))}</p>')
    parts.append(
        f'<div class="card"><table id="totals" data-total-usd="{fmt.money_json(report.total_usd)}" '
        f'data-change-usd="{fmt.money_json(report.change_usd)}"><thead><tr><th></th>'
        '<th class="num">this week</th><th class="num">last week</th></tr></thead><tbody>'
        f"{_html_rows(figure_rows(report))}</tbody></table></div>"
    )
    if chart is not None:
        data = base64.b64encode(chart).decode()
        parts.append(
            f'<div class="card"><img class="chart" id="chart" width="{WIDTH}" height="{HEIGHT}" '
            f'alt="Daily spend by tier, both weeks, with the batch share and its target band" '
            f'src="data:image/png;base64,{data}"></div>'
        )
    rows = "".join(
        f'<tr><td class="name">{_h(CAUSE_LABELS[c])}</td>'
        f'<td class="{_cls(report.drivers[c])}">{_h(_signed(report.drivers[c]))}</td></tr>'
        for c in CAUSES
    )
    rows += (
        f'<tr class="total"><td class="name">total change</td>'
        f'<td class="{_cls(report.change_usd)}">{_h(_signed(report.change_usd))}</td></tr>'
    )
    parts.append(f'<h2>Why it changed</h2><div class="card"><table id="drivers">{rows}</table>')
    if report.decomposition.other_detail:
        detail = "; ".join(
            f"{k} {_signed(v)}" for k, v in sorted(report.decomposition.other_detail.items())
        )
        parts.append(f'<p class="small">Other is made of: {_h(detail)}.</p>')
    parts.append('</div><h2>Regressions</h2><div class="card" id="regressions">')
    if report.regressions:
        items = "".join(
            f'<li><span class="kind">{_h(r.kind)}</span> {_h(r.subject)}: {_h(r.detail)}</li>'
            for r in report.regressions
        )
        parts.append(f'<ul class="reg">{items}</ul>')
    else:
        parts.append("<p>None this week.</p>")
    parts.append(
        '</div><h2>Month</h2><div class="card">'
        f'<p id="month">{_h(month_sentence(report))}</p></div>'
    )
    parts.append("<h2>Top movers</h2>")
    for label, movers in (
        ("model", report.by_model),
        ("workspace", report.by_workspace),
        ("workload", report.by_workload),
    ):
        tops = top_movers(movers)
        parts.append(f'<div class="card"><h3>By {label}</h3>')
        if not tops:
            parts.append("<p>No change.</p></div>")
            continue
        body = "".join(
            f'<tr><td class="name">{_h(m.name or "(none)")}</td>'
            f'<td class="num">{_h(fmt.usd(m.cost_usd))}</td>'
            f'<td class="num">{_h(fmt.usd(m.previous_cost_usd))}</td>'
            f'<td class="{_cls(m.change_usd)}">{_h(_signed(m.change_usd))}</td></tr>'
            for m in tops
        )
        parts.append(
            f'<table id="movers-{label}"><thead><tr><th>{label}</th><th class="num">this week</th>'
            f'<th class="num">last week</th><th class="num">change</th></tr></thead>'
            f"<tbody>{body}</tbody></table></div>"
        )
    parts.append(
        '<h2>Batch operations</h2><div class="card"><table id="batches"><thead><tr><th></th>'
        '<th class="num">this week</th><th class="num">last week</th></tr></thead>'
        f"<tbody>{_html_rows(batch_rows(report))}</tbody></table>"
    )
    for label, refs in (("Slowest", report.slowest), ("Most failed", report.most_failed)):
        if refs:
            items = "".join(f"<li>{_h(_batch_line(b))}</li>" for b in refs)
            parts.append(f'<h3>{label}</h3><ul class="reg small">{items}</ul>')
    parts.append('</div><h2>Alerts that fired</h2><div class="card">')
    if report.alerts:
        items = "".join(
            f"<li>{_h(fmt.iso(a.at) or '')} <strong>{_h(a.rule)}</strong> ({_h(a.severity)}, "
            f"{_h(fmt.scope_text(a.scope))}): {_h(a.reason or '')}</li>"
            for a in report.alerts
        )
        parts.append(f'<ul class="reg small">{items}</ul>')
    else:
        parts.append("<p>None.</p>")
    parts.append("</div>")
    if report.notes:
        items = "".join(f"<li>{_h(n)}</li>" for n in report.notes)
        parts.append(f'<h2>Notes</h2><div class="card"><ul class="reg small">{items}</ul></div>')
    parts.append(
        f'<p class="small">Generated {_h(fmt.iso(report.generated_at) or "")} by batch-monitor. '
        f"Weeks run Monday 00:00 to Monday 00:00 in {_h(report.week.tz)}.</p>"
    )
    parts.append("</main></body></html>\n")
    return "\n".join(parts)


# --- CSV ------------------------------------------------------------------------------------

CSV_COLUMNS = (
    "week_start", "model", "workspace", "tier", "requests",
    *(f"{k}_tokens" for k in TOKEN_KINDS), "web_searches", "cost_usd",
)  # fmt: skip


def _cell(text: str) -> str:
    # A cell starting with = + - @ (or a tab/CR) runs as a formula in spreadsheets (OWASP
    # "CSV injection"); upstream names are not trusted, so such names get a leading quote.
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def to_csv(report: WeeklyReport) -> str:
    """Return one row per (week, model, workspace, tier), both weeks, for spreadsheets."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in report.csv_rows:
        c = r.cell
        writer.writerow(
            [
                r.week_start.isoformat(),
                _cell(r.model),
                _cell(r.workspace),
                r.tier,
                "" if c.requests is None else c.requests,
                *(c.tokens[k] for k in TOKEN_KINDS),
                c.web_searches,
                fmt.money_json(c.cost_usd) or "",
            ]
        )
    return out.getvalue()


def render(report: WeeklyReport, form: str, chart: bytes | None = None) -> str:
    """Return the report in ``form`` (md, html, json or csv)."""
    if form == "md":
        return to_markdown(report)
    if form == "html":
        return to_html(report, chart)
    if form == "json":
        return to_json(report)
    if form == "csv":
        return to_csv(report)
    raise ValueError(f"unknown report format {form!r} (use one of {', '.join(FORMATS)})")


# --- Slack ----------------------------------------------------------------------------------

_HEADER_MAX = 150
_TEXT_MAX = 2900


def _clip(text: str, limit: int = _TEXT_MAX) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _mrkdwn_clip(escaped: str) -> str:
    """Cut escaped mrkdwn to a section's length, never inside an entity (see clip_mrkdwn)."""
    from monitor.notifiers.slack import clip_mrkdwn

    return clip_mrkdwn(escaped, _TEXT_MAX)


def slack_text(report: WeeklyReport) -> str:
    """Return the notification text (push notifications, clients without blocks)."""
    return _mrkdwn_clip(escape_mrkdwn(f"{title(report)}: {headline(report)}"))


def slack_blocks(report: WeeklyReport, *, files_note: str) -> list[dict[str, Any]]:
    """Build the Block Kit summary: totals, the top drivers, the regressions, what is missing."""
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": _clip(title(report), _HEADER_MAX)},
        }
    ]
    if report.missing:
        text = ":warning: *Incomplete record:*\n" + "\n".join(
            f"• {escape_mrkdwn(m)}" for m in report.missing
        )
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _mrkdwn_clip(text)}})
    cur = report.current.spend
    fields = [
        f"*This week*\n{escape_mrkdwn(fmt.usd(report.total_usd))} "
        f"({escape_mrkdwn(_signed(report.change_usd))})",
        f"*Last week*\n{escape_mrkdwn(fmt.usd(report.previous_total_usd))}",
        f"*Batch share*\n{fmt.percent(cur.batch_share_requests, digits=1)} of requests, "
        f"{fmt.percent(cur.batch_share_spend, digits=1)} of spend (target {band()})",
        f"*Saved by batching*\n{escape_mrkdwn(fmt.usd(cur.batch_savings_usd))}; still missed "
        f"{escape_mrkdwn(fmt.usd(report.missed_savings_weekly_usd))}",
    ]
    blocks.append({"type": "section", "fields": [{"type": "mrkdwn", "text": f} for f in fields]})
    ranked = sorted((c for c in CAUSES if report.drivers[c]), key=lambda c: -abs(report.drivers[c]))
    why = "\n".join(
        f"• {CAUSE_LABELS[c]}: *{escape_mrkdwn(_signed(report.drivers[c]))}*" for c in ranked[:4]
    )
    blocks.append(
        {
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": _mrkdwn_clip("*Why it changed*\n" + (why or "No change.")),
            },
        }
    )
    if report.regressions:
        lines = "\n".join(
            f"• *{r.kind}* {escape_mrkdwn(r.subject)}: {escape_mrkdwn(r.detail)}"
            for r in report.regressions
        )
        text = f"*Regressions ({len(report.regressions)})*\n{lines}"
    else:
        text = "*Regressions*\nNone this week."
    blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _mrkdwn_clip(text)}})
    blocks.append(
        {
            "type": "context",
            "elements": [
                {
                    "type": "mrkdwn",
                    "text": _mrkdwn_clip(
                        escape_mrkdwn(month_sentence(report)) + " · " + escape_mrkdwn(files_note)
                    ),
                }
            ],
        }
    )
    return blocks
