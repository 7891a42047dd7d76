"""``batch-monitor demo`` (``make demo``): the live product on its embedded defaults.

It starts the built-in Anthropic simulator with a busy organisation whose last two weeks of history
end now and whose traffic keeps coming in real time (hourly classification batches that end
within minutes, chat calls every few minutes), writes a demo ``monitor.toml`` and call log in
``demo-data/``, migrates a fresh SQLite database there, and runs ``batch-monitor run`` against
them: the exporter on 127.0.0.1:9464, alerts on the console (and in Slack when its variables
are set), the weekly report in ``demo-data/reports/``. It prints where to look once the first
round has run, then one line per job run, until ``--duration`` or Ctrl-C.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import socket
import sys
import threading
from datetime import datetime, timedelta
from pathlib import Path

DEMO_DIR = Path("demo-data")
HISTORY_DAYS = 14
# Faster than the production defaults so a minute of demo shows every job running.
DEMO_CONFIG = """\
# Written by `batch-monitor demo`: the simulator's workspaces and the demo call log.
grafana_url = "http://127.0.0.1:3000/d/claude-spend"

[collect]
batches_interval = "30s"
usage_interval = "1m"
logs_interval = "15s"
backfill = "16d"
call_logs = ["{calls}"]

[alerting]
interval = "30s"
delivery_interval = "5s"

[run]
rollup_interval = "30s"
lease = "15s"
shutdown_timeout = "20s"

[report]
dir = "{reports}"

# What each real-time workload can wait for: the advisor's main input.
[[workloads]]
name = "chat"
max_latency = "1m"
user_facing = true

[[workloads]]
name = "codereview"
max_latency = "2h"
user_facing = false

[[workloads]]
name = "research"
max_latency = "24h"
user_facing = false
"""


def _port_or_free(port: int) -> int:
    """Return ``port`` if it is free on 127.0.0.1, else a free one."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return port
        except OSError:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])


def main(*, duration: float | None = None, port: int = 9464) -> None:
    """Run the demo until ``duration`` seconds have passed or Ctrl-C (exit 0 either way)."""
    from monitor import clock, db
    from monitor.cli.run import _serve
    from monitor.config import load_settings
    from monitor.logs import setup_logging
    from monitor.simulator import SimulatorServer, build_scenario

    if DEMO_DIR.exists():
        shutil.rmtree(DEMO_DIR)
    (DEMO_DIR / "reports").mkdir(parents=True)
    now = clock.utcnow()
    # Two weeks of history (so the last complete week has a report with a week to compare
    # against), then live traffic for as long as the demo may run (a day at least).
    start = now.replace(minute=0, second=0, microsecond=0) - timedelta(days=HISTORY_DAYS)
    ahead = max(1.0, math.ceil((duration or 86400) / 86400) + 1)
    scenario = build_scenario("org", start=start, days=HISTORY_DAYS + ahead)
    calls = DEMO_DIR / "calls.jsonl"
    written = scenario.write_call_logs(calls, end=now)
    sim = SimulatorServer(scenario, speed=1.0, now=now).start()
    try:
        config = DEMO_DIR / "monitor.toml"
        lines = [
            DEMO_CONFIG.format(calls=calls.resolve(), reports=(DEMO_DIR / "reports").resolve())
        ]
        env = {
            "MONITOR_DATABASE_URL": f"sqlite:///{(DEMO_DIR / 'demo.db').resolve()}",
            "MONITOR_CONFIG": str(config.resolve()),
            "ANTHROPIC_BASE_URL": sim.url,
            "ANTHROPIC_ADMIN_KEY": scenario.admin_key,
        }
        for i, w in enumerate(scenario.workspaces):
            var = f"DEMO_WORKSPACE_KEY_{i}"
            env[var] = w.api_key
            default = "true" if w.id == scenario.default_workspace.id else "false"
            lines.append(
                f'[[workspaces]]\nid = "{w.id}"\nname = "{w.name}"\napi_key_env = "{var}"\n'
                f"default = {default}\n"
            )
        config.write_text("\n".join(lines))
        # The demo's own keys are simulator keys, not secrets; Slack variables stay if set.
        os.environ.pop("ANTHROPIC_API_KEY", None)
        os.environ.update(env)
        (DEMO_DIR / "env.sh").write_text(
            "# source this file to run batch-monitor commands against the demo\n"
            + "".join(f"export {k}={v}\n" for k, v in env.items())
        )
        settings = load_settings()
        setup_logging(settings.log_level, settings.secrets(), fmt="text", stream=sys.stdout)
        log = logging.getLogger("monitor.demo")
        engine = db.make_engine(settings.database_url)
        db.upgrade(engine)
        log.info(
            "simulated organisation: %d workspaces, %d batches, %d real-time calls so far; "
            "simulator at %s",
            len(scenario.workspaces),
            len(scenario.batches),
            written,
            sim.url,
        )
        stop_tail = threading.Event()
        tail = threading.Thread(
            target=_append_calls, args=(scenario, calls, now, sim, stop_tail), daemon=True
        )
        tail.start()
        http_port = _port_or_free(port)
        if http_port != port:
            log.warning("port %d is taken: serving /metrics on %d instead", port, http_port)
        try:
            _serve(
                settings,
                engine,
                host="127.0.0.1",
                port=http_port,
                http=True,
                duration=duration,
                on_started=_where_to_look,
            )
        finally:
            stop_tail.set()
            tail.join(timeout=5)
    finally:
        sim.close()


def _append_calls(
    scenario: object, path: Path, since: datetime, sim: object, stop: threading.Event
) -> None:
    """Append the simulator's real-time calls to the call log as simulated time reaches them."""
    last = since
    while not stop.wait(5.0):
        now = sim.now()  # type: ignore[attr-defined]
        scenario.write_call_logs(path, start=last, end=now, append=True)  # type: ignore[attr-defined]
        last = now


def _where_to_look(port: int | None) -> None:
    """Print where to look, once everything is up."""
    url = f"http://127.0.0.1:{port}" if port else "(no HTTP)"
    print(
        "\n"
        "batch-monitor demo is running (Ctrl-C stops it)\n"
        f"  metrics:  {url}/metrics   health: {url}/healthz   ready: {url}/readyz\n"
        f"  in another terminal:  source {DEMO_DIR}/env.sh\n"
        "                        batch-monitor status\n"
        "                        batch-monitor summary --window 7d\n"
        "                        batch-monitor alerts\n"
        f"  weekly report:        {DEMO_DIR}/reports/\n",
        flush=True,
    )
