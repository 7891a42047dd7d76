"""Helpers of the crash suite: run ``batch-monitor run`` through a simulated timeline with kills.

A timeline is a list of business times. At each one the simulator is frozen there and
``batch-monitor run --once`` runs as a subprocess with the same frozen clock, so a run is a
deterministic function of its timeline. A step may be killed: by a crash point the process
fires itself (``MONITOR_CRASHPOINT``) or by a SIGKILL from here at a seeded random moment; it
is then restarted ``RESTART`` later, and that restart time joins the timeline. Free-running
phases run the daemon itself on the simulator's accelerated clock and SIGKILL it at random.

The reference is the same timeline without a single kill, run in this process (the same
``Daemon.run_once`` the command calls, a new one per step, as a new process would build), and
its free-running phases as hourly steps.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, select, text
from sqlmodel import Session, SQLModel, col

from monitor import clock, db, fmt, lease, retention
from monitor.config import load_settings
from monitor.models import AlertEvent, AlertState, Notification
from monitor.scheduler import Daemon
from monitor.simulator import Scenario, SimulatorServer
from monitor.summary import build_summary
from tests.daemonkit import RunProcess, base_env, wait_until, write_config
from tests.fakeslack import FakeSlack, Recorded

H = timedelta(hours=1)
# A killed step is run again this much later: every job (30 min intervals) is due again, and a
# delivery claim left by the dead process (15 min) has expired.
RESTART = timedelta(minutes=30)
RAW = timedelta(hours=12)  # [retention] raw below: what is older goes at each prune
CRASHPOINTS = ("results.ingest", "alerts.transition", "delivery.sent", "retention.prune")

CONFIG = """
[collect]
batches_interval = "30m"
usage_interval = "30m"
backfill = "1d"
final_after = "1h"

[alerting]
default_rules = false
interval = "30m"
delivery_interval = "30m"
claim_timeout = "15m"

[run]
lease = "{lease}"
shutdown_timeout = "10s"
rollup_interval = "30m"

[retention]
raw = "12h"

[report]
dir = "{report_dir}"

# Rules whose episodes last half a day or more; reminders (rare) fall off the step grid.
# By workspace, not workload: a batch's workload is known once its results are read, and a
# daemon starting after downtime evaluates while the first poll lists batches it has not read
# yet (they would count as workload "unassigned" for that round).
[[rules]]
name = "batch_failure_rate"
kind = "batch_failure_rate"
threshold = 0.02
window = "24h"
group_by = ["workspace"]
severity = "critical"
repeat_interval = "169h"

[[rules]]
name = "batch_expiry_risk"
kind = "batch_expiry_risk"
threshold = "12h"
severity = "warning"
repeat_interval = "169h"

[[rules]]
name = "batch_turnaround_p95"
kind = "batch_turnaround_p95"
threshold = "90m"
window = "24h"
severity = "warning"
repeat_interval = "169h"
"""


def utc(value: datetime) -> datetime:
    """Return ``value`` as an aware UTC datetime (whatever a driver handed back)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def frozen_clock(t: datetime) -> str:
    """Return a ``MONITOR_CLOCK`` that stands still at ``t`` (for ``run --once`` steps)."""
    return clock.SimulatedClock(t, clock.epoch(), 1e-9).spec()


def migrated_sqlite(path: Path) -> str:
    """Create a migrated SQLite database at ``path``; return its URL."""
    url = f"sqlite:///{path}"
    engine = db.make_engine(url)
    db.upgrade(engine)
    engine.dispose()
    return url


