"""The daemon's clock: one APScheduler job per step, run only by the lease holder.

``build_jobs(settings)`` lists the steps (collect each configured source, refresh the rollups,
evaluate the rules, deliver notifications, build the weekly report, prune); each job body is
one call of an existing function of ``(session, now)``. ``Daemon`` runs them:

1. ``Daemon.start()`` starts the leadership thread (``lease.Leadership``) and an APScheduler
   ``BackgroundScheduler`` whose jobs all have ``coalesce=True``, ``max_instances=1`` and a
   ``misfire_grace_time``, so a stall or a suspended laptop never piles runs up.
2. Every run goes through ``Daemon.run_job``: skip unless this replica leads; write a
   ``job_run`` row; run the body in a session whose every commit is fenced by the lease token;
   cut it off at its deadline (the job's DB connection is interrupted and a ``JobTimeout``
   raised in its thread); record the outcome; log one line. A failing job never takes the
   process down: it is tried again at its next run.
3. ``run_once`` runs every due job once, in order, for cron users and tests.

Intervals are business time: under a simulated clock (``MONITOR_CLOCK``, tests only) they
shrink by its speed, so a simulated week takes minutes.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import event, func, select, update
from sqlmodel import Session, col

from monitor import clock, db, lease
from monitor.logs import scrub
from monitor.models import CollectRun, JobRun

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from monitor.config import Settings

log = logging.getLogger(__name__)

SOURCE_JOBS = {"batches": "collect_batches", "usage": "collect_usage", "cost": "collect_cost",
               "logs": "collect_logs"}  # fmt: skip


# How often the daemon asks whether the weekly report is due (it is built at most once a week).
REPORT_CHECK_INTERVAL = timedelta(minutes=5)


class JobTimeout(BaseException):
    """Raised inside a job's thread at its deadline.

    A BaseException, like KeyboardInterrupt, so the ``except Exception`` of a source that
    records its own failures does not swallow it: the job must stop, not carry on.
    """


@dataclass
class JobContext:
    """What a job body gets: the session (fenced when leading), ``now`` and the settings."""

    session: Session
    now: datetime
    settings: Settings
    holder: lease.Holder
    deadline: float  # clock.monotonic() reading after which the job is cut off
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Job:
    """One scheduled step: its name, interval (business time) and body (returns items)."""

    name: str
    interval: timedelta
    body: Callable[[JobContext], int]
    source: str | None = None


@dataclass(frozen=True)
class JobOutcome:
    """How one run of a job ended."""

    job: str
    outcome: str  # ok | failed | timeout | skipped
    items: int = 0
    duration_seconds: float = 0.0
    error: str | None = None


# --- the jobs ---------------------------------------------------------------------------


def _collect_body(name: str, settings: Settings) -> Callable[[JobContext], int] | None:
    from monitor import sources

    built = sources.build(name, settings)
    if built is None:
        return None
    src = built

    def body(ctx: JobContext) -> int:
        from monitor.collect import collect_source

        result = collect_source(src, ctx.session, ctx.now, ctx.settings.secrets())
        ctx.notes.extend(result.stats.notes)
        if not result.ok:
            raise SourceFailed(result.run.error or "failed")
        return result.run.items

    return body


class SourceFailed(Exception):
    """A collection failed (already recorded in ``collect_run``); the job run counts it."""


def _rollup(ctx: JobContext) -> int:
    from monitor import rollups

    done = rollups.refresh(ctx.session, ctx.now, deadline=ctx.deadline - 1.0)
    if done.remaining:
        ctx.notes.append(f"{done.remaining} day(s) left for the next run")
    return done.days


def _advise(ctx: JobContext) -> int:
    """Store the advisor's current advice (what /metrics and ``batch_candidate`` read)."""
    from monitor import advisor

    return advisor.store(ctx.session, ctx.now, ctx.settings)


def _gauges(ctx: JobContext) -> int:
    """Store the exporter's window figures (so a scrape reads rows instead of computing)."""
    from monitor import gauges

    return gauges.store(ctx.session, ctx.now)


