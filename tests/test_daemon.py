"""``batch-monitor run`` as a subprocess: a simulated week end to end, failover, refusals.

The daemon follows the simulator's clock, so days pass in seconds. What it stored is checked
against the scenario's ground truth to the cent; what reached the fake Slack is checked
against the alert events the daemon recorded (each delivered once).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select
from sqlmodel import Session

from monitor import db
from monitor.models import AlertEvent, JobRun, Lease
from monitor.simulator import SimulatorServer, build_scenario
from monitor.summary import build_summary
from tests.conftest import _pg_database_url, migrate_fresh
from tests.daemonkit import base_env, http_get, running, wait_until, write_config
from tests.fakeslack import FakeSlack
from tests.simkit import assert_matches_truth

SPEED = 7200.0  # two simulated hours per second
CONFIG = """
[collect]
batches_interval = "30m"
usage_interval = "1h"
backfill = "1d"
final_after = "1h"

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

[[rules]]
name = "batch_expiry_risk"
kind = "batch_expiry_risk"
threshold = "12h"
severity = "warning"
repeat_interval = "7d"
"""


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        yield fake


def _sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'monitor.db'}"
    engine = db.make_engine(url)
    db.upgrade(engine)
    engine.dispose()
    return url


def _last_start(engine: Engine, job: str) -> datetime | None:
    with Session(engine) as s:
        return s.execute(select(func.max(JobRun.started_at)).where(JobRun.job == job)).scalar()


def _settled(engine: Engine, after: datetime) -> bool:
    """Say whether every collection, evaluation and delivery ran once after ``after``."""
    jobs = ("collect_batches", "collect_usage", "collect_cost", "evaluate", "deliver")
    return all((_last_start(engine, j) or after) > after + timedelta(hours=1) for j in jobs)


def _check_store(engine: Engine, sim: SimulatorServer, frozen: datetime) -> None:
    """The store equals the scenario's truth at ``frozen``, to the cent."""
    truth = sim.scenario.truth(frozen)
    start = sim.scenario.start - timedelta(days=1)
    with Session(engine) as session:
        assert_matches_truth(session, truth)
        s = build_summary(session, start, frozen, frozen)
        realtime = truth.usage(start, frozen, product="messages_api")
        batch = truth.batch_totals(start, frozen)
        assert s.spend.realtime_cost_usd is not None and s.spend.batch_cost_usd is not None
        assert round(s.spend.realtime_cost_usd, 2) == round(realtime.cost_usd, 2)
        assert round(s.spend.batch_cost_usd, 2) == round(batch.cost_usd, 2)
        assert s.spend.realtime_requests == realtime.requests


def _check_slack_once_each(engine: Engine, slack: FakeSlack) -> Counter[tuple[str, str]]:
    """Every recorded alert event reached Slack once; return what was delivered."""
    with Session(engine) as session:
        events = list(session.execute(select(AlertEvent)).scalars())
    assert events and all(e.status == "delivered" for e in events), [
        (e.rule, e.transition, e.status, e.status_reason) for e in events
    ]
    want = Counter((e.rule, e.transition) for e in events)
    got: Counter[tuple[str, str]] = Counter()
    for r in slack.posts():
        if r.title.startswith("Claude spend, week of"):  # the weekly report, counted apart
            continue
        rule = next(
            (name for name in ("batch_failure_rate", "batch_expiry_risk") if name in r.title),
            r.title,
        )
        got[(rule, "resolved" if "Resolved" in r.title else "firing")] += 1
    assert got == want
    # The weekly report of the week that ended during the run: posted once, its chart once.
    reports = [r for r in slack.posts() if r.title.startswith("Claude spend, week of")]
    uploads = [r for r in slack.requests if r.method == "files.completeUploadExternal"]
    assert len(reports) == 1 and len(uploads) == 1, (reports, uploads)
    return got


