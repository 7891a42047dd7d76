"""Window figures computed from stored rows: the one place the numbers are defined.

The ``summary`` command, the rules and (later) the exporter and weekly report all read their
figures through these functions, so every surface agrees. Conventions:

- A batch counts in the window in which it *ended* (that is when its usage is billed); requests
  of unended batches count nowhere yet. Windows are half-open, ``[since, until)``, in UTC.
- Batch figures come from the batch ledger (``batch``/``batch_usage``); real-time figures from the
  usage reports (analytics preferred over legacy), or from application call logs when no report
  was collected. Every figure says which source it came from.
- Usage and call-log figures read the hourly rows for the parts of a window that are not whole
  UTC days, and the daily rollups (``usage_day``, ``call_day``) for whole days that are rolled
  up and clean (``rollup_day``): ``window_parts`` makes that choice, and both give the same
  money to the cent, so a long window is fast and a pruned month still adds up.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy import and_, case, func, literal, select, text
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import Session, col

from monitor import fmt
from monitor.fmt import money_json, to_cents
from monitor.models import (
    Batch,
    BatchDay,
    BatchUsage,
    CallBucket,
    CallDay,
    CollectRun,
    CostBucket,
    RollupDay,
    SpendDay,
    UsageBucket,
    UsageDay,
)
from monitor.money import ZERO, money_sum

BATCH_PRODUCT = "message_batches_api"
REALTIME_PRODUCT = "messages_api"
REALTIME_TIERS = ("standard", "priority", "priority_on_demand", "flex", "flex_discount")
# Billed lines the computed side also prices (code execution and sessions are not token usage).
PRICED_COST_TYPES = ("tokens", "web_search", "")


def recorded_workspaces(session: Session) -> set[str]:
    """Return every workspace id the store has figures for (raw or rolled up)."""
    from sqlalchemy import union

    tables: tuple[Any, ...] = (Batch, BatchDay, UsageBucket, UsageDay, CostBucket, SpendDay)
    stmt = union(*(select(col(t.workspace_id)) for t in tables))
    return {w for (w,) in session.execute(stmt) if w}


def nearest_rank(values: Sequence[float], pct: float) -> float | None:
    """Return the nearest-rank percentile (``pct`` in 0-100) of ``values``, None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * pct // 100))  # ceil(n * p / 100), at least 1
    return ordered[int(rank) - 1]


def _ratio(num: float | Decimal | int | None, den: float | Decimal | int | None) -> float | None:
    if num is None or den is None or den == 0:
        return None
    return float(Decimal(num) / Decimal(den))


# --- batches ------------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchFigures:
    """Figures over the batches that ended in a window."""

    batches_ended: int = 0
    requests: int = 0
    succeeded: int = 0
    errored: int = 0
    canceled: int = 0
    expired: int = 0
    failure_rate: float | None = None
    expired_rate: float | None = None
    turnaround_p50_seconds: float | None = None
    turnaround_p95_seconds: float | None = None
    cost_usd: Decimal = ZERO
    standard_cost_usd: Decimal = ZERO
    savings_usd: Decimal = ZERO
    unpriced_requests: int = 0
    # Ended batches whose results could not be read (archived): their cost is unknown, not zero.
    batches_without_token_data: int = 0
    # Ended batches whose results are not read (yet, or ever): the money is a lower bound.
    results_unread: int = 0
    requests_unread: int = 0

    @property
    def unread_share(self) -> float:
        """Return the share of the window's batch requests whose results are unread."""
        return self.requests_unread / self.requests if self.requests else 0.0


def _ended_in(since: datetime, until: datetime) -> ColumnElement[bool]:
    return and_(
        col(Batch.ended_at).is_not(None), col(Batch.ended_at) >= since, col(Batch.ended_at) < until
    )


@dataclass
class _BatchAcc:
    """Sums over ended batches, from batch rows or from ``batch_day`` rollups alike."""

    n: int = 0
    requests: int = 0
    succeeded: int = 0
    errored: int = 0
    canceled: int = 0
    expired: int = 0
    unpriced: int = 0
    no_data: int = 0
    unread: int = 0
    unread_requests: int = 0
    cost: Decimal = ZERO
    standard: Decimal = ZERO

    def add_batch(self, r: Any) -> None:
        """Add one ``batch`` row (``_BATCH_COLS``)."""
        self.n += 1
        self.requests += r.requests
        self.succeeded += r.succeeded
        self.errored += r.errored
        self.canceled += r.canceled
        self.expired += r.expired
        self.unpriced += r.unpriced_requests
        self.cost += r.cost_usd or ZERO
        self.standard += r.standard_cost_usd or ZERO
        self.no_data += r.results_state == "unavailable"
        if r.results_state != "ingested":
            self.unread += 1
            self.unread_requests += r.requests

    def add_day(self, r: Any) -> None:
        """Add one ``batch_day`` row (``_DAY_COLS``)."""
        self.n += r.ended
        self.requests += r.requests
        self.succeeded += r.requests_succeeded
        self.errored += r.requests_errored
        self.canceled += r.requests_canceled
        self.expired += r.requests_expired
        self.unpriced += r.unpriced_requests
        self.cost += r.cost_usd or ZERO
        self.standard += r.standard_cost_usd or ZERO
        self.no_data += r.results_unavailable
        self.unread += r.results_unread
        self.unread_requests += r.requests_unread

    def figures(self, turnarounds: Sequence[float]) -> BatchFigures:
        """Return the figures, with percentiles over ``turnarounds``."""
        return BatchFigures(
            batches_ended=self.n,
            requests=self.requests,
            succeeded=self.succeeded,
            errored=self.errored,
            canceled=self.canceled,
            expired=self.expired,
            failure_rate=_ratio(self.errored + self.expired, self.requests),
            expired_rate=_ratio(self.expired, self.requests),
            turnaround_p50_seconds=nearest_rank(turnarounds, 50),
            turnaround_p95_seconds=nearest_rank(turnarounds, 95),
            cost_usd=self.cost,
            standard_cost_usd=self.standard,
            savings_usd=self.standard - self.cost,
            unpriced_requests=self.unpriced,
            batches_without_token_data=self.no_data,
            results_unread=self.unread,
            requests_unread=self.unread_requests,
        )


