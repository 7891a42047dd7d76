"""Which real-time workloads could move to the Message Batches API, and what that saves.

The advice follows the batch migration guides:

- **BATCH** when the workload accepts at least 60 minutes of latency (most batches finish within
  an hour, all within 24 h) and moving it saves more than ``[advisor] min_monthly_savings``.
- **REAL-TIME** for user-facing work, for latency under 60 minutes, when the saving is too small,
  or when nothing says what latency the workload accepts.
- **HYBRID** in the 30-120 minute gray zone when some calls are marked ``priority: high``: those
  stay real-time and the rest go to batches.

The accepted latency comes from ``[[workloads]]`` (``max_latency``, ``user_facing``). Where it is
not declared, a hint is inferred from when calls arrive (see ``infer_pattern``) and the reason
says so. Workloads with large prompts and little cache reading are flagged as prompt-caching
candidates, since caching stacks with the batch discount.

Two entry points share one aggregation (``Traffic``) and one decision (``Traffic.recommend``):
``advise`` feeds it from ``call_bucket`` rows (or, when there are none, from ``usage_bucket``
rows of the Messages API per API key or workspace); ``audit_files`` feeds it from call-log
files, streamed through the same hourly aggregation the collector uses, in constant memory.

Units: a month is 30 days; daily rates divide by the days the workload's data spans (first to
last call, rounded up to whole days). Money stays exact ``Decimal`` and is rounded only when
printed.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, delete, or_
from sqlalchemy import select as columns
from sqlmodel import Session, col, select

from monitor import fmt
from monitor.calllog import BadLine, BucketLike, HourlyTally, bucket_tokens
from monitor.fmt import money_json
from monitor.models import Advice, CallBucket, UsageBucket
from monitor.money import ZERO
from monitor.pricing import Cost, PriceBook, Usage, default_book
from monitor.summary import realtime_filter
from monitor.tokens import Tokens
from monitor.workloads import WorkloadMap

if TYPE_CHECKING:
    from monitor.config import Settings
    from monitor.workloads import Workload

log = logging.getLogger(__name__)

MONTH_DAYS = 30
DEFAULT_WINDOW = timedelta(days=30)
DEFAULT_MIN_MONTHLY_SAVINGS = Decimal("10")
# Batches: "most finish in under 1 h", every one within 24 h (reference 1.5).
BATCH_MIN_LATENCY_MINUTES = 60.0
GRAY_ZONE_MINUTES = (30.0, 120.0)
# Inferred hints: a scheduled job's results are needed by its next run; a steady queue is
# machine-fed and can usually absorb the hour a typical batch takes.
SCHEDULED_LATENCY_MINUTES = 1440.0
QUEUE_LATENCY_MINUTES = 60.0
MIN_CALLS_TO_INFER = 20
# Caching candidates: big prompts that are barely read from cache. The estimate assumes half
# of the uncached input is a prefix shared between calls that would be read from cache.
CACHE_MIN_PROMPT_TOKENS = 10_000
CACHE_MAX_READ_SHARE = 0.10
CACHE_ASSUMED_PREFIX_SHARE = Decimal("0.5")

BATCH, REAL_TIME, HYBRID = "BATCH", "REAL-TIME", "HYBRID"
URGENT = "high"


@dataclass(frozen=True)
class Recommendation:
    """The advice for one real-time workload, with monthly money figures (exact Decimals)."""

    workload: str
    model: str  # the model with the most calls
    requests_per_day: float | None  # None when the source has no request counts
    input_tokens_per_request: float | None  # the whole prompt: uncached + cache read + write
    output_tokens_per_request: float | None
    monthly_standard_usd: Decimal | None  # what it costs now, at real-time prices
    # What it would cost with the considered plan: all of it at batch prices, or for HYBRID the
    # urgent calls at real-time prices plus the rest at batch prices. None when unpriced.
    monthly_batch_usd: Decimal | None
    monthly_savings_usd: Decimal | None  # standard minus batch
    recommendation: str  # BATCH | REAL-TIME | HYBRID
    reason: str
    max_latency_minutes: float | None
    latency_source: str  # declared | inferred
    caching_candidate: bool = False
    caching_extra_savings_usd: Decimal | None = None  # on top of the recommendation
    user_facing: bool | None = None
    calls: int | None = None
    span_days: int = 1
    source: str = "call logs"  # or "usage report"

    def to_json(self) -> dict[str, Any]:
        """Return the JSON object of the CLI (money as strings to the cent, half-up)."""
        return {
            "workload": self.workload,
            "model": self.model,
            "requests_per_day": _round(self.requests_per_day),
            "input_tokens_per_request": _round(self.input_tokens_per_request),
            "output_tokens_per_request": _round(self.output_tokens_per_request),
            "monthly_standard_usd": money_json(self.monthly_standard_usd),
            "monthly_batch_usd": money_json(self.monthly_batch_usd),
            "monthly_savings_usd": money_json(self.monthly_savings_usd),
            "recommendation": self.recommendation,
            "reason": self.reason,
            "max_latency_minutes": self.max_latency_minutes,
            "latency_source": self.latency_source,
            "caching_candidate": self.caching_candidate,
            "caching_extra_savings_usd": money_json(self.caching_extra_savings_usd),
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


# --- aggregation ------------------------------------------------------------------------------


@dataclass
class Tally:
    """Calls, tokens and cost of one workload for one model and priority."""

    calls: int = 0
    calls_known: bool = True
    # From call buckets the cache writes of both TTLs arrive as one sum (see bucket_tokens):
    # the advisor reads only their sum, as part of the prompt size.
    tokens: Tokens = field(default_factory=Tokens.zero)
    standard_usd: Decimal = ZERO  # of the priced calls
    batch_usd: Decimal = ZERO
    unpriced_calls: int = 0
    unpriced: bool = False


@dataclass
class WorkloadTraffic:
    """Everything the advisor keeps about one workload: per-model tallies and arrival shape.

    The size depends on the models, priorities and days seen, never on the number of calls.
    """

    name: str
    source: str
    tallies: dict[tuple[str, str], Tally] = field(default_factory=dict)  # (model, priority)
    hour_of_day: list[int] = field(default_factory=lambda: [0] * 24)  # calls by UTC hour
    hours_known: bool = True
    days: set[int] = field(default_factory=set)  # UTC dates (ordinals) with calls
    first_at: datetime | None = None
    last_at: datetime | None = None

    def tally(self, model: str, priority: str) -> Tally:
        """Return the tally of ``model`` and ``priority``, creating it."""
        key = (model, priority)
        if key not in self.tallies:
            self.tallies[key] = Tally()
        return self.tallies[key]

    def seen(self, first: datetime | None, last: datetime | None) -> None:
        """Widen the span to cover ``first``..``last``."""
        if first is not None and (self.first_at is None or first < self.first_at):
            self.first_at = first
        if last is not None and (self.last_at is None or last > self.last_at):
            self.last_at = last

    @property
    def span_days(self) -> int:
        """Return the days the data spans, first to last call, rounded up (at least 1)."""
        if self.first_at is None or self.last_at is None:
            return 1
        seconds = (self.last_at - self.first_at).total_seconds()
        return max(1, math.ceil(seconds / 86400))


class Traffic:
    """The advisor's aggregate of real-time traffic, per workload (fed by either entry point)."""

    def __init__(self, workloads: WorkloadMap) -> None:
        self.workloads = workloads
        self.by_workload: dict[str, WorkloadTraffic] = {}

    def __bool__(self) -> bool:
        return bool(self.by_workload)

    def _workload(self, name: str, source: str) -> WorkloadTraffic:
        if name not in self.by_workload:
            self.by_workload[name] = WorkloadTraffic(name=name, source=source)
        return self.by_workload[name]

    def add_bucket(self, row: BucketLike, *, costs: bool = True) -> None:
        """Add one hourly call bucket (a stored ``CallBucket`` or a fresh ``BucketRow``).

        With ``costs=False`` its cost is left out, to be added with ``add_cost``.
        """
        # Map again: a declaration added after collection still claims the stored name.
        w = self._workload(self.workloads.resolve(row.workload), "call logs")
        t = w.tally(row.model, row.priority)
        t.calls += row.calls
        t.tokens += bucket_tokens(row)
        if costs:
            _add_cost(t, row.calls, row.priced, row.cost_usd, row.batch_cost_usd)
        w.hour_of_day[row.hour.hour] += row.calls
        w.days.add(row.hour.toordinal())
        w.seen(row.first_at or row.hour, row.last_at or row.hour)

    def add_cost(self, workload: str, model: str, priority: str, calls: int, cost: Cost) -> None:
        """Add the cost of ``calls`` calls added with ``add_bucket(..., costs=False)``."""
        w = self._workload(self.workloads.resolve(workload), "call logs")
        _add_cost(w.tally(model, priority), calls, cost.priced, cost.standard_usd, cost.batch_usd)

    def add_usage(self, row: UsageBucket, book: PriceBook) -> None:
        """Add one usage-report bucket of the Messages API, as workload = its workspace."""
        # One workload per workspace: the analytics report is not grouped by API key, and both
        # reports must give the same advice for the same calls.
        name = f"workspace:{row.workspace_id or 'default'}"
        w = self._workload(self.workloads.resolve(name), "usage report")
        t = w.tally(row.model, "")
        known = row.requests is not None
        t.calls += row.requests or 0
        t.calls_known = t.calls_known and known
        tokens = Tokens(
            input_tokens=row.input_tokens,
            output_tokens=row.output_tokens,
            cache_read_tokens=row.cache_read_tokens,
            cache_write_5m_tokens=row.cache_write_5m_tokens,
            cache_write_1h_tokens=row.cache_write_1h_tokens,
            web_searches=row.web_searches,
        )
        t.tokens += tokens
        usage = Usage.of(
            tokens,
            requests=max(1, row.requests or 1),
            inference_geo=row.inference_geo or None,
            context_window=row.context_window or None,
        )
        cost = book.cost_of(row.model, usage, row.bucket_start)
        if cost.standard_usd is not None and cost.batch_usd is not None:
            t.standard_usd += cost.standard_usd
            t.batch_usd += cost.batch_usd
        else:
            t.unpriced = True
            t.unpriced_calls += row.requests or 0
        if row.width == "1d":
            w.hours_known = False  # a daily bucket says nothing about the hour of the calls
        else:
            weight = row.requests if known else row.input_tokens + row.output_tokens
            w.hour_of_day[row.bucket_start.hour] += weight or 0
        w.days.add(row.bucket_start.toordinal())
        w.seen(row.bucket_start, max(row.bucket_start, row.bucket_end - timedelta(microseconds=1)))

    def recommend(
        self, book: PriceBook, min_monthly_savings: Decimal = DEFAULT_MIN_MONTHLY_SAVINGS
    ) -> list[Recommendation]:
        """Return one recommendation per workload, the biggest saving first."""
        recs = [
            _recommend(w, self.workloads.declared(w.name), book, min_monthly_savings)
            for w in self.by_workload.values()
        ]
        return sorted(recs, key=lambda r: (-(r.monthly_savings_usd or ZERO), r.workload))


