"""Tests for the pricing engine and the ``price`` command.

Expected amounts are worked out by hand in each test (tokens x USD/MTok / 1,000,000), never by
calling the engine's own formulas, so a wrong rule in the engine cannot also make its test pass.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
import time_machine
from typer.testing import CliRunner

from monitor import cli
from monitor.config import Settings
from monitor.pricing import (
    BREAKDOWN_KEYS,
    Cost,
    PriceBook,
    PricingError,
    Usage,
    cost_of,
    default_book,
    validate_price_entries,
)

D = Decimal
AT = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
M = 1_000_000

# The reference's price table (section 4.2), typed in by hand: input, 5m write, 1h write,
# cache read, output, batch input, batch output. USD per million tokens. Sonnet 5.5's cache
# read is the value from 2026-10-07 (AT is later).
TABLE: dict[str, tuple[str, str, str, str, str, str, str]] = {
    "claude-fable-5-2": ("8", "10", "16", "0.20", "40", "4", "20"),
    "claude-mythos-5-2": ("8", "10", "16", "0.20", "40", "4", "20"),
    "claude-fable-5-1": ("10", "12.50", "20", "0.25", "50", "5", "25"),
    "claude-mythos-5-1": ("10", "12.50", "20", "0.25", "50", "5", "25"),
    "claude-fable-5": ("10", "12.50", "20", "1.00", "50", "5", "25"),
    "claude-mythos-5": ("10", "12.50", "20", "1.00", "50", "5", "25"),
    "claude-opus-5-5": ("4", "5", "8", "0.20", "20", "2", "10"),
    "claude-opus-5": ("5", "6.25", "10", "0.50", "25", "2.50", "12.50"),
    "claude-opus-4-8": ("5", "6.25", "10", "0.50", "25", "2.50", "12.50"),
    "claude-opus-4-7": ("5", "6.25", "10", "0.50", "25", "2.50", "12.50"),
    "claude-opus-4-6": ("5", "6.25", "10", "0.50", "25", "2.50", "12.50"),
    "claude-opus-4-5": ("5", "6.25", "10", "0.50", "25", "2.50", "12.50"),
    "claude-opus-4-1": ("15", "18.75", "30", "1.50", "75", "7.50", "37.50"),
    "claude-opus-4": ("15", "18.75", "30", "1.50", "75", "7.50", "37.50"),
    "claude-3-opus": ("15", "18.75", "30", "1.50", "75", "7.50", "37.50"),
    "claude-sonnet-5-5": ("2", "2.50", "4", "0.10", "10", "1", "5"),
    "claude-sonnet-5": ("2", "2.50", "4", "0.20", "10", "1", "5"),
    "claude-sonnet-4-6": ("3", "3.75", "6", "0.30", "15", "1.50", "7.50"),
    "claude-sonnet-4-5": ("3", "3.75", "6", "0.30", "15", "1.50", "7.50"),
    "claude-sonnet-4": ("3", "3.75", "6", "0.30", "15", "1.50", "7.50"),
    "claude-3-7-sonnet": ("3", "3.75", "6", "0.30", "15", "1.50", "7.50"),
    "claude-3-5-sonnet": ("3", "3.75", "6", "0.30", "15", "1.50", "7.50"),
    "claude-haiku-5-5": ("0.10", "0.125", "0.20", "0.01", "0.50", "0.05", "0.25"),
    "claude-haiku-4-5": ("1", "1.25", "2", "0.10", "5", "0.50", "2.50"),
    "claude-3-5-haiku": ("0.80", "1", "1.60", "0.08", "4", "0.40", "2"),
    "claude-3-haiku": ("0.25", "0.30", "0.50", "0.03", "1.25", "0.125", "0.625"),
}

# Claude 4.6 and later: the US data-residency multiplier applies.
GEO_MODELS = {
    "claude-fable-5-2",
    "claude-mythos-5-2",
    "claude-fable-5-1",
    "claude-mythos-5-1",
    "claude-fable-5",
    "claude-mythos-5",
    "claude-opus-5-5",
    "claude-opus-5",
    "claude-opus-4-8",
    "claude-opus-4-7",
    "claude-opus-4-6",
    "claude-sonnet-5-5",
    "claude-sonnet-5",
    "claude-sonnet-4-6",
    "claude-haiku-5-5",
}


def one_million_each() -> Usage:
    """Return 1M tokens in every category, spread so no request reaches a size tier."""
    return Usage(
        input_tokens=M,
        output_tokens=M,
        cache_read_tokens=M,
        cache_write_5m_tokens=M,
        cache_write_1h_tokens=M,
        requests=100,  # 40,000 prompt tokens per request
    )


def money(cost: Cost) -> tuple[Decimal | None, Decimal | None]:
    return cost.standard_usd, cost.batch_usd


# --- the price table ------------------------------------------------------------------------


def test_the_book_prices_exactly_the_models_of_the_table() -> None:
    assert set(default_book().models()) == set(TABLE)


@pytest.mark.parametrize("model", sorted(TABLE))
def test_every_model_row_matches_the_reference_table(model: str) -> None:
    inp, w5, w1, read, out, batch_in, batch_out = (D(x) for x in TABLE[model])
    cost = cost_of(model, one_million_each(), AT)
    assert cost.priced and cost.tier == "base"
    lines = cost.breakdown
    assert lines["input"].standard_usd == inp
    assert lines["cache_write_5m"].standard_usd == w5
    assert lines["cache_write_1h"].standard_usd == w1
    assert lines["cache_read"].standard_usd == read
    assert lines["output"].standard_usd == out
    # The reference's own batch column, not "standard / 2" recomputed here.
    assert lines["input"].batch_usd == batch_in
    assert lines["output"].batch_usd == batch_out
    assert cost.standard_usd == inp + w5 + w1 + read + out
    assert lines["input"].rate_usd == inp


@pytest.mark.parametrize("model", sorted(TABLE))
def test_batch_is_half_of_every_category_including_cache_and_search(model: str) -> None:
    usage = Usage(
        input_tokens=3,
        output_tokens=5,
        cache_read_tokens=7,
        cache_write_5m_tokens=11,
        cache_write_1h_tokens=13,
        web_searches=17,
    )
    cost = cost_of(model, usage, AT)
    assert set(cost.breakdown) == set(BREAKDOWN_KEYS)
    for line in cost.breakdown.values():
        assert line.batch_usd * 2 == line.standard_usd
    assert cost.batch_usd is not None and cost.batch_usd * 2 == cost.standard_usd
    assert cost.savings_usd == cost.batch_usd


# Cache read as a fraction of input, per the reference's section 4.3 (Fable/Mythos 5.2: 0.20 on
# an input of 8 is 0.025x too). Haiku 3's historical cache figures are not exact multiples.
READ_MULTIPLIER = {
    "claude-fable-5-2": D("0.025"),
    "claude-mythos-5-2": D("0.025"),
    "claude-fable-5-1": D("0.025"),
    "claude-mythos-5-1": D("0.025"),
    "claude-opus-5-5": D("0.05"),
}


@pytest.mark.parametrize("model", sorted(set(TABLE) - {"claude-3-haiku"}))
def test_cache_multipliers_hold_in_the_data_file(model: str) -> None:
    book = default_book()
    for at in (datetime(2026, 1, 1, tzinfo=UTC), AT):
        row = book.price_row(model, at)
        assert row is not None
        rate_sets = [row.rates] + ([row.tier.rates] if row.tier else [])
        for rates in rate_sets:
            assert rates.cache_write_5m == rates.input * D("1.25")
            assert rates.cache_write_1h == rates.input * 2
            expected = READ_MULTIPLIER.get(model, D("0.1"))
            if model == "claude-sonnet-5-5" and at >= datetime(2026, 10, 7, tzinfo=UTC):
                expected = D("0.05")
            assert rates.cache_read == rates.input * expected


def test_haiku_3_historical_cache_prices_are_kept_as_published() -> None:
    lines = cost_of("claude-3-haiku-20240307", one_million_each(), AT).breakdown
    assert lines["cache_write_5m"].standard_usd == D("0.30")  # not 1.25 x 0.25 = 0.3125
    assert lines["cache_read"].standard_usd == D("0.03")  # not 0.1 x 0.25 = 0.025


# --- acceptance examples (Sonnet 4.6) ----------------------------------------------------------


@pytest.mark.parametrize(
    ("input_m", "output_m", "standard", "batch"),
    [
        (200, 50, "1350.00", "675.00"),
        (150, 25, "825.00", "412.50"),
        (600, 200, "4800.00", "2400.00"),
        (75, 45, "900.00", "450.00"),
        (60, 15, "405.00", "202.50"),
    ],
)
def test_sonnet_4_6_acceptance_examples(
    input_m: int, output_m: int, standard: str, batch: str
) -> None:
    usage = Usage(input_tokens=input_m * M, output_tokens=output_m * M)
    cost = cost_of("claude-sonnet-4-6", usage, AT)
    assert money(cost) == (D(standard), D(batch))
    assert cost.savings_usd == D(standard) - D(batch)
    assert cost.price_id == "claude-sonnet-4-6@1970-01-01"


def test_mixed_usage_on_opus_5_5_by_hand() -> None:
    usage = Usage(
        input_tokens=2 * M,  # 2 x 4 = 8
        output_tokens=M,  # 20
        cache_read_tokens=10 * M,  # 10 x 0.20 = 2
        cache_write_5m_tokens=400_000,  # 0.4 x 5 = 2
        cache_write_1h_tokens=100_000,  # 0.1 x 8 = 0.8
        web_searches=50,  # 50 x 10 / 1000 = 0.5
    )
    assert money(cost_of("claude-opus-5-5", usage, AT)) == (D("33.30"), D("16.65"))
    # US: tokens 32.80 x 1.1 = 36.08, the searches stay 0.50.
    us = replace(usage, inference_geo="us")
    assert money(cost_of("claude-opus-5-5", us, AT)) == (D("36.58"), D("18.29"))


def test_amounts_keep_full_precision() -> None:
    cost = cost_of("claude-haiku-5-5", Usage(input_tokens=1, output_tokens=1), AT)
    # 1 x 0.10 / 1e6 + 1 x 0.50 / 1e6, far below a cent and not rounded away.
    assert cost.standard_usd == D("0.0000006")
    assert cost.batch_usd == D("0.0000003")


def test_web_search_is_10_usd_per_thousand_and_half_in_batch() -> None:
    line = cost_of("claude-sonnet-4-6", Usage(web_searches=1000), AT).breakdown["web_search"]
    assert (line.quantity, line.rate_usd, line.standard_usd, line.batch_usd) == (
        1000,
        D("10"),
        D("10"),
        D("5"),
    )


# --- Haiku 5.5 prompt-size tier ---------------------------------------------------------------


def test_haiku_5_5_at_exactly_100k_prompt_is_base() -> None:
    usage = Usage(input_tokens=100_000, output_tokens=1_000)
    cost = cost_of("claude-haiku-5-5", usage, AT)
    # 100,000 x 0.10 = 0.01; 1,000 x 0.50 = 0.0005
    assert cost.tier == "base"
    assert money(cost) == (D("0.0105"), D("0.00525"))


def test_haiku_5_5_over_100k_prompt_pays_the_higher_tier_on_every_token() -> None:
    usage = Usage(input_tokens=100_001, output_tokens=1_000)
    cost = cost_of("claude-haiku-5-5", usage, AT)
    # 100,001 x 0.50 = 0.0500005; output too: 1,000 x 2.50 = 0.0025
    assert cost.tier == "prompt_over_100k"
    assert money(cost) == (D("0.0525005"), D("0.02625025"))


def test_haiku_5_5_prompt_counts_cache_reads_and_writes() -> None:
    base = Usage(
        input_tokens=50_000,
        cache_read_tokens=40_000,
        cache_write_5m_tokens=5_000,
        cache_write_1h_tokens=5_000,
        output_tokens=2_000,
    )
    cost = cost_of("claude-haiku-5-5", base, AT)
    # 50k x 0.10 + 40k x 0.01 + 5k x 0.125 + 5k x 0.20 + 2k x 0.50 (per MTok)
    # = 0.005 + 0.0004 + 0.000625 + 0.001 + 0.001
    assert cost.tier == "base"
    assert cost.standard_usd == D("0.008025")

    over = replace(base, cache_write_1h_tokens=5_001)
    cost = cost_of("claude-haiku-5-5", over, AT)
    # 50k x 0.50 + 40k x 0.05 + 5k x 0.625 + 5,001 x 1.00 + 2k x 2.50 (per MTok)
    # = 0.025 + 0.002 + 0.003125 + 0.005001 + 0.005
    assert cost.tier == "prompt_over_100k"
    assert cost.standard_usd == D("0.040126")


@pytest.mark.parametrize(
    ("input_tokens", "requests", "tier"),
    [
        (200_000, 2, "base"),  # 100,000 per request
        (200_001, 2, "prompt_over_100k"),  # 100,000.5 per request on average
        (200_002, 2, "prompt_over_100k"),  # 100,001 per request
        (1_000_000, 10, "base"),
        (1_000_000, 9, "prompt_over_100k"),
        (150_000, 1, "prompt_over_100k"),
        (150_000, 2, "base"),
    ],
)
def test_haiku_5_5_tier_uses_the_average_prompt_per_request(
    input_tokens: int, requests: int, tier: str
) -> None:
    usage = Usage(input_tokens=input_tokens, requests=requests)
    assert cost_of("claude-haiku-5-5", usage, AT).tier == tier


def test_haiku_5_5_report_bucket_over_200k_implies_the_higher_tier() -> None:
    # Every request in a "200k-1M" bucket had a prompt over 200K, so over 100K too.
    usage = Usage(input_tokens=1_000, requests=5, context_window="200k-1M")
    cost = cost_of("claude-haiku-5-5", usage, AT)
    assert cost.tier == "prompt_over_100k"
    assert cost.standard_usd == D("0.0005")  # 1,000 x 0.50 / 1e6
    # "0-200k" says nothing about 100K, so the average decides.
    small = Usage(input_tokens=1_000, context_window="0-200k")
    big = Usage(input_tokens=150_000, context_window="0-200k")
    assert cost_of("claude-haiku-5-5", small, AT).tier == "base"
    assert cost_of("claude-haiku-5-5", big, AT).tier == "prompt_over_100k"


# --- Sonnet 4.5 / 4 long context ---------------------------------------------------------------


@pytest.mark.parametrize("model", ["claude-sonnet-4-5", "claude-sonnet-4-20250514"])
def test_long_context_boundary(model: str) -> None:
    at_limit = cost_of(model, Usage(input_tokens=200_000, output_tokens=10_000), AT)
    # 200,000 x 3 = 0.6; 10,000 x 15 = 0.15
    assert at_limit.tier == "base"
    assert at_limit.standard_usd == D("0.75")

    over = cost_of(model, Usage(input_tokens=200_001, output_tokens=10_000), AT)
    # 200,001 x 6 = 1.200006; 10,000 x 22.50 = 0.225
    assert over.tier == "long_context"
    assert money(over) == (D("1.425006"), D("0.712503"))


def test_long_context_counts_cache_and_scales_cache_prices() -> None:
    usage = Usage(
        input_tokens=150_000,
        cache_read_tokens=30_000,
        cache_write_5m_tokens=10_000,
        cache_write_1h_tokens=10_001,
        output_tokens=10_000,
    )
    cost = cost_of("claude-sonnet-4-5", usage, AT)
    assert cost.tier == "long_context"
    lines = cost.breakdown
    assert lines["input"].standard_usd == D("0.9")  # 150,000 x 6
    assert lines["cache_read"].standard_usd == D("0.018")  # 30,000 x 0.60
    assert lines["cache_write_5m"].standard_usd == D("0.075")  # 10,000 x 7.50
    assert lines["cache_write_1h"].standard_usd == D("0.120012")  # 10,001 x 12
    assert lines["output"].standard_usd == D("0.225")  # 10,000 x 22.50


def test_context_window_forces_the_long_context_tier_either_way() -> None:
    small = Usage(input_tokens=1_000, context_window="200k-1M")
    forced = cost_of("claude-sonnet-4-5", small, AT)
    assert (forced.tier, forced.standard_usd) == ("long_context", D("0.006"))  # 1,000 x 6

    big = Usage(input_tokens=300_000, context_window="0-200k")
    base = cost_of("claude-sonnet-4-5", big, AT)
    assert (base.tier, base.standard_usd) == ("base", D("0.9"))  # 300,000 x 3

    unknown_bucket = Usage(input_tokens=300_000, context_window="something-new")
    assert cost_of("claude-sonnet-4-5", unknown_bucket, AT).tier == "long_context"


def test_long_context_averages_over_requests() -> None:
    assert cost_of("claude-sonnet-4", Usage(input_tokens=400_000, requests=2), AT).tier == "base"
    over = cost_of("claude-sonnet-4", Usage(input_tokens=400_002, requests=2), AT)
    assert (over.tier, over.standard_usd) == ("long_context", D("2.400012"))


@pytest.mark.parametrize(
    "model", ["claude-sonnet-4-6", "claude-opus-4-6", "claude-sonnet-5-5", "claude-3-7-sonnet"]
)
def test_other_models_have_no_long_context_premium(model: str) -> None:
    usage = Usage(input_tokens=900_000, context_window="200k-1M")
    cost = cost_of(model, usage, AT)
    assert cost.tier == "base"
    assert cost.breakdown["input"].rate_usd == D(TABLE[model][0])


# --- data residency ---------------------------------------------------------------------------


@pytest.mark.parametrize("model", sorted(TABLE))
def test_us_geo_is_1_1x_on_4_6_and_later_only(model: str) -> None:
    usage = Usage(
        input_tokens=M, output_tokens=M, web_searches=1_000, requests=10, inference_geo="us"
    )
    cost = cost_of(model, usage, AT)
    inp, out = D(TABLE[model][0]), D(TABLE[model][4])
    factor = D("1.1") if model in GEO_MODELS else D("1")
    assert cost.breakdown["input"].standard_usd == inp * factor
    assert cost.breakdown["output"].standard_usd == out * factor
    assert cost.breakdown["web_search"].standard_usd == D("10")  # never multiplied


def test_us_geo_by_hand_on_sonnet_4_6_and_not_on_sonnet_or_opus_4_5() -> None:
    usage = one_million_each()
    us = replace(usage, inference_geo="US")  # case-insensitive
    lines = cost_of("claude-sonnet-4-6", us, AT).breakdown
    assert lines["input"].standard_usd == D("3.3")
    assert lines["cache_write_5m"].standard_usd == D("4.125")
    assert lines["cache_write_1h"].standard_usd == D("6.6")
    assert lines["cache_read"].standard_usd == D("0.33")
    assert lines["output"].standard_usd == D("16.5")
    assert lines["output"].batch_usd == D("8.25")
    # Sonnet 4.5 is older than 4.6: 3 + 3.75 + 6 + 0.30 + 15, no multiplier.
    assert cost_of("claude-sonnet-4-5", us, AT).standard_usd == D("28.05")
    assert cost_of("claude-opus-4-5-20251101", us, AT).breakdown["input"].standard_usd == D("5")
    glob = Usage(input_tokens=M, inference_geo="global")
    assert cost_of("claude-sonnet-4-6", glob, AT).standard_usd == D("3")


def test_us_geo_stacks_with_the_haiku_5_5_tier() -> None:
    usage = Usage(input_tokens=200_000, inference_geo="us")
    # 200,000 x 0.50 x 1.1 = 0.11
    assert cost_of("claude-haiku-5-5", usage, AT).standard_usd == D("0.11")


# --- cache reads that are not 0.1x, and effective dates -------------------------------------------


def test_sonnet_5_5_cache_read_before_and_after_2026_10_07() -> None:
    usage = Usage(cache_read_tokens=M)
    before = cost_of("claude-sonnet-5-5", usage, datetime(2026, 10, 6, 23, 59, 59, tzinfo=UTC))
    after = cost_of("claude-sonnet-5-5", usage, datetime(2026, 10, 7, tzinfo=UTC))
    assert (before.standard_usd, before.price_id) == (D("0.20"), "claude-sonnet-5-5@1970-01-01")
    assert (after.standard_usd, after.price_id) == (D("0.10"), "claude-sonnet-5-5@2026-10-07")
    assert after.batch_usd == D("0.05")


def test_effective_date_is_taken_in_utc() -> None:
    # 01:00 on 7 October in UTC+2 is still 6 October in UTC.
    at = datetime(2026, 10, 7, 1, 0, tzinfo=timezone(timedelta(hours=2)))
    cost = cost_of("claude-sonnet-5-5", Usage(cache_read_tokens=M), at)
    assert cost.standard_usd == D("0.20")


def test_fable_5_1_and_opus_5_5_cache_reads() -> None:
    usage = Usage(cache_read_tokens=4 * M)
    assert cost_of("claude-fable-5-1", usage, AT).standard_usd == D("1.00")  # 4 x 0.25
    assert cost_of("claude-mythos-5-1", usage, AT).standard_usd == D("1.00")
    assert cost_of("claude-opus-5-5", usage, AT).standard_usd == D("0.80")  # 4 x 0.20
    assert cost_of("claude-fable-5", usage, AT).standard_usd == D("4.00")  # 4 x 1.00
    assert cost_of("claude-opus-5-5", usage, AT).batch_usd == D("0.40")


# --- model ids --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model_id", "canonical"),
    [
        ("claude-haiku-4-5", "claude-haiku-4-5"),
        ("claude-haiku-4-5-20251001", "claude-haiku-4-5"),
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("claude-3-7-sonnet-20250219", "claude-3-7-sonnet"),
        ("claude-3-7-sonnet-latest", "claude-3-7-sonnet"),
        ("claude-opus-4-1-20250805", "claude-opus-4-1"),
        ("claude-opus-4-20250514", "claude-opus-4"),
        ("claude-opus-4-0", "claude-opus-4"),
        ("claude-sonnet-4-20250514", "claude-sonnet-4"),
        ("claude-sonnet-4-0", "claude-sonnet-4"),
        ("claude-3-5-haiku-20241022", "claude-3-5-haiku"),
        ("claude-3-5-haiku-latest", "claude-3-5-haiku"),
        ("claude-3-haiku-20240307", "claude-3-haiku"),
        ("claude-3-5-sonnet-20240620", "claude-3-5-sonnet"),
        ("claude-3-5-sonnet-20241022", "claude-3-5-sonnet"),
        ("claude-3-opus-20240229", "claude-3-opus"),
        ("claude-opus-4-5-20251101", "claude-opus-4-5"),
        ("claude-sonnet-4-6[1m]", "claude-sonnet-4-6"),
        ("claude-opus-4-6[1M]", "claude-opus-4-6"),
        ("claude-sonnet-4-5-20250929[1m]", "claude-sonnet-4-5"),
        ("CLAUDE-Sonnet-4-6", "claude-sonnet-4-6"),
        ("  claude-opus-5-5 ", "claude-opus-5-5"),
        ("claude-opus-5-5-20261201", "claude-opus-5-5"),  # an unlisted dated snapshot
    ],
)
def test_model_ids_and_aliases_resolve(model_id: str, canonical: str) -> None:
    book = default_book()
    assert book.resolve(model_id) == canonical
    assert book.knows(model_id)
    cost = cost_of(model_id, Usage(input_tokens=M), AT)
    assert cost.model == model_id  # the id as given is kept
    assert cost.price_id == f"{canonical}@1970-01-01"


@pytest.mark.parametrize(
    "model_id",
    ["claude-opus-4-9", "claude-opus-4-1x", "claude-mythos-preview", "gpt-4o", "", "claude"],
)
def test_no_prefix_guessing_for_unknown_ids(model_id: str) -> None:
    assert default_book().resolve(model_id) is None
    assert not default_book().knows(model_id)


def test_unknown_model_is_unpriced_never_zero() -> None:
    cost = cost_of("claude-mythos-preview", Usage(input_tokens=M, output_tokens=M), AT)
    assert cost.model == "claude-mythos-preview"
    assert cost.priced is False
    assert (cost.standard_usd, cost.batch_usd, cost.savings_usd) == (None, None, None)
    assert (cost.tier, cost.price_id, cost.breakdown) == (None, None, {})


# --- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field",
    [
        "input_tokens",
        "output_tokens",
        "cache_read_tokens",
        "cache_write_5m_tokens",
        "cache_write_1h_tokens",
        "web_searches",
    ],
)
def test_negative_counts_raise_naming_the_field(field: str) -> None:
    with pytest.raises(PricingError, match=field):
        kwargs: dict[str, Any] = {field: -1}
        Usage(**kwargs)


@pytest.mark.parametrize("requests", [0, -3])
def test_requests_below_one_raise(requests: int) -> None:
    with pytest.raises(PricingError, match="requests must be 1 or more"):
        Usage(requests=requests)


@pytest.mark.parametrize("value", [1.5, True, "10"])
def test_non_integer_counts_raise(value: Any) -> None:
    with pytest.raises(PricingError, match="output_tokens must be an integer"):
        Usage(output_tokens=value)


def test_usage_time_must_be_aware() -> None:
    with pytest.raises(PricingError, match="at must be timezone-aware"):
        cost_of("claude-sonnet-4-6", Usage(), datetime(2026, 1, 1))
    with pytest.raises(PricingError, match="at must be a datetime"):
        cost_of("claude-sonnet-4-6", Usage(), date(2026, 1, 1))  # type: ignore[arg-type]


# --- overrides --------------------------------------------------------------------------------


def test_override_adds_a_new_model_with_derived_cache_prices() -> None:
    book = PriceBook.load(
        [{"model": "Acme-Large", "input": 0.3, "output": "1.5", "aliases": ["acme-l"]}]
    )
    assert book.resolve("acme-large") == "acme-large"
    assert book.resolve("ACME-L") == "acme-large"
    lines = book.cost_of("acme-l", one_million_each(), AT).breakdown
    # A TOML float 0.3 becomes exactly 0.3, not 0.29999...
    assert lines["input"].standard_usd == D("0.3")
    assert lines["output"].standard_usd == D("1.5")
    assert lines["cache_read"].standard_usd == D("0.03")  # 0.1x
    assert lines["cache_write_5m"].standard_usd == D("0.375")  # 1.25x
    assert lines["cache_write_1h"].standard_usd == D("0.6")  # 2x
    # A new model gets the geo multiplier unless told otherwise.
    us = book.cost_of("acme-large", Usage(input_tokens=M, inference_geo="us"), AT)
    assert us.standard_usd == D("0.33")
    # The built-in default book is not changed by an override.
    assert not default_book().knows("acme-large")


def test_override_with_the_same_date_replaces_the_built_in_row() -> None:
    book = PriceBook.load([{"model": "claude-sonnet-4-6", "input": 4, "output": 16}])
    cost = book.cost_of("claude-sonnet-4-6", Usage(input_tokens=M, cache_read_tokens=M), AT)
    assert cost.standard_usd == D("4.4")  # 4 + 0.4 (derived 0.1x)
    assert cost.price_id == "claude-sonnet-4-6@1970-01-01"


def test_override_with_a_later_date_adds_a_row() -> None:
    overrides = [
        {"model": "claude-haiku-4-5", "effective_from": "2027-01-01", "input": "0.5", "output": 2},
        {"model": "claude-opus-4-7", "effective_from": date(2027, 3, 1), "input": 3, "output": 9},
    ]
    book = PriceBook.load(overrides)
    usage = Usage(input_tokens=M, output_tokens=M)
    old = book.cost_of("claude-haiku-4-5-20251001", usage, datetime(2026, 12, 31, tzinfo=UTC))
    new = book.cost_of("claude-haiku-4-5-20251001", usage, datetime(2027, 1, 1, tzinfo=UTC))
    assert (old.standard_usd, old.price_id) == (D("6"), "claude-haiku-4-5@1970-01-01")
    assert (new.standard_usd, new.price_id) == (D("2.5"), "claude-haiku-4-5@2027-01-01")
    later = book.cost_of("claude-opus-4-7", usage, datetime(2027, 3, 1, tzinfo=UTC))
    assert later.standard_usd == D("12")


def test_override_before_its_effective_date_leaves_a_new_model_unpriced() -> None:
    book = PriceBook.load(
        [{"model": "acme-next", "effective_from": "2027-01-01", "input": 1, "output": 2}]
    )
    assert book.knows("acme-next")
    assert not book.cost_of("acme-next", Usage(input_tokens=M), AT).priced


def test_override_of_an_existing_model_keeps_its_geo_setting() -> None:
    book = PriceBook.load(
        [
            {"model": "claude-sonnet-4-5-20250929", "input": 3, "output": 15},
            {"model": "acme-eu", "input": 1, "output": 1, "geo_multiplier_applies": False},
        ]
    )
    us = Usage(input_tokens=M, inference_geo="us")
    # The dated alias targets the built-in model; Sonnet 4.5 is older than 4.6: no 1.1x.
    assert book.cost_of("claude-sonnet-4-5", us, AT).standard_usd == D("3")
    assert book.cost_of("acme-eu", us, AT).standard_usd == D("1")


def test_override_long_context_tier() -> None:
    entry = {
        "model": "acme-lc",
        "input": "1",
        "output": "2",
        "cache_read": "0.05",
        "long_context_input": "2",
        "long_context_output": "4",
        "long_context_threshold": 1_000,
    }
    book = PriceBook.load([entry])
    base = book.cost_of("acme-lc", Usage(input_tokens=1_000), AT)
    assert (base.tier, base.standard_usd) == ("base", D("0.001"))
    over = book.cost_of("acme-lc", Usage(input_tokens=1_000, cache_read_tokens=1), AT)
    # 1,000 x 2 = 0.002; the cache read keeps its 0.05x ratio: 1 x 0.10 = 0.0000001
    assert (over.tier, over.standard_usd) == ("long_context", D("0.0020001"))
    default_threshold = PriceBook.load([{k: v for k, v in entry.items() if "threshold" not in k}])
    assert default_threshold.cost_of("acme-lc", Usage(input_tokens=200_001), AT).tier == (
        "long_context"
    )


def test_load_rejects_bad_overrides_with_every_problem() -> None:
    with pytest.raises(PricingError) as exc:
        PriceBook.load([{"model": "x", "input": -1}])
    assert "input" in str(exc.value) and "output" in str(exc.value)


# --- validate_price_entries -------------------------------------------------------------------


def test_valid_entries_have_no_problems() -> None:
    entries = [
        {"model": "acme", "input": 1, "output": "2.5", "effective_from": "2026-01-01"},
        {"model": "acme", "input": 1, "output": 2, "effective_from": date(2026, 6, 1)},
        {"model": "claude-opus-4-7", "input": 5, "output": 25, "aliases": ["my-opus"]},
    ]
    assert validate_price_entries(entries, "monitor.toml [[prices]]") == []
    assert validate_price_entries([], "monitor.toml [[prices]]") == []


def test_an_effective_date_no_day_arithmetic_can_reach_is_refused() -> None:
    where = "monitor.toml [[prices]]"
    for day in ("9999-12-31", date(1900, 1, 1)):
        [problem] = validate_price_entries(
            [{"model": "acme", "input": 1, "output": 2, "effective_from": day}], where
        )
        assert "effective_from" in problem and "outside the years 1970 to 2999" in problem


def test_validate_lists_every_problem_at_once() -> None:
    where = "monitor.toml [[prices]]"
    entries: list[dict[str, Any]] = [
        {"model": "ok", "input": 1, "output": 2},
        {
            "input": -1,
            "output": "lots",
            "colour": "red",
            "effective_from": "2026-13-01",
            "geo_multiplier_applies": "yes",
            "long_context_input": 6,
        },
        {"model": "y", "input": 1, "aliases": "y2", "long_context_threshold": 0},
        {"model": "OK", "input": 1, "output": 2},  # duplicate of #1 (ids are case-insensitive)
        {"model": "z", "input": 1, "output": 2, "aliases": ["claude-opus-4-7"]},
        {"model": "w", "input": 1, "output": 2, "effective_from": datetime(2026, 1, 1)},
    ]
    problems = validate_price_entries(entries, where)
    expected = [
        ("#2", "colour", "unknown key"),
        ("#2", "model", "required"),
        ("#2", "input", "negative"),
        ("#2", "output", "number"),
        ("#2", "effective_from", "YYYY-MM-DD"),
        ("#2", "geo_multiplier_applies", "true or false"),
        ("#2", "long_context_output", "required"),
        ("#3", "output", "required"),
        ("#3", "aliases", "list"),
        ("#3", "long_context_threshold", "positive integer"),
        ("#4", "effective_from", "already priced by entry #1"),
        ("#5", "aliases", "already names model claude-opus-4-7"),
        ("#6", "effective_from", "not a date-time"),
    ]
    for number, key, words in expected:
        prefix = f"{where} {number}: {key}: "
        assert any(p.startswith(prefix) and words in p for p in problems), (prefix, problems)
    assert len(problems) == len(expected)
    assert all(p.startswith(f"{where} #") for p in problems)


def test_validate_rejects_an_entry_that_is_not_a_table() -> None:
    problems = validate_price_entries(["claude-x"], "cfg")  # type: ignore[list-item]
    assert problems == ["cfg #1: must be a table with model, input and output"]


# --- module helpers ---------------------------------------------------------------------------


def test_default_book_is_cached_and_cost_of_accepts_a_book() -> None:
    assert default_book() is default_book()
    book = PriceBook.load([{"model": "claude-sonnet-4-6", "input": 1, "output": 1}])
    usage = Usage(input_tokens=M)
    assert cost_of("claude-sonnet-4-6", usage, AT).standard_usd == D("3")
    assert cost_of("claude-sonnet-4-6", usage, AT, book=book).standard_usd == D("1")


# --- the price command ------------------------------------------------------------------------


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    """Return a CliRunner whose settings carry no price overrides (no monitor.toml needed)."""
    monkeypatch.setattr(cli.price, "load_settings", lambda: Settings())
    return CliRunner()


def run_price(runner: CliRunner, *args: str) -> Any:
    return runner.invoke(cli.app, ["price", *args])


def test_cli_price_json_for_the_acceptance_example(runner: CliRunner) -> None:
    result = run_price(
        runner,
        "--model",
        "claude-sonnet-4-6",
        "--input-tokens",
        "200000000",
        "--output-tokens",
        "50000000",
        "--at",
        "2026-11-01",
        "--json",
    )
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["model"] == "claude-sonnet-4-6"
    assert data["priced"] is True
    assert data["standard_usd"] == "1350.00"
    assert data["batch_usd"] == "675.00"
    assert data["cost_usd"] == "1350.00"
    assert data["savings_usd"] == "675.00"
    assert data["at"] == "2026-11-01"
    assert list(data["breakdown"]) == [
        "input",
        "output",
        "cache_read",
        "cache_write_5m",
        "cache_write_1h",
        "web_search",
    ]
    assert data["breakdown"]["input"] == {
        "quantity": 200_000_000,
        "rate_usd_per_mtok": "3.00",
        "standard_usd": "600.00",
        "batch_usd": "300.00",
    }
    assert data["breakdown"]["output"]["standard_usd"] == "750.00"
    assert data["breakdown"]["web_search"]["rate_usd_per_mtok"] == "10.00"
    assert data["breakdown"]["cache_read"]["rate_usd_per_mtok"] == "0.30"
    assert result.stderr == ""


def test_cli_price_batch_and_all_options(runner: CliRunner) -> None:
    result = run_price(
        runner,
        "--model",
        "claude-haiku-5-5",
        "--input-tokens",
        "150000",
        "--output-tokens",
        "10000",
        "--cache-read-tokens",
        "40000",
        "--cache-write-5m-tokens",
        "8000",
        "--cache-write-1h-tokens",
        "2000",
        "--web-searches",
        "4",
        "--requests",
        "2",
        "--inference-geo",
        "us",
        "--batch",
        "--json",
    )
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    # 200,000 prompt tokens over 2 requests = 100,000 each: base tier, x1.1 for US.
    # 150k x 0.11 + 10k x 0.55 + 40k x 0.011 + 8k x 0.1375 + 2k x 0.22 (per MTok)
    # = 0.0165 + 0.0055 + 0.00044 + 0.0011 + 0.00044 = 0.02398; searches 4 x 0.01 = 0.04
    assert data["tier"] == "base"
    assert data["standard_usd"] == "0.06"  # 0.06398
    assert data["batch_usd"] == "0.03"  # 0.03199
    assert data["cost_usd"] == data["batch_usd"]
    assert data["breakdown"]["cache_write_5m"]["rate_usd_per_mtok"] == "0.1375"
    assert data["breakdown"]["web_search"]["quantity"] == 4


def test_cli_price_at_picks_the_effective_row(runner: CliRunner) -> None:
    args = ["--model", "claude-sonnet-5-5", "--input-tokens", "0", "--output-tokens", "0"]
    args += ["--cache-read-tokens", "100000000", "--json"]
    before = json.loads(run_price(runner, *args, "--at", "2026-10-06").stdout)
    after = json.loads(run_price(runner, *args, "--at", "2026-10-07").stdout)
    assert (before["standard_usd"], after["standard_usd"]) == ("20.00", "10.00")


def test_cli_price_at_defaults_to_the_clock(runner: CliRunner) -> None:
    args = ["-m", "claude-sonnet-5-5", "--input-tokens", "0", "--output-tokens", "0", "--json"]
    # The real clock, an hour before the 2026-10-07 price change.
    with time_machine.travel(datetime(2026, 10, 6, 23, 0, tzinfo=UTC), tick=False):
        result = run_price(runner, *args)
    assert json.loads(result.stdout)["at"] == "2026-10-06"


def test_cli_price_unknown_model_exits_0_with_a_warning(runner: CliRunner) -> None:
    result = run_price(
        runner, "--model", "claude-mythos-preview", "--input-tokens", "5", "--output-tokens", "1"
    )
    assert result.exit_code == 0
    assert "claude-mythos-preview" in result.stderr
    assert "[[prices]]" in result.stderr and "monitor.toml" in result.stderr
    assert "unpriced" in result.stdout

    result = run_price(
        runner, "--model", "acme-x", "--input-tokens", "5", "--output-tokens", "1", "--json"
    )
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["priced"] is False
    for key in ("standard_usd", "batch_usd", "cost_usd", "savings_usd"):
        assert data[key] is None
    assert data["breakdown"]["input"] == {
        "quantity": 5,
        "rate_usd_per_mtok": None,
        "standard_usd": None,
        "batch_usd": None,
    }
    assert "acme-x" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--input-tokens", "-5", "--output-tokens", "1"], "--input-tokens must be between 0"),
        # A typo of a few digits too many is a usage error, not an overflow deep inside.
        (["--input-tokens", "1" + "0" * 30, "--output-tokens", "1"], "--input-tokens must be"),
        (["--input-tokens", "1", "--output-tokens", "1", "--requests", "9" * 20], "--requests"),
        (["--input-tokens", "1", "--output-tokens", "1", "--web-searches", "-1"], "--web-searches"),
        (["--input-tokens", "1", "--output-tokens", "1", "--requests", "0"], "--requests"),
        (["--input-tokens", "1", "--output-tokens", "1", "--at", "2026-1-1"], "--at"),
        (["--input-tokens", "1", "--output-tokens", "1", "--inference-geo", "eu"], "geo"),
        (["--input-tokens", "1", "--output-tokens", "1", "--context-window", "1M"], "context"),
    ],
)
def test_cli_price_bad_input_exits_2_with_one_line(
    runner: CliRunner, args: list[str], message: str
) -> None:
    result = run_price(runner, "--model", "claude-sonnet-4-6", *args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stdout == ""


def test_cli_price_human_output(runner: CliRunner) -> None:
    result = run_price(
        runner,
        "--model",
        "claude-sonnet-4-6",
        "--input-tokens",
        "200000000",
        "--output-tokens",
        "50000000",
        "--batch",
    )
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert "claude-sonnet-4-6@1970-01-01" in out
    assert "$1,350.00" in out and "$675.00" in out
    assert "cost (batch): $675.00" in out
    assert "savings at batch prices: $675.00" in out


def test_cli_price_uses_price_overrides_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    prices = [{"model": "acme-small", "input": "0.2", "output": "1", "aliases": ["acme-s"]}]
    monkeypatch.setattr(cli.price, "load_settings", lambda: Settings(prices=tuple(prices)))
    result = CliRunner().invoke(
        cli.app,
        ["price", "-m", "ACME-S", "--input-tokens", "5000000", "--output-tokens", "0", "--json"],
    )
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert (data["price_id"], data["standard_usd"]) == ("acme-small@1970-01-01", "1.00")


def test_cli_price_reads_overrides_from_monitor_toml(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "monitor.toml"
    config.write_text('[[prices]]\nmodel = "acme-toml"\ninput = 0.5\noutput = 2.0\n')
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MONITOR_CONFIG", str(config))
    result = CliRunner().invoke(
        cli.app,
        ["price", "-m", "acme-toml", "--input-tokens", "2000000", "--output-tokens", "0", "--json"],
    )
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["standard_usd"] == "1.00"
