"""The daemon's job runner in-process: failures and hangs are counted, the daemon goes on."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select
from sqlmodel import Session

from monitor import db, lease
from monitor.config import AdvisorSection, RunSection, Settings
from monitor.models import JobRun, Tally
from monitor.scheduler import Daemon, Job, JobContext, build_jobs


def _settings(**run: object) -> Settings:
    opts: dict[str, object] = {"job_timeout": timedelta(seconds=1), "lease": timedelta(seconds=3)}
    opts.update(run)
    return Settings(database_url="sqlite://", run=RunSection(**opts))  # type: ignore[arg-type]


def _ok(ctx: JobContext) -> int:
    ctx.session.add(Tally(metric="ran", key=str(ctx.now.timestamp()), value=1))
    return 1


def _raise(ctx: JobContext) -> int:
    raise RuntimeError("upstream said no")


def _hang(ctx: JobContext) -> int:
    ctx.session.add(Tally(metric="hang", key="half-written", value=1))
    ctx.session.flush()
    while True:  # a job stuck in a loop: only the deadline gets it out
        time.sleep(0.01)


def _runs(engine: Engine) -> dict[tuple[str, str], int]:
    with Session(engine) as s:
        rows = s.execute(
            select(JobRun.job, JobRun.outcome, func.count()).group_by(JobRun.job, JobRun.outcome)
        )
        return {(j, o): int(n) for j, o, n in rows}


def test_failing_and_hanging_jobs_are_counted_and_the_daemon_goes_on(engine: Engine) -> None:
    jobs = [
        Job("fine", timedelta(seconds=0.2), _ok),
        Job("broken", timedelta(seconds=0.2), _raise),
        Job("stuck", timedelta(seconds=0.2), _hang),
    ]
    daemon = Daemon(_settings(), engine, jobs=jobs)
    daemon.start()
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            runs = _runs(engine)
            if runs.get(("stuck", "timeout"), 0) >= 2 and runs.get(("fine", "ok"), 0) >= 5:
                break
            time.sleep(0.1)
    finally:
        assert daemon.stop(timeout=5)
    runs = _runs(engine)
    assert runs.get(("broken", "failed"), 0) >= 2, runs
    assert runs.get(("stuck", "timeout"), 0) >= 2, runs
    assert runs.get(("fine", "ok"), 0) >= 5, runs  # kept running beside the stuck job
    with Session(engine) as s:
        err = s.execute(select(JobRun.error).where(JobRun.job == "broken")).scalars().first()
        assert err is not None and "upstream said no" in err
        # The stuck job's write was rolled back when it was cut off.
        assert s.execute(select(Tally).where(Tally.metric == "hang")).first() is None
        counted = {
            t.key: t.value
            for t in s.execute(select(Tally).where(Tally.metric == "job_runs")).scalars()
        }
    assert counted["stuck|timeout"] == runs[("stuck", "timeout")]
    assert counted["broken|failed"] == runs[("broken", "failed")]


def test_only_the_leader_runs_jobs(engine: Engine) -> None:
    other = lease.Holder("other:1:x", "other", 1)
    with db.session_scope(engine) as s:
        assert lease.acquire(s, other, timedelta(minutes=5)) is not None
    daemon = Daemon(_settings(), engine, jobs=[Job("fine", timedelta(minutes=1), _ok)])
    outcomes = daemon.run_once()
    assert [o.outcome for o in outcomes] == ["skipped"]
    assert _runs(engine) == {}


def test_run_once_runs_due_jobs_only(engine: Engine) -> None:
    jobs = [Job("often", timedelta(seconds=0), _ok), Job("daily", timedelta(days=1), _ok)]
    daemon = Daemon(_settings(), engine, jobs=jobs)
    first = daemon.run_once()
    assert [(o.job, o.outcome) for o in first] == [("often", "ok"), ("daily", "ok")]
    second = daemon.run_once()
    assert [(o.job, o.outcome) for o in second] == [("often", "ok"), ("daily", "skipped")]
    daemon.leadership.stop()


def test_a_lost_lease_refuses_the_jobs_writes(engine: Engine) -> None:
    daemon = Daemon(_settings(), engine, jobs=[])
    assert daemon.leadership.tick()

    def steal_then_write(ctx: JobContext) -> int:
        # Another replica takes over mid-job (our lease expired unnoticed).
        with db.session_scope(engine) as s:
            row = s.get(lease.Lease, lease.SCHEDULER)
            assert row is not None
            row.expires_at = lease.db_now(s) - timedelta(seconds=1)
        with db.session_scope(engine) as s:
            assert lease.acquire(s, lease.Holder("b:2:y", "b", 2), timedelta(minutes=1))
        ctx.session.add(Tally(metric="stale", key="write", value=1))
        return 1

    outcome = daemon.run_job(Job("late", timedelta(minutes=1), steal_then_write))
    assert outcome.outcome == "failed" and "LeaseLost" in (outcome.error or "")
    with Session(engine) as s:
        assert s.execute(select(Tally).where(Tally.metric == "stale")).first() is None


def test_jobs_follow_the_configuration() -> None:
    settings = Settings()
    names = [j.name for j in build_jobs(settings)]
    # No source is configured: only the steps that need none.
    assert names == ["rollup", "gauges", "advise", "evaluate", "deliver", "report", "prune"]
    intervals = {j.name: j.interval for j in build_jobs(settings)}
    assert intervals["deliver"] == timedelta(seconds=10)
    assert intervals["evaluate"] == settings.alerting.interval
    assert intervals["advise"] == timedelta(minutes=15)
    tuned = Settings(advisor=AdvisorSection.model_validate({"interval": "1h"}))
    assert {j.name: j.interval for j in build_jobs(tuned)}["advise"] == timedelta(hours=1)


@pytest.mark.parametrize("seconds", [0.3])
def test_stop_waits_for_a_running_job(engine: Engine, seconds: float) -> None:
    def slow(ctx: JobContext) -> int:
        time.sleep(seconds)
        ctx.session.add(Tally(metric="slow", key="done", value=1))
        return 1

    daemon = Daemon(_settings(), engine, jobs=[Job("slow", timedelta(minutes=5), slow)])
    daemon.start()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not _runs(engine):
        time.sleep(0.02)
    assert daemon.stop(timeout=5)  # the job finished within the grace
    with Session(engine) as s:
        assert s.execute(select(Tally).where(Tally.metric == "slow")).first() is not None
        assert lease.current_leader(s) is None  # released for a peer at once


def test_no_weekly_report_before_the_first_usage_buckets(session: Session, tmp_path: Path) -> None:
    # The monitor starts on Sunday 2026-11-15 with the usage report configured; the batch
    # listing reaches back weeks. Whether the week of 2026-11-02 (which it never watched) was
    # reported depended on whether the report job ran before or after the first usage read
    # (a crash in between changed the answer). It waits for the usage buckets, which then say
    # the monitor started on the 14th: no report for that week, however the jobs were timed.
    from monitor import scheduler
    from monitor.config import ReportSection
    from monitor.models import ReportRun
    from tests import factories

    now = datetime(2026, 11, 15, tzinfo=UTC)
    factories.add_batch(
        session, "msgbatch_old", created=datetime(2026, 11, 4, tzinfo=UTC),
        ended=datetime(2026, 11, 4, 2, tzinfo=UTC),
    )  # fmt: skip
    for source in ("batches", "usage"):
        factories.add_run(session, source, now - timedelta(minutes=5), now)
    session.commit()
    settings = Settings(report=ReportSection(dir=str(tmp_path)))

    def report(sources: tuple[str, ...]) -> tuple[int, list[str]]:
        ctx = JobContext(session, now, settings, lease.Holder.me(), time.monotonic() + 60)
        return scheduler._report(ctx, sources=sources), ctx.notes

    assert report(("batches", "usage")) == (0, ["weekly report waits for the first usage buckets"])
    factories.add_usage(session, datetime(2026, 11, 14, 23, tzinfo=UTC), cost="1.00")
    session.commit()
    assert report(("batches", "usage")) == (0, [])
    assert session.execute(select(func.count()).select_from(ReportRun)).scalar_one() == 0
