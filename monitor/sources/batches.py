"""Collect Message Batches: every batch's size, turnaround, outcome and cost.

One poll, per configured workspace (one SDK client each):

1. List batches newest first, page by page, upserting each, until a batch already recorded as
   ended comes up: older history is never re-read on a normal poll.
2. Re-poll by id every batch the store still has as unended and the listing did not show
   (these survive restarts, because the store is the list of what to poll).
3. For every ended batch whose results were not read yet, stream its results once and record,
   in one transaction with the batch row: tokens by kind per model, cost at the batch rate and at
   the standard rate, counts by result type, errors by type with a sample message. A cut-off
   stream or a malformed line writes nothing but a retry mark. Archived batches (results gone
   after 29 days) are marked as having no token data, never as zero cost.

API calls are counted; a poll costs one call per listing page plus one per unended batch plus
two per newly ended batch (the SDK retrieves the batch before streaming its results).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import delete, func, or_, select, true
from sqlmodel import Session, col

from monitor import bounds, clock, db, fmt, rollups
from monitor.client import CallCounter, make_client
from monitor.collect import RunStats, SourceError
from monitor.config import Settings
from monitor.crashpoints import crashpoint
from monitor.logs import scrub
from monitor.models import Batch, BatchError, BatchUsage
from monitor.money import ZERO
from monitor.pricing import PriceBook, Usage
from monitor.tokens import Tokens
from monitor.workloads import Workload, WorkloadMap, strip_serial

if TYPE_CHECKING:
    import anthropic

log = logging.getLogger(__name__)

# Results that will never be read again; "failed" is not one: it is retried, slowly.
TERMINAL_RESULT_STATES = ("ingested", "unavailable")
# After the fast retries a failed read is retried after 1 h, 2 h, 4 h ..., then once a day, until
# it succeeds or the batch is archived (results are kept 29 days after creation).
SLOW_RETRY_FIRST = timedelta(hours=1)
SLOW_RETRY_MAX = timedelta(days=1)
# Consecutive failed result reads in one workspace poll before the rest wait for the next poll.
BREAKER_AFTER = 3


def slow_retry(failures: int) -> timedelta:
    """Return the wait before reading results again after ``failures`` slow retries failed."""
    return min(SLOW_RETRY_MAX, SLOW_RETRY_FIRST * 2 ** min(failures, 10))


class ResultsError(Exception):
    """A results file could not be read whole (cut off, malformed, unavailable)."""


# --- results aggregation ------------------------------------------------------------------

# Token fields in the order they are accumulated per (model, geo, tier flags) group.
_IN, _OUT, _CR, _CW5, _CW1, _WS, _N = range(7)


_MAX_COUNT = bounds.MAX_COUNT


def _bad_usage(usage: dict[str, Any]) -> str:
    """Name the first token count of a result's ``usage`` that is not a count."""
    cache = usage.get("cache_creation")
    tool = usage.get("server_tool_use")
    fields = [
        *((f"usage.{k}", usage.get(k)) for k in ("input_tokens", "output_tokens",
          "cache_read_input_tokens", "cache_creation_input_tokens")),
        *((f"usage.cache_creation.{k}", cache.get(k)) for k in ("ephemeral_5m_input_tokens",
          "ephemeral_1h_input_tokens") if isinstance(cache, dict)),
        *((f"usage.server_tool_use.{k}", tool.get(k)) for k in ("web_search_requests",)
          if isinstance(tool, dict)),
    ]  # fmt: skip
    for name, value in fields:
        try:
            bounds.count(value, name)
        except bounds.OutOfRange as exc:
            return str(exc)
    return f"the token counts add up to more than {_MAX_COUNT:,}"


