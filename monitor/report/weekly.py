"""The weekly report's figures: one week against the week before, and why it changed.

``build_weekly(session, week, now, settings)`` reads everything from the store through the
same window functions the ``summary`` command uses (``monitor.summary``), so the report's
totals agree with ``summary`` to the cent:

1. the two weeks' summaries (spend, batch share, savings, batch operations, billed cost);
2. daily spend cells of both weeks (``spend_cells`` per local day, split at UTC midnights so
   each piece is priced at its own date), for the chart, the CSV and the drivers
   (``decompose``);
3. per-workload usage (batch ledger and call logs) for the movers and the workload
   regressions, and the advisor over each week for the savings still missed;
4. month to date, the projection at the last seven days' rate and the budget;
5. what is missing from the record (collection started late, a day with no usage rows, a
   source not collected since), named at the top of every form of the report;
6. the regressions, each with its evidence.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import and_, func, select
from sqlmodel import Session, col

from monitor import fmt
from monitor.fmt import money_json
from monitor.models import (
    AlertEvent,
    Batch,
    BatchUsage,
    CallBucket,
    CallDay,
    UsageBucket,
    UsageDay,
)
from monitor.money import ZERO, money_sum
from monitor.pricing import PriceBook
from monitor.report.decompose import (
    CAUSES,
    Decomposition,
    Rates,
    WeekCells,
    decompose,
    week_cells,
)
from monitor.report.weeks import Week, local_midnight
from monitor.summary import (
    TOKEN_KINDS,
    Cell,
    CellKey,
    Summary,
    batch_figures_by,
    build_summary,
    data_since,
    last_success,
    spend_cells,
    spend_figures,
    window_parts,
)

if TYPE_CHECKING:
    from monitor.advisor import Recommendation
    from monitor.config import Settings

log = logging.getLogger(__name__)

# The batch share an organisation should aim for (of requests and of spend).
TARGET_BAND = (0.50, 0.70)
# The rules' defaults, used when the configured rules cannot be read.
DEFAULT_TURNAROUND_P95_SECONDS = 90 * 60.0
DEFAULT_FAILURE_RATE = 0.005
MONTH_DAYS = Decimal(30)  # the advisor's month
_WORST = 3


def signed_percent(value: float) -> str:
    """Format a relative change with its sign (``"+12.5 %"``, ``"-3.0 %"``)."""
    text = fmt.percent(value, digits=1)
    return text if value < 0 else "+" + text


def band() -> str:
    """Return the batch-share target band for people (``"50-70 %"``)."""
    low = fmt.percent(TARGET_BAND[0], digits=0).removesuffix(" %")
    return f"{low}-{fmt.percent(TARGET_BAND[1], digits=0)}"


# --- values ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mover:
    """One model, workspace or workload: this week's cost, last week's, and the change."""

    name: str
    cost_usd: Decimal | None
    previous_cost_usd: Decimal | None

    @property
    def change_usd(self) -> Decimal | None:
        """Return this week's cost minus last week's (None when either is unknown)."""
        if self.cost_usd is None or self.previous_cost_usd is None:
            return None
        return self.cost_usd - self.previous_cost_usd

    def to_json(self) -> dict[str, Any]:
        """Return the JSON object (money as strings to the cent)."""
        change = self.change_usd
        return {
            "name": self.name,
            "cost_usd": money_json(self.cost_usd),
            "previous_cost_usd": money_json(self.previous_cost_usd),
            "change_usd": None if change is None else _change_json(self),
        }


def _change_json(m: Mover) -> str | None:
    # The change of the rounded amounts, so a row reads cost - previous = change to the cent.
    if m.cost_usd is None or m.previous_cost_usd is None:
        return None
    return str(fmt.to_cents(m.cost_usd) - fmt.to_cents(m.previous_cost_usd))


@dataclass(frozen=True)
class Regression:
    """Something that got worse, with its evidence in one sentence."""

    kind: str
    subject: str
    detail: str

    def to_json(self) -> dict[str, str]:
        """Return the JSON object."""
        return {"kind": self.kind, "subject": self.subject, "detail": self.detail}


@dataclass(frozen=True)
class BatchRef:
    """One batch named in the report (slowest or most failed)."""

    id: str
    workspace: str
    workload: str | None
    requests: int
    errored: int
    expired: int
    turnaround_seconds: float | None

    @property
    def failure_rate(self) -> float | None:
        """Return (errored + expired) / requests."""
        return (self.errored + self.expired) / self.requests if self.requests else None

    def to_json(self) -> dict[str, Any]:
        """Return the JSON object."""
        return {
            "id": self.id,
            "workspace": self.workspace,
            "workload": self.workload,
            "requests": self.requests,
            "errored": self.errored,
            "expired": self.expired,
            "turnaround_seconds": self.turnaround_seconds,
            "failure_rate": self.failure_rate,
        }


@dataclass(frozen=True)
class FiredAlert:
    """An alert that fired during the week."""

    rule: str
    severity: str
    scope: dict[str, str]
    at: datetime
    reason: str | None

    def to_json(self) -> dict[str, Any]:
        """Return the JSON object."""
        return {
            "rule": self.rule,
            "severity": self.severity,
            "scope": self.scope,
            "at": fmt.iso(self.at),
            "reason": self.reason,
        }


@dataclass(frozen=True)
class DayPoint:
    """One local day of either week: spend by tier and the batch share."""

    day: date
    realtime_usd: Decimal
    batch_usd: Decimal
    share_requests: float | None
    share_spend: float | None


@dataclass(frozen=True)
class CsvRow:
    """Spend of one (week, model, workspace, tier), for spreadsheets."""

    week_start: date
    model: str
    workspace: str
    tier: str
    cell: Cell


@dataclass(frozen=True)
class Billing:
    """Computed versus billed cost over the whole UTC days of the week the bill covers."""

    days: tuple[date, ...]
    computed_usd: Decimal | None
    billed_usd: Decimal | None

    @property
    def drift_ratio(self) -> float | None:
        """Return computed / billed - 1 (None without a bill)."""
        if not self.billed_usd or self.computed_usd is None:
            return None
        return float(self.computed_usd / self.billed_usd - 1)


@dataclass(frozen=True)
class Budget:
    """Month to date, the projection at the week's daily rate, and the budget."""

    month_start: date
    month_to_date_usd: Decimal
    daily_rate_usd: Decimal
    projected_month_usd: Decimal
    monthly_budget_usd: Decimal | None
    runs_out_on: date | None