_BATCH_COLS = (
    col(Batch.workspace_id),
    col(Batch.workload),
    col(Batch.requests),
    col(Batch.succeeded),
    col(Batch.errored),
    col(Batch.canceled),
    col(Batch.expired),
    col(Batch.unpriced_requests),
    col(Batch.cost_usd),
    col(Batch.standard_cost_usd),
    col(Batch.results_state),
    col(Batch.turnaround_seconds),
)
_DAY_COLS = (
    col(BatchDay.workspace_id),
    col(BatchDay.workload),
    col(BatchDay.ended),
    col(BatchDay.requests),
    col(BatchDay.requests_succeeded),
    col(BatchDay.requests_errored),
    col(BatchDay.requests_canceled),
    col(BatchDay.requests_expired),
    col(BatchDay.unpriced_requests),
    col(BatchDay.results_unavailable),
    col(BatchDay.results_unread),
    col(BatchDay.requests_unread),
    col(BatchDay.cost_usd),
    col(BatchDay.standard_cost_usd),
    col(BatchDay.turnarounds),
)


def _batch_groups(
    session: Session,
    since: datetime,
    until: datetime,
    key: Callable[[Any], str],
    *,
    workspace: str | None = None,
    workload: str | None = None,
) -> dict[str, BatchFigures]:
    """Sum the batches that ended in the window per ``key(row)`` (a workspace or workload).

    Whole clean days come from ``batch_day``, which keeps every turnaround too, so a window
    over pruned batches gives the same counts, money and percentiles.
    """
    accs: dict[str, _BatchAcc] = defaultdict(_BatchAcc)
    turnarounds: dict[str, list[float]] = defaultdict(list)

    def narrow(stmt: Any, table: Any) -> Any:
        if workspace is not None:
            stmt = stmt.where(col(table.workspace_id) == workspace)
        if workload is not None:
            stmt = stmt.where(col(table.workload) == workload)
        return stmt

    for part in window_parts(session, since, until):
        if part.daily:
            days = select(*_DAY_COLS).where(
                col(BatchDay.day) >= part.since, col(BatchDay.day) < part.until
            )
            for r in session.execute(narrow(days, BatchDay)):
                accs[key(r)].add_day(r)
                turnarounds[key(r)].extend(orjson.loads(r.turnarounds))
            continue
        raw = select(*_BATCH_COLS).where(_ended_in(part.since, part.until))
        for r in session.execute(narrow(raw, Batch)):
            k = key(r)
            accs[k].add_batch(r)
            if r.turnaround_seconds is not None:
                turnarounds[k].append(r.turnaround_seconds)
    return {k: acc.figures(turnarounds.get(k, [])) for k, acc in sorted(accs.items())}


def batch_figures(
    session: Session,
    since: datetime,
    until: datetime,
    *,
    workspace: str | None = None,
    workload: str | None = None,
) -> BatchFigures:
    """Compute figures over the batches that ended in ``[since, until)``."""
    groups = _batch_groups(
        session, since, until, lambda r: "", workspace=workspace, workload=workload
    )
    return groups.get("", BatchFigures())


def batch_figures_by(
    session: Session, since: datetime, until: datetime, by: str, *, workspace: str | None = None
) -> dict[str, BatchFigures]:
    """Compute batch figures per workspace, workload or model (of one workspace, if given).

    Per model only the succeeded requests are known (an errored result names no model), so
    those figures carry requests, tokens and cost, and no failure rate.
    """
    if by == "workspace":
        return _batch_groups(session, since, until, lambda r: r.workspace_id, workspace=workspace)
    if by == "workload":
        return _batch_groups(session, since, until, lambda r: r.workload or "", workspace=workspace)
    if by != "model":
        raise ValueError(f"cannot group batch figures by {by!r}")
    sums: dict[str, list[Any]] = {}
    for part in window_parts(session, since, until):
        stmt: Any
        if part.daily:
            stmt = (
                select(
                    col(SpendDay.model),
                    func.sum(col(SpendDay.batches)),
                    func.sum(col(SpendDay.requests)),
                    money_sum(col(SpendDay.cost_usd)),
                    money_sum(col(SpendDay.standard_cost_usd)),
                )
                .where(
                    col(SpendDay.service_tier) == "batch",
                    col(SpendDay.day) >= part.since,
                    col(SpendDay.day) < part.until,
                )
                .group_by(col(SpendDay.model))
            )
            if workspace is not None:
                stmt = stmt.where(col(SpendDay.workspace_id) == workspace)
        else:
            stmt = (
                select(
                    col(BatchUsage.model),
                    func.count(col(BatchUsage.batch_id)),
                    func.sum(col(BatchUsage.requests)),
                    money_sum(col(BatchUsage.cost_usd)),
                    money_sum(col(BatchUsage.standard_cost_usd)),
                )
                .join(Batch, col(Batch.id) == col(BatchUsage.batch_id))
                .where(_ended_in(part.since, part.until))
                .group_by(col(BatchUsage.model))
            )
            if workspace is not None:
                stmt = stmt.where(col(Batch.workspace_id) == workspace)
        for model, n, reqs, cost, standard in session.execute(stmt):
            acc = sums.setdefault(model, [0, 0, None, None])
            acc[0] += int(n or 0)
            acc[1] += int(reqs or 0)
            acc[2] = _add_money(acc[2], cost)
            acc[3] = _add_money(acc[3], standard)
    out: dict[str, BatchFigures] = {}
    for model, (n, reqs, cost, standard) in sorted(sums.items()):
        unpriced = reqs if cost is None else 0  # a model without a price
        cost, standard = cost or ZERO, standard or ZERO
        out[model] = BatchFigures(
            batches_ended=n,
            requests=reqs,
            succeeded=reqs,
            cost_usd=cost,
            standard_cost_usd=standard,
            savings_usd=standard - cost,
            unpriced_requests=unpriced,
        )
    return out


@dataclass(frozen=True)
class InProgress:
    """A batch that had not ended at some moment."""

    id: str
    workspace_id: str
    workload: str | None
    created_at: datetime
    expires_at: datetime | None
    age_seconds: float


