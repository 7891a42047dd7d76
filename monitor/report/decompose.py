"""Why the spend changed: an exact split of a week-on-week change into named drivers.

The change is computed per cell (workspace x model x tier x token kind) and each cell's change
is split among six factors whose product is the cell's cost::

    cost = V[w, g] * a[w, g, m] * b[w, g, m, t] * c[w, m, t, k] * L[m, t, k] * M[w, m, t, k]

- ``V`` volume: the workspace's tokens of the kind's group (prompt or output);
- ``a`` model_mix: the model's share of them;
- ``b`` tier_shift: the tier's share of the model's tokens (real-time vs batch);
- ``c`` cache: the kind's share of the prompt (uncached input, cache reads, cache writes; 1 for
  output);
- ``L`` price: the list rate of the price table, token-weighted over the week's days (so an
  effective-dated change mid-week counts for the days it applied);
- ``M`` other: what the list rate leaves out (data residency, prompt-size tiers), the
  effective rate divided by the list rate.

Each factor has a value last week and this week; the cell's change is split among them by
Shapley values: the average, over every order of switching the factors from last week's value
to this week's, of what switching each one changes. Shapley values always add up to the whole
change (whatever the order), and a factor that did not change gets nothing. Where a share is
undefined in one week (a model a workspace did not use), it takes the other week's value, so
the work that appeared is counted by the share that appeared (``a`` for a model, ``b`` for a
tier) and nothing else.

What no factor explains goes to ``other`` in full: cells of a workspace with no usage in one of
the weeks (it has no mix to move from or to), web search (priced per search, not per token),
cost that cannot be split by kind, and the modifier ``M``. A model new to the organisation (or
gone from it) is a ``model_mix`` change like any other: the price table says what it cost last
week, so its share moving is what changed; only a model without a price in the table has no
such rate, and then its effective rate of the other week stands in (its price is unknowable).
Finally the drivers are rounded to the cent so that they add up exactly to the rounded change
(largest remainders).

All arithmetic is ``Decimal`` at 50 significant digits; the docs (``docs/report.md``) hold a
worked example.
"""

from __future__ import annotations

import decimal
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from monitor.money import ZERO
from monitor.pricing import PriceBook, Usage
from monitor.summary import TOKEN_KINDS, Cell, CellKey

CAUSES = ("volume", "model_mix", "tier_shift", "cache", "price", "other")
PROMPT_KINDS = ("input", "cache_read", "cache_write_5m", "cache_write_1h")
OUTPUT_KINDS = ("output",)
# Relative weights used only to split the cost of a model without a price by token kind (its
# real rates are unknown): the usual multipliers of the input price.
_FALLBACK_WEIGHTS = {
    "input": Decimal(1),
    "output": Decimal(5),
    "cache_read": Decimal("0.1"),
    "cache_write_5m": Decimal("1.25"),
    "cache_write_1h": Decimal(2),
}
_MILLION = Decimal(1_000_000)
CENT = Decimal("0.01")
_CONTEXT = decimal.Context(prec=50)

KindKey = tuple[str, str, str, str]  # (workspace, model, tier, kind)


def group_of(kind: str) -> str:
    """Return the token group of a kind: ``prompt`` or ``output``."""
    return "output" if kind == "output" else "prompt"


@dataclass
class KindCell:
    """One (workspace, model, tier, kind) over a week: tokens, cost and list cost."""

    tokens: int = 0
    cost: Decimal = ZERO
    list_cost: Decimal = ZERO  # sum over days of tokens x that day's list rate
    priced: bool = True  # False: the model has no list price (list cost = cost)


@dataclass
class WeekCells:
    """A week's spend split by (workspace, model, tier, token kind), ready to compare."""

    cells: dict[KindKey, KindCell] = field(default_factory=dict)
    # Web search cost per (workspace, model, tier): priced per search, not per token.
    web_usd: dict[tuple[str, str, str], Decimal] = field(default_factory=dict)
    # Cost with no tokens to split it over, per (workspace, model, tier).
    unsplit_usd: dict[tuple[str, str, str], Decimal] = field(default_factory=dict)
    days: tuple[datetime, ...] = ()

    @property
    def total_usd(self) -> Decimal:
        """Return the week's priced cost (every cell, web search and unsplit cost)."""
        return (
            sum((c.cost for c in self.cells.values()), ZERO)
            + sum(self.web_usd.values(), ZERO)
            + sum(self.unsplit_usd.values(), ZERO)
        )