@dataclass
class ResultsTally:
    """Aggregates over one results file, in constant memory whatever its size."""

    # (model, inference_geo, prompt > 100K, prompt > 200K) -> [input, output, cache read,
    # 5m write, 1h write, web searches, requests]. Grouping by the tier thresholds keeps
    # per-request tiers exact while pricing each group once.
    groups: dict[tuple[str, str | None, bool, bool], list[int]] = field(default_factory=dict)
    by_type: dict[str, int] = field(default_factory=dict)
    errors: dict[str, list[Any]] = field(default_factory=dict)  # type -> [count, sample]
    workloads: dict[str, int] = field(default_factory=dict)
    lines: int = 0
    # Id counts by prefix, pending attribution (ids ending in digits / ids without).
    _numbered: dict[str, int] = field(default_factory=dict, repr=False)
    _plain: dict[str, int] = field(default_factory=dict, repr=False)

    def add_line(self, raw: bytes | str, workloads: Sequence[Workload] = ()) -> None:
        """Fold one JSONL line into the tally (raise ResultsError on a malformed line)."""
        self.consume((raw,), workloads)

    def consume(self, lines: Iterable[bytes | str], workloads: Sequence[Workload] = ()) -> None:
        """Fold JSONL lines into the tally (raise ResultsError on the first malformed line).

        This loop runs once per request of every batch, so it binds everything it touches to
        locals and caches the workload of each custom_id stem: it stays within a small factor
        of parsing the JSON and nothing else (see bench/bench_results.py).
        """
        loads = orjson.loads
        groups, errors, by_type, names = self.groups, self.errors, self.by_type, self.workloads
        # Without declared workloads, count ids by their text minus trailing digits (one C-level
        # rstrip per line) and name the workloads once per distinct prefix at the end: ids of
        # one job share that prefix, so this is exact and far cheaper than per-line parsing.
        numbered, plain = self._numbered, self._plain
        wmap = WorkloadMap(workloads) if workloads else None
        n = self.lines
        try:
            for raw in lines:
                if not raw:
                    continue
                n += 1
                obj = loads(raw)
                custom_id = obj["custom_id"]
                result = obj["result"]
                kind = result["type"]
                by_type[kind] = by_type.get(kind, 0) + 1
                if wmap is not None:
                    name = wmap.of_custom_id(custom_id)
                    names[name] = names.get(name, 0) + 1
                else:
                    prefix = custom_id.rstrip("0123456789")
                    if len(prefix) != len(custom_id):
                        numbered[prefix] = numbered.get(prefix, 0) + 1
                    else:
                        plain[custom_id] = plain.get(custom_id, 0) + 1
                if kind == "succeeded":
                    message = result["message"]
                    usage = message["usage"]
                    inp = usage["input_tokens"] or 0
                    out = usage["output_tokens"] or 0
                    cr = usage.get("cache_read_input_tokens") or 0
                    cache = usage.get("cache_creation")
                    if cache:
                        cw5 = cache.get("ephemeral_5m_input_tokens") or 0
                        cw1 = cache.get("ephemeral_1h_input_tokens") or 0
                    else:
                        # Older shapes give only the total; it is priced as 5-minute writes.
                        cw5, cw1 = usage.get("cache_creation_input_tokens") or 0, 0
                    tool = usage.get("server_tool_use")
                    ws = (tool.get("web_search_requests") or 0) if tool else 0
                    # `type(x) is int` also refuses bool; the sum bounds each (none negative).
                    if (
                        type(inp) is not int
                        or type(out) is not int
                        or type(cr) is not int
                        or type(cw5) is not int
                        or type(cw1) is not int
                        or type(ws) is not int
                        or inp < 0
                        or out < 0
                        or cr < 0
                        or cw5 < 0
                        or cw1 < 0
                        or ws < 0
                        or inp + out + cr + cw5 + cw1 + ws > _MAX_COUNT
                    ):
                        raise ResultsError(f"results line {n}: {_bad_usage(usage)}")
                    prompt = inp + cr + cw5 + cw1
                    key = (message["model"], usage.get("inference_geo"),
                           prompt > 100_000, prompt > 200_000)  # fmt: skip
                    acc = groups.get(key)
                    if acc is None:
                        _check_group(key, n)  # once per group: the model and region are text
                        acc = groups[key] = [0, 0, 0, 0, 0, 0, 0]
                    acc[0] += inp
                    acc[1] += out
                    acc[2] += cr
                    acc[3] += cw5
                    acc[4] += cw1
                    acc[5] += ws
                    acc[6] += 1
                elif kind == "errored":
                    err = (result.get("error") or {}).get("error") or {}
                    etype = err.get("type") or "unknown_error"
                    slot = errors.get(etype)
                    if slot is None:
                        # A new type: checked and cut to its column once, not per line.
                        etype = _error_type(etype, n)
                        slot = errors.get(etype)
                    if slot is None:
                        errors[etype] = [1, _sample(err.get("message"))]
                    else:
                        slot[0] += 1
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise ResultsError(f"malformed results line {n}: {type(exc).__name__}: {exc}") from exc
        finally:
            self.lines = n
            self._settle_workloads()

    def _settle_workloads(self) -> None:
        """Fold the per-prefix id counts into workload counts (see ``consume``)."""
        for counts, digits in ((self._numbered, "0"), (self._plain, "")):
            for prefix, count in counts.items():
                # Any trailing digits give the same name: the last part holds a digit either way.
                name = strip_serial(prefix + digits)
                self.workloads[name] = self.workloads.get(name, 0) + count
            counts.clear()

    def workload(self) -> str | None:
        """Return the workload most requests carry (ties: alphabetical), None when empty."""
        if not self.workloads:
            return None
        # A custom_id is at most 64 characters in the API; a longer one must still fit.
        return sorted(self.workloads.items(), key=lambda kv: (-kv[1], kv[0]))[0][0][:_MAX_NAME]