def in_progress(
    session: Session, at: datetime, *, workspace: str | None = None
) -> list[InProgress]:
    """Return the batches created before ``at`` that had not ended by ``at``, oldest first."""
    cols = (
        col(Batch.id),
        col(Batch.workspace_id),
        col(Batch.workload),
        col(Batch.created_at),
        col(Batch.expires_at),
    )
    # Two range reads on the ended_at index (still unended; ended only after ``at``) instead
    # of one OR, which SQLite can only answer by scanning every batch.
    unended = select(*cols).where(col(Batch.ended_at).is_(None), col(Batch.created_at) < at)
    later = select(*cols).where(col(Batch.ended_at) > at, col(Batch.created_at) < at)
    rows: list[Any] = []
    for stmt in (unended, later):
        if workspace is not None:
            stmt = stmt.where(col(Batch.workspace_id) == workspace)
        rows.extend(session.execute(stmt))
    rows.sort(key=lambda r: (r.created_at, r.id))
    return [
        InProgress(
            r.id,
            r.workspace_id,
            r.workload,
            r.created_at,
            r.expires_at,
            (at - r.created_at).total_seconds(),
        )
        for r in rows
    ]


# --- where a window's rows come from -------------------------------------------------------

DAY = timedelta(days=1)


@dataclass(frozen=True)
class Part:
    """One stretch of a window and the table that holds it (hourly rows or daily rollups)."""

    since: datetime
    until: datetime
    daily: bool


def window_parts(session: Session, since: datetime, until: datetime) -> list[Part]:
    """Split ``[since, until)`` into stretches read from raw rows or from daily rollups.

    Whole UTC days marked clean come from the rollups; the ragged ends and every other day come
    from the hourly rows (which the retention prunes only from clean days).
    """
    first, last = _first_whole_day(since), fmt.day_floor(until)
    if first >= last:
        return [Part(since, until, daily=False)]
    clean = set(
        session.execute(
            select(col(RollupDay.day)).where(
                col(RollupDay.clean), col(RollupDay.day) >= first, col(RollupDay.day) < last
            )
        ).scalars()
    )
    parts: list[Part] = []

    def add(lo: datetime, hi: datetime, daily: bool) -> None:
        if lo >= hi:
            return
        if parts and parts[-1].daily == daily and parts[-1].until == lo:
            parts[-1] = Part(parts[-1].since, hi, daily)
        else:
            parts.append(Part(lo, hi, daily))

    add(since, first, False)
    day = first
    while day < last:
        add(day, day + DAY, day in clean)
        day += DAY
    add(last, until, False)
    return parts


def _usage_table(part: Part) -> tuple[Any, Any]:
    """Return the usage table and its time column for ``part``."""
    if part.daily:
        return UsageDay, col(UsageDay.day)
    return UsageBucket, col(UsageBucket.bucket_start)


def _in_part(time_col: Any, part: Part) -> ColumnElement[bool]:
    return and_(time_col >= part.since, time_col < part.until)


def _add_money(a: Decimal | None, b: Decimal | None) -> Decimal | None:
    if a is None:
        return b
    if b is None:
        return a
    return a + b


