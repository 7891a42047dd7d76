"""Secrets and exposure: no key, token or webhook anywhere it can be read; a server that holds.

Distinctive secrets are planted (an Admin key, workspace keys, a Slack bot token, a webhook URL,
a database password), every one carrying the same random tag, and everything a person or a
machine can read is grepped for that tag:

- the daemon's log at DEBUG, in both formats, while the simulator echoes the request headers
  (the key among them) in its error bodies (its ``echo_headers`` fault);
- ``/metrics``, ``/readyz``, ``/healthz``;
- every table of the store, on SQLite and on PostgreSQL;
- what commands print, tracebacks with ``--debug`` included: ``collect``, ``config check``,
  ``summary``, ``batches``, ``status``, ``alerts``, the weekly report in HTML and JSON.

The metrics server binds 127.0.0.1 by default, answers only its read-only paths, and keeps
answering scrapes promptly while slow (slowloris), malformed and oversized clients hold
connections. Text from upstream (workload, model and workspace names, error messages) cannot
become a Slack mention or link, nor markup in the HTML report.
"""

from __future__ import annotations

import html.parser
import logging
import os
import re
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import inspect, text
from sqlmodel import Session

from monitor import db, exporter
from monitor.config import Settings
from monitor.simulator import Scenario, SimulatorServer, build_scenario, echo_headers
from tests.conftest import _pg_database_url, migrate_fresh
from tests.daemonkit import base_env, free_port, http_get, running, wait_until
from tests.fakeslack import FakeSlack

SOAK = os.environ.get("MONITOR_SOAK") == "1"

# --- planted secrets ------------------------------------------------------------------------

TAG = secrets.token_hex(8)  # in every planted secret: finding it anywhere is a leak
ADMIN_KEY = f"sk-ant-admin01-PLANTED{TAG}adm"  # shaped like a real key
WORKSPACE_KEYS = [f"PLANTED{TAG}ws{i}" for i in range(2)]  # not shaped: only the config knows
SLACK_TOKEN = f"xoxb-PLANTED{TAG}bot"
WEBHOOK_PATH = f"/services/T0PLANTED/B0PLANTED/PLANTED{TAG}hook"
DB_PASSWORD = f"PLANTED{TAG}pw"


def assert_no_secret(where: str, content: str | bytes) -> None:
    """Fail naming ``where`` and the context when the planted tag is in ``content``."""
    text_ = content.decode("utf-8", "replace") if isinstance(content, bytes) else content
    at = text_.find(TAG)
    assert at < 0, f"a planted secret leaks into {where}: ...{text_[max(0, at - 200) : at + 60]}"


def planted_scenario() -> Scenario:
    """Return the small scenario with the planted Admin key and workspace keys."""
    scenario = build_scenario("small")
    keys = {w.api_key: WORKSPACE_KEYS[i] for i, w in enumerate(scenario.workspaces)}
    scenario.workspaces = tuple(replace(w, api_key=keys[w.api_key]) for w in scenario.workspaces)
    scenario.api_keys = tuple(
        replace(k, secret=keys.get(k.secret, k.secret)) for k in scenario.api_keys
    )
    scenario.admin_key = ADMIN_KEY
    return scenario


# --- the metrics server ---------------------------------------------------------------------


@pytest.fixture
def metrics_server(tmp_path: Path) -> Iterator[int]:
    """Serve /metrics, /healthz and /readyz from an empty migrated store; yield the port."""
    url = f"sqlite:///{tmp_path / 'm.db'}"
    engine = db.make_engine(url)
    db.upgrade(engine)
    settings = Settings(database_url=url)
    now = datetime(2026, 11, 20, tzinfo=UTC)
    metrics = exporter.CostMetrics(engine, settings, now=lambda: now)
    app = exporter.make_app(engine, settings, metrics, {}, lambda: now)
    port = free_port()
    server, thread = exporter.serve("127.0.0.1", port, app)
    try:
        yield port
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
        engine.dispose()


def test_the_metrics_server_binds_loopback_and_answers_only_its_paths(metrics_server: int) -> None:
    assert Settings().metrics_host == "127.0.0.1"
    base = f"http://127.0.0.1:{metrics_server}"
    assert http_get(base + "/metrics")[0] == 200
    assert http_get(base + "/healthz")[0] == 200
    assert http_get(base + "/readyz")[0] in (200, 503)
    for path in ("/", "/admin", "/metrics/../admin", "/metricsx", "/%2e%2e/etc/passwd", "/api"):
        assert http_get(base + path)[0] == 404, path
    for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"):
        assert http_get(base + "/metrics", method=method)[0] == 405, method
    assert http_get(base + "/metrics", method="TRACE")[0] in (405, 501)


