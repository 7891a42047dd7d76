"""Crashes: ``batch-monitor run`` SIGKILLed again and again ends where an uninterrupted run ends.

The ``org`` scenario is run through a timeline of business times (see ``crashkit``): at each
one ``batch-monitor run --once`` runs on a frozen clock, and is killed now and then: by crash
points inside results ingestion, an alert transition write, a Slack delivery (after Slack took
the message, before the outbox recorded it) and a prune, and by SIGKILLs at seeded random
moments. Free-running phases run the daemon on the accelerated clock and SIGKILL it at random.
Each kill is followed by a restart. Then the same timeline is run without a kill, and:

* the stores hold the same batches, usage and cost buckets (from the retention horizon on),
  day rollups and ``summary --json`` of every day, to the cent, and equal the scenario's truth;
* every alert went through the same transitions in the same order (a kill may only delay one);
* every alert event reached Slack exactly once (none lost, none twice), as the weekly report.

The short version covers two simulated days with seven kills or more; ``make soak`` a month with
more than fifty, on SQLite and on PostgreSQL. ``MONITOR_CRASH_SEED`` replays a seed.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text, update
from sqlmodel import Session, col

from monitor import crashpoints, db, fmt
from monitor.alerts import evaluate_all
from monitor.models import AlertEvent, Batch, Notification
from monitor.notifiers import delivery
from monitor.notifiers.base import Message, Sent
from monitor.notifiers.delivery import deliver_pending
from monitor.notifiers.slack import SlackNotifier
from monitor.simulator import Scenario, SimulatorServer, build_scenario
from monitor.summary import build_summary
from tests import factories
from tests.conftest import _pg_database_url, _pg_state, migrate_fresh, pg_admin_url
from tests.daemonkit import http_get, wait_until
from tests.fakeslack import FakeSlack
from tests.reliability import crashkit as ck
from tests.simkit import assert_matches_truth

H = ck.H
REPORT_TITLE = "Claude spend, week of"


@dataclass(frozen=True)
class Shape:
    """How long a run is, where its free-running phases are, and how much it is killed."""

    days: int  # of the scenario
    first: timedelta  # the timeline's first step, from the scenario's start
    span: timedelta  # its last step, from the scenario's start
    grid: timedelta  # the step of the --once timeline
    # Free-running phases: each starts after the step at an offset from the scenario's start
    # (and its restarts) and lasts a while; the grid skips the steps it covers.
    free: tuple[tuple[timedelta, timedelta], ...]
    # Crash points, each armed from a time on, to fire at its nth hit (0: the 1st or 2nd).
    plan: tuple[tuple[str, timedelta, int], ...]
    timer_kills: int  # random SIGKILLs of --once steps
    free_kills: int  # random SIGKILLs per free-running phase
    speed: float  # of the free-running phases (business seconds per second)
    min_kills: int


SHORT = Shape(
    days=2,
    first=12 * H,  # the first poll backfills the day before
    span=48 * H,
    grid=12 * H,
    free=((36 * H, 8 * H),),  # 16 s at 1800x: a start, a kill, a restart and a while
    plan=(
        ("results.ingest", 0 * H, 0),
        ("alerts.transition", 0 * H, 0),
        ("delivery.sent", 0 * H, 1),  # a firing message
        # At 36 h the second message (with the default seed: the expiry warning's resolution,
        # a reply in its thread).
        ("delivery.sent", 36 * H, 2),
        # Armed from 36 h: the first prune with rows to delete (raw is 12 h), in the daemon.
        ("retention.prune", 36 * H, 0),
    ),
    timer_kills=1,
    free_kills=1,
    speed=1800.0,
    min_kills=7,
)
# A month: every crash point seven times, random kills in steps and in three daemon phases.
SOAK = Shape(
    days=30,
    first=0 * H,
    span=30 * 24 * H,
    grid=12 * H,
    free=tuple((d * 24 * H + 12 * H, 10 * H) for d in (6, 15, 24)),
    # Slack messages are rarer than the other points' hits: a delivery kill at its first hit,
    # so that seven fit in the month (at the 1st or 2nd, the last two were not always reached).
    plan=tuple(
        (name, d * 24 * H, 1 if name == "delivery.sent" else 0)
        for d in range(2, 29, 4)
        for name in ck.CRASHPOINTS
    ),
    timer_kills=16,
    free_kills=4,
    speed=1800.0,
    min_kills=50,
)


# PostgreSQL: ten days, every crash point three times. The ten days' alerts come and go in the
# first week, so the transition and delivery kills are armed on days 2, 3 and 4 (first hit).
_EARLY = ("alerts.transition", "delivery.sent")
PG_PLAN = tuple(
    (name, d * 24 * H, 0) for d in (2, 5, 8) for name in ck.CRASHPOINTS if name not in _EARLY
) + tuple((name, d * 24 * H, 1) for d in (2, 3, 4) for name in _EARLY)


@dataclass
class Step:
    """One item of a crash run's timeline: a --once step, or a free-running phase."""

    at: datetime
    until: datetime | None = None  # set for a free-running phase