def _add_count(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    if b is None:
        return a
    return a + b


# --- spend --------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpendFigures:
    """Real-time versus batch requests and cost over a window, with where each came from."""

    realtime_cost_usd: Decimal | None = None
    batch_cost_usd: Decimal | None = None
    total_cost_usd: Decimal | None = None
    realtime_requests: int | None = None
    batch_requests: int | None = None
    batch_share_requests: float | None = None
    batch_share_spend: float | None = None
    batch_savings_usd: Decimal | None = None
    # Share of the window's ledger batch requests whose results are unread: their cost is not
    # in the figures yet (or, archived, ever), so batch spend and savings are a lower bound.
    batch_unread_share: float = 0.0
    sources: dict[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()


def _usage_source(session: Session, since: datetime, until: datetime) -> str | None:
    """Pick the usage report to read for a window: analytics when present, else legacy."""
    parts = window_parts(session, since, until)
    for source in ("analytics", "legacy"):
        if _has_usage(session, parts, source):
            return source
    return None


def _has_usage(session: Session, parts: Sequence[Part], source: str) -> bool:
    for part in parts:
        table, tcol = _usage_table(part)
        hit = session.execute(
            select(col(table.id)).where(col(table.source) == source, _in_part(tcol, part)).limit(1)
        ).first()
        if hit is not None:
            return True
    return False


def realtime_filter(source: str, table: Any = UsageBucket) -> ColumnElement[bool]:
    """Return the condition that picks real-time rows of a usage report ``source``."""
    if source == "analytics":
        return col(table.product) == REALTIME_PRODUCT
    return col(table.service_tier).in_(REALTIME_TIERS)


def _batch_filter(source: str, table: Any = UsageBucket) -> ColumnElement[bool]:
    if source == "analytics":
        return col(table.product) == BATCH_PRODUCT
    return col(table.service_tier) == "batch"


def _usage_totals(
    session: Session,
    since: datetime,
    until: datetime,
    source: str,
    which: Callable[[str, Any], ColumnElement[bool]],
    workspace: str | None,
    *,
    with_standard: bool = True,
) -> tuple[Decimal | None, Decimal | None, int | None, int]:
    cost: Decimal | None = None
    standard: Decimal | None = None
    reqs: int | None = None
    rows = 0
    for part in window_parts(session, since, until):
        table, tcol = _usage_table(part)
        # Exact money sums are the costly part on SQLite (a Python aggregate): skip unused ones.
        standard_sum: Any = (
            money_sum(col(table.standard_cost_usd)) if with_standard else literal(None)
        )
        stmt = select(
            money_sum(col(table.cost_usd)),
            standard_sum,
            func.sum(col(table.requests)),
            func.count(col(table.id)),
        ).where(col(table.source) == source, _in_part(tcol, part), which(source, table))
        if workspace is not None:
            stmt = stmt.where(col(table.workspace_id) == workspace)
        p_cost, p_standard, p_reqs, p_rows = session.execute(stmt).one()
        cost, standard = _add_money(cost, p_cost), _add_money(standard, p_standard)
        reqs = _add_count(reqs, int(p_reqs) if p_reqs is not None else None)
        rows += int(p_rows)
    requests = reqs if source == "analytics" else None
    return cost, standard, requests, rows


def spend_figures(
    session: Session,
    since: datetime,
    until: datetime,
    *,
    workspace: str | None = None,
    cross_check: bool = True,
) -> SpendFigures:
    """Compute real-time versus batch spend and request share over ``[since, until)``.

    ``cross_check`` also reads the usage report's batch totals to compare them with the batch
    ledger (a note when they differ); rules, which only need the figures, skip it.
    """
    sources: dict[str, str] = {}
    notes: list[str] = []
    usage_source = _usage_source(session, since, until)

    # Batch side: the ledger is exact per batch; the usage report is the fallback.
    ledger = batch_figures(session, since, until, workspace=workspace)
    has_ledger = session.execute(select(col(Batch.id)).limit(1)).first() is not None
    batch_cost: Decimal | None = None
    batch_requests: int | None = None
    batch_savings: Decimal | None = None
    batch_unread_share = 0.0
    if has_ledger:
        batch_cost, batch_requests = ledger.cost_usd, ledger.requests
        batch_savings = ledger.savings_usd
        sources["batch"] = "batch ledger (Message Batches API results)"
        batch_unread_share = ledger.unread_share
        pending = ledger.results_unread - ledger.batches_without_token_data
        if pending:
            notes.append(
                f"{pending} ended batch(es) have results not read yet "
                f"({fmt.percent(ledger.unread_share)} of the window's batch requests): batch "
                "spend and savings are a lower bound until the collector reads them"
            )
        if ledger.batches_without_token_data:
            notes.append(
                f"{ledger.batches_without_token_data} ended batch(es) were archived before their "
                "results were read: their cost is unknown and not included, so batch spend and "
                "savings are a lower bound"
            )
    if usage_source is not None and (cross_check or not has_ledger):
        u_cost, u_std, u_reqs, u_rows = _usage_totals(
            session,
            since,
            until,
            usage_source,
            _batch_filter,
            workspace,
            with_standard=not has_ledger,
        )
        if not has_ledger and u_rows:
            batch_cost, batch_requests = u_cost or ZERO, u_reqs
            batch_savings = (u_std or ZERO) - (u_cost or ZERO)
            sources["batch"] = f"{usage_source} usage report (billed request counts)"
        elif has_ledger and u_rows and to_cents(u_cost or ZERO) != to_cents(ledger.cost_usd):
            notes.append(
                f"batch cost differs between the batch ledger (${to_cents(ledger.cost_usd)}) and "
                f"the {usage_source} usage report (${to_cents(u_cost or ZERO)}); the ledger is "
                "shown. Batches still unread, archived or ending near the window edge explain "
                "small gaps"
            )

    # Real-time side: the usage report covers everything; call logs only what is instrumented.
    realtime_cost: Decimal | None = None
    realtime_requests: int | None = None
    if usage_source is not None:
        r_cost, _r_std, r_reqs, _r_rows = _usage_totals(
            session,
            since,
            until,
            usage_source,
            realtime_filter,
            workspace,
            with_standard=False,
        )
        realtime_cost = r_cost or ZERO
        realtime_requests = r_reqs
        sources["realtime"] = f"{usage_source} usage report"
        if usage_source == "legacy":
            notes.append("the legacy usage report has no request counts: request share unknown")
    elif workspace is None:
        c_cost, c_calls, c_rows = _call_totals(session, since, until)
        if c_rows:
            realtime_cost, realtime_requests = c_cost or ZERO, c_calls
            sources["realtime"] = "application call logs"

    total = None
    if realtime_cost is not None or batch_cost is not None:
        total = (realtime_cost or ZERO) + (batch_cost or ZERO)
    share_requests = None
    if batch_requests is not None and realtime_requests is not None:
        share_requests = _ratio(batch_requests, batch_requests + realtime_requests)
    share_spend = _ratio(batch_cost, total) if realtime_cost is not None else None
    return SpendFigures(
        realtime_cost_usd=realtime_cost,
        batch_cost_usd=batch_cost,
        total_cost_usd=total,
        realtime_requests=realtime_requests,
        batch_requests=batch_requests,
        batch_share_requests=share_requests,
        batch_share_spend=share_spend,
        batch_savings_usd=batch_savings,
        batch_unread_share=batch_unread_share,
        sources=sources,
        notes=tuple(notes),
    )


def _call_table(part: Part) -> tuple[Any, Any]:
    if part.daily:
        return CallDay, col(CallDay.day)
    return CallBucket, col(CallBucket.hour)


def _call_totals(
    session: Session, since: datetime, until: datetime
) -> tuple[Decimal | None, int, int]:
    """Return the cost, calls and row count of the call logs over the window."""
    cost: Decimal | None = None
    calls = rows = 0
    for part in window_parts(session, since, until):
        table, tcol = _call_table(part)
        p_cost, p_calls, p_rows = session.execute(
            select(money_sum(col(table.cost_usd)), func.sum(col(table.calls)), func.count()).where(
                _in_part(tcol, part)
            )
        ).one()
        cost = _add_money(cost, p_cost)
        calls += int(p_calls or 0)
        rows += int(p_rows)
    return cost, calls, rows


def realtime_cost_by(
    session: Session, since: datetime, until: datetime, by: str, *, workspace: str | None = None
) -> dict[str, Decimal | None]:
    """Return real-time cost per ``model`` or ``workspace`` over the window."""
    source = _usage_source(session, since, until)
    out: dict[str, Decimal | None] = {}
    if source is not None:
        for part in window_parts(session, since, until):
            table, tcol = _usage_table(part)
            key_col = col(table.model) if by == "model" else col(table.workspace_id)
            stmt = (
                select(key_col, money_sum(col(table.cost_usd)))
                .where(
                    col(table.source) == source,
                    _in_part(tcol, part),
                    realtime_filter(source, table),
                )
                .group_by(key_col)
            )
            if workspace is not None:
                stmt = stmt.where(col(table.workspace_id) == workspace)
            for k, v in session.execute(stmt):  # None: no priced usage
                out[k] = _add_money(out[k], v) if k in out else v
        return out
    if by == "model" and workspace is None:
        for part in window_parts(session, since, until):
            table, tcol = _call_table(part)
            stmt2 = (
                select(col(table.model), money_sum(col(table.cost_usd)))
                .where(_in_part(tcol, part))
                .group_by(col(table.model))
            )
            for k, v in session.execute(stmt2):
                out[k] = _add_money(out[k], v) if k in out else v
    return out


# --- cells: tier x model x workspace, with tokens (spend_day, the weekly report) -------------

TOKEN_KINDS = ("input", "output", "cache_read", "cache_write_5m", "cache_write_1h")
# The contract's service tiers: real-time tiers fold into standard or priority.
_TIER_OF = {"priority": "priority", "priority_on_demand": "priority", "batch": "batch"}


def contract_tier(tier: str) -> str:
    """Map an API service tier to ``standard``, ``batch`` or ``priority``."""
    return _TIER_OF.get(tier, "standard")


@dataclass
class Cell:
    """Requests, tokens by kind and money of one (tier, model, workspace) over a window."""

    requests: int | None = 0
    batches: int = 0  # batch cells: batches with requests in this cell
    tokens: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TOKEN_KINDS, 0))
    web_searches: int = 0
    unpriced_tokens: int = 0
    cost_usd: Decimal | None = None
    standard_cost_usd: Decimal | None = None

    def add(
        self,
        requests: int | None,
        tokens: Sequence[int],
        web_searches: int,
        unpriced: int,
        cost: Decimal | None,
        standard: Decimal | None,
    ) -> None:
        """Add one row's figures (``tokens`` in ``TOKEN_KINDS`` order)."""
        self.requests = (
            None if requests is None or self.requests is None else self.requests + requests
        )
        for kind, n in zip(TOKEN_KINDS, tokens, strict=True):
            self.tokens[kind] += int(n or 0)
        self.web_searches += int(web_searches or 0)
        self.unpriced_tokens += int(unpriced or 0)
        self.cost_usd = _add_money(self.cost_usd, cost)
        self.standard_cost_usd = _add_money(self.standard_cost_usd, standard)