def _add_cost(
    t: Tally, calls: int, priced: bool, standard: Decimal | None, batch: Decimal | None
) -> None:
    """Add the cost of ``calls`` calls to ``t`` (None: unpriced, and the calls are counted)."""
    if standard is not None and batch is not None:
        t.standard_usd += standard
        t.batch_usd += batch
    if not priced:
        t.unpriced = True
        if standard is None:
            t.unpriced_calls += calls


# --- inference --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pattern:
    """What the arrival times of a workload suggest."""

    kind: str  # scheduled | queue | interactive | unknown
    max_latency_minutes: float | None
    user_facing: bool | None
    note: str


def infer_pattern(hour_of_day: Sequence[int], days: int, span_days: int) -> Pattern:
    """Guess from the calls per UTC hour of the day how long a workload can wait.

    1. Too few calls: no guess.
    2. At least 90% of calls in 3 hours of the day: a scheduled job (batchable, 24 h).
    3. The quietest 8 consecutive hours hold under 10% of calls, spread over 6+ hours: an
       interactive daytime pattern, so probably user-facing.
    4. The quietest 8 hours hold at least 20% (uniform is 33%): a steady, queue-like arrival,
       machine-fed, which can usually wait an hour.
    5. Otherwise: no clear pattern, no guess.
    """
    total = sum(hour_of_day)
    if total < MIN_CALLS_TO_INFER:
        return Pattern("unknown", None, None, f"too few calls ({total}) to infer a pattern")
    ranked = sorted(range(24), key=lambda h: -hour_of_day[h])
    top3 = sum(hour_of_day[h] for h in ranked[:3])
    on_days = f"on {days} of {span_days} day{'s' if span_days != 1 else ''}"
    if top3 >= 0.9 * total:
        busy = ", ".join(f"{h:02d}:00" for h in sorted(ranked[:3]) if hour_of_day[h])
        return Pattern(
            "scheduled",
            SCHEDULED_LATENCY_MINUTES,
            False,
            f"{_pct(top3, total)} of calls arrive in the hours starting {busy} UTC {on_days}, "
            "like a scheduled job",
        )
    quiet = min(sum(hour_of_day[(start + i) % 24] for i in range(8)) for start in range(24))
    active_hours = sum(1 for n in hour_of_day if n)
    if quiet < 0.1 * total and active_hours >= 6:
        return Pattern(
            "interactive",
            None,
            True,
            f"calls follow a daytime pattern (the quietest 8 hours hold {_pct(quiet, total)}), "
            "like people using it",
        )
    if quiet >= 0.2 * total:
        return Pattern(
            "queue",
            QUEUE_LATENCY_MINUTES,
            False,
            f"calls arrive steadily around the clock (the quietest 8 hours hold "
            f"{_pct(quiet, total)}) {on_days}, like a queue being worked through",
        )
    return Pattern("unknown", None, None, "the arrival times show no clear pattern")