def _send_slowly(sockets: list[socket.socket], stop: threading.Event) -> None:
    """Send one more byte of a never-ending header on every socket, once a second."""
    while not stop.wait(1.0):
        for s in list(sockets):
            try:
                s.sendall(b"a")
            except OSError:
                sockets.remove(s)  # the server dropped it: what it should do, eventually


def _closed_by_server(s: socket.socket) -> bool:
    """Say whether the server has closed ``s`` (EOF or reset), without waiting."""
    s.setblocking(False)
    try:
        data = s.recv(65536)
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        s.setblocking(True)
    return data == b"" or data.startswith(b"HTTP/")


def test_slow_malformed_and_huge_clients_do_not_block_scrapes(
    metrics_server: int, figures: Any
) -> None:
    """More slowloris clients than the server has connection slots, and junk, while scraping.

    Each slow client sends a header a byte per second and never finishes it. Scrapes still
    answer within 5 s (a generous liveness bound, not a timing claim), and the slow clients
    are dropped by the server instead of holding a thread forever.
    """
    port = metrics_server
    clients = exporter.MAX_CONNECTIONS + 16
    slow: list[socket.socket] = []
    junk: list[socket.socket] = []
    stop = threading.Event()
    drip = threading.Thread(target=_send_slowly, args=(slow, stop), daemon=True)
    scrapes: list[float] = []
    try:
        for _ in range(clients):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            slow.append(s)
        drip.start()
        for payload in (
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n",  # a TLS hello
            b"GET\r\n\r\n",
            b"BREW /coffee HTCPCP/1.0\r\n\r\n",
            b"GET /metrics HTTP/1.1\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n",
            b"GET /metrics HTTP/1.1\r\n" + b"X-Many: 1\r\n" * 200 + b"\r\n",
            b"GET /" + b"m" * 70_000 + b" HTTP/1.1\r\n\r\n",
            b"\x00" * 1000,
        ):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(payload)
            junk.append(s)
        started = time.monotonic()
        for _ in range(3 if not SOAK else 30):
            t0 = time.monotonic()
            status, body = http_get(f"http://127.0.0.1:{port}/metrics", timeout=5)
            took = time.monotonic() - t0
            assert status == 200 and b"# HELP" in body, (
                f"a scrape failed (status {status}) while {clients} slow clients were connected"
            )
            assert took < 5, f"a scrape took {took:.1f}s while slow clients were connected"
            scrapes.append(took)
            time.sleep(1)
        # The slow clients are dropped once their request has taken too long to arrive.
        wait_until(
            lambda: (
                sum(_closed_by_server(s) for s in list(slow)) + (clients - len(slow)) >= clients
            ),
            exporter.REQUEST_DEADLINE + 15,
            "the server to drop every slowloris client",
            step=0.5,
        )
        dropped_after = time.monotonic() - started
        for s in junk:
            s.settimeout(10)
            assert _read_all(s).startswith((b"HTTP/1", b"")), "junk answered with garbage"
    finally:
        stop.set()
        for s in [*slow, *junk]:
            s.close()
    figures(
        slow_clients=clients,
        junk_clients=len(junk),
        scrapes=len(scrapes),
        slowest_scrape_s=round(max(scrapes), 3),
        slow_clients_dropped_within_s=round(dropped_after, 1),
    )


def _read_all(s: socket.socket) -> bytes:
    chunks = []
    try:
        while chunk := s.recv(65536):
            chunks.append(chunk)
    except OSError:
        pass
    return b"".join(chunks)


# --- the daemon, its log, its endpoints and its store ---------------------------------------

SPEED = 7200.0  # two simulated hours per second
DAEMON_CONFIG = """
[collect]
batches_interval = "30m"
usage_interval = "1h"
backfill = "1d"

[alerting]
default_rules = false
interval = "10m"
delivery_interval = "5m"

[run]
lease = "3s"
shutdown_timeout = "10s"
rollup_interval = "30m"

[[rules]]
name = "batch_failure_rate"
kind = "batch_failure_rate"
threshold = 0.005
window = "24h"
severity = "critical"
repeat_interval = "7d"
"""
# Endpoints whose first answers echo the request's headers, API key included.
ECHOED = {
    "batches.list": 2,
    "batches.retrieve": 2,
    "batches.results": 3,
    "analytics.usage": 1,
    "usage_report.messages": 1,
    "analytics.cost": 1,
    "cost_report": 1,
}


