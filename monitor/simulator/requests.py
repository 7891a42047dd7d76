"""Batch requests: workload profiles, requests derived from a seed or submitted over HTTP.

A :class:`RequestSource` answers "what is request ``i`` of this batch" in O(1) without storing
anything (:class:`GeneratedRequests`), or from the JSON a client posted
(:class:`SubmittedRequests`); :func:`result_object` is the results-file line of one request.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from monitor.simulator.formats import context_window_of, workload_of
from monitor.simulator.seeded import M64, affine, b62, mix, uniforms

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


def draw_usage(profile: Profile, us: Sequence[float]) -> _Drawn:
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
        self.a, self.b, self.a_inv = affine(n, key)

    def rank(self, index: int) -> int:
        """Return the processing rank of request ``index``."""
        return (self.a * index + self.b) % self.n if self.n > 1 else 0

    def request(self, index: int) -> Request:
        """Return request ``index`` (0-based), derived from the batch key and the index."""
        us = uniforms(mix(self.key ^ ((index + 1) * 0x9E3779B97F4A7C15 & M64)))
        profile, custom_id = self.profile, self.custom_id.format(i=index)
        if self.secondary is not None and us[11] < self.secondary[1]:
            custom_id = self.secondary[0].format(i=index)
            profile = self.secondary[2]
        usage = draw_usage(profile, us)
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


def result_object(req: Request, kind: str, batch_key: int) -> dict[str, Any]:
    """Return the results-file object of one request (shapes from the reference §1.4)."""
    if kind == "succeeded":
        w5, w1 = req.cache_write_5m_tokens, req.cache_write_1h_tokens
        wide = batch_key ^ (req.position * 0xD1B54A32D192ED03 & M64)
        return {
            "custom_id": req.custom_id,
            "result": {
                "type": "succeeded",
                "message": {
                    "id": "msg_01" + b62(wide, 22),
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
        wide = batch_key ^ (req.position * 0x2545F4914F6CDD1D & M64)
        return {
            "custom_id": req.custom_id,
            "result": {
                "type": "errored",
                "error": {
                    "type": "error",
                    "error": {"type": req.error_type, "message": req.error_message},
                    "request_id": "req_011C" + b62(wide, 20),
                },
            },
        }
    return {"custom_id": req.custom_id, "result": {"type": kind}}
