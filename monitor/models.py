"""The stored tables (SQLModel), and nothing else.

Conventions:
- every timestamp is an aware UTC datetime (sqlmodel's UTCDateTime);
- money is ``Decimal`` in USD (``Money`` column type: exact on both databases);
- raw token counts are stored by kind and priced separately; a cost is never the only record;
- natural keys are unique constraints so collectors can upsert; absent dimensions are stored as
  the empty string, not NULL, because NULLs never collide in a unique constraint.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import Column, Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from monitor.money import Money


def _money(nullable: bool = True) -> Column[Decimal]:
    return Column(Money(), nullable=nullable)


class Batch(SQLModel, table=True):
    """One Message Batch, as the API last described it plus what its results said."""

    __tablename__ = "batch"
    __table_args__ = (
        Index("ix_batch_ended_at", "ended_at"),
        Index("ix_batch_created_at", "created_at"),
        Index("ix_batch_status", "processing_status"),
        Index("ix_batch_workspace_ended", "workspace_id", "ended_at"),
        Index("ix_batch_results_state", "results_state"),
    )

    id: str = Field(primary_key=True, max_length=128)
    workspace_id: str = Field(default="", max_length=128)
    workload: str | None = Field(default=None, max_length=128)
    processing_status: str = Field(max_length=32)
    created_at: datetime
    ended_at: datetime | None = None
    expires_at: datetime | None = None
    cancel_initiated_at: datetime | None = None
    archived_at: datetime | None = None
    requests: int = 0
    processing: int = 0
    succeeded: int = 0
    errored: int = 0
    canceled: int = 0
    expired: int = 0
    turnaround_seconds: float | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_5m_tokens: int = 0
    cache_write_1h_tokens: int = 0
    web_searches: int = 0
    cost_usd: Decimal | None = Field(default=None, sa_column=_money())
    standard_cost_usd: Decimal | None = Field(default=None, sa_column=_money())
    # Requests whose model has no known price: their tokens are kept, their cost is not guessed.
    unpriced_requests: int = 0
    # pending -> ingested | unavailable (archived, no token data) | retry (a failed read)
    results_state: str = Field(default="pending", max_length=16)
    results_attempts: int = 0
    results_error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    results_ingested_at: datetime | None = None
    first_seen_at: datetime
    updated_at: datetime


class BatchUsage(SQLModel, table=True):
    """Tokens and cost of one batch for one model (a batch can mix models)."""

    __tablename__ = "batch_usage"

    batch_id: str = Field(primary_key=True, foreign_key="batch.id", max_length=128)
    model: str = Field(primary_key=True, max_length=128)
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_5m_tokens: int = 0
    cache_write_1h_tokens: int = 0
    web_searches: int = 0
    priced: bool = True
    cost_usd: Decimal | None = Field(default=None, sa_column=_money())
    standard_cost_usd: Decimal | None = Field(default=None, sa_column=_money())


class BatchError(SQLModel, table=True):
    """How many requests of a batch errored with one error type, and one sample message."""

    __tablename__ = "batch_error"

    batch_id: str = Field(primary_key=True, foreign_key="batch.id", max_length=128)
    error_type: str = Field(primary_key=True, max_length=64)
    count: int = 0
    sample_message: str | None = Field(default=None, sa_column=Column(Text, nullable=True))


class UsageBucket(SQLModel, table=True):
    """Token usage of one report bucket for one combination of dimensions."""

    __tablename__ = "usage_bucket"
    __table_args__ = (
        UniqueConstraint(
            "bucket_start",
            "width",
            "source",
            "product",
            "model",
            "service_tier",
            "workspace_id",
            "api_key_id",
            "context_window",
            "inference_geo",
            name="uq_usage_bucket_key",
        ),
        Index("ix_usage_bucket_start_tier", "bucket_start", "service_tier"),
        # Covers the window totals (spend, share, drift): they read the index alone.
        Index(
            "ix_usage_bucket_window",
            "bucket_start",
            "source",
            "product",
            "service_tier",
            "workspace_id",
            "model",
            "requests",
            "cost_usd",
            "standard_cost_usd",
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    bucket_start: datetime
    bucket_end: datetime
    width: str = Field(max_length=4)  # 1m | 1h | 1d
    source: str = Field(max_length=16)  # analytics | legacy
    product: str = Field(default="", max_length=32)  # messages_api | message_batches_api | ...
    model: str = Field(default="", max_length=128)
    service_tier: str = Field(default="", max_length=32)
    workspace_id: str = Field(default="", max_length=128)
    api_key_id: str = Field(default="", max_length=128)
    context_window: str = Field(default="", max_length=16)
    inference_geo: str = Field(default="", max_length=16)
    requests: int | None = None  # the legacy report has no request counts
    input_tokens: int = 0  # uncached
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_5m_tokens: int = 0
    cache_write_1h_tokens: int = 0
    web_searches: int = 0
    priced: bool = True
    cost_usd: Decimal | None = Field(default=None, sa_column=_money())  # computed, at its tier
    standard_cost_usd: Decimal | None = Field(default=None, sa_column=_money())
    final: bool = False  # past the revision lag: will not change any more
    fetched_at: datetime


class CostBucket(SQLModel, table=True):
    """What the provider billed for one UTC day and one line of the cost report."""

    __tablename__ = "cost_bucket"
    __table_args__ = (
        UniqueConstraint(
            "day",
            "source",
            "product",
            "workspace_id",
            "description",
            "model",
            "service_tier",
            "cost_type",
            "token_type",
            "context_window",
            "inference_geo",
            name="uq_cost_bucket_key",
        ),
        Index("ix_cost_bucket_day", "day"),
    )

    id: int | None = Field(default=None, primary_key=True)
    day: datetime  # 00:00 UTC of the billed day
    source: str = Field(max_length=16)
    product: str = Field(default="", max_length=32)
    workspace_id: str = Field(default="", max_length=128)
    description: str = Field(default="", max_length=255)
    model: str = Field(default="", max_length=128)
    service_tier: str = Field(default="", max_length=32)
    cost_type: str = Field(default="", max_length=32)
    token_type: str = Field(default="", max_length=64)
    context_window: str = Field(default="", max_length=16)
    inference_geo: str = Field(default="", max_length=16)
    amount_usd: Decimal = Field(sa_column=_money(nullable=False))  # the report's cents / 100
    list_amount_usd: Decimal | None = Field(default=None, sa_column=_money())
    fetched_at: datetime


class CallBucket(SQLModel, table=True):
    """Real-time calls from application logs, aggregated per hour, workload, model and tier."""

    __tablename__ = "call_bucket"
    __table_args__ = (
        UniqueConstraint(
            "hour", "workload", "model", "service_tier", "priority", name="uq_call_bucket_key"
        ),
        Index("ix_call_bucket_hour", "hour"),
    )

    id: int | None = Field(default=None, primary_key=True)
    hour: datetime
    workload: str = Field(max_length=128)
    model: str = Field(default="", max_length=128)
    service_tier: str = Field(default="", max_length=32)
    priority: str = Field(default="", max_length=16)  # "high" marks urgent requests
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    latency_ms_sum: int = 0
    latency_ms_max: int = 0
    latency_count: int = 0  # calls that reported a latency
    first_at: datetime | None = None
    last_at: datetime | None = None
    priced: bool = True
    cost_usd: Decimal | None = Field(default=None, sa_column=_money())  # at the real-time rate
    batch_cost_usd: Decimal | None = Field(default=None, sa_column=_money())  # same at batch rate


class SourceCursor(SQLModel, table=True):
    """How far one source has been read (opaque JSON owned by that source)."""

    __tablename__ = "source_cursor"

    source: str = Field(primary_key=True, max_length=255)
    cursor: str = Field(default="{}", sa_column=Column(Text, nullable=False))
    updated_at: datetime


class CollectRun(SQLModel, table=True):
    """One run of one source's collection: when, how it ended, what it recorded."""

    __tablename__ = "collect_run"
    __table_args__ = (Index("ix_collect_run_source_started", "source", "started_at"),)

    id: int | None = Field(default=None, primary_key=True)
    source: str = Field(max_length=64)
    started_at: datetime
    finished_at: datetime | None = None
    status: str = Field(default="running", max_length=16)  # running | ok | failed
    items: int = 0
    api_calls: int = 0
    bad_lines: int = 0
    error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))