def write_planted_config(path: Path, scenario: Scenario, extra: str = "") -> dict[str, str]:
    """Write monitor.toml for the scenario's workspaces; return the env holding their keys.

    The variables are named without KEY or TOKEN, so only the configuration says they hold
    secrets (scrubbing must not rely on the variable's name).
    """
    lines, env = [], {}
    for i, w in enumerate(scenario.workspaces):
        env[f"PLANT_WS_{i}"] = w.api_key
        default = "true" if w.id == scenario.default_workspace.id else "false"
        lines += [
            "[[workspaces]]",
            f'id = "{w.id}"',
            f'name = "{w.name}"',
            f'api_key_env = "PLANT_WS_{i}"',
            f"default = {default}",
        ]
    path.write_text(extra.strip() + "\n\n" + "\n".join(lines) + "\n")
    return env


def with_password(url: str) -> str:
    """Return a PostgreSQL URL with the planted password (the server trusts local users)."""
    scheme, rest = url.split("://", 1)
    user, host = rest.split("@", 1)
    return f"{scheme}://{user}:{DB_PASSWORD}@{host}"


def dump_store(url: str) -> str:
    """Return every row of every table of the store, as text."""
    engine = db.make_engine(url)
    out = []
    try:
        with engine.connect() as conn:
            for table in inspect(engine).get_table_names():
                for row in conn.execute(text(f'SELECT * FROM "{table}"')):
                    out.append(f"{table}: {tuple(row)!r}")
    finally:
        engine.dispose()
    return "\n".join(out)


def listening_address(port: int) -> str:
    """Return the local address a TCP socket listens on ``port`` with (from /proc/net/tcp)."""
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(name) as fh:
            for line in fh.readlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                addr, hexport = local.rsplit(":", 1)
                if int(hexport, 16) == port and state == "0A":  # LISTEN
                    if len(addr) == 8:
                        return socket.inet_ntoa(bytes.fromhex(addr)[::-1])
                    return addr
    raise AssertionError(f"nothing listens on port {port}")


@pytest.fixture
def planted_slack() -> Iterator[FakeSlack]:
    """A fake Slack that knows the planted bot token and webhook path."""
    with FakeSlack(token=SLACK_TOKEN, webhook_path=WEBHOOK_PATH) as fake:
        yield fake


