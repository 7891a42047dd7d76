"""The simulated organisation (:class:`Scenario`): identities, batches, calls, and state.

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
  billed (at :data:`~monitor.simulator.pricer.FALLBACK_PRICES`) because the provider knows its
  price, while the truth marks its cost unpriced.
"""

from __future__ import annotations

import bisect
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from monitor.simulator.batches import RESULT_TYPES, BatchSpec, BatchView
from monitor.simulator.calls import RealtimeCall
from monitor.simulator.events import UsageEvent
from monitor.simulator.formats import workload_of
from monitor.simulator.pricer import Pricer
from monitor.simulator.requests import Request, SubmittedRequests, result_object
from monitor.simulator.seeded import mix, sim_id, str_key
from monitor.simulator.truth import BatchTruth, Totals, Truth, within

ADMIN_KEY = "sk-ant-admin01-sim"
_CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_ZERO = Decimal(0)


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
        # Visible usage events, oldest first, for the first ``ended`` batches in end order
        # (see ``_visible``): extended in place as time moves on, rebuilt on a mutation.
        self._ev_version = -1
        self._ev_ended = 0
        self._ev_list: list[UsageEvent] = []
        self._ev_times: list[datetime] = []
        self._by_end: list[tuple[datetime, BatchSpec]] = []
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
            key = mix(str_key(f"{self.name}:{self.seed}:created:{self._created}"))
            source = SubmittedRequests(key, requests)
            counts: dict[str, int] = {}
            for item in requests:
                name = workload_of(str(item["custom_id"]))
                counts[name] = counts.get(name, 0) + 1
            spec = BatchSpec(
                id=sim_id("msgbatch_01", key),
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

    def _visible(self, now: datetime) -> tuple[list[UsageEvent], list[datetime]]:
        """Return every event of the calls and of the batches ended by ``now``, oldest first.

        A batch's events are at its ``ended_at``, so what is visible at ``now`` is the events
        up to ``now`` of the calls and of a prefix of the batches in end order. Reports ask
        once per request as simulated time moves forward: the list grows by the few batches
        that ended since the last ask instead of being rebuilt and sorted each time. The
        caller slices it (with ``bisect`` on the times) and must not mutate it.
        """
        with self._lock:
            if self._ev_version != self._version:
                self._by_end = sorted(
                    ((spec.end()[0], spec) for spec in self.batches), key=lambda it: it[0]
                )
                calls = sorted(self.call_events(), key=lambda e: e.at)
                self._ev_list = calls
                self._ev_times = [e.at for e in calls]
                self._ev_ended = 0
                self._ev_version = self._version
            ended = bisect.bisect_right(self._by_end, now, key=lambda it: it[0])
            if ended < self._ev_ended:  # time went back: start again from the calls alone
                keep = [e for e in self._ev_list if e.batch_id is None]
                self._ev_list, self._ev_times = keep, [e.at for e in keep]
                self._ev_ended = 0
            for _, spec in self._by_end[self._ev_ended : ended]:
                for event in self._batch_events(spec):
                    at = bisect.bisect_right(self._ev_times, event.at)
                    self._ev_times.insert(at, event.at)
                    self._ev_list.insert(at, event)
            self._ev_ended = ended
            return self._ev_list, self._ev_times

    def usage_events(self, now: datetime) -> list[UsageEvent]:
        """Return every usage event at or before ``now``, oldest first."""
        with self._lock:
            events, times = self._visible(now)
            return events[: bisect.bisect_right(times, now)]

    def usage_events_between(self, now: datetime, lo: datetime, hi: datetime) -> list[UsageEvent]:
        """Return the usage events at or before ``now`` with ``lo <= at < hi``, oldest first."""
        with self._lock:
            events, times = self._visible(now)
            first = bisect.bisect_left(times, lo)
            last = min(bisect.bisect_right(times, now), bisect.bisect_left(times, hi))
            return events[first:last] if first < last else []

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
                if within(call.at, start, end):
                    fh.write(orjson.dumps(call.to_log()) + b"\n")
                    count += 1
        return count