def _evaluate(ctx: JobContext) -> int:
    from monitor import alerts, rules

    results = alerts.evaluate_all(
        ctx.session, ctx.now, rules.load_rules(ctx.settings), settings=ctx.settings
    )
    return sum(1 for r in results if r.event)


def _deliver(ctx: JobContext) -> int:
    from monitor import notifiers
    from monitor.notifiers import delivery

    report = delivery.deliver_pending(
        ctx.session,
        ctx.now,
        notifiers.from_settings(ctx.settings),
        ctx.holder.id,
        claim_timeout=ctx.settings.alerting.claim_timeout,
        max_backoff=ctx.settings.alerting.max_backoff,
        warn_after_attempts=ctx.settings.slack.max_attempts,
    )
    return report.delivered


def _has_usage(session: Session) -> bool:
    """Return whether any usage bucket was ever recorded (hourly, or rolled up and pruned)."""
    from monitor.models import UsageBucket, UsageDay

    return any(
        session.execute(select(col(day)).limit(1)).first() is not None
        for day in (UsageBucket.bucket_start, UsageDay.day)
    )


def _report(ctx: JobContext, sources: tuple[str, ...] = ()) -> int:
    from monitor.report.delivery import deliver_due, due_week
    from monitor.summary import last_success

    week = due_week(ctx.session, ctx.now, ctx.settings)
    if week is None:
        return 0
    # Build it from a store that has caught up: every configured source collected since the
    # week ended (a daemon starting on a Monday must not report before its first collection).
    seen = last_success(ctx.session)
    behind = [s for s in sources if (seen.get(s) or week.start) < week.end]
    if behind:
        ctx.notes.append(f"weekly report waits for {', '.join(behind)} to collect")
        return 0
    if "usage" in sources and not _has_usage(ctx.session):
        # Until the usage report has given its first buckets, the batch listing (which reaches
        # back over the API's whole history) is all the store holds, and a week the monitor
        # never watched would be reported or not by whether this job ran before or after that
        # first read. Every organisation's usage report has buckets, batch-only ones included.
        ctx.notes.append("weekly report waits for the first usage buckets")
        return 0
    outcome = deliver_due(ctx.session, ctx.now, ctx.settings, holder=ctx.holder.id)
    if outcome is None:
        return 0
    ctx.notes.append(f"weekly report {outcome.week_start}: {outcome.status}")
    if outcome.status == "retrying":
        raise ReportNotDelivered(f"weekly report {outcome.week_start}: {outcome.error}")
    return 1 if outcome.status == "delivered" else 0


class ReportNotDelivered(Exception):
    """The weekly report is due but a step failed; it is retried at a later run."""


def _prune(ctx: JobContext) -> int:
    from monitor import retention

    result = retention.prune(ctx.session, ctx.now, ctx.settings.retention)
    return sum(result.deleted.values())


def build_jobs(settings: Settings) -> list[Job]:
    """Return the daemon's jobs for ``settings`` (sources that are not configured are left out)."""
    c = settings.collect
    jobs: list[Job] = []
    for source, interval in (
        ("batches", c.batches_interval),
        ("usage", c.usage_interval),
        ("cost", c.usage_interval),
        ("logs", c.logs_interval),
    ):
        body = _collect_body(source, settings)
        if body is not None:
            jobs.append(Job(SOURCE_JOBS[source], interval, body, source=source))
    jobs += [
        Job("rollup", settings.run.rollup_interval, _rollup),
        Job("gauges", settings.run.rollup_interval, _gauges),
        Job("advise", settings.advisor.interval, _advise),
        Job("evaluate", settings.alerting.interval, _evaluate),
        Job("deliver", settings.alerting.delivery_interval, _deliver),
        # The report decides by itself whether a week is due (and catches up a missed one).
        Job(
            "report",
            min(REPORT_CHECK_INTERVAL, settings.run.rollup_interval),
            functools.partial(_report, sources=tuple(j.source for j in jobs if j.source)),
        ),
        Job("prune", timedelta(days=1), _prune),
    ]
    return jobs