class Monitor:
    """One monitor installation: a database, a config file, a fake Slack, a simulator."""

    def __init__(
        self, scenario: Scenario, db_url: str, workdir: Path, slack: FakeSlack, lease: str = "3s"
    ) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.scenario = scenario
        self.db_url = db_url
        self.workdir = workdir
        self.slack = slack
        self.config = workdir / "monitor.toml"
        self.lease = lease
        self.engine = db.make_engine(db_url)
        self.events: dict[tuple[str, str, datetime], dict[str, Any]] = {}
        self.timeline: list[datetime] = []

    def env(self, sim: SimulatorServer) -> dict[str, str]:
        """Return the environment that points the monitor at ``sim`` (config rewritten)."""
        env = base_env(sim, self.slack, self.db_url, self.config)
        env["MONITOR_SLACK_CHANNEL"] = "C0ALERTS"  # by id: what the in-doubt look-up needs
        extra = CONFIG.replace("{report_dir}", str(self.workdir / "reports"))
        extra = extra.replace("{lease}", self.lease)
        env.update(write_config(self.config, sim, extra))
        return env

    def record_events(self) -> None:
        """Add the alert events stored now to the history (retention deletes old ones)."""
        with Session(self.engine) as s:
            for e in s.execute(select(AlertEvent)).scalars():
                key = (e.fingerprint, e.transition, utc(e.created_at))
                self.events[key] = {
                    "rule": e.rule,
                    "labels": e.labels,
                    "status": e.status,
                    "reason": e.status_reason,
                }

    def close(self) -> None:
        """Release the engine."""
        self.engine.dispose()


# --- the crash run ---------------------------------------------------------------------------


@dataclass
class Launch:
    """How one ``batch-monitor run`` process ended."""

    rc: int
    killed_by: str | None  # "crashpoint:<name>", "timer", or None (it finished)
    crashpoint: str | None  # the crash point that fired, if one did
    lapsed: bool  # it lost the lease on the way (and skipped the jobs after that)
    ran_nothing: bool  # every job skipped: it never got the lease (a dead one's still held)
    after_job: str | None  # the last job it finished before it died
    log: str


@dataclass
class Kills:
    """Every kill of a crash run, for the figures and the failure messages."""

    by_crashpoint: Counter[str] = field(default_factory=Counter)
    by_timer: Counter[str] = field(default_factory=Counter)  # by the job they interrupted
    free_running: int = 0
    missed_timers: int = 0  # the process finished before its timer went off
    max_restart_offset: timedelta = timedelta(0)  # how far restarts pushed a step on
    lapses: int = 0  # --once steps that lost the lease on the way (run again, like a kill)
    trail: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        """Return how many processes were SIGKILLed."""
        return sum(self.by_crashpoint.values()) + sum(self.by_timer.values()) + self.free_running


def last_job(log_text: str) -> str | None:
    last = None
    for line in log_text.splitlines():
        if not line.startswith("{"):
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("job") and "outcome" in rec:
            last = str(rec["job"])
    return last


def _leads(proc: RunProcess) -> bool:
    return "leads (token" in proc.log()


def wait_lease_free(engine: Engine, timeout: float = 20.0) -> None:
    """Wait until no live process holds the scheduler lease (a killed one's expires)."""

    def free() -> bool:
        with Session(engine) as s:
            return lease.current_leader(s) is None

    wait_until(free, timeout, "the killed process's lease to expire", step=0.1)


def run_once(
    mon: Monitor,
    sim: SimulatorServer,
    t: datetime,
    n: int,
    *,
    crashpoint: str | None = None,
    kill_after: float | None = None,
    timeout: float = 240.0,
) -> Launch:
    """Run ``batch-monitor run --once`` at the frozen time ``t``; maybe kill it.

    ``crashpoint`` is the ``MONITOR_CRASHPOINT`` value; ``kill_after`` SIGKILLs the process
    that many seconds after it took the lease (when it is still running).
    """
    sim.set_now(t)
    env = mon.env(sim)
    env["MONITOR_CLOCK"] = frozen_clock(t)
    if crashpoint:
        env["MONITOR_CRASHPOINT"] = crashpoint
    proc = RunProcess(env, mon.workdir / f"launch-{n:03d}.log", "--once")
    timer = False
    try:
        deadline = time.monotonic() + timeout
        if kill_after is not None:
            while proc.proc.poll() is None and not _leads(proc):
                assert time.monotonic() < deadline, "no lease taken:\n" + proc.log()[-3000:]
                time.sleep(0.02)
            time.sleep(kill_after)
            if proc.proc.poll() is None:
                proc.proc.send_signal(signal.SIGKILL)
                timer = True
        try:
            rc = proc.proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            raise AssertionError(f"run --once at {t} hung:\n{proc.log()[-3000:]}") from None
    finally:
        proc.stop()
    log_text = proc.log_path.read_text(errors="replace")
    point = fired(log_text)
    killed_by = None
    if rc == -signal.SIGKILL:
        killed_by = f"crashpoint:{point}" if point else "timer" if timer else "unknown"
    lapsed = "no longer leads" in log_text
    outcomes = re.findall(r"^[a-z_]+: (\w+), \d+ item", log_text, re.MULTILINE)
    # Refused ("another replica leads"), or found the lease free only after its one try.
    ran_nothing = "another replica leads" in log_text or (
        bool(outcomes) and all(o == "skipped" for o in outcomes)
    )
    return Launch(rc, killed_by, point, lapsed, ran_nothing, last_job(log_text), log_text)