@pytest.mark.parametrize(
    ("log_format", "store", "slack_via"),
    [("text", "sqlite", "bot"), ("json", "postgresql", "webhook")],
)
def test_the_daemon_logs_serves_and_stores_no_secret(
    tmp_path: Path,
    planted_slack: FakeSlack,
    log_format: str,
    store: str,
    slack_via: str,
    figures: Any,
) -> None:
    """A simulated half day of ``run`` at DEBUG, with every upstream echoing the key for a while."""
    scenario = planted_scenario()
    if store == "sqlite":
        url = f"sqlite:///{tmp_path / 'monitor.db'}"
        engine = db.make_engine(url)
        db.upgrade(engine)
        engine.dispose()
    else:
        url = with_password(_pg_database_url())
        migrate_fresh(url)
    config = tmp_path / "monitor.toml"
    faults = [echo_headers(endpoint=e, times=n) for e, n in ECHOED.items()]
    start = scenario.start - timedelta(minutes=30)
    with SimulatorServer(scenario, speed=SPEED, now=start, faults=faults) as sim:
        env = base_env(sim, planted_slack if slack_via == "bot" else None, url, config)
        if slack_via == "webhook":
            env["MONITOR_SLACK_WEBHOOK_URL"] = planted_slack.webhook_url
        env["MONITOR_LOG_LEVEL"] = "DEBUG"
        env.update(write_planted_config(config, scenario, DAEMON_CONFIG))
        planted_slack.fail("*", status=500, times=1)  # one failed delivery, retried
        served: dict[str, bytes] = {}
        with running(env, tmp_path / "run.log", "--log-format", log_format) as proc:
            wait_until(lambda: http_get(proc.url("/healthz"))[0] == 200, 60, "/healthz")
            assert listening_address(proc.port) == "127.0.0.1"
            # Half a day; under soak the whole scenario and more (echoes keep coming back).
            end = scenario.start + timedelta(hours=12) if not SOAK else scenario.end
            if SOAK:
                for e in ECHOED:
                    sim.add_fault(echo_headers(endpoint=e, times=20))
            wait_until(lambda: sim.now() >= end, 300, "the simulated time to pass", step=0.5)
            wait_until(
                lambda: any(r.status == 200 for r in planted_slack.requests),
                60,
                "an alert delivered to Slack",
                step=0.5,
            )
            for path in ("/metrics", "/readyz", "/healthz", "/nope"):
                served[path] = http_get(proc.url(path))[1]
            code, _took = proc.terminate(timeout=30)
            log = proc.log()
        fired = {f.endpoint: f.fired for f in sim.faults}
    assert code == 0, log[-3000:]
    assert_no_secret(f"the daemon's {log_format} log at DEBUG", log)
    # The path was exercised: the keys were echoed, and the log says so, scrubbed.
    assert sum(fired.values()) >= 5, fired
    assert "headers were" in log and "***" in log, log[-2000:]
    for path, body in served.items():
        assert_no_secret(path, body)
    stored = dump_store(url)
    assert "headers were" in stored  # the echoed errors are stored (scrubbed) too
    assert_no_secret(f"the {store} store", stored)
    if store == "sqlite":
        for part in tmp_path.glob("monitor.db*"):  # the file itself, WAL included
            assert_no_secret(part.name, part.read_bytes())
    figures(
        echoed_answers=sum(fired.values()),
        log_bytes=len(log),
        stored_rows=stored.count("\n") + 1,
        slack_requests=len(planted_slack.requests),
    )


# --- what commands print -----------------------------------------------------------------


def cli(args: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str]:
    """Run ``batch-monitor ARGS`` as a process; return its exit code and everything it printed."""
    done = subprocess.run(
        [sys.executable, "-m", "monitor", *args],
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": os.environ.get("PYTHONPATH", ""), **env},
        capture_output=True,
        text=True,
        timeout=180,
        cwd=cwd,
    )
    return done.returncode, done.stdout + done.stderr


class InProcess:
    """Run ``batch-monitor`` commands in this process (much faster than a process each)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
        self.monkeypatch = monkeypatch
        self.capsys = capsys

    def __call__(self, args: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str]:
        """Run ``args`` with exactly ``env`` for the product's variables; return code, output."""
        import monitor.cli

        mp = self.monkeypatch
        for name in list(os.environ):
            if name.startswith(("MONITOR_", "ANTHROPIC_", "PLANT_")):
                mp.delenv(name)
        for name, value in env.items():
            mp.setenv(name, value)
        mp.chdir(cwd)
        monitor.cli._state.clear()
        monitor.cli._state["debug"] = False
        self.capsys.readouterr()
        try:
            monitor.cli.main(args)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        finally:
            logging.getLogger().handlers.clear()  # the command set up logging to captured stderr
        out, err = self.capsys.readouterr()
        return code, out + err