# --- running a job ----------------------------------------------------------------------


def _raise_in(thread_id: int, exc: type[BaseException]) -> None:
    """Raise ``exc`` in another thread at its next Python instruction."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(exc))


class _Watchdog:
    """Cut a job off at its deadline: interrupt its database calls and raise in its thread."""

    def __init__(self, seconds: float) -> None:
        self.fired = False
        self._thread_id = threading.get_ident()
        self._connections: list[Any] = []
        self._lock = threading.Lock()
        self._done = False
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True

    def watch(self, session: Session) -> None:
        @event.listens_for(session, "after_begin")
        def _remember(_s: Session, _tx: Any, connection: Any) -> None:
            raw = connection.connection.dbapi_connection
            with self._lock:
                self._connections.append(raw)

    def start(self) -> None:
        self._timer.start()

    def _fire(self) -> None:
        with self._lock:
            if self._done:
                return
            self.fired = True
            conns = list(self._connections)
        for conn in conns:
            # sqlite3 has interrupt(), psycopg 3 has cancel(): both stop a running statement.
            for method in ("interrupt", "cancel"):
                stop = getattr(conn, method, None)
                if stop is not None:
                    with contextlib.suppress(Exception):  # closed already: nothing to stop
                        stop()
                    break
        _raise_in(self._thread_id, JobTimeout)

    def finish(self) -> None:
        with self._lock:
            self._done = True
        self._timer.cancel()


class Daemon:
    """Run the jobs on a schedule while leading; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        *,
        jobs: list[Job] | None = None,
        leadership: lease.Leadership | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.jobs = jobs if jobs is not None else build_jobs(settings)
        self.leadership = leadership or lease.Leadership(engine, settings.run.lease)
        self._scheduler: Any = None
        self._running: dict[str, int] = {}
        self._idle = threading.Condition()
        # Outcomes whose job_run row could not be written (database down): added to the
        # counters by the next run that can write, so batch_monitor_job_runs_total{outcome=
        # "failed"} counts the runs the outage failed too.
        self._owed: Counter[str] = Counter()
        self._owed_lock = threading.Lock()
        # The daemon says when its database stops working and when it is back (once each).
        db.health(engine).announce = True

    # -- one run

    def run_job(self, job: Job) -> JobOutcome:
        """Run ``job`` once if this replica leads; record and log the outcome; never raise."""
        if not self.leadership.is_leader():
            log.debug("job %s skipped: not leading", job.name, extra={"job": job.name})
            return JobOutcome(job.name, "skipped")
        token = self.leadership.token
        assert token is not None
        now = clock.utcnow()
        started = clock.monotonic()
        timeout = self.settings.run.job_timeout.total_seconds()
        with self._idle:
            self._running[job.name] = self._running.get(job.name, 0) + 1
        try:
            try:
                run_id = self._start_row(job, now)
                outcome = self._execute(job, now, token, started, timeout)
                self._finish_row(run_id, outcome, now)
            except Exception as exc:  # the bookkeeping itself failed (database down)
                outcome = JobOutcome(
                    job.name, "failed", 0, clock.monotonic() - started,
                    _error_text(exc, self.settings),
                )  # fmt: skip
                with self._owed_lock:
                    self._owed[f"{job.name}|failed"] += 1
            self._log_outcome(job, outcome)
        finally:
            # Only now: stop() waits for this, so nothing of the run (its log line included)
            # happens after the process said it stopped.
            with self._idle:
                self._running[job.name] -= 1
                self._idle.notify_all()
        return outcome

    def _log_outcome(self, job: Job, outcome: JobOutcome) -> None:
        level = logging.INFO if outcome.outcome == "ok" else logging.WARNING
        log.log(
            level,
            "job %s%s %s: %d item(s) in %.2fs%s",
            job.name,
            f" ({job.source})" if job.source else "",
            outcome.outcome,
            outcome.items,
            outcome.duration_seconds,
            f": {outcome.error}" if outcome.error else "",
            extra={
                "job": job.name,
                "source": job.source,
                "items": outcome.items,
                "duration": round(outcome.duration_seconds, 3),
                "outcome": outcome.outcome,
            },
        )

    def _start_row(self, job: Job, now: datetime) -> int:
        with db.session_scope(self.engine) as s:
            row = JobRun(job=job.name, started_at=now, holder=self.leadership.holder.id)
            s.add(row)
            s.flush()
            assert row.id is not None
            return row.id

    def _finish_row(self, run_id: int, outcome: JobOutcome, now: datetime) -> None:
        with self._owed_lock:
            owed, self._owed = self._owed, Counter()
        try:
            with db.session_scope(self.engine) as s:
                s.execute(
                    update(JobRun)
                    .where(col(JobRun.id) == run_id)
                    .values(
                        finished_at=now + timedelta(seconds=outcome.duration_seconds),
                        duration_seconds=outcome.duration_seconds,
                        outcome=outcome.outcome,
                        items=outcome.items,
                        error=outcome.error,
                    )
                )
                db.bump(s, "job_runs", f"{outcome.job}|{outcome.outcome}")
                for key, n in sorted(owed.items()):
                    db.bump(s, "job_runs", key, n)
        except BaseException:
            with self._owed_lock:
                self._owed.update(owed)
            raise

    def _execute(
        self, job: Job, now: datetime, token: int, started: float, timeout: float
    ) -> JobOutcome:
        holder = self.leadership.holder
        session = lease.fenced_session(self.engine, holder, token)
        watchdog = _Watchdog(timeout)
        watchdog.watch(session)
        ctx = JobContext(session, now, self.settings, holder, started + timeout)
        outcome, items, error = "ok", 0, None
        try:
            watchdog.start()
            try:
                items = job.body(ctx)
                session.commit()
            finally:
                watchdog.finish()
        except JobTimeout:
            outcome, error = "timeout", f"cut off after {timeout:g}s"
        except Exception as exc:
            outcome = "timeout" if watchdog.fired else "failed"
            error = _error_text(exc, self.settings)
            if watchdog.fired:
                error = f"cut off after {timeout:g}s ({error})"
        finally:
            try:
                session.rollback()
            finally:
                session.close()
        if outcome == "timeout" and job.source is not None:
            _close_collect_run(self.engine, job.source, now, error or "timed out")
        return JobOutcome(job.name, outcome, items, clock.monotonic() - started, error)

    # -- the schedule

    def start(self) -> None:
        """Start leading (or waiting to) and the scheduler; return at once."""
        from apscheduler.executors.pool import ThreadPoolExecutor
        from apscheduler.schedulers.background import BackgroundScheduler
        from apscheduler.triggers.interval import IntervalTrigger

        self.leadership.start()
        speed = clock.speed()
        self._scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(max_workers=max(2, len(self.jobs)))},
            timezone="UTC",
        )
        first = clock.wallnow()
        for i, job in enumerate(self.jobs):
            seconds = max(job.interval.total_seconds() / speed, 0.05)
            self._scheduler.add_job(
                self.run_job,
                IntervalTrigger(seconds=seconds, timezone="UTC"),
                args=[job],
                id=job.name,
                name=job.name,
                coalesce=True,
                max_instances=1,
                # A run later than this is skipped (the next one comes soon enough).
                misfire_grace_time=max(1, int(seconds)),
                # Spread the first runs a little so they do not all hit the database at once.
                next_run_time=first + timedelta(seconds=0.2 * i),
            )
        self._scheduler.start()

    def next_runs(self) -> dict[str, datetime | None]:
        """Return each job's next scheduled run (wall time), when the scheduler is running."""
        if self._scheduler is None:
            return {}
        return {j.id: j.next_run_time for j in self._scheduler.get_jobs()}

    def stop(self, timeout: float) -> bool:
        """Stop taking jobs, wait up to ``timeout`` s for running ones; return whether all ended.

        The lease is given up only when nothing runs any more, so a peer never overlaps a job
        still finishing here.
        """
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
        deadline = clock.monotonic() + timeout
        with self._idle:
            while any(self._running.values()):
                left = deadline - clock.monotonic()
                if left <= 0:
                    break
                self._idle.wait(left)
            idle = not any(self._running.values())
        self.leadership.stop(release_lease=idle)
        return idle

    def run_once(self, *, only_due: bool = True) -> list[JobOutcome]:
        """Run every (due) job once, in order; return their outcomes.

        A job is due when its last run started at least one interval ago (or never ran). The
        lease is renewed in the background while they run (a long collection outlives one lease
        period) and given up at the end.
        """
        self.leadership.start()
        try:
            out = []
            last = last_runs(self.engine)
            now = clock.utcnow()
            for job in self.jobs:
                started = last.get(job.name)
                if only_due and started is not None and now - started < job.interval:
                    out.append(JobOutcome(job.name, "skipped"))
                    continue
                out.append(self.run_job(job))
            return out
        finally:
            self.leadership.stop()


