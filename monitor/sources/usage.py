"""Collect the organisation's usage and cost reports: what was used, and what was billed.

Two sources share this module: ``usage`` (hourly token usage per product, tier, model, workspace,
context window and inference region, priced here) and ``cost`` (what the provider billed per
UTC day). Both need an Admin API key.

Which API:

- The Usage and Cost Analytics API (``/v1/organizations/analytics/{usage,cost}``, beta) through
  the SDK's typed methods. It has request counts and the ``product`` dimension that splits
  ``messages_api`` from ``message_batches_api``. Rows are stored with ``source="analytics"``.
- The legacy Admin reports (``/usage_report/messages``, ``/cost_report``) through the SDK client's
  raw ``get``: for history before 2026-01-01 or older than 365 days (the analytics API holds
  neither), and whenever the analytics API is refused (403/404/400). Rows are stored with
  ``source="legacy"``; the legacy usage report has no request counts. The log and the run's
  notes say which API each range came from.

Group-by choice (the analytics API allows at most 5 dimensions; seven were wanted): usage is
grouped by ``product, service_tier, model, workspace_id, context_window`` and read once per
inference region with the ``inference_geos[]`` filter (``us``, ``global``, ``not_available``,
which the API documents as matching rows whose region is unset, so the three passes partition
the usage exactly). Every dimension that changes a price (model, tier, long context, the 1.1x
US region) is therefore known per row, and the summary has its product and workspace splits.
``api_key_id`` is left out (stored as ""): nothing is priced or summarised by key, and keeping
it would have cost a pricing dimension. Passes over ``context_windows[]`` were not used instead
because the API does not promise every row has a context window (code execution has none).
The cost report is grouped by ``product, service_tier, model, workspace_id, inference_geo``
plus ``cost_type`` and ``token_type`` (which do not count toward the 5), in one pass.

Polling: the first run backfills ``collect.backfill``; later runs read from where the last one
stopped, and always re-read a trailing window (``collect.trailing_window`` of hours for usage,
the current and previous UTC day for cost) plus every usage bucket not yet final and every
cost day last read less than ``collect.final_after`` after it ended, because buckets are revised
after they close (a poll that fails for longer than the re-read window must not leave one at a
provisional value). A re-read range is written in one transaction: rows are
upserted on the natural key (values replaced, never added), rows of that range the re-read no
longer shows are deleted (a revision can remove a group), and rows of the other source in that
range are deleted too, so each bucket comes from one API only. Upsert-plus-delete was chosen
over delete-then-insert because unchanged rows keep their ids and only what vanished is removed.
A usage bucket is ``final`` once ``bucket_end <= now - collect.final_after``.

Paging: the SDK follows ``next_page`` blindly, so a page that says ``has_more`` without a cursor
would end the read early and a cursor that points back would loop or read rows twice. Both, and
a row met twice in one read, fail the run (:class:`ReportPagingError`): the span is not stored,
and the next poll reads it again.
"""

from __future__ import annotations

import functools
import logging
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import delete, func, select
from sqlmodel import Session, col

from monitor import bounds, clock, db, fmt, rollups
from monitor.client import CallCounter, make_client
from monitor.collect import RunStats
from monitor.config import Settings
from monitor.models import CostBucket, SourceCursor, UsageBucket
from monitor.pricing import PriceBook, Usage

if TYPE_CHECKING:
    import anthropic

log = logging.getLogger(__name__)

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
# The analytics API holds nothing earlier than this, and nothing older than 365 days.
ANALYTICS_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
ANALYTICS_MAX_AGE = timedelta(days=365)
# One analytics call may span at most 31 days (24 h for 1m buckets, which are not used here).
MAX_SPAN = timedelta(days=31)
# A span is read whole before it is stored: a first poll backfilling a month of hourly buckets
# for a large organisation held them all at once (227 MB more for 100 workspaces). A week at a
# time holds a quarter of that, and a poll's trailing window still fits one span.
HOURLY_SPAN = timedelta(days=7)
ANALYTICS_PAGE_LIMIT = 1000
LEGACY_HOURLY_LIMIT = 168  # buckets per page of the legacy usage report at 1h
LEGACY_DAILY_LIMIT = 31  # buckets per page of the legacy cost report (1d only)
# Statuses that mean "this organisation cannot use the analytics API here": fall back.
REFUSED_STATUSES = (400, 403, 404)

USAGE_GROUP_BY = ("product", "service_tier", "model", "workspace_id", "context_window")
GEO_PASSES = ("us", "global", "not_available")
COST_GROUP_BY = (
    "product",
    "service_tier",
    "model",
    "workspace_id",
    "inference_geo",
    "cost_type",
    "token_type",
)
LEGACY_USAGE_GROUP_BY = (
    "api_key_id",
    "workspace_id",
    "model",
    "service_tier",
    "context_window",
    "inference_geo",
)
LEGACY_COST_GROUP_BY = ("workspace_id", "description")
LEGACY_USAGE_PATH = "/v1/organizations/usage_report/messages"
LEGACY_COST_PATH = "/v1/organizations/cost_report"