# Column widths of what a results line names (batch_usage.model, batch_error.error_type).
_MAX_NAME = 128
_MAX_ERROR_TYPE = 64
_MAX_SAMPLE = 2000


def _check_group(key: tuple[Any, ...], line: int) -> None:
    """Refuse a succeeded line whose model or region is not text a price can be looked up by."""
    model, geo = key[0], key[1]
    if not isinstance(model, str) or not model.strip() or len(model) > _MAX_NAME:
        raise ResultsError(
            f"results line {line}: message.model: not a model name of 1 to {_MAX_NAME} "
            f"characters: {bounds.show(model)}"
        )
    if geo is not None and (not isinstance(geo, str) or len(geo) > _MAX_NAME):
        raise ResultsError(
            f"results line {line}: usage.inference_geo: not a region name: {bounds.show(geo)}"
        )


def _error_type(value: Any, line: int) -> str:
    """Return an errored line's error type, cut to its column; refuse one that is not text."""
    if not isinstance(value, str):
        raise ResultsError(
            f"results line {line}: error.error.type: must be text, got {bounds.show(value)}"
        )
    return value[:_MAX_ERROR_TYPE]


def _sample(value: Any) -> str | None:
    """Return an error message to keep as the sample (another type as its text), cut short."""
    return None if value is None else str(value)[:_MAX_SAMPLE]


@dataclass
class ModelTotals:
    """Tokens and cost of one model within a batch."""

    requests: int = 0
    tokens: Tokens = field(default_factory=Tokens.zero)
    priced: bool = True
    cost: Decimal = ZERO
    standard: Decimal = ZERO


def price_tally(
    tally: ResultsTally, book: PriceBook, at: datetime
) -> tuple[dict[str, ModelTotals], list[str]]:
    """Price every group of the tally; return per-model totals and the unknown models."""
    per_model: dict[str, ModelTotals] = {}
    unknown: list[str] = []
    for (model, geo, _over100k, _over200k), acc in tally.groups.items():
        totals = per_model.setdefault(model, ModelTotals())
        tokens = Tokens(
            input_tokens=acc[_IN],
            output_tokens=acc[_OUT],
            cache_read_tokens=acc[_CR],
            cache_write_5m_tokens=acc[_CW5],
            cache_write_1h_tokens=acc[_CW1],
            web_searches=acc[_WS],
        )
        totals.requests += acc[_N]
        totals.tokens += tokens
        usage = Usage.of(tokens, requests=acc[_N], inference_geo=geo)
        cost = book.cost_of(model, usage, at)
        if not cost.priced or cost.batch_usd is None or cost.standard_usd is None:
            totals.priced = False
            if model not in unknown:
                unknown.append(model)
            continue
        totals.cost += cost.batch_usd
        totals.standard += cost.standard_usd
    return per_model, unknown


