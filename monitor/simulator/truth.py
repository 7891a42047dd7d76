"""The ground truth: every figure the monitor should arrive at, as of a simulated ``now``.

:meth:`Scenario.truth <monitor.simulator.organisation.Scenario.truth>` builds a :class:`Truth`
from the scenario model directly (never from HTTP responses): per-batch :class:`BatchTruth`,
per-workload :class:`WorkloadTruth`, and :class:`Totals` of usage, cost and billed amounts.
Its costs come from :mod:`monitor.simulator.pricer`, i.e. from ``monitor.pricing``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from monitor.simulator.batches import RESULT_TYPES
from monitor.simulator.calls import RealtimeCall
from monitor.simulator.events import UsageEvent
from monitor.simulator.formats import floor_time
from monitor.tokens import TOKEN_FIELDS, Tokens

_ZERO = Decimal(0)


@dataclass(frozen=True)
class Totals(Tokens):
    """Token totals (``Tokens``), request count and cost of a set of requests.

    ``cost_usd`` is the priced cost at the tier the requests ran at (batch rate for batches);
    ``standard_cost_usd`` the same tokens at the standard rate. Unpriced requests add tokens
    but no cost.
    """

    requests: int = 0
    cost_usd: Decimal = _ZERO
    standard_cost_usd: Decimal = _ZERO
    unpriced_requests: int = 0

    @property
    def tokens(self) -> Tokens:
        """Return the token counts alone."""
        return Tokens(*(getattr(self, name) for name in TOKEN_FIELDS))

    @property
    def total_tokens(self) -> int:
        """Return the sum of every token type."""
        return self.prompt + self.output_tokens

    @property
    def priced(self) -> bool:
        """Return True when no request in the set is unpriced."""
        return self.unpriced_requests == 0

    def __add__(self, other: Tokens) -> Totals:
        if not isinstance(other, Totals):
            return NotImplemented
        tokens = self.tokens + other.tokens
        return Totals(
            **{name: getattr(tokens, name) for name in TOKEN_FIELDS},
            requests=self.requests + other.requests,
            cost_usd=self.cost_usd + other.cost_usd,
            standard_cost_usd=self.standard_cost_usd + other.standard_cost_usd,
            unpriced_requests=self.unpriced_requests + other.unpriced_requests,
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
class WindowTruth:
    """What a window ``[start, end)`` holds: real-time usage by call time, batches by end time.

    ``batch_requests`` counts every request of the batches that ended in the window (errored
    and expired ones too), as request shares do; money covers priced usage only.
    """

    start: datetime
    end: datetime
    realtime: Totals
    batch: Totals
    batches: tuple[BatchTruth, ...]
    by_model: dict[str, Decimal]
    by_workspace: dict[str, Decimal]
    by_workload: dict[str, Decimal]
    billed_by_day: dict[date, Decimal]

    @property
    def total_usd(self) -> Decimal:
        """Return real-time plus batch cost."""
        return self.realtime.cost_usd + self.batch.cost_usd

    @property
    def batch_requests(self) -> int:
        """Return every request of the batches that ended in the window."""
        return sum(b.request_count for b in self.batches)

    @property
    def savings_usd(self) -> Decimal:
        """Return what the window's batches saved against real-time prices."""
        return self.batch.standard_cost_usd - self.batch.cost_usd

    @property
    def share_requests(self) -> float | None:
        """Return batch requests over all requests."""
        total = self.batch_requests + self.realtime.requests
        return self.batch_requests / total if total else None

    @property
    def share_spend(self) -> float | None:
        """Return batch cost over all cost."""
        total = self.total_usd
        return float(self.batch.cost_usd / total) if total else None


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
            if b.ended_at is not None and within(b.ended_at, start, end)
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

    def window(self, start: datetime, end: datetime) -> WindowTruth:
        """Return every figure of ``[start, end)`` (see :class:`WindowTruth`)."""
        by_model: dict[str, Decimal] = {}
        by_workspace: dict[str, Decimal] = {}
        by_workload: dict[str, Decimal] = {}

        def add(table: dict[str, Decimal], key: str, cost: Decimal) -> None:
            table[key] = table.get(key, _ZERO) + cost

        realtime = Totals()
        for e in self._events(start, end, {"product": "messages_api"}):
            t = _event_totals(e)
            realtime = realtime + t
            add(by_model, e.model, t.cost_usd)
            add(by_workspace, e.workspace_id, t.cost_usd)
            add(by_workload, e.workload or "", t.cost_usd)
        ended = tuple(
            b
            for b in self.batches.values()
            if b.ended_at is not None and within(b.ended_at, start, end)
        )
        batch = Totals()
        for b in ended:
            batch = batch + b.totals
            for model, t in b.by_model.items():
                add(by_model, model, t.cost_usd)
            add(by_workspace, b.workspace_id, b.cost_usd)
            add(by_workload, b.workload, b.cost_usd)
        return WindowTruth(
            start, end, realtime, batch, ended, by_model, by_workspace, by_workload,
            self.billed_by_day(start, end),
        )  # fmt: skip

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
            if not within(e.at, start, end):
                continue
            if all(getattr(e, k) == v for k, v in filters.items()):
                yield e


def within(at: datetime, start: datetime | None, end: datetime | None) -> bool:
    return (start is None or at >= start) and (end is None or at < end)


def _event_totals(e: UsageEvent) -> Totals:
    return Totals.of(e.tokens, e.web_searches, e.requests, e.cost_usd, e.standard_cost_usd)
