"""``batch-monitor advise`` and ``audit``: which real-time workloads should move to batch."""

from __future__ import annotations

from typing import Any

import typer

from monitor.cli import (
    UsageError,
    app,
    handle_errors,
    load_settings,
    make_console,
    open_db,
    parse_span,
    print_json,
    safe,
)

# Bad lines printed by `audit` before it only counts them (a broken 2 GB log must not flood).
AUDIT_MAX_PRINTED_BAD_LINES = 100


@app.command("advise")
@handle_errors
def advise_command(
    window: str | None = typer.Option(
        None, "--window", help="How far back to look, e.g. 30d or 12h (default: [advisor] window)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the recommendations as JSON."),
) -> None:
    """Advise which real-time workloads to move to the Message Batches API (from the database)."""
    from monitor import advisor, clock, db

    settings = load_settings()
    span = settings.advisor.window if window is None else parse_span(window, "--window")
    engine = open_db(settings, readonly=True)
    with db.session_scope(engine) as session:
        recs = advisor.advise(session, clock.utcnow(), settings, window=span)
    _print_advice(
        recs,
        as_json,
        "no real-time traffic in the window: collect call logs ([collect] call_logs) "
        "or the usage report first",
    )


@app.command("audit")
@handle_errors
def audit_command(
    files: list[str] = typer.Argument(..., help="Call-log JSONL files.", metavar="FILE..."),
    workloads: str | None = typer.Option(
        None,
        "--workloads",
        help="A TOML file of [[workloads]] declarations (default: those in monitor.toml).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the recommendations as JSON."),
) -> None:
    """Advise from call-log files directly, without a database."""
    import os

    from monitor import advisor
    from monitor.pricing import PriceBook
    from monitor.workloads import load_file

    settings = load_settings()
    declared = settings.workloads
    if workloads is not None:
        declared = load_file(workloads)
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
        raise UsageError(f"no such file: {', '.join(missing)}")
    bad = 0

    def on_bad_line(line: Any) -> None:
        nonlocal bad
        bad += 1
        if bad <= AUDIT_MAX_PRINTED_BAD_LINES:
            typer.echo(f"batch-monitor: bad line skipped: {line}", err=True)

    recs = advisor.audit_files(
        files,
        declared,
        book=PriceBook.load(settings.prices),
        min_monthly_savings=settings.advisor.min_monthly_savings,
        on_bad_line=on_bad_line,
    )
    if bad:
        shown = min(bad, AUDIT_MAX_PRINTED_BAD_LINES)
        typer.echo(
            f"batch-monitor: {bad} bad line(s) skipped ({shown} shown); the rest was read",
            err=True,
        )
    _print_advice(recs, as_json, "no calls in these files")


def _print_advice(recs: list[Any], as_json: bool, empty: str) -> None:
    """Print recommendations as JSON or as a table followed by the reasons."""
    if as_json:
        print_json([r.to_json() for r in recs])
        return
    if not recs:
        typer.echo(empty)
        return
    from rich.table import Table

    from monitor import fmt

    def num(value: float | None) -> str:
        return f"{value:,.0f}" if value is not None else "-"

    def latency(r: Any) -> str:
        if r.max_latency_minutes is None:
            text = "user-facing" if r.user_facing else "?"
        elif r.max_latency_minutes >= 60:
            text = f"{r.max_latency_minutes / 60:g} h"
        else:
            text = f"{r.max_latency_minutes:g} min"
        return f"{text} ({r.latency_source})"

    table = Table(title="Real-time workloads: move to the Message Batches API?")
    table.add_column("workload")
    table.add_column("model")
    for name in ("req/day", "in/req", "out/req", "now $/mo", "plan $/mo", "saves $/mo"):
        table.add_column(name, justify="right")
    table.add_column("advice")
    table.add_column("max latency")
    for r in recs:
        table.add_row(
            safe(r.workload),
            safe(r.model),
            num(r.requests_per_day),
            num(r.input_tokens_per_request),
            num(r.output_tokens_per_request),
            fmt.usd(r.monthly_standard_usd),
            fmt.usd(r.monthly_batch_usd),
            fmt.usd(r.monthly_savings_usd),
            r.recommendation,
            latency(r),
        )
    console = make_console()
    console.print(table)
    for r in recs:
        console.print(
            fmt.terminal(f"{r.workload}: {r.recommendation}: {r.reason}"),
            markup=False,
            highlight=False,
        )
