"""The daemon over a simulated day of the ``large`` scenario: job durations, CPU and memory.

Two phases, each a real ``batch-monitor run`` process on a fresh SQLite store, against the
Anthropic simulator serving the ``large`` scenario (a 100,000-request batch, two workspaces, a
day of usage and cost reports):

1. **A simulated day** at ``BENCH_DAEMON_SPEED`` (default 144: the day in 10 minutes). The
   daemon follows the simulator's clock (``MONITOR_CLOCK``), so every job runs as often as in
   a day of service, only closer together. Each job's durations (wall time: the work does not
   speed up) are compared with its interval; RSS is sampled throughout (steady, and whether it
   grows from the first half of the day to the second).
2. **Idle at real speed** for ``BENCH_DAEMON_IDLE`` seconds (default 150) on the same store,
   the simulator's day over: the CPU the process uses between jobs (samples with no job
   running) and on average, after its first 20 s (start-up), against the target of 2 % of a
   core.

The floor: ``batch-monitor run --once`` on another fresh store at the day's end: every job
once, so the whole day's data collected, rolled up, evaluated and reported in one go. The
day's CPU is shown against it: what running all day costs over doing the same work at once.

Targets (issue 8): every job inside its interval, idle CPU < 2 % of a core, RSS < 150 MB steady
and not growing.
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from monitor.config import Settings
from monitor.scheduler import SOURCE_JOBS, build_jobs
from monitor.simulator import SimulatorServer, build_scenario

SPEED = float(os.environ.get("BENCH_DAEMON_SPEED", "144"))
IDLE_SECONDS = float(os.environ.get("BENCH_DAEMON_IDLE", "150"))
SAMPLE_EVERY = 0.25
WARMUP = 20.0  # seconds of the idle phase left out of its CPU figures (start-up)
TICK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


@dataclass
class Samples:
    """``(wall time, CPU seconds, RSS MB)`` of one process, every ``SAMPLE_EVERY`` seconds."""

    pid: int
    rows: list[tuple[float, float, float]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self._stop.is_set():
            try:
                self.rows.append((time.time(), _cpu(self.pid), _rss_mb(self.pid)))
            except (FileNotFoundError, ProcessLookupError, IndexError):
                return
            self._stop.wait(SAMPLE_EVERY)

    def stop(self) -> None:
        self._stop.set()


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def _rss_mb(pid: int) -> float:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_KB / 1024


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config(path: Path, sim: SimulatorServer) -> dict[str, str]:
    lines, env = [], {}
    for i, w in enumerate(sim.scenario.workspaces):
        env[f"BENCH_KEY_{i}"] = w.api_key
        default = "true" if w.id == sim.scenario.default_workspace.id else "false"
        lines += ["[[workspaces]]", f'id = "{w.id}"', f'name = "{w.name}"',
                  f'api_key_env = "BENCH_KEY_{i}"', f"default = {default}"]  # fmt: skip
    path.write_text('[collect]\nbackfill = "2d"\n\n' + "\n".join(lines) + "\n")
    return env


def _env(tmp: Path, sim: SimulatorServer, clock_spec: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "MONITOR_"))}
    env.update(_config(tmp / "monitor.toml", sim))
    env.update(
        MONITOR_CONFIG=str(tmp / "monitor.toml"),
        MONITOR_DATABASE_URL=f"sqlite:///{tmp / 'monitor.db'}",
        ANTHROPIC_BASE_URL=sim.url,
        ANTHROPIC_ADMIN_KEY=sim.scenario.admin_key,
        MONITOR_METRICS_PORT=str(_free_port()),
    )
    if clock_spec:
        env["MONITOR_CLOCK"] = clock_spec
    return env


def _run(env: dict[str, str], log: Path, seconds: float | None, *args: str) -> Samples:
    """Run ``batch-monitor run`` for ``seconds`` (None: until it exits); return its samples."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "monitor", "run", "--upgrade", *args],
            env=env, stdout=out, stderr=subprocess.STDOUT, cwd=log.parent,
        )  # fmt: skip
        samples = Samples(proc.pid)
        sampler = threading.Thread(target=samples.run, daemon=True)
        sampler.start()
        try:
            if seconds is None:
                proc.wait(timeout=1800)
            else:
                time.sleep(seconds)
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=60)
        finally:
            samples.stop()
            sampler.join(timeout=5)
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    return samples


@dataclass(frozen=True)
class JobRun:
    job: str
    started: float  # wall epoch seconds
    seconds: float
    outcome: str


def _job_runs(
    db_path: Path, origin: datetime, epoch: float, speed: float, after_id: int = 0
) -> list[JobRun]:
    """Read ``job_run`` rows after ``after_id``; map their business times back to wall time."""
    with sqlite3.connect(db_path) as conn:
        rows = conn.execute(
            "SELECT job, started_at, duration_seconds, outcome FROM job_run "
            "WHERE duration_seconds IS NOT NULL AND id > ?",
            (after_id,),
        ).fetchall()
    out = []
    for job, started, seconds, outcome in rows:
        at = datetime.fromisoformat(started).replace(tzinfo=UTC)
        wall = epoch + (at - origin).total_seconds() / speed
        out.append(JobRun(job, wall, float(seconds), outcome))
    return out