# --- the crash run ---------------------------------------------------------------------------


class CrashRun:
    """The timeline of a shape, run with kills and restarts (see the module docstring)."""

    def __init__(
        self, mon: ck.Monitor, shape: Shape, seed: int, on_step: Callable[[Step], None]
    ) -> None:
        self.mon, self.shape, self.seed, self.on_step = mon, shape, seed, on_step
        self.rng = ck.seeded(seed)
        self.kills = ck.Kills()
        self.gaps: list[timedelta] = []  # business time from a daemon's kill to its successor
        self.steps: list[Step] = []
        self.launches = 0
        start = mon.scenario.start
        self.plan = [(name, start + not_before, nth) for name, not_before, nth in shape.plan]
        self.last_hit: dict[str, datetime] = {}

    def armed(self, t: datetime) -> str | None:
        """Return the ``MONITOR_CRASHPOINT`` of a launch at ``t``: every point due, once.

        A point is not armed again in the restart right after its own kill: two plan items of
        one point due together killed both evaluations inside an alert that lasted an hour, and
        a condition that comes and goes while the monitor is down is never seen (as with any
        monitor that evaluates at intervals), so the run lost that alert, not by a fault of
        the kills' recovery.
        """
        items: dict[str, int] = {}
        for name, not_before, nth in self.plan:
            if name in self.last_hit and t - self.last_hit[name] <= ck.RESTART:
                continue
            if not_before <= t and name not in items:
                items[name] = nth or self.rng.randint(1, 2)
        return ",".join(f"{k}:{v}" for k, v in items.items()) or None

    def add(self, step: Step) -> None:
        """Add a step to the timeline (and hand it to the reference)."""
        self.steps.append(step)
        self.on_step(step)

    def hit(self, point: str, t: datetime, after: str | None) -> None:
        """Count a kill by a crash point (its plan item is done)."""
        self.plan.remove(next(p for p in self.plan if p[0] == point))
        self.last_hit[point] = t
        self.kills.by_crashpoint[point] += 1
        self.kills.trail.append(f"{t:%m-%d %H:%M} crashpoint {point} after {after}")

    def run(self) -> list[Step]:
        """Run the whole timeline; return it as it happened."""
        shape, start = self.shape, self.mon.scenario.start
        free = {start + after: start + after + length for after, length in shape.free}
        grid = []
        t = start + shape.first
        while t <= start + shape.span:
            if not any(a < t < b + ck.RESTART for a, b in free.items()):
                grid.append(t)
            t += shape.grid
        timer_at = set(self.rng.sample(range(len(grid)), min(shape.timer_kills, len(grid))))
        timers = 0
        with SimulatorServer(self.mon.scenario, now=start) as sim:
            for i, g in enumerate(grid):
                timers += i in timer_at
                ran_to = self.steps[-1].until if self.steps else None
                if ran_to is not None and g <= ran_to:
                    # A free-running phase ran on past this step (a slow restart): skip it, but
                    # the timeline always ends with a step.
                    if i < len(grid) - 1:
                        continue
                    g = fmt.hour_floor(ran_to) + H
                timers = self.grid_step(sim, g, timers)
                if g in free:
                    a = self.steps[-1].at + ck.RESTART
                    self.add(Step(a, self.free_phase(a, free[g])))
        assert not self.plan, (
            f"seed {self.seed}: crash points never reached: {self.plan} "
            f"(kills by crash point: {dict(self.kills.by_crashpoint)})"
        )
        return self.steps

    def grid_step(self, sim: SimulatorServer, g: datetime, timers: int) -> int:
        """Run --once at ``g`` until one launch finishes; return the timer kills still owed.

        A launch that lost the lease on its way (a renewal held up on a loaded machine) skipped
        its remaining jobs: like a killed one, it is run again ``RESTART`` later. A restart is
        launched at once (its start-up outlasts most of the dead process's lease); one that
        still found the lease held ran nothing and is launched again once it expired.
        """
        t = g
        while True:
            kill_after = self.rng.uniform(0.0, 1.5) if timers else None
            self.launches += 1
            launch = ck.run_once(
                self.mon, sim, t, self.launches, crashpoint=self.armed(t), kill_after=kill_after
            )
            if launch.rc in (0, 1) and launch.ran_nothing:
                ck.wait_lease_free(self.mon.engine)
                continue
            self.add(Step(t))
            self.mon.record_events()
            if launch.rc == 0 and launch.lapsed:
                self.kills.lapses += 1
                self.kills.missed_timers += kill_after is not None
            elif launch.rc == 0:
                self.kills.missed_timers += kill_after is not None  # it finished first
                return timers
            else:
                assert launch.killed_by in ("timer", f"crashpoint:{launch.crashpoint}"), (
                    f"seed {self.seed}: run --once at {t} exited {launch.rc}:\n"
                    + launch.log[-4000:]
                )
                if launch.crashpoint is not None:
                    self.hit(launch.crashpoint, t, launch.after_job)
                else:
                    timers -= 1
                    self.kills.by_timer[f"after {launch.after_job or 'start'}"] += 1
                    self.kills.trail.append(f"{t:%m-%d %H:%M} timer after {launch.after_job}")
            t += ck.RESTART
            self.kills.max_restart_offset = max(self.kills.max_restart_offset, t - g)
            assert t < g + self.shape.grid, f"seed {self.seed}: too many kills at {g}"

    def free_phase(self, a: datetime, b: datetime) -> datetime:
        """Run the daemon on the accelerated clock from ``a`` to ``b``, SIGKILLed at random.

        Return when it really stopped (a shutdown waits for the jobs running at ``b``).
        """
        shape, left = self.shape, self.shape.free_kills
        killed_at: datetime | None = None
        with SimulatorServer(self.mon.scenario, speed=shape.speed, now=a) as fast:
            while True:
                self.launches += 1
                spec = self.armed(fast.now())
                with ck.daemon(self.mon, fast, self.launches, crashpoint=spec) as proc:
                    wait_until(
                        lambda: "leads (token" in proc.log() or proc.proc.poll() is not None,
                        60,
                        "the daemon to lead",
                    )
                    if killed_at is not None:
                        self.gaps.append(fast.now() - killed_at)
                    budget = (b - fast.now()).total_seconds() / shape.speed
                    kill_at = None
                    if left and budget > 2.0:
                        kill_at = time.monotonic() + self.rng.uniform(0.5, min(4.0, budget - 1))
                    while proc.proc.poll() is None:
                        if kill_at is not None and time.monotonic() >= kill_at:
                            after = ck.last_job(proc.log())
                            proc.kill()
                            left -= 1
                            self.kills.free_running += 1
                            self.kills.trail.append(
                                f"{fast.now():%m-%d %H:%M} daemon after {after}"
                            )
                            break
                        if kill_at is None and fast.now() >= b:
                            assert http_get(proc.url("/healthz"))[0] == 200
                            code, _ = proc.terminate(timeout=30)
                            assert code == 0, proc.log()[-3000:]
                            self.mon.record_events()
                            return fast.freeze()
                        time.sleep(0.05)
                    else:
                        log_text = proc.log()
                        point = ck.fired(log_text)
                        assert point is not None, (
                            f"seed {self.seed}: the daemon exited {proc.proc.returncode}:\n"
                            + log_text[-4000:]
                        )
                        self.hit(point, fast.now(), ck.last_job(log_text))
                    killed_at = fast.now()
                self.mon.record_events()