def _pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:.0f}%" if whole else "0%"


# --- the decision -----------------------------------------------------------------------------


def _monthly(amount: Decimal, span_days: int) -> Decimal:
    return amount * MONTH_DAYS / span_days


def _minutes(value: float) -> str:
    if value >= 60 and value % 60 == 0:
        hours = int(value // 60)
        return f"{hours} h"
    return f"{value:g} min"


def _recommend(
    w: WorkloadTraffic, declared: Workload | None, book: PriceBook, min_savings: Decimal
) -> Recommendation:
    """Decide for one workload (the rules in the module docstring)."""
    tallies = list(w.tallies.items())
    calls = sum(t.calls for _, t in tallies)
    calls_known = all(t.calls_known for _, t in tallies)
    span = w.span_days
    by_model: dict[str, list[Tally]] = {}
    for (model, _), t in tallies:
        by_model.setdefault(model, []).append(t)

    def weight(m: str) -> tuple[Any, ...]:
        calls_ = sum(t.calls for t in by_model[m])
        spend = sum((t.standard_usd for t in by_model[m]), ZERO)
        # Usage reports may have no call counts (the legacy one never has): there the model
        # that costs most leads, so both reports name the same model.
        return (spend, calls_, m) if w.source == "usage report" else (calls_, spend, m)

    model = max(by_model, key=weight)
    tokens = sum((t.tokens for _, t in tallies), Tokens.zero())
    prompt, output, cache_read = tokens.prompt, tokens.output_tokens, tokens.cache_read_tokens

    unpriced_models = sorted({m for (m, _), t in tallies if t.unpriced})
    # Priced when at least some calls have a price (the money then covers those calls).
    priced_any = any(not t.unpriced or t.calls > t.unpriced_calls for _, t in tallies)
    standard = sum((t.standard_usd for _, t in tallies), ZERO)
    all_batch = sum((t.batch_usd for _, t in tallies), ZERO)
    urgent_calls = sum(t.calls for (_, p), t in tallies if p == URGENT)
    # Hybrid plan: urgent calls stay at real-time prices, the rest move to batch.
    hybrid = sum((t.standard_usd if p == URGENT else t.batch_usd for (_, p), t in tallies), ZERO)

    # 1. The accepted latency: declared, else inferred from the arrival pattern.
    pattern = (
        infer_pattern(w.hour_of_day, len(w.days), span)
        if w.hours_known
        else Pattern("unknown", None, None, "daily usage buckets say nothing about the hour")
    )
    # A declared max_latency, or a declared user_facing = true, decides; anything else is a
    # guess from the traffic (a declared user_facing = false is kept alongside the guess).
    declared_latency = (
        declared.max_latency.total_seconds() / 60
        if declared is not None and declared.max_latency is not None
        else None
    )
    declared_user_facing = declared.user_facing if declared is not None else None
    latency: float | None
    user_facing: bool | None
    if declared_latency is not None or declared_user_facing:
        source = "declared"
        latency, user_facing = declared_latency, declared_user_facing
    else:
        source = "inferred"
        latency = pattern.max_latency_minutes
        user_facing = pattern.user_facing if declared_user_facing is None else False
        if declared_user_facing is False and pattern.user_facing:
            latency = None  # declared not user-facing, but the traffic gives no latency

    # 2. The plan: hybrid in the gray zone when some (not all) calls are marked urgent.
    lo, hi = GRAY_ZONE_MINUTES
    gray = latency is not None and lo <= latency <= hi
    use_hybrid = (
        gray and not user_facing and 0 < urgent_calls < calls and calls_known and priced_any
    )
    plan_batch = hybrid if use_hybrid else all_batch
    monthly_standard = _monthly(standard, span) if priced_any else None
    monthly_batch = _monthly(plan_batch, span) if priced_any else None
    savings = (
        monthly_standard - monthly_batch
        if monthly_standard is not None and monthly_batch is not None
        else None
    )
    would_save = f"batch would save {fmt.usd(savings)}/month" if savings is not None else ""

    # 3. The decision.
    if not priced_any:
        verdict = REAL_TIME
        why = (
            f"no price for {', '.join(unpriced_models)}: add a [[prices]] entry to "
            "monitor.toml to get advice"
        )
    elif user_facing:
        verdict = REAL_TIME
        if source == "declared":
            why = f"declared user-facing: keep it real-time ({would_save}, but people wait)"
        else:
            why = (
                f"looks user-facing (inferred): keep it real-time ({would_save}). Inferred from "
                f"traffic: {pattern.note}; declare user_facing = false and max_latency in "
                "[[workloads]] if nobody waits for the answers"
            )
    elif latency is None:
        verdict = REAL_TIME
        why = (
            f"acceptable latency unknown ({pattern.note}); declare max_latency in [[workloads]] "
            f"to get advice ({would_save})"
        )
    else:
        said = f"max latency {_minutes(latency)} ({source})"
        assert savings is not None
        if use_hybrid:
            share = _pct(urgent_calls, calls)
            if savings > min_savings:
                verdict = HYBRID
                why = (
                    f"{said}, in the {lo:g}-{hi:g} min gray zone, and {share} of calls are "
                    f"priority high: keep those real-time and batch the rest, saving "
                    f"{fmt.usd(savings)}/month"
                )
            else:
                verdict = REAL_TIME
                why = (
                    f"{said}; batching the {_pct(calls - urgent_calls, calls)} of calls that "
                    f"are not priority high would save only {fmt.usd(savings)}/month, not more "
                    f"than the {fmt.usd(min_savings)} minimum"
                )
        elif latency < BATCH_MIN_LATENCY_MINUTES:
            verdict = REAL_TIME
            why = (
                f"{said}, under {BATCH_MIN_LATENCY_MINUTES:g} min: batch results can take up to "
                f"24 h (most within 1 h), so keep it real-time ({would_save})"
            )
        elif savings > min_savings:
            verdict = BATCH
            why = (
                f"{said}, at least {BATCH_MIN_LATENCY_MINUTES:g} min: move it to the Message "
                f"Batches API (50% off every token), saving {fmt.usd(savings)}/month"
            )
        else:
            verdict = REAL_TIME
            why = (
                f"{said}, but {would_save}, not more than the {fmt.usd(min_savings)} minimum "
                "([advisor] min_monthly_savings)"
            )
    if source == "inferred" and latency is not None:
        why += (
            f". Inferred from traffic: {pattern.note}; declare max_latency in [[workloads]] "
            "to confirm"
        )
    if unpriced_models and priced_any:
        why += f". Calls of {', '.join(unpriced_models)} have no price and are left out"
    if w.source != "call logs":
        why += ". From the usage report (no call logs), per API key or workspace"

    # 4. Prompt caching, on top of the plan.
    candidate, extra = _caching(w, verdict, book, prompt, cache_read, calls)
    if candidate and extra is not None:
        why += (
            f". Prompt caching: {prompt / max(calls, 1):,.0f} prompt tokens per request, "
            f"{_pct(cache_read, prompt)} read from cache; caching a shared prefix of half the "
            f"input would save about {fmt.usd(extra)}/month more "
            "(it stacks with the batch discount)"
        )

    per_day = calls / span if calls_known else None
    return Recommendation(
        workload=w.name,
        model=model,
        requests_per_day=per_day,
        input_tokens_per_request=prompt / calls if calls_known and calls else None,
        output_tokens_per_request=output / calls if calls_known and calls else None,
        monthly_standard_usd=monthly_standard,
        monthly_batch_usd=monthly_batch,
        monthly_savings_usd=savings,
        recommendation=verdict,
        reason=why,
        max_latency_minutes=latency,
        latency_source=source,
        caching_candidate=candidate,
        caching_extra_savings_usd=extra,
        user_facing=user_facing,
        calls=calls if calls_known else None,
        span_days=span,
        source=w.source,
    )


def _caching(
    w: WorkloadTraffic, verdict: str, book: PriceBook, prompt: int, cache_read: int, calls: int
) -> tuple[bool, Decimal | None]:
    """Flag big prompts that are barely cached, and estimate what caching would save a month.

    The estimate moves half of each model's uncached input to cache reads and prices the
    difference at the rate of the plan (batch for calls that go to batches).
    """
    if not calls or prompt < CACHE_MIN_PROMPT_TOKENS * calls:
        return False, None
    if cache_read >= CACHE_MAX_READ_SHARE * prompt:
        return False, None
    at = w.last_at
    if at is None:
        return False, None
    extra = ZERO
    for (model, priority), t in w.tallies.items():
        moved = int(t.tokens.input_tokens * CACHE_ASSUMED_PREFIX_SHARE)
        if not moved or t.unpriced:
            continue
        requests = max(1, t.calls)
        uncached = book.cost_of(model, Usage(input_tokens=moved, requests=requests), at)
        cached = book.cost_of(model, Usage(cache_read_tokens=moved, requests=requests), at)
        batched = verdict == BATCH or (verdict == HYBRID and priority != URGENT)
        before = uncached.batch_usd if batched else uncached.standard_usd
        after = cached.batch_usd if batched else cached.standard_usd
        if before is not None and after is not None:
            extra += before - after
    if extra <= ZERO:
        return False, None
    return True, _monthly(extra, w.span_days)


# --- entry points -----------------------------------------------------------------------------


def advise(
    session: Session,
    now: datetime,
    settings: Settings,
    window: timedelta = DEFAULT_WINDOW,
    book: PriceBook | None = None,
) -> list[Recommendation]:
    """Advise on the real-time workloads seen in the ``window`` before ``now``.

    Read the call buckets of the window; when there are none, fall back to the usage report's
    Messages API buckets, one workload per API key (or workspace when keyless).
    """
    book = book or PriceBook.load(settings.prices)
    traffic = Traffic(WorkloadMap(settings.workloads))
    since = now - window
    rows = session.exec(
        select(CallBucket).where(col(CallBucket.hour) >= since, col(CallBucket.hour) <= now)
    )
    for row in rows:
        traffic.add_bucket(row)
    if not traffic:
        for usage in _usage_rows(session, since, now):
            traffic.add_usage(usage, book)
    return traffic.recommend(book, settings.advisor.min_monthly_savings)


def store(session: Session, now: datetime, settings: Settings) -> int:
    """Advise over ``[advisor] window`` and replace the stored advice (the caller commits).

    Return how many recommendations were stored.
    """
    recs = advise(session, now, settings, window=settings.advisor.window)
    session.execute(delete(Advice))
    session.add_all(
        Advice(
            workload=r.workload,
            model=r.model,
            recommendation=r.recommendation,
            monthly_savings_usd=r.monthly_savings_usd,
            computed_at=now,
        )
        for r in recs
    )
    return len(recs)


@dataclass(frozen=True)
class Advised:
    """One stored recommendation: what the ``batch_candidate`` rule and /metrics read."""

    workload: str
    model: str
    recommendation: str
    monthly_savings_usd: Decimal | None


def stored(session: Session, now: datetime, max_age: timedelta) -> list[Advised] | None:
    """Return the advice the daemon's ``advise`` job stored within ``max_age`` of ``now``.

    None when there is none that fresh (no daemon runs, or it advised nothing): the caller
    computes the advice itself.
    """
    rows = session.execute(
        columns(
            col(Advice.workload),
            col(Advice.model),
            col(Advice.recommendation),
            col(Advice.monthly_savings_usd),
            col(Advice.computed_at),
        )
    ).all()
    if not rows:
        return None
    oldest = min(r[4] for r in rows)
    if oldest < now - max_age or max(r[4] for r in rows) > now + max_age:
        return None
    return [Advised(w, m, rec, savings) for w, m, rec, savings, _ in rows]


def current(
    session: Session, now: datetime, settings: Settings, window: timedelta = DEFAULT_WINDOW
) -> Sequence[Advised | Recommendation]:
    """Return the advice over ``window`` before ``now``: the daemon's stored copy when fresh.

    The ``advise`` job stores ``advise`` over ``[advisor] window`` every ``[advisor]
    interval``; reading those rows instead of a month of call buckets is what keeps a rule
    evaluation round fast over a long history. Any other window, or stored advice older than
    two intervals, is computed here.
    """
    if window == settings.advisor.window:
        kept = stored(session, now, 2 * settings.advisor.interval)
        if kept is not None:
            return kept
    return advise(session, now, settings, window=window)


# Usage buckets overlap across report sources and widths; read one series only.
_SOURCE_PREFERENCE = ("analytics", "legacy")
_WIDTH_PREFERENCE = ("1h", "1m", "1d")


def _usage_rows(session: Session, since: datetime, now: datetime) -> list[UsageBucket]:
    # Real-time rows of either report: the analytics report says the product, the legacy one
    # only the service tier (the same rule as the summary's, so both read the same calls).
    realtime = or_(
        and_(col(UsageBucket.source) == "analytics", realtime_filter("analytics")),
        and_(col(UsageBucket.source) != "analytics", realtime_filter("legacy")),
    )
    where = (
        realtime,
        col(UsageBucket.bucket_start) >= since,
        col(UsageBucket.bucket_start) <= now,
    )
    present = set(
        session.exec(select(UsageBucket.source, UsageBucket.width).where(*where).distinct()).all()
    )
    if not present:
        return []

    def rank(pair: tuple[str, str]) -> tuple[int, int]:
        source, width = pair
        return (
            _SOURCE_PREFERENCE.index(source) if source in _SOURCE_PREFERENCE else 99,
            _WIDTH_PREFERENCE.index(width) if width in _WIDTH_PREFERENCE else 99,
        )

    source, width = min(present, key=rank)
    return list(
        session.exec(
            select(UsageBucket).where(
                *where, col(UsageBucket.source) == source, col(UsageBucket.width) == width
            )
        ).all()
    )


def _log_bad_line(bad: BadLine) -> None:
    log.warning("audit: bad line skipped: %s", bad)


def audit_files(
    paths: Iterable[str | Path],
    workloads: Sequence[Workload] = (),
    now: datetime | None = None,
    book: PriceBook | None = None,
    *,
    window: timedelta | None = None,
    min_monthly_savings: Decimal = DEFAULT_MIN_MONTHLY_SAVINGS,
    on_bad_line: Callable[[BadLine], None] = _log_bad_line,
) -> list[Recommendation]:
    """Advise from call-log files directly, without a database.

    Stream each file line by line through the collector's hourly aggregation, so memory depends
    on the hours, workloads and models seen, never on the number of lines. With ``now`` and
    ``window``, count only the calls in the window before ``now``. Each bad line goes to
    ``on_bad_line`` (default: a log warning) and the rest of the file is still read.
    """
    book = book or default_book()
    mapping = WorkloadMap(workloads)
    tally = HourlyTally(mapping, book)
    since = now - window if now is not None and window is not None else None
    for path in paths:
        with open(path, "rb") as lines:  # the file's own line iterator: buffered, constant memory
            tally.feed(lines, str(path), 1, on_bad_line, since=since)
    traffic = Traffic(mapping)
    # The advice needs sums of costs, not each hour's: price a day at a time (the same sums).
    for row in tally.rows(price=False):
        if now is None or row.hour <= now:
            traffic.add_bucket(row, costs=False)
    for workload, model, priority, calls, cost in tally.daily_costs(until=now):
        traffic.add_cost(workload, model, priority, calls, cost)
    return traffic.recommend(book, min_monthly_savings)


__all__ = [
    "BATCH",
    "HYBRID",
    "REAL_TIME",
    "Advised",
    "Pattern",
    "Recommendation",
    "Traffic",
    "advise",
    "audit_files",
    "current",
    "infer_pattern",
    "store",
    "stored",
]
