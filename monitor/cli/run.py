"""``batch-monitor run``, ``status`` and ``metrics``: the long-running service and its views."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import typer

from monitor.cli import UsageError, app, fail, handle_errors, load_settings, print_json

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from monitor.config import Settings
    from monitor.scheduler import Job

# A source is stale when its last success is older than this many of its intervals (and at
# least STALE_FLOOR): /readyz turns 503 and the dashboards' dead-man's switch lights up.
STALE_INTERVALS = 3
STALE_FLOOR = timedelta(minutes=30)


def staleness_limits(jobs: list[Job]) -> dict[str, timedelta]:
    """Return each configured source's staleness limit (business time)."""
    return {
        j.source: max(STALE_INTERVALS * j.interval, STALE_FLOOR)
        for j in jobs
        if j.source is not None
    }


@app.command("run")
@handle_errors
def run(
    once: bool = typer.Option(False, "--once", help="Run every due job once and exit."),
    log_format: str | None = typer.Option(
        None, "--log-format", help="text or json (default: text on a terminal, json otherwise)."
    ),
    metrics_host: str | None = typer.Option(
        None, "--metrics-host", help="Serve /metrics on this address (MONITOR_METRICS_HOST)."
    ),
    metrics_port: int | None = typer.Option(
        None, "--metrics-port", help="Serve /metrics on this port (MONITOR_METRICS_PORT)."
    ),
    no_metrics: bool = typer.Option(False, "--no-metrics", help="Do not serve HTTP at all."),
    upgrade: bool = typer.Option(
        False, "--upgrade", help="Apply database migrations first (what the container does)."
    ),
) -> None:
    """Run the service: collect, evaluate, deliver, report and prune on schedule."""
    from monitor import db
    from monitor.logs import setup_logging

    if log_format is not None and log_format not in ("text", "json"):
        raise UsageError(f"--log-format: {log_format!r} is not text or json")
    if metrics_port is not None and not 0 <= metrics_port <= 65535:
        raise UsageError(f"--metrics-port: {metrics_port} is not a TCP port")
    settings = load_settings()
    fmt_name = log_format or ("text" if sys.stderr.isatty() else "json")
    setup_logging(settings.log_level, settings.secrets(), fmt=fmt_name)
    engine = db.make_engine(settings.database_url)
    if upgrade:
        db.check_reachable(engine)
        db.upgrade(engine)
    db.require_migrated(engine)
    lock = _sqlite_lock(engine)
    from monitor.report.chart import draw_in_child

    draw_in_child()  # a weekly chart must not leave matplotlib's 45 MB in a months-long process
    try:
        if once:
            _run_once(settings, engine)
        else:
            _serve(
                settings,
                engine,
                host=metrics_host or settings.metrics_host,
                port=settings.metrics_port if metrics_port is None else metrics_port,
                http=not no_metrics,
            )
    finally:
        if lock is not None:
            lock.close()
        engine.dispose()


def _sqlite_lock(engine: Engine) -> Any:
    """Hold an exclusive lock file beside a SQLite database: one ``run`` per file."""
    import fcntl

    if engine.dialect.name != "sqlite" or not engine.url.database:
        return None
    if engine.url.database == ":memory:":
        return None
    path = os.path.abspath(engine.url.database)
    handle = open(path + ".run.lock", "a+")  # noqa: SIM115 (held for the process's life)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        pid = handle.read().strip() or "?"
        handle.close()
        fail(f"another batch-monitor run (pid {pid}) holds {path}", 2)
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def _run_once(settings: Settings, engine: Engine) -> None:
    from monitor.scheduler import Daemon

    daemon = Daemon(settings, engine)
    outcomes = daemon.run_once()
    daemon.leadership.stop()
    if not any(o.outcome != "skipped" for o in outcomes) and not daemon.leadership.token:
        with_leader = _leader_text(engine)
        if with_leader:
            fail(f"another replica leads ({with_leader}); nothing was run", 1)
    for o in outcomes:
        detail = f": {o.error}" if o.error else ""
        typer.echo(f"{o.job}: {o.outcome}, {o.items} item(s), {o.duration_seconds:.2f}s{detail}")
    if any(o.outcome in ("failed", "timeout") for o in outcomes):
        raise typer.Exit(1)


def _leader_text(engine: Engine) -> str | None:
    from monitor import db, lease

    with db.session_scope(engine) as session:
        current = lease.current_leader(session)
    return f"{current.host} pid {current.pid}" if current else None