# --- the reference ---------------------------------------------------------------------------


class Reference:
    """The same timeline in this process, without a kill (free phases as hourly steps).

    It runs in a thread, a step behind the crash run, which hands it each step as it is done.
    """

    def __init__(self, mon: ck.Monitor) -> None:
        self.mon = mon
        self.todo: queue.Queue[Step | None] = queue.Queue()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="reference", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            with SimulatorServer(self.mon.scenario, now=self.mon.scenario.start) as sim:
                while (step := self.todo.get()) is not None:
                    if step.until is None:
                        ck.reference_step(self.mon, sim, step.at)
                        continue
                    t = step.at
                    while t < step.until:
                        ck.reference_step(self.mon, sim, t)
                        t += H
        except BaseException as exc:  # raised again in the test by finish()
            self.error = exc

    def finish(self, timeout: float) -> None:
        """Wait for the last step; raise what went wrong in the thread."""
        self.todo.put(None)
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"the reference run did not finish in {timeout:g}s"
        if self.error is not None:
            raise self.error


# --- the checks ------------------------------------------------------------------------------


def _check_slack(mon: ck.Monitor, seed: int, trail: list[str]) -> tuple[int, list[str]]:
    """Every alert event reached Slack exactly once, each weekly report and its chart once.

    Return how many alert messages there were and the titles of the weekly reports.
    """
    posts = ck.accepted_posts(mon.slack)
    twice = [k for k, n in Counter(ck.post_key(p) for p in posts).items() if n > 1]
    assert not twice, f"seed {seed}: posted more than once: {twice[:3]}\nkills: {trail}"
    reports = sorted(p.title for p in posts if p.title.startswith(REPORT_TITLE))
    alert_posts = [p for p in posts if not p.title.startswith(REPORT_TITLE)]
    undelivered = {k: v for k, v in mon.events.items() if v["status"] != "delivered"}
    assert not undelivered, f"seed {seed}: events not delivered: {undelivered}\nkills: {trail}"
    wrong = {k: n for k, v in mon.events.items() if (n := ck.posts_of(alert_posts, k, v)) != 1}
    assert not wrong, f"seed {seed}: alert events posted other than once: {wrong}\nkills: {trail}"
    assert len(alert_posts) == len(mon.events), (seed, len(alert_posts), len(mon.events), trail)
    charts = Counter(f["filename"] for f in mon.slack.shared_files())
    assert len(set(reports)) == len(reports) and sum(charts.values()) == len(reports), (
        f"seed {seed}: weekly reports {reports}, charts shared {charts}\nkills: {trail}"
    )
    assert all(n == 1 for n in charts.values()), (seed, charts, trail)
    per_event = ck.notifications_per_event(mon)
    assert all(n == 1 for n in per_event.values()), (seed, per_event, trail)
    return len(alert_posts), reports


