"""The ``batch-monitor`` command line: every command is a thin call into the modules.

Exit codes: 0 ok, 1 a failure (unreachable database, a source that failed), 2 bad usage or
configuration. Errors print one clear line; ``--debug`` adds the traceback. Heavy imports (the
Anthropic SDK alone costs over a second) happen inside commands so ``--help`` stays instant.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from datetime import datetime
from typing import Any, NoReturn, TypeVar

import typer

from monitor import __version__

app = typer.Typer(
    name="batch-monitor",
    help="Watch Claude Message Batches versus real-time spend: collect, alert, advise.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
db_app = typer.Typer(help="Database schema commands.", no_args_is_help=True)
config_app = typer.Typer(help="Configuration commands.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(config_app, name="config")

_state: dict[str, Any] = {"debug": False}

F = TypeVar("F", bound=Callable[..., Any])


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit code 2."""


def fail(message: str, code: int = 1) -> NoReturn:
    """Print ``message`` to stderr and exit with ``code``."""
    typer.echo(f"batch-monitor: {message}", err=True)
    raise typer.Exit(code)


def handle_errors(func: F) -> F:
    """Turn the project's known exceptions into one-line messages and exit codes."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from monitor.config import ConfigError
        from monitor.db import DatabaseError

        try:
            return func(*args, **kwargs)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except ConfigError as exc:
            _maybe_trace()
            fail(str(exc), 2)
        except UsageError as exc:
            _maybe_trace()
            fail(str(exc), 2)
        except DatabaseError as exc:
            _maybe_trace()
            fail(str(exc), exc.exit_code)
        except KeyboardInterrupt:
            fail("interrupted", 130)
        except Exception as exc:  # anything unexpected: one line unless --debug
            _maybe_trace()
            fail(f"{type(exc).__name__}: {exc} (run with --debug for the traceback)", 1)

    return wrapper  # type: ignore[return-value]


def _maybe_trace() -> None:
    if _state["debug"]:
        import traceback

        traceback.print_exc()


def make_console() -> Any:
    """Return a rich Console: the terminal's width, or a wide fixed one when piped."""
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 200)


def print_json(data: Any) -> None:
    """Print ``data`` as indented JSON (Decimals must already be strings)."""
    import orjson

    sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"batch-monitor {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors."),
) -> None:
    """Watch Claude Message Batches versus real-time spend: collect, alert, advise."""
    _state["debug"] = debug


def load_settings() -> Any:
    """Load and validate the configuration (raises ConfigError with every problem)."""
    from monitor.config import load_settings as _load

    return _load()


def open_db(settings: Any, *, migrated: bool = True) -> Any:
    """Return an engine for the configured database, checked reachable (and migrated)."""
    from monitor import db

    engine = db.make_engine(settings.database_url)
    if migrated:
        db.require_migrated(engine)
    else:
        db.check_reachable(engine)
    return engine


# --- db ----------------------------------------------------------------------------------


@db_app.command("upgrade")
@handle_errors
def db_upgrade(
    revision: str = typer.Argument("head", help="Target revision (default: the newest)."),
) -> None:
    """Apply the database migrations (creates the schema on a new database)."""
    from monitor import db

    settings = load_settings()
    engine = open_db(settings, migrated=False)
    before = db.current_revision(engine)
    db.upgrade(engine, revision)
    after = db.current_revision(engine)
    where = db.redact_url(settings.database_url)
    if before == after:
        typer.echo(f"{where}: already at revision {after}")
    else:
        typer.echo(f"{where}: upgraded {before or 'empty'} -> {after}")


@db_app.command("downgrade")
@handle_errors
def db_downgrade(
    revision: str = typer.Argument(..., help="Target revision, or 'base' to drop everything."),
) -> None:
    """Revert the database migrations down to REVISION."""
    from monitor import db

    settings = load_settings()
    engine = open_db(settings, migrated=False)
    db.downgrade(engine, revision)
    typer.echo(f"{db.redact_url(settings.database_url)}: at revision {db.current_revision(engine)}")


