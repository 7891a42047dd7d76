"""The pricing engine: what a piece of Claude API usage costs, at standard and at batch rates.

Prices are data (``monitor/data/prices.toml``, effective-dated rows) plus the ``[[prices]]``
overrides of ``monitor.toml``. The rules come from the pricing page, as summarised in the API
reference (section 4):

- Batch is 50 % of every category ("All usage is charged at 50% of the standard API prices"),
  cache writes, cache reads and web search included.
- Cache prices are per model and per row, because the read multiplier is not always 0.1x.
- Haiku 5.5 and the long-context Sonnet 4.5 / 4 have a higher tier, chosen per request by the
  prompt size (input + cache read + cache writes); it then applies to every token of the request.
- ``inference_geo = "us"`` costs 1.1x on every token category of Claude 4.6 and later models.
- An unknown model is *unpriced* (``priced=False``, no money), never a silent $0.

All money is ``Decimal`` at full precision; rounding happens only when printing (``monitor.money``).
"""

from __future__ import annotations

import functools
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from importlib import resources
from typing import Any

from monitor.money import ZERO
from monitor.tokens import TOKEN_FIELDS, Tokens

__all__ = [
    "BREAKDOWN_KEYS",
    "Cost",
    "LineCost",
    "PriceBook",
    "PriceRow",
    "PriceTier",
    "PricingError",
    "Rates",
    "Tokens",
    "Usage",
    "cost_of",
    "default_book",
    "validate_price_entries",
]

MILLION = Decimal(1_000_000)
THOUSAND = Decimal(1_000)
EPOCH = date(1970, 1, 1)

# Token categories, in the order a breakdown lists them; web search is not a token category.
TOKEN_CATEGORIES = ("input", "output", "cache_read", "cache_write_5m", "cache_write_1h")
BREAKDOWN_KEYS = (*TOKEN_CATEGORIES, "web_search")

# Cache prices relative to input, used only to fill in what an override leaves out (the built-in
# data states every price explicitly).
DEFAULT_CACHE_MULTIPLIERS = {
    "cache_read": Decimal("0.1"),
    "cache_write_5m": Decimal("1.25"),
    "cache_write_1h": Decimal("2"),
}
DEFAULT_LONG_CONTEXT_THRESHOLD = 200_000

# The usage reports' context_window buckets. "200k-1M" means every request in the bucket had a
# prompt over 200K tokens; "0-200k" means none did.
_CONTEXT_OVER_200K = "200k-1m"
_CONTEXT_UPTO_200K = "0-200k"
_CONTEXT_BOUNDARY = 200_000

_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_DATE_SUFFIX_RE = re.compile(r"-\d{8}$")
_ONE_M_SUFFIX = "[1m]"

_PRICE_KEYS = ("input", "output", "cache_read", "cache_write_5m", "cache_write_1h")
_OVERRIDE_KEYS = frozenset(
    {
        "model",
        "effective_from",
        *_PRICE_KEYS,
        "aliases",
        "geo_multiplier_applies",
        "long_context_input",
        "long_context_output",
        "long_context_threshold",
    }
)


class PricingError(ValueError):
    """Bad input to the pricing engine; the message names the offending field."""