@dataclass(frozen=True)
class WeeklyReport:
    """Every figure of one weekly report (the renderers only format these)."""

    week: Week
    generated_at: datetime
    current: Summary
    previous: Summary
    change_usd: Decimal
    decomposition: Decomposition
    drivers: dict[str, Decimal]  # cause -> amount to the cent, summing to change_usd
    missed_savings_monthly_usd: Decimal | None
    missed_savings_weekly_usd: Decimal | None
    candidates: tuple[Recommendation, ...]
    by_model: tuple[Mover, ...]
    by_workspace: tuple[Mover, ...]
    by_workload: tuple[Mover, ...]
    slowest: tuple[BatchRef, ...]
    most_failed: tuple[BatchRef, ...]
    alerts: tuple[FiredAlert, ...]
    budget: Budget
    billing: Billing
    days: tuple[DayPoint, ...]  # 14 local days, the previous week's first
    csv_rows: tuple[CsvRow, ...]
    regressions: tuple[Regression, ...]
    missing: tuple[str, ...]
    notes: tuple[str, ...]
    thresholds: dict[str, float] = field(default_factory=dict)

    @property
    def total_usd(self) -> Decimal:
        """Return this week's total spend (0 when nothing was recorded)."""
        return self.current.spend.total_cost_usd or ZERO

    @property
    def previous_total_usd(self) -> Decimal:
        """Return last week's total spend (0 when nothing was recorded)."""
        return self.previous.spend.total_cost_usd or ZERO

    @property
    def change_ratio(self) -> float | None:
        """Return the change relative to last week (None when last week was 0)."""
        prev = fmt.to_cents(self.previous_total_usd)
        return float(self.change_usd / prev) if prev else None

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form (money as decimal strings to the cent)."""
        cur, prev, b = self.current, self.previous, self.budget
        figures = cur.batches
        return {
            "week_start": self.week.start_date.isoformat(),
            "week_end": self.week.end_date.isoformat(),
            "timezone": self.week.tz,
            "since": fmt.iso(self.week.start),
            "until": fmt.iso(self.week.end),
            "generated_at": fmt.iso(self.generated_at),
            "complete": not self.missing,
            "missing": list(self.missing),
            "total_cost_usd": money_json(self.total_usd),
            "previous_total_cost_usd": money_json(self.previous_total_usd),
            "change_usd": money_json(self.change_usd),
            "change_ratio": self.change_ratio,
            "realtime_cost_usd": money_json(cur.spend.realtime_cost_usd),
            "batch_cost_usd": money_json(cur.spend.batch_cost_usd),
            "previous_realtime_cost_usd": money_json(prev.spend.realtime_cost_usd),
            "previous_batch_cost_usd": money_json(prev.spend.batch_cost_usd),
            "billed_cost_usd": money_json(self.billing.billed_usd),
            "billing": {
                "days": [d.isoformat() for d in self.billing.days],
                "computed_cost_usd": money_json(self.billing.computed_usd),
                "billed_cost_usd": money_json(self.billing.billed_usd),
                "drift_ratio": self.billing.drift_ratio,
            },
            "batch_share_requests": cur.spend.batch_share_requests,
            "batch_share_spend": cur.spend.batch_share_spend,
            "previous_batch_share_requests": prev.spend.batch_share_requests,
            "previous_batch_share_spend": prev.spend.batch_share_spend,
            "batch_share_target": list(TARGET_BAND),
            "savings_usd": money_json(cur.spend.batch_savings_usd),
            "missed_savings_usd": money_json(self.missed_savings_weekly_usd),
            "missed_savings_monthly_usd": money_json(self.missed_savings_monthly_usd),
            "drivers": [{"cause": c, "change_usd": money_json(self.drivers[c])} for c in CAUSES],
            "other_detail": [
                {"part": k, "change_usd": money_json(v)}
                for k, v in sorted(self.decomposition.other_detail.items())
            ],
            "regressions": [r.to_json() for r in self.regressions],
            "by_model": [m.to_json() for m in self.by_model],
            "by_workspace": [m.to_json() for m in self.by_workspace],
            "by_workload": [m.to_json() for m in self.by_workload],
            "batches": {
                "ended": figures.batches_ended,
                "requests": figures.requests,
                "turnaround_p50_seconds": figures.turnaround_p50_seconds,
                "turnaround_p95_seconds": figures.turnaround_p95_seconds,
                "failure_rate": figures.failure_rate,
                "expired_rate": figures.expired_rate,
                "worst": {
                    "slowest": [r.to_json() for r in self.slowest],
                    "most_failed": [r.to_json() for r in self.most_failed],
                },
            },
            "batch_candidates": [
                {
                    "workload": r.workload,
                    "recommendation": r.recommendation,
                    "monthly_savings_usd": money_json(r.monthly_savings_usd),
                }
                for r in self.candidates
            ],
            "alerts": [a.to_json() for a in self.alerts],
            "month_to_date_usd": money_json(b.month_to_date_usd),
            "projected_month_usd": money_json(b.projected_month_usd),
            "monthly_budget_usd": money_json(b.monthly_budget_usd),
            "budget_runs_out_on": b.runs_out_on.isoformat() if b.runs_out_on else None,
            "notes": list(self.notes),
        }

    def summary_json(self) -> str:
        """Return the headline figures as JSON (kept on the ``report_run`` row)."""
        data = self.to_json()
        keys = (
            "week_start", "timezone", "complete", "total_cost_usd", "previous_total_cost_usd",
            "change_usd", "drivers", "regressions",
        )  # fmt: skip
        return orjson.dumps({k: data[k] for k in keys}).decode()


# --- reading the store ----------------------------------------------------------------------


@dataclass
class WorkloadUsage:
    """One workload's usage of one model in a week (batch ledger plus call logs)."""

    batch_requests: int = 0  # succeeded requests the batch ledger priced
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    batch_cost_usd: Decimal = ZERO
    realtime_cost_usd: Decimal = ZERO
    standard_cost_usd: Decimal = ZERO  # everything at the real-time rate

    @property
    def tokens(self) -> int:
        """Return every token."""
        return self.prompt_tokens + self.output_tokens

    @property
    def prompt_tokens(self) -> int:
        """Return input + cache read + cache write tokens."""
        return self.input_tokens + self.cache_read_tokens + self.cache_write_tokens


