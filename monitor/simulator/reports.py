"""The usage and cost reports: the analytics API and the legacy Admin reports.

Rows are aggregated from the scenario's :class:`~monitor.simulator.events.UsageEvent` s
(grouping, filtering, ordering, paging, amounts as decimal strings of cents), with the
``price_drift``, ``late_revision``, ``repeat_page`` and ``skip_page`` faults applied.
:class:`ReportEndpoints` holds the endpoint methods of
:class:`~monitor.simulator.server.SimulatorServer`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from monitor.simulator.events import UsageEvent
from monitor.simulator.faults import Fault
from monitor.simulator.formats import TOKEN_TYPES, WIDTHS, floor_time, iso, model_display_name
from monitor.simulator.organisation import Scenario
from monitor.simulator.protocol import Query, invalid_request, page_offset, page_time, page_token

# The analytics API holds nothing earlier: older history is only in the legacy reports.
ANALYTICS_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)

_ZERO = Decimal(0)
_HUNDRED = Decimal(100)


def cents(usd: Decimal) -> str:
    """Format a USD amount as the reports do: a decimal string of (fractional) cents."""
    value = usd * _HUNDRED
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"


def _scale_int(value: int, fraction: Decimal) -> int:
    return int(Decimal(value) * fraction)


# --- report aggregation -------------------------------------------------------------------

_USAGE_GROUPS = (
    "actor",
    "actor_type",
    "agent_id",
    "api_key_id",
    "claude_tag_category",
    "claude_tag_user_id",
    "context_window",
    "deployment_id",
    "environment_id",
    "inference_geo",
    "model",
    "organization_id",
    "product",
    "rbac_group_id",
    "service_tier",
    "session_id",
    "slack_channel_id",
    "speed",
    "user_profile_id",
    "workspace_id",
)
_COST_FANOUT = ("cost_type", "token_type")
_COST_GROUPS = (*_USAGE_GROUPS, *_COST_FANOUT)

# Filters the simulated usage can match, by query name -> function of an event.
_FILTERS: dict[str, Callable[[UsageEvent], str | None]] = {
    "products": lambda e: e.product,
    "service_tiers": lambda e: e.service_tier,
    "models": lambda e: e.model,
    "workspace_ids": lambda e: e.workspace_id,
    "api_key_ids": lambda e: e.api_key_id,
    "context_windows": lambda e: e.context_window,
    "inference_geos": lambda e: e.inference_geo or "not_available",
    "speeds": lambda e: "standard",
    "actor_types": lambda e: "api_actor",
    "actor_ids": lambda e: e.api_key_id,
}
# Filters on dimensions the simulated usage never has (sessions, Slack, RBAC...): any value
# given matches nothing, as it would for an org that does not use those products.
_EMPTY_FILTERS = (
    "agent_ids",
    "claude_tag_categories",
    "claude_tag_user_ids",
    "deployment_ids",
    "environment_ids",
    "organization_ids",
    "rbac_group_ids",
    "session_ids",
    "slack_channel_ids",
    "user_profile_ids",
)
_LEGACY_FILTERS = {
    "api_key_ids": "api_key_ids",
    "workspace_ids": "workspace_ids",
    "models": "models",
    "service_tiers": "service_tiers",
    "context_window": "context_windows",
    "inference_geos": "inference_geos",
    "speeds": "speeds",
}
_LEGACY_EMPTY = ("account_ids", "service_account_ids")
_LEGACY_USAGE_GROUPS = (
    "api_key_id",
    "workspace_id",
    "model",
    "service_tier",
    "context_window",
    "inference_geo",
    "speed",
    "account_id",
    "service_account_id",
)
_LEGACY_LIMITS = {"1d": (7, 31), "1h": (24, 168), "1m": (60, 1440)}
_TOKEN_LABELS = {
    "uncached_input_tokens": "Input Tokens",
    "output_tokens": "Output Tokens",
    "cache_read_input_tokens": "Cache Read Input Tokens",
    "cache_creation.ephemeral_5m_input_tokens": "5m Cache Write Input Tokens",
    "cache_creation.ephemeral_1h_input_tokens": "1h Cache Write Input Tokens",
}


def _group_value(e: UsageEvent, dim: str, *, legacy: bool, default_ws: str) -> Any:
    """Return the value of report dimension ``dim`` for an event (hashable)."""
    if dim == "product":
        return e.product
    if dim == "model":
        return e.model
    if dim == "service_tier":
        return e.service_tier
    if dim == "workspace_id":
        # The legacy reports show the default workspace as null; analytics tags it.
        return None if legacy and e.workspace_id == default_ws else e.workspace_id
    if dim == "api_key_id":
        return e.api_key_id
    if dim == "context_window":
        return e.context_window
    if dim == "inference_geo":
        if e.inference_geo is None:
            return "not_available" if legacy else None
        return e.inference_geo
    if dim == "speed":
        return "standard"
    if dim == "actor":
        return ("api_actor", e.api_key_id)
    if dim == "actor_type":
        return "api_actor"
    return None


def _group_json(dims: Sequence[str], key: Sequence[Any], every: Sequence[str]) -> dict[str, Any]:
    values = dict(zip(dims, key, strict=True))
    out: dict[str, Any] = {}
    for dim in every:
        value = values.get(dim)
        if dim == "actor" and value is not None:
            value = {"type": value[0], "api_key_id": value[1]}
        out[dim] = value
    return out


@dataclass
class _Acc:
    """Accumulated tokens, requests and billed amounts of one report row."""

    tokens: list[int] = field(default_factory=lambda: [0, 0, 0, 0, 0])
    web_searches: int = 0
    requests: int = 0
    amounts: list[Decimal] = field(default_factory=lambda: [_ZERO] * 6)

    def add(self, e: UsageEvent, factor: Decimal) -> None:
        for i in range(5):
            self.tokens[i] += e.tokens[i]
        self.web_searches += e.web_searches
        self.requests += e.requests
        for i in range(6):
            self.amounts[i] += e.amounts[i] * factor

    def scaled(self, fraction: Decimal) -> _Acc:
        return _Acc(
            [_scale_int(t, fraction) for t in self.tokens],
            _scale_int(self.web_searches, fraction),
            _scale_int(self.requests, fraction),
            [a * fraction for a in self.amounts],
        )

    @property
    def total_tokens(self) -> int:
        return sum(self.tokens)

    @property
    def amount(self) -> Decimal:
        return sum(self.amounts, _ZERO)

    def usage_json(self, *, with_requests: bool) -> dict[str, Any]:
        t = self.tokens
        out: dict[str, Any] = {
            "uncached_input_tokens": t[0],
            "cache_creation": {
                "ephemeral_1h_input_tokens": t[2],
                "ephemeral_5m_input_tokens": t[1],
            },
            "cache_read_input_tokens": t[3],
            "output_tokens": t[4],
        }
        if with_requests:
            out["requests"] = self.requests
        out["server_tool_use"] = {"web_search_requests": self.web_searches}
        if with_requests:
            out["total_tokens"] = self.total_tokens
        return out


def _cost_parts(acc: _Acc, fanout: Sequence[str]) -> list[tuple[str | None, str | None, Decimal]]:
    """Split a row's cost into ``(cost_type, token_type, usd)`` fan-out rows (non-zero only)."""
    by_type = list(zip(TOKEN_TYPES, acc.amounts[:5], strict=True))
    web = acc.amounts[5]
    tokens_total = sum(acc.amounts[:5], _ZERO)
    parts: list[tuple[str | None, str | None, Decimal]] = []
    if "token_type" in fanout:
        parts = [("tokens", name, usd) for name, usd in by_type if usd]
        if web:
            # token_type alone has no row for non-token cost; keep it so rows sum to the total.
            parts.append(("web_search" if "cost_type" in fanout else None, None, web))
    elif "cost_type" in fanout:
        if tokens_total:
            parts.append(("tokens", None, tokens_total))
        if web:
            parts.append(("web_search", None, web))
    else:
        parts = [(None, None, acc.amount)]
    return parts