@db_app.command("status")
@handle_errors
def db_status() -> None:
    """Show the database's migration revision and the one this version needs."""
    from monitor import db

    settings = load_settings()
    engine = open_db(settings, migrated=False)
    current, head = db.current_revision(engine), db.head_revision()
    typer.echo(f"database: {db.redact_url(settings.database_url)}")
    typer.echo(f"revision: {current or 'none (run: batch-monitor db upgrade)'}")
    typer.echo(f"needed:   {head}")
    if current != head:
        raise typer.Exit(1)


# --- config ------------------------------------------------------------------------------


@config_app.command("check")
@handle_errors
def config_check(
    as_json: bool = typer.Option(False, "--json", help="Print the effective config as JSON."),
) -> None:
    """Validate the configuration and print it with secrets masked (exit 2 when invalid)."""
    settings = load_settings()
    data = settings.masked()
    if as_json:
        print_json(data)
        return
    typer.echo(f"configuration OK ({data['config_file'] or 'no config file; defaults and env'})")
    for key, value in data.items():
        if key == "config_file":
            continue
        typer.echo(f"{key} = {_render(value)}")


def _render(value: Any) -> str:
    import orjson

    return orjson.dumps(value).decode() if not isinstance(value, str) else value


# --- commands added by feature modules go below, one section each --------------------------

# [pricing commands]


