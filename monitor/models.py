"""The stored tables (SQLModel), and nothing else.

Conventions:
- every timestamp is an aware UTC datetime (sqlmodel's UTCDateTime);
- money is ``Decimal`` in USD (``Money`` column type: exact on both databases);
- raw token counts are stored by kind and priced separately; a cost is never the only record;
- counts and token sums are 64-bit on PostgreSQL (one large batch holds more than 2**31
  tokens; SQLite's INTEGER is 64-bit already);
- natural keys are unique constraints so collectors can upsert; absent dimensions are stored as
  the empty string, not NULL, because NULLs never collide in a unique constraint.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, Column, Index, Integer, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from monitor.money import Money


def _money(nullable: bool = True) -> Column[Decimal]:
    return Column(Money(), nullable=nullable)


# BIGINT on PostgreSQL; plain INTEGER (already 64-bit) on SQLite, whose INTEGER PRIMARY KEY
# rowid aliasing and migrations stay as they were.
COUNT = BigInteger().with_variant(Integer(), "sqlite")


def _count(default: int | None = 0) -> Any:
    return Field(default=default, sa_type=COUNT)


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
    requests: int = _count()
    processing: int = _count()
    succeeded: int = _count()
    errored: int = _count()
    canceled: int = _count()
    expired: int = _count()
    turnaround_seconds: float | None = None
    input_tokens: int = _count()
    output_tokens: int = _count()
    cache_read_tokens: int = _count()
    cache_write_5m_tokens: int = _count()
    cache_write_1h_tokens: int = _count()
    web_searches: int = _count()
    cost_usd: Decimal | None = Field(default=None, sa_column=_money())
    standard_cost_usd: Decimal | None = Field(default=None, sa_column=_money())
    # Requests whose model has no known price: their tokens are kept, their cost is not guessed.
    unpriced_requests: int = _count()
    # pending -> ingested | unavailable (archived, no token data) | retry (a failed read) |
    # failed (still unread after the fast retries: retried at results_retry_at, until archived)
    results_state: str = Field(default="pending", max_length=16)
    results_attempts: int = _count()
    results_retry_at: datetime | None = None
    results_error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    results_ingested_at: datetime | None = None
    first_seen_at: datetime
    updated_at: datetime


class BatchUsage(SQLModel, table=True):
    """Tokens and cost of one batch for one model (a batch can mix models)."""

    __tablename__ = "batch_usage"

    batch_id: str = Field(primary_key=True, foreign_key="batch.id", max_length=128)
    model: str = Field(primary_key=True, max_length=128)
    requests: int = _count()
    input_tokens: int = _count()
    output_tokens: int = _count()
    cache_read_tokens: int = _count()
    cache_write_5m_tokens: int = _count()
    cache_write_1h_tokens: int = _count()
    web_searches: int = _count()
    priced: bool = True
    cost_usd: Decimal | None = Field(default=None, sa_column=_money())
    standard_cost_usd: Decimal | None = Field(default=None, sa_column=_money())


class BatchError(SQLModel, table=True):
    """How many requests of a batch errored with one error type, and one sample message."""

    __tablename__ = "batch_error"

    batch_id: str = Field(primary_key=True, foreign_key="batch.id", max_length=128)
    error_type: str = Field(primary_key=True, max_length=64)
    count: int = _count()
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
    requests: int | None = _count(None)  # the legacy report has no request counts
    input_tokens: int = _count()  # uncached
    output_tokens: int = _count()
    cache_read_tokens: int = _count()
    cache_write_5m_tokens: int = _count()
    cache_write_1h_tokens: int = _count()
    web_searches: int = _count()
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
    calls: int = _count()
    input_tokens: int = _count()
    output_tokens: int = _count()
    cache_read_tokens: int = _count()
    cache_write_tokens: int = _count()
    latency_ms_sum: int = _count()
    latency_ms_max: int = _count()
    latency_count: int = _count()  # calls that reported a latency
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
    items: int = _count()
    api_calls: int = _count()
    bad_lines: int = _count()
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
    # Exact, like all money: a USD threshold of 10.10 stays 10.10 (ratios and seconds too).
    value: Decimal | None = Field(default=None, sa_column=_money())
    threshold: Decimal | None = Field(default=None, sa_column=_money())
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
    value: Decimal | None = Field(default=None, sa_column=_money())
    threshold: Decimal | None = Field(default=None, sa_column=_money())
    reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    annotations: str = Field(default="{}", sa_column=Column(Text, nullable=False))
    created_at: datetime
    # pending -> claimed -> delivered | failed | suppressed
    status: str = Field(default="pending", max_length=16)
    status_reason: str | None = Field(default=None, max_length=255)
    claimed_by: str | None = Field(default=None, max_length=128)
    claimed_until: datetime | None = None
    attempts: int = _count()
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
    """One weekly report: when it was built and delivered, and its summary.

    The row is the report's delivery record: a worker claims it with a compare-and-set on
    ``claimed_by``/``claimed_until`` (so two replicas never both build and post it), and each
    delivery step is recorded as soon as it succeeds (``message_ts`` after the Slack post,
    ``file_id`` after the chart upload), so a retry never repeats a step that already happened.
    ``post_started_at``/``upload_started_at`` mark a step whose outcome is unknown (the process
    died or the connection broke mid-call): the retry first looks for it in Slack.
    """

    __tablename__ = "report_run"

    week_start: datetime = Field(primary_key=True)
    created_at: datetime
    delivered_at: datetime | None = None
    summary: str = Field(default="{}", sa_column=Column(Text, nullable=False))
    claimed_by: str | None = Field(default=None, max_length=255)
    claimed_until: datetime | None = None
    attempts: int = _count()
    next_attempt_at: datetime | None = None
    post_started_at: datetime | None = None
    message_channel: str | None = Field(default=None, max_length=64)
    message_ts: str | None = Field(default=None, max_length=64)
    upload_started_at: datetime | None = None
    file_id: str | None = Field(default=None, max_length=64)
    error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))


# --- round 2: the service (leadership, job runs) and the rollups that keep it fast ----------


class Lease(SQLModel, table=True):
    """Who runs the scheduled jobs: one row per lease name, held until ``expires_at``.

    ``token`` is a fencing token: it grows by one with every new holder, and a write made under
    an older token is refused (see ``monitor/lease.py``). Times are real wall-clock UTC, not the
    business clock, because a lease is about processes being alive.
    """

    __tablename__ = "lease"

    name: str = Field(primary_key=True, max_length=64)
    holder: str = Field(max_length=255)  # host:pid:random, unique per process
    host: str = Field(max_length=255)
    pid: int
    token: int
    acquired_at: datetime
    renewed_at: datetime
    expires_at: datetime


class JobRun(SQLModel, table=True):
    """One run of one scheduled job (collection runs also get a ``collect_run`` row)."""

    __tablename__ = "job_run"
    __table_args__ = (Index("ix_job_run_job_started", "job", "started_at"),)

    id: int | None = Field(default=None, primary_key=True)
    job: str = Field(max_length=64)
    started_at: datetime  # business time (``now`` of the run)
    finished_at: datetime | None = None
    duration_seconds: float | None = None  # real elapsed time
    outcome: str = Field(default="running", max_length=16)  # running | ok | failed | timeout
    items: int = _count()
    error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    holder: str = Field(default="", max_length=255)


class Tally(SQLModel, table=True):
    """Counts carried over from pruned rows, so counters computed from rows never go down.

    ``metric`` names what was counted (``collect_errors``, ``job_runs``, ``notifications``);
    ``key`` is the label values joined by ``|`` (for example ``slack|ok``).
    """

    __tablename__ = "tally"

    metric: str = Field(primary_key=True, max_length=64)
    key: str = Field(primary_key=True, max_length=255)
    value: int = _count()


class RollupDay(SQLModel, table=True):
    """Whether one UTC day's rollups equal its raw rows (``clean``) or must be recomputed.

    Writers mark a day dirty in the same transaction as its raw rows; ``rollups.refresh``
    locks the day's row, recomputes its rollups and marks it clean in one transaction. Readers
    take a day from the rollups only when it is clean, and from the raw rows otherwise (a day
    with no row here was never rolled up), so a rollup is never read stale.
    """

    __tablename__ = "rollup_day"
    __table_args__ = (Index("ix_rollup_day_clean", "clean", "day"),)

    day: datetime = Field(primary_key=True)
    clean: bool = False
    marked_at: datetime


class UsageDay(SQLModel, table=True):
    """The usage report rolled up to UTC days, with every dimension a window figure filters on."""

    __tablename__ = "usage_day"
    __table_args__ = (
        UniqueConstraint(
            "day",
            "source",
            "product",
            "service_tier",
            "model",
            "workspace_id",
            "inference_geo",
            name="uq_usage_day_key",
        ),
        Index("ix_usage_day_day", "day", "source"),
    )

    id: int | None = Field(default=None, primary_key=True)
    day: datetime
    source: str = Field(max_length=16)
    product: str = Field(default="", max_length=32)
    service_tier: str = Field(default="", max_length=32)
    model: str = Field(default="", max_length=128)
    workspace_id: str = Field(default="", max_length=128)
    inference_geo: str = Field(default="", max_length=16)
    buckets: int = _count()  # hourly rows folded in
    requests: int | None = _count(None)
    input_tokens: int = _count()
    output_tokens: int = _count()
    cache_read_tokens: int = _count()
    cache_write_5m_tokens: int = _count()
    cache_write_1h_tokens: int = _count()
    web_searches: int = _count()
    unpriced_tokens: int = _count()
    cost_usd: Decimal | None = Field(default=None, sa_column=_money())
    standard_cost_usd: Decimal | None = Field(default=None, sa_column=_money())


class CallDay(SQLModel, table=True):
    """Application call-log buckets rolled up to UTC days."""

    __tablename__ = "call_day"
    __table_args__ = (
        UniqueConstraint(
            "day", "workload", "model", "service_tier", "priority", name="uq_call_day_key"
        ),
        Index("ix_call_day_day", "day"),
    )

    id: int | None = Field(default=None, primary_key=True)
    day: datetime
    workload: str = Field(max_length=128)
    model: str = Field(default="", max_length=128)
    service_tier: str = Field(default="", max_length=32)
    priority: str = Field(default="", max_length=16)
    calls: int = _count()
    input_tokens: int = _count()
    output_tokens: int = _count()
    cache_read_tokens: int = _count()
    cache_write_tokens: int = _count()
    latency_ms_sum: int = _count()
    latency_ms_max: int = _count()
    latency_count: int = _count()
    cost_usd: Decimal | None = Field(default=None, sa_column=_money())
    batch_cost_usd: Decimal | None = Field(default=None, sa_column=_money())


class SpendDay(SQLModel, table=True):
    """What one UTC day cost, per tier, model and workspace, exactly as ``summary`` says it.

    Real-time rows come from the usage report (or call logs when no report is collected),
    batch rows from the batch ledger (by the day the batch ended), ``billed_cost_usd`` from the
    cost report. The Grafana money panels read this table; ``spend_total`` sums it.
    """

    __tablename__ = "spend_day"
    __table_args__ = (
        UniqueConstraint("day", "service_tier", "model", "workspace_id", name="uq_spend_day_key"),
        Index("ix_spend_day_day", "day"),
    )

    id: int | None = Field(default=None, primary_key=True)
    day: datetime
    service_tier: str = Field(max_length=32)  # standard | batch | priority
    model: str = Field(default="", max_length=128)
    workspace_id: str = Field(default="", max_length=128)
    requests: int | None = _count(None)
    batches: int = (
        _count()
    )  # batch rows: batches with requests of this model (0 for real-time rows)
    input_tokens: int = _count()
    output_tokens: int = _count()
    cache_read_tokens: int = _count()
    cache_write_5m_tokens: int = _count()
    cache_write_1h_tokens: int = _count()
    unpriced_tokens: int = _count()
    cost_usd: Decimal | None = Field(default=None, sa_column=_money())
    standard_cost_usd: Decimal | None = Field(default=None, sa_column=_money())
    billed_cost_usd: Decimal | None = Field(default=None, sa_column=_money())
    complete: bool = False  # the day is over and its usage final
    updated_at: datetime


class SpendTotal(SQLModel, table=True):
    """All-time sums of ``spend_day`` per tier, model and workspace (kept by deltas)."""

    __tablename__ = "spend_total"

    service_tier: str = Field(primary_key=True, max_length=32)
    model: str = Field(primary_key=True, max_length=128)
    workspace_id: str = Field(primary_key=True, max_length=128)
    requests: int = _count()
    input_tokens: int = _count()
    output_tokens: int = _count()
    cache_read_tokens: int = _count()
    cache_write_5m_tokens: int = _count()
    cache_write_1h_tokens: int = _count()
    unpriced_tokens: int = _count()
    cost_usd: Decimal = Field(default=Decimal(0), sa_column=_money(nullable=False))
    standard_cost_usd: Decimal = Field(default=Decimal(0), sa_column=_money(nullable=False))
    billed_cost_usd: Decimal = Field(default=Decimal(0), sa_column=_money(nullable=False))


# Upper bounds (seconds) of the batch turnaround histogram: 1 min to 24 h, with 90 min and 2 h
# (the turnaround thresholds) as edges of their own.
TURNAROUND_BUCKETS = (60, 300, 900, 1800, 3600, 5400, 7200, 10800, 21600, 43200, 86400)


class BatchDay(SQLModel, table=True):
    """Batches that ended on one UTC day in one workspace: counts by outcome and turnaround."""

    __tablename__ = "batch_day"
    __table_args__ = (
        UniqueConstraint("day", "workspace_id", "workload", name="uq_batch_day_key"),
        Index("ix_batch_day_day", "day"),
    )

    id: int | None = Field(default=None, primary_key=True)
    day: datetime
    workspace_id: str = Field(default="", max_length=128)
    workload: str = Field(default="", max_length=128)
    ended: int = _count()  # ended batches (all of them, including canceled/expired/archived ones)
    canceled: int = _count()  # batches canceled before they finished
    expired: int = _count()  # batches with requests that expired
    archived: int = _count()
    results_unread: int = _count()  # ended batches whose results were not (or cannot be) read
    results_unavailable: int = _count()  # of those, archived before they were read (never will be)
    requests_unread: int = _count()  # requests of the batches whose results are unread
    requests: int = _count()
    unpriced_requests: int = _count()  # requests of models without a price (tokens kept, no cost)
    requests_succeeded: int = _count()
    requests_errored: int = _count()
    requests_canceled: int = _count()
    requests_expired: int = _count()
    # Non-cumulative counts per histogram bucket (``TURNAROUND_BUCKETS``; slower ones only count).
    turnaround_le_60: int = _count()
    turnaround_le_300: int = _count()
    turnaround_le_900: int = _count()
    turnaround_le_1800: int = _count()
    turnaround_le_3600: int = _count()
    turnaround_le_5400: int = _count()
    turnaround_le_7200: int = _count()
    turnaround_le_10800: int = _count()
    turnaround_le_21600: int = _count()
    turnaround_le_43200: int = _count()
    turnaround_le_86400: int = _count()
    turnaround_sum: float = 0.0
    turnaround_count: int = _count()
    # Every turnaround (seconds, JSON list): percentiles stay exact after the batches are pruned.
    turnarounds: str = Field(default="[]", sa_column=Column(Text, nullable=False))
    cost_usd: Decimal | None = Field(default=None, sa_column=_money())
    standard_cost_usd: Decimal | None = Field(default=None, sa_column=_money())


class BatchTotal(SQLModel, table=True):
    """All-time sums of ``batch_day`` per workspace (kept by deltas)."""

    __tablename__ = "batch_total"

    workspace_id: str = Field(primary_key=True, max_length=128)
    ended: int = _count()
    canceled: int = _count()
    expired: int = _count()
    archived: int = _count()
    requests_succeeded: int = _count()
    requests_errored: int = _count()
    requests_canceled: int = _count()
    requests_expired: int = _count()
    turnaround_le_60: int = _count()
    turnaround_le_300: int = _count()
    turnaround_le_900: int = _count()
    turnaround_le_1800: int = _count()
    turnaround_le_3600: int = _count()
    turnaround_le_5400: int = _count()
    turnaround_le_7200: int = _count()
    turnaround_le_10800: int = _count()
    turnaround_le_21600: int = _count()
    turnaround_le_43200: int = _count()
    turnaround_le_86400: int = _count()
    turnaround_sum: float = 0.0
    turnaround_count: int = _count()


class Advice(SQLModel, table=True):
    """The advisor's latest advice (written by the daemon, read by /metrics and the rules)."""

    __tablename__ = "advice"

    workload: str = Field(primary_key=True, max_length=128)
    model: str = Field(primary_key=True, max_length=128)
    recommendation: str = Field(max_length=16)
    monthly_savings_usd: Decimal | None = Field(default=None, sa_column=_money())
    computed_at: datetime


class WindowFigure(SQLModel, table=True):
    """The exporter's window gauges (written by the daemon's ``gauges`` job, read by /metrics)."""

    __tablename__ = "window_figure"

    window: str = Field(primary_key=True, max_length=8)  # 1h | 1d | 7d | 30d
    figure: str = Field(primary_key=True, max_length=64)  # gauges.FIGURES
    value: float | None = None  # None: no data in the window
    computed_at: datetime
