"""``batch-monitor report weekly``: last week's cost, what changed against the week before, why."""

from __future__ import annotations

from pathlib import Path

import typer

from monitor.cli import (
    MAX_DATE,
    MIN_DATE,
    UsageError,
    app,
    fail,
    handle_errors,
    load_settings,
    open_db,
    shown_error,
)

report_app = typer.Typer(help="Cost reports: what Claude cost, what changed and why.",
                         no_args_is_help=True)  # fmt: skip
app.add_typer(report_app, name="report")


@report_app.command("weekly")
@handle_errors
def weekly(
    week_start: str | None = typer.Option(
        None,
        "--week-start",
        metavar="YYYY-MM-DD",
        help="The Monday the week starts on, in [report] timezone (default: the last complete "
        "week).",
    ),
    form: str = typer.Option("md", "--format", help="md, html, json or csv."),
    out: Path | None = typer.Option(
        None,
        "--out",
        metavar="DIR",
        help="Write DIR/weekly-<week_start>.<format> and the chart's PNG there, print the paths "
        "(default: print the report).",
    ),
    post: bool = typer.Option(
        False,
        "--post",
        help="Also post it to Slack (once per week: not if the daemon or an earlier --post did).",
    ),
) -> None:
    """Report one week's Claude spend against the week before: totals, drivers, regressions."""
    import sys

    from monitor import clock, db, fmt
    from monitor.logs import setup_logging
    from monitor.report import (
        WeekError,
        build_weekly,
        chart_png,
        default_holder,
        deliver_week,
        last_complete_week,
        parse_week_start,
        render,
        write_files,
    )
    from monitor.report.render import FORMATS

    if form not in FORMATS:
        raise UsageError(f"--format: {form!r} is not one of {', '.join(FORMATS)}")
    settings = load_settings()
    setup_logging(settings.log_level, settings.secrets())
    now = clock.utcnow()
    tz = settings.report.timezone
    if week_start is None:
        week = last_complete_week(now, tz)
    else:
        try:
            week = parse_week_start(week_start, tz)
        except WeekError as exc:
            raise UsageError(f"--week-start: {shown_error(exc)}") from None
        # Before any arithmetic on it: the week before year 1 is not a date.
        if not MIN_DATE.date() <= week.start_date <= MAX_DATE.date():
            raise UsageError(
                f"--week-start: {week.start_date.isoformat()} is outside the years 2000 to 2999"
            )
        if week.start > now:
            raise UsageError(
                f"--week-start: the week of {week.start_date.isoformat()} has not started yet "
                f"(it starts {fmt.iso(week.start)})"
            )
    engine = open_db(settings)
    with db.session_scope(engine) as session:
        report = build_weekly(session, week, now, settings)
        outcome = None
        if post:
            outcome = deliver_week(
                session, week, now, settings, holder=f"cli:{default_holder()}", out_dir=out,
                forms=(form,), report=report,
            )  # fmt: skip
    if out is not None:
        paths = (
            outcome.paths
            if outcome is not None and outcome.paths
            else write_files(report, out, (form,))
        )
        for path in paths:
            typer.echo(str(path))
    else:
        chart = chart_png(report) if form == "html" else None
        sys.stdout.write(render(report, form, chart))
    if outcome is None:
        return
    if outcome.status == "delivered":
        typer.echo(f"posted the report of {outcome.week_start} to Slack", err=True)
    elif outcome.status == "already_delivered":
        typer.echo(
            f"the report of {outcome.week_start} was already delivered: not posted again",
            err=True,
        )
    elif outcome.status == "claimed_elsewhere":
        fail(f"another process is delivering the report of {outcome.week_start} right now")
    else:
        fail(f"posting the report of {outcome.week_start} failed: {outcome.error} (it will be "
             "retried by the daemon, or run this again)")  # fmt: skip
