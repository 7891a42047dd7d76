"""Retention: a prune deletes old rows and every figure over the pruned days stays the same."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from sqlalchemy import func, select
from sqlmodel import Session

from monitor import db, rollups
from monitor.config import RetentionSection
from monitor.models import (
    AlertEvent,
    Batch,
    CallBucket,
    CollectRun,
    JobRun,
    Notification,
    SpendTotal,
    UsageBucket,
)
from monitor.retention import prune, tallies
from monitor.summary import build_summary
from tests.factories import DAY, add_history, add_usage_hour
from tests.factories import HISTORY_NOW as NOW
from tests.factories import HISTORY_T0 as T0

KEEP_TWO_DAYS = RetentionSection(raw=timedelta(days=2), batches=timedelta(days=3))


def _count(session: Session, model: type) -> int:
    return int(session.execute(select(func.count()).select_from(model)).scalar_one())


def _runs_and_events(session: Session) -> None:
    """Old runs and delivered alert events, with their notifications."""
    for d in range(5):
        at = T0 + d * DAY
        session.add(CollectRun(source="usage", started_at=at, finished_at=at, status="failed"))
        db.bump(session, "collect_runs", "usage|failed")
        session.add(JobRun(job="evaluate", started_at=at, finished_at=at, outcome="ok"))
        event = AlertEvent(
            fingerprint="f" * 64,
            rule="cost_drift",
            severity="warning",
            labels="{}",
            transition="firing",
            created_at=at,
            status="delivered",
        )
        session.add(event)
        session.flush()
        assert event.id is not None
        session.add(Notification(event_id=event.id, channel="slack", outcome="ok", created_at=at))
    session.commit()


def test_prune_keeps_every_window_figure_to_the_cent(session: Session) -> None:
    add_history(session)
    _runs_and_events(session)
    windows = [(T0, NOW), (T0, T0 + 3 * DAY), (T0 + DAY, T0 + 2 * DAY)]
    # The daemon refreshes dirty days before a prune; leave one dirty to prove prune does too.
    rollups.refresh(session, NOW)
    add_usage_hour(session, T0 + 5 * H_, "7.5", workspace="wrkspc_late")
    rollups.mark_dirty(session, [T0 + 5 * H_], NOW)
    session.commit()
    before = [build_summary(session, lo, hi, NOW).to_json() for lo, hi in windows]
    totals_before = {
        (t.service_tier, t.model, t.workspace_id): t.cost_usd
        for t in session.execute(select(SpendTotal)).scalars()
    }
    dry = prune(session, NOW, KEEP_TWO_DAYS, dry_run=True)
    assert (
        dry.deleted["usage_bucket"] > 0
        and _count(session, UsageBucket) > dry.deleted["usage_bucket"]
    )
    result = prune(session, NOW, KEEP_TWO_DAYS)
    assert result.deleted == dry.deleted  # the dry run said exactly what would go
    horizon = result.raw_before
    assert horizon == T0 + 3 * DAY
    assert session.execute(select(func.min(UsageBucket.bucket_start))).scalar_one() >= horizon
    assert session.execute(select(func.min(CallBucket.hour))).scalar() is None  # all were old
    assert _count(session, Batch) < 22 and _count(session, Notification) == 2
    after = [build_summary(session, lo, hi, NOW).to_json() for lo, hi in windows]
    for b, a in zip(before, after, strict=True):
        # Every figure, money to the cent, counts and percentiles, is the same. The one
        # exception is a point-in-time count at a past moment (batches in progress then),
        # which needs the pruned batch rows themselves.
        changed = {k: (b[k], a[k]) for k in b if a[k] != b[k]}
        assert set(changed) <= {"batches_in_progress"}, changed
    totals_after = {
        (t.service_tier, t.model, t.workspace_id): t.cost_usd
        for t in session.execute(select(SpendTotal)).scalars()
    }
    # Counters never go down; the late row the prune rolled up first is now counted too.
    late = ("standard", "claude-sonnet-4-6", "wrkspc_late")
    assert totals_after.pop(late) == Decimal("7.5")
    assert totals_after == totals_before
    # Counts of pruned rows carried over: counters that count rows do not go down either.
    assert tallies(session, "notifications") == {"slack|ok": 3}
    assert tallies(session, "collect_runs") == {"usage|failed": 5}


def test_late_data_for_a_pruned_day_is_left_out_not_half_counted(session: Session) -> None:
    add_history(session)
    rollups.refresh(session, NOW)
    prune(session, NOW, KEEP_TWO_DAYS)
    window = (T0, T0 + DAY)
    before = build_summary(session, *window, NOW).to_json()
    # A straggler for a pruned day: recomputing that day from one raw row would lose the rest.
    add_usage_hour(session, T0 + 2 * H_, "1.00", workspace="wrkspc_straggler")
    rollups.mark_dirty(session, [T0 + 2 * H_], NOW)
    session.commit()
    rollups.refresh(session, NOW)
    assert build_summary(session, *window, NOW).to_json() == before


H_ = timedelta(hours=1)