Events = list[tuple[str, datetime]]
Skipped = set[tuple[str, str, datetime]]


def _short(seq: Events, k: int, free: list[tuple[datetime, datetime]]) -> bool:
    """Whether ``seq[k]`` and ``seq[k + 1]`` bound a state one run may see and the other not.

    A state (firing, or resolved between two firings) that lasted one restart interval at most
    was seen by a single evaluation: a kill at that step hides it, as any monitor that
    evaluates at intervals misses a condition that comes and goes while it is down. One inside
    a free-running phase was seen at instants of the sped-up clock no run repeats.
    """
    if k + 1 >= len(seq):
        return False
    (t1, a1), (t2, a2) = seq[k], seq[k + 1]
    if {t1, t2} != {"firing", "resolved"}:
        return False
    return a2 - a1 <= ck.RESTART or any(a <= a1 < a2 <= b for a, b in free)


def _check_transitions(
    crash: ck.Monitor,
    ref: ck.Monitor,
    tolerance: timedelta,
    seed: int,
    trail: list[str],
    free: list[tuple[datetime, datetime]],
) -> tuple[Skipped, Skipped]:
    """The same alerts went through the same transitions; a kill only delays one a little.

    Each alert's two sequences are aligned: a transition matches one of the same kind within
    ``tolerance``, and a short state (``_short``) may be missing from either run, never
    anything else. The alignment that leaves out the fewest events wins (a kill can delay the
    end of a short state, so one run may show it a little longer than the other: matched, not
    left out). Return the events left out of each run (crash, reference).
    """
    got, want = ck.transitions(crash.events), ck.transitions(ref.events)
    left_crash: Skipped = set()
    left_ref: Skipped = set()
    for fp in sorted(set(got) | set(want)):
        g, w = got.get(fp, []), want.get(fp, [])

        @functools.cache
        def best(i: int, j: int, g: Events = g, w: Events = w) -> tuple[float, tuple[Any, ...]]:
            # (events left out, which: ("g", i) or ("w", j) for each pair left out)
            if i == len(g) and j == len(w):
                return 0, ()
            options: list[tuple[float, tuple[Any, ...]]] = []
            if (
                i < len(g)
                and j < len(w)
                and g[i][0] == w[j][0]
                and abs(g[i][1] - w[j][1]) <= tolerance
            ):
                options.append(best(i + 1, j + 1))
            if _short(g, i, free):
                n, which = best(i + 2, j)
                options.append((n + 2, (("g", i), *which)))
            if _short(w, j, free):
                n, which = best(i, j + 2)
                options.append((n + 2, (("w", j), *which)))
            return min(options, key=lambda o: o[0], default=(math.inf, ()))

        n, which = best(0, 0)
        assert n != math.inf, (
            f"seed {seed}: transitions of {fp[:12]} differ beyond a delay or a short state\n"
            f"crash run: {g}\nreference: {w}\nkills: {trail}"
        )
        for side, k in which:
            seq, into = (g, left_crash) if side == "g" else (w, left_ref)
            into |= {(fp, *seq[k]), (fp, *seq[k + 1])}
    return left_crash, left_ref