# --- the source ---------------------------------------------------------------------------


@dataclass
class WorkspaceClient:
    """A workspace and the SDK client that reads its batches."""

    workspace_id: str
    name: str
    client: anthropic.Anthropic


# What a batch id may look like: it goes into URL paths and a 128-character key column.
_BATCH_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
_COUNTS = ("processing", "succeeded", "errored", "canceled", "expired")


def _listed_id(b: Any) -> str | None:
    """Return a listed batch's id, or None when it has none a batch could have."""
    bid = getattr(b, "id", None)
    return bid if isinstance(bid, str) and _BATCH_ID.fullmatch(bid) else None


def _batch_columns(b: Any, workspace_id: str, now: datetime) -> dict[str, Any]:
    """Map an SDK MessageBatch to the batch-object columns of the ``batch`` table.

    Raise bounds.OutOfRange for an id, time or count no real batch has (the caller skips it).
    The SDK does not validate what it parses, so any field may be missing or of any type.
    """
    bid = _listed_id(b)
    if bid is None:
        raise bounds.OutOfRange(f"id: not a batch id: {bounds.show(getattr(b, 'id', None))}")
    rc = getattr(b, "request_counts", None)
    if not all(hasattr(rc, k) for k in _COUNTS):
        raise bounds.OutOfRange(f"request_counts: not the five counts: {bounds.show(rc)}")
    counts = {k: bounds.count(getattr(rc, k), f"request_counts.{k}") for k in _COUNTS}
    status = getattr(b, "processing_status", None)
    if not isinstance(status, str) or not status:
        raise bounds.OutOfRange(f"processing_status: not a status: {bounds.show(status)}")
    when = bounds.optional_instant
    created = bounds.instant(getattr(b, "created_at", None), "created_at")
    ended = when(getattr(b, "ended_at", None), "ended_at") if status == "ended" else None
    if ended is not None and ended < created:
        raise bounds.OutOfRange(f"ended_at: {fmt.iso(ended)} is before created_at")
    return {
        "id": bid,
        "workspace_id": workspace_id,
        "processing_status": status[:32],
        "created_at": created,
        "ended_at": ended,
        "expires_at": when(getattr(b, "expires_at", None), "expires_at"),
        "cancel_initiated_at": when(getattr(b, "cancel_initiated_at", None), "cancel_initiated_at"),
        "archived_at": when(getattr(b, "archived_at", None), "archived_at"),
        "requests": sum(counts.values()),  # the five counts always sum to the batch size
        **counts,
        "turnaround_seconds": (ended - created).total_seconds() if ended else None,
        "first_seen_at": now,
        "updated_at": now,
    }


_OBJECT_COLS = [
    "workspace_id", "processing_status", "created_at", "ended_at", "expires_at",
    "cancel_initiated_at", "archived_at", "requests", "processing", "succeeded", "errored",
    "canceled", "expired", "turnaround_seconds", "updated_at",
]  # fmt: skip


