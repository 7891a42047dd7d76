"""``batch-monitor check``, ``alerts``, ``notify-test`` and ``silence``: the alerting commands."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import typer

from monitor.cli import (
    UsageError,
    app,
    fail,
    handle_errors,
    load_settings,
    open_db,
    parse_span,
    parse_when,
    print_json,
    say,
)

# How far ahead of this machine's clock an --at may be (clocks of two hosts disagree a little).
CLOCK_SKEW = timedelta(minutes=1)

silence_app = typer.Typer(
    help="Silence alerts whose labels match, for a while.", no_args_is_help=True
)
app.add_typer(silence_app, name="silence")


@app.command("check")
@handle_errors
def check(
    at: str | None = typer.Option(
        None, "--at", metavar="TIMESTAMP", help="Evaluate as of this UTC time (replay history)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Evaluate every rule once, record alert transitions, and deliver queued notifications."""
    from monitor import alerts, clock, db, fmt, notifiers, rules
    from monitor.logs import setup_logging
    from monitor.notifiers import delivery

    settings = load_settings()
    setup_logging(settings.log_level, settings.secrets())
    now = clock.utcnow()
    if at:
        when = parse_when(at, "--at")
        # Evaluating in the future would send real messages about a time that has not come.
        if when > now + CLOCK_SKEW:
            raise UsageError(
                f"--at {fmt.iso(when)} is in the future (now {fmt.iso(now)}); "
                "--at replays past times only"
            )
        now = when
    rule_list = rules.load_rules(settings)
    engine = open_db(settings)
    with db.session_scope(engine) as session:
        results = alerts.evaluate_all(session, now, rule_list, settings=settings)
        report = delivery.deliver_pending(
            session,
            now,
            notifiers.from_settings(settings),
            delivery.default_worker_id(),
            claim_timeout=settings.alerting.claim_timeout,
            max_backoff=settings.alerting.max_backoff,
            warn_after_attempts=settings.slack.max_attempts,
        )
    if as_json:
        print_json([r.as_json() for r in results])
    else:
        typer.echo(f"{len(results)} alert(s) evaluated at {fmt.iso(now)}")
        for r in results:
            event = f", queued {r.event}" if r.event else ""
            say(f"{r.state.upper():8} {r.severity:8} {r.rule} {fmt.scope_text(r.labels)}{event}")
            say(f"         {r.reason}")
        typer.echo(
            f"delivery: {report.delivered} delivered, {report.retrying} retrying, "
            f"{report.failed} failed, {report.suppressed} suppressed, {report.skipped} waiting"
        )
    if any(r.decision == "rule_error" for r in results):
        raise typer.Exit(1)


