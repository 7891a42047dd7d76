"""unread batch results, slow retries, 64-bit counts

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29 01:44:15.564629
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
import sqlmodel
from alembic import op

from monitor import clock

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# Counts and token sums that can pass 2**31 (one large batch can): BIGINT on PostgreSQL.
# SQLite's INTEGER is 64-bit already, and its models keep the INTEGER type (models.COUNT).
COUNTS: dict[str, tuple[str, ...]] = {
    "alert_event": ("attempts",),
    "batch": (
        "requests",
        "processing",
        "succeeded",
        "errored",
        "canceled",
        "expired",
        "input_tokens",
        "output_tokens",
        "cache_read_tokens",
        "cache_write_5m_tokens",
        "cache_write_1h_tokens",
        "web_searches",
        "unpriced_requests",
        "results_attempts",
    ),
    "batch_day": (
        "ended",
        "canceled",
        "expired",
        "archived",
        "results_unread",
        "results_unavailable",
        "requests",
        "unpriced_requests",
        "requests_succeeded",
        "requests_errored",
        "requests_canceled",
        "requests_expired",
        "turnaround_le_60",
        "turnaround_le_300",
        "turnaround_le_900",
        "turnaround_le_1800",
        "turnaround_le_3600",
        "turnaround_le_5400",
        "turnaround_le_7200",
        "turnaround_le_10800",
        "turnaround_le_21600",
        "turnaround_le_43200",
        "turnaround_le_86400",
        "turnaround_count",
    ),
    "batch_error": ("count",),
    "batch_total": (
        "ended",
        "canceled",
        "expired",
        "archived",
        "requests_succeeded",
        "requests_errored",
        "requests_canceled",
        "requests_expired",
        "turnaround_le_60",
        "turnaround_le_300",
        "turnaround_le_900",
        "turnaround_le_1800",
        "turnaround_le_3600",
        "turnaround_le_5400",
        "turnaround_le_7200",
        "turnaround_le_10800",
        "turnaround_le_21600",
        "turnaround_le_43200",
        "turnaround_le_86400",
        "turnaround_count",
    ),
    "batch_usage": (
        "requests",
        "input_tokens",
        "output_tokens",
        "cache_read_tokens",
        "cache_write_5m_tokens",
        "cache_write_1h_tokens",
        "web_searches",
    ),
    "call_bucket": (
        "calls",
        "input_tokens",
        "output_tokens",
        "cache_read_tokens",
        "cache_write_tokens",
        "latency_ms_sum",
        "latency_ms_max",
        "latency_count",
    ),
    "call_day": (
        "calls",
        "input_tokens",
        "output_tokens",
        "cache_read_tokens",
        "cache_write_tokens",
        "latency_ms_sum",
        "latency_ms_max",
        "latency_count",
    ),
    "collect_run": (
        "items",
        "api_calls",
        "bad_lines",
    ),
    "job_run": ("items",),
    "report_run": ("attempts",),
    "spend_day": (
        "requests",
        "batches",
        "input_tokens",
        "output_tokens",
        "cache_read_tokens",
        "cache_write_5m_tokens",
        "cache_write_1h_tokens",
        "unpriced_tokens",
    ),
    "spend_total": (
        "requests",
        "input_tokens",
        "output_tokens",
        "cache_read_tokens",
        "cache_write_5m_tokens",
        "cache_write_1h_tokens",
        "unpriced_tokens",
    ),
    "tally": ("value",),
    "usage_bucket": (
        "requests",
        "input_tokens",
        "output_tokens",
        "cache_read_tokens",
        "cache_write_5m_tokens",
        "cache_write_1h_tokens",
        "web_searches",
    ),
    "usage_day": (
        "buckets",
        "requests",
        "input_tokens",
        "output_tokens",
        "cache_read_tokens",
        "cache_write_5m_tokens",
        "cache_write_1h_tokens",
        "web_searches",
        "unpriced_tokens",
    ),
}


def upgrade() -> None:
    with op.batch_alter_table("batch_day", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("requests_unread", _count(), nullable=False, server_default="0")
        )
    with op.batch_alter_table("batch", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("results_retry_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True)
        )
    _widen("BIGINT")
    _requeue_unread_days()


def _count() -> sa.types.TypeEngine[int]:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _widen(to: str) -> None:
    """Change every count column's type on PostgreSQL, one table rewrite per table."""
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, columns in COUNTS.items():
        changes = ", ".join(f"ALTER COLUMN {c} TYPE {to}" for c in columns)
        op.execute(f"ALTER TABLE {table} {changes}")


def _requeue_unread_days() -> None:
    """Queue the days whose batches have unread results: their new column is still 0.

    A day older than the raw retention is left as it is by the refresh (its raw rows are gone),
    so its unread request count stays 0: the summary's note then undercounts, never overcounts.
    """
    conn = op.get_bind()
    batch = sa.table(
        "batch",
        sa.column("ended_at", sqlmodel.sql.sqltypes.UTCDateTime()),
        sa.column("results_state", sa.String()),
    )
    query = (
        sa.select(batch.c.ended_at)
        .where(batch.c.ended_at.is_not(None), batch.c.results_state != "ingested")
        .distinct()
    )
    days: set[datetime] = {
        v.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        for (v,) in conn.execute(query)
    }
    if not days:
        return
    rollup_day = sa.table(
        "rollup_day",
        sa.column("day", sqlmodel.sql.sqltypes.UTCDateTime()),
        sa.column("clean", sa.Boolean()),
        sa.column("marked_at", sqlmodel.sql.sqltypes.UTCDateTime()),
    )
    now = clock.utcnow()
    for day in sorted(days):
        moved = conn.execute(
            sa.update(rollup_day).where(rollup_day.c.day == day).values(clean=False, marked_at=now)
        ).rowcount
        if not moved:
            conn.execute(sa.insert(rollup_day).values(day=day, clean=False, marked_at=now))


def downgrade() -> None:
    # A count past 2**31 makes this fail on PostgreSQL (and nothing is changed): say so rather
    # than cut it.
    _widen("INTEGER")
    with op.batch_alter_table("batch", schema=None) as batch_op:
        batch_op.drop_column("results_retry_at")
    with op.batch_alter_table("batch_day", schema=None) as batch_op:
        batch_op.drop_column("requests_unread")