def _idle_cpu(samples: Samples, runs: list[JobRun]) -> tuple[float, float]:
    """Return (share of a core between jobs, share of a core on average) over the samples."""
    busy = [(r.started - 0.05, r.started + r.seconds + 0.05) for r in runs]
    idle_cpu = idle_wall = 0.0
    # Leave out start-up (imports, migrations check, the first round of jobs).
    rows = [r for r in samples.rows if r[0] >= samples.rows[0][0] + WARMUP] if samples.rows else []
    for (t0, c0, _), (t1, c1, _) in itertools.pairwise(rows):
        if any(a < t1 and t0 < b for a, b in busy):
            continue
        idle_cpu += c1 - c0
        idle_wall += t1 - t0
    total = (rows[-1][1] - rows[0][1]) / (rows[-1][0] - rows[0][0]) if len(rows) > 1 else 0.0
    return (idle_cpu / idle_wall if idle_wall else 0.0), total


def main() -> None:
    """Run the two phases and print the figures."""
    scenario = build_scenario("large")
    settings = Settings()
    intervals = {j.name: j.interval.total_seconds() for j in build_jobs(settings)}
    c = settings.collect
    for source, every in (("batches", c.batches_interval), ("usage", c.usage_interval),
                          ("cost", c.usage_interval), ("logs", c.logs_interval)):  # fmt: skip
        intervals[SOURCE_JOBS[source]] = every.total_seconds()
    with tempfile.TemporaryDirectory(prefix="bench_daemon_") as tmp_name:
        tmp = Path(tmp_name)
        log = tmp / "daemon.log"

        # The floor: every job once, at the day's end, on its own store.
        (tmp / "once").mkdir()
        end = scenario.end + timedelta(minutes=5)
        with SimulatorServer(scenario, speed=1.0, now=end) as sim:
            once = _run(_env(tmp / "once", sim, sim.clock_spec()), log, None, "--once")
        floor_cpu = once.rows[-1][1] if once.rows else float("nan")

        # Phase 1: the day, sped up.
        day_seconds = (86_400 + 600) / SPEED
        start = scenario.start - timedelta(minutes=5)
        with SimulatorServer(scenario, speed=SPEED, now=start) as sim:
            spec = sim.clock_spec()
            origin, epoch = sim.now(), time.time()
            print(f"a simulated day at {SPEED:g}x: {day_seconds:.0f} s of wall time", flush=True)
            day = _run(_env(tmp, sim, spec), log, day_seconds)
            runs = _job_runs(tmp / "monitor.db", origin, epoch, SPEED)
        with sqlite3.connect(tmp / "monitor.db") as conn:
            last_id = conn.execute("SELECT coalesce(max(id), 0) FROM job_run").fetchone()[0]

        # Phase 2: idle at real speed, the day over.
        with SimulatorServer(scenario, speed=1.0, now=scenario.end + timedelta(minutes=5)) as sim:
            spec = sim.clock_spec()
            origin2, epoch2 = sim.now(), time.time()
            print(f"idle at real speed: {IDLE_SECONDS:.0f} s", flush=True)
            idle = _run(_env(tmp, sim, spec), log, IDLE_SECONDS)
            idle_runs = _job_runs(tmp / "monitor.db", origin2, epoch2, 1.0, last_id)
        _report(intervals, runs, day, idle, idle_runs, floor_cpu)


def _report(
    intervals: dict[str, float],
    runs: list[JobRun],
    day: Samples,
    idle: Samples,
    idle_runs: list[JobRun],
    floor_cpu: float,
) -> None:
    print(f"\n{'job':<16} {'runs':>5} {'failed':>6} {'p50 s':>8} {'max s':>8} {'interval s':>10} "
          f"{'max/interval':>12}")  # fmt: skip
    inside = True
    for job in sorted({r.job for r in runs}):
        mine = [r for r in runs if r.job == job]
        durations = [r.seconds for r in mine]
        failed = sum(r.outcome != "ok" for r in mine)
        interval = intervals.get(job, float("nan"))
        share = max(durations) / interval
        inside = inside and share < 1
        print(
            f"{job:<16} {len(mine):>5} {failed:>6} {statistics.median(durations):>8.3f} "
            f"{max(durations):>8.3f} {interval:>10.0f} {share:>11.1%}"
        )
    rss = [r[2] for r in day.rows]
    # Growth between the second and the last quarter of the day: the first quarter holds the
    # start-up and the 100,000-request batch, a step rather than a leak.
    q = len(rss) // 4
    first, second = statistics.median(rss[q : 2 * q] or rss), statistics.median(rss[3 * q :] or rss)
    idle_rss = statistics.median([r[2] for r in idle.rows]) if idle.rows else float("nan")
    day_cpu = day.rows[-1][1] if day.rows else float("nan")
    between, average = _idle_cpu(idle, idle_runs)
    print(f"\nCPU over the day: {day_cpu:.1f} s ({day_cpu / floor_cpu:.0f}x one --once round of "
          f"{floor_cpu:.2f} s)")  # fmt: skip
    growth = second / first - 1
    print(f"RSS: peak {max(rss):.0f} MB; median second quarter of the day {first:.0f} MB, last "
          f"quarter {second:.0f} MB ({growth:+.1%}); idle {idle_rss:.0f} MB")  # fmt: skip
    print(f"idle CPU at real speed: {between:.2%} of a core between jobs, {average:.2%} on "
          f"average ({len(idle_runs)} job runs in {IDLE_SECONDS:.0f} s)")  # fmt: skip
    verdicts = [
        ("every job inside its interval", inside),
        ("idle CPU < 2 % of a core", between < 0.02),
        ("RSS < 150 MB steady", max(second, idle_rss) < 150),
        ("RSS not growing (last quarter <= second quarter + 10 %)", second <= first * 1.1),
    ]
    for text, ok in verdicts:
        print(f"{'within' if ok else 'OUTSIDE'}: {text}")