def _serve(
    settings: Settings,
    engine: Engine,
    *,
    host: str,
    port: int,
    http: bool,
    duration: float | None = None,
    on_started: Callable[[int | None], None] | None = None,
) -> None:
    """Run the daemon (and its HTTP server) until a signal, or for ``duration`` seconds.

    ``on_started`` is called with the HTTP port once everything is up (the demo prints where
    to look then).
    """
    import logging
    import signal
    import threading

    from monitor import clock, exporter
    from monitor.scheduler import Daemon

    log = logging.getLogger("monitor.run")
    daemon = Daemon(settings, engine)
    server = None
    if http:
        metrics = exporter.CostMetrics(
            engine,
            settings,
            leadership=daemon.leadership,
            job_intervals={j.name: j.interval for j in daemon.jobs},
        )
        web_app = exporter.make_app(
            engine, settings, metrics, staleness_limits(daemon.jobs), clock.utcnow
        )
        try:
            server, _thread = exporter.serve(host, port, web_app)
        except OSError as exc:
            fail(f"cannot serve on {host}:{port}: {exc.strerror or exc}", 1)
        log.info("serving /metrics, /healthz and /readyz on http://%s:%d", host, server.server_port)
    stop = threading.Event()
    signals = {"count": 0}

    def on_signal(signum: int, _frame: Any) -> None:
        signals["count"] += 1
        if signals["count"] > 1:
            # A second signal: leave now. Every write is a transaction, so none is half done.
            os._exit(130)
        log.info("signal %d: stopping (again to stop at once)", signum)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    daemon.start()
    log.info(
        "running %d job(s): %s",
        len(daemon.jobs),
        ", ".join(f"{j.name} every {fmt_duration(j.interval)}" for j in daemon.jobs),
    )
    if on_started is not None:
        on_started(server.server_port if server is not None else None)
    ends = None if duration is None else clock.monotonic() + duration
    while not stop.wait(0.5):
        if ends is not None and clock.monotonic() >= ends:
            log.info("--duration reached: stopping")
            break
    timeout = settings.run.shutdown_timeout.total_seconds()
    idle = daemon.stop(timeout)
    if server is not None:
        server.shutdown()
        server.server_close()
    engine.dispose()
    if not idle:
        log.warning("jobs still running after %gs: exiting anyway (they roll back)", timeout)
        logging.shutdown()
        os._exit(0)
    log.info("stopped")


def fmt_duration(span: timedelta) -> str:
    """Format an interval for the start-up line (``"5m"``)."""
    from monitor import fmt

    return fmt.duration(span)


@app.command("demo")
@handle_errors
def demo(
    duration: float | None = typer.Option(
        None, "--duration", help="Stop by itself after this many seconds (default: Ctrl-C)."
    ),
    port: int = typer.Option(9464, "--port", help="Serve /metrics here (a free one if taken)."),
) -> None:
    """Run the live product on its embedded defaults: simulator, SQLite, the daemon."""
    from monitor import demo as live

    if duration is not None and duration <= 0:
        raise UsageError("--duration must be more than 0 seconds")
    live.main(duration=duration, port=port)


@app.command("status")
@handle_errors
def status(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Show the leader, each job's last and next run, source freshness and pending deliveries."""
    from monitor import clock, db, fmt
    from monitor.scheduler import build_jobs, service_status

    settings = load_settings()
    engine = db.make_engine(settings.database_url, readonly=True)
    db.require_migrated(engine)
    now = clock.utcnow()
    with db.session_scope(engine) as session:
        data = service_status(session, now, build_jobs(settings))
    engine.dispose()
    if as_json:
        print_json(data)
        return
    leader = data["leader"]
    if leader:
        typer.echo(
            f"leader: {leader['host']} pid {leader['pid']} since {leader['since']}, "
            f"lease until {leader['expires_at']}"
        )
    else:
        typer.echo("leader: none (no batch-monitor run is leading)")
    typer.echo("jobs:")
    for j in data["jobs"]:
        last = j["last_run"]
        when = f"last {last['started_at']} {last['outcome']}" if last else "never run"
        if last and last["error"]:
            when += f" ({fmt.terminal(last['error'])[:120]})"
        typer.echo(f"  {j['job']:16} every {j['interval']:>6}  {when}; next {j['next_run']}")
    typer.echo("sources:")
    for name, at in data["sources"].items():
        typer.echo(f"  {name:16} last success {at or 'never'}")
    typer.echo(f"pending deliveries: {data['pending_deliveries']}")
    typer.echo(f"days waiting for a rollup: {data['dirty_days']}")


@app.command("metrics")
@handle_errors
def metrics_command() -> None:
    """Print one /metrics exposition to stdout (for debugging and promtool)."""
    from monitor import db, exporter
    from monitor.scheduler import build_jobs

    settings = load_settings()
    engine = db.make_engine(settings.database_url, readonly=True)
    db.require_migrated(engine)
    collector = exporter.CostMetrics(
        engine, settings, job_intervals={j.name: j.interval for j in build_jobs(settings)}
    )
    body, _ = exporter.exposition(exporter.registry_for(collector))
    engine.dispose()
    sys.stdout.write(body.decode())
