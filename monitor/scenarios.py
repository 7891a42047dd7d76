"""Seeded, deterministic scenarios for the Anthropic API simulator, and their ground truth.

A :class:`Scenario` is a simulated organisation: workspaces and API keys, Message Batches
(specs from which every per-request result is *derived* on demand from ``(seed, batch, index)``,
so a batch of a million requests costs no memory), and real-time calls. It is also the mutable
state the simulator serves: batches created or cancelled over HTTP are recorded here, so
:meth:`Scenario.truth` always describes what the API shows.

Nothing here reads the clock: every question is asked "as of" a simulated ``now``.

Rules the simulator and the truth share (see ``shared/reference/anthropic-api.md``):

- a batch is visible once ``created_at <= now``; ``expires_at = created_at + 24 h``; results
  are archived (unavailable) from ``created_at + 29 days``;
- request counts other than ``processing`` are zero until the batch has ended;
- a batch's usage is reported in the minute (so hour, day) in which it ENDED, as product
  ``message_batches_api`` / tier ``batch``, priced at the batch rate; a real-time call's usage
  is reported at the minute of the call (``messages_api``, tier ``standard`` or ``priority``);
- errored, canceled and expired requests are counted, never billed;
- cost reports carry no Priority Tier; a model the pricing engine does not know is still
  billed (at :data:`FALLBACK_PRICES`) because the provider knows its price, while the truth
  marks its cost unpriced.
"""

from __future__ import annotations

import base64
import hashlib
import math
import random
import re
import struct
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, NamedTuple

import orjson

# --- constants ----------------------------------------------------------------------------

DEFAULT_START = datetime(2026, 11, 15, tzinfo=UTC)
EXPIRY = timedelta(hours=24)
ARCHIVE_AFTER = timedelta(days=29)
# A cancel takes a little while to wind down: the batch shows `canceling` in between.
CANCEL_LAG = timedelta(seconds=90)
ADMIN_KEY = "sk-ant-admin01-sim"

# Token types in the order every usage tuple in this module uses.
TOKEN_TYPES: tuple[str, ...] = (
    "uncached_input_tokens",
    "cache_creation.ephemeral_5m_input_tokens",
    "cache_creation.ephemeral_1h_input_tokens",
    "cache_read_input_tokens",
    "output_tokens",
)
RESULT_TYPES: tuple[str, ...] = ("succeeded", "errored", "canceled", "expired")

# Models with the `inference_geo` parameter (Claude 4.6 and later).
GEO_MODELS = frozenset(
    {
        "claude-sonnet-4-6",
        "claude-opus-4-6",
        "claude-opus-4-7",
        "claude-opus-4-8",
        "claude-sonnet-5",
        "claude-sonnet-5-5",
        "claude-opus-5",
        "claude-opus-5-5",
        "claude-haiku-5-5",
        "claude-fable-5-1",
        "claude-fable-5-2",
    }
)
UNKNOWN_MODEL = "claude-nova-9"

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

ERROR_MESSAGES: dict[str, str] = {
    "invalid_request_error": "messages.0.content: text content blocks must be non-empty",
    "overloaded_error": "Overloaded",
    "rate_limit_error": (
        "Number of request tokens has exceeded your per-minute rate limit "
        "(https://docs.claude.com/en/api/rate-limits); see the response headers for current "
        "usage. Please reduce the prompt length or the maximum tokens requested, or try "
        "again later."
    ),
    "api_error": "Internal server error",
}

_M64 = (1 << 64) - 1
_B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_WORKLOAD = re.compile(r"^[A-Za-z]+(?:_[A-Za-z]+)*")


# --- deterministic randomness -------------------------------------------------------------


def _mix(x: int) -> int:
    """Return the splitmix64 finaliser of ``x`` (a good 64-bit hash of an integer)."""
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def _str_key(text: str) -> int:
    """Return a stable 64-bit key for ``text`` (Python's hash() is salted per process)."""
    key = 0
    for byte in text.encode():
        key = _mix(key ^ byte)
    return key


def _b62(value: int, length: int) -> str:
    """Return ``length`` (at most 32) id characters derived from ``value``.

    base64 of hashed bits with ``+`` and ``/`` mapped to letters: looks like the API's
    base62-ish ids and costs about a microsecond (it runs once per results line).
    """
    a = _mix(value & _M64)
    b = _mix(a)
    raw = base64.b64encode(struct.pack("<QQQ", a, b, _mix(b) if length > 21 else 0))
    return raw[:length].translate(_ID_TRANSLATE).decode()


_ID_TRANSLATE = bytes.maketrans(b"+/", b"Qz")


def _sim_id(prefix: str, key: int, length: int = 24) -> str:
    """Return an id such as ``msgbatch_01...`` derived from ``key``."""
    return f"{prefix}{_b62(key, length)}"


_DRAWS = 14  # uniforms per request; each use below has a fixed position (stable results)
_U16 = 1.0 / 65536.0
_UNPACK_DRAWS = struct.Struct(f"<{_DRAWS}H").unpack


def _uniforms(seed: int) -> list[float]:
    """Return 14 uniform floats in [0, 1) derived from a 64-bit seed.

    16-bit resolution is plenty for rolls and log-uniform token sizes, and one blake2b call
    is much cheaper than big-int arithmetic per draw (this runs once per results line).
    """
    digest = hashlib.blake2b((seed & _M64).to_bytes(8, "little"), digest_size=2 * _DRAWS).digest()
    return [x * _U16 for x in _UNPACK_DRAWS(digest)]


# --- helpers ------------------------------------------------------------------------------


def iso(dt: datetime) -> str:
    """Format an aware datetime as RFC 3339 UTC with a ``Z`` (microseconds only if non-zero)."""
    dt = dt.astimezone(UTC)
    if dt.microsecond:
        return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def workload_of(custom_id: str) -> str:
    """Return the workload a custom_id names, its leading words: contentgen-12 -> contentgen."""
    match = _WORKLOAD.match(custom_id)
    return match.group(0) if match else custom_id


def context_window_of(prompt_tokens: int) -> str:
    """Return the report's context-window tier for a prompt of ``prompt_tokens``."""
    return "200k-1M" if prompt_tokens > 200_000 else "0-200k"


def model_display_name(model: str) -> str:
    """Return a human model name (``claude-sonnet-4-6`` -> ``Claude Sonnet 4.6``)."""
    parts = model.split("-")
    words = [p.capitalize() for p in parts if not p.isdigit()]
    version = ".".join(p for p in parts if p.isdigit() and len(p) < 8)
    return " ".join(words) + (f" {version}" if version else "")


def floor_time(dt: datetime, width: str) -> datetime:
    """Return the start of the ``1m``/``1h``/``1d`` bucket holding ``dt``."""
    dt = dt.astimezone(UTC)
    if width == "1m":
        return dt.replace(second=0, microsecond=0)
    if width == "1h":
        return dt.replace(minute=0, second=0, microsecond=0)
    if width == "1d":
        return dt.replace(hour=0, minute=0, second=0, microsecond=0)
    raise ValueError(f"unknown bucket width {width!r}")


WIDTHS: dict[str, timedelta] = {
    "1m": timedelta(minutes=1),
    "1h": timedelta(hours=1),
    "1d": timedelta(days=1),
}


# --- identities ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Workspace:
    """A workspace and the API key its batches are created with."""

    id: str
    name: str
    api_key: str  # the secret to authenticate with
    api_key_id: str
    is_default: bool = False


@dataclass(frozen=True)
class ApiKey:
    """An API key of a workspace (secret and tagged id)."""

    id: str
    secret: str
    workspace_id: str
    name: str


# --- requests -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Profile:
    """How one workload's requests look: models, token ranges, caching, tools, errors."""

    models: tuple[tuple[str, float], ...]
    input: tuple[int, int] = (200, 4_000)
    output: tuple[int, int] = (50, 1_200)
    max_tokens: int = 4_096
    cache_read: float = 0.0  # probability of a cache hit
    cache_read_size: tuple[int, int] = (1_024, 20_000)
    cache_write_5m: float = 0.0
    cache_write_1h: float = 0.0
    cache_write_size: tuple[int, int] = (1_024, 20_000)
    web_search: float = 0.0
    web_search_count: tuple[int, int] = (1, 5)
    geo_us: float = 0.0  # share of geo-capable requests pinned to `inference_geo: "us"`
    long_prompt: float = 0.0  # share of requests with a very long prompt
    long_prompt_size: tuple[int, int] = (110_000, 240_000)
    # >0: draw token counts from this many fixed levels (templated prompts; keeps the
    # pricing memo small for huge benchmark batches).
    levels: int = 0