def _check_truth(mon: ck.Monitor, now: datetime) -> None:
    """The store equals the scenario's truth at ``now``, to the cent."""
    truth = mon.scenario.truth(now)
    start = mon.scenario.start - timedelta(days=1)
    with Session(mon.engine) as session:
        # An ended batch is not polled again, so one archived after its results were read is
        # stored as it was read (over a month, the first days' batches reach their 29 days).
        # Its workload is what its ids say: the scenario's history batch "classify-archived-N"
        # is meant to be archived unread (the crash and reference runs still agree on it).
        stored = {b.id: b for b in session.execute(select(Batch)).scalars()}
        as_read = {
            bid: replace(t, archived_at=None, results_available=True, workload=b.workload)
            for bid, t in truth.batches.items()
            if t.archived_at is not None
            and (b := stored.get(bid)) is not None
            and b.results_ingested_at is not None
            and b.results_ingested_at < t.archived_at
        }
        truth = replace(truth, batches={**truth.batches, **as_read})
        missing, extra = set(truth.batches) - set(stored), set(stored) - set(truth.batches)
        assert not missing and not extra, f"batches missing {missing}, unknown {extra}"
        assert_matches_truth(session, truth)
        s = build_summary(session, start, now, now)
        realtime = truth.usage(start, now, product="messages_api")
        batch = truth.batch_totals(start, now)
        assert s.spend.realtime_cost_usd is not None and s.spend.batch_cost_usd is not None
        assert fmt.to_cents(s.spend.realtime_cost_usd) == fmt.to_cents(realtime.cost_usd)
        assert fmt.to_cents(s.spend.batch_cost_usd) == fmt.to_cents(batch.cost_usd)
        assert s.spend.realtime_requests == realtime.requests