class AlertState(SQLModel, table=True):
    """The current state of one alert (one label set)."""

    __tablename__ = "alert_state"
    __table_args__ = (Index("ix_alert_state_rule", "rule"),)

    fingerprint: str = Field(primary_key=True, max_length=64)
    rule: str = Field(max_length=128)
    severity: str = Field(max_length=16)
    labels: str = Field(sa_column=Column(Text, nullable=False))  # JSON object, sorted keys
    state: str = Field(max_length=16)  # inactive | pending | firing
    active_since: datetime | None = None
    firing_since: datetime | None = None
    last_true_at: datetime | None = None  # for keep_firing_for
    resolved_at: datetime | None = None
    value: float | None = None
    threshold: float | None = None
    reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    annotations: str = Field(default="{}", sa_column=Column(Text, nullable=False))
    last_notified_at: datetime | None = None
    last_evaluated_at: datetime | None = None


class AlertEvent(SQLModel, table=True):
    """One alert transition to deliver (the outbox): written once, delivered once."""

    __tablename__ = "alert_event"
    __table_args__ = (
        Index("ix_alert_event_status", "status", "next_attempt_at"),
        Index("ix_alert_event_fingerprint", "fingerprint", "created_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    fingerprint: str = Field(max_length=64)
    rule: str = Field(max_length=128)
    severity: str = Field(max_length=16)
    labels: str = Field(sa_column=Column(Text, nullable=False))
    transition: str = Field(max_length=16)  # firing | reminder | resolved
    value: float | None = None
    threshold: float | None = None
    reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    annotations: str = Field(default="{}", sa_column=Column(Text, nullable=False))
    created_at: datetime
    # pending -> claimed -> delivered | failed | suppressed
    status: str = Field(default="pending", max_length=16)
    status_reason: str | None = Field(default=None, max_length=255)
    claimed_by: str | None = Field(default=None, max_length=128)
    claimed_until: datetime | None = None
    attempts: int = 0
    next_attempt_at: datetime | None = None
    processed_at: datetime | None = None


class Notification(SQLModel, table=True):
    """One delivery attempt of one event to one channel."""

    __tablename__ = "notification"
    __table_args__ = (Index("ix_notification_event", "event_id"),)

    id: int | None = Field(default=None, primary_key=True)
    event_id: int = Field(foreign_key="alert_event.id")
    channel: str = Field(max_length=64)
    outcome: str = Field(max_length=16)  # ok | transient | permanent
    error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    duration_seconds: float = 0.0
    created_at: datetime
    # Where the message landed (Slack channel id and ts), so a resolution can thread under it.
    target: str | None = Field(default=None, max_length=128)
    message_ref: str | None = Field(default=None, max_length=64)


class Silence(SQLModel, table=True):
    """Mute the alerts whose labels match, between two times."""

    __tablename__ = "silence"

    id: int | None = Field(default=None, primary_key=True)
    matchers: str = Field(sa_column=Column(Text, nullable=False))  # JSON {label: value}
    starts_at: datetime
    ends_at: datetime
    comment: str = Field(default="", sa_column=Column(Text, nullable=False))
    created_at: datetime


class ReportRun(SQLModel, table=True):
    """One weekly report: when it was built and delivered, and its summary."""

    __tablename__ = "report_run"

    week_start: datetime = Field(primary_key=True)
    created_at: datetime
    delivered_at: datetime | None = None
    summary: str = Field(default="{}", sa_column=Column(Text, nullable=False))