@app.command("price")
@handle_errors
def price(
    model: str = typer.Option(
        ..., "--model", "-m", help="Model id, e.g. claude-sonnet-4-6 (aliases, dated ids work)."
    ),
    input_tokens: int = typer.Option(
        ..., "--input-tokens", help="Uncached input tokens, total over --requests."
    ),
    output_tokens: int = typer.Option(
        ..., "--output-tokens", help="Output tokens, total over --requests."
    ),
    cache_read_tokens: int = typer.Option(0, "--cache-read-tokens", help="Cache read tokens."),
    cache_write_5m_tokens: int = typer.Option(
        0, "--cache-write-5m-tokens", help="5-minute cache write tokens."
    ),
    cache_write_1h_tokens: int = typer.Option(
        0, "--cache-write-1h-tokens", help="1-hour cache write tokens."
    ),
    web_searches: int = typer.Option(0, "--web-searches", help="Web search calls."),
    requests: int = typer.Option(
        1, "--requests", help="Requests the totals cover; size tiers use the per-request average."
    ),
    batch: bool = typer.Option(False, "--batch", help="Report cost_usd at batch prices (50 %)."),
    at: str | None = typer.Option(
        None, "--at", metavar="YYYY-MM-DD", help="Price on this UTC date (default: today)."
    ),
    inference_geo: str | None = typer.Option(
        None, "--inference-geo", help="'us' for US-only inference (1.1x on Claude 4.6+ models)."
    ),
    context_window: str | None = typer.Option(
        None, "--context-window", help="'0-200k' or '200k-1M', as in usage reports."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show what some usage costs at standard and batch prices, category by category."""
    import re
    from datetime import UTC, date, datetime
    from decimal import Decimal

    from monitor import clock
    from monitor.money import fmt_usd, to_cents
    from monitor.pricing import BREAKDOWN_KEYS, PriceBook, PricingError, Usage

    counts = {
        "--input-tokens": input_tokens,
        "--output-tokens": output_tokens,
        "--cache-read-tokens": cache_read_tokens,
        "--cache-write-5m-tokens": cache_write_5m_tokens,
        "--cache-write-1h-tokens": cache_write_1h_tokens,
        "--web-searches": web_searches,
    }
    for flag, value in counts.items():
        if value < 0:
            raise UsageError(f"{flag} must be 0 or more, got {value}")
    if requests < 1:
        raise UsageError(f"--requests must be 1 or more, got {requests}")
    geo = inference_geo.strip().lower() if inference_geo else None
    if geo not in (None, "us", "global", "not_available"):
        raise UsageError(f"--inference-geo must be us, global or not_available, got {geo!r}")
    window = context_window.strip().lower() if context_window else None
    if window not in (None, "0-200k", "200k-1m"):
        raise UsageError(f"--context-window must be 0-200k or 200k-1M, got {context_window!r}")
    if at is None:
        when = clock.utcnow()
    else:
        try:
            if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", at):
                raise ValueError(at)
            day = date.fromisoformat(at)
        except ValueError:
            raise UsageError(f"--at must be a date as YYYY-MM-DD, got {at!r}") from None
        when = datetime(day.year, day.month, day.day, tzinfo=UTC)

    # Price overrides come from monitor.toml [[prices]]; config validation has already
    # reported any bad entry, so a PricingError here would be a bug surfaced as one line.
    settings = load_settings()
    try:
        book = PriceBook.load(list(getattr(settings, "prices", None) or []))
        usage = Usage(
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cache_read_tokens=cache_read_tokens,
            cache_write_5m_tokens=cache_write_5m_tokens,
            cache_write_1h_tokens=cache_write_1h_tokens,
            web_searches=web_searches,
            requests=requests,
            inference_geo=geo,
            context_window=window,
        )
        cost = book.cost_of(model, usage, when)
    except PricingError as exc:
        raise UsageError(str(exc)) from None

    if not cost.priced:
        typer.echo(
            f"batch-monitor: warning: no price known for model {model!r}; add a [[prices]] "
            'entry to monitor.toml (model = "...", input = ..., output = ..., USD per '
            "million tokens) to price it",
            err=True,
        )

    def rate_text(rate: Decimal) -> str:
        # At least cents, but keep sub-cent rates such as Haiku 5.5's 0.125 exact.
        exact = rate.normalize()
        places = -int(exact.as_tuple().exponent)
        return str(to_cents(rate)) if places <= 2 else format(exact, "f")

    breakdown: dict[str, dict[str, Any]] = {}
    for key in BREAKDOWN_KEYS:
        line = cost.breakdown.get(key)
        breakdown[key] = {
            "quantity": usage.quantity(key),
            "rate_usd_per_mtok": rate_text(line.rate_usd) if line else None,
            "standard_usd": fmt_usd(line.standard_usd) if line else None,
            "batch_usd": fmt_usd(line.batch_usd) if line else None,
        }
    chosen = cost.batch_usd if batch else cost.standard_usd
    data = {
        "model": model,
        "priced": cost.priced,
        "price_id": cost.price_id,
        "tier": cost.tier,
        "at": when.date().isoformat(),
        "requests": requests,
        "standard_usd": fmt_usd(cost.standard_usd),
        "batch_usd": fmt_usd(cost.batch_usd),
        "cost_usd": fmt_usd(chosen),
        "savings_usd": fmt_usd(cost.savings_usd),
        "breakdown": breakdown,
    }
    if as_json:
        print_json(data)
        return
    if not cost.priced:
        typer.echo(f"{model}: unpriced (no price known on {data['at']})")
        return

    from rich.table import Table

    def usd(value: Decimal) -> str:
        return f"${to_cents(value):,}"

    console = make_console()
    # markup=False: a model id like "claude-sonnet-4-5[1m]" is not rich markup.
    header = f"{model} on {data['at']}: price row {cost.price_id}, tier {cost.tier}"
    console.print(header, markup=False, highlight=False, soft_wrap=True)
    table = Table()
    table.add_column("category")
    table.add_column("quantity", justify="right")
    table.add_column("rate (USD)", justify="right")
    table.add_column("standard", justify="right")
    table.add_column("batch", justify="right")
    for key, line in cost.breakdown.items():
        # Skip empty optional categories so the common input/output case stays short.
        if line.quantity == 0 and key not in ("input", "output"):
            continue
        unit = "/1k searches" if key == "web_search" else "/MTok"
        table.add_row(
            key,
            f"{line.quantity:,}",
            rate_text(line.rate_usd) + unit,
            usd(line.standard_usd),
            usd(line.batch_usd),
        )
    assert cost.standard_usd is not None and cost.batch_usd is not None  # priced
    table.add_section()
    table.add_row("total", "", "", usd(cost.standard_usd), usd(cost.batch_usd))
    console.print(table)
    basis = "batch" if batch else "standard"
    console.print(f"cost ({basis}): {usd(cost.batch_usd if batch else cost.standard_usd)}")
    console.print(f"savings at batch prices: {usd(cost.standard_usd - cost.batch_usd)}")


# [simulator commands]


def _sim_time(value: str, option: str) -> datetime:
    """Parse an ISO 8601 time (naive means UTC) for the simulator's options."""
    from datetime import UTC

    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"{option}: {value!r} is not an ISO 8601 timestamp") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


@app.command("simulate")
@handle_errors
def simulate(
    port: int = typer.Option(8765, "--port", help="TCP port on 127.0.0.1 (0 picks a free one)."),
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
        "server_error, overloaded, slow, cut_stream, malformed_line, analytics_refused, "
        "price_drift, late_revision (e.g. rate_limit:times=3,retry_after=2).",
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
    from monitor.scenarios import SCENARIOS, build_scenario
    from monitor.simulator import SimulatorServer, parse_fault

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
        start=_sim_time(start, "--start") if start else None,
        days=days,
        **options,
    )
    if now in (None, "start"):
        launch = scenario.start
    elif now == "end":
        launch = scenario.end
    else:
        launch = _sim_time(now, "--now")
    try:
        server = SimulatorServer(
            scenario, port=port, now=launch, speed=speed or None, faults=fault_list
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
        typer.echo(
            f'[[workspaces]]\nid = "{ws.id}"\nname = "{ws.name}"\n'
            f'api_key_env = "ANTHROPIC_API_KEY_{suffix}"'
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


# [batches commands]


def parse_when(value: str, option: str) -> datetime:
    """Parse ``YYYY-MM-DD`` or an ISO 8601 timestamp as UTC (naive means UTC)."""
    from datetime import UTC

    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"{option}: {value!r} is not a date (YYYY-MM-DD) or an ISO 8601 timestamp"
        ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


SOURCE_NAMES = ("batches", "usage", "cost", "logs")


@app.command("collect")
@handle_errors
def collect(
    source: str = typer.Option(
        "all", "--source", help="batches | usage | cost | logs | all (every configured one)."
    ),
) -> None:
    """Run the named collectors once and print what they recorded (exit 1 if one failed)."""
    from monitor import clock, db, sources
    from monitor.collect import collect_source
    from monitor.logs import setup_logging

    if source not in (*SOURCE_NAMES, "all"):
        raise UsageError(f"--source: {source!r} is not one of {', '.join(SOURCE_NAMES)}, all")
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
        typer.echo(line)
        for note in result.stats.notes:
            typer.echo(f"  {note}")
        if not result.ok:
            failed = True
            typer.echo(f"  error: {run.error}", err=True)
    if failed:
        raise typer.Exit(1)


def batch_json(b: Any, models: list[str]) -> dict[str, Any]:
    """Render one stored batch as the JSON object of the ``batches`` command."""
    from monitor.money import fmt_usd

    ended = b.processing_status == "ended"
    savings = None
    if b.cost_usd is not None and b.standard_cost_usd is not None:
        savings = b.standard_cost_usd - b.cost_usd
    return {
        "id": b.id,
        "workspace": b.workspace_id,
        "workload": b.workload,
        "status": b.processing_status,
        "archived": b.archived_at is not None,
        "requests": b.requests,
        "succeeded": b.succeeded,
        "errored": b.errored,
        "canceled": b.canceled,
        "expired": b.expired,
        "processing": b.processing,
        "created_at": _iso(b.created_at),
        "ended_at": _iso(b.ended_at),
        "turnaround_seconds": b.turnaround_seconds if ended else None,
        "failure_rate": ((b.errored + b.expired) / b.requests) if ended and b.requests else None,
        "input_tokens": b.input_tokens,
        "output_tokens": b.output_tokens,
        "cache_read_tokens": b.cache_read_tokens,
        "cache_write_5m_tokens": b.cache_write_5m_tokens,
        "cache_write_1h_tokens": b.cache_write_1h_tokens,
        "cost_usd": fmt_usd(b.cost_usd),
        "standard_cost_usd": fmt_usd(b.standard_cost_usd),
        "savings_usd": fmt_usd(savings),
        "models": models,
        "results": b.results_state,
    }


def _iso(ts: datetime | None) -> str | None:
    if ts is None:
        return None
    return ts.isoformat().replace("+00:00", "Z")


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
    from sqlmodel import col, select

    from monitor import db
    from monitor.models import Batch, BatchUsage

    if status is not None and status not in ("in_progress", "canceling", "ended"):
        raise UsageError(f"--status: {status!r} is not one of in_progress, canceling, ended")
    lo = parse_when(since, "--since") if since else None
    hi = parse_when(until, "--until") if until else None
    settings = load_settings()
    engine = open_db(settings)
    with db.session_scope(engine) as session:
        conds = []
        if lo is not None:
            conds.append(col(Batch.created_at) >= lo)
        if hi is not None:
            conds.append(col(Batch.created_at) < hi)
        if status is not None:
            conds.append(col(Batch.processing_status) == status)
        stmt = select(Batch).where(*conds)
        rows = list(session.exec(stmt.order_by(col(Batch.created_at).desc(), col(Batch.id).desc())))
        # The models of the selected batches only (same filters), in one query.
        models: dict[str, list[str]] = {}
        per_model = select(BatchUsage.batch_id, BatchUsage.model).join(
            Batch, col(Batch.id) == col(BatchUsage.batch_id)
        )
        for bid, model in session.exec(per_model.where(*conds)):
            models.setdefault(bid, []).append(model)
        data = [batch_json(b, sorted(models.get(b.id, []))) for b in rows]
    if as_json:
        print_json(data)
        return
    _print_batches(data)


def _print_batches(data: list[dict[str, Any]]) -> None:
    from rich.table import Table

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
        secs = d["turnaround_seconds"]
        table.add_row(
            d["id"],
            d["workspace"],
            d["workload"] or "-",
            d["status"] + (" (archived)" if d["archived"] else ""),
            str(d["requests"]),
            f"{rate * 100:.2f}" if rate is not None else "-",
            f"{secs / 60:.1f} min" if secs is not None else "-",
            _usd(d["cost_usd"]),
            _usd(d["standard_cost_usd"]),
            _usd(d["savings_usd"]),
        )
    make_console().print(table)


def _usd(value: str | None) -> str:
    return f"${value}" if value is not None else "-"


# [usage commands]


def summary_window(
    since: str | None, until: str | None, window: str | None, now: datetime
) -> tuple[datetime, datetime]:
    """Resolve the summary options to a half-open UTC window ``[since, until)``."""
    from datetime import timedelta

    from monitor.config import parse_duration

    if window is not None and (since is not None or until is not None):
        raise UsageError("--window cannot be combined with --since/--until")
    span = timedelta(days=7)
    if window is not None:
        try:
            span = parse_duration(window)
        except ValueError as exc:
            raise UsageError(f"--window: {exc}") from None
        if span <= timedelta(0):
            raise UsageError("--window must be longer than 0s")
    hi = parse_when(until, "--until") if until else now
    lo = parse_when(since, "--since") if since else hi - span
    if lo >= hi:
        raise UsageError(f"--since ({_iso(lo)}) must be before --until ({_iso(hi)})")
    return lo, hi


def summary_json(
    session: Any, since: datetime, until: datetime, now: datetime, workspace: str | None = None
) -> dict[str, Any]:
    """Build the ``summary`` figures for ``[since, until)`` from ``monitor.summary`` only."""
    from monitor import summary as sm
    from monitor.money import ZERO, fmt_usd

    spend = sm.spend_figures(session, since, until, workspace=workspace)
    figures = sm.batch_figures(session, since, until, workspace=workspace)
    reports = sm.report_sources(session, since, until)
    at = min(until, now)
    running = sm.in_progress(session, at, workspace=workspace)
    drift = sm.daily_drift(session, since, until, workspace=workspace)
    billed = sm.billed_total(session, since, until, workspace=workspace)
    computed = sum((r.computed_usd for r in drift), ZERO)
    drift_ratio = None
    if billed:
        drift_ratio = float(computed / billed - 1)

    def money_row(realtime: Any, batch: Any) -> dict[str, Any]:
        # A model without a price shows null money (unpriced), never $0.
        if batch is not None and batch.requests and batch.unpriced_requests == batch.requests:
            batch = None
        total = None
        if realtime is not None or batch is not None:
            total = (realtime or ZERO) + (batch.cost_usd if batch else ZERO)
        return {
            "realtime_cost_usd": fmt_usd(realtime),
            "batch_cost_usd": fmt_usd(batch.cost_usd) if batch else None,
            "total_cost_usd": fmt_usd(total),
            "savings_usd": fmt_usd(batch.savings_usd) if batch else None,
        }

    by_model = []
    rt_model = sm.realtime_cost_by(session, since, until, "model", workspace=workspace)
    b_model = sm.batch_figures_by(session, since, until, "model", workspace=workspace)
    for model in sorted(set(rt_model) | set(b_model)):
        by_model.append({"model": model, **money_row(rt_model.get(model), b_model.get(model))})
    by_workspace = []
    rt_ws = sm.realtime_cost_by(session, since, until, "workspace", workspace=workspace)
    b_ws = sm.batch_figures_by(session, since, until, "workspace", workspace=workspace)
    for ws in sorted(set(rt_ws) | set(b_ws)):
        by_workspace.append({"workspace": ws, **money_row(rt_ws.get(ws), b_ws.get(ws))})

    sources: dict[str, str | None] = dict(spend.sources)
    sources["batches"] = "batch ledger (Message Batches API)"
    sources["usage_report"] = reports.usage
    sources["billed"] = f"{reports.cost} cost report" if reports.cost else None
    notes = [*spend.notes, *reports.notes]
    if billed is None:
        notes.append("no cost report covers a whole UTC day of this window: billed cost unknown")
    else:
        notes.append("billed cost and drift cover the whole UTC days of the window only")
        for r in drift:
            if r.drift_ratio is not None and abs(r.drift_ratio) > 0.01:
                notes.append(
                    f"cost drift {r.day.date().isoformat()} {r.model} {r.service_tier}: "
                    f"computed ${fmt_usd(r.computed_usd)}, billed ${fmt_usd(r.billed_usd)} "
                    f"({r.drift_ratio:+.1%})"
                )
    if figures.unpriced_requests:
        notes.append(
            f"{figures.unpriced_requests} batch request(s) use a model without a price: "
            "their cost is not included"
        )
    return {
        "since": _iso(since),
        "until": _iso(until),
        "workspace": workspace,
        "realtime_cost_usd": fmt_usd(spend.realtime_cost_usd),
        "batch_cost_usd": fmt_usd(spend.batch_cost_usd),
        "total_cost_usd": fmt_usd(spend.total_cost_usd),
        "batch_share_requests": spend.batch_share_requests,
        "batch_share_spend": spend.batch_share_spend,
        "savings_usd": fmt_usd(spend.batch_savings_usd),
        "batches_ended": figures.batches_ended,
        "batch_failure_rate": figures.failure_rate,
        "batch_expired_rate": figures.expired_rate,
        "batch_turnaround_p50_seconds": figures.turnaround_p50_seconds,
        "batch_turnaround_p95_seconds": figures.turnaround_p95_seconds,
        "batches_in_progress": len(running),
        "billed_cost_usd": fmt_usd(billed),
        "cost_drift_ratio": drift_ratio,
        "by_model": by_model,
        "by_workspace": by_workspace,
        "sources": sources,
        "notes": notes,
    }


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
    workspace: str | None = typer.Option(None, "--workspace", help="Only this workspace id."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show real-time versus batch spend, batch health and billed cost over a window."""
    from monitor import clock, db

    now = clock.utcnow()
    lo, hi = summary_window(since, until, window, now)
    settings = load_settings()
    engine = open_db(settings)
    with db.session_scope(engine) as session:
        data = summary_json(session, lo, hi, now, workspace)
    if as_json:
        print_json(data)
        return
    _print_summary(data)


def _print_summary(data: dict[str, Any]) -> None:
    from rich.panel import Panel
    from rich.table import Table

    def pct(value: float | None) -> str:
        return f"{value * 100:.1f} %" if value is not None else "-"

    def secs(value: float | None) -> str:
        return f"{value / 60:.1f} min" if value is not None else "-"

    where = f" (workspace {data['workspace']})" if data["workspace"] else ""
    lines = [
        f"real-time {_usd(data['realtime_cost_usd'])}   batch {_usd(data['batch_cost_usd'])}   "
        f"total {_usd(data['total_cost_usd'])}   saved by batching {_usd(data['savings_usd'])}",
        f"batch share: {pct(data['batch_share_requests'])} of requests, "
        f"{pct(data['batch_share_spend'])} of spend",
        f"batches ended {data['batches_ended']}, in progress {data['batches_in_progress']}; "
        f"failed {pct(data['batch_failure_rate'])}, expired {pct(data['batch_expired_rate'])}; "
        f"turnaround p50 {secs(data['batch_turnaround_p50_seconds'])}, "
        f"p95 {secs(data['batch_turnaround_p95_seconds'])}",
        f"billed {_usd(data['billed_cost_usd'])}, computed vs billed drift "
        f"{pct(data['cost_drift_ratio']) if data['cost_drift_ratio'] is not None else '-'}",
    ]
    console = make_console()
    console.print(
        Panel("\n".join(lines), title=f"{data['since']} .. {data['until']}{where}"),
        markup=False,
        highlight=False,
    )
    for key, title in (("by_model", "model"), ("by_workspace", "workspace")):
        rows = data[key]
        if not rows:
            continue
        table = Table(title=f"by {title}")
        table.add_column(title)
        for name in ("real-time", "batch", "total", "saved"):
            table.add_column(name, justify="right")
        for r in rows:
            table.add_row(
                r[title] or "(none)",
                _usd(r["realtime_cost_usd"]),
                _usd(r["batch_cost_usd"]),
                _usd(r["total_cost_usd"]),
                _usd(r["savings_usd"]),
            )
        console.print(table)
    for name, source in data["sources"].items():
        console.print(f"source {name}: {source or '-'}", markup=False, highlight=False)
    for note in data["notes"]:
        console.print(f"note: {note}", markup=False, highlight=False)


# [advisor commands]

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
    from monitor.config import parse_duration

    settings = load_settings()
    span = settings.advisor.window
    if window is not None:
        try:
            span = parse_duration(window)
        except ValueError as exc:
            raise UsageError(f"--window: {exc}") from None
    engine = open_db(settings)
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
    from decimal import Decimal

    from monitor import advisor
    from monitor.pricing import PriceBook

    settings = load_settings()
    declared = settings.workloads
    if workloads is not None:
        declared = advisor.load_workloads_file(workloads)
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
        min_monthly_savings=Decimal(str(settings.advisor.min_monthly_savings)),
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

    from monitor.money import to_cents

    def usd(value: Any) -> str:
        return f"${to_cents(value):,}" if value is not None else "-"

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
            r.workload,
            r.model,
            num(r.requests_per_day),
            num(r.input_tokens_per_request),
            num(r.output_tokens_per_request),
            usd(r.monthly_standard_usd),
            usd(r.monthly_batch_usd),
            usd(r.monthly_savings_usd),
            r.recommendation,
            latency(r),
        )
    console = make_console()
    console.print(table)
    for r in recs:
        console.print(f"{r.workload}: {r.recommendation}: {r.reason}", markup=False)


# [alerting commands]

silence_app = typer.Typer(
    help="Silence alerts whose labels match, for a while.", no_args_is_help=True
)
app.add_typer(silence_app, name="silence")


def _scope_text(labels: dict[str, str]) -> str:
    scope = {k: v for k, v in labels.items() if k not in ("rule", "severity")}
    return ", ".join(f"{k}={v}" for k, v in sorted(scope.items())) or "-"


@app.command("check")
@handle_errors
def check(
    at: str | None = typer.Option(
        None, "--at", metavar="TIMESTAMP", help="Evaluate as of this UTC time (replay history)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Evaluate every rule once, record alert transitions, and deliver queued notifications."""
    from monitor import alerts, clock, db, notifiers, rules
    from monitor.logs import setup_logging

    settings = load_settings()
    setup_logging(settings.log_level, settings.secrets())
    now = parse_when(at, "--at") if at else clock.utcnow()
    rule_list = rules.load_rules(settings)
    engine = open_db(settings)
    with db.session_scope(engine) as session:
        results = alerts.evaluate_all(session, now, rule_list, settings=settings)
        report = alerts.deliver_pending(
            session,
            now,
            notifiers.from_settings(settings),
            alerts.default_worker_id(),
            claim_timeout=settings.alerting.claim_timeout,
            max_backoff=settings.alerting.max_backoff,
            warn_after_attempts=settings.slack.max_attempts,
        )
    if as_json:
        print_json([r.as_json() for r in results])
    else:
        typer.echo(f"{len(results)} alert(s) evaluated at {_iso(now)}")
        for r in results:
            event = f", queued {r.event}" if r.event else ""
            typer.echo(
                f"{r.state.upper():8} {r.severity:8} {r.rule} {_scope_text(r.labels)}{event}"
            )
            typer.echo(f"         {r.reason}")
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
    from monitor import alerts, db

    settings = load_settings()
    engine = open_db(settings)
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
        since = f" since {_iso(r.since)}" if r.since else ""
        delivery = r.delivery + (f" ({r.delivery_error})" if r.delivery_error else "")
        typer.echo(
            f"{r.state.upper():8} {r.severity:8} {r.rule} {_scope_text(r.labels)}: {value}{since}; "
            f"delivery {delivery}"
        )
        typer.echo(f"         {r.reason or ''}")


@app.command("notify-test")
@handle_errors
def notify_test(
    channel: str | None = typer.Option(
        None, "--channel", help="Send to this Slack channel instead of the configured ones."
    ),
) -> None:
    """Send a test message through the configured notifiers (Slack, else the log)."""
    from monitor import alerts, clock, notifiers
    from monitor.logs import setup_logging
    from monitor.notifiers import slack

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
    message = alerts.notify_test_message(clock.utcnow())
    failed = False
    for notifier in targets:
        try:
            sent = notifier.send(message)
        except notifiers.NotifyError as exc:
            failed = True
            kind = "permanent" if exc.permanent else "transient"
            typer.echo(f"{notifier.name}: failed ({kind}): {exc.message}", err=True)
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
    from monitor import alerts, clock, db
    from monitor.config import parse_duration

    matchers: dict[str, str] = {}
    for item in match:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise UsageError(f"--match: {item!r} must look like LABEL=VALUE (rule=cost_drift)")
        matchers[key.strip()] = value.strip()
    try:
        length = parse_duration(duration)
    except ValueError as exc:
        raise UsageError(f"--for: {exc}") from None
    if length.total_seconds() <= 0:
        raise UsageError("--for must be longer than 0s")
    settings = load_settings()
    engine = open_db(settings)
    with db.session_scope(engine) as session:
        silence = alerts.add_silence(session, clock.utcnow(), matchers, length, comment)
    typer.echo(f"silence {silence.id} added until {_iso(silence.ends_at)}")


@silence_app.command("list")
@handle_errors
def silence_list(
    show_all: bool = typer.Option(False, "--all", help="Include silences that have ended."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List the silences in force (or all of them)."""
    import orjson

    from monitor import alerts, clock, db

    settings = load_settings()
    engine = open_db(settings)
    now = clock.utcnow()
    with db.session_scope(engine) as session:
        rows = alerts.list_silences(session, now, include_expired=show_all)
    data = [
        {
            "id": s.id,
            "matchers": orjson.loads(s.matchers),
            "starts_at": _iso(s.starts_at),
            "ends_at": _iso(s.ends_at),
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
        typer.echo(line + (f" - {d['comment']}" if d["comment"] else ""))


@silence_app.command("expire")
@handle_errors
def silence_expire(
    silence_id: int = typer.Argument(..., metavar="ID", help="The silence to end now."),
) -> None:
    """End a silence now."""
    from monitor import alerts, clock, db

    settings = load_settings()
    engine = open_db(settings)
    with db.session_scope(engine) as session:
        ended = alerts.expire_silence(session, clock.utcnow(), silence_id)
    if not ended:
        fail(f"no silence {silence_id} in force", 1)
    typer.echo(f"silence {silence_id} expired")


def main() -> None:
    """Run the CLI."""
    app()


if __name__ == "__main__":
    main()
