"""``batch-monitor price``: what some usage costs at standard and batch prices."""

from __future__ import annotations

from typing import Any

import typer

from monitor.cli import UsageError, app, handle_errors, load_settings, make_console, print_json

# A quadrillion tokens is some thousand years of a large organisation: beyond it, a typo.
MAX_COUNT = 10**15


@app.command("price")
@handle_errors
def price(
    model: str = typer.Option(
        ..., "--model", "-m", help="Model id, e.g. claude-sonnet-4-6 (aliases, dated ids work)."
    ),
    input_tokens: int = typer.Option(
        ..., "--input-tokens", help="Uncached input tokens, total over --requests."
    ),
    output_tokens: int = typer.Option(
        ..., "--output-tokens", help="Output tokens, total over --requests."
    ),
    cache_read_tokens: int = typer.Option(0, "--cache-read-tokens", help="Cache read tokens."),
    cache_write_5m_tokens: int = typer.Option(
        0, "--cache-write-5m-tokens", help="5-minute cache write tokens."
    ),
    cache_write_1h_tokens: int = typer.Option(
        0, "--cache-write-1h-tokens", help="1-hour cache write tokens."
    ),
    web_searches: int = typer.Option(0, "--web-searches", help="Web search calls."),
    requests: int = typer.Option(
        1, "--requests", help="Requests the totals cover; size tiers use the per-request average."
    ),
    batch: bool = typer.Option(False, "--batch", help="Report cost_usd at batch prices (50 %)."),
    at: str | None = typer.Option(
        None, "--at", metavar="YYYY-MM-DD", help="Price on this UTC date (default: today)."
    ),
    inference_geo: str | None = typer.Option(
        None, "--inference-geo", help="'us' for US-only inference (1.1x on Claude 4.6+ models)."
    ),
    context_window: str | None = typer.Option(
        None, "--context-window", help="'0-200k' or '200k-1M', as in usage reports."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show what some usage costs at standard and batch prices, category by category."""
    import re
    from datetime import UTC, date, datetime
    from decimal import Decimal

    from monitor import clock
    from monitor.fmt import money_json, to_cents, usd
    from monitor.pricing import BREAKDOWN_KEYS, PriceBook, PricingError, Usage

    counts = {
        "--input-tokens": input_tokens,
        "--output-tokens": output_tokens,
        "--cache-read-tokens": cache_read_tokens,
        "--cache-write-5m-tokens": cache_write_5m_tokens,
        "--cache-write-1h-tokens": cache_write_1h_tokens,
        "--web-searches": web_searches,
    }
    for flag, value in counts.items():
        if not 0 <= value <= MAX_COUNT:
            raise UsageError(f"{flag} must be between 0 and {MAX_COUNT:,}, got {value}")
    if not 1 <= requests <= MAX_COUNT:
        raise UsageError(f"--requests must be between 1 and {MAX_COUNT:,}, got {requests}")
    geo = inference_geo.strip().lower() if inference_geo else None
    if geo not in (None, "us", "global", "not_available"):
        raise UsageError(f"--inference-geo must be us, global or not_available, got {geo!r}")
    window = context_window.strip().lower() if context_window else None
    if window not in (None, "0-200k", "200k-1m"):
        raise UsageError(f"--context-window must be 0-200k or 200k-1M, got {context_window!r}")
    if at is None:
        when = clock.utcnow()
    else:
        try:
            if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", at):
                raise ValueError(at)
            day = date.fromisoformat(at)
        except ValueError:
            raise UsageError(f"--at must be a date as YYYY-MM-DD, got {at!r}") from None
        when = datetime(day.year, day.month, day.day, tzinfo=UTC)

    # Price overrides come from monitor.toml [[prices]]; config validation has already
    # reported any bad entry, so a PricingError here would be a bug surfaced as one line.
    settings = load_settings()
    try:
        book = PriceBook.load(settings.prices)
        usage = Usage(
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cache_read_tokens=cache_read_tokens,
            cache_write_5m_tokens=cache_write_5m_tokens,
            cache_write_1h_tokens=cache_write_1h_tokens,
            web_searches=web_searches,
            requests=requests,
            inference_geo=geo,
            context_window=window,
        )
        cost = book.cost_of(model, usage, when)
    except PricingError as exc:
        raise UsageError(str(exc)) from None

    if not cost.priced:
        typer.echo(
            f"batch-monitor: warning: no price known for model {model!r}; add a [[prices]] "
            'entry to monitor.toml (model = "...", input = ..., output = ..., USD per '
            "million tokens) to price it",
            err=True,
        )

    def rate_text(rate: Decimal) -> str:
        # At least cents, but keep sub-cent rates such as Haiku 5.5's 0.125 exact.
        exact = rate.normalize()
        places = -int(exact.as_tuple().exponent)
        return str(to_cents(rate)) if places <= 2 else format(exact, "f")

    breakdown: dict[str, dict[str, Any]] = {}
    for key in BREAKDOWN_KEYS:
        line = cost.breakdown.get(key)
        breakdown[key] = {
            "quantity": usage.quantity(key),
            "rate_usd_per_mtok": rate_text(line.rate_usd) if line else None,
            "standard_usd": money_json(line.standard_usd) if line else None,
            "batch_usd": money_json(line.batch_usd) if line else None,
        }
    chosen = cost.batch_usd if batch else cost.standard_usd
    data = {
        "model": model,
        "priced": cost.priced,
        "price_id": cost.price_id,
        "tier": cost.tier,
        "at": when.date().isoformat(),
        "requests": requests,
        "standard_usd": money_json(cost.standard_usd),
        "batch_usd": money_json(cost.batch_usd),
        "cost_usd": money_json(chosen),
        "savings_usd": money_json(cost.savings_usd),
        "breakdown": breakdown,
    }
    if as_json:
        print_json(data)
        return
    if not cost.priced:
        typer.echo(f"{model}: unpriced (no price known on {data['at']})")
        return

    from rich.table import Table

    console = make_console()
    # markup=False: a model id like "claude-sonnet-4-5[1m]" is not rich markup.
    header = f"{model} on {data['at']}: price row {cost.price_id}, tier {cost.tier}"
    console.print(header, markup=False, highlight=False, soft_wrap=True)
    table = Table()
    table.add_column("category")
    table.add_column("quantity", justify="right")
    table.add_column("rate (USD)", justify="right")
    table.add_column("standard", justify="right")
    table.add_column("batch", justify="right")
    for key, line in cost.breakdown.items():
        # Skip empty optional categories so the common input/output case stays short.
        if line.quantity == 0 and key not in ("input", "output"):
            continue
        unit = "/1k searches" if key == "web_search" else "/MTok"
        table.add_row(
            key,
            f"{line.quantity:,}",
            rate_text(line.rate_usd) + unit,
            usd(line.standard_usd),
            usd(line.batch_usd),
        )
    assert cost.standard_usd is not None and cost.batch_usd is not None  # priced
    table.add_section()
    table.add_row("total", "", "", usd(cost.standard_usd), usd(cost.batch_usd))
    console.print(table)
    basis = "batch" if batch else "standard"
    console.print(f"cost ({basis}): {usd(cost.batch_usd if batch else cost.standard_usd)}")
    console.print(f"savings at batch prices: {usd(cost.standard_usd - cost.batch_usd)}")