def _compare_stores(
    crash: ck.Monitor,
    ref: ck.Monitor,
    now: datetime,
    seed: int,
    left_out: tuple[Skipped, Skipped],
) -> int:
    horizon = fmt.day_floor(now - ck.RAW)
    got, want = ck.store(crash, now, horizon), ck.store(ref, now, horizon)
    for tables, skipped in zip((got, want), left_out, strict=True):
        # The Slack posts of short states one run saw and the other not.
        tally = tables.get("notifications")
        if isinstance(tally, dict) and "slack|ok" in tally:
            tally["slack|ok"] -= len(skipped)
    assert got.keys() == want.keys()
    for key in want:
        assert got[key] == want[key], f"seed {seed}: {key} differs from the uninterrupted run"
    return sum(len(v) for k, v in want.items() if isinstance(v, list))


# --- the suite -------------------------------------------------------------------------------


def _run(
    shape: Shape,
    seed: int,
    workdir: Path,
    make_db: Callable[[str], str],
    figures: Callable[..., None],
) -> None:
    scenario: Scenario = build_scenario("org", seed=seed, days=shape.days)
    started = time.monotonic()
    with FakeSlack() as slack_a, FakeSlack() as slack_b:
        crash = ck.Monitor(scenario, make_db("crash"), workdir / "crash", slack_a)
        # A lease no renewal on a loaded machine can miss: the reference runs every job.
        ref = ck.Monitor(
            scenario, make_db("reference"), workdir / "reference", slack_b, lease="60s"
        )
        reference = Reference(ref)
        try:
            run = CrashRun(crash, shape, seed, reference.todo.put)
            try:
                steps = run.run()
            finally:
                crash_wall = time.monotonic() - started
                reference.finish(timeout=1800)
            kills, gaps = run.kills, run.gaps
            now = steps[-1].at
            assert ref.timeline[-1] == now
            for mon in (crash, ref):  # for a post-mortem
                (mon.workdir / "events.txt").write_text(
                    "\n".join(
                        f"{k[2]} {k[1]} {k[0][:12]} {v}"
                        for k, v in sorted(mon.events.items(), key=lambda kv: kv[0][2])
                    )
                )
            gap = max(gaps, default=timedelta(0))
            free = [(st.at, st.until) for st in steps if st.until is not None]
            tolerance = shape.grid + max(kills.max_restart_offset, 2 * H + gap)
            found: dict[str, Any] = {}
            none: tuple[Skipped, Skipped] = (set(), set())
            checks: list[tuple[str, Callable[[], Any]]] = [
                ("truth of the reference", lambda: _check_truth(ref, now)),
                ("truth of the crash run", lambda: _check_truth(crash, now)),
                (
                    "transitions",
                    lambda: _check_transitions(crash, ref, tolerance, seed, kills.trail, free),
                ),
                (
                    "stores",
                    lambda: _compare_stores(crash, ref, now, seed, found.get("transitions", none)),
                ),
                ("slack", lambda: _check_slack(crash, seed, kills.trail)),
                ("slack of the reference", lambda: _check_slack(ref, seed, [])),
            ]
            failed = []
            for name, check in checks:  # all of them: one soak run says everything
                try:
                    found[name] = check()
                except AssertionError as exc:
                    failed.append(f"--- {name}:\n{exc}")
            assert not failed, f"seed {seed}; kills: {kills.trail}\n" + "\n".join(failed)
            rows = found["stores"]
            delivered, reports = found["slack"]
            ref_delivered, ref_reports = found["slack of the reference"]
            left_crash, left_ref = found["transitions"]
            assert (delivered - len(left_crash), reports) == (
                ref_delivered - len(left_ref),
                ref_reports,
            ), seed
        finally:
            crash.close()
            ref.close()
    assert kills.total >= shape.min_kills, kills
    assert set(kills.by_crashpoint) == set(ck.CRASHPOINTS), kills
    figures(
        seed=seed,
        simulated_days=shape.days,
        kills=kills.total,
        kills_by_crashpoint=dict(kills.by_crashpoint),
        kills_by_timer=dict(kills.by_timer),
        kills_of_the_daemon=kills.free_running,
        timers_that_missed=kills.missed_timers,
        once_steps_that_lost_the_lease=kills.lapses,
        once_steps=sum(1 for s in steps if s.until is None),
        max_restart_gap_hours=round(max(gaps, default=timedelta(0)) / H, 2),
        alert_events_delivered_once=delivered,
        alert_events_left_out_crash_reference=[len(left_crash), len(left_ref)],
        slack_look_ups=dict(
            Counter(r.method for r in crash.slack.requests if r.method.startswith("conv"))
        ),
        weekly_reports_delivered_once=len(reports),
        rows_compared=rows,
        crash_run_seconds=round(crash_wall, 1),
        total_seconds=round(time.monotonic() - started, 1),
    )


