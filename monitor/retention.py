"""Retention: prune old rows after their figures are safe in the rollups and tallies.

``prune(session, now, retention)`` is the daily job and ``batch-monitor db prune``:

1. Bring the rollups of every day older than the raw horizon up to date (``rollups.refresh``),
   then freeze them: a day older than the horizon is never recomputed from raw rows again
   (its raw rows are gone, or about to be), so late data that old is logged and left out.
2. Delete hourly usage and call buckets older than ``[retention] raw`` (only of clean days).
3. Delete collect runs, job runs and processed alert events (with their notifications) older
   than ``raw``. Runs are counted in ``tally`` as they finish; notifications are counted by
   channel and outcome into ``tally`` just before they go, so no counter on ``/metrics`` ever
   goes down.
4. Delete ended batches older than ``[retention] batches`` (their day rows stay).
5. Delete daily rollups older than ``[retention] rollups`` when it is not "forever" (the
   all-time totals keep their sums).

Each step is one transaction; a crash in between leaves a consistent store (a step either
happened with its tallies or not at all), and the next run finishes the job.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, select
from sqlmodel import Session, col

from monitor import fmt, rollups
from monitor.crashpoints import crashpoint
from monitor.models import (
    AlertEvent,
    Batch,
    BatchDay,
    BatchError,
    BatchUsage,
    CallBucket,
    CallDay,
    CollectRun,
    JobRun,
    Notification,
    SpendDay,
    Tally,
    UsageBucket,
    UsageDay,
)

if TYPE_CHECKING:
    from monitor.config import RetentionSection

log = logging.getLogger(__name__)

_PROCESSED = ("delivered", "failed", "suppressed")


@dataclass
class PruneResult:
    """How many rows of each table a prune deleted (or would delete, on a dry run)."""

    raw_before: datetime
    batches_before: datetime
    rollups_before: datetime | None
    deleted: dict[str, int] = field(default_factory=dict)


def add_tally(session: Session, metric: str, counts: Iterable[tuple[str, int]]) -> None:
    """Add ``counts`` (key -> n) to the tally ``metric`` (the caller commits)."""
    for key, n in counts:
        if not n:
            continue
        row = session.get(Tally, (metric, key))
        if row is None:
            session.add(Tally(metric=metric, key=key, value=n))
        else:
            row.value += n
    session.flush()


def tallies(session: Session, metric: str) -> dict[str, int]:
    """Return the tally ``metric`` as key -> count."""
    rows = session.execute(
        select(col(Tally.key), col(Tally.value)).where(col(Tally.metric) == metric)
    )
    return {k: int(v) for k, v in rows}


def _count(session: Session, stmt: Any) -> int:
    return int(session.execute(stmt).scalar_one() or 0)


def prune(
    session: Session, now: datetime, retention: RetentionSection, *, dry_run: bool = False
) -> PruneResult:
    """Prune what ``retention`` says is old as of ``now`` (see the module docstring)."""
    raw_before = fmt.day_floor(now - retention.raw)
    batches_before = now - retention.batches
    rollups_before = fmt.day_floor(now - retention.rollups) if retention.rollups else None
    result = PruneResult(raw_before, batches_before, rollups_before)

    # 1. Rollups first: a day's raw rows go only once its day rows hold their sums.
    if not dry_run:
        rollups.refresh(session, now, before=raw_before)
        rollups.freeze(session, raw_before)
        session.commit()
    # Only days with clean rollups lose their raw rows (a refresh cut short leaves some dirty).
    # (A dry run counts as if the refresh above had run.)
    dirty = [] if dry_run else rollups.dirty_days(session, before=raw_before)
    raw_limit = min([raw_before, *dirty])

    def step(name: str, table: Any, *where: Any, tally: Any = None) -> None:
        n = _count(session, select(func.count()).select_from(table).where(*where))
        result.deleted[name] = result.deleted.get(name, 0) + n
        if dry_run or not n:
            return
        if tally is not None:
            tally()
        session.execute(delete(table).where(*where))
        crashpoint("retention.prune")
        session.commit()

    # 2. Hourly buckets.
    step("usage_bucket", UsageBucket, col(UsageBucket.bucket_start) < raw_limit)
    step("call_bucket", CallBucket, col(CallBucket.hour) < raw_limit)

    # 3. Runs and processed alert events, their counts carried over to tallies.
    # (collect and job runs are counted in ``tally`` as they finish: deleting them is enough)
    step(
        "collect_run",
        CollectRun,
        col(CollectRun.started_at) < raw_before,
        col(CollectRun.status) != "running",
    )
    step("job_run", JobRun, col(JobRun.started_at) < raw_before, col(JobRun.outcome) != "running")
    old_events = select(col(AlertEvent.id)).where(
        col(AlertEvent.created_at) < raw_before, col(AlertEvent.status).in_(_PROCESSED)
    )
    old_notes = (col(Notification.event_id).in_(old_events),)

    def notification_tally() -> None:
        rows = session.execute(
            select(col(Notification.channel), col(Notification.outcome), func.count())
            .where(*old_notes)
            .group_by(col(Notification.channel), col(Notification.outcome))
        )
        add_tally(session, "notifications", ((f"{c}|{o}", int(n)) for c, o, n in rows))

    step("notification", Notification, *old_notes, tally=notification_tally)
    step(
        "alert_event",
        AlertEvent,
        col(AlertEvent.created_at) < raw_before,
        col(AlertEvent.status).in_(_PROCESSED),
    )

    # 4. Old ended batches (children first). Their days are rolled up and frozen.
    old_batch = select(col(Batch.id)).where(
        col(Batch.ended_at).is_not(None),
        col(Batch.ended_at) < min(batches_before, raw_before),
    )
    step("batch_error", BatchError, col(BatchError.batch_id).in_(old_batch))
    step("batch_usage", BatchUsage, col(BatchUsage.batch_id).in_(old_batch))
    step(
        "batch",
        Batch,
        col(Batch.ended_at).is_not(None),
        col(Batch.ended_at) < min(batches_before, raw_before),
    )

    # 5. Old rollups, if they are not kept forever (the totals keep the sums).
    if rollups_before is not None:
        for name, table in (
            ("usage_day", UsageDay),
            ("call_day", CallDay),
            ("batch_day", BatchDay),
            ("spend_day", SpendDay),
        ):
            step(name, table, col(table.day) < rollups_before)
    return result