def test_commands_print_no_secret(
    tmp_path: Path,
    planted_slack: FakeSlack,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    figures: Any,
) -> None:
    """Every command that reads upstream, the store or the configuration, ``--debug`` included."""
    run_here = InProcess(monkeypatch, capsys)
    scenario = planted_scenario()
    url = f"sqlite:///{tmp_path / 'monitor.db'}"
    engine = db.make_engine(url)
    db.upgrade(engine)
    engine.dispose()
    config = tmp_path / "monitor.toml"
    # A Grafana link with credentials in it is a secret too, wherever the URL is shown.
    grafana = f'grafana_url = "https://viewer:{DB_PASSWORD}@grafana.example/d/claude"\n'
    faults = [echo_headers(endpoint=e, times=n) for e, n in ECHOED.items()]
    outputs: dict[str, str] = {}
    with SimulatorServer(scenario, faults=faults) as sim:
        env = base_env(sim, planted_slack, url, config)
        env.update(write_planted_config(config, scenario, grafana + '[collect]\nbackfill = "3d"'))
        planted_slack.fail("chat.postMessage", error="invalid_auth")
        # The upstreams echo the key: the errors are printed, with --debug (once as a process).
        _code, outputs["--debug collect (process)"] = cli(["--debug", "collect"], env, tmp_path)
        for n in range(2):
            code, outputs[f"--debug collect #{n}"] = run_here(["--debug", "collect"], env, tmp_path)
        assert code == 0, outputs
        assert any("headers were" in o for o in outputs.values()), outputs
        for args in (
            ["config", "check"],
            ["config", "check", "--json"],
            ["summary"],
            ["summary", "--json"],
            ["batches", "--json"],
            ["status"],
            ["alerts"],
            ["--debug", "notify-test"],
            ["report", "weekly", "--format", "html", "--out", str(tmp_path / "reports")],
            ["report", "weekly", "--format", "json"],
            ["report", "weekly", "--format", "md"],
        ):
            _code, outputs[" ".join(args)] = run_here(args, env, tmp_path)
    assert "invalid_auth" in outputs["--debug notify-test"]
    # A database that refuses the connection, its password in the URL, with --debug.
    bad_db = {**env, "MONITOR_DATABASE_URL": f"postgresql://u:{DB_PASSWORD}@127.0.0.1:1/x"}
    code, outputs["--debug summary (no database, process)"] = cli(
        ["--debug", "summary"], bad_db, tmp_path
    )
    assert code != 0
    for args in (["--debug", "db", "status"], ["--debug", "collect"]):
        code, outputs[f"{' '.join(args)} (no database)"] = run_here(args, bad_db, tmp_path)
        assert code != 0
    # Keys where the configuration wants other things: refused, never repeated. (The key where
    # its variable's name belongs, secrets in the file, a known key pasted into a regex.)
    wrong = tmp_path / "wrong.toml"
    wrong.write_text(
        '[[workspaces]]\nid = "wrkspc_ok"\napi_key_env = "PLANT_WS_0"\n'
        f'[[workspaces]]\nid = "wrkspc_x"\napi_key_env = "sk-ant-api03-{TAG}-pasted"\n'
        f'[slack]\ntoken = "{SLACK_TOKEN}"\nwebhook_url = "https://hooks.slack.com{WEBHOOK_PATH}"\n'
        f'[[workloads]]\nname = "w"\nmatch = "{WORKSPACE_KEYS[0]}("\n'
    )
    for args in (["config", "check"], ["--debug", "summary"]):
        code, outputs[f"{' '.join(args)} (keys in the file)"] = run_here(
            args, {**env, "MONITOR_CONFIG": str(wrong)}, tmp_path
        )
        assert code == 2, outputs
    for name, output in outputs.items():
        assert_no_secret(f"`batch-monitor {name}`", output)
    for written in (tmp_path / "reports").iterdir():
        assert_no_secret(written.name, written.read_bytes())
    figures(commands=len(outputs))


# --- upstream text in Slack and in the HTML report ------------------------------------------

# What anybody who can submit a batch request or call the API can make a workload, model or
# workspace name (ids and names come from custom_ids, call logs and the reports).
HOSTILE_WORKLOAD = "<!channel> <script>alert(1)</script> &amp; <@U024BE7LH>"
HOSTILE_WORKSPACE = "wrkspc_<https://evil.example|click here>&<!here>"
HOSTILE_MODEL = "claude-<!everyone>-<img src=x onerror=alert(1)>"
RAW_MARKUP = (
    "<!channel>",
    "<!here>",
    "<!everyone>",
    "<@U024BE7LH>",
    "<https://evil",
    "<script>",
    "<img",
)
# Slack's limits: a header's text, a section's text, each field of a section.
SLACK_LIMITS = {"header": 150, "section": 3000, "field": 2000}


def check_blocks(body: dict[str, Any]) -> list[str]:
    """Check a posted message's blocks against Slack's limits; return its mrkdwn texts."""
    texts = [str(body.get("text", ""))]
    for block in body.get("blocks") or []:
        kind = block.get("type")
        if kind == "header":
            assert len(block["text"]["text"]) <= SLACK_LIMITS["header"], block
        if kind == "section":
            if "text" in block:
                assert len(block["text"]["text"]) <= SLACK_LIMITS["section"], len(str(block))
                texts.append(block["text"]["text"])
            for f in block.get("fields", []):
                assert len(f["text"]) <= SLACK_LIMITS["field"], len(f["text"])
                texts.append(f["text"])
        if kind == "context":
            texts += [e["text"] for e in block["elements"] if e.get("type") == "mrkdwn"]
    return texts