# The natural keys are the tables' unique constraints: read them, so they cannot drift apart.
USAGE_KEY = db.natural_key(UsageBucket, "uq_usage_bucket_key")
COST_KEY = db.natural_key(CostBucket, "uq_cost_bucket_key")
_TOKEN_COLS = (
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "web_searches",
)
_CENTS = Decimal(100)
BATCH_PRODUCT = "message_batches_api"


# --- small helpers ------------------------------------------------------------------------


def _utc(ts: datetime) -> datetime:
    """Return the aware ``ts`` in UTC; refuse a naive one.

    ``astimezone`` would read a naive datetime as the host's local time, so a bucket or cursor
    would shift by the host's UTC offset. Every time computed here is aware; a naive one is a
    bug, refused as the simulator refuses a naive ``now``.
    """
    if ts.tzinfo is None or ts.utcoffset() is None:
        raise ValueError(f"naive datetime {ts.isoformat()}: pass an aware (UTC) datetime")
    return ts.astimezone(UTC)


def floor_to(ts: datetime, step: timedelta) -> datetime:
    """Return the start of the UTC hour or day (``step``) holding the aware ``ts``."""
    ts = _utc(ts)
    if step == DAY:
        return ts.replace(hour=0, minute=0, second=0, microsecond=0)
    return ts.replace(minute=0, second=0, microsecond=0)


def ceil_to(ts: datetime, step: timedelta) -> datetime:
    """Return the first hour or day boundary at or after ``ts``."""
    floor = floor_to(ts, step)
    return floor if floor == ts else floor + step


def iso(ts: datetime) -> str:
    """Format an aware datetime as RFC 3339 UTC with a ``Z``."""
    return _utc(ts).isoformat().replace("+00:00", "Z")


def parse_time(value: Any, what: str = "time") -> datetime:
    """Return a report's or a stored cursor's time (text or datetime) as an aware UTC datetime.

    The reports speak UTC (RFC 3339 with ``Z``), and so does every cursor written here; a time
    without a zone is therefore UTC, as in call logs, never the host's local time. A time
    outside the years 2000-2999 is refused (``bounds.OutOfRange`` names ``what``).
    """
    return bounds.instant(value, what)


def _text(value: Any) -> str:
    """Store an absent dimension as "" (NULLs never collide in a unique constraint)."""
    return "" if value is None else str(value)


def _geo(value: Any) -> str:
    # Both APIs describe an unset region as not_available (legacy in rows, analytics in its
    # filter); one spelling keeps the two sources comparable.
    return "not_available" if value in (None, "") else str(value)


def cents_to_usd(amount: Any) -> Decimal:
    """Convert a report amount (a decimal string of cents) to exact USD."""
    return bounds.usd(amount, "amount (cents)") / _CENTS


def _get(obj: Any, name: str) -> Any:
    """Read a field from an SDK model or a plain dict."""
    if isinstance(obj, dict):
        return obj.get(name)
    return getattr(obj, name, None)


def is_refusal(exc: BaseException) -> bool:
    """Return whether ``exc`` is the analytics API saying no (rather than an outage)."""
    import anthropic

    return isinstance(exc, anthropic.APIStatusError) and exc.status_code in REFUSED_STATUSES


def _refusal_text(exc: BaseException) -> str:
    status = getattr(exc, "status_code", "?")
    body = getattr(exc, "body", None)
    message = ""
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            message = str(err.get("message") or "")
    return f"HTTP {status}" + (f": {message}" if message else "")


class ReportPagingError(Exception):
    """A report's pages do not chain: a cursor missing or pointing back, rows served twice.

    The span is not stored (storing it would record a gap, or rows twice, as complete); the
    run fails and the next poll reads the span again from its start.
    """


def _pages(first: Any, what: str) -> Iterator[tuple[int, Any]]:
    """Yield ``(number, page)`` for every page of an SDK cursor page, checking the chain.

    The SDK follows ``next_page`` blindly: it stops quietly when a page says ``has_more`` but
    has no cursor (the rest of the range would be lost) and loops forever on a cursor that
    points back. Both are refused here.
    """
    seen: set[str] = set()
    page, number = first, 1
    while True:
        yield number, page
        cursor = page.next_page
        if not cursor:
            if getattr(page, "has_more", False):
                raise ReportPagingError(
                    f"{what}: page {number} says there is more but has no cursor to the next page"
                )
            return
        if cursor in seen:
            raise ReportPagingError(
                f"{what}: page {number} points back to a page already read (a repeated cursor)"
            )
        seen.add(cursor)
        page, number = page.get_next_page(), number + 1


def _once(seen: set[tuple[Any, ...]], key: tuple[Any, ...], what: str, page: int) -> None:
    """Refuse a report row met twice in one read: a page was served again."""
    try:
        hash(key)
    except TypeError:  # an odd-typed field: still comparable by its text (it is a bad item)
        key = (repr(key),)
    if key in seen:
        raise ReportPagingError(
            f"{what}: page {page} repeats a row of an earlier page (the cursor went back)"
        )
    seen.add(key)