CellKey = tuple[str, str, str]  # (contract tier, model, workspace)


def _usage_token_cols(table: Any) -> list[Any]:
    return [
        col(table.input_tokens),
        col(table.output_tokens),
        col(table.cache_read_tokens),
        col(table.cache_write_5m_tokens),
        col(table.cache_write_1h_tokens),
    ]


def spend_cells(
    session: Session,
    since: datetime,
    until: datetime,
    *,
    workspace: str | None = None,
    use_rollups: bool = True,
) -> dict[CellKey, Cell]:
    """Break the window's spend down by (tier, model, workspace), with tokens by kind.

    The same sources as ``spend_figures``: real-time from the usage report (or call logs when
    no report was collected), batch from the batch ledger (or the report's batch rows when no
    batch was ever recorded). Summing the cells gives the window's real-time and batch spend.
    ``use_rollups=False`` reads raw rows only (what ``rollups.refresh_day`` rolls up from).
    """
    parts = (
        window_parts(session, since, until) if use_rollups else [Part(since, until, daily=False)]
    )
    cells: dict[CellKey, Cell] = defaultdict(Cell)
    source = _usage_source(session, since, until)
    has_ledger = session.execute(select(col(Batch.id)).limit(1)).first() is not None
    filters: list[Callable[[str, Any], ColumnElement[bool]]] = []
    if source is not None:
        filters.append(realtime_filter)
        if not has_ledger:
            filters.append(_batch_filter)
    for which in filters:
        assert source is not None
        for part in parts:
            table, tcol = _usage_table(part)
            unpriced = func.sum(
                case(
                    (
                        col(table.cost_usd).is_(None),
                        col(table.input_tokens)
                        + col(table.output_tokens)
                        + col(table.cache_read_tokens)
                        + col(table.cache_write_5m_tokens)
                        + col(table.cache_write_1h_tokens),
                    ),
                    else_=0,
                )
            )
            keys = (col(table.service_tier), col(table.model), col(table.workspace_id))
            stmt = (
                select(
                    *keys,
                    func.sum(col(table.requests)),
                    *(func.sum(c) for c in _usage_token_cols(table)),
                    func.sum(col(table.web_searches)),
                    unpriced,
                    money_sum(col(table.cost_usd)),
                    money_sum(col(table.standard_cost_usd)),
                )
                .where(col(table.source) == source, _in_part(tcol, part), which(source, table))
                .group_by(*keys)
            )
            if workspace is not None:
                stmt = stmt.where(col(table.workspace_id) == workspace)
            for tier, model, ws, reqs, i, o, cr, c5, c1, web, unp, cost, std in session.execute(
                stmt
            ):
                requests = int(reqs) if reqs is not None and source == "analytics" else None
                cells[(contract_tier(tier), model, ws)].add(
                    requests, (i, o, cr, c5, c1), web, unp, cost, std
                )
    if source is None and workspace is None:
        for part in parts:
            table, tcol = _call_table(part)
            keys2 = (col(table.service_tier), col(table.model))
            stmt2 = (
                select(
                    *keys2,
                    func.sum(col(table.calls)),
                    func.sum(col(table.input_tokens)),
                    func.sum(col(table.output_tokens)),
                    func.sum(col(table.cache_read_tokens)),
                    func.sum(col(table.cache_write_tokens)),
                    money_sum(col(table.cost_usd)),
                )
                .where(_in_part(tcol, part))
                .group_by(*keys2)
            )
            for tier, model, calls, i, o, cr, cw, cost in session.execute(stmt2):
                # Call logs do not split cache writes by duration: count them as 5-minute.
                unp = 0 if cost is not None else int(i or 0) + int(o or 0) + int(cr or 0)
                cells[(contract_tier(tier), model, "")].add(
                    int(calls or 0), (i, o, cr, cw, 0), 0, unp, cost, cost
                )
    if has_ledger:
        for part in parts:
            if part.daily:
                _batch_cells_from_days(session, part, workspace, cells)
            else:
                _batch_cells_from_ledger(session, part, workspace, cells)
    return dict(cells)


def _batch_cells_from_ledger(
    session: Session, part: Part, workspace: str | None, cells: dict[CellKey, Cell]
) -> None:
    """Add the batch cells of ``part`` from the batch ledger (per model, per batch)."""
    keys = (col(BatchUsage.model), col(Batch.workspace_id))
    unpriced = func.sum(
        case(
            (
                col(BatchUsage.cost_usd).is_(None),
                col(BatchUsage.input_tokens)
                + col(BatchUsage.output_tokens)
                + col(BatchUsage.cache_read_tokens)
                + col(BatchUsage.cache_write_5m_tokens)
                + col(BatchUsage.cache_write_1h_tokens),
            ),
            else_=0,
        )
    )
    stmt = (
        select(
            *keys,
            func.count(col(BatchUsage.batch_id)),
            func.sum(col(BatchUsage.requests)),
            func.sum(col(BatchUsage.input_tokens)),
            func.sum(col(BatchUsage.output_tokens)),
            func.sum(col(BatchUsage.cache_read_tokens)),
            func.sum(col(BatchUsage.cache_write_5m_tokens)),
            func.sum(col(BatchUsage.cache_write_1h_tokens)),
            func.sum(col(BatchUsage.web_searches)),
            unpriced,
            money_sum(col(BatchUsage.cost_usd)),
            money_sum(col(BatchUsage.standard_cost_usd)),
        )
        .join(Batch, col(Batch.id) == col(BatchUsage.batch_id))
        .where(_ended_in(part.since, part.until))
        .group_by(*keys)
    )
    if workspace is not None:
        stmt = stmt.where(col(Batch.workspace_id) == workspace)
    for model, ws, n, reqs, i, o, cr, c5, c1, web, unp, cost, std in session.execute(stmt):
        cell = cells[("batch", model, ws)]
        cell.add(int(reqs or 0), (i, o, cr, c5, c1), web, unp, cost, std)
        cell.batches += int(n)


