"""Load: a big organisation through the daemon, scraped by a real Prometheus, with Slack.

The simulator's ``load`` scenario: many workspaces, thousands of batches a day (one of them a day
of 100,000 requests under soak), real-time chat in every workspace every hour for the span (a
month under soak), so the first usage and cost reads backfill a month of hourly buckets. One
``batch-monitor run`` follows the simulator's sped-up clock over the last part of the span with
Slack delivery on, while Prometheus scrapes it (every 15 s under soak).

The promise: every job stays inside its interval (each run's wall time is shorter than the
interval the job runs at in service, while the sped-up clock brings work 60 times faster than
service would under soak, 360 times in the short version), no job fails, every scrape succeeds,
and at the end the store holds every batch the simulator made. The collectors poll at their
service interval of simulated time, so each poll has a service poll's new data, 60 times as
often; under soak the jobs that cost the same per run whatever arrived (rollup, gauges,
advise, evaluate, deliver) run at their service interval of wall time (``Size.cadence``). The
figures: CPU, peak RSS, job durations (p50 and max per job) and scrape times.
"""

from __future__ import annotations

import os
import sqlite3
import statistics
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from monitor.config import Settings
from monitor.scheduler import SOURCE_JOBS, build_jobs
from monitor.simulator import SimulatorServer, build_scenario
from tests.daemonkit import base_env, running, wait_until, write_config
from tests.fakeslack import FakeSlack
from tests.promkit import PrometheusServer

TICK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


@dataclass(frozen=True)
class Size:
    """The organisation and how the run goes."""

    workspaces: int
    batches_per_day: int
    big_requests: int
    history_days: float  # real-time usage: the hourly buckets the first read backfills
    batch_days: float  # batches are made in the last ``batch_days`` of the span
    live: timedelta  # how much of the span's end the daemon lives through
    speed: float  # simulated seconds per wall second
    scrape: str  # Prometheus scrape interval (wall time)
    big_per_day: int = 1
    # The jobs whose cost is per run, not per item of new data (rollup, gauges, report, advise,
    # evaluate, deliver) run every ``interval * cadence`` of simulated time. At ``cadence ==
    # speed`` they run as often per wall second as in service: sped up, each would run
    # ``speed`` times as often as in service and the daemon would do that many times the
    # service's fixed work on top of the sped-up data.
    cadence: float = 1.0


SHORT = Size(10, 500, 10_000, 3, 0.5, timedelta(hours=6), 360, "5s")
SOAK = Size(100, 5_000, 100_000, 30, 1.0, timedelta(hours=12), 60, "15s", big_per_day=2, cadence=60)