class ReportEndpoints:
    """The report endpoints of :class:`~monitor.simulator.server.SimulatorServer` (a mixin).

    The server provides ``scenario`` and its faults (``_state_faults``, read under its lock).
    """

    scenario: Scenario

    if TYPE_CHECKING:  # what the server provides; declared for the type checker only

        def _state_faults(self, kind: str) -> list[Fault]:
            """Return the faults of ``kind`` (the server's, under its lock)."""

        def _take(self, kind: str, endpoint: str, batch_id: str | None = None) -> Fault | None:
            """Return a live fault of ``kind`` for this request, counted as fired."""

        def _count_fired(self, fault: Fault) -> None:
            """Count one firing of a state fault (the server's, under its lock)."""

    def _paging(
        self, endpoint: str, offset: int, limit: int, total: int, at: datetime | None = None
    ) -> tuple[int, bool, str | None]:
        """Return ``(offset served, has_more, next_page)`` for a page, faults applied.

        ``repeat_page`` serves the page before the one asked for (the first page: itself) and
        points its cursor back at the page asked for; ``skip_page`` drops the cursor of a page
        that has more after it (it waits for such a page: on the last one it would lose
        nothing).
        """
        served = offset
        repeat = self._take("repeat_page", endpoint)
        if repeat is not None:
            served = max(0, offset - limit)
        has_more = served + limit < total
        next_page = page_token(served + limit, at) if has_more else None
        if repeat is not None:
            return served, True, page_token(offset, at)
        if has_more and self._take("skip_page", endpoint) is not None:
            return served, True, None
        return served, has_more, next_page

    def _drift(self) -> dict[str, Decimal]:
        out: dict[str, Decimal] = {}
        for fault in self._state_faults("price_drift"):
            for model, factor in fault.drift.items():
                out[model] = out.get(model, Decimal(1)) * factor
        return out

    def _revision(self, bucket_end: datetime, now: datetime) -> Fault | None:
        """Return the ``late_revision`` fault a bucket ending at ``bucket_end`` is still
        revised under (it shows ``fraction`` of its final value), or None if it is final."""
        for fault in self._state_faults("late_revision"):
            if bucket_end > now - fault.lag:
                return fault
        return None

    def _revised(self, bucket_end: datetime, now: datetime) -> Decimal | None:
        """Return the fraction a bucket served now shows (counted as fired), None if final."""
        fault = self._revision(bucket_end, now)
        if fault is None:
            return None
        self._count_fired(fault)
        return fault.fraction

    def _events(
        self,
        now: datetime,
        lo: datetime,
        hi: datetime,
        query: Query,
        filters: dict[str, str],
        empty: Sequence[str],
        *,
        cost: bool,
    ) -> list[UsageEvent]:
        """Return events in ``[lo, hi)`` passing the query's filters (billed ones for cost)."""
        for name in empty:
            if any(v != "" for v in query.many(name)):
                return []
        wanted: list[tuple[Callable[[UsageEvent], str | None], set[str]]] = []
        for param, fname in filters.items():
            if query.has(param):
                wanted.append((_FILTERS[fname], set(query.many(param))))
        out = []
        for e in self.scenario.usage_events_between(now, lo, hi):
            if cost and e.service_tier == "priority":
                continue  # the cost reports never include Priority Tier
            if all(get(e) in values for get, values in wanted):
                out.append(e)
        return out

    def analytics(self, kind: str, query: Query, now: datetime) -> dict[str, Any]:
        """Answer ``/v1/organizations/analytics/{usage,cost}`` (kind ``usage`` or ``cost``)."""
        # Later pages are served as of the first page's time (see protocol.page_time).
        snapshot = page_time(query.one("page"))
        if snapshot is not None:
            now = min(now, snapshot)
        cost = kind == "cost"
        start = query.time("starting_at", required=True)
        assert start is not None
        if start < ANALYTICS_EPOCH:
            raise invalid_request(
                "starting_at must be no earlier than 2026-01-01T00:00:00Z; use the legacy "
                "usage and cost report endpoints for earlier data"
            )
        if start < now - timedelta(days=365):
            raise invalid_request("starting_at must be within the last 365 days")
        width = query.one("time_bucket_width")
        if width is not None and width not in WIDTHS:
            raise invalid_request("time_bucket_width: Input should be '1d', '1h' or '1m'")
        end = query.time("ending_at")
        if width and end is None:
            raise invalid_request("ending_at is required when time_bucket_width is set")
        if end is None:
            end = min(now, start + timedelta(days=31))
        if end <= start:
            raise invalid_request("ending_at must be after starting_at")
        if end - start > timedelta(days=31):
            raise invalid_request(
                "The range from starting_at to ending_at may span at most 31 days"
            )
        if width == "1m" and end - start > timedelta(hours=24):
            raise invalid_request("With time_bucket_width=1m the range may span at most 24 hours")
        allowed = _COST_GROUPS if cost else _USAGE_GROUPS
        group_by = query.many("group_by")
        for dim in group_by:
            if dim not in allowed:
                raise invalid_request(f"group_by: unknown dimension {dim!r}")
        dims = [d for d in dict.fromkeys(group_by) if d not in _COST_FANOUT]
        fanout = [d for d in dict.fromkeys(group_by) if d in _COST_FANOUT]
        if len(dims) > 5:
            raise invalid_request("group_by: at most 5 dimensions")
        limit = query.integer("limit", 20, 1, 1000)
        order = query.one("order") or "desc"
        if order not in ("asc", "desc"):
            raise invalid_request("order: Input should be 'asc' or 'desc'")
        metrics = ("amount", "list_amount", "time") if cost else _USAGE_ORDER
        order_by = query.one("order_by") or metrics[0]
        if order_by not in metrics:
            raise invalid_request(f"order_by: Input should be one of {', '.join(metrics)}")
        offset = page_offset(query.one("page"))

        if width is None:
            lo, hi = floor_time(start, "1h"), floor_time(end, "1h")
        else:
            lo, hi = floor_time(start, width), end
        filters = {name: name for name in _FILTERS}
        events = self._events(now, lo, hi, query, filters, _EMPTY_FILTERS, cost=cost)
        default_ws = self.scenario.default_workspace.id
        drift = self._drift() if cost else {}
        rows: dict[tuple[Any, ...], _Acc] = {}
        for e in events:
            bucket = floor_time(e.at, width) if width else lo
            key = (
                bucket,
                tuple(_group_value(e, d, legacy=False, default_ws=default_ws) for d in dims),
            )
            acc = rows.get(key)
            if acc is None:
                acc = rows[key] = _Acc()
            acc.add(e, drift.get(e.model, Decimal(1)))

        items: list[tuple[datetime, datetime, tuple[Any, ...], _Acc]] = []
        for (bucket, group), acc in rows.items():
            bucket_end = bucket + WIDTHS[width] if width else hi
            revision = self._revision(bucket_end, now)
            items.append(
                (bucket, bucket_end, group, acc.scaled(revision.fraction) if revision else acc)
            )

        def metric(item: tuple[datetime, datetime, tuple[Any, ...], _Acc]) -> Decimal | int:
            acc = item[3]
            if cost:
                return acc.amount
            if order_by in ("total_tokens", "time"):
                return acc.total_tokens
            if order_by == "requests":
                return acc.requests
            return acc.tokens[0] if order_by == "uncached_input_tokens" else acc.tokens[4]

        # Stable, deterministic order: a tie-break on bucket and group first.
        items.sort(key=lambda it: (it[0], repr(it[2])))
        if order_by == "time" and width:
            items.sort(key=metric, reverse=True)
            items.sort(key=lambda it: it[0], reverse=order == "desc")
        else:
            items.sort(key=metric, reverse=order == "desc")
        served, has_more, next_page = self._paging(
            f"analytics.{kind}", offset, limit, len(items), now
        )
        page = items[served : served + limit]
        every = _COST_GROUPS if cost else _USAGE_GROUPS
        data: list[dict[str, Any]] = []
        for bucket, bucket_end, group, acc in page:
            revision = self._revision(bucket_end, now)
            if revision is not None:  # counted once per row served, not per row computed
                self._count_fired(revision)
            head = {"starting_at": iso(bucket), "ending_at": iso(bucket_end)}
            if not cost:
                data.append(
                    {
                        **head,
                        "group": _group_json(dims, group, every),
                        "usage": acc.usage_json(with_requests=True),
                    }
                )
                continue
            for cost_type, token_type, usd in _cost_parts(acc, fanout):
                group_json = _group_json(dims, group, every)
                group_json["cost_type"] = cost_type
                group_json["token_type"] = token_type
                data.append(
                    {
                        **head,
                        "group": group_json,
                        "cost": {
                            "amount": cents(usd),
                            "list_amount": cents(usd),
                            "currency": "USD",
                            "requests": None if fanout else acc.requests,
                        },
                    }
                )
        return {
            "data": data,
            "has_more": has_more,
            "next_page": next_page,
            "data_refreshed_at": iso(now.replace(microsecond=0)),
        }

    def _legacy_buckets(
        self, endpoint: str, query: Query, now: datetime, *, widths: Sequence[str]
    ) -> tuple[str, list[datetime], bool, str | None]:
        start = query.time("starting_at", required=True)
        assert start is not None
        width = query.one("bucket_width") or "1d"
        if width not in widths:
            raise invalid_request(
                f"bucket_width: Input should be {' or '.join(repr(w) for w in widths)}"
            )
        default, most = _LEGACY_LIMITS[width]
        limit = query.integer("limit", default, 1, most)
        end = query.time("ending_at") or now
        if end <= start:
            raise invalid_request("ending_at must be after starting_at")
        step = WIDTHS[width]
        first = floor_time(start, width)
        total = -(-(end - first) // step)  # buckets that start before ending_at
        offset = page_offset(query.one("page"))
        served, has_more, next_page = self._paging(endpoint, offset, limit, total)
        count = max(0, min(limit, total - served))
        buckets = [first + step * (served + k) for k in range(count)]
        return width, buckets, has_more, next_page

    def legacy_usage(self, query: Query, now: datetime) -> dict[str, Any]:
        """Answer ``/v1/organizations/usage_report/messages`` (no request counts)."""
        group_by = list(dict.fromkeys(query.many("group_by")))
        for dim in group_by:
            if dim not in _LEGACY_USAGE_GROUPS:
                raise invalid_request(f"group_by: unknown dimension {dim!r}")
        width, buckets, has_more, next_page = self._legacy_buckets(
            "usage_report.messages", query, now, widths=("1d", "1h", "1m")
        )
        step = WIDTHS[width]
        default_ws = self.scenario.default_workspace.id
        data = []
        events: list[UsageEvent] = []
        if buckets:
            events = self._events(
                now, buckets[0], buckets[-1] + step, query, _LEGACY_FILTERS, _LEGACY_EMPTY,
                cost=False,
            )  # fmt: skip
        by_bucket = _by_bucket(events, width)
        for bucket in buckets:
            rows: dict[tuple[Any, ...], _Acc] = {}
            for e in by_bucket.get(bucket, ()):
                key = tuple(
                    _group_value(e, d, legacy=True, default_ws=default_ws) for d in group_by
                )
                rows.setdefault(key, _Acc()).add(e, Decimal(1))
            fraction = self._revised(bucket + step, now)
            results = []
            for key, acc in sorted(rows.items(), key=lambda kv: repr(kv[0])):
                shown = acc.scaled(fraction) if fraction else acc
                results.append(
                    {
                        **shown.usage_json(with_requests=False),
                        **_group_json(group_by, key, _LEGACY_USAGE_GROUPS),
                    }
                )
            data.append(
                {"starting_at": iso(bucket), "ending_at": iso(bucket + step), "results": results}
            )
        return {"data": data, "has_more": has_more, "next_page": next_page}

    def legacy_cost(self, query: Query, now: datetime) -> dict[str, Any]:
        """Answer ``/v1/organizations/cost_report`` (1d buckets, amounts in cents)."""
        group_by = list(dict.fromkeys(query.many("group_by")))
        for dim in group_by:
            if dim not in ("workspace_id", "description"):
                raise invalid_request(
                    f"group_by: Input should be 'workspace_id' or 'description' ({dim!r})"
                )
        _, buckets, has_more, next_page = self._legacy_buckets(
            "cost_report", query, now, widths=("1d",)
        )
        step = WIDTHS["1d"]
        default_ws = self.scenario.default_workspace.id
        by_description = "description" in group_by
        by_workspace = "workspace_id" in group_by
        drift = self._drift()
        events: list[UsageEvent] = []
        if buckets:
            filters = {"workspace_ids": "workspace_ids"}  # UNVERIFIED filter; harmless
            events = self._events(
                now, buckets[0], buckets[-1] + step, query, filters, (), cost=True
            )
        data = []
        by_bucket = _by_bucket(events, "1d")
        for bucket in buckets:
            rows: dict[tuple[Any, ...], Decimal] = {}
            for e in by_bucket.get(bucket, ()):
                ws = _group_value(e, "workspace_id", legacy=True, default_ws=default_ws)
                factor = drift.get(e.model, Decimal(1))
                geo = e.inference_geo or "not_available"
                parts: list[tuple[str | None, str | None, Decimal]]
                if by_description:
                    parts = [
                        ("tokens", name, usd * factor)
                        for name, usd in zip(TOKEN_TYPES, e.amounts[:5], strict=True)
                        if usd
                    ]
                    if e.amounts[5]:
                        parts.append(("web_search", None, e.amounts[5] * factor))
                else:
                    parts = [(None, None, e.billed_usd * factor)]
                for cost_type, token_type, usd in parts:
                    key: tuple[Any, ...] = (ws if by_workspace else None,)
                    if by_description:
                        key += (
                            e.model,
                            e.service_tier,
                            e.context_window,
                            geo,
                            cost_type,
                            token_type,
                        )
                    rows[key] = rows.get(key, _ZERO) + usd
            fraction = self._revised(bucket + step, now)
            results = []
            for key, usd in sorted(rows.items(), key=lambda kv: repr(kv[0])):
                shown = usd * fraction if fraction else usd
                row: dict[str, Any] = {
                    "amount": cents(shown),
                    "currency": "USD",
                    "cost_type": None,
                    "token_type": None,
                    "description": None,
                    "model": None,
                    "service_tier": None,
                    "context_window": None,
                    "inference_geo": None,
                    "workspace_id": key[0],
                }
                if by_description:
                    model, tier, window, geo, cost_type, token_type = key[1:]
                    row.update(
                        cost_type=cost_type,
                        token_type=token_type,
                        description=_description(model, tier, window, geo, cost_type, token_type),
                        model=model,
                        service_tier=tier,
                        context_window=window,
                        inference_geo=geo,
                    )
                results.append(row)
            data.append(
                {"starting_at": iso(bucket), "ending_at": iso(bucket + step), "results": results}
            )
        return {"data": data, "has_more": has_more, "next_page": next_page}


_USAGE_ORDER = ("total_tokens", "uncached_input_tokens", "output_tokens", "requests", "time")


def _description(
    model: str,
    tier: str,
    window: str,
    geo: str,
    cost_type: str | None,
    token_type: str | None,
) -> str:
    """Return a cost-report line description, unique per model/tier/window/geo/token type."""
    name = model_display_name(model)
    batch = " Batch" if tier == "batch" else ""
    if cost_type == "web_search":
        text = f"{name}{batch} Web Search"
    else:
        text = f"{name}{batch} Usage - {_TOKEN_LABELS.get(token_type or '', 'Tokens')}"
    if window == "200k-1M":
        text += " (Long Context)"
    if geo == "us":
        text += " (US Inference)"
    return text


def _by_bucket(events: Iterable[UsageEvent], width: str) -> dict[datetime, list[UsageEvent]]:
    """Group events by the start of their ``width`` bucket."""
    out: dict[datetime, list[UsageEvent]] = {}
    for e in events:
        out.setdefault(floor_time(e.at, width), []).append(e)
    return out