def assert_inert(texts: list[str]) -> None:
    """No text can mention anyone, link anywhere or carry markup: ``&<>`` all escaped."""
    joined = "\n".join(texts)
    for raw in RAW_MARKUP:
        assert raw not in joined, (raw, joined[:3000])
    # Every '<' left is one of ours: a link the product itself wrote (Grafana, runbook).
    for i in range(len(joined)):
        if joined[i] == "<":
            assert joined.startswith(("<https://grafana.example", "<https://wiki.example"), i)


def test_upstream_text_in_alerts_cannot_mention_link_or_break_slack(
    session: Session, planted_slack: FakeSlack, figures: Any
) -> None:
    """Hostile workload, workspace and model names, through rules, the outbox and Slack."""
    from monitor.alerts import evaluate_all
    from monitor.notifiers.delivery import deliver_pending
    from monitor.notifiers.slack import SlackNotifier
    from tests.factories import H, add_batch, add_billed, add_usage, rule

    now = datetime(2026, 11, 20, 12, tzinfo=UTC)
    add_batch(
        session, "msgbatch_h1", created=now - 3 * H, ended=now - H, requests=100, errored=40,
        workload=HOSTILE_WORKLOAD, workspace=HOSTILE_WORKSPACE, cost="1.00",
    )  # fmt: skip
    day = datetime(2026, 11, 19, tzinfo=UTC)
    add_usage(session, day + 10 * H, cost="60.00", model=HOSTILE_MODEL)
    add_billed(session, day, "90.00", model=HOSTILE_MODEL)
    session.commit()
    rules = [
        rule(
            "batch_failure_rate",
            0.01,
            group_by=["workload"],
            annotations={"runbook_url": "https://wiki.example/rb"},
        ),
        rule("batch_failure_rate", 0.01, group_by=["workspace"], name="failures_by_workspace"),
        rule("cost_drift", 0.02, window="3d", group_by=["model"]),
    ]
    evaluate_all(session, now, rules)
    notifier = SlackNotifier(
        SLACK_TOKEN, "#alerts", base_url=planted_slack.base_url,
        grafana_url="https://grafana.example/d/claude",
    )  # fmt: skip
    report = deliver_pending(session, now, [notifier], "w1")
    posts = [r for r in planted_slack.requests if r.method == "chat.postMessage"]
    assert len(posts) == 3 and all(r.status == 200 and r.error is None for r in posts), report
    texts = [t for r in posts for t in check_blocks(r.body)]
    assert_inert(texts)
    # The names are there, escaped, so people can read them.
    joined = "\n".join(texts)
    for name in (HOSTILE_WORKLOAD, HOSTILE_WORKSPACE, HOSTILE_MODEL):
        escaped = name.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        assert escaped in joined, name
    figures(alerts_posted=len(posts))


def test_a_long_hostile_text_is_escaped_then_cut_to_slack_limits(planted_slack: FakeSlack) -> None:
    """Escaping makes text longer (``<`` is four characters escaped): cut after, not before."""
    from monitor.notifiers.base import Message
    from monitor.notifiers.slack import SlackNotifier, SlackWebhookNotifier

    hostile = "<!channel>&" * 400  # 4,400 characters, 14,000 once escaped
    message = Message(
        rule="batch_failure_rate",
        severity="critical",
        transition="firing",
        labels={"workload": hostile[:128], "workspace": hostile[:128], "model": hostile[:128]},
        annotations={"summary": hostile, "value": hostile[:200], "window": "24h",
                     "action": hostile},
        reason=hostile,
        created_at=datetime(2026, 11, 20, 12, tzinfo=UTC),
    )  # fmt: skip
    SlackNotifier(SLACK_TOKEN, "#alerts", base_url=planted_slack.base_url).send(message)
    SlackWebhookNotifier(planted_slack.webhook_url).send(message)
    assert len(planted_slack.requests) == 2
    for request in planted_slack.requests:
        texts = check_blocks(request.body)
        assert_inert(texts)
        for t in texts:  # cut between entities, never inside one ("&am" would show as text)
            assert not re.search(r"&(?!amp;|lt;|gt;)", t), t[-20:]