def workload_usage(
    session: Session, since: datetime, until: datetime
) -> dict[tuple[str, str], WorkloadUsage]:
    """Return usage per (workload, model): batches by the workload their requests carry,
    real-time calls from the call logs (hourly rows or daily rollups)."""
    out: dict[tuple[str, str], WorkloadUsage] = defaultdict(WorkloadUsage)
    b, u = Batch, BatchUsage
    stmt = (
        select(
            col(b.workload),
            col(u.model),
            func.sum(col(u.requests)),
            func.sum(col(u.input_tokens)),
            func.sum(col(u.output_tokens)),
            func.sum(col(u.cache_read_tokens)),
            func.sum(col(u.cache_write_5m_tokens) + col(u.cache_write_1h_tokens)),
            money_sum(col(u.cost_usd)),
            money_sum(col(u.standard_cost_usd)),
        )
        .join(b, col(b.id) == col(u.batch_id))
        .where(col(b.ended_at).is_not(None), col(b.ended_at) >= since, col(b.ended_at) < until)
        .group_by(col(b.workload), col(u.model))
    )
    for workload, model, reqs, i, o, cr, cw, cost, std in session.execute(stmt):
        w = out[(workload or "", model)]
        w.batch_requests += int(reqs or 0)
        w.input_tokens += int(i or 0)
        w.output_tokens += int(o or 0)
        w.cache_read_tokens += int(cr or 0)
        w.cache_write_tokens += int(cw or 0)
        w.batch_cost_usd += cost or ZERO
        w.standard_cost_usd += std or ZERO
    for part in window_parts(session, since, until):
        table: Any = CallDay if part.daily else CallBucket
        tcol = col(table.day) if part.daily else col(table.hour)
        stmt2 = (
            select(
                col(table.workload),
                col(table.model),
                func.sum(col(table.calls)),
                func.sum(col(table.input_tokens)),
                func.sum(col(table.output_tokens)),
                func.sum(col(table.cache_read_tokens)),
                func.sum(col(table.cache_write_tokens)),
                money_sum(col(table.cost_usd)),
            )
            .where(tcol >= part.since, tcol < part.until)
            .group_by(col(table.workload), col(table.model))
        )
        for workload, model, calls, i, o, cr, cw, cost in session.execute(stmt2):
            w = out[(workload, model)]
            w.calls += int(calls or 0)
            w.input_tokens += int(i or 0)
            w.output_tokens += int(o or 0)
            w.cache_read_tokens += int(cr or 0)
            w.cache_write_tokens += int(cw or 0)
            w.realtime_cost_usd += cost or ZERO
            w.standard_cost_usd += cost or ZERO
    return dict(out)