class Rates:
    """List rates per token from a price book, by (model, tier, kind, UTC day), memoised."""

    def __init__(self, book: PriceBook) -> None:
        self.book = book
        self._memo: dict[tuple[str, str, datetime], dict[str, Decimal] | None] = {}

    def per_token(self, model: str, tier: str, day: datetime) -> dict[str, Decimal] | None:
        """Return the list USD per token of every kind (and per web search), or None."""
        key = (model, tier, day)
        if key not in self._memo:
            self._memo[key] = self._load(model, tier, day)
        return self._memo[key]

    def _load(self, model: str, tier: str, day: datetime) -> dict[str, Decimal] | None:
        row = self.book.price_row(model, day)
        if row is None:
            return None
        # The batch discount comes from the book itself (a probe), not a constant here.
        probe = self.book.cost_of(model, Usage(input_tokens=1_000_000, web_searches=1), day)
        factor = Decimal(1)
        if tier == "batch":
            line = probe.breakdown["input"]
            factor = line.batch_usd / line.standard_usd if line.standard_usd else Decimal(1)
        rates = {k: row.rates.of(k) * factor / _MILLION for k in TOKEN_KINDS}
        rates["web_search"] = probe.breakdown["web_search"].standard_usd * factor
        return rates

    def week_rate(self, model: str, tier: str, kind: str, days: Sequence[datetime]) -> Decimal:
        """Return the list rate averaged over ``days`` (for a cell with no tokens that week)."""
        found = [r[kind] for d in days if (r := self.per_token(model, tier, d)) is not None]
        if not found:
            return ZERO
        with decimal.localcontext(_CONTEXT):
            return sum(found, ZERO) / len(found)


def week_cells(daily: Iterable[tuple[datetime, Mapping[CellKey, Cell]]], rates: Rates) -> WeekCells:
    """Split a week's daily spend cells by token kind, with each day's list rates.

    ``daily`` holds ``(day, cells)`` per day, ``day`` being a time within the day whose prices
    apply (its start). A cell's cost (web search set aside, priced per search) is split over
    its token kinds in proportion to tokens x list rate, which is exact when a modifier applies
    to the whole request (data residency, a prompt-size tier); the last kind takes the
    remainder so the parts add up to the cost exactly.
    """
    week = WeekCells()
    days: list[datetime] = []
    with decimal.localcontext(_CONTEXT):
        for day, cells in daily:
            days.append(day)
            for (tier, model, ws), cell in cells.items():
                if cell.cost_usd is None:
                    continue  # a model without a price: no cost to explain (not $0)
                base = (ws, model, tier)
                per_token = rates.per_token(model, tier, day)
                web = ZERO
                if per_token is not None and cell.web_searches:
                    web = cell.web_searches * per_token["web_search"]
                    week.web_usd[base] = week.web_usd.get(base, ZERO) + web
                token_cost = cell.cost_usd - web
                kinds = [k for k in TOKEN_KINDS if cell.tokens[k]]
                weights = {
                    k: cell.tokens[k]
                    * (per_token[k] if per_token is not None else _FALLBACK_WEIGHTS[k])
                    for k in kinds
                }
                total_weight = sum(weights.values(), ZERO)
                if not kinds or total_weight == 0:
                    if token_cost:
                        week.unsplit_usd[base] = week.unsplit_usd.get(base, ZERO) + token_cost
                    continue
                left = token_cost
                for i, k in enumerate(kinds):
                    part = left if i == len(kinds) - 1 else token_cost * weights[k] / total_weight
                    left -= part
                    kc = week.cells.setdefault((ws, model, tier, k), KindCell())
                    kc.tokens += cell.tokens[k]
                    kc.cost += part
                    if per_token is not None:
                        kc.list_cost += cell.tokens[k] * per_token[k]
                    else:
                        kc.list_cost += part  # no list price: the effective rate stands in
                        kc.priced = False
    week.days = tuple(days)
    return week


@dataclass(frozen=True)
class Decomposition:
    """The drivers of a change: exact amounts and amounts to the cent that add up."""

    change_usd: Decimal  # exact: this week's cells minus last week's
    exact: dict[str, Decimal]  # cause -> exact amount (sums to change_usd)
    cents: dict[str, Decimal]  # cause -> amount to the cent (sums to the rounded change)
    other_detail: dict[str, Decimal]  # what ``other`` is made of (exact)


