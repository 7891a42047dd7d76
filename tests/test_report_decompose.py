"""The drivers of a change: Shapley values per cell, exact, and rounded to add up to the cent.

These tests build spend cells by hand (priced with the real pricing engine) so each factor can
be moved alone, together with others, or out of existence; the scenario tests check the same
method end to end.
"""

from __future__ import annotations

import decimal
import itertools
import math
import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from monitor.pricing import PriceBook, Usage
from monitor.report.decompose import (
    CAUSES,
    Rates,
    WeekCells,
    allocate_cents,
    decompose,
    shapley,
    week_cells,
)
from monitor.summary import TOKEN_KINDS, Cell, CellKey

D = Decimal
W1 = datetime(2026, 10, 1, tzinfo=UTC)
W2 = datetime(2026, 10, 8, tzinfo=UTC)
BOOK = PriceBook.load()
# The worked example of docs/report.md: Sonnet 4.6 input from $3 to $2.70 on 2026-10-07.
CUT = PriceBook.load(
    [
        {
            "model": "claude-sonnet-4-6",
            "effective_from": "2026-10-07",
            "input": "2.70",
            "output": "15",
        }
    ]
)


def cell(
    book: PriceBook, model: str, tier: str, day: datetime, *, searches: int = 0, **tokens: int
) -> Cell:
    """Return a spend cell of ``tokens`` (by kind), priced by ``book`` at ``day``."""
    usage = Usage(**{f"{k}_tokens": v for k, v in tokens.items()}, web_searches=searches)
    cost = book.cost_of(model, usage, day)
    assert cost.standard_usd is not None and cost.batch_usd is not None
    c = Cell()
    c.add(
        1,
        [tokens.get(k, 0) for k in TOKEN_KINDS],
        searches,
        0,
        cost.batch_usd if tier == "batch" else cost.standard_usd,
        cost.standard_usd,
    )
    return c


def week(
    book: PriceBook, day: datetime, cells: dict[tuple[str, str, str], dict[str, int]]
) -> WeekCells:
    """Return one day's cells as a week: ``{(tier, model, workspace): tokens}``."""
    priced: dict[CellKey, Cell] = {
        key: cell(book, key[1], key[0], day, **tokens) for key, tokens in cells.items()
    }
    return week_cells([(day, priced)], Rates(book))


def drivers(prev: WeekCells, cur: WeekCells, book: PriceBook = BOOK) -> dict[str, Decimal]:
    result = decompose(prev, cur, Rates(book))
    assert result.change_usd == cur.total_usd - prev.total_usd
    with decimal.localcontext(prec=80):
        # Exact up to the 50 digits the products carry, and exact to the cent once rounded.
        assert abs(sum(result.exact.values()) - result.change_usd) < D("1e-40")
    assert sum(result.cents.values()) == result.change_usd.quantize(D("0.01"))
    return result.cents


def test_worked_example_volume_and_price_share_their_interaction() -> None:
    prev = week(CUT, W1, {("standard", "claude-sonnet-4-6", "ws"): {"input": 1_000_000}})
    cur = week(CUT, W2, {("standard", "claude-sonnet-4-6", "ws"): {"input": 1_200_000}})
    assert (prev.total_usd, cur.total_usd) == (D(3), D("3.24"))
    got = drivers(prev, cur, CUT)
    # Volume alone: +0.60 at the old price or +0.54 at the new one; Shapley takes the mean.
    # Price alone: -0.30 on the old volume or -0.36 on the new one: -0.33.
    assert got == {**dict.fromkeys(CAUSES, D("0.00")), "volume": D("0.57"), "price": D("-0.33")}


def test_shapley_is_the_average_over_every_order() -> None:
    rng = random.Random(7)
    decimal.getcontext().prec = 80  # the sums below must not round where shapley() did not
    try:
        _check_orders(rng)
    finally:
        decimal.getcontext().prec = 28


def _check_orders(rng: random.Random) -> None:
    for _ in range(20):
        n = rng.randint(1, 6)
        before = [D(rng.randint(1, 10_000)) / 100 for _ in range(n)]
        after = [b if rng.random() < 0.3 else D(rng.randint(1, 10_000)) / 100 for b in before]
        brute = [D(0)] * n
        orders = list(itertools.permutations(range(n)))
        for order in orders:
            state = list(before)
            for i in order:
                was = math.prod(state, start=D(1))
                state[i] = after[i]
                brute[i] += math.prod(state, start=D(1)) - was
        values = shapley(before, after)
        total = math.prod(after, start=D(1)) - math.prod(before, start=D(1))
        assert abs(sum(values) - total) < D("1e-30")
        for i in range(n):
            assert abs(values[i] - brute[i] / len(orders)) < D("1e-30")
            if before[i] == after[i]:
                assert values[i] == 0  # a factor that did not move gets nothing


KEY = ("standard", "claude-sonnet-4-6", "ws")
TOKENS = {"input": 2_000_000, "cache_read": 6_000_000, "output": 500_000}