@dataclass
class Sampler:
    """``(wall time, CPU seconds, RSS MB)`` of one process, four times a second."""

    pid: int
    rows: list[tuple[float, float, float]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self._stop.is_set():
            try:
                stat = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
                statm = Path(f"/proc/{self.pid}/statm").read_text().split()
            except (FileNotFoundError, ProcessLookupError):
                return
            cpu = (int(stat[11]) + int(stat[12])) / TICK
            self.rows.append((time.time(), cpu, int(statm[1]) * PAGE_KB / 1024))
            self._stop.wait(0.25)

    def stop(self) -> None:
        self._stop.set()


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        yield fake


def _intervals(settings: Settings) -> dict[str, float]:
    """Return each job's interval in service (seconds), the source jobs' from ``[collect]``."""
    intervals = {j.name: j.interval.total_seconds() for j in build_jobs(settings)}
    c = settings.collect
    for source, every in (
        ("batches", c.batches_interval),
        ("usage", c.usage_interval),
        ("cost", c.usage_interval),
        ("logs", c.logs_interval),
    ):
        intervals[SOURCE_JOBS[source]] = every.total_seconds()
    return intervals


def _config(settings: Settings, cadence: float) -> str:
    """Return the TOML of the run: a month's backfill, the fixed-cost jobs at ``cadence``."""

    def every(interval: timedelta) -> str:
        return f'"{round(interval.total_seconds() * cadence)}s"'

    return "\n".join(
        [
            "[collect]",
            'backfill = "31d"',
            "[run]",
            f"rollup_interval = {every(settings.run.rollup_interval)}",
            "[advisor]",
            f"interval = {every(settings.advisor.interval)}",
            "[alerting]",
            f"interval = {every(settings.alerting.interval)}",
            f"delivery_interval = {every(settings.alerting.delivery_interval)}",
        ]
    )


def _job_runs(db: Path) -> list[tuple[str, float, str, str | None]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(
            "SELECT job, duration_seconds, outcome, error FROM job_run "
            "WHERE duration_seconds IS NOT NULL"
        ).fetchall()


def _stored_batches(db: Path) -> set[str]:
    with sqlite3.connect(db) as conn:
        return {row[0] for row in conn.execute("SELECT id FROM batch")}


def test_a_big_organisation_keeps_every_job_inside_its_interval(
    tmp_path: Path, slack: FakeSlack, soak: bool, figures: Any
) -> None:
    size = SOAK if soak else SHORT
    scenario = build_scenario(
        "load",
        seed=11,
        days=size.history_days,
        workspaces=size.workspaces,
        batches_per_day=size.batches_per_day,
        big_requests=size.big_requests,
        big_per_day=size.big_per_day,
        batch_days=size.batch_days,
        start=datetime(2026, 10, 1, tzinfo=UTC),
    )
    begin = scenario.end - size.live
    finish = scenario.end + timedelta(minutes=10)
    wall = (finish - begin).total_seconds() / size.speed
    db = tmp_path / "monitor.db"
    config = tmp_path / "monitor.toml"
    settings = Settings()
    intervals = _intervals(settings)
    with SimulatorServer(scenario, speed=size.speed, now=begin) as sim:
        env = write_config(config, sim, _config(settings, size.cadence))
        env.update(base_env(sim, slack, f"sqlite:///{db}", config))
        with running(env, tmp_path / "daemon.log", "--upgrade") as proc:
            sampler = Sampler(proc.pid)
            thread = threading.Thread(target=sampler.run, daemon=True)
            thread.start()
            target = f"127.0.0.1:{proc.port}"
            prom = PrometheusServer(tmp_path / "prometheus", [target], scrape_interval=size.scrape)
            try:
                prom.start()
                deadline = time.monotonic() + wall
                while time.monotonic() < deadline:
                    assert proc.proc.poll() is None, proc.log()[-3000:]
                    time.sleep(0.5)
                sim.freeze()
                # The last round at the frozen end: every batch ended by then is collected.
                # A poll in flight at the freeze may run its whole budget; the next one lists
                # every workspace.
                budget = settings.collect.poll_budget.total_seconds()
                wait_until(
                    lambda: _stored_batches(db) >= _ended(scenario, sim.now()),
                    timeout=max(120.0, 2 * budget + 60),
                    what="the daemon to catch up with the simulator's batches",
                    step=1.0,
                )
                scrapes = _scrape_figures(prom, target)
            finally:
                prom.stop()
                sampler.stop()
                thread.join(timeout=5)
            code, _ = proc.terminate(timeout=60)
            assert code == 0, proc.log()[-3000:]
        now = sim.now()
    truth = scenario.truth(now)
    runs = _job_runs(db)
    failed = [(job, error) for job, _, outcome, error in runs if outcome != "ok"]
    assert not failed, f"jobs failed under load: {failed[:5]}"
    per_job: dict[str, list[float]] = {}
    for job, seconds, _, _ in runs:
        per_job.setdefault(job, []).append(seconds)
    outside = {
        job: (max(d), intervals[job]) for job, d in per_job.items() if max(d) >= intervals[job]
    }
    assert not outside, f"jobs that outlasted their interval (max s, interval s): {outside}"
    # The recurring jobs ran again and again: the load went through the schedule.
    for job in (SOURCE_JOBS["batches"], SOURCE_JOBS["usage"], "evaluate", "deliver"):
        assert len(per_job.get(job, ())) >= 2, (job, {j: len(d) for j, d in per_job.items()})
    stored = _stored_batches(db)
    missing = set(truth.batches) - stored
    assert not missing, f"{len(missing)} batches never stored, e.g. {sorted(missing)[:3]}"
    assert scrapes["up_min"] == 1.0, f"a scrape failed: {scrapes}"
    cpu = sampler.rows[-1][1] if sampler.rows else float("nan")
    figures(
        workspaces=size.workspaces,
        batches=len(truth.batches),
        batch_requests=sum(b.request_count for b in truth.batches.values()),
        simulated_hours=round(size.live.total_seconds() / 3600, 1),
        wall_seconds=round(wall, 1),
        cpu_seconds=round(cpu, 1),
        cpu_share_of_a_core=round(cpu / wall, 3),
        rss_peak_mb=round(max(r[2] for r in sampler.rows), 1),
        slack_posts=len(slack.posts()),
        jobs={
            job: {
                "runs": len(d),
                "p50_s": round(statistics.median(d), 3),
                "max_s": round(max(d), 3),
                "interval_s": intervals[job],
            }
            for job, d in sorted(per_job.items())
        },
        **scrapes,
    )


def _ended(scenario: Any, now: datetime) -> set[str]:
    """Return the ids of the batches visible by ``now`` (created by then)."""
    return {b.id for b in scenario.batches if b.created_at <= now}


def _scrape_figures(prom: PrometheusServer, target: str) -> dict[str, float]:
    """Return scrape count, success and durations Prometheus saw for ``target``."""
    sel = f'{{instance="{target}"}}'
    prom.wait_for_scrapes(2)
    figures = {
        "scrapes": prom.value(f"count_over_time(up{sel}[1h])") or 0.0,
        "up_min": prom.value(f"min_over_time(up{sel}[1h])") or 0.0,
        "scrape_p50_ms": 1000
        * (prom.value(f"quantile_over_time(0.5, scrape_duration_seconds{sel}[1h])") or 0.0),
        "scrape_max_ms": 1000
        * (prom.value(f"max_over_time(scrape_duration_seconds{sel}[1h])") or 0.0),
        "samples_scraped": prom.value(f"max_over_time(scrape_samples_scraped{sel}[1h])") or 0.0,
    }
    return {k: round(v, 1) for k, v in figures.items()}
