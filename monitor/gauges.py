"""The exporter's window gauges: computed by the daemon once a minute, stored, read by scrapes.

Batch share, failure and expiry rates, turnaround percentiles and cost drift over the last
1 h, 1 d, 7 d and 30 d come from ``summary.window_figures`` (the figures ``summary`` prints).
Over a year of history that is about a hundred milliseconds of queries, and the answer only
changes when data is collected or the window slides by a minute, so the daemon's ``gauges``
job computes them every ``[run] rollup_interval`` and stores them in ``window_figure``; a
scrape reads eight rows. Every replica's exporter reads the same rows, so all show the same
numbers. When no fresh rows exist (no daemon has run lately, or ``batch-monitor metrics`` on
its own), a scrape computes them itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select
from sqlmodel import Session, col

from monitor.models import WindowFigure

WINDOWS: dict[str, timedelta] = {
    "1h": timedelta(hours=1),
    "1d": timedelta(days=1),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
}
# The figures of each window, as stored (None: no data in the window, so no sample).
FIGURES = (
    "batch_share_requests",
    "batch_share_spend",
    "batch_failure_ratio",
    "batch_expired_ratio",
    "batch_turnaround_p50_seconds",
    "batch_turnaround_p95_seconds",
    "cost_drift_ratio",
)


@dataclass(frozen=True)
class Gauges:
    """Every window's figures, and when they were computed."""

    values: dict[tuple[str, str], float | None]  # (window, figure) -> value
    computed_at: datetime


def compute(session: Session, now: datetime) -> Gauges:
    """Compute every window's figures as of ``now``."""
    from monitor.summary import window_figures

    values: dict[tuple[str, str], float | None] = {}
    for name, span in WINDOWS.items():
        w = window_figures(session, now - span, now)
        for figure, value in zip(
            FIGURES,
            (
                w.spend.batch_share_requests,
                w.spend.batch_share_spend,
                w.batches.failure_rate,
                w.batches.expired_rate,
                w.batches.turnaround_p50_seconds,
                w.batches.turnaround_p95_seconds,
                w.cost_drift_ratio,
            ),
            strict=True,
        ):
            values[(name, figure)] = None if value is None else float(value)
    return Gauges(values, now)


def store(session: Session, now: datetime) -> int:
    """Compute the figures and replace the stored ones (the caller commits); return how many."""
    gauges = compute(session, now)
    session.execute(delete(WindowFigure))
    session.add_all(
        WindowFigure(window=w, figure=f, value=v, computed_at=now)
        for (w, f), v in gauges.values.items()
    )
    return len(gauges.values)


def read(session: Session, now: datetime, max_age: timedelta) -> Gauges | None:
    """Return the stored figures when computed within ``max_age`` of ``now``, else None."""
    oldest = session.execute(select(func.min(col(WindowFigure.computed_at)))).scalar()
    if oldest is None or oldest < now - max_age or oldest > now + max_age:
        return None
    rows = session.execute(
        select(col(WindowFigure.window), col(WindowFigure.figure), col(WindowFigure.value))
    ).all()
    values = {(w, f): v for w, f, v in rows}
    if set(values) != {(w, f) for w in WINDOWS for f in FIGURES}:
        return None  # written by another version: compute instead
    return Gauges(values, oldest)