def _batch_cells_from_days(
    session: Session, part: Part, workspace: str | None, cells: dict[CellKey, Cell]
) -> None:
    """Add the batch cells of a clean stretch of whole days from ``spend_day``."""
    keys = (col(SpendDay.model), col(SpendDay.workspace_id))
    stmt = (
        select(
            *keys,
            func.sum(col(SpendDay.batches)),
            func.sum(col(SpendDay.requests)),
            func.sum(col(SpendDay.input_tokens)),
            func.sum(col(SpendDay.output_tokens)),
            func.sum(col(SpendDay.cache_read_tokens)),
            func.sum(col(SpendDay.cache_write_5m_tokens)),
            func.sum(col(SpendDay.cache_write_1h_tokens)),
            func.sum(col(SpendDay.unpriced_tokens)),
            money_sum(col(SpendDay.cost_usd)),
            money_sum(col(SpendDay.standard_cost_usd)),
        )
        .where(
            col(SpendDay.service_tier) == "batch",
            col(SpendDay.day) >= part.since,
            col(SpendDay.day) < part.until,
        )
        .group_by(*keys)
    )
    if workspace is not None:
        stmt = stmt.where(col(SpendDay.workspace_id) == workspace)
    for model, ws, n, reqs, i, o, cr, c5, c1, unp, cost, std in session.execute(stmt):
        cell = cells[("batch", model, ws)]
        # (web searches are not kept per day: they are priced into the cost already)
        cell.add(int(reqs or 0), (i, o, cr, c5, c1), 0, unp, cost, std)
        cell.batches += int(n or 0)


# --- reconciliation -----------------------------------------------------------------------


@dataclass(frozen=True)
class DriftRow:
    """Computed versus billed cost for one UTC day, model and service tier."""

    day: datetime
    model: str
    service_tier: str
    computed_usd: Decimal
    billed_usd: Decimal
    drift_ratio: float | None  # computed / billed - 1


def _first_whole_day(since: datetime) -> datetime:
    day = fmt.day_floor(since)
    return day if since == day else day + timedelta(days=1)


def _cost_source(session: Session, first: datetime, until: datetime) -> str | None:
    """Pick the cost report to read for whole days: analytics when present, else legacy."""
    for candidate in ("analytics", "legacy"):
        if session.execute(
            select(col(CostBucket.id))
            .where(
                col(CostBucket.source) == candidate,
                col(CostBucket.day) >= first,
                col(CostBucket.day) < until,
            )
            .limit(1)
        ).first():
            return candidate
    return None


def daily_drift(
    session: Session, since: datetime, until: datetime, *, workspace: str | None = None
) -> list[DriftRow]:
    """Compare the cost computed from usage with the provider's bill, per day, model and tier.

    Only whole UTC days in ``[since, until)`` are compared (the cost report has no finer
    buckets), and only tiers the cost report covers (standard and batch: it never includes
    Priority Tier). ``workspace`` limits both sides to one workspace.
    """
    # Whole days only, at both ends: a window ending mid-day would compare that day's partial
    # usage with its whole bill.
    first, until = _first_whole_day(since), fmt.day_floor(until)
    computed: dict[tuple[datetime, str, str], Decimal] = defaultdict(lambda: ZERO)
    source = _usage_source(session, first, until) if first < until else None
    if source is not None:
        for part in window_parts(session, first, until):
            table, tcol = _usage_table(part)
            stmt = (
                select(
                    tcol, col(table.model), col(table.service_tier), money_sum(col(table.cost_usd))
                )
                .where(
                    col(table.source) == source,
                    _in_part(tcol, part),
                    col(table.service_tier).in_(("standard", "batch")),
                )
                .group_by(tcol, col(table.model), col(table.service_tier))
            )
            if workspace is not None:
                stmt = stmt.where(col(table.workspace_id) == workspace)
            for start, model, tier, cost in session.execute(stmt):
                computed[(fmt.day_floor(start), model, tier)] += cost or ZERO
    billed: dict[tuple[datetime, str, str], Decimal] = defaultdict(lambda: ZERO)
    cost_source = _cost_source(session, first, until) if first < until else None
    if cost_source is None:
        return []
    stmt2 = (
        select(
            col(CostBucket.day),
            col(CostBucket.model),
            col(CostBucket.service_tier),
            money_sum(col(CostBucket.amount_usd)),
        )
        .where(
            col(CostBucket.source) == cost_source,
            col(CostBucket.day) >= first,
            col(CostBucket.day) < until,
            col(CostBucket.cost_type).in_(PRICED_COST_TYPES),
        )
        .group_by(col(CostBucket.day), col(CostBucket.model), col(CostBucket.service_tier))
    )
    if workspace is not None:
        stmt2 = stmt2.where(col(CostBucket.workspace_id) == workspace)
    for day, model, tier, amount in session.execute(stmt2):
        billed[(fmt.day_floor(day), model, tier)] += amount or ZERO
    rows = []
    for key in sorted(set(computed) | set(billed)):
        c, b = computed.get(key, ZERO), billed.get(key, ZERO)
        rows.append(DriftRow(key[0], key[1], key[2], c, b, _ratio(c - b, b)))
    return rows


@dataclass(frozen=True)
class ReportSources:
    """Which usage and cost report a window's figures read (None when none was collected)."""

    usage: str | None
    cost: str | None
    notes: tuple[str, ...] = ()