class Request(NamedTuple):
    """One batch request, fully derived: what it asked for and (if processed) how it went."""

    position: int  # index of the request in the batch (0-based)
    custom_id: str
    workload: str
    model: str
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_5m_tokens: int
    cache_write_1h_tokens: int
    web_searches: int
    inference_geo: str | None
    max_tokens: int
    error_type: str | None = None  # the intrinsic outcome if processed: None = succeeded
    error_message: str | None = None

    @property
    def tokens(self) -> tuple[int, int, int, int, int]:
        """Return the usage in :data:`TOKEN_TYPES` order."""
        return (
            self.input_tokens,
            self.cache_write_5m_tokens,
            self.cache_write_1h_tokens,
            self.cache_read_tokens,
            self.output_tokens,
        )

    @property
    def prompt_tokens(self) -> int:
        """Return input + cache read + cache write tokens (what tiers are decided on)."""
        return (
            self.input_tokens
            + self.cache_read_tokens
            + self.cache_write_5m_tokens
            + self.cache_write_1h_tokens
        )

    @property
    def context_window(self) -> str:
        """Return the report's context-window tier of this request."""
        return context_window_of(self.prompt_tokens)


def _pick(options: Sequence[tuple[str, float]], u: float) -> str:
    total = sum(w for _, w in options)
    acc = 0.0
    for name, weight in options:
        acc += weight / total
        if u < acc:
            return name
    return options[-1][0]


def _sized(lo: int, hi: int, u: float, levels: int) -> int:
    """Map a uniform draw to a token count in ``[lo, hi]``, log-uniformly (heavy-tailed).

    With ``levels`` > 0 only that many fixed values occur (templated prompts).
    """
    if hi <= lo:
        return lo
    if levels > 0:
        return int(lo * (hi / lo) ** (int(u * levels) / max(1, levels - 1)))
    return int(lo * math.exp(u * math.log((hi + 1) / lo)))


_Drawn = tuple[str, int, int, int, int, int, int, str | None, int]


def _draw_usage(profile: Profile, us: Sequence[float]) -> _Drawn:
    """Draw model and token counts for one request of ``profile`` from uniforms ``us``."""
    model = _pick(profile.models, us[0])
    levels = profile.levels
    if profile.long_prompt and us[1] < profile.long_prompt:
        input_tokens = _sized(*profile.long_prompt_size, us[2], levels)
    else:
        input_tokens = _sized(*profile.input, us[2], levels)
    output = min(profile.max_tokens, _sized(*profile.output, us[3], levels))
    cache_read = w5 = w1 = 0
    if us[4] < profile.cache_read:
        cache_read = _sized(*profile.cache_read_size, us[5], levels)
    if us[6] < profile.cache_write_5m:
        w5 = _sized(*profile.cache_write_size, us[7], levels)
    elif us[6] < profile.cache_write_5m + profile.cache_write_1h:
        w1 = _sized(*profile.cache_write_size, us[7], levels)
    searches = 0
    if us[8] < profile.web_search:
        lo, hi = profile.web_search_count
        searches = lo + int(us[9] * (hi - lo + 1))
    geo: str | None = None
    if model in GEO_MODELS:
        geo = "us" if us[10] < profile.geo_us else "global"
    # In Request's field order, from model to max_tokens.
    return (model, input_tokens, output, cache_read, w5, w1, searches, geo, profile.max_tokens)


def _affine(n: int, key: int) -> tuple[int, int, int]:
    """Return ``(a, b, a_inverse)`` of a bijection ``i -> (a*i + b) mod n``."""
    if n <= 1:
        return 1, 0, 1
    a = int(n * 0.6180339887) + (key % 7) * 2
    # Coprime (a bijection), and not +-1 (which would keep neighbours together).
    while math.gcd(a, n) != 1 or (n > 4 and a % n in (1, n - 1)):
        a += 1
    return a, key % n, pow(a, -1, n)


class RequestSource(ABC):
    """The requests of one batch: how many, each by index, and error counts by prefix."""

    n: int

    @abstractmethod
    def request(self, index: int) -> Request:
        """Return request ``index`` (0-based)."""

    def errors_before(self, processed: int, rank_to_index: Any) -> dict[str, int]:
        """Count errored requests among the first ``processed`` ranks, by error type."""
        counts: dict[str, int] = {}
        for rank in range(processed):
            err = self.request(rank_to_index(rank)).error_type
            if err is not None:
                counts[err] = counts.get(err, 0) + 1
        return counts


class GeneratedRequests(RequestSource):
    """Requests derived from a profile: nothing is stored, any index is O(1).

    Errors are laid out by processing rank (rank % period in a residue set), so the number of
    errors among the first ``k`` processed requests is arithmetic, even for a million requests.
    """

    def __init__(
        self,
        *,
        key: int,
        n: int,
        profile: Profile,
        custom_id: str,
        secondary: tuple[str, float, Profile] | None = None,
        error_period: int = 0,
        error_residues: tuple[tuple[int, str], ...] = (),
    ) -> None:
        self.key = key
        self.n = n
        self.profile = profile
        self.custom_id = custom_id  # a format string with {i}
        self.secondary = secondary
        self.error_period = error_period
        self.error_residues = dict(error_residues)
        self.a, self.b, self.a_inv = _affine(n, key)

    def rank(self, index: int) -> int:
        """Return the processing rank of request ``index``."""
        return (self.a * index + self.b) % self.n if self.n > 1 else 0

    def request(self, index: int) -> Request:
        """Return request ``index`` (0-based), derived from the batch key and the index."""
        us = _uniforms(_mix(self.key ^ ((index + 1) * 0x9E3779B97F4A7C15 & _M64)))
        profile, custom_id = self.profile, self.custom_id.format(i=index)
        if self.secondary is not None and us[11] < self.secondary[1]:
            custom_id = self.secondary[0].format(i=index)
            profile = self.secondary[2]
        usage = _draw_usage(profile, us)
        err: str | None = None
        if self.error_period:
            err = self.error_residues.get(self.rank(index) % self.error_period)
        return Request(
            index,
            custom_id,
            workload_of(custom_id),
            *usage,
            err,
            ERROR_MESSAGES.get(err) if err else None,
        )

    def errors_before(self, processed: int, rank_to_index: Any) -> dict[str, int]:
        """Count errors among the first ``processed`` ranks arithmetically."""
        counts: dict[str, int] = {}
        period = self.error_period
        if not period:
            return counts
        for residue, err in self.error_residues.items():
            hits = (processed - 1 - residue) // period + 1 if processed > residue else 0
            if hits:
                counts[err] = counts.get(err, 0) + hits
        return counts