def _worst_batches(
    session: Session, since: datetime, until: datetime
) -> tuple[tuple[BatchRef, ...], tuple[BatchRef, ...]]:
    """Return the slowest batches and the batches with the highest failure rate."""
    b = Batch
    cols = (
        col(b.id), col(b.workspace_id), col(b.workload), col(b.requests), col(b.errored),
        col(b.expired), col(b.turnaround_seconds),
    )  # fmt: skip
    ended = and_(col(b.ended_at).is_not(None), col(b.ended_at) >= since, col(b.ended_at) < until)

    def refs(rows: Any) -> tuple[BatchRef, ...]:
        return tuple(BatchRef(*r) for r in rows)

    slowest = refs(
        session.execute(
            select(*cols)
            .where(ended, col(b.turnaround_seconds).is_not(None))
            .order_by(col(b.turnaround_seconds).desc(), col(b.id))
            .limit(_WORST)
        )
    )
    failed = (col(b.errored) + col(b.expired)) * 1.0 / col(b.requests)
    most_failed = refs(
        session.execute(
            select(*cols)
            .where(ended, col(b.requests) > 0, col(b.errored) + col(b.expired) > 0)
            .order_by(failed.desc(), col(b.requests).desc(), col(b.id))
            .limit(_WORST)
        )
    )
    return slowest, most_failed