def test_a_simulated_week_end_to_end(tmp_path: Path, slack: FakeSlack) -> None:
    scenario = build_scenario("small")
    db_url = _sqlite_url(tmp_path)
    with SimulatorServer(scenario, speed=SPEED, now=scenario.start - timedelta(minutes=30)) as sim:
        env = base_env(sim, slack, db_url, tmp_path / "monitor.toml")
        env.update(write_config(tmp_path / "monitor.toml", sim, CONFIG))
        engine = db.make_engine(db_url)
        try:
            with running(env, tmp_path / "run.log") as proc:
                wait_until(lambda: http_get(proc.url("/healthz"))[0] == 200, 30, "/healthz")
                status, body = http_get(proc.url("/readyz"))
                assert status in (200, 503) and "checks" in json.loads(body)
                # Ready once every source has collected (bounded wait).
                wait_until(lambda: http_get(proc.url("/readyz"))[0] == 200, 60, "/readyz 200")
                assert http_get(proc.url("/metrics"), method="POST")[0] == 405
                assert http_get(proc.url("/nope"))[0] == 404
                end = scenario.end + timedelta(hours=3)
                wait_until(lambda: sim.now() >= end, 120, "the simulated week to pass", step=0.5)
                frozen = sim.freeze()
                wait_until(lambda: _settled(engine, frozen), 120, "a full round after the freeze")
                code, took = proc.terminate(timeout=20)
                assert code == 0, proc.log()[-3000:]
                assert took < 10 + 2  # [run] shutdown_timeout, plus process start-up slack
                log_lines = [
                    json.loads(line) for line in proc.log().splitlines() if line.startswith("{")
                ]
            _check_store(engine, sim, frozen)
            got = _check_slack_once_each(engine, slack)
            assert got[("batch_failure_rate", "firing")] >= 1
            assert got[("batch_expiry_risk", "firing")] >= 1
            # One log line per job run, with the contract's keys.
            runs = [r for r in log_lines if r.get("job") and "outcome" in r]
            assert runs and all(
                {"ts", "level", "logger", "job", "source", "msg"} <= set(r) for r in runs
            )
            assert slack.token not in proc.log() and scenario.admin_key not in proc.log()
        finally:
            engine.dispose()