def report_sources(session: Session, since: datetime, until: datetime) -> ReportSources:
    """Say which report each window figure reads, and warn when a window mixes the two APIs."""
    usage = _usage_source(session, since, until)
    notes: list[str] = []
    if usage == "analytics" and _has_usage(session, window_parts(session, since, until), "legacy"):
        notes.append(
            "part of this window has only legacy usage rows (before 2026-01-01, or while "
            "the analytics API was refused); the usage figures sum the analytics rows only"
        )
    first, last = _first_whole_day(since), fmt.day_floor(until)
    cost = _cost_source(session, first, last) if first < last else None
    return ReportSources(usage, cost, tuple(notes))


def data_since(session: Session) -> datetime | None:
    """Return since when spend has been recorded continuously, if at all.

    Real-time spend is known only from the first usage bucket (or, without usage reports,
    the first call-log hour); a comparison with an earlier window is meaningless before that:
    the monitor was not collecting then, which is not the same as nothing being spent. The
    batch ledger alone counts only when it is the only source (its listing reaches back over
    the whole history the API keeps, so it says nothing about real-time coverage).
    """
    for raw_col, day_col in (
        (col(UsageBucket.bucket_start), col(UsageDay.day)),
        (col(CallBucket.hour), col(CallDay.day)),
        (col(Batch.ended_at), None),
    ):
        raw = session.execute(select(func.min(raw_col))).scalar_one_or_none()
        day = session.execute(select(func.min(day_col))).scalar_one_or_none() if day_col else None
        # Rollups outlive pruned hourly rows; the hourly rows say the hour within their day.
        if day is not None and (raw is None or fmt.day_floor(raw) > day):
            return day  # type: ignore[no-any-return]
        if raw is not None:
            return raw  # type: ignore[no-any-return]
    return None


# --- health -------------------------------------------------------------------------------


# Distinct sources through the (source, started_at) index: one index probe per source instead
# of reading every run of the year (a "loose index scan"; neither database does it by itself).
_SOURCES = text(
    "WITH RECURSIVE s(src) AS ("
    " SELECT min(source) FROM collect_run"
    " UNION ALL SELECT (SELECT min(source) FROM collect_run WHERE source > s.src)"
    " FROM s WHERE s.src IS NOT NULL"
    ") SELECT src FROM s WHERE src IS NOT NULL"
)


def last_success(session: Session) -> dict[str, datetime | None]:
    """Return, per source, when its last successful collection finished (None: never)."""
    out: dict[str, datetime | None] = {}
    for source in session.execute(_SOURCES).scalars():
        out[source] = session.execute(
            select(col(CollectRun.finished_at))
            .where(col(CollectRun.source) == source, col(CollectRun.status) == "ok")
            .order_by(col(CollectRun.started_at).desc())
            .limit(1)
        ).scalar_one_or_none()
    return out


# --- the window contract: what `summary` and `batches` print, and what every surface reads ---


@dataclass(frozen=True)
class MoneyRow:
    """Real-time and batch money of one model or workspace in a window (None: unknown)."""

    name: str
    realtime_cost_usd: Decimal | None
    batch_cost_usd: Decimal | None
    total_cost_usd: Decimal | None
    savings_usd: Decimal | None

    def to_json(self, key: str) -> dict[str, Any]:
        """Return the row as the ``summary --json`` object, its name under ``key``."""
        return {
            key: self.name,
            "realtime_cost_usd": money_json(self.realtime_cost_usd),
            "batch_cost_usd": money_json(self.batch_cost_usd),
            "total_cost_usd": money_json(
                printed_total(self.realtime_cost_usd, self.batch_cost_usd)
            ),
            "savings_usd": money_json(self.savings_usd),
        }


def printed_total(realtime: Decimal | None, batch: Decimal | None) -> Decimal | None:
    """Return the total as printed: the sum of the parts as printed (each to the cent).

    Rounding the exact total could differ from the printed parts by a cent; a reader adds
    the printed figures, so the total is made of them.
    """
    if realtime is None and batch is None:
        return None
    return to_cents(realtime or ZERO) + to_cents(batch or ZERO)


def _money_row(name: str, realtime: Decimal | None, batch: BatchFigures | None) -> MoneyRow:
    # A model without a price shows null money (unpriced), never $0.
    if batch is not None and batch.requests and batch.unpriced_requests == batch.requests:
        batch = None
    total = None
    if realtime is not None or batch is not None:
        total = (realtime or ZERO) + (batch.cost_usd if batch else ZERO)
    return MoneyRow(
        name=name,
        realtime_cost_usd=realtime,
        batch_cost_usd=batch.cost_usd if batch else None,
        total_cost_usd=total,
        savings_usd=batch.savings_usd if batch else None,
    )