def test_kills_leave_the_state_of_an_uninterrupted_run(
    tmp_path: Path, soak: bool, figures: Callable[..., None]
) -> None:
    def sqlite(name: str) -> str:
        return ck.migrated_sqlite(tmp_path / f"{name}.db")

    _run(SOAK if soak else SHORT, ck.env_seed(11), tmp_path, sqlite, figures)


@pytest.mark.postgres
def test_kills_on_postgresql(tmp_path: Path, soak: bool, figures: Callable[..., None]) -> None:
    if not soak:
        pytest.skip("the PostgreSQL crash run is part of make soak")
    base = _pg_database_url()

    def pg(name: str) -> str:
        dbname = f"bm_crash_{name}_{base.rsplit('_', 1)[-1]}"
        admin = db.make_engine(pg_admin_url())
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{dbname}"'))
        admin.dispose()
        _pg_state.setdefault("created", []).append(dbname)  # type: ignore[attr-defined]
        url = base.rsplit("/", 1)[0] + "/" + dbname
        migrate_fresh(url)
        return url

    shape = Shape(
        days=10, first=0 * H, span=10 * 24 * H, grid=12 * H, free=((4 * 24 * H + 12 * H, 10 * H),),
        plan=PG_PLAN,
        timer_kills=10, free_kills=4, speed=1800.0, min_kills=24,
    )  # fmt: skip
    _run(shape, ck.env_seed(12), tmp_path, pg, figures)


# --- the pieces, one by one ------------------------------------------------------------------

T0 = datetime(2026, 11, 20, 12, tzinfo=UTC)
M = timedelta(minutes=1)