def _fired_alerts(session: Session, since: datetime, until: datetime) -> tuple[FiredAlert, ...]:
    e = AlertEvent
    rows = session.execute(
        select(col(e.rule), col(e.severity), col(e.labels), col(e.created_at), col(e.reason))
        .where(col(e.transition) == "firing", col(e.created_at) >= since, col(e.created_at) < until)
        .order_by(col(e.created_at), col(e.id))
    )
    out = []
    for rule, severity, labels, at, reason in rows:
        try:
            parsed = orjson.loads(labels)
        except orjson.JSONDecodeError:
            parsed = {}
        scope = {str(k): str(v) for k, v in sorted(parsed.items()) if k not in ("rule", "severity")}
        out.append(FiredAlert(rule, severity, scope, at, reason))
    return tuple(out)


def _pieces(week: Week) -> list[tuple[date, datetime, datetime]]:
    """Split the week's local days at UTC midnights: ``(local day, UTC start, UTC end)``.

    Each piece lies in one UTC date, so the prices of that date apply to all of it.
    """
    out = []
    for day, lo, hi in week.days():
        cut = fmt.day_floor(lo) + timedelta(days=1)
        if lo < cut < hi:
            out += [(day, lo, cut), (day, cut, hi)]
        else:
            out.append((day, lo, hi))
    return out


def _has_rows(session: Session, raw: Any, raw_col: Any, daily: Any, day_col: Any,
              lo: datetime, hi: datetime) -> bool:  # fmt: skip
    """Say whether any raw row (or daily rollup row) holds data of ``[lo, hi)``."""
    hit = session.execute(select(col(raw.id)).where(raw_col >= lo, raw_col < hi).limit(1)).first()
    if hit is not None:
        return True
    first = fmt.day_floor(lo)
    return (
        session.execute(
            select(col(daily.id)).where(day_col >= first, day_col < hi).limit(1)
        ).first()
        is not None
    )