def test_only_the_moved_factor_carries_the_change() -> None:
    base = week(BOOK, W1, {KEY: TOKENS})
    # More of everything: volume.
    more = week(BOOK, W2, {KEY: {k: v * 2 for k, v in TOKENS.items()}})
    assert drivers(base, more)["volume"] == (more.total_usd - base.total_usd).quantize(D("0.01"))
    # The same work on batch: tier shift (half the price).
    batch = week(BOOK, W2, {("batch", *KEY[1:]): TOKENS})
    got = drivers(base, batch)
    assert got["tier_shift"] == (batch.total_usd - base.total_usd).quantize(D("0.01")) < 0
    assert got["volume"] == got["model_mix"] == got["cache"] == got["price"] == got["other"] == 0
    # Cache reads turned into uncached input: cache.
    missed = {"input": 8_000_000, "cache_read": 0, "output": 500_000}
    got = drivers(base, week(BOOK, W2, {KEY: missed}))
    assert got["cache"] > 0 and got["volume"] == got["tier_shift"] == got["price"] == 0


def test_work_moved_between_models_is_model_mix_even_to_a_new_one() -> None:
    opus = ("standard", "claude-opus-4-7", "ws")
    prev = week(BOOK, W1, {KEY: TOKENS})
    cur = week(BOOK, W2, {opus: TOKENS})  # Sonnet 4.6 gone, Opus 4.7 new to the organisation
    got = drivers(prev, cur)
    assert got["model_mix"] == (cur.total_usd - prev.total_usd).quantize(D("0.01")) > 0
    assert got["other"] == got["volume"] == got["price"] == 0


def test_new_workspaces_and_web_search_are_other() -> None:
    prev = week(BOOK, W1, {KEY: TOKENS})
    # A workspace that had no usage last week has no mix to move from.
    cur = week(BOOK, W2, {KEY: TOKENS, ("standard", "claude-sonnet-4-6", "new-ws"): TOKENS})
    result = decompose(prev, cur, Rates(BOOK))
    assert result.cents["other"] == (cur.total_usd - prev.total_usd).quantize(D("0.01"))
    assert "workspace new-ws had no usage one of the weeks" in result.other_detail
    # Web searches are priced per search: their change is other.
    searched = {KEY: cell(BOOK, KEY[1], KEY[0], W2, searches=100, **TOKENS)}
    cur = week_cells([(W2, searched)], Rates(BOOK))
    result = decompose(prev, cur, Rates(BOOK))
    assert result.cents == {**dict.fromkeys(CAUSES, D("0.00")), "other": D("1.00")}
    assert result.other_detail == {"web search": D(1)}


def test_a_price_change_mid_week_counts_for_the_days_it_applied() -> None:
    days = [W2 + timedelta(days=i) for i in range(-3, 4)]  # 5 to 11 October: the cut on the 7th
    daily = [(d, {KEY: cell(CUT, KEY[1], KEY[0], d, input=1_000_000)}) for d in days]
    cur = week_cells(daily, Rates(CUT))
    prev_days = [W1 - timedelta(days=i) for i in range(7)]
    prev = week_cells(
        [(d, {KEY: cell(CUT, KEY[1], KEY[0], d, input=1_000_000)}) for d in prev_days], Rates(CUT)
    )
    got = drivers(prev, cur, CUT)
    assert got["price"] == D("-1.50")  # 5 days of 1M tokens, $0.30 cheaper each
    assert got["volume"] == got["other"] == 0


def test_drivers_add_up_to_the_cent_whatever_the_cells() -> None:
    rng = random.Random(11)
    models = ("claude-sonnet-4-6", "claude-opus-4-7", "claude-haiku-4-5", "claude-sonnet-5-5")
    for _ in range(10):
        weeks = []
        for day in (W1, W2):
            cells = {}
            for ws in ("a", "b", "c"):
                for model in rng.sample(models, 3):
                    for tier in ("standard", "batch"):
                        if rng.random() < 0.8:
                            cells[(tier, model, ws)] = {
                                "input": rng.randint(0, 5_000_000),
                                "cache_read": rng.randint(0, 9_000_000),
                                "cache_write_5m": rng.randint(0, 300_000),
                                "output": rng.randint(1, 900_000),
                            }
            weeks.append(week(BOOK, day, cells))
        got = drivers(*weeks)  # asserts the exact and rounded sums
        assert set(got) == set(CAUSES)


@pytest.mark.parametrize(
    ("exact", "total", "expected"),
    [
        ({"a": "0.333", "b": "0.333", "c": "0.334"}, "1", {"a": "0.33", "b": "0.33", "c": "0.34"}),
        ({"a": "-0.335", "b": "0.005", "c": "-0.67"}, "-1", {"a": "-0.33", "b": "0", "c": "-0.67"}),
        ({"a": "10.004", "b": "-5.004"}, "5", {"a": "10.00", "b": "-5.00"}),
        ({"a": "0.001", "b": "0.001", "c": "0.001"}, "0.003", {"a": "0", "b": "0", "c": "0"}),
    ],
)
def test_cents_add_up_exactly(exact: dict[str, str], total: str, expected: dict[str, str]) -> None:
    got = allocate_cents({k: D(v) for k, v in exact.items()}, D(total))
    assert got == {k: D(v) for k, v in expected.items()}
    assert sum(got.values()) == D(total).quantize(D("0.01"))
