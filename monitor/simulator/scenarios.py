"""The named, seeded scenarios (``org``, ``small``, ``large``) and how they are built.

:func:`build_scenario` is fully determined by its arguments: the workload profiles below, the
workspaces and keys, every batch's spec and the real-time call traffic of each scenario.
"""

from __future__ import annotations

import math
import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from monitor.simulator.batches import BatchSpec
from monitor.simulator.calls import RealtimeCall
from monitor.simulator.formats import floor_time
from monitor.simulator.organisation import ApiKey, Scenario, Workspace
from monitor.simulator.requests import GeneratedRequests, Profile, draw_usage
from monitor.simulator.seeded import b62, mix, sim_id, str_key, uniforms

DEFAULT_START = datetime(2026, 11, 15, tzinfo=UTC)
UNKNOWN_MODEL = "claude-nova-9"


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
        template: int | None = None,
    ) -> BatchSpec:
        """Add a batch; ``template`` (another batch's key) makes its requests that batch's."""
        index = len(self.batches)
        key = mix(str_key(f"{self.name}:{self.seed}:batch:{index}"))
        # Sub-second creation stamps, like the real API's.
        created_at = created_at.replace(microsecond=key % 1_000_000)
        source = GeneratedRequests(
            key=key if template is None else template,
            n=n,
            profile=profile or _PROFILES[workload],
            custom_id=custom_id or f"{workload}-{{i}}",
            secondary=secondary,
            error_period=error_period if errors else 0,
            error_residues=errors,
        )
        spec = BatchSpec(
            id=sim_id("msgbatch_01", key),
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
        stream: str = "",
    ) -> None:
        """Generate real-time calls hour by hour (Poisson-like counts, uniform times).

        ``stream`` tells apart the random streams of one workload sent from several places.
        """
        rng = random.Random(f"{self.name}:{self.seed}:calls:{workload}{stream}")
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
                us = uniforms(rng.getrandbits(64))
                model, inp, out, read, w5, w1, searches, geo, _ = draw_usage(profile, us)
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
                        request_id="req_011C" + b62(rng.getrandbits(64), 20),
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


# --- load: a big organisation (the load suite of tests/reliability) ---------------------------

_LOAD_WORKLOADS = ("classify", "contentgen", "codereview", "weekly_report")


def _build_load(b: _Builder, options: dict[str, Any]) -> None:
    """Build ``workspaces`` (100) workspaces and ``batches_per_day`` (5,000) batches a day.

    Most batches are small (``batch_requests``: 1 to 60 requests, log-uniform); ``big_per_day``
    (1) of them a day has ``big_requests`` (100,000) requests, all in the last ``batch_days``
    of the span (default: all of it). Every workspace also sends
    real-time chat around the clock (``chat_per_hour`` in all, default 200), so every hour of
    the span has usage in many workspaces.
    """
    n_ws = int(options.get("workspaces", 100))
    per_day = int(options.get("batches_per_day", 5_000))
    big_per_day = int(options.get("big_per_day", 1))
    big_n = int(options.get("big_requests", 100_000))
    lo, hi = options.get("batch_requests", (1, 60))
    spaces = [b.workspace(f"load{i:03d}", f"Load {i:03d}", default=i == 0) for i in range(n_ws)]
    rng = b.rng
    span = (b.end - b.start).total_seconds()
    span = min(span, float(options.get("batch_days", span / 86_400)) * 86_400)
    first = b.end - timedelta(seconds=span)
    total = int(per_day * span / 86_400)
    bigs = max(0, int(big_per_day * span / 86_400))
    for _ in range(total):
        created = first + timedelta(seconds=rng.random() * span * 0.98)
        n = int(math.exp(rng.uniform(math.log(lo), math.log(hi + 1))))
        errors: tuple[tuple[int, str], ...] = ()
        if rng.random() < 0.2:
            errors = ((7, "overloaded_error"),)
        b.batch(
            spaces[rng.randrange(n_ws)],
            _LOAD_WORKLOADS[rng.randrange(len(_LOAD_WORKLOADS))],
            created,
            max(1, n),
            timedelta(minutes=rng.randint(2, 90), seconds=rng.randint(0, 59)),
            errors=errors,
            error_period=40,
        )
    for i in range(bigs):
        b.batch(
            spaces[rng.randrange(n_ws)],
            "classify",
            first + timedelta(seconds=span * (i + 0.5) / bigs * 0.9),
            big_n,
            timedelta(hours=2),
            custom_id=f"bulk{i}-{{i}}",
            profile=LARGE,
            errors=((13, "overloaded_error"), (501, "rate_limit_error")),
            error_period=1000,
        )
    per_ws = float(options.get("chat_per_hour", 200)) / n_ws
    for ws in spaces:
        b.traffic(
            workload="chat",
            endpoint="/api/chat/reply",
            ws=ws,
            key=b.key_of(ws),
            profile=CHAT,
            per_hour=per_ws,
            hours=_diurnal,
            latency=(600, 4_000),
            stream=f":{ws.id}",
        )