def _text_of(value: Any) -> str:
    """Return the concatenated text of a message content value or system prompt."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(_text_of(block) for block in value)
    if isinstance(value, dict):
        if isinstance(value.get("text"), str):
            return str(value["text"])
        return _text_of(value.get("content"))
    return ""


class SubmittedRequests(RequestSource):
    """Requests submitted over ``POST /v1/messages/batches``: results derived from params."""

    def __init__(self, key: int, requests: Sequence[dict[str, Any]]) -> None:
        self.key = key
        self.items = list(requests)
        self.n = len(self.items)

    def request(self, index: int) -> Request:
        """Return request ``index``: tokens from the text length, output capped by max_tokens."""
        item = self.items[index]
        params = item.get("params") or {}
        custom_id = str(item.get("custom_id"))
        model = str(params.get("model") or "")
        text = _text_of(params.get("system")) + "".join(
            _text_of(m) for m in params.get("messages") or [] if isinstance(m, dict)
        )
        err: str | None = None
        message: str | None = None
        max_tokens = params.get("max_tokens")
        if not model:
            err, message = "invalid_request_error", "model: Field required"
        elif max_tokens is None:
            err, message = "invalid_request_error", "max_tokens: Field required"
        elif not isinstance(max_tokens, int) or max_tokens < 1:
            err, message = "invalid_request_error", "max_tokens: must be at least 1"
        elif not params.get("messages"):
            err, message = "invalid_request_error", "messages: Field required"
        cap = max_tokens if isinstance(max_tokens, int) and max_tokens > 0 else 1
        geo: str | None = None
        if model in GEO_MODELS:
            geo = "us" if params.get("inference_geo") == "us" else "global"
        tools = params.get("tools") or []
        searches = sum(
            1 for t in tools if isinstance(t, dict) and str(t.get("type", "")).startswith("web_")
        )
        return Request(
            position=index,
            custom_id=custom_id,
            workload=workload_of(custom_id),
            model=model,
            input_tokens=max(1, len(text) // 4 + 8),
            output_tokens=min(cap, 10 + len(text) // 3),
            cache_read_tokens=0,
            cache_write_5m_tokens=0,
            cache_write_1h_tokens=0,
            web_searches=searches,
            inference_geo=geo,
            max_tokens=cap,
            error_type=err,
            error_message=message,
        )


# --- batches ------------------------------------------------------------------------------


@dataclass
class BatchSpec:
    """One Message Batch: when and where it was created and how its processing goes.

    ``duration`` is how long processing all requests would take; request of rank ``r``
    completes at ``created_at + duration * (r + 1) / n``. A cancel or the 24 h expiry cuts
    processing off: requests not done by then become ``canceled`` / ``expired``.
    """

    id: str
    key: int
    workspace_id: str
    api_key_id: str
    workload: str
    created_at: datetime
    duration: timedelta
    source: RequestSource
    cancel_initiated_at: datetime | None = None
    deleted_at: datetime | None = None

    @property
    def n(self) -> int:
        """Return the number of requests."""
        return self.source.n

    @property
    def expires_at(self) -> datetime:
        """Return created_at + 24 h."""
        return self.created_at + EXPIRY

    @property
    def archived_from(self) -> datetime:
        """Return when the results stop being available (created_at + 29 days)."""
        return self.created_at + ARCHIVE_AFTER

    def end(self) -> tuple[datetime, int, str]:
        """Return ``(ended_at, processed, fate_of_the_rest)`` of this batch.

        The rest (``n - processed`` requests, by rank) are ``canceled`` or ``expired``.
        """
        n = self.n
        natural = self.created_at + self.duration
        cancel = self.cancel_initiated_at
        if cancel is not None and cancel < min(natural, self.expires_at):
            done = _processed(n, cancel - self.created_at, self.duration)
            return min(cancel + CANCEL_LAG, natural, self.expires_at), done, "canceled"
        if natural > self.expires_at:
            return self.expires_at, _processed(n, EXPIRY, self.duration), "expired"
        return natural, n, "canceled"

    def rank_to_index(self, rank: int) -> int:
        """Return the index of the request processed ``rank``-th."""
        _, b, a_inv = _affine(self.n, self.key)
        return ((rank - b) * a_inv) % self.n if self.n > 1 else 0

    def ranks(self) -> Iterator[int]:
        """Yield request indexes in processing order (the order the results file uses)."""
        n = self.n
        _, b, a_inv = _affine(n, self.key)
        if n <= 1:
            yield from range(n)
            return
        for rank in range(n):
            yield ((rank - b) * a_inv) % n

    def outcome_counts(self) -> tuple[dict[str, int], dict[str, int]]:
        """Return ``(final counts by result type, errored counts by error type)``."""
        _, processed, rest = self.end()
        errors = self.source.errors_before(processed, self.rank_to_index)
        errored = sum(errors.values())
        counts = dict.fromkeys(RESULT_TYPES, 0)
        counts["succeeded"] = processed - errored
        counts["errored"] = errored
        counts[rest] += self.n - processed
        return counts, errors


def _processed(n: int, elapsed: timedelta, duration: timedelta) -> int:
    if duration.total_seconds() <= 0:
        return n
    return max(0, min(n, int(n * (elapsed / duration))))


@dataclass(frozen=True)
class BatchView:
    """A batch as the API shows it at one instant (the MessageBatch object's fields)."""

    id: str
    workspace_id: str
    processing_status: str
    counts: dict[str, int]  # processing, succeeded, errored, canceled, expired
    created_at: datetime
    ended_at: datetime | None
    expires_at: datetime
    cancel_initiated_at: datetime | None
    archived_at: datetime | None

    def to_api(self, base_url: str) -> dict[str, Any]:
        """Return the MessageBatch JSON object (``results_url`` points at ``base_url``)."""
        return {
            "id": self.id,
            "type": "message_batch",
            "processing_status": self.processing_status,
            "request_counts": self.counts,
            "created_at": iso(self.created_at),
            "ended_at": iso(self.ended_at) if self.ended_at else None,
            "expires_at": iso(self.expires_at),
            "cancel_initiated_at": (
                iso(self.cancel_initiated_at) if self.cancel_initiated_at else None
            ),
            "archived_at": iso(self.archived_at) if self.archived_at else None,
            "results_url": (
                f"{base_url}/v1/messages/batches/{self.id}/results" if self.ended_at else None
            ),
        }


# --- real-time calls ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RealtimeCall:
    """One real-time Messages API call, as the application's call log records it."""

    at: datetime
    workload: str
    endpoint: str
    model: str
    workspace_id: str
    api_key_id: str
    service_tier: str  # standard | priority
    priority: str  # high | normal
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_5m_tokens: int
    cache_write_1h_tokens: int
    web_searches: int
    inference_geo: str | None
    latency_ms: int
    request_id: str

    @property
    def tokens(self) -> tuple[int, int, int, int, int]:
        """Return the usage in :data:`TOKEN_TYPES` order."""
        return (
            self.input_tokens,
            self.cache_write_5m_tokens,
            self.cache_write_1h_tokens,
            self.cache_read_tokens,
            self.output_tokens,
        )

    @property
    def context_window(self) -> str:
        """Return the report's context-window tier of this call."""
        return context_window_of(
            self.input_tokens
            + self.cache_read_tokens
            + self.cache_write_5m_tokens
            + self.cache_write_1h_tokens
        )

    def to_log(self) -> dict[str, Any]:
        """Return the call-log JSON object of this call."""
        return {
            "timestamp": self.at.strftime("%Y-%m-%dT%H:%M:%S.")
            + f"{self.at.microsecond // 1000:03d}Z",
            "endpoint": self.endpoint,
            "workload": self.workload,
            "model": self.model,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_read_input_tokens": self.cache_read_tokens,
            "cache_creation_input_tokens": self.cache_write_5m_tokens + self.cache_write_1h_tokens,
            "cache_creation": {
                "ephemeral_5m_input_tokens": self.cache_write_5m_tokens,
                "ephemeral_1h_input_tokens": self.cache_write_1h_tokens,
            },
            "web_search_requests": self.web_searches,
            "latency_ms": self.latency_ms,
            "service_tier": self.service_tier,
            "priority": self.priority,
            "inference_geo": self.inference_geo,
            "workspace_id": self.workspace_id,
            "api_key_id": self.api_key_id,
            "request_id": self.request_id,
            "status": 200,
        }


# --- pricing ------------------------------------------------------------------------------

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


# --- usage events (what the reports aggregate) ------------------------------------------------


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


# --- ground truth -------------------------------------------------------------------------


@dataclass(frozen=True)
class Totals:
    """Token totals, request count and cost of a set of requests.

    ``cost_usd`` is the priced cost at the tier the requests ran at (batch rate for batches);
    ``standard_cost_usd`` the same tokens at the standard rate. Unpriced requests add tokens
    but no cost.
    """

    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_5m_tokens: int = 0
    cache_write_1h_tokens: int = 0
    web_searches: int = 0
    cost_usd: Decimal = _ZERO
    standard_cost_usd: Decimal = _ZERO
    unpriced_requests: int = 0

    @property
    def total_tokens(self) -> int:
        """Return the sum of every token type."""
        return (
            self.input_tokens
            + self.output_tokens
            + self.cache_read_tokens
            + self.cache_write_5m_tokens
            + self.cache_write_1h_tokens
        )

    @property
    def priced(self) -> bool:
        """Return True when no request in the set is unpriced."""
        return self.unpriced_requests == 0

    def __add__(self, other: Totals) -> Totals:
        return Totals(
            self.requests + other.requests,
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cache_read_tokens + other.cache_read_tokens,
            self.cache_write_5m_tokens + other.cache_write_5m_tokens,
            self.cache_write_1h_tokens + other.cache_write_1h_tokens,
            self.web_searches + other.web_searches,
            self.cost_usd + other.cost_usd,
            self.standard_cost_usd + other.standard_cost_usd,
            self.unpriced_requests + other.unpriced_requests,
        )

    @classmethod
    def of(
        cls,
        tokens: Sequence[int],
        web_searches: int,
        requests: int,
        cost: Decimal | None,
        standard: Decimal | None,
    ) -> Totals:
        """Build totals from a token tuple in :data:`TOKEN_TYPES` order."""
        priced = cost is not None
        return cls(
            requests=requests,
            input_tokens=tokens[0],
            cache_write_5m_tokens=tokens[1],
            cache_write_1h_tokens=tokens[2],
            cache_read_tokens=tokens[3],
            output_tokens=tokens[4],
            web_searches=web_searches,
            cost_usd=cost if cost is not None else _ZERO,
            standard_cost_usd=standard if standard is not None else _ZERO,
            unpriced_requests=0 if priced else requests,
        )


def _sum_totals(items: Iterable[Totals]) -> Totals:
    total = Totals()
    for item in items:
        total = total + item
    return total


@dataclass(frozen=True)
class BatchTruth:
    """What a collector should know about one batch as of ``now``.

    ``by_model`` (tokens and costs of the succeeded requests, per model) is filled once the
    batch has ended; archived batches keep it (billing does not disappear) but
    ``results_available`` is False, so a collector reading results cannot see it.
    """

    id: str
    workspace_id: str
    api_key_id: str
    workload: str  # the workload most of its requests carry
    processing_status: str
    request_count: int
    counts: dict[str, int]  # processing, succeeded, errored, canceled, expired
    created_at: datetime
    ended_at: datetime | None
    expires_at: datetime
    cancel_initiated_at: datetime | None
    archived_at: datetime | None
    results_available: bool
    by_model: dict[str, Totals]
    errors: dict[str, int]  # error type -> count
    error_samples: dict[str, str]  # error type -> one message

    @property
    def totals(self) -> Totals:
        """Return the sum over models."""
        return _sum_totals(self.by_model.values())

    @property
    def cost_usd(self) -> Decimal:
        """Return the batch-rate cost of the priced requests."""
        return self.totals.cost_usd

    @property
    def standard_cost_usd(self) -> Decimal:
        """Return what the same priced requests would have cost in real time."""
        return self.totals.standard_cost_usd

    @property
    def turnaround_seconds(self) -> float | None:
        """Return ended_at - created_at in seconds, or None while in progress."""
        return (self.ended_at - self.created_at).total_seconds() if self.ended_at else None


@dataclass(frozen=True)
class WorkloadTruth:
    """One workload's batch and real-time totals (batches by their majority workload)."""

    workload: str
    batches: int
    batch: Totals
    realtime: Totals


@dataclass(frozen=True)
class Truth:
    """Every aggregate the monitor should arrive at, as of simulated ``now``.

    Built from the scenario model directly, not from HTTP responses.
    """

    now: datetime
    batches: dict[str, BatchTruth]
    events: tuple[UsageEvent, ...]
    realtime_calls: tuple[RealtimeCall, ...]

    # -- batches

    def batch(self, batch_id: str) -> BatchTruth:
        """Return the truth of one batch."""
        return self.batches[batch_id]

    def batches_in(self, workspace_id: str) -> list[BatchTruth]:
        """Return the batches of one workspace, newest first."""
        found = [b for b in self.batches.values() if b.workspace_id == workspace_id]
        return sorted(found, key=lambda b: (b.created_at, b.id), reverse=True)

    def batch_totals(self, start: datetime | None = None, end: datetime | None = None) -> Totals:
        """Sum the succeeded requests of batches that ended in ``[start, end)``."""
        return _sum_totals(
            b.totals
            for b in self.batches.values()
            if b.ended_at is not None and _within(b.ended_at, start, end)
        )

    def result_counts(self) -> dict[str, int]:
        """Return requests by result type over every ended batch (plus ``processing``)."""
        out = dict.fromkeys(("processing", *RESULT_TYPES), 0)
        for b in self.batches.values():
            for name, count in b.counts.items():
                out[name] += count
        return out

    # -- workloads

    @property
    def workloads(self) -> dict[str, WorkloadTruth]:
        """Return per-workload totals: ended batches by majority workload, calls by workload."""
        batch: dict[str, list[Totals]] = {}
        count: dict[str, int] = {}
        for b in self.batches.values():
            if b.ended_at is None:
                continue
            batch.setdefault(b.workload, []).append(b.totals)
            count[b.workload] = count.get(b.workload, 0) + 1
        realtime: dict[str, list[Totals]] = {}
        for e in self.events:
            if e.product == "messages_api" and e.workload is not None:
                realtime.setdefault(e.workload, []).append(_event_totals(e))
        names = sorted(set(batch) | set(realtime))
        return {
            name: WorkloadTruth(
                name,
                count.get(name, 0),
                _sum_totals(batch.get(name, [])),
                _sum_totals(realtime.get(name, [])),
            )
            for name in names
        }

    # -- usage and cost

    def usage(
        self,
        start: datetime | None = None,
        end: datetime | None = None,
        **filters: str | None,
    ) -> Totals:
        """Sum usage events in ``[start, end)`` matching ``filters`` (event attribute = value).

        Filter names are UsageEvent fields: product, service_tier, model, workspace_id,
        api_key_id, context_window, inference_geo, batch_id, workload.
        """
        return _sum_totals(_event_totals(e) for e in self._events(start, end, filters))

    def usage_by(
        self,
        width: str,
        keys: Sequence[str] = (),
        start: datetime | None = None,
        end: datetime | None = None,
        **filters: str | None,
    ) -> dict[tuple[Any, ...], Totals]:
        """Group usage by ``(bucket start, *keys)`` for buckets of ``width`` (1m|1h|1d)."""
        out: dict[tuple[Any, ...], Totals] = {}
        for e in self._events(start, end, filters):
            group = (floor_time(e.at, width), *(getattr(e, k) for k in keys))
            out[group] = out.get(group, Totals()) + _event_totals(e)
        return out

    def realtime_by_hour(self) -> dict[tuple[datetime, str, str, str, str], Totals]:
        """Return real-time usage per (hour, model, workspace_id, api_key_id, service_tier)."""
        grouped = self.usage_by(
            "1h", ("model", "workspace_id", "api_key_id", "service_tier"), product="messages_api"
        )
        return {key: value for key, value in grouped.items()}  # type: ignore[misc]

    def billed_by_day(
        self, start: datetime | None = None, end: datetime | None = None, **filters: str | None
    ) -> dict[date, Decimal]:
        """Return what the cost report bills per UTC day, in USD (no Priority Tier)."""
        out: dict[date, Decimal] = {}
        for e in self._events(start, end, filters):
            if e.service_tier == "priority":
                continue
            day = e.at.date()
            out[day] = out.get(day, _ZERO) + e.billed_usd
        return out

    def computed_by_day(
        self, start: datetime | None = None, end: datetime | None = None, **filters: str | None
    ) -> dict[date, Decimal]:
        """Return the pricing engine's cost per UTC day of the billed (non-priority) usage."""
        out: dict[date, Decimal] = {}
        for e in self._events(start, end, filters):
            if e.service_tier == "priority" or e.cost_usd is None:
                continue
            day = e.at.date()
            out[day] = out.get(day, _ZERO) + e.cost_usd
        return out

    def unpriced_models(self) -> set[str]:
        """Return the models that have usage but no price in the pricing engine."""
        return {e.model for e in self.events if e.cost_usd is None}

    def _events(
        self, start: datetime | None, end: datetime | None, filters: dict[str, str | None]
    ) -> Iterator[UsageEvent]:
        for e in self.events:
            if not _within(e.at, start, end):
                continue
            if all(getattr(e, k) == v for k, v in filters.items()):
                yield e


def _within(at: datetime, start: datetime | None, end: datetime | None) -> bool:
    return (start is None or at >= start) and (end is None or at < end)


def _event_totals(e: UsageEvent) -> Totals:
    return Totals.of(e.tokens, e.web_searches, e.requests, e.cost_usd, e.standard_cost_usd)


# --- the scenario -------------------------------------------------------------------------


@dataclass
class _Group:
    """Sums over one batch's succeeded requests of one (model, geo, context window)."""

    tokens: list[int]
    web_searches: int = 0
    requests: int = 0
    amounts: list[Decimal] = field(default_factory=lambda: [_ZERO] * 6)
    cost: Decimal = _ZERO
    standard: Decimal = _ZERO
    unpriced: int = 0


@dataclass
class _BatchAggregate:
    """What one ended batch's processed requests add up to."""

    groups: dict[tuple[str, str | None, str], _Group]
    errors: dict[str, int]
    samples: dict[str, str]


@dataclass
class Scenario:
    """A simulated organisation over a span of simulated time (and the simulator's state)."""

    name: str
    seed: int
    start: datetime
    end: datetime
    workspaces: tuple[Workspace, ...]
    api_keys: tuple[ApiKey, ...]
    batches: list[BatchSpec]
    calls: tuple[RealtimeCall, ...]
    admin_key: str = ADMIN_KEY
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._lock = threading.RLock()
        self._by_id = {b.id: b for b in self.batches}
        self._pricer = Pricer()
        self._agg_cache: dict[tuple[str, datetime, int], _BatchAggregate] = {}
        self._call_events: list[UsageEvent] | None = None
        self._created = 0
        self._version = 0  # bumped by every mutation, so cached views stay honest
        self._events_cache: dict[tuple[datetime, int], list[UsageEvent]] = {}
        self._sorted: list[BatchSpec] = []
        self._resort()

    # -- identities

    @property
    def default_workspace(self) -> Workspace:
        """Return the organisation's default workspace."""
        return next(w for w in self.workspaces if w.is_default)

    def workspace(self, workspace_id: str) -> Workspace:
        """Return a workspace by id."""
        return next(w for w in self.workspaces if w.id == workspace_id)

    def key_for_secret(self, secret: str) -> ApiKey | None:
        """Return the workspace API key with this secret, if any."""
        return next((k for k in self.api_keys if k.secret == secret), None)

    # -- batches as the API shows them

    def batch_spec(self, batch_id: str) -> BatchSpec | None:
        """Return the spec of a batch (None if unknown)."""
        return self._by_id.get(batch_id)

    def view(self, spec: BatchSpec, now: datetime) -> BatchView:
        """Return the MessageBatch of ``spec`` as of ``now``."""
        ended_at, _, _ = spec.end()
        cancel = spec.cancel_initiated_at
        if cancel is not None and cancel > now:
            cancel = None
        archived = spec.archived_from if now >= spec.archived_from else None
        if now < ended_at:
            status = "canceling" if cancel is not None else "in_progress"
            counts = {"processing": spec.n, **dict.fromkeys(RESULT_TYPES, 0)}
            return BatchView(
                spec.id,
                spec.workspace_id,
                status,
                counts,
                spec.created_at,
                None,
                spec.expires_at,
                cancel,
                archived,
            )
        final, _ = spec.outcome_counts()
        return BatchView(
            spec.id,
            spec.workspace_id,
            "ended",
            {"processing": 0, **final},
            spec.created_at,
            ended_at,
            spec.expires_at,
            cancel,
            archived,
        )

    def visible_batches(self, workspace_id: str, now: datetime) -> list[BatchSpec]:
        """Return the workspace's batches that exist at ``now``, newest first."""
        with self._lock:
            return [
                b
                for b in self._sorted
                if b.workspace_id == workspace_id
                and b.created_at <= now
                and (b.deleted_at is None or b.deleted_at > now)
            ]

    def _resort(self) -> None:
        self._sorted = sorted(self.batches, key=lambda b: (b.created_at, b.id), reverse=True)

    # -- mutations made over HTTP

    def create_batch(
        self,
        workspace_id: str,
        api_key_id: str,
        requests: Any,
        now: datetime,
    ) -> BatchSpec:
        """Record a batch submitted at ``now``; it runs for a few simulated minutes.

        Raises ValueError with the API's message when the body is invalid.
        """
        if not isinstance(requests, list) or not requests:
            raise ValueError("requests: Field required (at least one request)")
        if len(requests) > 100_000:
            raise ValueError("requests: a batch holds at most 100,000 requests")
        seen: set[str] = set()
        for pos, item in enumerate(requests):
            if not isinstance(item, dict):
                raise ValueError(f"requests.{pos}: Input should be an object")
            custom_id = item.get("custom_id")
            if not isinstance(custom_id, str) or not _CUSTOM_ID.match(custom_id):
                raise ValueError(
                    f"requests.{pos}.custom_id: String should match pattern "
                    "'^[a-zA-Z0-9_-]{1,64}$'"
                )
            if custom_id in seen:
                raise ValueError(
                    f"requests.{pos}.custom_id: Duplicate custom_id {custom_id!r}; "
                    "custom_id must be unique within a batch"
                )
            seen.add(custom_id)
            params = item.get("params")
            if not isinstance(params, dict):
                raise ValueError(f"requests.{pos}.params: Field required")
            if params.get("stream"):
                raise ValueError(f"requests.{pos}.params.stream: streaming is not supported")
        with self._lock:
            self._created += 1
            key = _mix(_str_key(f"{self.name}:{self.seed}:created:{self._created}"))
            source = SubmittedRequests(key, requests)
            counts: dict[str, int] = {}
            for item in requests:
                name = workload_of(str(item["custom_id"]))
                counts[name] = counts.get(name, 0) + 1
            spec = BatchSpec(
                id=_sim_id("msgbatch_01", key),
                key=key,
                workspace_id=workspace_id,
                api_key_id=api_key_id,
                workload=max(sorted(counts), key=lambda w: counts[w]),
                created_at=now,
                # Deterministic "a few minutes": 3 min plus half a second per request.
                duration=timedelta(seconds=180 + min(len(requests), 2_000) * 0.5),
                source=source,
            )
            self.batches.append(spec)
            self._by_id[spec.id] = spec
            self._resort()
            self._version += 1
            return spec

    def cancel_batch(self, batch_id: str, now: datetime) -> BatchSpec:
        """Initiate a cancel at ``now`` (no-op if it already ended or is canceling)."""
        with self._lock:
            spec = self._by_id[batch_id]
            ended_at, _, _ = spec.end()
            if now < ended_at and (
                spec.cancel_initiated_at is None or spec.cancel_initiated_at > now
            ):
                spec.cancel_initiated_at = now
                self._version += 1
            return spec

    def delete_batch(self, batch_id: str, now: datetime) -> BatchSpec:
        """Delete an ended batch at ``now`` (raises ValueError while still processing)."""
        with self._lock:
            spec = self._by_id[batch_id]
            if now < spec.end()[0]:
                raise ValueError(
                    f"Batch {batch_id} cannot be deleted while it is processing; cancel it first"
                )
            spec.deleted_at = now
            self._version += 1
            return spec

    # -- results

    def results(self, spec: BatchSpec) -> Iterator[tuple[Request, str]]:
        """Yield ``(request, result type)`` in results-file order (processing order)."""
        _, processed, rest = spec.end()
        source = spec.source
        for rank, index in enumerate(spec.ranks()):
            req = source.request(index)
            if rank >= processed:
                yield req, rest
            elif req.error_type is not None:
                yield req, "errored"
            else:
                yield req, "succeeded"

    def result_lines(self, spec: BatchSpec) -> Iterator[bytes]:
        """Yield the results file of an ended batch, one ``\\n``-terminated JSON line each."""
        dumps = orjson.dumps
        key = spec.key
        for req, kind in self.results(spec):
            yield dumps(result_object(req, kind, key)) + b"\n"

    # -- usage events and truth

    def _aggregate(self, spec: BatchSpec) -> _BatchAggregate:
        """Sum a batch's processed requests per (model, geo, context window); cached."""
        ended_at, processed, _ = spec.end()
        cache_key = (spec.id, ended_at, processed)
        cached = self._agg_cache.get(cache_key)
        if cached is not None:
            return cached
        agg = _BatchAggregate({}, {}, {})
        source = spec.source
        price = self._pricer.price
        for rank, index in enumerate(spec.ranks()):
            if rank >= processed:
                break
            req = source.request(index)
            if req.error_type is not None:
                agg.errors[req.error_type] = agg.errors.get(req.error_type, 0) + 1
                agg.samples.setdefault(req.error_type, req.error_message or "")
                continue
            gkey = (req.model, req.inference_geo, req.context_window)
            group = agg.groups.get(gkey)
            if group is None:
                group = agg.groups[gkey] = _Group([0, 0, 0, 0, 0])
            toks = req.tokens
            # Priced when the batch ended: that is when its usage is reported and billed.
            p = price(req.model, toks, req.web_searches, req.inference_geo, ended_at)
            for i in range(5):
                group.tokens[i] += toks[i]
            group.web_searches += req.web_searches
            group.requests += 1
            for i in range(6):
                group.amounts[i] += p.billed_batch[i]
            if p.priced:
                group.cost += p.batch
                group.standard += p.standard
            else:
                group.unpriced += 1
        with self._lock:
            self._agg_cache[cache_key] = agg
        return agg

    def _batch_events(self, spec: BatchSpec) -> list[UsageEvent]:
        ended_at = spec.end()[0]
        out = []
        for (model, geo, cw), agg in sorted(
            self._aggregate(spec).groups.items(), key=lambda kv: str(kv[0])
        ):
            priced = agg.unpriced == 0
            out.append(
                UsageEvent(
                    at=ended_at,
                    product="message_batches_api",
                    service_tier="batch",
                    model=model,
                    workspace_id=spec.workspace_id,
                    api_key_id=spec.api_key_id,
                    context_window=cw,
                    inference_geo=geo,
                    tokens=tuple(agg.tokens),  # type: ignore[arg-type]
                    web_searches=agg.web_searches,
                    requests=agg.requests,
                    amounts=tuple(agg.amounts),
                    cost_usd=agg.cost if priced else None,
                    standard_cost_usd=agg.standard if priced else None,
                    unpriced_requests=agg.unpriced,
                    batch_id=spec.id,
                    workload=spec.workload,
                )
            )
        return out

    def call_events(self) -> list[UsageEvent]:
        """Return one usage event per real-time call (priced once, then cached)."""
        if self._call_events is None:
            events = []
            price = self._pricer.price
            for c in self.calls:
                cw = c.context_window
                p = price(c.model, c.tokens, c.web_searches, c.inference_geo, c.at)
                amounts = p.billed_standard
                if c.service_tier == "priority":
                    # The cost reports never include Priority Tier usage.
                    amounts = (_ZERO,) * 6
                events.append(
                    UsageEvent(
                        at=c.at,
                        product="messages_api",
                        service_tier=c.service_tier,
                        model=c.model,
                        workspace_id=c.workspace_id,
                        api_key_id=c.api_key_id,
                        context_window=cw,
                        inference_geo=c.inference_geo,
                        tokens=c.tokens,
                        web_searches=c.web_searches,
                        requests=1,
                        amounts=amounts,
                        cost_usd=p.standard if p.priced else None,
                        standard_cost_usd=p.standard if p.priced else None,
                        unpriced_requests=0 if p.priced else 1,
                        workload=c.workload,
                    )
                )
            self._call_events = events
        return self._call_events

    def usage_events(self, now: datetime) -> list[UsageEvent]:
        """Return every usage event at or before ``now``, oldest first (do not mutate it)."""
        with self._lock:
            specs = list(self.batches)
            key = (now, self._version)
            cached = self._events_cache.get(key)
        if cached is not None:
            return cached
        events = [e for e in self.call_events() if e.at <= now]
        for spec in specs:
            if spec.end()[0] <= now:
                events.extend(self._batch_events(spec))
        events.sort(key=lambda e: e.at)
        with self._lock:
            if len(self._events_cache) > 8:
                self._events_cache.clear()
            self._events_cache[key] = events
        return events

    def truth(self, now: datetime | None = None) -> Truth:
        """Compute every aggregate the monitor should reach as of ``now`` (default: end)."""
        now = self.end if now is None else now
        with self._lock:
            specs = list(self.batches)
        batches: dict[str, BatchTruth] = {}
        for spec in specs:
            if spec.created_at > now or (spec.deleted_at is not None and spec.deleted_at <= now):
                continue
            view = self.view(spec, now)
            by_model: dict[str, Totals] = {}
            errors: dict[str, int] = {}
            samples: dict[str, str] = {}
            if view.ended_at is not None:
                agg = self._aggregate(spec)
                errors, samples = dict(agg.errors), dict(agg.samples)
                for (model, _geo, _cw), a in agg.groups.items():
                    priced = a.unpriced == 0
                    part = Totals.of(
                        tuple(a.tokens),
                        a.web_searches,
                        a.requests,
                        a.cost if priced else None,
                        a.standard if priced else None,
                    )
                    by_model[model] = by_model.get(model, Totals()) + part
            batches[spec.id] = BatchTruth(
                id=spec.id,
                workspace_id=spec.workspace_id,
                api_key_id=spec.api_key_id,
                workload=spec.workload,
                processing_status=view.processing_status,
                request_count=spec.n,
                counts=view.counts,
                created_at=spec.created_at,
                ended_at=view.ended_at,
                expires_at=spec.expires_at,
                cancel_initiated_at=view.cancel_initiated_at,
                archived_at=view.archived_at,
                results_available=view.ended_at is not None and view.archived_at is None,
                by_model=by_model,
                errors=errors,
                error_samples=samples,
            )
        calls = tuple(c for c in self.calls if c.at <= now)
        return Truth(now, batches, tuple(self.usage_events(now)), calls)

    # -- call logs

    def write_call_logs(
        self,
        path: str | Path,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        append: bool = False,
    ) -> int:
        """Write the real-time calls in ``[start, end)`` as JSONL call-log lines; return count."""
        count = 0
        with open(path, "ab" if append else "wb") as fh:
            for call in self.calls:
                if _within(call.at, start, end):
                    fh.write(orjson.dumps(call.to_log()) + b"\n")
                    count += 1
        return count


def result_object(req: Request, kind: str, batch_key: int) -> dict[str, Any]:
    """Return the results-file object of one request (shapes from the reference §1.4)."""
    if kind == "succeeded":
        w5, w1 = req.cache_write_5m_tokens, req.cache_write_1h_tokens
        wide = batch_key ^ (req.position * 0xD1B54A32D192ED03 & _M64)
        return {
            "custom_id": req.custom_id,
            "result": {
                "type": "succeeded",
                "message": {
                    "id": "msg_01" + _b62(wide, 22),
                    "type": "message",
                    "role": "assistant",
                    "model": req.model,
                    "content": [{"type": "text", "text": f"Simulated reply to {req.custom_id}."}],
                    "stop_reason": (
                        "max_tokens" if req.output_tokens >= req.max_tokens else "end_turn"
                    ),
                    "stop_sequence": None,
                    "usage": {
                        "input_tokens": req.input_tokens,
                        "output_tokens": req.output_tokens,
                        "cache_creation_input_tokens": w5 + w1,
                        "cache_read_input_tokens": req.cache_read_tokens,
                        "cache_creation": {
                            "ephemeral_5m_input_tokens": w5,
                            "ephemeral_1h_input_tokens": w1,
                        },
                        "server_tool_use": (
                            {"web_search_requests": req.web_searches, "web_fetch_requests": 0}
                            if req.web_searches
                            else None
                        ),
                        "service_tier": "batch",
                        "inference_geo": req.inference_geo,
                        "speed": None,
                        "output_tokens_details": {"thinking_tokens": 0},
                    },
                },
            },
        }
    if kind == "errored":
        wide = batch_key ^ (req.position * 0x2545F4914F6CDD1D & _M64)
        return {
            "custom_id": req.custom_id,
            "result": {
                "type": "errored",
                "error": {
                    "type": "error",
                    "error": {"type": req.error_type, "message": req.error_message},
                    "request_id": "req_011C" + _b62(wide, 20),
                },
            },
        }
    return {"custom_id": req.custom_id, "result": {"type": kind}}


# --- scenario builders --------------------------------------------------------------------

CHAT = Profile(
    models=(("claude-sonnet-4-6", 0.75), ("claude-haiku-4-5", 0.25)),
    input=(150, 3_000),
    output=(40, 900),
    max_tokens=1_024,
    cache_read=0.8,
    cache_read_size=(2_000, 6_000),
    cache_write_5m=0.1,
    cache_write_size=(2_000, 6_000),
)
CODEREVIEW = Profile(
    models=(("claude-opus-4-7", 0.5), ("claude-sonnet-5-5", 0.5)),
    input=(2_000, 40_000),
    output=(200, 4_000),
    max_tokens=8_192,
    cache_read=0.5,
    cache_read_size=(5_000, 30_000),
    cache_write_5m=0.15,
    cache_write_1h=0.05,
    cache_write_size=(5_000, 30_000),
    geo_us=0.3,
)
CONTENTGEN = Profile(
    models=(("claude-sonnet-4-6", 0.6), ("claude-haiku-4-5", 0.25), ("claude-sonnet-5-5", 0.15)),
    input=(300, 6_000),
    output=(300, 3_000),
    max_tokens=4_096,
    cache_read=0.7,
    cache_read_size=(3_000, 12_000),
    cache_write_5m=0.05,
    cache_write_1h=0.05,
    cache_write_size=(3_000, 12_000),
    geo_us=0.1,
)
CLASSIFY = Profile(
    models=(("claude-haiku-5-5", 0.8), ("claude-haiku-4-5", 0.2)),
    input=(100, 2_500),
    output=(5, 60),
    max_tokens=64,
    cache_read=0.6,
    cache_read_size=(1_500, 4_000),
    cache_write_5m=0.05,
    cache_write_size=(1_500, 4_000),
)
WEEKLY = Profile(
    models=(
        ("claude-opus-4-7", 0.35),
        ("claude-sonnet-5-5", 0.3),
        ("claude-haiku-5-5", 0.3),
        (UNKNOWN_MODEL, 0.05),
    ),
    input=(5_000, 60_000),
    output=(1_000, 8_000),
    max_tokens=16_000,
    cache_read=0.3,
    cache_read_size=(10_000, 50_000),
    cache_write_1h=0.2,
    cache_write_size=(10_000, 50_000),
    web_search=0.3,
    geo_us=0.2,
    long_prompt=0.35,
    long_prompt_size=(110_000, 260_000),
)
RESEARCH = Profile(
    models=(("claude-sonnet-5-5", 0.7), ("claude-opus-4-7", 0.25), (UNKNOWN_MODEL, 0.05)),
    input=(500, 20_000),
    output=(300, 4_000),
    max_tokens=8_192,
    cache_read=0.3,
    cache_write_5m=0.1,
    web_search=0.6,
    geo_us=0.15,
)
LARGE = Profile(
    models=(("claude-haiku-4-5", 0.7), ("claude-sonnet-4-6", 0.3)),
    input=(120, 2_400),
    output=(8, 400),
    max_tokens=512,
    cache_read=0.7,
    cache_read_size=(1_024, 4_096),
    cache_write_5m=0.02,
    cache_write_size=(1_024, 4_096),
    levels=16,
)

_PROFILES = {
    "contentgen": CONTENTGEN,
    "classify": CLASSIFY,
    "weekly_report": WEEKLY,
    "codereview": CODEREVIEW,
}
_MIXED_ERRORS = ((3, "overloaded_error"), (17, "invalid_request_error"), (31, "rate_limit_error"))


class _Builder:
    """Accumulates workspaces, batches and calls for one scenario, deterministically."""

    def __init__(self, name: str, seed: int, start: datetime, days: float) -> None:
        self.name, self.seed, self.start = name, seed, start
        self.end = start + timedelta(days=days)
        self.rng = random.Random(f"{name}:{seed}")
        self.workspaces: list[Workspace] = []
        self.keys: list[ApiKey] = []
        self.batches: list[BatchSpec] = []
        self.calls: list[RealtimeCall] = []

    def workspace(self, short: str, name: str, *, default: bool = False) -> Workspace:
        ws = Workspace(
            id=f"wrkspc_{short}",
            name=name,
            api_key=f"sk-ant-api03-sim-{short}",
            api_key_id=f"apikey_sim_{short}",
            is_default=default,
        )
        self.workspaces.append(ws)
        self.keys.append(ApiKey(ws.api_key_id, ws.api_key, ws.id, f"{name} batch key"))
        return ws

    def key_of(self, ws: Workspace) -> ApiKey:
        return next(k for k in self.keys if k.id == ws.api_key_id)

    def app_key(self, ws: Workspace, short: str) -> ApiKey:
        key = ApiKey(
            f"apikey_sim_{short}", f"sk-ant-api03-sim-{short}", ws.id, f"{ws.name} {short}"
        )
        self.keys.append(key)
        return key

    def batch(
        self,
        ws: Workspace,
        workload: str,
        created_at: datetime,
        n: int,
        duration: timedelta,
        *,
        custom_id: str | None = None,
        profile: Profile | None = None,
        secondary: tuple[str, float, Profile] | None = None,
        errors: tuple[tuple[int, str], ...] = (),
        error_period: int = 0,
        cancel_after: timedelta | None = None,
    ) -> BatchSpec:
        index = len(self.batches)
        key = _mix(_str_key(f"{self.name}:{self.seed}:batch:{index}"))
        # Sub-second creation stamps, like the real API's.
        created_at = created_at.replace(microsecond=key % 1_000_000)
        source = GeneratedRequests(
            key=key,
            n=n,
            profile=profile or _PROFILES[workload],
            custom_id=custom_id or f"{workload}-{{i}}",
            secondary=secondary,
            error_period=error_period if errors else 0,
            error_residues=errors,
        )
        spec = BatchSpec(
            id=_sim_id("msgbatch_01", key),
            key=key,
            workspace_id=ws.id,
            api_key_id=ws.api_key_id,
            workload=workload,
            created_at=created_at,
            duration=duration,
            source=source,
            cancel_initiated_at=(created_at + cancel_after) if cancel_after else None,
        )
        self.batches.append(spec)
        return spec

    def traffic(
        self,
        *,
        workload: str,
        endpoint: str,
        ws: Workspace,
        key: ApiKey,
        profile: Profile,
        per_hour: float,
        hours: Any,  # callable(datetime) -> activity factor
        latency: tuple[int, int],
        urgent: float = 0.0,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> None:
        """Generate real-time calls hour by hour (Poisson-like counts, uniform times)."""
        rng = random.Random(f"{self.name}:{self.seed}:calls:{workload}")
        hour = floor_time(start or self.start, "1h")
        stop = end or self.end
        while hour < stop:
            rate = per_hour * hours(hour)
            count = _poisson(rng, rate) if rate > 0 else 0
            stamps = sorted(rng.random() * 3600 for _ in range(count))
            for offset in stamps:
                at = hour + timedelta(seconds=offset)
                if at >= stop:
                    continue
                us = _uniforms(rng.getrandbits(64))
                model, inp, out, read, w5, w1, searches, geo, _ = _draw_usage(profile, us)
                is_urgent = us[12] < urgent
                lo, hi = latency
                # Latency grows with the output length, plus noise.
                out_share = min(1.0, out / max(1, profile.output[1]))
                self.calls.append(
                    RealtimeCall(
                        at=at,
                        workload=workload,
                        endpoint=endpoint,
                        model=model,
                        workspace_id=ws.id,
                        api_key_id=key.id,
                        service_tier="priority" if is_urgent else "standard",
                        priority="high" if is_urgent else "normal",
                        input_tokens=inp,
                        output_tokens=out,
                        cache_read_tokens=read,
                        cache_write_5m_tokens=w5,
                        cache_write_1h_tokens=w1,
                        web_searches=searches,
                        inference_geo=geo,
                        latency_ms=lo + int((hi - lo) * (0.8 * out_share + 0.2 * us[13])),
                        request_id="req_011C" + _b62(rng.getrandbits(64), 20),
                    )
                )
            hour += timedelta(hours=1)

    def build(self, options: dict[str, Any]) -> Scenario:
        self.calls.sort(key=lambda c: c.at)
        return Scenario(
            name=self.name,
            seed=self.seed,
            start=self.start,
            end=self.end,
            workspaces=tuple(self.workspaces),
            api_keys=tuple(self.keys),
            batches=self.batches,
            calls=tuple(self.calls),
            options=options,
        )


def _poisson(rng: random.Random, lam: float) -> int:
    if lam > 30:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    threshold, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= threshold:
            return k
        k += 1


def _diurnal(hour: datetime) -> float:
    """Return user-facing activity by UTC hour: low at night, peaking mid-afternoon."""
    if hour.hour < 5:
        return 0.3
    return 0.35 + 0.65 * max(0.0, math.sin(math.pi * (hour.hour - 5) / 17))


def _office(hour: datetime) -> float:
    """Return 1 during weekday office hours (09-18 UTC), else a trickle."""
    if hour.weekday() >= 5:
        return 0.05
    return 1.0 if 9 <= hour.hour < 18 else 0.05


def _build_org(b: _Builder, options: dict[str, Any]) -> None:
    prod = b.workspace("prod", "Production")
    research = b.workspace("research", "Research")
    default = b.workspace("default", "Default", default=True)
    chat_key = b.app_key(prod, "prod_chat")
    ci_key = b.app_key(default, "default_ci")
    rng = b.rng
    days = max(1, math.ceil((b.end - b.start) / timedelta(days=1)))

    # History: a batch older than 29 days (archived: listed, but no results).
    b.batch(
        prod,
        "classify",
        b.end - timedelta(days=35, hours=3),
        50,
        timedelta(minutes=8),
        custom_id="classify-archived-{i}",
    )
    b.batch(
        research,
        "contentgen",
        b.end - timedelta(days=31, hours=7),
        120,
        timedelta(minutes=47),
        errors=_MIXED_ERRORS,
        error_period=60,
    )

    for day in range(days):
        midnight = b.start + timedelta(days=day)
        # Nightly content generation (prod), with a few classification requests mixed in.
        b.batch(
            prod,
            "contentgen",
            midnight + timedelta(hours=1, minutes=rng.randint(0, 20)),
            rng.randint(240, 360),
            timedelta(minutes=rng.randint(35, 75)),
            secondary=("classify-{i}", 0.08, CLASSIFY),
            errors=_MIXED_ERRORS,
            error_period=97,
        )
        # Hourly classification (prod): small, fast, occasionally overloaded.
        for hour in range(24):
            created = midnight + timedelta(hours=hour, minutes=5, seconds=rng.randint(0, 50))
            errors: tuple[tuple[int, str], ...] = ()
            if rng.random() < 0.3:
                errors = ((7, "overloaded_error"),)
            b.batch(
                prod,
                "classify",
                created,
                rng.randint(20, 60),
                timedelta(minutes=rng.randint(3, 12), seconds=rng.randint(0, 59)),
                custom_id=f"classify-{created:%Y%m%d%H}-{{i:04d}}",
                errors=errors,
                error_period=40,
            )
        # Gray-zone code review on batch (default workspace), weekdays twice a day.
        if midnight.weekday() < 5:
            for hour in (12, 18):
                pr = rng.randint(1000, 9999)
                b.batch(
                    default,
                    "codereview",
                    midnight + timedelta(hours=hour, minutes=rng.randint(20, 40)),
                    rng.randint(15, 40),
                    timedelta(minutes=rng.randint(10, 30)),
                    custom_id=f"codereview-pr{pr}-{{i}}",
                    errors=((5, "rate_limit_error"),),
                    error_period=23,
                )
        # Weekly reports (research) on Mondays.
        if midnight.weekday() == 0:
            week = midnight.isocalendar().week
            b.batch(
                research,
                "weekly_report",
                midnight + timedelta(hours=6, minutes=rng.randint(0, 15)),
                40,
                timedelta(minutes=95),
                custom_id=f"weekly_report_{week}_{{i}}",
                errors=((11, "invalid_request_error"),),
                error_period=19,
            )

    # Odd ones out, placed relative to the span so every length of scenario has them.
    span = b.end - b.start
    b.batch(  # canceled 20 minutes in
        prod,
        "contentgen",
        b.start + span * 0.3,
        150,
        timedelta(hours=2),
        cancel_after=timedelta(minutes=20),
    )
    if span > timedelta(hours=30):
        b.batch(  # hits the 24 h expiry with a fifth unprocessed
            research,
            "contentgen",
            b.start + timedelta(hours=2),
            200,
            timedelta(hours=30),
            errors=_MIXED_ERRORS,
            error_period=50,
        )
    b.batch(  # runs slow: several hours
        research,
        "contentgen",
        b.start + span * 0.5,
        500,
        timedelta(hours=5, minutes=20),
        errors=_MIXED_ERRORS,
        error_period=80,
    )
    b.batch(  # near its expiry and still in progress at the end of the scenario
        research,
        "contentgen",
        b.end - timedelta(hours=22),
        180,
        timedelta(hours=30),
    )

    b.traffic(
        workload="chat",
        endpoint="/api/chat/reply",
        ws=prod,
        key=chat_key,
        profile=CHAT,
        per_hour=float(options.get("chat_per_hour", 30)),
        hours=_diurnal,
        latency=(600, 4_000),
    )
    b.traffic(
        workload="codereview",
        endpoint="/api/review/pull-request",
        ws=default,
        key=ci_key,
        profile=CODEREVIEW,
        per_hour=6,
        hours=_office,
        latency=(4_000, 40_000),
        urgent=0.25,
    )
    b.traffic(
        workload="research",
        endpoint="/api/research/query",
        ws=research,
        key=b.key_of(research),
        profile=RESEARCH,
        per_hour=3,
        hours=_office,
        latency=(8_000, 60_000),
    )


def _build_small(b: _Builder, options: dict[str, Any]) -> None:
    prod = b.workspace("prod", "Production")
    default = b.workspace("default", "Default", default=True)
    chat_key = b.app_key(prod, "prod_chat")
    t0 = b.start
    b.batch(  # archived history
        prod, "classify", t0 - timedelta(days=30), 12, timedelta(minutes=6)
    )
    b.batch(  # mixed errors and models
        prod,
        "contentgen",
        t0 + timedelta(hours=1),
        30,
        timedelta(minutes=40),
        secondary=("classify-{i}", 0.1, CLASSIFY),
        errors=((1, "overloaded_error"), (4, "invalid_request_error"), (8, "rate_limit_error")),
        error_period=10,
    )
    for k in range(3):
        b.batch(
            prod,
            "classify",
            t0 + timedelta(hours=2 + k, minutes=5),
            8 + k,
            timedelta(minutes=4 + k),
            custom_id=f"classify-{k}-{{i}}",
        )
    b.batch(  # weekly report with long prompts and the unknown model
        default,
        "weekly_report",
        t0 + timedelta(hours=3),
        16,
        timedelta(minutes=50),
        custom_id="weekly_report_{i}",
        profile=replace(
            WEEKLY,
            models=(("claude-haiku-5-5", 0.4), ("claude-opus-4-7", 0.3), (UNKNOWN_MODEL, 0.3)),
        ),
    )
    b.batch(  # code review on batch
        default,
        "codereview",
        t0 + timedelta(hours=4),
        10,
        timedelta(minutes=12),
        errors=((2, "api_error"),),
        error_period=7,
    )
    b.batch(  # canceled
        prod,
        "contentgen",
        t0 + timedelta(hours=5),
        20,
        timedelta(hours=1),
        cancel_after=timedelta(minutes=15),
    )
    b.batch(  # expires at 24 h with some requests left
        default,
        "contentgen",
        t0 + timedelta(hours=2),
        25,
        timedelta(hours=30),
    )
    b.batch(  # still in progress at the end
        prod,
        "contentgen",
        b.end - timedelta(hours=2),
        14,
        timedelta(hours=6),
    )
    b.traffic(
        workload="chat",
        endpoint="/api/chat/reply",
        ws=prod,
        key=chat_key,
        profile=CHAT,
        per_hour=float(options.get("chat_per_hour", 12)),
        hours=lambda h: 1.0,
        latency=(600, 4_000),
        start=t0 + timedelta(hours=9),
        end=t0 + timedelta(hours=12),
    )
    b.traffic(
        workload="codereview",
        endpoint="/api/review/pull-request",
        ws=default,
        key=b.key_of(default),
        profile=CODEREVIEW,
        per_hour=4,
        hours=lambda h: 1.0,
        latency=(4_000, 40_000),
        urgent=0.3,
        start=t0 + timedelta(hours=9),
        end=t0 + timedelta(hours=12),
    )


def _build_large(b: _Builder, options: dict[str, Any]) -> None:
    prod = b.workspace("prod", "Production")
    b.workspace("default", "Default", default=True)
    n = int(options.get("batch_requests", 100_000))
    b.batch(
        prod,
        "classify",
        b.start + timedelta(hours=1),
        n,
        timedelta(hours=2),
        custom_id="classify-{i}",
        profile=LARGE,
        errors=((13, "overloaded_error"), (501, "rate_limit_error")),
        error_period=1000,
    )


_BUILDERS = {"org": (_build_org, 7.0), "small": (_build_small, 2.0), "large": (_build_large, 1.0)}
SCENARIOS: tuple[str, ...] = tuple(_BUILDERS)


def build_scenario(
    name: str = "org",
    *,
    seed: int = 0,
    start: datetime | None = None,
    days: float | None = None,
    **options: Any,
) -> Scenario:
    """Build scenario ``name`` (org | small | large), fully determined by its arguments.

    ``start`` (default 2026-11-15T00:00Z) and ``days`` (org 7, small 2, large 1) set the span.
    Options: ``batch_requests`` (large), ``chat_per_hour`` (org, small).
    """
    if name not in _BUILDERS:
        raise ValueError(f"unknown scenario {name!r}; choose one of {', '.join(SCENARIOS)}")
    build, default_days = _BUILDERS[name]
    begin = (start or DEFAULT_START).astimezone(UTC)
    builder = _Builder(name, seed, begin, default_days if days is None else days)
    build(builder, options)
    return builder.build(options)