def last_runs(engine: Engine) -> dict[str, datetime]:
    """Return when each job last started (business time)."""
    with db.session_scope(engine) as s:
        rows = s.execute(
            select(col(JobRun.job), func.max(col(JobRun.started_at))).group_by(col(JobRun.job))
        )
        return {job: started for job, started in rows}


def _close_collect_run(engine: Engine, source: str, started: datetime, error: str) -> None:
    """Mark the collect run a timed-out job left ``running`` as failed."""
    try:
        with db.session_scope(engine) as s:
            s.execute(
                update(CollectRun)
                .where(
                    col(CollectRun.source) == source,
                    col(CollectRun.started_at) == started,
                    col(CollectRun.status) == "running",
                )
                .values(status="failed", error=error, finished_at=started)
            )
    except Exception as exc:  # the next run records its own row anyway
        log.warning("cannot close the collect run of %s: %s", source, exc)


def _error_text(exc: BaseException, settings: Settings) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return scrub(text, settings.secrets())[:2000]


def service_status(session: Session, now: datetime, jobs: list[Job]) -> dict[str, Any]:
    """Return what ``batch-monitor status`` shows, from the database alone.

    Works with or without a running daemon: the lease row says who leads, ``job_run`` rows
    say what ran, ``collect_run`` when each source last succeeded.
    """
    from monitor import fmt, rollups
    from monitor.models import AlertEvent
    from monitor.summary import last_success

    current = lease.current_leader(session)
    leader = None
    if current is not None:
        leader = {
            "host": current.host,
            "pid": current.pid,
            "since": fmt.iso(current.acquired_at),
            "expires_at": fmt.iso(current.expires_at),
            "token": current.token,
        }
    latest = (
        select(col(JobRun.job), func.max(col(JobRun.id)).label("id"))
        .group_by(col(JobRun.job))
        .subquery()
    )
    last = {
        r.job: r
        for r in session.execute(
            select(JobRun).join(latest, col(JobRun.id) == latest.c.id)
        ).scalars()
    }
    job_rows = []
    for job in jobs:
        run = last.get(job.name)
        next_run = None if run is None else run.started_at + job.interval
        job_rows.append(
            {
                "job": job.name,
                "source": job.source,
                "interval": fmt.duration(job.interval),
                "last_run": None
                if run is None
                else {
                    "started_at": fmt.iso(run.started_at),
                    "finished_at": fmt.iso(run.finished_at),
                    "outcome": run.outcome,
                    "items": run.items,
                    "duration_seconds": run.duration_seconds,
                    "error": run.error,
                },
                "next_run": "due now" if next_run is None or next_run <= now else fmt.iso(next_run),
            }
        )
    pending = session.execute(
        select(func.count())
        .select_from(AlertEvent)
        .where(col(AlertEvent.status).in_(("pending", "claimed")))
    ).scalar_one()
    sources = {
        name: fmt.iso(at)
        for name, at in sorted(last_success(session).items())
        if name in {j.source for j in jobs}
    }
    return {
        "now": fmt.iso(now),
        "leader": leader,
        "jobs": job_rows,
        "sources": sources,
        "pending_deliveries": int(pending),
        "dirty_days": len(rollups.dirty_days(session)),
    }