# --- weekly: two weeks with planted causes of change (the weekly report's scenario) ---------

# Every workload but support and research draws from the same shape, so the cache share of a
# model stays put when work moves between them (only the planted cache-miss streak moves it).
_SHAPE: dict[str, Any] = {
    "input": (300, 6_000),
    "output": (150, 2_000),
    "max_tokens": 4_096,
    "cache_read": 0.6,
    "cache_read_size": (2_000, 10_000),
    "cache_write_5m": 0.08,
    "cache_write_1h": 0.04,
    "cache_write_size": (2_000, 10_000),
    "geo_us": 0.1,
}
WEEKLY_GROWTH = Profile(models=(("claude-sonnet-4-6", 0.7), ("claude-opus-4-7", 0.3)), **_SHAPE)
WEEKLY_DIGEST = Profile(models=(("claude-sonnet-4-6", 0.6), ("claude-opus-4-7", 0.4)), **_SHAPE)
WEEKLY_STEADY = Profile(models=(("claude-opus-4-7", 0.5), ("claude-sonnet-4-6", 0.5)), **_SHAPE)
WEEKLY_REVIEW = Profile(models=(("claude-sonnet-4-6", 1.0),), **_SHAPE)
WEEKLY_SUPPORT = Profile(
    models=(("claude-haiku-4-5", 1.0),),
    input=(150, 2_000),
    output=(40, 800),
    max_tokens=1_024,
    cache_read=0.85,
    cache_read_size=(3_000, 9_000),
    cache_write_5m=0.05,
    cache_write_size=(3_000, 9_000),
)
# Heavy cache reads on Sonnet 5.5, whose cache-read price was cut on 2026-10-07.
WEEKLY_RESEARCH = Profile(
    models=(("claude-sonnet-5-5", 1.0),),
    input=(500, 5_000),
    output=(200, 2_000),
    max_tokens=4_096,
    cache_read=0.9,
    cache_read_size=(50_000, 150_000),
)
WEEKLY_PLANTED_START = datetime(2026, 9, 28, tzinfo=UTC)  # a Monday; the cut falls in week 2
WEEKLY_QUIET_START = datetime(2026, 11, 2, tzinfo=UTC)  # a Monday; no price change near it
# What the planted version changes in its second week (scenario.options["planted"]).
WEEKLY_PLAN: dict[str, Any] = {
    "volume": "wrkspc_growth",  # contentgen: 9 batches instead of 7, the same requests each
    "tier_shift": "wrkspc_digest",  # digest: its requests sent in real time from Wednesday on
    "model_mix": "wrkspc_review",  # review: the same calls on claude-opus-4-7, not sonnet-4-6
    "cache": "wrkspc_support",  # support: cache reads missed Wednesday to Saturday
    "price": "wrkspc_research",  # research: the same calls; Sonnet 5.5 cache reads got cheaper
    "slow_batches": "wrkspc_growth",  # contentgen batches take 2.5 h instead of 40 min
    "failed_batch": "wrkspc_growth",  # one contentgen batch whose every request errors
    "cache_miss_days": (2, 3, 4, 5),  # days of week 2 (Monday = 0)
}


def _copy_call(call: RealtimeCall, shift: timedelta, **changes: Any) -> RealtimeCall:
    """Return ``call`` ``shift`` later, with a request id of its own and ``changes`` applied."""
    rid = "req_011C" + b62(str_key(f"{call.request_id}:{shift}"), 20)
    return replace(call, at=call.at + shift, request_id=rid, **changes)