@dataclass(frozen=True)
class Span:
    """A half-open range ``[start, end)`` read from one API in one request series."""

    start: datetime
    end: datetime
    api: str  # analytics | legacy
    why: str = ""  # why the legacy API is used for it


def plan_spans(start: datetime, end: datetime, now: datetime, step: timedelta) -> list[Span]:
    """Split ``[start, end)`` into API-sized spans: legacy before the analytics floor.

    The floor is the later of 2026-01-01 and ``now - 365 days`` (rounded up to ``step``); each
    span covers at most 7 days of hourly buckets, or 31 days of daily ones.
    """
    longest = HOURLY_SPAN if step < DAY else MAX_SPAN
    floor = max(ANALYTICS_EPOCH, ceil_to(now - ANALYTICS_MAX_AGE, step))
    spans: list[Span] = []
    pieces = [
        (start, min(end, floor), "legacy"),
        (max(start, floor), end, "analytics"),
    ]
    for lo, hi, api in pieces:
        why = (
            "before the analytics API's first day or older than 365 days" if api == "legacy" else ""
        )
        while lo < hi:
            nxt = min(hi, lo + longest)
            spans.append(Span(lo, nxt, api, why))
            lo = nxt
    return spans


def load_cursor(session: Session, name: str) -> dict[str, Any]:
    """Return the stored cursor of source ``name`` ({} before the first run)."""
    row = session.get(SourceCursor, name)
    if row is None:
        return {}
    data = orjson.loads(row.cursor)
    return data if isinstance(data, dict) else {}


def save_cursor(session: Session, name: str, cursor: dict[str, Any], now: datetime) -> None:
    """Store the cursor of source ``name`` (in the caller's transaction)."""
    db.upsert(
        session,
        SourceCursor,
        [{"source": name, "cursor": orjson.dumps(cursor).decode(), "updated_at": now}],
        key=["source"],
    )


@contextmanager
def _progress(enabled: bool, label: str, total: int) -> Iterator[Callable[[], None]]:
    """Yield an ``advance()`` that moves a rich progress bar on stderr (or does nothing)."""
    if not enabled or total <= 1:
        yield lambda: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=total)
        yield lambda: bar.advance(task)


# --- the shared collector ------------------------------------------------------------------