class _Page(html.parser.HTMLParser):
    """Collect an HTML page's tags, attributes and text."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str | None]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs += attrs

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_upstream_text_in_the_weekly_report_is_text_not_markup(
    session: Session, planted_slack: FakeSlack, figures: Any
) -> None:
    """Hostile names in every table of the report: in HTML they are text, in Slack inert."""
    from monitor.report import Week
    from monitor.report.render import render, slack_blocks
    from monitor.report.weekly import build_weekly
    from tests.factories import H, add_batch, add_usage

    week = Week(datetime(2026, 11, 9).date(), "UTC")
    now = week.end + 9 * H
    for i, start in enumerate((week.start - timedelta(days=5), week.start + timedelta(days=2))):
        add_usage(session, start, cost=f"{10 + 40 * i}.00", requests=100, model=HOSTILE_MODEL,
                  workspace=HOSTILE_WORKSPACE)  # fmt: skip
        add_batch(
            session, f"msgbatch_w{i}", created=start, ended=start + 30 * H, requests=100,
            errored=50, workload=HOSTILE_WORKLOAD, workspace=HOSTILE_WORKSPACE, cost=f"{5 + i}.00",
        )  # fmt: skip
    session.commit()
    report = build_weekly(session, week, now, Settings())
    page = render(report, "html")
    parsed = _Page()
    parsed.feed(page)
    allowed = {"html", "head", "meta", "title", "style", "body", "main", "h1", "h2", "h3", "p",
               "div", "table", "thead", "tbody", "tr", "th", "td", "ul", "li", "strong", "span",
               "img"}  # fmt: skip
    assert set(parsed.tags) <= allowed, set(parsed.tags) - allowed
    assert not any(name.startswith("on") for name, _ in parsed.attrs), parsed.attrs
    shown = "".join(parsed.text)
    for name in (HOSTILE_WORKLOAD, HOSTILE_WORKSPACE, HOSTILE_MODEL):
        assert name in shown, name  # read back as the text it was
    markdown = render(report, "md")
    tag = re.search(r"(?<!\\)<(script|img|!|@|https)", markdown)  # \< is a literal <
    assert not tag, f"markup in the Markdown: {markdown[tag.start() - 40 : tag.end() + 40]!r}"
    blocks = slack_blocks(report, files_note=HOSTILE_WORKLOAD)
    assert_inert(check_blocks({"text": "", "blocks": blocks}))
    figures(html_bytes=len(page), tags=len(parsed.tags))


def test_a_debug_traceback_is_scrubbed_of_the_configured_secrets(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unexpected error quoting a workspace key whose variable is not named *KEY*."""
    import typer

    import monitor.cli

    @monitor.cli.handle_errors
    def failing_command() -> None:
        raise RuntimeError(f"upstream said: key {WORKSPACE_KEYS[0]} is not allowed here")

    # As load_settings leaves it for a run with --debug; the variable is PLANT_WS_0.
    monkeypatch.setattr(monitor.cli, "_state", {"debug": True, "secrets": [WORKSPACE_KEYS[0]]})
    monkeypatch.setenv("PLANT_WS_0", WORKSPACE_KEYS[0])
    with pytest.raises(typer.Exit):
        failing_command()
    err = capsys.readouterr().err
    assert "Traceback" in err and "RuntimeError: upstream said: key *** is not allowed" in err
    assert_no_secret("a --debug traceback", err)


ESCAPED_CASES = [0]  # texts tried, for the figures


@given(text=st.text(max_size=400), limit=st.integers(5, 3000))
@settings(
    max_examples=20_000 if SOAK else 300,
    derandomize=not SOAK,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
def test_escaping_fuzzed(text: str, limit: int, figures: Any) -> None:
    """Any text is inert in mrkdwn (cut to a limit without breaking an entity) and in HTML."""
    ESCAPED_CASES[0] += 1
    figures(cases=ESCAPED_CASES[0])
    from monitor.notifiers.base import escape_mrkdwn
    from monitor.notifiers.slack import clip_mrkdwn
    from monitor.report.render import _h

    for hostile in (text, HOSTILE_WORKLOAD + text, text + "<!channel>" * 50):
        out = clip_mrkdwn(escape_mrkdwn(hostile), limit)
        assert len(out) <= limit and "<" not in out and ">" not in out, out
        assert not re.search(r"&(?!amp;|lt;|gt;)", out), out
        page = _Page()
        page.feed(f"<p>{_h(hostile)}</p>")
        assert page.tags == ["p"] and "".join(page.text) == hostile