def _missing(session: Session, weeks: Sequence[Week], now: datetime) -> list[str]:
    """Name what the record lacks for the two weeks, so a gap never reads as a drop."""
    prev, week = weeks
    out: list[str] = []
    if week.end > now:
        out.append(
            f"the week is not over yet: figures up to {fmt.iso(now)} (the week ends "
            f"{fmt.iso(week.end)})"
        )
    since = data_since(session)
    if since is None or since >= week.end:
        out.append("nothing was recorded for this week: no usage, call log or batch data")
        return out
    if since > prev.start:
        which = "this week" if since > week.start else "last week"
        out.append(
            f"collection started {fmt.iso(since)}: {which} is only partly recorded (nothing "
            "before that time), so the change against last week is not a real change"
        )
    sources = (
        ("usage report", UsageBucket, col(UsageBucket.bucket_start), UsageDay, col(UsageDay.day)),
        ("call logs", CallBucket, col(CallBucket.hour), CallDay, col(CallDay.day)),
    )
    start = max(prev.start, since)
    for label, raw, raw_col, daily, day_col in sources:
        if not _has_rows(session, raw, raw_col, daily, day_col, start, min(week.end, now)):
            continue  # this source is not collected at all: nothing to miss
        holes = [
            d
            for w in weeks
            for d, lo, hi in w.days()
            if lo >= start and hi <= now
            and not _has_rows(session, raw, raw_col, daily, day_col, lo, hi)
        ]  # fmt: skip
        if holes:
            days = ", ".join(d.isoformat() for d in holes)
            out.append(
                f"no {label} data for {days}: the source was down or not collected, so "
                "real-time spend those days is missing, not zero"
            )
    for source, finished in sorted(last_success(session).items()):
        if finished is not None and finished < min(week.end, now):
            out.append(
                f"source {source} was last collected {fmt.iso(finished)}: later data of the "
                "week is missing"
            )
    return out


def _thresholds(settings: Settings) -> dict[str, float]:
    """Return the turnaround and failure thresholds of the configured rules (or defaults)."""
    from monitor.config import ConfigError
    from monitor.rules import load_rules

    p95, failure = DEFAULT_TURNAROUND_P95_SECONDS, DEFAULT_FAILURE_RATE
    try:
        rules = [r for r in load_rules(settings) if r.enabled and not r.filters]
    except ConfigError as exc:
        log.warning("report: the rules cannot be read, using default thresholds: %s", exc)
        rules = []
    turnaround = [float(r.threshold) for r in rules if r.kind == "batch_turnaround_p95"]
    failures = [float(r.threshold) for r in rules if r.kind == "batch_failure_rate"]
    return {
        "turnaround_p95_seconds": min(turnaround) if turnaround else p95,
        "failure_rate": min(failures) if failures else failure,
    }


# --- building -------------------------------------------------------------------------------


