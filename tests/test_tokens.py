"""The token value type: one frozen ``Tokens`` shared by pricing, the advisor and the sources."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

from monitor.models import Batch, BatchUsage, UsageBucket
from monitor.pricing import Usage, default_book
from monitor.tokens import TOKEN_FIELDS, Tokens

AT = datetime(2026, 11, 20, tzinfo=UTC)


def test_tokens_add_field_by_field_and_name_the_prompt() -> None:
    a = Tokens(1, 2, 30, 400, 5_000, 6)
    b = Tokens(input_tokens=10, output_tokens=20, cache_write_1h_tokens=7, web_searches=1)
    total = a + b
    assert total == Tokens(11, 22, 30, 400, 5_007, 7)
    # The prompt a request sent: uncached input + cache read + cache writes of both TTLs.
    assert total.prompt == 11 + 30 + 400 + 5_007
    assert total.cache_write_tokens == 5_407
    assert sum((a, b, a), Tokens.zero()) == Tokens(12, 24, 60, 800, 10_007, 13)
    assert Tokens.zero() + a == a and Tokens.zero() == Tokens()
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.input_tokens = 0  # type: ignore[misc]


def test_usage_is_tokens_with_how_they_were_requested() -> None:
    # The keywords every caller uses are unchanged, and Usage.of builds the same value.
    usage = Usage(
        input_tokens=150_000,
        output_tokens=2_000,
        cache_read_tokens=40_000,
        cache_write_5m_tokens=1_000,
        cache_write_1h_tokens=500,
        web_searches=3,
        requests=2,
        inference_geo="us",
    )
    tokens = Tokens(150_000, 2_000, 40_000, 1_000, 500, 3)
    assert Usage.of(tokens, requests=2, inference_geo="us") == usage
    assert usage.prompt == usage.prompt_tokens == tokens.prompt
    kinds = ("input", "cache_write_1h", "web_search")
    assert [usage.quantity(k) for k in kinds] == [150_000, 500, 3]
    # Two usages add up to their tokens only: requests and geo are not summable facts.
    assert usage + usage == tokens + tokens and type(usage + usage) is Tokens
    book = default_book()
    for model in ("claude-sonnet-4-6", "claude-haiku-5-5"):
        assert book.cost_of(model, Usage.of(tokens, requests=2, inference_geo="us"), AT) == (
            book.cost_of(model, usage, AT)
        )


def test_token_fields_are_the_store_columns() -> None:
    # A stored row's counts map onto Tokens by name (batch_usage, batch, usage_bucket).
    assert tuple(f.name for f in dataclasses.fields(Tokens)) == TOKEN_FIELDS
    for table in (BatchUsage, Batch, UsageBucket):
        columns = set(table.__table__.columns.keys())  # type: ignore[attr-defined]
        assert set(TOKEN_FIELDS) <= columns, table