# Shapley weights |S|! (n - |S| - 1)! / n! for n players, by coalition size.
def _weights(n: int) -> list[Decimal]:
    with decimal.localcontext(_CONTEXT):
        total = Decimal(math.factorial(n))
        return [Decimal(math.factorial(s) * math.factorial(n - s - 1)) / total for s in range(n)]


_WEIGHTS = {n: _weights(n) for n in range(1, len(CAUSES) + 1)}


def shapley(before: Sequence[Decimal], after: Sequence[Decimal]) -> list[Decimal]:
    """Split ``prod(after) - prod(before)`` among the factors by Shapley values.

    Factor ``i`` goes from ``before[i]`` to ``after[i]``. The value of a coalition ``S`` is the
    product with the factors in ``S`` at their new values and the others at their old ones;
    each factor gets the weighted average of what it adds to every coalition without it. A
    factor that did not change gets exactly 0 and is left out of the game (which changes no
    other factor's value), so the work is 2^k products for k changed factors.
    """
    n = len(before)
    out = [ZERO] * n
    moved = [i for i in range(n) if before[i] != after[i]]
    if not moved:
        return out
    with decimal.localcontext(_CONTEXT):
        fixed = Decimal(1)
        for i in range(n):
            if before[i] == after[i]:
                fixed *= before[i]
        k = len(moved)
        weights = _WEIGHTS[k]
        # value[mask]: the product with the moved factors in ``mask`` at their new values.
        value: list[Decimal] = [fixed] * (1 << k)
        for mask in range(1 << k):
            v = fixed
            for bit, i in enumerate(moved):
                v *= after[i] if mask >> bit & 1 else before[i]
            value[mask] = v
        for bit, i in enumerate(moved):
            flag = 1 << bit
            acc = ZERO
            for mask in range(1 << k):
                if not mask & flag:
                    acc += weights[bin(mask).count("1")] * (value[mask | flag] - value[mask])
            out[i] = acc
    return out


def _sums(week: WeekCells) -> dict[tuple[str, ...], int]:
    """Return token sums per (ws, g), (ws, g, m) and (ws, g, m, t): V, A and B."""
    sums: dict[tuple[str, ...], int] = defaultdict(int)
    for (ws, model, tier, kind), cell in week.cells.items():
        g = group_of(kind)
        sums[("V", ws, g)] += cell.tokens
        sums[("A", ws, g, model)] += cell.tokens
        sums[("B", ws, g, model, tier)] += cell.tokens
    return sums


def decompose(
    prev: WeekCells, cur: WeekCells, rates: Rates, *, change_usd: Decimal | None = None
) -> Decomposition:
    """Split the change from ``prev`` to ``cur`` into the drivers of ``CAUSES``.

    ``change_usd`` is the change the report states (this week's total minus last week's, from
    the summary); whatever the cells do not cover of it (a source the cells did not read) is
    put in ``other``, so the drivers always add up to it.
    """
    exact = dict.fromkeys(CAUSES, ZERO)
    detail: dict[str, Decimal] = defaultdict(lambda: ZERO)
    weeks = (prev, cur)
    sums = [_sums(w) for w in weeks]
    with decimal.localcontext(_CONTEXT):
        for key in sorted(set(prev.cells) | set(cur.cells)):
            ws, _model, _tier, kind = key
            cells = [w.cells.get(key, KindCell()) for w in weeks]
            if not cells[0].tokens and not cells[1].tokens and cells[0].cost == cells[1].cost:
                continue
            delta = cells[1].cost - cells[0].cost
            g = group_of(kind)
            volumes = [s[("V", ws, g)] for s in sums]
            if not all(volumes):
                detail[f"workspace {ws or '(none)'} had no usage one of the weeks"] += delta
                continue
            factors = [
                _factors(i, key, cells, sums, weeks, rates) for i in range(2)
            ]  # last week, this week
            before, after = _borrow(factors)
            parts = shapley(before, after)
            # Products of rounded ratios miss the exact change by ~1e-40: the largest part
            # absorbs it, so every cell adds up exactly.
            residual = delta - sum(parts, ZERO)
            big = max(range(len(parts)), key=lambda i: abs(parts[i]))
            parts[big] += residual
            for cause, amount in zip(CAUSES, parts, strict=True):
                if cause == "other":
                    detail["data residency and prompt-size tiers"] += amount
                exact[cause] += amount
        for name, label in (("web_usd", "web search"), ("unsplit_usd", "cost with no tokens")):
            was = sum(getattr(prev, name).values(), ZERO)
            now = sum(getattr(cur, name).values(), ZERO)
            if now != was:
                detail[label] += now - was
        for label, amount in detail.items():
            if label != "data residency and prompt-size tiers":
                exact["other"] += amount
        cells_change = cur.total_usd - prev.total_usd
        total = cells_change if change_usd is None else change_usd
        gap = total - cells_change
        # The stated change is of totals rounded to the cent: a gap under a cent is that
        # rounding; a bigger one is spend the cells did not read (a mixed-source window).
        if abs(gap) >= CENT:
            detail["spend the cells do not cover"] += gap
        exact["other"] += gap
    return Decomposition(
        change_usd=total,
        exact=exact,
        cents=allocate_cents(exact, total),
        other_detail={k: v for k, v in detail.items() if abs(v) >= CENT / 2},
    )


