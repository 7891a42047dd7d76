"""``make demo``: the product on its embedded defaults, end to end, in about a minute.

It starts the built-in Anthropic simulator with a seeded organisation whose week ends now,
writes a demo ``monitor.toml`` and the organisation's application call log, migrates a fresh
SQLite database, and runs the real commands against them: collect every source, list the
batches, the per-workload totals, the real-time versus batch summary, the advisor, and one
alert check (delivered to the log, as Slack is not configured).
"""

from __future__ import annotations

import os
import shutil
import sys
from datetime import timedelta
from pathlib import Path

DEMO_DIR = Path("demo-data")


def _run(*args: str) -> int:
    """Run one CLI command in-process, printing a header; return its exit code."""
    from monitor.cli import app

    print(f"\n$ batch-monitor {' '.join(args)}", flush=True)
    try:
        app(list(args), standalone_mode=False)
    except SystemExit as exc:  # typer.Exit surfaces as click's exit in non-standalone mode
        return int(exc.code or 0)
    except Exception as exc:  # click exceptions carry their own exit code
        code = getattr(exc, "exit_code", 1)
        print(f"(exit {code}: {exc})", flush=True)
        return int(code)
    return 0


def main() -> None:
    """Run the demo."""
    from monitor import clock
    from monitor.simulator import SimulatorServer, build_scenario

    if DEMO_DIR.exists():
        shutil.rmtree(DEMO_DIR)
    DEMO_DIR.mkdir()
    now = clock.utcnow().replace(minute=0, second=0, microsecond=0)
    scenario = build_scenario("org", start=now - timedelta(days=7))
    calls = DEMO_DIR / "calls.jsonl"
    written = scenario.write_call_logs(calls)

    with SimulatorServer(scenario) as sim:
        toml = [
            "# Written by `make demo`: the simulator's workspaces and the demo call log.",
            'grafana_url = "http://127.0.0.1:3000/d/batch-monitor"',
            "[collect]",
            'backfill = "8d"',
            f'call_logs = ["{calls.resolve()}"]',
            "",
            "# What each real-time workload can wait for: the advisor's main input.",
            '[[workloads]]\nname = "chat"\nmax_latency = "1m"\nuser_facing = true\n',
            '[[workloads]]\nname = "codereview"\nmax_latency = "2h"\nuser_facing = false\n',
            '[[workloads]]\nname = "research"\nmax_latency = "24h"\nuser_facing = false\n',
        ]
        env = {
            "MONITOR_DATABASE_URL": f"sqlite:///{(DEMO_DIR / 'demo.db').resolve()}",
            "MONITOR_CONFIG": str((DEMO_DIR / "monitor.toml").resolve()),
            "ANTHROPIC_BASE_URL": sim.url,
            "ANTHROPIC_ADMIN_KEY": scenario.admin_key,
            "MONITOR_LOG_LEVEL": "WARNING",
        }
        for i, w in enumerate(scenario.workspaces):
            var = f"DEMO_WORKSPACE_KEY_{i}"
            env[var] = w.api_key
            toml += ["[[workspaces]]", f'id = "{w.id}"', f'name = "{w.name}"',
                     f'api_key_env = "{var}"', ""]  # fmt: skip
        (DEMO_DIR / "monitor.toml").write_text("\n".join(toml))
        for var in ("ANTHROPIC_API_KEY", "MONITOR_SLACK_BOT_TOKEN", "MONITOR_SLACK_WEBHOOK_URL"):
            os.environ.pop(var, None)
        os.environ.update(env)

        print(f"Simulated organisation: {len(scenario.workspaces)} workspaces, "
              f"{len(scenario.batches)} batches, {written} real-time calls in {calls}")  # fmt: skip
        print(f"Anthropic simulator: {sim.url} (simulated now {sim.now():%Y-%m-%d %H:%M} UTC)")
        failures = 0
        for args in (
            ("db", "upgrade"),
            ("collect",),
            ("batches", "--since", (now - timedelta(hours=8)).isoformat()),
        ):
            failures += _run(*args) != 0
        _workload_totals(now)
        for args in (("summary", "--window", "7d"), ("advise",), ("check",)):
            failures += _run(*args) not in (0,)
    print(f"\nDemo data (SQLite database, monitor.toml, call log) is in {DEMO_DIR}/.")
    print("Not built yet: the long-running daemon (`batch-monitor run`), the Prometheus")
    print("exporter and Grafana dashboards, and the weekly report.")
    if failures:
        sys.exit(1)


def _workload_totals(now: object) -> None:
    """Print per-workload batch totals over the last 7 days, from the stored batches."""
    from datetime import datetime

    from rich.console import Console
    from rich.table import Table

    from monitor import db, fmt
    from monitor.config import load_settings
    from monitor.summary import batch_figures_by

    assert isinstance(now, datetime)
    settings = load_settings()
    engine = db.make_engine(settings.database_url)
    with db.session_scope(engine) as session:
        figures = batch_figures_by(session, now - timedelta(days=7), now + timedelta(hours=1),
                                   "workload")  # fmt: skip
    engine.dispose()
    print("\nPer-workload batch totals (batches that ended in the last 7 days):")
    table = Table()
    for col in ("workload", "batches", "requests", "failed %", "p95 turnaround", "cost",
                "real-time cost", "saved"):  # fmt: skip
        table.add_column(col, justify="left" if col == "workload" else "right")
    for name, f in figures.items():
        rate = f.failure_rate
        p95 = f.turnaround_p95_seconds
        table.add_row(
            name or "(results not read)", str(f.batches_ended), str(f.requests),
            f"{rate * 100:.2f}" if rate is not None else "-",
            f"{p95 / 60:.0f} min" if p95 is not None else "-",
            fmt.usd(f.cost_usd), fmt.usd(f.standard_cost_usd), fmt.usd(f.savings_usd),
        )  # fmt: skip
    Console(width=120).print(table)


if __name__ == "__main__":
    main()
