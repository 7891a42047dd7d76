"""``batch-monitor simulate``: serve the Anthropic API simulator alone, in the foreground."""

from __future__ import annotations

from typing import Any

import typer

from monitor.cli import UsageError, app, handle_errors, parse_when


@app.command("simulate")
@handle_errors
def simulate(
    host: str = typer.Option(
        "127.0.0.1", "--host", help="Address to listen on (0.0.0.0 in a container)."
    ),
    port: int = typer.Option(8765, "--port", help="TCP port (0 picks a free one)."),
    scenario_name: str = typer.Option(
        "org", "--scenario", help="Scenario: org (a rich week), small, or large."
    ),
    speed: float = typer.Option(
        60.0, "--speed", help="Simulated seconds per wall second (0 freezes the clock)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed: the same seed gives the same data."),
    start: str | None = typer.Option(
        None, "--start", help="Scenario start, ISO 8601 (default 2026-11-15T00:00:00Z)."
    ),
    days: float | None = typer.Option(None, "--days", help="Scenario length in days."),
    now: str | None = typer.Option(
        None, "--now", help="Simulated time at launch: ISO 8601, 'start' (default) or 'end'."
    ),
    batch_requests: int | None = typer.Option(
        None, "--batch-requests", help="Requests in the large scenario's batch."
    ),
    faults: list[str] = typer.Option(
        [],
        "--fault",
        help="Inject a fault, KIND[:key=value,...]; repeatable. Kinds: rate_limit, "
        "server_error, overloaded, slow, connection_reset, cut_stream, malformed_line, "
        "repeat_page, skip_page, analytics_refused, price_drift, late_revision, echo_headers "
        "(e.g. rate_limit:times=3,retry_after=2).",
    ),
    call_logs: str | None = typer.Option(
        None,
        "--call-logs",
        help="Append the real-time calls to this JSONL file as simulated time reaches them.",
    ),
) -> None:
    """Serve the Anthropic API simulator in the foreground until Ctrl-C."""
    from pathlib import Path

    from monitor import clock
    from monitor.simulator import SCENARIOS, SimulatorServer, build_scenario, parse_fault

    if scenario_name not in SCENARIOS:
        raise UsageError(f"--scenario: choose one of {', '.join(SCENARIOS)}")
    if speed < 0:
        raise UsageError("--speed: must be 0 or more")
    options: dict[str, Any] = {}
    if batch_requests is not None:
        options["batch_requests"] = batch_requests
    try:
        fault_list = [parse_fault(spec) for spec in faults]
    except ValueError as exc:
        raise UsageError(f"--fault: {exc}") from None
    scenario = build_scenario(
        scenario_name,
        seed=seed,
        start=parse_when(start, "--start") if start else None,
        days=days,
        **options,
    )
    if now in (None, "start"):
        launch = scenario.start
    elif now == "end":
        launch = scenario.end
    else:
        launch = parse_when(now, "--now")
    try:
        server = SimulatorServer(
            scenario, host=host, port=port, now=launch, speed=speed or None, faults=fault_list
        )
    except OSError as exc:
        raise UsageError(f"--port {port}: {exc.strerror or exc}") from None
    server.start()
    first = scenario.workspaces[0]
    typer.echo(
        f"Anthropic API simulator: scenario {scenario.name} (seed {seed}), "
        f"{len(scenario.batches)} batches, {len(scenario.calls)} real-time calls"
    )
    typer.echo(
        f"simulated time {launch.isoformat()} at x{speed:g}; scenario "
        f"{scenario.start.isoformat()} .. {scenario.end.isoformat()}"
    )
    typer.echo("")
    typer.echo(f"export ANTHROPIC_BASE_URL={server.url}")
    typer.echo(f"export ANTHROPIC_ADMIN_KEY={scenario.admin_key}")
    typer.echo(f"export ANTHROPIC_API_KEY={first.api_key}   # workspace {first.id}")
    for ws in scenario.workspaces:
        suffix = ws.id.removeprefix("wrkspc_").upper()
        typer.echo(f"export ANTHROPIC_API_KEY_{suffix}={ws.api_key}   # {ws.id} ({ws.name})")
    typer.echo("")
    typer.echo("# monitor.toml, to watch every workspace:")
    for ws in scenario.workspaces:
        suffix = ws.id.removeprefix("wrkspc_").upper()
        default = "true" if ws.id == scenario.default_workspace.id else "false"
        typer.echo(
            f'[[workspaces]]\nid = "{ws.id}"\nname = "{ws.name}"\n'
            f'api_key_env = "ANTHROPIC_API_KEY_{suffix}"\ndefault = {default}'
        )
    for fault in fault_list:
        typer.echo(f"fault: {fault.kind}")
    typer.echo("\nServing; press Ctrl-C to stop.")
    logged_until = None
    if call_logs:
        Path(call_logs).touch()
    try:
        while True:
            if call_logs:
                # Append only what simulated time has reached, like a live application log.
                sim_now = server.now()
                scenario.write_call_logs(call_logs, start=logged_until, end=sim_now, append=True)
                logged_until = sim_now
            clock.sleep(0.5)
    except KeyboardInterrupt:
        typer.echo("stopping")
    finally:
        server.close()
