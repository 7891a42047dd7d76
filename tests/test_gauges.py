"""The exporter's window figures, stored by the daemon's ``gauges`` job and read back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlmodel import Session, select

from monitor import gauges
from monitor.models import Batch, UsageBucket, WindowFigure

NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)
H = timedelta(hours=1)


def _rows(session: Session) -> None:
    session.add(
        UsageBucket(
            bucket_start=NOW - 2 * H,
            bucket_end=NOW - H,
            width="1h",
            source="analytics",
            product="messages_api",
            model="claude-sonnet-4-6",
            service_tier="standard",
            workspace_id="wrkspc_a",
            requests=600,
            cost_usd=Decimal("6.00"),
            fetched_at=NOW,
        )
    )
    for i, (ended, minutes) in enumerate(((NOW - H / 2, 20), (NOW - 3 * H, 200))):
        created = ended - timedelta(minutes=minutes)
        session.add(
            Batch(
                id=f"b{i}",
                workspace_id="wrkspc_a",
                processing_status="ended",
                created_at=created,
                ended_at=ended,
                requests=200,
                succeeded=198,
                errored=2,
                turnaround_seconds=minutes * 60.0,
                cost_usd=Decimal("1.00"),
                standard_cost_usd=Decimal("2.00"),
                results_state="ingested",
                first_seen_at=created,
                updated_at=ended,
            )
        )
    session.commit()


def test_stored_figures_are_the_computed_ones_until_they_are_stale(session: Session) -> None:
    _rows(session)
    assert gauges.read(session, NOW, timedelta(minutes=5)) is None  # nothing stored yet
    computed = gauges.compute(session, NOW)
    assert gauges.store(session, NOW) == len(gauges.WINDOWS) * len(gauges.FIGURES)
    session.commit()
    stored = gauges.read(session, NOW + timedelta(minutes=4), timedelta(minutes=5))
    assert stored is not None and stored.values == computed.values
    assert stored.computed_at == NOW
    # Figures as summary computes them: 400 batch requests of 1,000 over a day.
    assert computed.values[("1d", "batch_share_requests")] == 0.4
    # The last hour has a batch but no usage report: the real-time side is unknown, no sample.
    assert computed.values[("1h", "batch_share_requests")] is None
    assert computed.values[("1h", "batch_turnaround_p50_seconds")] == 1200.0
    assert computed.values[("1h", "cost_drift_ratio")] is None  # no whole day: no sample
    assert computed.values[("1d", "batch_turnaround_p95_seconds")] == 12_000.0
    assert computed.values[("1d", "batch_failure_ratio")] == 4 / 400
    # Too old (the daemon stopped), or from a clock ahead of this one: computed afresh.
    assert gauges.read(session, NOW + timedelta(minutes=6), timedelta(minutes=5)) is None
    assert gauges.read(session, NOW - timedelta(minutes=6), timedelta(minutes=5)) is None


def test_a_new_round_replaces_every_row(session: Session) -> None:
    _rows(session)
    gauges.store(session, NOW)
    session.commit()
    gauges.store(session, NOW + H)
    session.commit()
    rows = session.exec(select(WindowFigure)).all()
    assert len(rows) == len(gauges.WINDOWS) * len(gauges.FIGURES)
    assert {r.computed_at for r in rows} == {NOW + H}
    # A row missing (another version wrote fewer): not trusted.
    session.delete(rows[0])
    session.commit()
    assert gauges.read(session, NOW + H, timedelta(minutes=5)) is None