@dataclass(frozen=True)
class Summary:
    """Every figure of one window, as ``summary`` prints it and the other surfaces read it."""

    since: datetime
    until: datetime
    workspace: str | None
    spend: SpendFigures
    batches: BatchFigures
    batches_in_progress: int
    billed_cost_usd: Decimal | None
    cost_drift_ratio: float | None
    drift: tuple[DriftRow, ...]
    by_model: tuple[MoneyRow, ...]
    by_workspace: tuple[MoneyRow, ...]
    sources: dict[str, str | None]
    notes: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        """Return the ``summary --json`` object (money as decimal strings to the cent)."""
        spend, figures = self.spend, self.batches
        return {
            "since": fmt.iso(self.since),
            "until": fmt.iso(self.until),
            "workspace": self.workspace,
            "realtime_cost_usd": money_json(spend.realtime_cost_usd),
            "batch_cost_usd": money_json(spend.batch_cost_usd),
            "total_cost_usd": money_json(
                printed_total(spend.realtime_cost_usd, spend.batch_cost_usd)
            ),
            "batch_share_requests": spend.batch_share_requests,
            "batch_share_spend": spend.batch_share_spend,
            "savings_usd": money_json(spend.batch_savings_usd),
            "batches_ended": figures.batches_ended,
            "batches_results_unread": figures.results_unread,
            "batch_failure_rate": figures.failure_rate,
            "batch_expired_rate": figures.expired_rate,
            "batch_turnaround_p50_seconds": figures.turnaround_p50_seconds,
            "batch_turnaround_p95_seconds": figures.turnaround_p95_seconds,
            "batches_in_progress": self.batches_in_progress,
            "billed_cost_usd": money_json(self.billed_cost_usd),
            "cost_drift_ratio": self.cost_drift_ratio,
            "by_model": [r.to_json("model") for r in self.by_model],
            "by_workspace": [r.to_json("workspace") for r in self.by_workspace],
            "sources": dict(self.sources),
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class WindowFigures:
    """The headline figures of a window: what the exporter's window gauges show."""

    spend: SpendFigures
    batches: BatchFigures
    drift: tuple[DriftRow, ...]
    billed_cost_usd: Decimal | None
    cost_drift_ratio: float | None


def window_figures(
    session: Session,
    since: datetime,
    until: datetime,
    *,
    workspace: str | None = None,
    cross_check: bool = False,
) -> WindowFigures:
    """Compute the headline figures of ``[since, until)`` (``summary`` and /metrics share it)."""
    spend = spend_figures(session, since, until, workspace=workspace, cross_check=cross_check)
    figures = batch_figures(session, since, until, workspace=workspace)
    drift = daily_drift(session, since, until, workspace=workspace)
    billed = sum((r.billed_usd for r in drift), ZERO) if drift else None
    computed = sum((r.computed_usd for r in drift), ZERO)
    drift_ratio = float(computed / billed - 1) if billed else None
    return WindowFigures(spend, figures, tuple(drift), billed, drift_ratio)


def build_summary(
    session: Session,
    since: datetime,
    until: datetime,
    now: datetime,
    workspace: str | None = None,
) -> Summary:
    """Compute every figure of the window ``[since, until)`` as of ``now``."""
    w = window_figures(session, since, until, workspace=workspace, cross_check=True)
    spend, figures, drift = w.spend, w.batches, w.drift
    billed, drift_ratio = w.billed_cost_usd, w.cost_drift_ratio
    reports = report_sources(session, since, until)
    running = in_progress(session, min(until, now), workspace=workspace)

    rt_model = realtime_cost_by(session, since, until, "model", workspace=workspace)
    b_model = batch_figures_by(session, since, until, "model", workspace=workspace)
    by_model = tuple(
        _money_row(m, rt_model.get(m), b_model.get(m)) for m in sorted(set(rt_model) | set(b_model))
    )
    rt_ws = realtime_cost_by(session, since, until, "workspace", workspace=workspace)
    b_ws = batch_figures_by(session, since, until, "workspace", workspace=workspace)
    by_workspace = tuple(
        _money_row(w, rt_ws.get(w), b_ws.get(w)) for w in sorted(set(rt_ws) | set(b_ws))
    )

    sources: dict[str, str | None] = dict(spend.sources)
    sources["batches"] = "batch ledger (Message Batches API)"
    sources["usage_report"] = reports.usage
    sources["billed"] = f"{reports.cost} cost report" if reports.cost else None
    notes = [*spend.notes, *reports.notes]
    if billed is None:
        notes.append("no cost report covers a whole UTC day of this window: billed cost unknown")
    else:
        notes.append("billed cost and drift cover the whole UTC days of the window only")
        for r in drift:
            if r.drift_ratio is not None and abs(r.drift_ratio) > 0.01:
                notes.append(
                    f"cost drift {r.day.date().isoformat()} {r.model} {r.service_tier}: "
                    f"computed ${money_json(r.computed_usd)}, billed ${money_json(r.billed_usd)} "
                    f"({r.drift_ratio:+.1%})"
                )
    if figures.unpriced_requests:
        notes.append(
            f"{figures.unpriced_requests} batch request(s) use a model without a price: "
            "their cost is not included"
        )
    return Summary(
        since=since,
        until=until,
        workspace=workspace,
        spend=spend,
        batches=figures,
        batches_in_progress=len(running),
        billed_cost_usd=billed,
        cost_drift_ratio=drift_ratio,
        drift=tuple(drift),
        by_model=by_model,
        by_workspace=by_workspace,
        sources=sources,
        notes=tuple(notes),
    )


@dataclass(frozen=True)
class BatchRow:
    """One stored batch and the models its results named, as ``batches`` lists it."""

    batch: Batch
    models: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        """Return the ``batches --json`` object of this batch."""
        b = self.batch
        ended = b.processing_status == "ended"
        read = b.results_state == "ingested"
        savings = None
        if b.cost_usd is not None and b.standard_cost_usd is not None:
            savings = b.standard_cost_usd - b.cost_usd
        return {
            "id": b.id,
            "workspace": b.workspace_id,
            "workload": b.workload,
            "status": b.processing_status,
            "archived": b.archived_at is not None,
            "requests": b.requests,
            "succeeded": b.succeeded,
            "errored": b.errored,
            "canceled": b.canceled,
            "expired": b.expired,
            "processing": b.processing,
            "created_at": fmt.iso(b.created_at),
            "ended_at": fmt.iso(b.ended_at),
            "turnaround_seconds": b.turnaround_seconds if ended else None,
            "failure_rate": ((b.errored + b.expired) / b.requests)
            if ended and b.requests
            else None,
            # Token counts come from the results: unread (pending, failed, archived unread)
            # means unknown, which is null, never 0.
            "input_tokens": b.input_tokens if read else None,
            "output_tokens": b.output_tokens if read else None,
            "cache_read_tokens": b.cache_read_tokens if read else None,
            "cache_write_5m_tokens": b.cache_write_5m_tokens if read else None,
            "cache_write_1h_tokens": b.cache_write_1h_tokens if read else None,
            "cost_usd": money_json(b.cost_usd),
            "standard_cost_usd": money_json(b.standard_cost_usd),
            "savings_usd": money_json(savings),
            "models": list(self.models),
            "results": b.results_state,
        }


def list_batches(
    session: Session,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    status: str | None = None,
) -> list[BatchRow]:
    """Return the stored batches created in ``[since, until)`` (and of ``status``), newest first."""
    conds: list[ColumnElement[bool]] = []
    if since is not None:
        conds.append(col(Batch.created_at) >= since)
    if until is not None:
        conds.append(col(Batch.created_at) < until)
    if status is not None:
        conds.append(col(Batch.processing_status) == status)
    stmt = select(Batch).where(*conds).order_by(col(Batch.created_at).desc(), col(Batch.id).desc())
    rows = list(session.execute(stmt).scalars())
    # The models of the selected batches only (same filters), in one query.
    models: dict[str, list[str]] = defaultdict(list)
    per_model = (
        select(col(BatchUsage.batch_id), col(BatchUsage.model))
        .join(Batch, col(Batch.id) == col(BatchUsage.batch_id))
        .where(*conds)
    )
    for bid, model in session.execute(per_model):
        models[bid].append(model)
    return [BatchRow(b, tuple(sorted(models.get(b.id, ())))) for b in rows]