def build_weekly(session: Session, week: Week, now: datetime, settings: Settings) -> WeeklyReport:
    """Compute every figure of the weekly report of ``week`` as of ``now``."""
    from monitor.advisor import advise

    prev = week.previous
    book = PriceBook.load(settings.prices)
    rates = Rates(book)
    cur_summary = build_summary(session, week.start, week.end, now)
    prev_summary = build_summary(session, prev.start, prev.end, now)
    total = cur_summary.spend.total_cost_usd or ZERO
    prev_total = prev_summary.spend.total_cost_usd or ZERO
    change = fmt.to_cents(total) - fmt.to_cents(prev_total)

    # Daily cells of both weeks: the chart, the CSV and the drivers read the same numbers.
    cells_by_week: list[list[tuple[datetime, dict[CellKey, Cell]]]] = []
    days: list[DayPoint] = []
    csv_rows: list[CsvRow] = []
    for w in (prev, week):
        pieces = [(day, lo, spend_cells(session, lo, hi)) for day, lo, hi in _pieces(w)]
        cells_by_week.append([(lo, cells) for _, lo, cells in pieces])
        days += _day_points(w, pieces)
        csv_rows += _csv_rows(w, [cells for _, _, cells in pieces])
    weeks_cells: list[WeekCells] = [week_cells(c, rates) for c in cells_by_week]
    decomposition = decompose(weeks_cells[0], weeks_cells[1], rates, change_usd=change)

    usage = [workload_usage(session, w.start, w.end) for w in (prev, week)]
    batch_by_workload = [
        batch_figures_by(session, w.start, w.end, "workload") for w in (prev, week)
    ]
    recs = [
        advise(session, w.end - timedelta(microseconds=1), settings, window=w.end - w.start)
        for w in (prev, week)
    ]
    candidates = tuple(r for r in recs[1] if r.recommendation in ("BATCH", "HYBRID"))
    monthly_missed: Decimal | None = None
    weekly_missed: Decimal | None = None
    if recs[1]:
        monthly_missed = sum((r.monthly_savings_usd or ZERO for r in candidates), ZERO)
        weekly_missed = monthly_missed * 7 / MONTH_DAYS

    slowest, most_failed = _worst_batches(session, week.start, week.end)
    budget = _budget(session, week, cur_summary, settings, days)
    drift_days = tuple(sorted({r.day.date() for r in cur_summary.drift}))
    computed_billed = (
        sum((r.computed_usd for r in cur_summary.drift), ZERO) if cur_summary.drift else None
    )
    billing = Billing(drift_days, computed_billed, cur_summary.billed_cost_usd)
    missing = _missing(session, [prev, week], now)
    thresholds = _thresholds(settings)
    from monitor.report.regressions import find_regressions

    regressions = find_regressions(
        settings=settings,
        summaries=(prev_summary, cur_summary),
        change=change,
        cells=weeks_cells,
        usage=usage,
        batch_by_workload=batch_by_workload,
        recs=recs,
        budget=budget,
        thresholds=thresholds,
        incomplete=bool(missing),
    )
    notes = list(dict.fromkeys(cur_summary.notes))
    return WeeklyReport(
        week=week,
        generated_at=now,
        current=cur_summary,
        previous=prev_summary,
        change_usd=change,
        decomposition=decomposition,
        drivers=decomposition.cents,
        missed_savings_monthly_usd=monthly_missed,
        missed_savings_weekly_usd=weekly_missed,
        candidates=candidates,
        by_model=_movers(
            {r.name: r.total_cost_usd for r in prev_summary.by_model},
            {r.name: r.total_cost_usd for r in cur_summary.by_model},
        ),
        by_workspace=_movers(
            {r.name: r.total_cost_usd for r in prev_summary.by_workspace},
            {r.name: r.total_cost_usd for r in cur_summary.by_workspace},
        ),
        by_workload=_movers(
            *(
                _workload_costs(s, u, bw)
                for s, u, bw in zip(
                    (prev_summary, cur_summary), usage, batch_by_workload, strict=True
                )
            )
        ),
        slowest=slowest,
        most_failed=most_failed,
        alerts=_fired_alerts(session, week.start, week.end),
        budget=budget,
        billing=billing,
        days=tuple(days),
        csv_rows=tuple(csv_rows),
        regressions=tuple(regressions),
        missing=tuple(missing),
        notes=tuple(notes),
        thresholds=thresholds,
    )


def _day_points(
    week: Week, pieces: Sequence[tuple[date, datetime, dict[CellKey, Cell]]]
) -> list[DayPoint]:
    by_day: dict[date, list[dict[CellKey, Cell]]] = defaultdict(list)
    for day, _, cells in pieces:
        by_day[day].append(cells)
    out = []
    for day, _, _ in week.days():
        rt = batch = ZERO
        rt_req: int | None = 0
        b_req = 0
        for cells in by_day[day]:
            for (tier, _, _), cell in cells.items():
                cost = cell.cost_usd or ZERO
                if tier == "batch":
                    batch += cost
                    b_req += cell.requests or 0
                else:
                    rt += cost
                    rt_req = (
                        None if rt_req is None or cell.requests is None else rt_req + cell.requests
                    )
        share_req = b_req / (b_req + rt_req) if rt_req is not None and b_req + rt_req else None
        share_spend = float(batch / (rt + batch)) if rt + batch else None
        out.append(DayPoint(day, rt, batch, share_req, share_spend))
    return out


def _csv_rows(week: Week, pieces: Sequence[Mapping[CellKey, Cell]]) -> list[CsvRow]:
    merged: dict[CellKey, Cell] = {}
    for cells in pieces:
        for key, cell in cells.items():
            acc = merged.setdefault(key, Cell())
            acc.add(
                cell.requests,
                [cell.tokens[k] for k in TOKEN_KINDS],
                cell.web_searches,
                cell.unpriced_tokens,
                cell.cost_usd,
                cell.standard_cost_usd,
            )
    return [
        CsvRow(week.start_date, model, ws, tier, cell)
        for (tier, model, ws), cell in sorted(
            merged.items(), key=lambda kv: (kv[0][1], kv[0][2], kv[0][0])
        )
    ]