class _ReportSource(ABC):
    """What the usage and cost collectors share: spans, fallback, cursor, replace-in-range."""

    name: str
    model: type[UsageBucket] | type[CostBucket]
    key: tuple[str, ...]
    time_col: str
    step: timedelta
    unit: str  # what a stored row is called in notes

    def __init__(
        self,
        client: anthropic.Anthropic,
        *,
        backfill: timedelta = timedelta(days=30),
        trailing_window: timedelta = timedelta(hours=3),
        final_after: timedelta = timedelta(hours=1),
        counter: CallCounter | None = None,
        progress: bool | None = None,
        page_limit: int | None = None,
        default_workspace: str = "default",
        budget: timedelta | None = None,
    ) -> None:
        self.client = client
        self._bad: list[str] = []  # bad items of the current read, reported by _store
        # One poll stops starting new spans once this is spent; the cursor resumes it.
        self.budget = budget
        self.default_workspace = default_workspace
        # Smaller pages than the API maximum (tests use it to exercise pagination).
        self.page_limit = page_limit
        self.backfill = backfill
        self.trailing_window = trailing_window
        self.final_after = final_after
        self.counter = counter or CallCounter()
        # A progress bar only for a person watching a terminal, never in logs or tests.
        self.progress = sys.stderr.isatty() if progress is None else progress

    # hooks ------------------------------------------------------------------------------

    @abstractmethod
    def _trailing_start(self, session: Session, now: datetime) -> datetime:
        """Return where this poll starts re-reading (late revisions are replaced)."""

    @abstractmethod
    def read_analytics(self, span: Span) -> list[dict[str, Any]]:
        """Read one span from the analytics API as table rows (without prices)."""

    @abstractmethod
    def read_legacy(self, span: Span) -> list[dict[str, Any]]:
        """Read one span from the legacy report as table rows (without prices)."""

    def _finish_rows(
        self, rows: list[dict[str, Any]], now: datetime, stats: RunStats
    ) -> list[dict[str, Any]]:
        return rows

    # the run ----------------------------------------------------------------------------

    def collect(self, session: Session, now: datetime, stats: RunStats) -> None:
        """Read what is new or revisable as of ``now`` and replace it in the store."""
        before = self.counter.total
        try:
            self._collect(session, now, stats)
        finally:
            stats.api_calls = self.counter.total - before

    def _collect(self, session: Session, now: datetime, stats: RunStats) -> None:
        cursor = load_cursor(session, self.name)
        end = floor_to(now, self.step) + self.step  # the current, still-filling bucket too
        if not cursor:
            start = floor_to(now - self.backfill, self.step)
            stats.note(f"{self.name}: first run, backfilling from {iso(start)}")
        else:
            start = self._trailing_start(session, now)
            if cursor.get("read_until"):
                start = min(start, parse_time(cursor["read_until"]))
        spans = plan_spans(start, end, now, self.step)
        # The cursor never passes a bucket that may still change: one read while still filling
        # (or still empty) is read again by the next poll, however long after this one it runs.
        settled = floor_to(now - self.final_after, self.step)
        refused: str | None = None
        legacy_from = parse_time(cursor["legacy_from"]) if cursor.get("legacy_from") else None

        def run(span: Span) -> Span:
            nonlocal refused
            if span.api == "analytics" and refused is None:
                try:
                    rows = self.read_analytics(span)
                except Exception as exc:
                    if not is_refusal(exc):
                        raise
                    refused = _refusal_text(exc)
                    log.warning(
                        "%s: the analytics API refused the request (%s); using the legacy "
                        "report instead",
                        self.name,
                        refused,
                    )
                    stats.note(f"{self.name}: analytics API refused ({refused})")
                else:
                    self._store(session, span, rows, now, stats)
                    return span
            if span.api == "analytics":
                span = Span(span.start, span.end, "legacy", f"analytics API refused ({refused})")
            self._store(session, span, self.read_legacy(span), now, stats)
            return span

        budget = self.budget or timedelta(0)
        deadline = clock.monotonic() + budget.total_seconds() if self.budget is not None else None
        cut = False
        with _progress(self.progress, f"{self.name}: reading reports", len(spans)) as advance:
            done: list[Span] = []
            for span in spans:
                if done and deadline is not None and clock.monotonic() > deadline:
                    # At least one span per poll, so a slow API still makes progress.
                    cut = True
                    stats.note(
                        f"{self.name}: the poll's time budget ({fmt.span(budget)}) is "
                        f"spent; {iso(span.start)}..{iso(end)} is read from the next poll"
                    )
                    log.warning(
                        "%s: time budget spent; resuming at %s next poll",
                        self.name,
                        iso(span.start),
                    )
                    break
                done.append(run(span))
                if done[-1].api == "legacy" and span.api == "analytics":
                    first = span.start
                    legacy_from = first if legacy_from is None else min(legacy_from, first)
                read_until = min(span.end, settled)
                if cursor.get("read_until"):
                    read_until = max(read_until, parse_time(cursor["read_until"]))
                cursor = {**cursor, "read_until": iso(read_until), "api": done[-1].api}
                cursor["legacy_from"] = iso(legacy_from) if legacy_from else None
                save_cursor(session, self.name, cursor, now)
                session.commit()
                advance()

        # The analytics API is back after a refusal: replace the legacy rows it stood in for.
        if refused is None and legacy_from is not None and not cut:
            floor = max(ANALYTICS_EPOCH, ceil_to(now - ANALYTICS_MAX_AGE, self.step))
            for span in plan_spans(max(legacy_from, floor), start, now, self.step):
                if span.api == "analytics":
                    done.append(run(span))
                    session.commit()
            if refused is None:
                cursor["legacy_from"] = None
                stats.note(
                    f"{self.name}: analytics API available again; re-read from {iso(legacy_from)}"
                )
                save_cursor(session, self.name, cursor, now)
                session.commit()

        for span in done:
            label = "analytics API" if span.api == "analytics" else f"legacy report ({span.why})"
            log.info(
                "%s: %s..%s read from the %s", self.name, iso(span.start), iso(span.end), label
            )
        apis = sorted({s.api for s in done})
        stats.note(
            f"{self.name}: {iso(start)}..{iso(done[-1].end if cut else end)} read from "
            + " and ".join(
                "the analytics API" if a == "analytics" else "the legacy report" for a in apis
            )
        )

    def _store(
        self,
        session: Session,
        span: Span,
        rows: list[dict[str, Any]],
        now: datetime,
        stats: RunStats,
    ) -> None:
        """Replace the stored rows of ``span`` with ``rows`` (the caller commits)."""
        inside = []
        for r in rows:
            at = r[self.time_col]
            if span.start <= at < span.end:
                inside.append(r)
            else:  # never replaced by a later read of its own span: refused, not kept forever
                self._bad.append(
                    f"{self.name}: bucket {iso(at)} is outside the span asked for "
                    f"({iso(span.start)}..{iso(span.end)})"
                )
        self._report_bad(stats)
        rows = inside
        for r in rows:
            r["source"] = span.api
            r["fetched_at"] = now
            # The reports name the default workspace by no id (null): record it under the
            # configured default's id, so --workspace and the batch ledger agree with it.
            if not r.get("workspace_id"):
                r["workspace_id"] = self.default_workspace
        rows = self._finish_rows(_merge(rows, self.key, self._sum_cols()), now, stats)
        written = db.upsert(session, self.model, rows, key=list(self.key))
        table = self.model
        tcol = getattr(table, self.time_col)
        in_span = (col(tcol) >= span.start, col(tcol) < span.end)
        fresh = {tuple(r[k] for k in self.key) for r in rows}
        stale = [
            r.id
            for r in session.execute(
                select(col(table.id), *(col(getattr(table, k)) for k in self.key)).where(
                    col(table.source) == span.api, *in_span
                )
            )
            if tuple(r[1:]) not in fresh
        ]
        removed = 0
        for i in range(0, len(stale), 500):
            chunk = stale[i : i + 500]
            done = session.execute(delete(table).where(col(table.id).in_(chunk)))
            removed += db.rowcount(done)
        # One source per bucket: the other API's rows for this range are superseded.
        superseded = db.rowcount(
            session.execute(delete(table).where(col(table.source) != span.api, *in_span))
        )
        rollups.mark_dirty(session, rollups.days_between(span.start, span.end), now)
        stats.items += written
        if removed or superseded:
            stats.note(
                f"{self.name}: {iso(span.start)}..{iso(span.end)}: {removed} {self.unit}(s) gone "
                f"on re-read, {superseded} from the other API replaced"
            )

    def _results(self, bucket: Any, where: str) -> list[Any]:
        """Return a legacy bucket's results; a malformed bucket is a bad item (no results)."""
        try:
            return _list(bucket, "results", where)
        except ValueError as exc:
            self._bad.append(f"{self.name}: {exc}")
            return []

    @abstractmethod
    def _sum_cols(self) -> tuple[str, ...]:
        """Return the columns that add up when two rows share a natural key."""

    def _limit(self, most: int) -> int:
        return min(most, self.page_limit) if self.page_limit else most

    @contextmanager
    def _item(
        self, where: str, rows: list[dict[str, Any]], span: Span
    ) -> Iterator[Callable[[dict[str, Any]], None]]:
        """Build one report row; a malformed or out-of-range item is a bad item, not a crash.

        The rest of the page is kept: one year-9999 bucket must not wedge the source. A row
        outside ``span`` (never replaced by a later read of its own span) is one too, named here
        by its page and item.
        """
        model, time_col = self.model, self.time_col

        def add(row: dict[str, Any]) -> None:
            at = row[time_col]
            if not span.start <= at < span.end:
                raise bounds.OutOfRange(
                    f"{time_col} {iso(at)} is outside the span asked for "
                    f"({iso(span.start)}..{iso(span.end)})"
                )
            rows.append(_fitted(model, row))

        try:
            yield add
        except _BAD_ITEM as exc:
            self._bad.append(f"{self.name}: {where}: {_problem(exc)}")

    def _report_bad(self, stats: RunStats) -> None:
        """Note the bad items of the last read (each one in the log, a few in the notes)."""
        bad, self._bad = self._bad, []
        for line in bad:
            log.warning("%s (left out)", line)
        stats.bad_lines += len(bad)
        for line in bad[:5]:
            stats.note(f"bad item left out: {line}")
        if len(bad) > 5:
            stats.note(f"{self.name}: {len(bad) - 5} more bad item(s) left out (see the log)")

    # raw legacy calls --------------------------------------------------------------------

    def _legacy_pages(self, path: str, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """Yield every page of a legacy report (``has_more`` + ``next_page``), checking that
        the pages chain (see :func:`_pages`): each bucket comes once, no cursor comes back."""
        page: str | None = None
        cursors: set[str] = set()
        buckets: set[Any] = set()
        number = 0
        while True:
            query = dict(params)
            if page:
                query["page"] = page
            # A list value is sent as name[]=a&name[]=b (reference 2.5).
            body = self.client.get(path, cast_to=object, options={"params": query})
            number += 1
            if not isinstance(body, dict):
                raise ValueError(f"{path}: expected a JSON object, got {type(body).__name__}")
            for bucket in _list(body, "data", f"legacy report {path} page {number}"):
                start = bucket.get("starting_at") if isinstance(bucket, dict) else None
                if isinstance(start, str):  # a bucket without a time is a bad item, later
                    _once(buckets, (start,), f"legacy report {path}", number)
            yield body
            page = body.get("next_page")
            if not page:
                if body.get("has_more"):
                    raise ReportPagingError(
                        f"legacy report {path}: page {number} says there is more but has no "
                        "cursor to the next page"
                    )
                return
            if page in cursors:
                raise ReportPagingError(
                    f"legacy report {path}: page {number} points back to a page already read "
                    "(a repeated cursor)"
                )
            cursors.add(page)


# What a malformed report item raises while its row is built.
_BAD_ITEM = (ValueError, TypeError, KeyError, AttributeError, ArithmeticError)


@functools.cache
def _widths(model: type[UsageBucket] | type[CostBucket]) -> dict[str, int]:
    """Return the width of each text column of ``model``'s table."""
    columns = model.__table__.columns  # type: ignore[union-attr]
    return {c.name: c.type.length for c in columns if getattr(c.type, "length", None)}


def _fitted(model: type[UsageBucket] | type[CostBucket], row: dict[str, Any]) -> dict[str, Any]:
    """Return ``row`` once every text in it fits its column; raise OutOfRange naming one.

    PostgreSQL refuses a value too long for its column, and the span's whole transaction with
    it: one 200-character model name must be a bad item, not a source failing every poll.
    """
    for name, most in _widths(model).items():
        value = row.get(name)
        if isinstance(value, str) and len(value) > most:
            raise bounds.OutOfRange(f"{name}: longer than {most} characters: {bounds.show(value)}")
    return row


def _problem(exc: BaseException) -> str:
    if isinstance(exc, KeyError):
        return f"missing field {exc}"
    if isinstance(exc, bounds.OutOfRange):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _page_items(page: Any, where: str) -> list[Any]:
    """Return an analytics page's items; raise ValueError naming ``where`` when not a list."""
    items = getattr(page, "data", None)
    if not isinstance(items, list):
        raise ValueError(f"{where}: data must be a list, got {type(items).__name__}")
    return items


def _list(obj: Any, name: str, where: str) -> list[Any]:
    """Return the list field ``name`` of a legacy report object (missing or null: empty).

    Raise ValueError naming ``where`` when ``obj`` is not an object or the field not a list.
    """
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: not a JSON object but {type(obj).__name__}")
    value = obj.get(name)
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValueError(f"{where}: {name} must be a list, got {type(value).__name__}")
    return value


def _merge(
    rows: list[dict[str, Any]], key: Sequence[str], sums: Sequence[str]
) -> list[dict[str, Any]]:
    """Add up rows that share a natural key (one upsert statement must not hit a row twice)."""
    out: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in rows:
        k = tuple(r[c] for c in key)
        seen = out.get(k)
        if seen is None:
            out[k] = dict(r)
            continue
        for c in sums:
            a, b = seen.get(c), r.get(c)
            seen[c] = None if a is None or b is None else a + b
    return list(out.values())


# --- usage ---------------------------------------------------------------------------------


def _usage_tokens(u: Any) -> dict[str, int]:
    cache = _get(u, "cache_creation") or {}
    tools = _get(u, "server_tool_use") or {}
    count = bounds.count
    return {
        "input_tokens": count(_get(u, "uncached_input_tokens"), "uncached_input_tokens"),
        "output_tokens": count(_get(u, "output_tokens"), "output_tokens"),
        "cache_read_tokens": count(_get(u, "cache_read_input_tokens"), "cache_read_input_tokens"),
        "cache_write_5m_tokens": count(
            _get(cache, "ephemeral_5m_input_tokens"), "ephemeral_5m_input_tokens"
        ),
        "cache_write_1h_tokens": count(
            _get(cache, "ephemeral_1h_input_tokens"), "ephemeral_1h_input_tokens"
        ),
        "web_searches": count(_get(tools, "web_search_requests"), "web_search_requests"),
    }


def price_row(book: PriceBook, row: dict[str, Any]) -> tuple[bool, Decimal | None, Decimal | None]:
    """Price one usage row: ``(priced, cost at its own tier, cost at standard)``.

    Batch usage (tier ``batch`` or product ``message_batches_api``) costs the batch rate. The
    tier by prompt size uses the report's context window and, where the report has request
    counts, the average prompt per request. Without counts (legacy report) a tier below 200K
    prompt tokens cannot be decided and is assumed not to apply.
    """
    model = row["model"]
    if not model:
        return False, None, None
    prompt = (
        row["input_tokens"]
        + row["cache_read_tokens"]
        + row["cache_write_5m_tokens"]
        + row["cache_write_1h_tokens"]
    )
    requests = row.get("requests")
    if not requests or requests < 1:
        requests = max(1, prompt)  # average prompt <= 1 token: no size tier from the average
    usage = Usage(
        input_tokens=row["input_tokens"],
        output_tokens=row["output_tokens"],
        cache_read_tokens=row["cache_read_tokens"],
        cache_write_5m_tokens=row["cache_write_5m_tokens"],
        cache_write_1h_tokens=row["cache_write_1h_tokens"],
        web_searches=row["web_searches"],
        requests=requests,
        context_window=row["context_window"] or None,
        inference_geo=row["inference_geo"] or None,
    )
    cost = book.cost_of(model, usage, row["bucket_start"])
    if not cost.priced or cost.batch_usd is None or cost.standard_usd is None:
        return False, None, None
    batch = row["service_tier"] == "batch" or row["product"] == BATCH_PRODUCT
    return True, (cost.batch_usd if batch else cost.standard_usd), cost.standard_usd


class UsageSource(_ReportSource):
    """Hourly token usage from the usage reports, priced with the pricing engine."""

    name = "usage"
    model = UsageBucket
    key = USAGE_KEY
    time_col = "bucket_start"
    step = HOUR
    unit = "usage bucket"

    def __init__(self, client: anthropic.Anthropic, book: PriceBook, **kwargs: Any) -> None:
        super().__init__(client, **kwargs)
        self.book = book

    def _sum_cols(self) -> tuple[str, ...]:
        return (*_TOKEN_COLS, "requests")

    def _trailing_start(self, session: Session, now: datetime) -> datetime:
        start = floor_to(now - self.trailing_window, HOUR)
        # A bucket read before its revision lag ended is read again until it is final, even
        # when polls were too far apart for the trailing window to reach it.
        oldest = session.execute(
            select(func.min(col(UsageBucket.bucket_start))).where(col(UsageBucket.final).is_(False))
        ).scalar()
        if oldest is not None:
            start = min(start, parse_time(oldest))
        return start

    def read_analytics(self, span: Span) -> list[dict[str, Any]]:
        """Read hourly usage, one pass per inference region (see the module docstring)."""
        rows: list[dict[str, Any]] = []
        usage_api = self.client.beta.organization.analytics.usage
        group_by: Any = list(USAGE_GROUP_BY)
        for geo in GEO_PASSES:
            regions: Any = [geo]
            first = usage_api.list(
                starting_at=span.start,
                ending_at=span.end,
                time_bucket_width="1h",
                group_by=group_by,
                inference_geos=regions,
                limit=self._limit(ANALYTICS_PAGE_LIMIT),
            )
            seen: set[tuple[Any, ...]] = set()
            what = f"analytics usage ({geo})"
            for p, page in _pages(first, what):
                for n, item in enumerate(_page_items(page, f"analytics usage {geo} page {p}"), 1):
                    where = f"analytics usage {geo} page {p} item {n}"
                    # _get: a malformed item is a bad item below, not a crash here.
                    g = _get(item, "group")
                    key = (_get(item, "starting_at"), *(_get(g, d) for d in USAGE_GROUP_BY))
                    _once(seen, key, what, p)
                    with self._item(where, rows, span) as add:
                        add(
                            {
                                "bucket_start": parse_time(item.starting_at, "starting_at"),
                                "bucket_end": parse_time(item.ending_at, "ending_at"),
                                "width": "1h",
                                "product": _text(g.product),
                                "model": _text(g.model),
                                "service_tier": _text(g.service_tier),
                                "workspace_id": _text(g.workspace_id),
                                "api_key_id": "",  # not grouped by: see the module docstring
                                "context_window": _text(g.context_window),
                                "inference_geo": geo,
                                "requests": bounds.count(item.usage.requests, "requests"),
                                **_usage_tokens(item.usage),
                            }
                        )
        return rows

    def read_legacy(self, span: Span) -> list[dict[str, Any]]:
        """Read hourly usage from the legacy report (no request counts, no product)."""
        rows: list[dict[str, Any]] = []
        params = {
            "starting_at": iso(span.start),
            "ending_at": iso(span.end),
            "bucket_width": "1h",
            "limit": self._limit(LEGACY_HOURLY_LIMIT),
            "group_by": list(LEGACY_USAGE_GROUP_BY),
        }
        for p, body in enumerate(self._legacy_pages(LEGACY_USAGE_PATH, params), 1):
            # A malformed page fails the read (nothing of the span is replaced); a malformed
            # bucket is a bad item, like a malformed result.
            for b, bucket in enumerate(_list(body, "data", f"legacy usage page {p}"), 1):
                for n, r in enumerate(
                    self._results(bucket, f"legacy usage page {p} bucket {b}"), 1
                ):
                    where = f"legacy usage page {p} bucket {b} result {n}"
                    with self._item(where, rows, span) as add:
                        add(
                            {
                                "bucket_start": parse_time(bucket["starting_at"], "starting_at"),
                                "bucket_end": parse_time(bucket["ending_at"], "ending_at"),
                                "width": "1h",
                                "product": "",
                                "model": _text(r.get("model")),
                                "service_tier": _text(r.get("service_tier")),
                                # null is the default workspace in the legacy report.
                                "workspace_id": _text(r.get("workspace_id")),
                                "api_key_id": _text(r.get("api_key_id")),
                                "context_window": _text(r.get("context_window")),
                                "inference_geo": _geo(r.get("inference_geo")),
                                "requests": None,
                                **_usage_tokens(r),
                            }
                        )
        return rows

    def _finish_rows(
        self, rows: list[dict[str, Any]], now: datetime, stats: RunStats
    ) -> list[dict[str, Any]]:
        unknown: set[str] = set()
        cutoff = now - self.final_after
        for r in rows:
            priced, cost, standard = price_row(self.book, r)
            r["priced"], r["cost_usd"], r["standard_cost_usd"] = priced, cost, standard
            r["final"] = r["bucket_end"] <= cutoff
            if not priced:
                unknown.add(r["model"])
        for model in sorted(unknown):
            note = f"usage: model {model!r} has no price: its cost is unpriced, not $0"
            if note in stats.notes:
                continue  # said once per poll, however many spans the poll reads
            log.warning(
                "usage: no price for model %r: tokens recorded, cost left unpriced; add a "
                "[[prices]] entry to monitor.toml",
                model,
            )
            stats.note(note)
        return rows


# --- cost ----------------------------------------------------------------------------------


class CostSource(_ReportSource):
    """What the provider billed per UTC day, from the cost reports (amounts in cents)."""

    name = "cost"
    model = CostBucket
    key = COST_KEY
    time_col = "day"
    step = DAY
    unit = "cost line"

    def _sum_cols(self) -> tuple[str, ...]:
        return ("amount_usd", "list_amount_usd")

    def _trailing_start(self, session: Session, now: datetime) -> datetime:
        # The cost report has whole UTC days only: re-read the current and previous day,
        start = floor_to(now, DAY) - DAY
        # and every day last read before it could be final (less than final_after after its
        # end), which a failed poll or two would leave at a provisional value: when polls fail
        # for a day, the previous day's last read may have been the one right after midnight.
        last_reads = session.execute(
            select(col(CostBucket.day), func.max(col(CostBucket.fetched_at)))
            .where(col(CostBucket.day) >= floor_to(now - self.backfill, DAY))
            .group_by(col(CostBucket.day))
        ).all()
        for day, fetched in last_reads:
            day = parse_time(day)
            if parse_time(fetched) < day + DAY + self.final_after:
                start = min(start, day)
        return start

    def read_analytics(self, span: Span) -> list[dict[str, Any]]:
        """Read daily cost lines by product, tier, model, workspace, region and token type."""
        rows: list[dict[str, Any]] = []
        group_by: Any = list(COST_GROUP_BY)
        first = self.client.beta.organization.analytics.cost.list(
            starting_at=span.start,
            ending_at=span.end,
            time_bucket_width="1d",
            group_by=group_by,
            limit=self._limit(ANALYTICS_PAGE_LIMIT),
        )
        seen: set[tuple[Any, ...]] = set()
        for p, page in _pages(first, "analytics cost"):
            for n, item in enumerate(_page_items(page, f"analytics cost page {p}"), 1):
                g, c = _get(item, "group"), _get(item, "cost")
                key = (_get(item, "starting_at"), *(_get(g, d) for d in COST_GROUP_BY))
                _once(seen, key, "analytics cost", p)
                with self._item(f"analytics cost page {p} item {n}", rows, span) as add:
                    add(
                        {
                            "day": floor_to(parse_time(item.starting_at, "starting_at"), DAY),
                            "product": _text(g.product),
                            "workspace_id": _text(g.workspace_id),
                            "description": "",
                            "model": _text(g.model),
                            "service_tier": _text(g.service_tier),
                            "cost_type": _text(g.cost_type),
                            "token_type": _text(g.token_type),
                            "context_window": "",
                            "inference_geo": _geo(g.inference_geo),
                            "amount_usd": cents_to_usd(c.amount),
                            "list_amount_usd": (
                                cents_to_usd(c.list_amount) if c.list_amount is not None else None
                            ),
                        }
                    )
        return rows

    def read_legacy(self, span: Span) -> list[dict[str, Any]]:
        """Read daily cost lines from the legacy report, grouped by workspace and description."""
        rows: list[dict[str, Any]] = []
        params = {
            "starting_at": iso(span.start),
            "ending_at": iso(span.end),
            "bucket_width": "1d",
            "limit": self._limit(LEGACY_DAILY_LIMIT),
            # Without description, model, token type and tier are all null.
            "group_by": list(LEGACY_COST_GROUP_BY),
        }
        for p, body in enumerate(self._legacy_pages(LEGACY_COST_PATH, params), 1):
            # A malformed page fails the read (nothing of the span is replaced); a malformed
            # bucket is a bad item, like a malformed result.
            for b, bucket in enumerate(_list(body, "data", f"legacy cost page {p}"), 1):
                for n, r in enumerate(self._results(bucket, f"legacy cost page {p} bucket {b}"), 1):
                    with self._item(
                        f"legacy cost page {p} bucket {b} result {n}", rows, span
                    ) as add:
                        add(
                            {
                                "day": floor_to(
                                    parse_time(bucket["starting_at"], "starting_at"), DAY
                                ),
                                "product": "",
                                "workspace_id": _text(r.get("workspace_id")),
                                "description": _text(r.get("description"))[:255],
                                "model": _text(r.get("model")),
                                "service_tier": _text(r.get("service_tier")),
                                "cost_type": _text(r.get("cost_type")),
                                "token_type": _text(r.get("token_type")),
                                "context_window": _text(r.get("context_window")),
                                "inference_geo": _geo(r.get("inference_geo")),
                                "amount_usd": cents_to_usd(r.get("amount") or "0"),
                                "list_amount_usd": None,
                            }
                        )
        return rows


# --- wiring --------------------------------------------------------------------------------


def from_settings(name: str, settings: Settings) -> UsageSource | CostSource | None:
    """Build the ``usage`` or ``cost`` source (None when no admin key is configured)."""
    if settings.anthropic_admin_key is None or not settings.anthropic_admin_key.get_secret_value():
        return None
    counter = CallCounter()
    client = make_client(
        settings.anthropic_admin_key.get_secret_value(),
        base_url=settings.anthropic_base_url,
        timeout=settings.collect.request_timeout,
        max_retries=settings.collect.max_retries,
        max_retry_after=settings.collect.max_retry_after,
        counter=counter,
    )
    c = settings.collect
    common: dict[str, Any] = {
        "backfill": c.backfill,
        "trailing_window": c.trailing_window,
        "final_after": c.final_after,
        "counter": counter,
        "default_workspace": settings.default_workspace,
        "budget": c.poll_budget,
    }
    if name == "usage":
        return UsageSource(client, PriceBook.load(settings.prices), **common)
    if name == "cost":
        return CostSource(client, **common)
    raise ValueError(f"monitor.sources.usage has no source {name!r} (usage or cost)")