def test_a_second_run_on_one_sqlite_file_is_refused(tmp_path: Path) -> None:
    scenario = build_scenario("small")
    db_url = _sqlite_url(tmp_path)
    with SimulatorServer(scenario) as sim:
        env = base_env(sim, None, db_url, tmp_path / "monitor.toml")
        env.update(write_config(tmp_path / "monitor.toml", sim, '[collect]\nbackfill = "1d"'))
        with running(env, tmp_path / "first.log") as first:
            wait_until(lambda: http_get(first.url("/healthz"))[0] == 200, 30, "/healthz")
            second = subprocess.run(
                [sys.executable, "-m", "monitor", "run", "--no-metrics"],
                env={**env, "PATH": "/usr/bin:/bin"},
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert second.returncode == 2
            assert f"another batch-monitor run (pid {first.pid}) holds" in second.stderr
            # One-shot commands still work beside it.
            collect = subprocess.run(
                [sys.executable, "-m", "monitor", "collect", "--source", "batches"],
                env={**env, "PATH": "/usr/bin:/bin"},
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert collect.returncode == 0, collect.stderr
            assert first.terminate(timeout=20)[0] == 0


def test_readyz_names_each_failed_check(tmp_path: Path) -> None:
    db_url = _sqlite_url(tmp_path)
    scenario = build_scenario("small")
    with SimulatorServer(scenario) as sim:
        env = base_env(sim, None, db_url, tmp_path / "monitor.toml")
        env.update(write_config(tmp_path / "monitor.toml", sim, ""))
        env["ANTHROPIC_BASE_URL"] = "http://127.0.0.1:9"  # nothing listens: collection fails
        with running(env, tmp_path / "run2.log") as proc:
            wait_until(lambda: http_get(proc.url("/healthz"))[0] == 200, 30, "/healthz")
            status, body = http_get(proc.url("/readyz"))
            assert status == 503
            data = json.loads(body)
            assert "source:batches" in data["failed"] and "source:usage" in data["failed"]
            assert {c["name"] for c in data["checks"] if c["ok"]} >= {"database", "migrations"}
            assert proc.terminate(timeout=20)[0] == 0


def test_run_once_runs_every_job_once(tmp_path: Path) -> None:
    scenario = build_scenario("small")
    db_url = _sqlite_url(tmp_path)
    with SimulatorServer(scenario) as sim:
        env = base_env(sim, None, db_url, tmp_path / "monitor.toml")
        env.update(write_config(tmp_path / "monitor.toml", sim, '[collect]\nbackfill = "3d"'))
        full = {**env, "PATH": "/usr/bin:/bin"}
        once = subprocess.run(
            [sys.executable, "-m", "monitor", "run", "--once"],
            env=full, capture_output=True, text=True, timeout=180, cwd=tmp_path,
        )  # fmt: skip
        assert once.returncode == 0, once.stderr
        engine = db.make_engine(db_url)
        with Session(engine) as s:
            counts = dict(
                s.execute(select(JobRun.job, func.count()).group_by(JobRun.job)).all()  # type: ignore[arg-type]
            )
        assert counts == dict.fromkeys(
            ["collect_batches", "collect_usage", "collect_cost", "rollup", "gauges", "advise",
             "evaluate", "deliver", "report", "prune"], 1
        )  # fmt: skip
        again = subprocess.run(
            [sys.executable, "-m", "monitor", "run", "--once"],
            env=full, capture_output=True, text=True, timeout=180, cwd=tmp_path,
        )  # fmt: skip
        assert again.returncode == 0
        assert "prune: skipped" in again.stdout  # not due again for a day
        engine.dispose()


@pytest.mark.postgres
def test_two_replicas_on_postgresql_fail_over(tmp_path: Path, slack: FakeSlack) -> None:
    db_url = _pg_database_url()
    migrate_fresh(db_url)
    engine = db.make_engine(db_url)
    scenario = build_scenario("small")
    with SimulatorServer(scenario, speed=SPEED, now=scenario.start - timedelta(minutes=30)) as sim:
        env = base_env(sim, slack, db_url, tmp_path / "monitor.toml")
        env.update(write_config(tmp_path / "monitor.toml", sim, CONFIG))
        try:
            with running(env, tmp_path / "a.log") as a, running(env, tmp_path / "b.log") as b:

                def leader_pid() -> int | None:
                    with Session(engine) as s:
                        row = s.get(Lease, "scheduler")
                        now = s.execute(select(func.now())).scalar_one()
                        return row.pid if row is not None and row.expires_at > now else None

                first = wait_until(leader_pid, 30, "a leader")
                assert first in (a.pid, b.pid)
                leader, follower = (a, b) if first == a.pid else (b, a)
                wait_until(
                    lambda: sim.now() >= scenario.start + timedelta(hours=20), 60, "mid-scenario"
                )
                leader.kill()
                killed_at = time.monotonic()
                wait_until(lambda: leader_pid() == follower.pid, 15, "the follower to take over")
                took_over = time.monotonic() - killed_at
                assert took_over <= 3 + 2  # one lease period plus a renewal round
                end = scenario.end + timedelta(hours=3)
                wait_until(lambda: sim.now() >= end, 120, "the simulated week to pass", step=0.5)
                frozen = sim.freeze()
                wait_until(lambda: _settled(engine, frozen), 120, "a full round after the freeze")
                assert follower.terminate(timeout=20)[0] == 0
            _check_store(engine, sim, frozen)
            _check_slack_once_each(engine, slack)
            with Session(engine) as s:
                tokens = s.execute(select(Lease.token)).scalar_one()
            assert tokens >= 2  # the takeover moved the fencing token on
        finally:
            engine.dispose()


def test_exit_code_of_a_bad_configuration_is_2(tmp_path: Path) -> None:
    (tmp_path / "monitor.toml").write_text('[run]\nlease = "soon"\n')
    result = subprocess.run(
        [sys.executable, "-m", "monitor", "run"],
        env={"PATH": "/usr/bin:/bin", "MONITOR_CONFIG": str(tmp_path / "monitor.toml"),
             "MONITOR_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}"},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2 and "run.lease" in result.stderr


def test_an_unmigrated_database_is_refused_with_the_command_to_run(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "monitor", "run", "--no-metrics"],
        env={"PATH": "/usr/bin:/bin", "MONITOR_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}"},
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 1 and "batch-monitor db upgrade" in result.stderr
