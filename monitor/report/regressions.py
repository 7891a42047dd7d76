"""The regressions of a weekly report: what got worse, each with the numbers that show it.

Kinds (``REGRESSION_KINDS``), each judged on the two weeks' figures the report already holds:

- ``batch_share_drop``: the organisation's batch share of requests or of spend fell by more
  than ``[report] share_drop_points``;
- ``spend_increase``: total spend rose by more than ``[report] spend_increase_pct``;
- ``tier_regression``: a workload's batch share of requests fell by more than 20 points;
- ``model_upgrade_cost``: a workload's tokens moved to models that cost more per token;
- ``cache_drop``: the cache-read share of prompt tokens fell by more than 10 points, per model
  and per workload;
- ``new_batch_candidate``: a real-time workload the advisor now recommends for batch;
- ``turnaround_p95`` and ``failure_rate``: this week's batches are over the rules' thresholds;
- ``budget_overrun``: the month is projected over ``[report] monthly_budget``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from monitor import fmt
from monitor.money import ZERO
from monitor.report.decompose import WeekCells
from monitor.report.weekly import (
    Budget,
    Regression,
    WorkloadUsage,
    band,
    signed_percent,
)
from monitor.summary import Summary

if TYPE_CHECKING:
    from monitor.advisor import Recommendation
    from monitor.config import Settings

# A workload whose batch share of requests fell by more than this went back to real-time.
TIER_DROP_POINTS = 20.0
# Cache-read share of prompt tokens: a fall of more than this many points is a cache drop,
# judged only where both weeks read at least this many prompt tokens (less is noise).
CACHE_DROP_POINTS = 10.0
CACHE_MIN_PROMPT_TOKENS = 1_000_000
# A workload moved to a pricier model when at least this share of its tokens changed model
# and its tokens cost this much more per token at the models' own rates.
MODEL_SHIFT_POINTS = 10.0
MODEL_UPGRADE_RATIO = 0.10
# Workloads with fewer requests than this in either week are not judged (too little to say).
MIN_WORKLOAD_REQUESTS = 50
RECOMMENDED = ("BATCH", "HYBRID")
REGRESSION_KINDS = (
    "batch_share_drop",
    "spend_increase",
    "tier_regression",
    "model_upgrade_cost",
    "cache_drop",
    "new_batch_candidate",
    "turnaround_p95",
    "failure_rate",
    "budget_overrun",
)


def _points(value: float) -> str:
    return f"{value * 100:.1f} points"


def _share(value: float | None) -> str:
    return fmt.percent(value, digits=1)


def _cache_share(cache_read: int, prompt: int) -> float | None:
    return cache_read / prompt if prompt else None


def find_regressions(
    *,
    settings: Settings,
    summaries: tuple[Summary, Summary],
    change: Decimal,
    cells: Sequence[WeekCells],
    usage: Sequence[Mapping[tuple[str, str], WorkloadUsage]],
    batch_by_workload: Sequence[Mapping[str, Any]],
    recs: Sequence[Sequence[Recommendation]],
    budget: Budget,
    thresholds: Mapping[str, float],
    incomplete: bool,
) -> list[Regression]:
    """Flag what got worse this week, each with the numbers that show it."""
    prev, cur = summaries
    out: list[Regression] = []
    caveat = " (the record is incomplete: see what is missing)" if incomplete else ""

    # 1. The organisation's batch share, of requests and of spend.
    limit = settings.report.share_drop_points / 100
    for basis, before, after in (
        ("requests", prev.spend.batch_share_requests, cur.spend.batch_share_requests),
        ("spend", prev.spend.batch_share_spend, cur.spend.batch_share_spend),
    ):
        if before is not None and after is not None and before - after > limit:
            out.append(
                Regression(
                    "batch_share_drop",
                    basis,
                    f"batch share of {basis} fell {_points(before - after)}, from "
                    f"{_share(before)} to {_share(after)} (more than "
                    f"{settings.report.share_drop_points:g} points; target {band()}){caveat}",
                )
            )

    # 2. Total spend.
    before_total = fmt.to_cents(prev.spend.total_cost_usd or ZERO)
    pct = settings.report.spend_increase_pct
    if before_total > 0 and change / before_total * 100 > Decimal(str(pct)):
        out.append(
            Regression(
                "spend_increase",
                "organisation",
                f"spend rose {fmt.usd(change)} ({signed_percent(float(change / before_total))}), "
                "from "
                f"{fmt.usd(before_total)} to {fmt.usd(before_total + change)} (more than "
                f"{pct:g} %){caveat}",
            )
        )

    # 3. Workloads that went back to real-time.
    names = sorted({w for u in usage for (w, _) in u} | {w for b in batch_by_workload for w in b})
    for name in names:
        shares = []
        for u, b in zip(usage, batch_by_workload, strict=True):
            fig = b.get(name)
            batch_req = fig.requests if fig is not None else 0
            calls = sum(x.calls for (w, _), x in u.items() if w == name)
            shares.append((batch_req, calls))
        if any(b + c < MIN_WORKLOAD_REQUESTS for b, c in shares):
            continue
        (b0, c0), (b1, c1) = shares
        s0, s1 = b0 / (b0 + c0), b1 / (b1 + c1)
        if (s0 - s1) * 100 > TIER_DROP_POINTS:
            out.append(
                Regression(
                    "tier_regression",
                    f"workload:{name}",
                    f"batch share of {name}'s requests fell {_points(s0 - s1)}, from "
                    f"{_share(s0)} ({b0:,} batch, {c0:,} real-time) to {_share(s1)} ({b1:,} "
                    f"batch, {c1:,} real-time): work went back to real-time",
                )
            )

    # 4. Workloads that moved to a pricier model.
    out += _model_upgrades(usage, names)

    # 5. Cache: per model (every tier and workspace) and per workload.
    per_model = []
    for week in cells:
        acc: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for (_, model, _, kind), c in week.cells.items():
            if kind != "output":
                acc[model][1] += c.tokens
                if kind == "cache_read":
                    acc[model][0] += c.tokens
        per_model.append(acc)
    per_workload = []
    for u in usage:
        acc2: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for (w, _), x in u.items():
            acc2[w][0] += x.cache_read_tokens
            acc2[w][1] += x.prompt_tokens
        per_workload.append(acc2)
    for label, pair in (("model", per_model), ("workload", per_workload)):
        for name in sorted(set(pair[0]) & set(pair[1])):
            (r0, p0), (r1, p1) = pair[0][name], pair[1][name]
            if min(p0, p1) < CACHE_MIN_PROMPT_TOKENS:
                continue
            s0, s1 = r0 / p0, r1 / p1
            if (s0 - s1) * 100 > CACHE_DROP_POINTS:
                out.append(
                    Regression(
                        "cache_drop",
                        f"{label}:{name}",
                        f"cache reads fell from {_share(s0)} to {_share(s1)} of {name}'s prompt "
                        f"tokens ({_points(s0 - s1)}; {p1:,} prompt tokens this week)",
                    )
                )

    # 6. Real-time workloads the advisor now says should move to batch.
    advised = {r.workload for r in recs[0] if r.recommendation in RECOMMENDED}
    for r in recs[1]:
        if r.recommendation in RECOMMENDED and r.workload not in advised:
            out.append(
                Regression(
                    "new_batch_candidate",
                    f"workload:{r.workload}",
                    f"{r.workload} runs in real time and the advisor now recommends "
                    f"{r.recommendation}: {r.reason}",
                )
            )

    # 7. Batch operations, against the rules' thresholds.
    p95_limit = thresholds["turnaround_p95_seconds"]
    p95, p95_before = cur.batches.turnaround_p95_seconds, prev.batches.turnaround_p95_seconds
    if p95 is not None and p95 > p95_limit:
        out.append(
            Regression(
                "turnaround_p95",
                "batches",
                f"p95 batch turnaround {fmt.minutes(p95)} over {cur.batches.batches_ended} "
                f"batches (last week {fmt.minutes(p95_before)}; threshold "
                f"{fmt.minutes(p95_limit)})",
            )
        )
    rate_limit = thresholds["failure_rate"]
    rate, rate_before = cur.batches.failure_rate, prev.batches.failure_rate
    if rate is not None and rate > rate_limit:
        failed = cur.batches.errored + cur.batches.expired
        out.append(
            Regression(
                "failure_rate",
                "batches",
                f"{_share(rate)} of batch requests failed ({failed:,} of "
                f"{cur.batches.requests:,} errored or expired; last week {_share(rate_before)}; "
                f"threshold {fmt.percent(rate_limit)})",
            )
        )

    # 8. The month against the budget.
    if (
        budget.monthly_budget_usd is not None
        and budget.projected_month_usd > budget.monthly_budget_usd
    ):
        when = (
            f"; at this rate it runs out on {budget.runs_out_on.isoformat()}"
            if budget.runs_out_on
            else ""
        )
        out.append(
            Regression(
                "budget_overrun",
                "organisation",
                f"the month is projected at {fmt.usd(budget.projected_month_usd)} "
                f"({fmt.usd(budget.month_to_date_usd)} to date plus "
                f"{fmt.usd(budget.daily_rate_usd)} a day), over the "
                f"{fmt.usd(budget.monthly_budget_usd)} budget{when}{caveat}",
            )
        )
    return out


def _model_upgrades(
    usage: Sequence[Mapping[tuple[str, str], WorkloadUsage]], names: Sequence[str]
) -> list[Regression]:
    """Flag workloads whose tokens moved to models that cost more per token.

    Each model's cost per token is the workload's own standard-rate cost over its tokens (last
    week's where it had some); the mix of this week priced that way is compared with last
    week's mix priced the same way.
    """
    out = []
    for name in names:
        weeks = [{m: x for (w, m), x in u.items() if w == name and x.tokens} for u in usage]
        if not all(weeks):
            continue
        totals = [sum(x.tokens for x in w.values()) for w in weeks]
        unit: dict[str, Decimal] = {}
        for m in set(weeks[0]) | set(weeks[1]):
            src = weeks[0].get(m) or weeks[1][m]
            unit[m] = src.standard_cost_usd / src.tokens
        shares = [
            {m: Decimal(x.tokens) / t for m, x in w.items()}
            for w, t in zip(weeks, totals, strict=True)
        ]
        models = sorted(unit)
        moved = sum(abs(shares[1].get(m, ZERO) - shares[0].get(m, ZERO)) for m in models) / 2
        per_token = [sum(s.get(m, ZERO) * unit[m] for m in models) for s in shares]
        if not per_token[0] or moved * 100 < Decimal(str(MODEL_SHIFT_POINTS)):
            continue
        ratio = per_token[1] / per_token[0] - 1
        if ratio <= Decimal(str(MODEL_UPGRADE_RATIO)):
            continue
        up = [m for m in models if shares[1].get(m, ZERO) > shares[0].get(m, ZERO)]
        down = [m for m in models if shares[1].get(m, ZERO) < shares[0].get(m, ZERO)]

        def mix(ms: Sequence[str], shares: Sequence[Mapping[str, Decimal]] = shares) -> str:
            return ", ".join(
                f"{m} from {_share(float(shares[0].get(m, ZERO)))} to "
                f"{_share(float(shares[1].get(m, ZERO)))}"
                for m in ms
            )

        extra = (per_token[1] - per_token[0]) * totals[1]
        out.append(
            Regression(
                "model_upgrade_cost",
                f"workload:{name}",
                f"{name} moved to pricier models ({mix(up)}; {mix(down)}): the same tokens "
                f"cost {signed_percent(float(ratio))} at those models' rates, about "
                f"{fmt.usd(extra)} more this week",
            )
        )
    return out
