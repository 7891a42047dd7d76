"""Token counts as one value: what a call, a bucket, a batch or a tally of them consumed.

Field names follow the store's columns (and ``pricing.Usage``, which extends this type with how
the tokens were requested). ``input_tokens`` is *uncached* input, as in the API's ``usage``
object: cache reads and writes are counted apart, so the prompt a request sent is
``input_tokens + cache_read_tokens + cache_write_5m_tokens + cache_write_1h_tokens``
(``prompt``). Web searches are not tokens but are counted alongside, because they are priced
with them.

Tallies that add a count per line in a hot loop (the call-log reader, the batch results reader)
keep plain ints and hand out a ``Tokens`` when they are done: building a frozen value per line
would cost more than the rest of the loop.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TOKEN_FIELDS", "Tokens"]

# The count fields, in declaration order (also the order of the store's token columns).
TOKEN_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "web_searches",
)


@dataclass(frozen=True, slots=True)
class Tokens:
    """Token counts by kind (and web searches), summed over any number of requests."""

    input_tokens: int = 0  # uncached input
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_5m_tokens: int = 0
    cache_write_1h_tokens: int = 0
    web_searches: int = 0

    @staticmethod
    def zero() -> Tokens:
        """Return no tokens at all (the start of a sum)."""
        return _ZERO

    def __add__(self, other: Tokens) -> Tokens:
        """Return the counts of both, field by field (always a plain ``Tokens``)."""
        if not isinstance(other, Tokens):
            return NotImplemented
        return Tokens(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cache_read_tokens + other.cache_read_tokens,
            self.cache_write_5m_tokens + other.cache_write_5m_tokens,
            self.cache_write_1h_tokens + other.cache_write_1h_tokens,
            self.web_searches + other.web_searches,
        )

    @property
    def cache_write_tokens(self) -> int:
        """Return the cache writes of both TTLs (the API's ``cache_creation_input_tokens``)."""
        return self.cache_write_5m_tokens + self.cache_write_1h_tokens

    @property
    def prompt(self) -> int:
        """Return the prompt tokens: uncached input + cache read + cache writes."""
        return (
            self.input_tokens
            + self.cache_read_tokens
            + self.cache_write_5m_tokens
            + self.cache_write_1h_tokens
        )

    def quantity(self, key: str) -> int:
        """Return the count for a price breakdown key (tokens, or searches for ``web_search``)."""
        if key == "web_search":
            return self.web_searches
        return int(getattr(self, f"{key}_tokens"))


_ZERO = Tokens()