def _movers(
    before: Mapping[str, Decimal | None], after: Mapping[str, Decimal | None]
) -> tuple[Mover, ...]:
    """Pair last week's and this week's cost per name, biggest rise first, biggest fall last."""
    rows = [
        Mover(name, after.get(name, ZERO), before.get(name, ZERO))
        for name in set(before) | set(after)
    ]

    def order(m: Mover) -> tuple[int, Decimal, str]:
        change = m.change_usd
        return (1, ZERO, m.name) if change is None else (0, -change, m.name)

    return tuple(sorted(rows, key=order))


def _workload_costs(
    summary: Summary,
    usage: Mapping[tuple[str, str], WorkloadUsage],
    batches: Mapping[str, Any],
) -> dict[str, Decimal | None]:
    """Return spend per workload: batches by workload, real-time by call-log workload.

    Real-time spend the call logs do not cover (applications not instrumented) is one row of
    its own, so the workloads add up to the total.
    """
    out: dict[str, Decimal | None] = defaultdict(lambda: ZERO)
    for name, fig in batches.items():
        out[name or "(none)"] = (out[name or "(none)"] or ZERO) + fig.cost_usd
    logged = ZERO
    for (workload, _), u in usage.items():
        if u.calls:
            out[workload or "(none)"] = (out[workload or "(none)"] or ZERO) + u.realtime_cost_usd
            logged += u.realtime_cost_usd
    realtime = summary.spend.realtime_cost_usd
    if realtime is not None and fmt.to_cents(realtime - logged):
        out["(real-time without call logs)"] = realtime - logged
    return dict(out)


def _budget(
    session: Session, week: Week, summary: Summary, settings: Settings, days: Sequence[DayPoint]
) -> Budget:
    """Return month to date (of the month the week's last day is in) and the projection.

    The daily rate is the week's own (its last seven whole days); the projection adds that
    rate for every day left in the month after the week. The budget runs out on the day the
    month's spend reaches it: from the recorded days when it already has, else at the rate.
    """
    tz = week.tz
    last_day = week.end_date - timedelta(days=1)
    month_start = last_day.replace(day=1)
    next_month = (month_start + timedelta(days=32)).replace(day=1)
    mtd_since = local_midnight(month_start, tz)
    mtd = spend_figures(session, mtd_since, week.end, cross_check=False).total_cost_usd or ZERO
    week_total = summary.spend.total_cost_usd or ZERO
    rate = week_total / 7
    left = (next_month - week.end_date).days
    projected = mtd + rate * left
    budget = settings.report.monthly_budget
    runs_out: date | None = None
    if budget is not None:
        if mtd >= budget:
            runs_out = _crossing(session, month_start, week, budget, days)
        elif rate > 0:
            needed = math.ceil((budget - mtd) / rate)
            day = week.end_date + timedelta(days=needed - 1)
            runs_out = day if day < next_month else None
    return Budget(month_start, mtd, rate, projected, budget, runs_out)


def _crossing(
    session: Session, month_start: date, week: Week, budget: Decimal, days: Sequence[DayPoint]
) -> date | None:
    """Return the day this month's cumulative spend reached ``budget``."""
    known = {d.day: d.realtime_usd + d.batch_usd for d in days}
    spent = ZERO
    day = month_start
    while day < week.end_date:
        if day in known:
            spent += known[day]
        else:
            lo, hi = local_midnight(day, week.tz), local_midnight(day + timedelta(days=1), week.tz)
            spent += spend_figures(session, lo, hi, cross_check=False).total_cost_usd or ZERO
        if spent >= budget:
            return day
        day += timedelta(days=1)
    return None