# --- values ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Usage(Tokens):
    """Token counts to price: totals over ``requests`` requests of one model.

    The counts are those of ``Tokens`` (same keywords); what is added here says how they were
    requested, which decides the tier and the data-residency multiplier.
    """

    requests: int = 1  # the token counts are totals over this many requests
    inference_geo: str | None = None  # "us" -> 1.1x on Claude 4.6+ models
    # From usage reports: "0-200k" | "200k-1M". When given it decides a prompt-size tier that
    # the bucket implies, instead of the per-request average.
    context_window: str | None = None

    def __post_init__(self) -> None:
        for name in (*TOKEN_FIELDS, "requests"):
            value = getattr(self, name)
            # bool is an int subclass; a True token count is a bug upstream, not 1 token.
            if not isinstance(value, int) or isinstance(value, bool):
                raise PricingError(f"{name} must be an integer, got {value!r}")
            if value < 0 and name != "requests":
                raise PricingError(f"{name} must be 0 or more, got {value}")
        if self.requests < 1:
            raise PricingError(f"requests must be 1 or more, got {self.requests}")
        for name in ("inference_geo", "context_window"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise PricingError(f"{name} must be a string or None, got {value!r}")

    @classmethod
    def of(
        cls,
        tokens: Tokens,
        *,
        requests: int = 1,
        inference_geo: str | None = None,
        context_window: str | None = None,
    ) -> Usage:
        """Return ``tokens`` as usage of ``requests`` requests, ready to price."""
        return cls(
            input_tokens=tokens.input_tokens,
            output_tokens=tokens.output_tokens,
            cache_read_tokens=tokens.cache_read_tokens,
            cache_write_5m_tokens=tokens.cache_write_5m_tokens,
            cache_write_1h_tokens=tokens.cache_write_1h_tokens,
            web_searches=tokens.web_searches,
            requests=requests,
            inference_geo=inference_geo,
            context_window=context_window,
        )

    @property
    def prompt_tokens(self) -> int:
        """Return the prompt size summed over all requests: input + cache read + cache writes."""
        return self.prompt


@dataclass(frozen=True)
class Rates:
    """Standard USD prices per million tokens for each token category."""

    input: Decimal
    output: Decimal
    cache_read: Decimal
    cache_write_5m: Decimal
    cache_write_1h: Decimal

    def of(self, category: str) -> Decimal:
        """Return the price of one token category."""
        value: Decimal = getattr(self, category)
        return value

    def scaled(self, factor: Decimal) -> Rates:
        """Return every price multiplied by ``factor``."""
        return Rates(**{c: self.of(c) * factor for c in _PRICE_KEYS})


@dataclass(frozen=True)
class PriceTier:
    """A higher price tier for requests whose prompt exceeds ``threshold`` tokens."""

    name: str  # e.g. "long_context", "prompt_over_100k"
    threshold: int  # prompt tokens per request; the tier applies strictly above it
    rates: Rates


@dataclass(frozen=True)
class PriceRow:
    """The prices of one model from ``effective_from`` (a UTC date) until the next row."""

    model: str  # canonical model key
    effective_from: date
    rates: Rates
    tier: PriceTier | None = None
    geo_multiplier_applies: bool = True
    origin: str = "built-in"  # or where the override came from

    @property
    def price_id(self) -> str:
        """Return an id naming this row: canonical model and effective date."""
        return f"{self.model}@{self.effective_from.isoformat()}"


@dataclass(frozen=True)
class LineCost:
    """One category of a cost breakdown."""

    quantity: int  # tokens (or searches for web_search)
    # Standard USD per million tokens (per 1,000 searches for web_search), after tier and geo.
    rate_usd: Decimal
    standard_usd: Decimal
    batch_usd: Decimal


@dataclass(frozen=True)
class Cost:
    """What a piece of usage costs at standard and batch prices (None when unpriced)."""

    model: str  # the model id as given
    priced: bool
    standard_usd: Decimal | None
    batch_usd: Decimal | None
    # keys: input, output, cache_read, cache_write_5m, cache_write_1h, web_search; empty if unpriced
    breakdown: dict[str, LineCost] = field(default_factory=dict)
    tier: str | None = None  # "base", "long_context", "prompt_over_100k"; None when unpriced
    price_id: str | None = None  # the price row used; None when unpriced

    @property
    def savings_usd(self) -> Decimal | None:
        """Return what running this at batch prices saves (standard minus batch)."""
        if self.standard_usd is None or self.batch_usd is None:
            return None
        return self.standard_usd - self.batch_usd


@dataclass(frozen=True)
class _Modifiers:
    batch_factor: Decimal
    us_geo_multiplier: Decimal
    web_search_per_1k: Decimal


# --- model ids ------------------------------------------------------------------------------


def _normalize(model: str) -> str:
    """Return the comparable form of a model id: lower case, no ``[1m]`` suffix."""
    key = model.strip().lower()
    # Claude Code logs name the 1M-context variant "<model>[1m]"; it is billed as the model.
    if key.endswith(_ONE_M_SUFFIX):
        key = key[: -len(_ONE_M_SUFFIX)].rstrip()
    return key


def _lookup(index: Mapping[str, str], model: str) -> str | None:
    """Find the canonical key of ``model``: exact id or alias, then without -latest or a date."""
    key = _normalize(model)
    if key in index:
        return index[key]
    # Reports may echo an alias or a dated snapshot id (reference 4.1: "normalise by prefix");
    # only these two well-known suffixes are stripped, never an arbitrary prefix, so that
    # claude-opus-4 can never swallow claude-opus-4-1.
    for candidate in (key.removesuffix("-latest"), _DATE_SUFFIX_RE.sub("", key)):
        if candidate != key and candidate in index:
            return index[candidate]
    return None


# --- parsing helpers ------------------------------------------------------------------------


def _parse_price(value: Any) -> Decimal:
    """Convert a TOML number or numeric string to an exact Decimal (raise ValueError)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise ValueError(f"must be a number of USD, got {value!r}")
    try:
        # str() first: Decimal(0.3) would keep the float's binary error.
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise ValueError(f"must be a number of USD, got {value!r}") from None
    if not amount.is_finite():
        raise ValueError(f"must be a finite number, got {value!r}")
    if amount < 0:
        raise ValueError(f"must not be negative, got {value!r}")
    return amount


def _parse_date(value: Any) -> date:
    """Convert a TOML date or a 'YYYY-MM-DD' string to a date (raise ValueError)."""
    if isinstance(value, datetime):
        raise ValueError(f"must be a date (YYYY-MM-DD), not a date-time, got {value.isoformat()}")
    if isinstance(value, date):
        return _in_range(value)
    if isinstance(value, str) and _DATE_RE.match(value.strip()):
        try:
            parsed = date.fromisoformat(value.strip())
        except ValueError:
            pass
        else:
            return _in_range(parsed)
    raise ValueError(f"must be a date as YYYY-MM-DD, got {value!r}")


def _in_range(day: date) -> date:
    # Day arithmetic near year 9999 overflows; no price takes effect outside these years (1970:
    # "since always", as the built-in table writes it).
    if not 1970 <= day.year <= 2999:
        raise ValueError(f"{day.isoformat()} is outside the years 1970 to 2999")
    return day


def _usage_day(at: datetime) -> date:
    """Return the UTC date of ``at``, which must be an aware datetime."""
    if not isinstance(at, datetime):
        raise PricingError(f"at must be a datetime, got {at!r}")
    if at.tzinfo is None or at.utcoffset() is None:
        raise PricingError(f"at must be timezone-aware (UTC), got naive {at.isoformat()}")
    return at.astimezone(UTC).date()


# --- built-in data --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Builtin:
    modifiers: _Modifiers
    rows: dict[str, tuple[PriceRow, ...]]  # canonical key -> rows sorted by date
    geo: dict[str, bool]  # canonical key -> geo_multiplier_applies
    index: dict[str, str]  # normalized id or alias -> canonical key


def _data_error(message: str) -> RuntimeError:
    return RuntimeError(f"monitor/data/prices.toml: {message}")


def _rates_from(table: Mapping[str, Any], where: str) -> Rates:
    try:
        return Rates(**{k: _parse_price(table[k]) for k in _PRICE_KEYS})
    except KeyError as exc:
        raise _data_error(f"{where}: missing {exc.args[0]}") from None
    except ValueError as exc:
        raise _data_error(f"{where}: {exc}") from None


@functools.cache
def _builtin() -> _Builtin:
    """Load and check the packaged price data (a broken file is a packaging bug: RuntimeError)."""
    text = resources.files("monitor").joinpath("data/prices.toml").read_text(encoding="utf-8")
    doc = tomllib.loads(text)
    mods = doc.get("modifiers", {})
    try:
        modifiers = _Modifiers(
            batch_factor=_parse_price(mods["batch_factor"]),
            us_geo_multiplier=_parse_price(mods["us_geo_multiplier"]),
            web_search_per_1k=_parse_price(mods["web_search_per_1k"]),
        )
    except (KeyError, ValueError) as exc:
        raise _data_error(f"[modifiers]: {exc}") from None

    rows: dict[str, tuple[PriceRow, ...]] = {}
    geo: dict[str, bool] = {}
    index: dict[str, str] = {}
    for model in doc.get("models", []):
        key = _normalize(str(model.get("id", "")))
        if not key or key in rows:
            raise _data_error(f"model id {key!r} is empty or listed twice")
        applies = model.get("geo_multiplier_applies")
        if not isinstance(applies, bool):
            raise _data_error(f"{key}: geo_multiplier_applies must be true or false")
        geo[key] = applies
        for name in (key, *model.get("aliases", [])):
            alias = _normalize(name)
            if alias in index:
                raise _data_error(f"{key}: id or alias {alias!r} already names {index[alias]}")
            index[alias] = key
        parsed: list[PriceRow] = []
        for row in model.get("prices", []):
            where = f"{key} row {row.get('effective_from')}"
            try:
                start = _parse_date(row.get("effective_from"))
            except ValueError as exc:
                raise _data_error(f"{where}: effective_from {exc}") from None
            tier = None
            if "tier" in row:
                t = row["tier"]
                threshold = t.get("threshold")
                if not isinstance(threshold, int) or isinstance(threshold, bool) or threshold < 1:
                    raise _data_error(f"{where}: tier threshold must be a positive integer")
                tier = PriceTier(str(t["name"]), threshold, _rates_from(t, f"{where} tier"))
            parsed.append(PriceRow(key, start, _rates_from(row, where), tier, applies))
        parsed.sort(key=lambda r: r.effective_from)
        if not parsed or len({r.effective_from for r in parsed}) != len(parsed):
            raise _data_error(f"{key}: needs at least one price row, each with its own date")
        rows[key] = tuple(parsed)
    return _Builtin(modifiers, rows, geo, index)


# --- overrides ------------------------------------------------------------------------------


def validate_price_entries(entries: Sequence[Mapping[str, Any]], where: str) -> list[str]:
    """Check ``[[prices]]`` override entries and return every problem found (empty when valid).

    Each message starts with ``where`` and the entry's 1-based position (``"<where> #2"``) and
    names the field, e.g. ``"monitor.toml [[prices]] #2: input: must not be negative, got -1"``.
    """
    problems: list[str] = []
    builtin = _builtin()
    index = dict(builtin.index)  # grows with the entries, as PriceBook.load would
    seen: dict[tuple[str, date], int] = {}
    for n, entry in enumerate(entries, start=1):
        here = f"{where} #{n}"

        def problem(key: str, message: str, here: str = here) -> None:
            problems.append(f"{here}: {key}: {message}")

        if not isinstance(entry, Mapping):
            problems.append(f"{here}: must be a table with model, input and output")
            continue
        for key in sorted(set(map(str, entry)) - _OVERRIDE_KEYS):
            problem(key, "unknown key (known: " + ", ".join(sorted(_OVERRIDE_KEYS)) + ")")

        canonical: str | None = None
        model = entry.get("model")
        if model is None:
            problem("model", "required (the model id to price)")
        elif not isinstance(model, str) or not _normalize(model):
            problem("model", f"must be a non-empty string, got {model!r}")
        else:
            canonical = index.get(_normalize(model), _normalize(model))

        for key in (*_PRICE_KEYS, "long_context_input", "long_context_output"):
            if key not in entry:
                if key in ("input", "output"):
                    problem(key, "required (USD per million tokens)")
                continue
            try:
                _parse_price(entry[key])
            except ValueError as exc:
                problem(key, str(exc))

        start = EPOCH
        if "effective_from" in entry:
            try:
                start = _parse_date(entry["effective_from"])
            except ValueError as exc:
                problem("effective_from", str(exc))
                canonical = None  # no reliable date to check duplicates against

        if "geo_multiplier_applies" in entry and not isinstance(
            entry["geo_multiplier_applies"], bool
        ):
            problem("geo_multiplier_applies", "must be true or false")

        has_lc = ["long_context_input" in entry, "long_context_output" in entry]
        if any(has_lc) and not all(has_lc):
            missing = "long_context_output" if has_lc[0] else "long_context_input"
            problem(missing, "required when the other long_context_ price is given")
        if "long_context_threshold" in entry:
            threshold = entry["long_context_threshold"]
            if not isinstance(threshold, int) or isinstance(threshold, bool) or threshold < 1:
                problem("long_context_threshold", f"must be a positive integer, got {threshold!r}")
            elif not any(has_lc):
                problem(
                    "long_context_threshold",
                    "needs long_context_input and long_context_output",
                )

        aliases = entry.get("aliases", [])
        if not isinstance(aliases, list | tuple) or not all(
            isinstance(a, str) and _normalize(a) for a in aliases
        ):
            problem("aliases", "must be a list of non-empty model ids")
            aliases = []

        if canonical is not None:
            if (canonical, start) in seen:
                problem(
                    "effective_from",
                    f"{canonical} from {start.isoformat()} is already priced by entry "
                    f"#{seen[(canonical, start)]}",
                )
            seen[(canonical, start)] = n
            index.setdefault(canonical, canonical)
            for alias in aliases:
                owner = index.get(_normalize(alias))
                if owner is not None and owner != canonical:
                    problem("aliases", f"{alias!r} already names model {owner}")
                else:
                    index[_normalize(alias)] = canonical
    return problems


def _row_from_entry(entry: Mapping[str, Any], key: str, geo: bool, origin: str) -> PriceRow:
    """Build a price row from a validated override entry, deriving what it leaves out."""
    base_in = _parse_price(entry["input"])
    prices = {"input": base_in, "output": _parse_price(entry["output"])}
    for cat, mult in DEFAULT_CACHE_MULTIPLIERS.items():
        prices[cat] = _parse_price(entry[cat]) if cat in entry else base_in * mult
    rates = Rates(**prices)

    tier = None
    if "long_context_input" in entry:
        lc_in = _parse_price(entry["long_context_input"])
        lc = {"input": lc_in, "output": _parse_price(entry["long_context_output"])}
        for cat, mult in DEFAULT_CACHE_MULTIPLIERS.items():
            # Cache prices scale from the long-context input price with this row's own
            # ratios, so a model with a cheap cache read keeps it in the higher tier.
            lc[cat] = prices[cat] * lc_in / base_in if base_in else lc_in * mult
        threshold = int(entry.get("long_context_threshold", DEFAULT_LONG_CONTEXT_THRESHOLD))
        tier = PriceTier("long_context", threshold, Rates(**lc))

    start = _parse_date(entry.get("effective_from", EPOCH))
    geo_applies = bool(entry.get("geo_multiplier_applies", geo))
    return PriceRow(key, start, rates, tier, geo_applies, origin)


# --- the price book -------------------------------------------------------------------------


def _tier_applies(tier: PriceTier, usage: Usage) -> bool:
    """Decide whether the requests behind ``usage`` pay the higher tier."""
    window = (usage.context_window or "").strip().lower()
    # A report bucket states the prompt size of every request in it, which beats an average.
    if window == _CONTEXT_OVER_200K and tier.threshold <= _CONTEXT_BOUNDARY:
        return True
    if window == _CONTEXT_UPTO_200K and tier.threshold >= _CONTEXT_BOUNDARY:
        return False
    # Otherwise use the average prompt per request, compared without division (exact):
    # prompt / requests > threshold  <=>  prompt > threshold * requests.
    return usage.prompt_tokens > tier.threshold * usage.requests


class PriceBook:
    """Effective-dated prices for every known model: built-in data plus overrides."""

    def __init__(
        self,
        rows: Mapping[str, Sequence[PriceRow]],
        index: Mapping[str, str],
        modifiers: _Modifiers,
    ) -> None:
        self._rows = {k: tuple(sorted(v, key=lambda r: r.effective_from)) for k, v in rows.items()}
        self._index = dict(index)
        self._modifiers = modifiers

    @classmethod
    def load(cls, overrides: Sequence[Mapping[str, Any]] = ()) -> PriceBook:
        """Build a book from the packaged prices plus ``[[prices]]`` overrides.

        An override for a model id or alias already known (matched exactly, case-insensitive)
        adds a row to that model, replacing the row with the same effective date; any other id
        becomes a new model. Raise PricingError listing every problem in the overrides.
        """
        problems = validate_price_entries(overrides, "[[prices]]")
        if problems:
            raise PricingError("invalid price overrides: " + "; ".join(problems))
        builtin = _builtin()
        rows = {k: {r.effective_from: r for r in v} for k, v in builtin.rows.items()}
        geo = dict(builtin.geo)
        index = dict(builtin.index)
        for n, entry in enumerate(overrides, start=1):
            key = index.get(_normalize(entry["model"]), _normalize(entry["model"]))
            if key not in rows:
                rows[key], geo[key], index[key] = {}, True, key
            row = _row_from_entry(entry, key, geo[key], f"[[prices]] #{n}")
            rows[key][row.effective_from] = row
            for alias in entry.get("aliases", []):
                index[_normalize(alias)] = key
        return cls({k: list(v.values()) for k, v in rows.items()}, index, builtin.modifiers)

    def resolve(self, model: str) -> str | None:
        """Return the canonical key for ``model`` (id, alias, dated or [1m] form), or None."""
        return _lookup(self._index, model)

    def knows(self, model: str) -> bool:
        """Return whether ``model`` has prices in this book."""
        return self.resolve(model) is not None

    def models(self) -> list[str]:
        """Return the canonical keys of every priced model, sorted."""
        return sorted(self._rows)

    def price_row(self, model: str, at: datetime) -> PriceRow | None:
        """Return the row in effect for ``model`` at ``at``, or None when there is none."""
        day = _usage_day(at)
        key = self.resolve(model)
        if key is None:
            return None
        current = None
        for row in self._rows[key]:
            if row.effective_from > day:
                break
            current = row
        return current

    def cost_of(self, model: str, usage: Usage, at: datetime) -> Cost:
        """Price ``usage`` of ``model`` at time ``at`` (aware UTC), at standard and batch rates.

        1. Pick the price row in effect on the UTC date of ``at``; none means unpriced.
        2. Pick the tier from the prompt size per request (or the report's context_window).
        3. Apply the US data-residency multiplier where the model has it.
        4. Price each category; batch is the batch factor (50 %) of each standard amount.
        """
        if not isinstance(usage, Usage):
            raise PricingError(f"usage must be a Usage, got {type(usage).__name__}")
        row = self.price_row(model, at)
        if row is None:
            return Cost(model=model, priced=False, standard_usd=None, batch_usd=None)

        rates, tier_name = row.rates, "base"
        if row.tier is not None and _tier_applies(row.tier, usage):
            rates, tier_name = row.tier.rates, row.tier.name
        geo = (usage.inference_geo or "").strip().lower()
        if geo == "us" and row.geo_multiplier_applies:
            rates = rates.scaled(self._modifiers.us_geo_multiplier)

        half = self._modifiers.batch_factor
        breakdown: dict[str, LineCost] = {}
        for category in TOKEN_CATEGORIES:
            quantity = usage.quantity(category)
            rate = rates.of(category)
            standard = quantity * rate / MILLION
            breakdown[category] = LineCost(quantity, rate, standard, standard * half)
        # Web search: per 1,000 searches, never geo-multiplied; the batch discount covers
        # "all usage", so it applies here too.
        searches = usage.web_searches
        search_rate = self._modifiers.web_search_per_1k
        search_cost = searches * search_rate / THOUSAND
        breakdown["web_search"] = LineCost(searches, search_rate, search_cost, search_cost * half)

        return Cost(
            model=model,
            priced=True,
            standard_usd=sum((line.standard_usd for line in breakdown.values()), ZERO),
            batch_usd=sum((line.batch_usd for line in breakdown.values()), ZERO),
            breakdown=breakdown,
            tier=tier_name,
            price_id=row.price_id,
        )


@functools.cache
def default_book() -> PriceBook:
    """Return the built-in price book (no overrides), built once."""
    return PriceBook.load()


def cost_of(model: str, usage: Usage, at: datetime, book: PriceBook | None = None) -> Cost:
    """Price ``usage`` of ``model`` at ``at`` with ``book`` (default: the built-in prices)."""
    return (book or default_book()).cost_of(model, usage, at)
