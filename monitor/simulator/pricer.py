"""Pricing of the simulated usage, for the ground truth and the billed cost reports.

:class:`Pricer` prices each request with ``monitor.pricing`` (the product's own engine), so
the truth agrees with the product by construction and cannot catch a wrong price: prices are
checked only by the hand-computed figures in ``tests/test_pricing.py``. A model the engine
does not know is billed at :data:`FALLBACK_PRICES` (the provider knows its price) while the
truth keeps it unpriced.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from monitor.simulator.formats import TOKEN_TYPES

# What the provider bills for a model our pricing engine does not know (USD per MTok, standard
# tier; batch is half). Only the cost reports use it: the truth keeps such usage unpriced.
FALLBACK_PRICES: dict[str, Decimal] = {
    "uncached_input_tokens": Decimal("3"),
    "cache_creation.ephemeral_5m_input_tokens": Decimal("3.75"),
    "cache_creation.ephemeral_1h_input_tokens": Decimal("6"),
    "cache_read_input_tokens": Decimal("0.30"),
    "output_tokens": Decimal("15"),
}
WEB_SEARCH_FALLBACK = Decimal("0.01")  # USD per search


_ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class Price:
    """What one request (or a sum of them) costs, split by token type and web search.

    ``priced`` is False for a model the pricing engine does not know: then ``standard`` and
    ``batch`` are zero and ``billed_*`` use :data:`FALLBACK_PRICES` (what the provider bills).
    """

    priced: bool
    standard: Decimal
    batch: Decimal
    billed_standard: tuple[Decimal, ...]  # 5 token types + web search, standard rate
    billed_batch: tuple[Decimal, ...]


class Pricer:
    """Price single requests exactly as ``monitor.pricing.cost_of`` does, but fast.

    The engine prices each category as ``quantity * rate / 1M`` (searches: ``/ 1K``), with
    the rate fixed by the price row, the tier and the geo; batch is a fixed factor of standard.
    So one ``cost_of`` call per (price row, tier, geo) yields a rate card that prices every
    other request of that kind with the same Decimal arithmetic (tests check equality).
    """

    def __init__(self) -> None:
        self._cards: dict[tuple[Any, ...], tuple[tuple[Decimal, ...], Decimal]] = {}
        self._rows: dict[tuple[str, date], Any] = {}  # (model, UTC day) -> price row
        self._lock = threading.Lock()

    def price(
        self,
        model: str,
        tokens: tuple[int, int, int, int, int],
        web_searches: int,
        inference_geo: str | None,
        at: datetime,
    ) -> Price:
        """Return the price of ONE request (tiers are decided per request)."""
        row_key = (model, at.date())
        row = self._rows.get(row_key, _UNSET)
        if row is _UNSET:
            from monitor.pricing import default_book

            row = self._rows[row_key] = default_book().price_row(model, at)
        if row is None:
            return _fallback_price(tokens, web_searches)
        prompt = tokens[0] + tokens[1] + tokens[2] + tokens[3]
        tiered = row.tier is not None and prompt > row.tier.threshold
        card_key = (model, row.price_id, tiered, inference_geo)
        card = self._cards.get(card_key)
        if card is None:
            card = self._card(model, tokens, web_searches, inference_geo, at)
            with self._lock:
                self._cards[card_key] = card
        rates, half = card
        std = [tokens[i] * rates[i] / _MILLION for i in range(5)]
        std.append(web_searches * rates[5] / _THOUSAND)
        batch = [v * half for v in std]
        return Price(True, sum(std, _ZERO), sum(batch, _ZERO), tuple(std), tuple(batch))

    @staticmethod
    def _card(
        model: str,
        tokens: tuple[int, int, int, int, int],
        web_searches: int,
        inference_geo: str | None,
        at: datetime,
    ) -> tuple[tuple[Decimal, ...], Decimal]:
        from monitor.pricing import Usage, cost_of

        usage = Usage(
            input_tokens=tokens[0],
            cache_write_5m_tokens=tokens[1],
            cache_write_1h_tokens=tokens[2],
            cache_read_tokens=tokens[3],
            output_tokens=tokens[4],
            web_searches=web_searches,
            requests=1,
            inference_geo=inference_geo,
        )
        cost = cost_of(model, usage, at)
        rates = tuple(cost.breakdown[k].rate_usd for k in _BREAKDOWN_KEYS)
        probe = cost_of(model, Usage(web_searches=1_000, inference_geo=inference_geo), at)
        line = probe.breakdown["web_search"]
        half = line.batch_usd / line.standard_usd if line.standard_usd else Decimal("0.5")
        return rates, half


_UNSET: Any = object()
_MILLION = Decimal(1_000_000)
_THOUSAND = Decimal(1_000)
# The pricing engine's breakdown keys, in TOKEN_TYPES order, then web search.
_BREAKDOWN_KEYS = (
    "input",
    "cache_write_5m",
    "cache_write_1h",
    "cache_read",
    "output",
    "web_search",
)


def _fallback_price(tokens: tuple[int, int, int, int, int], web_searches: int) -> Price:
    mtok = Decimal(1_000_000)
    per_type = [
        FALLBACK_PRICES[name] * count / mtok
        for name, count in zip(TOKEN_TYPES, tokens, strict=True)
    ]
    std = (*per_type, WEB_SEARCH_FALLBACK * web_searches)
    batch = (*(v / 2 for v in per_type), WEB_SEARCH_FALLBACK * web_searches / 2)
    return Price(False, _ZERO, _ZERO, std, batch)
