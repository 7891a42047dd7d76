"""``batch-monitor collect`` and ``batches``: run the collectors, list what they recorded."""

from __future__ import annotations

from typing import Any

import typer

from monitor.cli import (
    UsageError,
    app,
    check_range,
    handle_errors,
    load_settings,
    make_console,
    open_db,
    parse_when,
    print_json,
    safe,
    say,
)

SOURCE_NAMES = ("batches", "usage", "cost", "logs")


@app.command("collect")
@handle_errors
def collect(
    source: str = typer.Option(
        "all", "--source", help="batches | usage | cost | logs | all (every configured one)."
    ),
    retry_failed: bool = typer.Option(
        False,
        "--retry-failed",
        help="Read the results of batches whose reads failed now, not at their next slow "
        "retry (hourly, growing to daily, until the batch is archived).",
    ),
) -> None:
    """Run the named collectors once and print what they recorded (exit 1 if one failed)."""
    from monitor import clock, db, sources
    from monitor.collect import collect_source
    from monitor.logs import setup_logging
    from monitor.sources.batches import BatchesSource

    if source not in (*SOURCE_NAMES, "all"):
        raise UsageError(f"--source: {source!r} is not one of {', '.join(SOURCE_NAMES)}, all")
    if retry_failed and source not in ("batches", "all"):
        raise UsageError(f"--retry-failed reads batch results: not with --source {source}")
    settings = load_settings()
    setup_logging(settings.log_level, settings.secrets())
    engine = open_db(settings)
    names = list(SOURCE_NAMES) if source == "all" else [source]
    built = []
    for name in names:
        src = sources.build(name, settings)
        if src is None:
            if source != "all":
                raise UsageError(
                    f"source {name!r} is not configured: it needs {sources.requirement(name)}"
                )
            typer.echo(f"{name}: skipped (not configured: needs {sources.requirement(name)})")
            continue
        if isinstance(src, BatchesSource):
            src.retry_failed = retry_failed
        built.append(src)
    if not built:
        raise UsageError("no source is configured; see monitor.example.toml")
    failed = False
    for src in built:
        with db.session_scope(engine) as session:
            result = collect_source(src, session, clock.utcnow(), settings.secrets())
        run = result.run
        line = f"{run.source}: {run.status}, {run.items} item(s), {run.api_calls} API call(s)"
        if run.bad_lines:
            line += f", {run.bad_lines} bad line(s)"
        say(line)
        for note in result.stats.notes:
            say(f"  {note}")
        if not result.ok:
            failed = True
            say(f"  error: {run.error}", err=True)
    if failed:
        raise typer.Exit(1)


@app.command("batches")
@handle_errors
def batches(
    since: str | None = typer.Option(None, "--since", help="Created at or after (UTC)."),
    until: str | None = typer.Option(None, "--until", help="Created before (UTC)."),
    status: str | None = typer.Option(
        None, "--status", help="in_progress | canceling | ended (the API's processing_status)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List recorded batches, newest first: size, outcome, turnaround and cost."""
    from monitor import db
    from monitor.summary import list_batches

    if status is not None and status not in ("in_progress", "canceling", "ended"):
        raise UsageError(f"--status: {status!r} is not one of in_progress, canceling, ended")
    lo = parse_when(since, "--since") if since else None
    hi = parse_when(until, "--until") if until else None
    check_range(lo, hi)
    settings = load_settings()
    engine = open_db(settings, readonly=True)
    with db.session_scope(engine) as session:
        data = [row.to_json() for row in list_batches(session, since=lo, until=hi, status=status)]
    if as_json:
        print_json(data)
        return
    _print_batches(data)


def _print_batches(data: list[dict[str, Any]]) -> None:
    from rich.table import Table

    from monitor import fmt

    table = Table(title=f"{len(data)} batch(es)")
    for name in (
        "id",
        "workspace",
        "workload",
        "status",
        "requests",
        "failed %",
        "turnaround",
        "cost",
        "standard",
        "saved",
    ):
        table.add_column(
            name,
            justify="right" if name not in ("id", "workspace", "workload", "status") else "left",
        )
    for d in data:
        rate = d["failure_rate"]
        table.add_row(
            safe(d["id"]),
            safe(d["workspace"]),
            safe(d["workload"] or "-"),
            d["status"] + (" (archived)" if d["archived"] else ""),
            str(d["requests"]),
            f"{rate * 100:.2f}" if rate is not None else "-",
            fmt.minutes(d["turnaround_seconds"]),
            fmt.usd(d["cost_usd"]),
            fmt.usd(d["standard_cost_usd"]),
            fmt.usd(d["savings_usd"]),
        )
    make_console().print(table)