def test_a_crash_point_kills_at_its_nth_hit_and_says_which() -> None:
    code = (
        "from monitor.crashpoints import crashpoint\n"
        "for i in range(3):\n"
        "    crashpoint('a.b'); crashpoint('c.d'); print('passed', i, flush=True)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "MONITOR_CRASHPOINT"}
    armed = subprocess.run(
        [sys.executable, "-c", code], env={**env, "MONITOR_CRASHPOINT": "x.y, a.b:2"},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert armed.returncode == -signal.SIGKILL
    assert armed.stdout == "passed 0\n" and "crashpoint a.b (hit 2): SIGKILL" in armed.stderr
    unarmed = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert unarmed.returncode == 0 and unarmed.stdout.count("passed") == 3
    assert crashpoints.parse(" results.ingest:3,delivery.sent ") == {
        "results.ingest": 3, "delivery.sent": 1,
    }  # fmt: skip
    for bad in ("a:0", "a:x", ":2"):
        with pytest.raises(ValueError, match="MONITOR_CRASHPOINT"):
            crashpoints.parse(bad)


def _bot(slack: FakeSlack) -> SlackNotifier:
    # By id, as the look-up needs (Slack's history methods take no channel names).
    return SlackNotifier(slack.token, "C0ALERTS", base_url=slack.base_url)


def _cut_off_after_sending(session: Session, slack: FakeSlack, transition: str) -> int:
    """Post the pending ``transition`` event as a worker that then died would have."""
    event = session.execute(
        select(AlertEvent).where(col(AlertEvent.transition) == transition)
    ).scalar_one()
    firing = session.execute(
        select(col(Notification.target), col(Notification.message_ref)).where(
            col(Notification.outcome) == "ok"
        )
    ).first()
    thread = Sent(firing[0], firing[1]) if firing and transition == "resolved" else None
    _bot(slack).send(delivery._message(event, thread))
    session.execute(
        update(AlertEvent)
        .where(col(AlertEvent.id) == event.id)
        .values(status="claimed", claimed_by="dead", claimed_until=event.created_at, attempts=1)
    )
    session.commit()
    assert event.id is not None
    return event.id


def test_a_delivery_cut_off_after_slack_took_it_is_found_not_sent_twice(
    session: Session,
) -> None:
    stale = factories.rule("collector_stale", "30m", name="stale", repeat_interval="7d")
    with FakeSlack() as slack:
        factories.add_run(session, "batches", T0 - 5 * M, T0)
        session.commit()
        evaluate_all(session, T0 + 31 * M, [stale])
        first = _cut_off_after_sending(session, slack, "firing")
        assert deliver_pending(session, T0 + 33 * M, [_bot(slack)], "w2").delivered == 1
        # The resolution, a reply in the firing message's thread, cut off the same way.
        factories.add_run(session, "batches", T0 + 40 * M, T0 + 41 * M)
        session.commit()
        evaluate_all(session, T0 + 42 * M, [stale])
        second = _cut_off_after_sending(session, slack, "resolved")
        assert deliver_pending(session, T0 + 44 * M, [_bot(slack)], "w2").delivered == 1

        posts = [(r.channel, r.body.get("thread_ts"), r.title) for r in slack.posts()]
        firing_ts = "1800000001.000001"  # the fake's first message
        assert posts == [
            ("C0ALERTS", None, ":warning: WARNING stale is firing"),
            ("C0ALERTS", firing_ts, ":white_check_mark: Resolved: WARNING stale"),
        ]
        looked = [
            (r.method, r.body.get("ts")) for r in slack.requests if "conversations" in r.method
        ]
        assert looked == [("conversations.history", None), ("conversations.replies", firing_ts)]
        notes = session.execute(
            select(
                col(Notification.event_id), col(Notification.outcome), col(Notification.message_ref)
            ).order_by(col(Notification.id))
        ).all()
        assert [tuple(n) for n in notes] == [
            (first, "ok", firing_ts), (second, "ok", "1800000002.000002"),
        ]  # fmt: skip


def test_a_look_up_matches_the_event_not_just_its_id(session: Session) -> None:
    # Pruning can hand an old event's id to a new one: the time and transition tell them apart.
    with FakeSlack() as slack:
        old = Message("stale", "warning", "firing", {}, T0, event_id=7)
        _bot(slack).send(old)
        assert _bot(slack).find(old) == Sent("C0ALERTS", "1800000001.000001")
        assert (
            _bot(slack).find(Message("stale", "warning", "firing", {}, T0 + M, event_id=7)) is None
        )
        assert _bot(slack).find(Message("stale", "warning", "firing", {}, T0, event_id=8)) is None


def test_without_the_history_scope_a_cut_off_delivery_is_sent_again(
    session: Session, caplog: pytest.LogCaptureFixture
) -> None:
    # At least once, and said: the bot cannot read the channel to check.
    stale = factories.rule("collector_stale", "30m", name="stale", repeat_interval="7d")
    with FakeSlack() as slack:
        factories.add_run(session, "batches", T0 - 5 * M, T0)
        session.commit()
        evaluate_all(session, T0 + 31 * M, [stale])
        _cut_off_after_sending(session, slack, "firing")
        slack.fail("conversations.history", error="missing_scope")
        with caplog.at_level(logging.WARNING):
            assert deliver_pending(session, T0 + 33 * M, [_bot(slack)], "w2").delivered == 1
        assert len(slack.posts()) == 2
        assert "cannot check whether alert event" in caplog.text
        assert "channels:history" in caplog.text
