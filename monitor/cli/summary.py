"""``batch-monitor summary``: real-time versus batch spend and batch health over a window."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from monitor.cli import (
    UsageError,
    app,
    handle_errors,
    load_settings,
    make_console,
    open_db,
    parse_window,
    print_json,
    safe,
)

if TYPE_CHECKING:
    from sqlmodel import Session

    from monitor.config import Settings
    from monitor.summary import Summary


@app.command("summary")
@handle_errors
def summary(
    since: str | None = typer.Option(
        None, "--since", metavar="DATE", help="Window start, YYYY-MM-DD or ISO time (UTC)."
    ),
    until: str | None = typer.Option(
        None, "--until", metavar="DATE", help="Window end, exclusive (default: now)."
    ),
    window: str | None = typer.Option(
        None, "--window", help="Window length ending now, e.g. 7d or 24h (default 7d)."
    ),
    workspace: str | None = typer.Option(
        None,
        "--workspace",
        help="Only this workspace: its configured name or id, or an id the store has figures for.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show real-time versus batch spend, batch health and billed cost over a window."""
    from monitor import clock, db
    from monitor.summary import build_summary

    now = clock.utcnow()
    lo, hi = parse_window(since, until, window, now)
    settings = load_settings()
    engine = open_db(settings, readonly=True)
    with db.session_scope(engine) as session:
        if workspace is not None:
            workspace = _workspace_id(settings, session, workspace)
        result = build_summary(session, lo, hi, now, workspace)
    if as_json:
        print_json(result.to_json())
        return
    _print_summary(result)


def _workspace_id(settings: Settings, session: Session, given: str) -> str:
    """Return the workspace id ``given`` names; refuse one nobody knows (no silent $0.00)."""
    from monitor.summary import recorded_workspaces

    configured = settings.resolve_workspace(given)
    if configured is not None:
        return configured
    known = recorded_workspaces(session)
    if given in known:
        return given
    names = sorted({*(f"{w.name} ({w.id})" for w in settings.workspaces), *known})
    raise UsageError(
        f"--workspace: {given!r} is not a configured workspace name or id, nor a workspace "
        "the store has figures for" + (f"; known: {', '.join(names)}" if names else "")
    )


def _print_summary(s: Summary) -> None:
    from rich.panel import Panel
    from rich.table import Table

    from monitor import fmt
    from monitor.summary import printed_total

    spend, b = s.spend, s.batches
    where = f" (workspace {s.workspace})" if s.workspace else ""
    lines = [
        f"real-time {fmt.usd(spend.realtime_cost_usd)}   batch {fmt.usd(spend.batch_cost_usd)}   "
        f"total {fmt.usd(printed_total(spend.realtime_cost_usd, spend.batch_cost_usd))}   "
        f"saved by batching {fmt.usd(spend.batch_savings_usd)}",
        f"batch share: {fmt.percent(spend.batch_share_requests, digits=1)} of requests, "
        f"{fmt.percent(spend.batch_share_spend, digits=1)} of spend",
        f"batches ended {b.batches_ended}, in progress {s.batches_in_progress}; "
        f"failed {fmt.percent(b.failure_rate, digits=1)}, "
        f"expired {fmt.percent(b.expired_rate, digits=1)}; "
        f"turnaround p50 {fmt.minutes(b.turnaround_p50_seconds)}, "
        f"p95 {fmt.minutes(b.turnaround_p95_seconds)}",
        f"billed {fmt.usd(s.billed_cost_usd)}, computed vs billed drift "
        f"{fmt.percent(s.cost_drift_ratio, digits=1)}",
    ]
    console = make_console()
    console.print(
        Panel(
            fmt.terminal("\n".join(lines)),
            title=f"{fmt.iso(s.since)} .. {fmt.iso(s.until)}{fmt.terminal(where)}",
        ),
        markup=False,
        highlight=False,
    )
    for rows, title in ((s.by_model, "model"), (s.by_workspace, "workspace")):
        if not rows:
            continue
        table = Table(title=f"by {title}")
        table.add_column(title)
        for name in ("real-time", "batch", "total", "saved"):
            table.add_column(name, justify="right")
        for r in rows:
            table.add_row(
                safe(r.name or "(none)"),
                fmt.usd(r.realtime_cost_usd),
                fmt.usd(r.batch_cost_usd),
                fmt.usd(printed_total(r.realtime_cost_usd, r.batch_cost_usd)),
                fmt.usd(r.savings_usd),
            )
        console.print(table)
    for name, source in s.sources.items():
        console.print(f"source {name}: {source or '-'}", markup=False, highlight=False)
    for note in s.notes:
        console.print(f"note: {fmt.terminal(note)}", markup=False, highlight=False)