def _build_weekly(b: _Builder, options: dict[str, Any]) -> None:
    """Two weeks; in the planted version the second week changes in one workspace per cause.

    Every workspace repeats its first week exactly in the second (the same batch requests,
    the same calls seven days later) except for its planted change, so each cause's amount is
    the change of its own workspace and nothing else moves. ``planted=False`` repeats
    everything unchanged (a week with no change).
    """
    planted = bool(options.get("planted", True))
    week = timedelta(days=7)
    w1, w2 = b.start, b.start + week
    growth = b.workspace("growth", "Growth")
    digest = b.workspace("digest", "Digest")
    review = b.workspace("review", "Review")
    support = b.workspace("support", "Support")
    research = b.workspace("research", "Research")
    steady = b.workspace("steady", "Steady", default=True)
    digest_key = b.app_key(digest, "digest_app")
    review_key = b.app_key(review, "review_app")
    support_key = b.app_key(support, "support_app")
    research_key = b.app_key(research, "research_app")

    def template(name: str) -> int:
        return mix(str_key(f"{b.name}:{b.seed}:template:{name}"))

    growth_t, digest_t, steady_t = template("contentgen"), template("digest"), template("nightly")
    minute = timedelta(minutes=1)
    for day in range(14):
        midnight = w1 + timedelta(days=day)
        second = day >= 7 and planted
        # contentgen: one identical batch a day; planted week 2 adds two (Wednesday and Friday
        # afternoons), and every week-2 batch takes 2.5 h instead of 40 minutes.
        extra = (13,) if second and day % 7 in (2, 4) else ()
        for hour in (1, *extra):
            b.batch(
                growth, "contentgen", midnight + timedelta(hours=hour), 1_000,
                150 * minute if second else 40 * minute, profile=WEEKLY_GROWTH,
                template=growth_t,
            )  # fmt: skip
        # digest: one identical batch a day; planted week 2 sends its requests in real time
        # from Wednesday on (the same requests, as calls two hours long).
        at = midnight + timedelta(hours=2)
        if second and day % 7 >= 2:
            source = GeneratedRequests(
                key=digest_t, n=600, profile=WEEKLY_DIGEST, custom_id="digest-{i}"
            )
            for i in range(source.n):
                req = source.request(i)
                b.calls.append(
                    RealtimeCall(
                        at=at + timedelta(seconds=12 * i),
                        workload="digest",
                        endpoint="/api/digest/build",
                        model=req.model,
                        workspace_id=digest.id,
                        api_key_id=digest_key.id,
                        service_tier="standard",
                        priority="normal",
                        input_tokens=req.input_tokens,
                        output_tokens=req.output_tokens,
                        cache_read_tokens=req.cache_read_tokens,
                        cache_write_5m_tokens=req.cache_write_5m_tokens,
                        cache_write_1h_tokens=req.cache_write_1h_tokens,
                        web_searches=req.web_searches,
                        inference_geo=req.inference_geo,
                        latency_ms=9_000 + 7 * i,
                        request_id="req_011C" + b62(str_key(f"digest:{day}:{i}"), 20),
                    )
                )
        else:
            b.batch(
                digest, "digest", at, 600, 30 * minute, profile=WEEKLY_DIGEST, template=digest_t
            )
        # nightly (steady): one identical batch a night, both weeks.
        b.batch(
            steady, "nightly", midnight + timedelta(hours=3), 200, 45 * minute,
            profile=WEEKLY_STEADY, template=steady_t,
        )  # fmt: skip
    if planted:
        b.batch(  # a template gone wrong: every request errors (counted, never billed)
            growth, "contentgen", w2 + timedelta(days=2, hours=12), 300, 20 * minute,
            profile=WEEKLY_GROWTH, errors=((0, "invalid_request_error"),), error_period=1,
        )  # fmt: skip

    # Real-time traffic of week 1, then week 2 as its copy seven days later.
    first = len(b.calls)
    for workload, ws, key, profile, per_hour, hours in (
        ("review", review, review_key, WEEKLY_REVIEW, 12.0, _office),
        ("support", support, support_key, WEEKLY_SUPPORT, 40.0, _diurnal),
        ("research", research, research_key, WEEKLY_RESEARCH, 18.0, _office),
    ):
        b.traffic(
            workload=workload, endpoint=f"/api/{workload}", ws=ws, key=key, profile=profile,
            per_hour=per_hour, hours=hours, latency=(800, 20_000), end=w2,
        )  # fmt: skip
    misses = set(WEEKLY_PLAN["cache_miss_days"])
    for call in b.calls[first:]:
        changes: dict[str, Any] = {}
        if planted and call.workload == "review":
            changes["model"] = "claude-opus-4-7"
        if planted and call.workload == "support" and (call.at - w1).days in misses:
            changes["input_tokens"] = call.input_tokens + call.cache_read_tokens
            changes["cache_read_tokens"] = 0
        b.calls.append(_copy_call(call, week, **changes))
    options["planted"] = dict(WEEKLY_PLAN) if planted else {}


_BUILDERS = {
    "org": (_build_org, 7.0),
    "small": (_build_small, 2.0),
    "large": (_build_large, 1.0),
    "weekly": (_build_weekly, 14.0),
    "load": (_build_load, 1.0),
}
SCENARIOS: tuple[str, ...] = tuple(_BUILDERS)


def build_scenario(
    name: str = "org",
    *,
    seed: int = 0,
    start: datetime | None = None,
    days: float | None = None,
    **options: Any,
) -> Scenario:
    """Build scenario ``name`` (org | small | large | weekly | load), fully determined by its args.

    ``start`` (default 2026-11-15T00:00Z; weekly: the Monday 2026-09-28, or 2026-11-02 when not
    planted) and ``days`` (org 7, small 2, large 1, weekly 14) set the span. Options:
    ``batch_requests`` (large), ``chat_per_hour`` (org, small, load), ``planted`` (weekly,
    default true: the second week carries the causes of ``WEEKLY_PLAN``), ``workspaces``,
    ``batches_per_day``, ``big_per_day``, ``big_requests``, ``batch_days`` (load: see
    :func:`_build_load`).
    """
    if name not in _BUILDERS:
        raise ValueError(f"unknown scenario {name!r}; choose one of {', '.join(SCENARIOS)}")
    build, default_days = _BUILDERS[name]
    default = DEFAULT_START
    if name == "weekly":
        default = WEEKLY_PLANTED_START if options.get("planted", True) else WEEKLY_QUIET_START
    begin = (start or default).astimezone(UTC)
    builder = _Builder(name, seed, begin, default_days if days is None else days)
    build(builder, options)
    return builder.build(options)