@contextmanager
def daemon(
    mon: Monitor, sim: SimulatorServer, n: int, *, crashpoint: str | None = None
) -> Iterator[RunProcess]:
    """Run the free-running daemon on ``sim``'s accelerated clock for the block."""
    env = mon.env(sim)
    if crashpoint:
        env["MONITOR_CRASHPOINT"] = crashpoint
    proc = RunProcess(env, mon.workdir / f"launch-{n:03d}.log")
    try:
        yield proc
    finally:
        proc.stop()


def fired(log_text: str) -> str | None:
    """Return the crash point a process's log says fired, if any."""
    found = re.search(r"^crashpoint (\S+) \(hit \d+\): SIGKILL$", log_text, re.MULTILINE)
    return found.group(1) if found else None


# --- the reference ---------------------------------------------------------------------------


def reference_step(mon: Monitor, sim: SimulatorServer, t: datetime) -> None:
    """Run every due job once at ``t`` in this process, as ``run --once`` does."""
    sim.set_now(t)
    env = mon.env(sim)
    saved = clock._SIMULATED
    clock._SIMULATED = clock.SimulatedClock(t, clock.epoch(), 1e-9)
    try:
        settings = load_settings(environ=env)
        engine = db.make_engine(settings.database_url)
        try:
            outcomes = Daemon(settings, engine).run_once()
        finally:
            engine.dispose()
    finally:
        clock._SIMULATED = saved
    bad = [o for o in outcomes if o.outcome not in ("ok", "skipped")]
    assert not bad, f"the reference run failed at {t}: {bad}"
    mon.timeline.append(t)
    mon.record_events()


# --- the end state ---------------------------------------------------------------------------

# Columns that say when the monitor did something (not what it found): they differ with timing.
_WHEN_COLUMNS = {
    "id", "fetched_at", "updated_at", "first_seen_at", "results_ingested_at", "marked_at",
}  # fmt: skip
# Tables compared whole, and tables compared from the retention horizon on (by this column).
_WHOLE = ("batch", "batch_usage", "batch_error", "usage_day", "spend_day", "batch_day",
          "call_day", "spend_total", "batch_total")  # fmt: skip
_RAW = {"usage_bucket": "bucket_start", "cost_bucket": "day", "call_bucket": "hour"}


def _rows(session: Session, table: str, since: datetime | None = None) -> list[tuple[Any, ...]]:
    t = SQLModel.metadata.tables[table]
    cols = [c for c in t.columns if c.name not in _WHEN_COLUMNS]
    stmt = select(*cols)
    if since is not None:
        stmt = stmt.where(t.c[_RAW[table]] >= since)
    rows = [tuple(_norm(v) for v in r) for r in session.execute(stmt)]
    return sorted(rows, key=repr)


def _norm(value: Any) -> Any:
    if isinstance(value, datetime):
        return utc(value)
    return value