@app.command("alerts")
@handle_errors
def alerts_command(
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List every alert's current state, value, and the delivery of its latest message."""
    from monitor import alerts, db, fmt

    settings = load_settings()
    engine = open_db(settings, readonly=True)
    with db.session_scope(engine) as session:
        rows = alerts.list_alerts(session)
    if as_json:
        print_json([r.as_json() for r in rows])
        return
    if not rows:
        typer.echo("no alerts yet (run: batch-monitor check)")
    for r in rows:
        value = r.value_text or ("-" if r.value is None else f"{r.value:g}")
        if r.threshold_text:
            value += f" ({r.threshold_text})"
        since = f" since {fmt.iso(r.since)}" if r.since else ""
        delivery = r.delivery + (f" ({r.delivery_error})" if r.delivery_error else "")
        say(
            f"{r.state.upper():8} {r.severity:8} {r.rule} {fmt.scope_text(r.labels)}: "
            f"{value}{since}; delivery {delivery}"
        )
        say(f"         {r.reason or ''}")


@app.command("notify-test")
@handle_errors
def notify_test(
    channel: str | None = typer.Option(
        None, "--channel", help="Send to this Slack channel instead of the configured ones."
    ),
) -> None:
    """Send a test message through the configured notifiers (Slack, else the log)."""
    from monitor import clock, notifiers
    from monitor.logs import setup_logging
    from monitor.notifiers import delivery, slack

    settings = load_settings()
    setup_logging(settings.log_level, settings.secrets())
    if channel is not None:
        built = slack.from_settings(settings, channel=channel)
        if built is None:
            raise UsageError(
                "--channel needs Slack: set MONITOR_SLACK_BOT_TOKEN (or MONITOR_SLACK_WEBHOOK_URL)"
            )
        targets: list[Any] = [built]
    else:
        targets = notifiers.from_settings(settings)
    message = delivery.notify_test_message(clock.utcnow())
    failed = False
    for notifier in targets:
        try:
            sent = notifier.send(message)
        except notifiers.NotifyError as exc:
            failed = True
            kind = "permanent" if exc.permanent else "transient"
            say(f"{notifier.name}: failed ({kind}): {exc.message}", err=True)
            continue
        typer.echo(f"{notifier.name}: sent" + (f" to {sent.target}" if sent.target else ""))
    if failed:
        raise typer.Exit(1)


@silence_app.command("add")
@handle_errors
def silence_add(
    match: list[str] = typer.Option(
        ..., "--match", metavar="LABEL=VALUE", help="A label to match; repeat to narrow."
    ),
    duration: str = typer.Option(..., "--for", help='How long, like "2h" or "30m".'),
    comment: str = typer.Option("", "--comment", help="Why (shown in listings and logs)."),
) -> None:
    """Silence the alerts whose labels match every --match, from now for --for."""
    from monitor import clock, db, fmt, silences

    matchers: dict[str, str] = {}
    for item in match:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise UsageError(f"--match: {item!r} must look like LABEL=VALUE (rule=cost_drift)")
        matchers[key.strip()] = value.strip()
    length = parse_span(duration, "--for")
    settings = load_settings()
    engine = open_db(settings)
    with db.session_scope(engine) as session:
        silence = silences.add_silence(session, clock.utcnow(), matchers, length, comment)
    typer.echo(f"silence {silence.id} added until {fmt.iso(silence.ends_at)}")


@silence_app.command("list")
@handle_errors
def silence_list(
    show_all: bool = typer.Option(False, "--all", help="Include silences that have ended."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List the silences in force (or all of them)."""
    import orjson

    from monitor import clock, db, fmt, silences

    settings = load_settings()
    engine = open_db(settings, readonly=True)
    now = clock.utcnow()
    with db.session_scope(engine) as session:
        rows = silences.list_silences(session, now, include_expired=show_all)
    data = [
        {
            "id": s.id,
            "matchers": orjson.loads(s.matchers),
            "starts_at": fmt.iso(s.starts_at),
            "ends_at": fmt.iso(s.ends_at),
            "comment": s.comment,
            "active": s.starts_at <= now < s.ends_at,
        }
        for s in rows
    ]
    if as_json:
        print_json(data)
        return
    if not data:
        typer.echo("no silences" + ("" if show_all else " in force"))
    for d in data:
        matchers = " ".join(f"{k}={v}" for k, v in d["matchers"].items())
        state = "active" if d["active"] else "ended"
        line = f"{d['id']}: {matchers} until {d['ends_at']} ({state})"
        say(line + (f" - {d['comment']}" if d["comment"] else ""))


@silence_app.command("expire")
@handle_errors
def silence_expire(
    silence_id: int = typer.Argument(..., metavar="ID", help="The silence to end now."),
) -> None:
    """End a silence now."""
    from monitor import clock, db, silences

    settings = load_settings()
    engine = open_db(settings)
    with db.session_scope(engine) as session:
        ended = silences.expire_silence(session, clock.utcnow(), silence_id)
    if not ended:
        fail(f"no silence {silence_id} in force", 1)
    typer.echo(f"silence {silence_id} expired")
