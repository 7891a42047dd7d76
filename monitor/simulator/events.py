"""Usage events: the unit the usage and cost reports aggregate and the truth sums."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

_ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class UsageEvent:
    """Usage reported at one instant for one combination of report dimensions.

    A real-time call is one event; an ended batch is one event per (model, inference geo,
    context window) at its ``ended_at``. ``amounts`` are what the provider bills in USD, per
    token type then web search (``FALLBACK_PRICES`` for unknown models; all zero for the
    Priority Tier, which the cost reports never include). ``cost_usd`` is the pricing
    engine's cost at the event's own tier (None when unpriced).
    """

    at: datetime
    product: str  # messages_api | message_batches_api
    service_tier: str  # standard | priority | batch
    model: str
    workspace_id: str
    api_key_id: str
    context_window: str
    inference_geo: str | None
    tokens: tuple[int, int, int, int, int]  # TOKEN_TYPES order
    web_searches: int
    requests: int
    amounts: tuple[Decimal, ...]
    cost_usd: Decimal | None
    standard_cost_usd: Decimal | None
    unpriced_requests: int
    batch_id: str | None = None
    workload: str | None = None

    @property
    def total_tokens(self) -> int:
        """Return the sum of every token type."""
        return sum(self.tokens)

    @property
    def billed_usd(self) -> Decimal:
        """Return what the cost reports bill for this event (USD)."""
        return sum(self.amounts, _ZERO)