class BatchesSource:
    """The Message Batches collector (see the module docstring for the algorithm)."""

    name = "batches"

    def __init__(
        self,
        workspaces: Sequence[WorkspaceClient],
        book: PriceBook,
        *,
        workloads: Sequence[Workload] = (),
        page_size: int = 100,
        max_attempts: int = 5,
        counter: CallCounter | None = None,
        budget: timedelta | None = None,
        breaker_after: int = BREAKER_AFTER,
        retry_failed: bool = False,
        secrets: Sequence[str] = (),
    ) -> None:
        self.workspaces = list(workspaces)
        self.book = book
        self.workloads = list(workloads)
        self.page_size = page_size
        self.max_attempts = max_attempts
        self.counter = counter or CallCounter()
        # Each workspace's poll stops re-polling and reading results once this is spent.
        self.budget_seconds = budget.total_seconds() if budget is not None else None
        self.breaker_after = breaker_after
        # Read failed batches' results now, not at their next slow retry.
        self.retry_failed = retry_failed
        self.secrets = list(secrets)
        # Unpriced models seen in this poll, with the batches that used them: one warning per
        # model per poll, not one per batch (a busy organisation ends thousands a day).
        self._unpriced: dict[str, list[str]] = {}

    def collect(self, session: Session, now: datetime, stats: RunStats) -> None:
        """Poll every workspace; raise SourceError at the end if any failed (the rest are kept)."""
        failures: list[str] = []
        before = self.counter.total
        # One budget for the whole poll: per workspace, a hundred workspaces could take a
        # hundred budgets and run far past the poll's interval. Every workspace is still
        # listed whole and makes at least one step of progress; the order turns with the clock
        # so that the workspaces at the end of the list are not always the ones cut short.
        deadline = (
            clock.monotonic() + self.budget_seconds if self.budget_seconds is not None else None
        )
        shift = int(now.timestamp() // 60) % len(self.workspaces) if self.workspaces else 0
        self._unpriced = {}
        try:
            for ws in self.workspaces[shift:] + self.workspaces[:shift]:
                try:
                    self.collect_workspace(session, now, stats, ws, deadline)
                except Exception as exc:  # one workspace's outage must not stop the others
                    session.rollback()
                    failures.append(f"workspace {ws.name}: {type(exc).__name__}: {exc}")
                    log.warning("batches: workspace %s failed: %s", ws.name, exc)
                finally:
                    stats.api_calls = self.counter.total - before
        finally:
            self._warn_unpriced(stats)
        if failures:
            raise SourceError("; ".join(failures))

    def _warn_unpriced(self, stats: RunStats) -> None:
        """Log one warning per unpriced model seen in this poll, with a count and an example."""
        for model, ids in sorted(self._unpriced.items()):
            log.warning(
                "batches: no price for model %r in %d batch(es) of this poll (e.g. %s): tokens "
                "recorded, cost left unpriced; add a [[prices]] entry to monitor.toml",
                model,
                len(ids),
                ids[0],
            )
            stats.note(f"batches: model {model!r} has no price: its cost is unpriced, not $0")
        self._unpriced = {}

    def collect_workspace(
        self,
        session: Session,
        now: datetime,
        stats: RunStats,
        ws: WorkspaceClient,
        deadline: float | None = None,
    ) -> None:
        """Run the three steps of a poll for one workspace, until ``deadline`` (monotonic).

        Without a deadline, the workspace gets the whole budget. The listing always runs whole
        (cut short, the batches on its later pages would never be listed again); re-polls and
        result reads stop when the deadline has passed (after at least one step) and go on at
        the next poll.
        """
        if deadline is None and self.budget_seconds is not None:
            deadline = clock.monotonic() + self.budget_seconds
        seen = self._list_new(session, now, stats, ws)
        self._repoll_unended(session, now, stats, ws, seen, deadline)
        self._ingest_ended(session, now, stats, ws, deadline)

    # 1. listing -------------------------------------------------------------------------

    def _list_new(
        self, session: Session, now: datetime, stats: RunStats, ws: WorkspaceClient
    ) -> set[str]:
        seen: set[str] = set()
        rows: list[dict[str, Any]] = []
        for p, page in enumerate(self._iter_pages(ws), 1):
            ids = [i for i in map(_listed_id, page) if i is not None]
            # One lookup per page, not per batch: which of these are already recorded as ended.
            ended = set(
                session.execute(
                    select(col(Batch.id)).where(
                        col(Batch.id).in_(ids),
                        col(Batch.processing_status) == "ended",
                    )
                ).scalars()
            )
            stop = False
            for i, b in enumerate(page, 1):
                bid = _listed_id(b)
                if bid is not None and bid in ended:
                    stop = True  # everything older was recorded on an earlier poll
                    break
                if bid is not None:
                    seen.add(bid)
                row = self._columns(b, ws, now, stats, f"listing page {p} position {i}")
                if row is not None:
                    rows.append(row)
            if stop:
                break
        if rows:
            db.upsert(session, Batch, rows, key=["id"], update=_OBJECT_COLS)
            rollups.mark_dirty(session, [r["ended_at"] for r in rows if r["ended_at"]], now)
            session.commit()
            stats.items += len(rows)
            stats.note(f"{ws.name}: {len(rows)} new or changed batch(es) listed")
        return seen

    def _columns(
        self,
        b: Any,
        ws: WorkspaceClient,
        now: datetime,
        stats: RunStats | None,
        where: str = "a retrieve",
    ) -> dict[str, Any] | None:
        """Return a batch object's columns, or None (noted as a bad item) when malformed.

        ``where`` says where the object came from, for one without a usable id.
        """
        try:
            return _batch_columns(b, ws.workspace_id, now)
        except (bounds.OutOfRange, AttributeError, TypeError, ValueError) as exc:
            name = _listed_id(b) or f"at {where}"
            problem = (
                str(exc)
                if isinstance(exc, bounds.OutOfRange)
                else (f"malformed batch object: {type(exc).__name__}: {exc}")
            )
            line = f"{ws.name}: batch {name}: {problem}; left out"
            log.warning("batches: %s", line)
            if stats is not None:
                stats.bad_lines += 1
                stats.note(f"bad item: {line}")
            return None

    def _iter_pages(self, ws: WorkspaceClient) -> Iterator[list[Any]]:
        # Page by hand rather than auto-paginating, so the walk stops at the first known batch
        # without fetching a page it does not need.
        page = ws.client.messages.batches.list(limit=self.page_size)
        while True:
            yield list(page.data)
            if not page.has_more or not page.last_id:
                return
            page = ws.client.messages.batches.list(limit=self.page_size, after_id=page.last_id)

    # 2. re-poll -------------------------------------------------------------------------

    def _repoll_unended(
        self,
        session: Session,
        now: datetime,
        stats: RunStats,
        ws: WorkspaceClient,
        seen: set[str],
        deadline: float | None = None,
    ) -> None:
        ids = session.execute(
            select(col(Batch.id))
            .where(
                col(Batch.workspace_id) == ws.workspace_id,
                col(Batch.processing_status) != "ended",
            )
            .order_by(col(Batch.updated_at))  # the longest unseen first, when the budget cuts
        ).scalars()
        rows = []
        todo = [i for i in ids if i not in seen]
        for n, bid in enumerate(todo):
            if deadline is not None and n and clock.monotonic() > deadline:
                stats.note(
                    f"{ws.name}: the poll's time budget is spent; {len(todo) - n} unended "
                    "batch(es) left to re-poll next time"
                )
                break
            b = ws.client.messages.batches.retrieve(bid)
            row = self._columns(b, ws, now, stats, f"the re-poll of {bid}")
            if row is not None:
                rows.append(row)
        if rows:
            db.upsert(session, Batch, rows, key=["id"], update=_OBJECT_COLS)
            rollups.mark_dirty(session, [r["ended_at"] for r in rows if r["ended_at"]], now)
            session.commit()
            ended = sum(1 for r in rows if r["processing_status"] == "ended")
            stats.note(f"{ws.name}: re-polled {len(rows)} unended batch(es), {ended} now ended")

    # 3. results ---------------------------------------------------------------------------

    def _ingest_ended(
        self,
        session: Session,
        now: datetime,
        stats: RunStats,
        ws: WorkspaceClient,
        deadline: float | None = None,
    ) -> None:
        b: Any = Batch
        due = or_(
            col(b.results_state) != "failed",
            col(b.results_retry_at).is_(None),
            col(b.results_retry_at) <= now,
            col(b.archived_at).is_not(None),
        )
        pending = session.execute(
            select(
                col(b.id),
                col(b.archived_at),
                col(b.results_attempts),
                col(b.requests),
                col(b.results_state),
            )
            .where(
                col(b.workspace_id) == ws.workspace_id,
                col(b.processing_status) == "ended",
                col(b.results_state).not_in(TERMINAL_RESULT_STATES),
                true() if self.retry_failed else due,
            )
            .order_by(col(b.ended_at))
        ).all()
        errors: list[str] = []
        streak = 0  # consecutive failed reads: the circuit breaker
        for i, (bid, archived_at, attempts, expected, state) in enumerate(pending):
            left = len(pending) - i
            if streak >= self.breaker_after:
                why = f"the results endpoint failed {streak} times in a row"
                stats.note(f"{ws.name}: {why}; {left} batch result file(s) left for the next poll")
                log.warning("batches: %s: %s; %d result file(s) wait", ws.name, why, left)
                break
            if deadline is not None and i and clock.monotonic() > deadline:
                # After at least one read per poll: a slow endpoint still makes progress.
                why = f"the poll's time budget ({fmt.seconds(self.budget_seconds or 0)}) is spent"
                stats.note(f"{ws.name}: {why}; {left} batch result file(s) left for the next poll")
                log.warning("batches: %s: %s; %d result file(s) wait", ws.name, why, left)
                break
            if state == "failed" and archived_at is None:
                # A slow retry: the batch may have been archived since it was last listed.
                archived_at = self._refresh(session, ws, bid, now)
            if archived_at is not None:
                self._mark(session, bid, now, state="unavailable",
                           error="archived: results are no longer available")  # fmt: skip
                stats.note(f"{bid}: archived before its results were read (no token data)")
                continue
            try:
                tally = self._stream_results(ws, bid)
                if tally.lines != expected:
                    raise ResultsError(
                        f"the results have {tally.lines} lines but the batch has {expected} "
                        "requests"
                    )
            except Exception as exc:
                # Nothing of this batch's results was written; mark it and try again later.
                session.rollback()
                streak += 1
                attempts += 1
                error = f"{type(exc).__name__}: {exc}"
                errors.append(f"{bid}: {exc}")
                if attempts < self.max_attempts:
                    self._mark(session, bid, now, state="retry", error=error, attempts=attempts)
                    log.warning(
                        "batches: results of %s not read (attempt %d): %s", bid, attempts, exc
                    )
                    continue
                retry_at = now + slow_retry(attempts - self.max_attempts)
                self._mark(session, bid, now, state="failed", error=error, attempts=attempts,
                           retry_at=retry_at)  # fmt: skip
                give_up = (
                    f"results of {bid} still unread after {attempts} attempts ({exc}): giving up "
                    f"for now; next try at {fmt.iso(retry_at)}, or now with "
                    "`batch-monitor collect --retry-failed`"
                )
                log.error("batches: %s", give_up)
                stats.note(give_up)
                continue
            streak = 0
            self._record_results(session, bid, tally, now)
            stats.items += 1
        waiting = session.execute(
            select(func.count(), func.min(col(b.results_retry_at))).where(
                col(b.workspace_id) == ws.workspace_id,
                col(b.results_state) == "failed",
                col(b.results_retry_at) > now,
            )
        ).one()
        if waiting[0]:
            stats.note(
                f"{ws.name}: {waiting[0]} batch(es) with unreadable results wait for their next "
                f"try (the first at {fmt.iso(waiting[1])}); their cost is not counted yet"
            )
        if errors:
            raise ResultsError(f"{len(errors)} batch result file(s) not read: " + "; ".join(errors))

    def _refresh(
        self, session: Session, ws: WorkspaceClient, batch_id: str, now: datetime
    ) -> datetime | None:
        """Re-read one batch object (the listing never shows ended batches again)."""
        b = ws.client.messages.batches.retrieve(batch_id)
        row = self._columns(b, ws, now, None, f"the re-read of {batch_id}")
        if row is None:
            return None
        db.upsert(session, Batch, [row], key=["id"], update=_OBJECT_COLS)
        session.commit()
        archived: datetime | None = row["archived_at"]
        return archived

    def _stream_results(self, ws: WorkspaceClient, batch_id: str) -> ResultsTally:
        """Stream one batch's results JSONL and tally it (raise ResultsError on any defect)."""
        tally = ResultsTally()
        # with_streaming_response + iter_lines + orjson: the SDK's own decoder builds an object
        # per line from 64-byte chunks and was about 15x slower on the same bytes.
        with ws.client.messages.batches.with_streaming_response.results(batch_id) as response:
            tally.consume(response.iter_lines(), self.workloads)
        return tally

    def _record_results(
        self, session: Session, batch_id: str, tally: ResultsTally, now: datetime
    ) -> None:
        batch = session.get(Batch, batch_id)
        if batch is None:  # pragma: no cover - listed rows are committed before this step
            return
        at = batch.ended_at or batch.created_at  # billed when the batch ends
        per_model, unknown = price_tally(tally, self.book, at)
        for model in unknown:
            self._unpriced.setdefault(model, []).append(batch_id)
        # One transaction: the usage rows, the error rows and the batch row change together.
        session.execute(delete(BatchUsage).where(col(BatchUsage.batch_id) == batch_id))
        session.execute(delete(BatchError).where(col(BatchError.batch_id) == batch_id))
        totals = Tokens.zero()
        cost = standard = ZERO
        unpriced = 0
        for model, t in sorted(per_model.items()):
            session.add(
                BatchUsage(
                    batch_id=batch_id,
                    model=model,
                    requests=t.requests,
                    input_tokens=t.tokens.input_tokens,
                    output_tokens=t.tokens.output_tokens,
                    cache_read_tokens=t.tokens.cache_read_tokens,
                    cache_write_5m_tokens=t.tokens.cache_write_5m_tokens,
                    cache_write_1h_tokens=t.tokens.cache_write_1h_tokens,
                    web_searches=t.tokens.web_searches,
                    priced=t.priced,
                    cost_usd=t.cost if t.priced else None,
                    standard_cost_usd=t.standard if t.priced else None,
                )
            )
            totals += t.tokens
            if t.priced:
                cost += t.cost
                standard += t.standard
            else:
                unpriced += t.requests
        for etype, (count, sample) in sorted(tally.errors.items()):
            session.add(BatchError(batch_id=batch_id, error_type=etype, count=count,
                                   sample_message=sample))  # fmt: skip
        batch.workload = tally.workload()
        batch.input_tokens, batch.output_tokens = totals.input_tokens, totals.output_tokens
        batch.cache_read_tokens = totals.cache_read_tokens
        batch.cache_write_5m_tokens = totals.cache_write_5m_tokens
        batch.cache_write_1h_tokens = totals.cache_write_1h_tokens
        batch.web_searches = totals.web_searches
        batch.cost_usd, batch.standard_cost_usd = cost, standard
        batch.unpriced_requests = unpriced
        batch.results_state = "ingested"
        batch.results_error = None
        batch.results_retry_at = None
        batch.results_ingested_at = now
        batch.updated_at = now
        session.add(batch)
        if batch.ended_at is not None:  # the day's rollups now hold this batch's money
            rollups.mark_dirty(session, [batch.ended_at], now)
        crashpoint("results.ingest", flush=session)
        session.commit()

    def _mark(
        self,
        session: Session,
        batch_id: str,
        now: datetime,
        *,
        state: str,
        error: str,
        attempts: int | None = None,
        retry_at: datetime | None = None,
    ) -> None:
        batch = session.get(Batch, batch_id)
        if batch is None:  # pragma: no cover
            return
        batch.results_state = state
        # Upstream error text can echo request headers: stored scrubbed, like every output.
        batch.results_error = scrub(error, self.secrets)[:2000]
        batch.results_retry_at = retry_at
        if attempts is not None:
            batch.results_attempts = attempts
        batch.updated_at = now
        session.add(batch)
        if batch.ended_at is not None:
            rollups.mark_dirty(session, [batch.ended_at], now)
        session.commit()


def from_settings(name: str, settings: Settings) -> BatchesSource | None:
    """Build the batches source from settings (None when no workspace key is configured)."""
    if not settings.workspaces:
        return None
    from monitor.pricing import PriceBook

    counter = CallCounter()
    clients = [
        WorkspaceClient(
            workspace_id=w.id,
            name=w.name,
            client=make_client(
                w.api_key.get_secret_value(),
                base_url=settings.anthropic_base_url,
                timeout=settings.collect.request_timeout,
                max_retries=settings.collect.max_retries,
                max_retry_after=settings.collect.max_retry_after,
                counter=counter,
            ),
        )
        for w in settings.workspaces
    ]
    return BatchesSource(
        clients,
        PriceBook.load(settings.prices),
        workloads=settings.workloads,
        page_size=settings.collect.list_page_size,
        max_attempts=settings.collect.results_max_attempts,
        counter=counter,
        budget=settings.collect.poll_budget,
        breaker_after=settings.collect.results_breaker,
        secrets=settings.secrets(),
    )