def _factors(
    i: int,
    key: KindKey,
    cells: Sequence[KindCell],
    sums: Sequence[dict[tuple[str, ...], int]],
    weeks: Sequence[WeekCells],
    rates: Rates,
) -> list[Decimal | None]:
    """Return the six factors of one cell in week ``i`` (None: undefined, to borrow)."""
    ws, model, tier, kind = key
    g = group_of(kind)
    s = sums[i]
    cell = cells[i]
    volume = Decimal(s[("V", ws, g)])
    a_tokens = s.get(("A", ws, g, model), 0)
    b_tokens = s.get(("B", ws, g, model, tier), 0)
    mix = Decimal(a_tokens) / volume
    tier_share = Decimal(b_tokens) / a_tokens if a_tokens else None
    kind_share = Decimal(cell.tokens) / b_tokens if b_tokens else None
    if cell.tokens:
        rate: Decimal | None = cell.list_cost / cell.tokens
        if not cell.priced:
            rate = cell.cost / cell.tokens
    else:
        other = cells[1 - i]
        # No tokens this week: the list rate of the week's days; a model without a price
        # takes the other week's effective rate (its price change is then unknowable).
        rate = (
            rates.week_rate(model, tier, kind, weeks[i].days)
            if other.priced
            else (other.cost / other.tokens if other.tokens else None)
        )
        if not rate:
            rate = None
    modifier = cell.cost / (cell.tokens * rate) if cell.tokens and rate else None
    return [volume, mix, tier_share, kind_share, rate, modifier]


def _borrow(
    factors: Sequence[Sequence[Decimal | None]],
) -> tuple[list[Decimal], list[Decimal]]:
    """Fill an undefined factor with the other week's value (it then does not move)."""
    before: list[Decimal] = []
    after: list[Decimal] = []
    for a, b in zip(factors[0], factors[1], strict=True):
        a = b if a is None else a
        b = a if b is None else b
        before.append(Decimal(1) if a is None else a)
        after.append(Decimal(1) if b is None else b)
    return before, after


def allocate_cents(exact: Mapping[str, Decimal], total: Decimal) -> dict[str, Decimal]:
    """Round each amount to the cent so that they add up to ``total`` rounded to the cent.

    Largest remainders: every amount is rounded down to the cent, then the cents still missing
    go one each to the amounts that lost the most in rounding (ties in ``exact``'s order).
    """
    cent = CENT
    target = total.quantize(cent, rounding=decimal.ROUND_HALF_UP)
    floors = {k: v.quantize(cent, rounding=decimal.ROUND_FLOOR) for k, v in exact.items()}
    missing = int((target - sum(floors.values(), ZERO)) / cent)
    order = sorted(exact, key=lambda k: -(exact[k] - floors[k]))
    out = dict(floors)
    step = cent if missing >= 0 else -cent
    if missing < 0:
        order = list(reversed(order))
    for k in order[: abs(missing)]:
        out[k] += step
    # More cents missing than amounts (only when exact does not add up to total): the first
    # amount takes the rest, so the sum holds whatever the input.
    rest = target - sum(out.values(), ZERO)
    if rest and out:
        first = next(iter(out))
        out[first] += rest
    return out