def store(mon: Monitor, now: datetime, horizon: datetime) -> dict[str, Any]:
    """Return what the store holds: tables, summary of every day, alert states."""
    out: dict[str, Any] = {}
    with Session(mon.engine) as s:
        for table in _WHOLE:
            out[table] = _rows(s, table)
        for table in _RAW:
            out[table] = _rows(s, table, horizon)
        day = fmt.day_floor(mon.scenario.start - timedelta(days=1))
        while day < now:
            out[f"summary {day:%Y-%m-%d}"] = build_summary(
                s, day, day + timedelta(days=1), now
            ).to_json()
            day += timedelta(days=1)
        # Active alerts (an inactive row only says a label set was measured once).
        out["alert_state"] = sorted(
            (a.fingerprint, a.rule, a.severity, a.labels, a.state, a.value, a.threshold)
            for a in s.execute(select(AlertState)).scalars()
            if a.state != "inactive"
        )
        # Notifications by channel and outcome: the rows pruned are counted into the tally
        # before they go, so the two together are what was ever recorded (none twice).
        counted = Counter(retention.tallies(s, "notifications"))
        for channel, outcome, n in s.execute(
            select(col(Notification.channel), col(Notification.outcome), func.count()).group_by(
                col(Notification.channel), col(Notification.outcome)
            )
        ):
            counted[f"{channel}|{outcome}"] += int(n)
        out["notifications"] = dict(sorted(counted.items()))
    return out


def notifications_per_event(mon: Monitor) -> dict[int, int]:
    """Return how many successful Slack notifications each stored event has."""
    with Session(mon.engine) as s:
        rows = s.execute(
            text(
                "SELECT e.id, COUNT(n.id) FROM alert_event e LEFT JOIN notification n "
                "ON n.event_id = e.id AND n.outcome = 'ok' AND n.channel = 'slack' GROUP BY e.id"
            )
        ).all()
    return {int(i): int(c) for i, c in rows}


# --- Slack -----------------------------------------------------------------------------------


def accepted_posts(slack: FakeSlack) -> list[Recorded]:
    """Return the messages Slack accepted (chat.postMessage answered ok)."""
    return slack.posts()


def post_key(r: Recorded) -> str:
    """Return what makes a post unique: where it went and everything it says."""
    return json.dumps(
        [r.channel, r.body.get("thread_ts"), r.body.get("text"), r.body.get("blocks")],
        sort_keys=True,
    )


def event_post_marks(event: tuple[str, str, datetime], info: dict[str, Any]) -> tuple[str, str]:
    """Return (title part, context part) a post of this alert event carries."""
    word = {"firing": "Fired", "reminder": "Reminder", "resolved": "Resolved"}[event[1]]
    return info["rule"], f"{word} {event[2]:%Y-%m-%d %H:%M} UTC"


def posts_of(posts: list[Recorded], event: tuple[str, str, datetime], info: dict[str, Any]) -> int:
    """Count the posts that delivered this alert event (rule, transition, time and scope)."""
    rule, when = event_post_marks(event, info)
    labels = json.loads(info["labels"])
    scope = ", ".join(
        f"{k}={v}" for k, v in sorted(labels.items()) if k not in ("rule", "severity")
    )
    kind = {"firing": "is firing", "reminder": "Still firing", "resolved": "Resolved"}[event[1]]
    n = 0
    for r in posts:
        texts = r.texts()
        if (
            rule in r.title
            and kind in r.title
            and any(when in t for t in texts)
            and (not scope or any(scope in t for t in texts))
        ):
            n += 1
    return n


def transitions(events: dict[tuple[str, str, datetime], dict[str, Any]]) -> dict[str, list[Any]]:
    """Return each alert's transitions in order: fingerprint -> [(transition, created_at)]."""
    out: dict[str, list[Any]] = {}
    for fp, transition, at in sorted(events, key=lambda k: (k[0], k[2])):
        out.setdefault(fp, []).append((transition, at))
    return out


def seeded(seed: int) -> random.Random:
    """Return the suite's random generator for ``seed``."""
    return random.Random(seed)


def env_seed(default: int) -> int:
    """Return the seed: ``MONITOR_CRASH_SEED`` when set (to replay a failure), else ``default``."""
    return int(os.environ.get("MONITOR_CRASH_SEED", default))
