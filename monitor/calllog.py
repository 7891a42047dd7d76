"""The call-log line format and its hourly tally: pure, no storage, no cursors.

One line is one real-time Messages API call, written by the application (``monitor.instrument``
writes them for you)::

    {"timestamp": "2026-11-20T03:15:22.123Z", "workload": "summarize", "model": "claude-sonnet-4-6",
     "input_tokens": 5123, "output_tokens": 812, "cache_read_input_tokens": 0,
     "cache_creation_input_tokens": 0, "latency_ms": 2345, "service_tier": "standard",
     "priority": "high"}

Required: ``timestamp`` (ISO 8601, or epoch seconds; a timestamp without a zone is UTC),
``workload`` or ``endpoint``, ``model``, ``input_tokens``, ``output_tokens``. Optional:
``cache_read_input_tokens``, ``cache_creation_input_tokens`` (with the API's ``cache_creation``
split by TTL when known), ``web_search_requests``, ``inference_geo``, ``latency_ms``,
``service_tier``, ``priority`` (``high`` marks an urgent request) and ``status`` (a non-2xx call
is not billed, so it is skipped).

``HourlyTally`` folds lines into per-hour buckets (hour, workload, model, tier, priority) and
names every bad line by file, line and field. The collector (``monitor.sources.call_logs``)
adds cursors, rotation and storage; ``audit`` and the advisor use the tally directly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

import orjson

from monitor import bounds
from monitor.pricing import Cost, PriceBook, Usage
from monitor.tokens import Tokens
from monitor.workloads import WorkloadMap

# Column widths in call_bucket (models.py): longer values are a bad line, not a silent cut.
_MAX_LEN = {"workload": 128, "model": 128, "service_tier": 32, "priority": 16}
# Epoch seconds past this are surely milliseconds (year 5138): say so instead of mis-dating.
_MAX_EPOCH_SECONDS = 1e11
# Counts and latencies past these are a bad line (bounds.py): they would overflow the store.
_MAX_COUNT = bounds.MAX_COUNT
_MAX_LATENCY_MS = 86_400_000.0  # a day; no API call takes longer


# --- bad lines --------------------------------------------------------------------------------


class LineError(ValueError):
    """A call-log line that cannot be used, naming the field at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class BadLine:
    """A skipped line: where it is and what is wrong with it."""

    path: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.field}: {self.message}"


OnBadLine = Callable[[BadLine], None]


# --- aggregation ------------------------------------------------------------------------------


class BucketLike(Protocol):
    """What a call bucket reads like: a stored ``CallBucket`` row or a fresh ``BucketRow``."""

    @property
    def hour(self) -> datetime: ...
    @property
    def workload(self) -> str: ...
    @property
    def model(self) -> str: ...
    @property
    def priority(self) -> str: ...
    @property
    def calls(self) -> int: ...
    @property
    def input_tokens(self) -> int: ...
    @property
    def output_tokens(self) -> int: ...
    @property
    def cache_read_tokens(self) -> int: ...
    @property
    def cache_write_tokens(self) -> int: ...
    @property
    def first_at(self) -> datetime | None: ...
    @property
    def last_at(self) -> datetime | None: ...
    @property
    def priced(self) -> bool: ...
    @property
    def cost_usd(self) -> Decimal | None: ...
    @property
    def batch_cost_usd(self) -> Decimal | None: ...


def bucket_tokens(row: BucketLike) -> Tokens:
    """Return the tokens of a call bucket: a fresh row's own, or a stored row's as stored.

    ``call_bucket`` keeps the cache writes of both TTLs as one sum (a bucket is priced before it
    is stored, and only pricing needs the split), so a stored row's come back as 5-minute
    writes: read their sum (``cache_write_tokens``) or the prompt size, never the split.
    """
    if isinstance(row, BucketRow):
        return row.tokens
    return Tokens(
        input_tokens=row.input_tokens,
        output_tokens=row.output_tokens,
        cache_read_tokens=row.cache_read_tokens,
        cache_write_5m_tokens=row.cache_write_tokens,
    )


@dataclass
class BucketRow:
    """The calls of one hour, workload, model, tier and priority (a ``call_bucket`` row's data).

    It reads like a ``CallBucket`` (``BucketLike``), so the advisor reads both the same way.
    """

    hour: datetime
    workload: str
    model: str
    service_tier: str
    priority: str
    calls: int = 0
    tokens: Tokens = field(default_factory=Tokens.zero)
    latency_ms_sum: int = 0
    latency_ms_max: int = 0
    latency_count: int = 0
    first_at: datetime | None = None
    last_at: datetime | None = None
    priced: bool = True
    cost_usd: Decimal | None = None
    batch_cost_usd: Decimal | None = None

    @property
    def key(self) -> tuple[datetime, str, str, str, str]:
        """Return the natural key (the unique constraint of ``call_bucket``)."""
        return (self.hour, self.workload, self.model, self.service_tier, self.priority)

    @property
    def input_tokens(self) -> int:
        """Return the uncached input tokens."""
        return self.tokens.input_tokens

    @property
    def output_tokens(self) -> int:
        """Return the output tokens."""
        return self.tokens.output_tokens

    @property
    def cache_read_tokens(self) -> int:
        """Return the tokens read from cache."""
        return self.tokens.cache_read_tokens

    @property
    def cache_write_tokens(self) -> int:
        """Return the tokens written to cache (both TTLs, as ``call_bucket`` stores them)."""
        return self.tokens.cache_write_tokens

    def add(self, other: BucketRow) -> None:
        """Add ``other``'s calls (same key) to this row."""
        self.calls += other.calls
        self.tokens += other.tokens
        self.latency_ms_sum += other.latency_ms_sum
        self.latency_ms_max = max(self.latency_ms_max, other.latency_ms_max)
        self.latency_count += other.latency_count
        self.first_at = _min_time(self.first_at, other.first_at)
        self.last_at = _max_time(self.last_at, other.last_at)
        # Unpriced calls keep their tokens; the cost covers the priced calls only.
        self.priced = self.priced and other.priced
        self.cost_usd = _add_money(self.cost_usd, other.cost_usd)
        self.batch_cost_usd = _add_money(self.batch_cost_usd, other.batch_cost_usd)

    def values(self) -> dict[str, Any]:
        """Return the row as column values for an upsert."""
        return {
            "hour": self.hour,
            "workload": self.workload,
            "model": self.model,
            "service_tier": self.service_tier,
            "priority": self.priority,
            "calls": self.calls,
            "input_tokens": self.tokens.input_tokens,
            "output_tokens": self.tokens.output_tokens,
            "cache_read_tokens": self.tokens.cache_read_tokens,
            "cache_write_tokens": self.tokens.cache_write_tokens,
            "latency_ms_sum": self.latency_ms_sum,
            "latency_ms_max": self.latency_ms_max,
            "latency_count": self.latency_count,
            "first_at": self.first_at,
            "last_at": self.last_at,
            "priced": self.priced,
            "cost_usd": self.cost_usd,
            "batch_cost_usd": self.batch_cost_usd,
        }


def _min_time(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else min(a, b)


def _max_time(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else max(a, b)


def _add_money(a: Decimal | None, b: Decimal | None) -> Decimal | None:
    return b if a is None else a if b is None else a + b


@dataclass(frozen=True)
class _Meta:
    hour: datetime
    workload: str
    model: str
    service_tier: str
    priority: str
    inference_geo: str | None


class _Acc:
    """The running sums of one group's calls (or of those above its price tier's threshold).

    Plain int slots, not a dataclass and not a ``Tokens``: ``HourlyTally.feed`` adds to one in
    place per line, and a new frozen value per line would cost more than the rest of the loop.
    ``tokens()`` hands the sums out as the value type once the lines are in.
    """

    __slots__ = (
        "cache_read",
        "cache_write",  # 5m + 1h, as in the line's cache_creation_input_tokens
        "cache_write_1h",
        "calls",
        "first",
        "input_tokens",
        "last",
        "latency_max",
        "latency_missing",  # calls without latency_ms
        "latency_sum",
        "meta",
        "output_tokens",
        "over",
        "threshold",  # prompt tokens above which a call goes to ``over``; None: no tier
        "web_searches",
    )

    def __init__(self, at: datetime, meta: _Meta, threshold: int | None = None) -> None:
        self.calls = 0
        self.input_tokens = 0
        self.output_tokens = 0
        self.cache_read = 0
        self.cache_write = 0
        self.cache_write_1h = 0
        self.web_searches = 0
        self.latency_sum: int | float = 0
        self.latency_max: int | float = 0
        self.latency_missing = 0
        # The creating call is added next, so it is both the first and the last so far.
        self.first = at
        self.last = at
        self.threshold = threshold
        self.over: _Acc | None = None
        self.meta = meta

    def tokens(self) -> Tokens:
        """Return the token counts summed so far."""
        return Tokens(
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            cache_read_tokens=self.cache_read,
            cache_write_5m_tokens=self.cache_write - self.cache_write_1h,
            cache_write_1h_tokens=self.cache_write_1h,
            web_searches=self.web_searches,
        )

    def add(
        self,
        at: datetime,
        inp: int,
        out: int,
        cr: int,
        cw: int,
        cw1: int,
        ws: int,
        lat: float | None,
    ) -> None:
        """Add one call (the slow path; ``HourlyTally.feed`` inlines the same steps)."""
        acc = self
        if self.threshold is not None and inp + cr + cw > self.threshold:
            if self.over is None:
                self.over = _Acc(at, self.meta)
            acc = self.over
        acc.calls += 1
        acc.input_tokens += inp
        acc.output_tokens += out
        acc.cache_read += cr
        acc.cache_write += cw
        acc.cache_write_1h += cw1
        acc.web_searches += ws
        if lat is None:
            acc.latency_missing += 1
        else:
            acc.latency_sum += lat
            if lat > acc.latency_max:
                acc.latency_max = lat
        if at > acc.last:
            acc.last = at
        elif at < acc.first:
            acc.first = at


_GroupKey = tuple[Any, ...]  # the raw workload, endpoint, model, tier, priority and geo
_Groups = dict[_GroupKey, _Acc]
# Before every real time, so that an empty range [_NEVER, _NEVER) makes the first line look
# its hour up.
_NEVER = datetime.min.replace(tzinfo=UTC)
_ONE_HOUR = timedelta(hours=1)


# The fields `HourlyTally.feed` reads, in the order `_field_keys` returns them.
_FIELDS = (
    "timestamp",
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
    "web_search_requests",
    "cache_creation",
    "ephemeral_5m_input_tokens",
    "ephemeral_1h_input_tokens",
    "latency_ms",
    "status",
    "workload",
    "endpoint",
    "model",
    "service_tier",
    "priority",
    "inference_geo",
)
_FIELDS_JSON = orjson.dumps(dict.fromkeys(_FIELDS, 0))


def _field_keys() -> list[str]:
    """Return the names in ``_FIELDS`` as the very str objects orjson puts in parsed dicts.

    orjson caches the keys it parses and hands out the same object for a name every time. A
    dict lookup with that object matches by identity instead of comparing the characters,
    which takes about a third off reading a line's fields. Equal strings still match, so
    this is only ever faster, never different.
    """
    return list(orjson.loads(_FIELDS_JSON))


class _SlowLine(Exception):
    """A line the fast path leaves to the slow path (which normalises it or names the fault)."""


class HourlyTally:
    """Aggregate call-log lines into hourly buckets, in memory that does not grow with lines.

    Lines are grouped per UTC hour by the raw values that decide a bucket (workload, endpoint,
    model, tier, priority, inference geo). The string fields are checked and mapped once per
    group, not once per line. Calls of a model with a prompt-size price tier are split by
    whether their prompt is above the threshold, so that pricing each group equals pricing each
    call.
    """

    def __init__(self, workloads: WorkloadMap, book: PriceBook) -> None:
        self.workloads = workloads
        self.book = book
        self.calls = 0
        self.bad_lines = 0
        self.skipped = 0  # well-formed lines of calls that were not billed (non-2xx status)
        self._hours: dict[datetime, _Groups] = {}  # UTC hour -> its groups
        self._thresholds: dict[tuple[str, int], int | None] = {}

    def __len__(self) -> int:
        return sum(len(groups) for groups in self._hours.values())

    def feed(
        self,
        lines: Iterable[bytes],
        path: str,
        first_line: int,
        on_bad: OnBadLine,
        since: datetime | None = None,
    ) -> int:
        """Aggregate ``lines`` (numbered from ``first_line``); return how many calls were added.

        A bad line is passed to ``on_bad`` and skipped; blank lines are ignored. With ``since``,
        calls before it are left out (they are still checked).
        """
        # This loop is most of the cost of `batch-monitor audit` and of collecting, so it is
        # written for speed: everything is a local, a usual line makes no Python-level call
        # (groups and hours are looked up, not created) and passes every check on its first
        # test.
        # Anything unusual (a missing field, a wrong type, a null, a failed call) raises, and
        # `_parse_slow` reads the line again and either normalises it or names the bad field.
        # The fast path takes only lines that `_parse_slow` takes, with the same values, so
        # which path reads a line never changes the result.
        loads = orjson.loads
        fromiso = datetime.fromisoformat
        fromtimestamp = datetime.fromtimestamp
        utc = UTC
        (
            k_timestamp,
            k_input,
            k_output,
            k_cache_read,
            k_cache_write,
            k_web_searches,
            k_split,
            k_split_5m,
            k_split_1h,
            k_latency,
            k_status,
            k_workload,
            k_endpoint,
            k_model,
            k_tier,
            k_priority,
            k_geo,
        ) = _field_keys()
        hour_of = self._hour_of
        new_group = self._new_group
        stale: dict[datetime, _Groups] = {}  # groups of calls before `since`: checked, not added
        # The current hour: its start, the range [lo, hi) of the times that share its groups,
        # and those groups. Lines come roughly in time order, so the range test mostly passes.
        hour = lo = hi = _NEVER
        groups: _Groups = {}
        get = groups.get
        blank = bad = skipped = 0
        lineno = first_line - 1
        for lineno, raw in enumerate(lines, first_line):
            try:
                o = loads(raw)
                oget = o.get  # bound once: a dozen lookups per line add up
                ts = o[k_timestamp]
                try:
                    at = fromiso(ts)
                except TypeError:  # not a string: epoch seconds (free when it is a string)
                    # Anything else, or a number `parse_timestamp` refuses: the slow path.
                    if type(ts) is bool or not 0 <= ts <= _MAX_EPOCH_SECONDS:
                        raise
                    at = fromtimestamp(ts, utc)
                if at.tzinfo is None:  # a time without a zone is UTC
                    at = at.replace(tzinfo=utc)
                # A time in another zone is compared by its instant, so it lands in its UTC
                # hour; `rows` converts it to UTC where it is a group's first or last.
                if not lo <= at < hi:
                    hour, lo, hi, groups = hour_of(at, since, stale)
                    get = groups.get
                inp = o[k_input]
                out = o[k_output]
                # A default, not `or 0`: "", false or null must reach the slow path's checks.
                cr = oget(k_cache_read, 0)
                cw = oget(k_cache_write, 0)
                # `type(x) is int` also refuses bool, which is an int to isinstance and `<`.
                if (
                    type(inp) is not int
                    or type(out) is not int
                    or type(cr) is not int
                    or type(cw) is not int
                    or inp < 0
                    or out < 0
                    or cr < 0
                    or cw < 0
                    or inp + out + cr + cw > _MAX_COUNT
                ):
                    raise _SlowLine
                ws = oget(k_web_searches)  # usually absent; None counts 0, as in the slow path
                if ws is not None and (type(ws) is not int or not 0 <= ws <= _MAX_COUNT):
                    raise _SlowLine
                cc = oget(k_split)
                if cc is None:
                    cw1 = 0
                else:
                    # Not a dict: no .get, so the slow path names the field.
                    cw5 = cc.get(k_split_5m, 0)
                    cw1 = cc.get(k_split_1h, 0)
                    # The split adds up within the total (also when the total is missing and
                    # so 0, where the slow path would take the split's sum instead).
                    if (
                        type(cw5) is not int
                        or type(cw1) is not int
                        or cw5 < 0
                        or cw1 < 0
                        or cw5 + cw1 > cw
                    ):
                        raise _SlowLine
                lat = oget(k_latency)
                # `<` raises for anything but a number (orjson never yields NaN or infinity).
                if lat is not None and (type(lat) is bool or not 0 <= lat <= _MAX_LATENCY_MS):
                    raise _SlowLine
                status = oget(k_status)
                if status is not None and not (type(status) is int and 200 <= status < 300):
                    raise _SlowLine
                key = (
                    oget(k_workload),
                    oget(k_endpoint),
                    o[k_model],
                    oget(k_tier),
                    oget(k_priority),
                    oget(k_geo),
                )
                g = get(key)  # an unhashable value (a list or object) raises here
            except Exception:
                try:
                    rec = _parse_slow(raw)
                    if rec is None:
                        blank += 1
                    elif rec.skipped:
                        skipped += 1
                    else:
                        self._add(rec, since, stale)
                except LineError as exc:
                    bad += 1
                    on_bad(BadLine(path, lineno, exc.field, exc.message))
                continue
            if g is None:
                try:
                    g = new_group(key, hour, at, groups)
                except LineError as exc:
                    bad += 1
                    on_bad(BadLine(path, lineno, exc.field, exc.message))
                    continue
            # `_Acc.add`, inlined: a method call per line would add about 5 % to the loop.
            threshold = g.threshold
            if threshold is not None and inp + cr + cw > threshold:
                over = g.over
                if over is None:
                    over = g.over = _Acc(at, g.meta)
                g = over
            g.calls += 1
            g.input_tokens += inp
            g.output_tokens += out
            g.cache_read += cr
            g.cache_write += cw
            if cw1:
                g.cache_write_1h += cw1
            if ws:
                g.web_searches += ws
            if lat is None:
                g.latency_missing += 1
            else:
                g.latency_sum += lat
                if lat > g.latency_max:
                    g.latency_max = lat
            # Roughly in time order, a line usually only moves `last`: one comparison.
            if at > g.last:
                g.last = at
            elif at < g.first:
                g.first = at
        # Every line read was added, or blank, bad, skipped, or before `since`.
        before_since = sum(
            acc.calls
            for groups in stale.values()
            for g in groups.values()
            for acc in (g, g.over)
            if acc is not None
        )
        added = lineno - first_line + 1 - blank - bad - skipped - before_since
        self.bad_lines += bad
        self.skipped += skipped
        self.calls += added
        return added

    def _hour_of(
        self, at: datetime, since: datetime | None, stale: dict[datetime, _Groups]
    ) -> tuple[datetime, datetime, datetime, _Groups]:
        """Return the UTC hour of ``at``, the range of times that share its groups, and them.

        The part of an hour before ``since`` has groups of its own, in ``stale``.
        """
        if not bounds.time_ok(at):
            # The fast path reads the line again slowly, which names the field.
            raise ValueError("timestamp out of range")
        start = at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        end = start + _ONE_HOUR
        if since is not None and at < since:
            return start, start, min(end, since), stale.setdefault(start, {})
        lo = start if since is None else max(start, since)
        return start, lo, end, self._hours.setdefault(start, {})

    def _add(self, rec: _Record, since: datetime | None, stale: dict[datetime, _Groups]) -> None:
        """Add a line read by the slow path."""
        hour, _lo, _hi, groups = self._hour_of(rec.at, since, stale)
        g = groups.get(rec.key)
        if g is None:
            g = self._new_group(rec.key, hour, rec.at, groups)
        g.add(
            rec.at,
            rec.input_tokens,
            rec.output_tokens,
            rec.cache_read,
            rec.cache_write,
            rec.cache_write_1h,
            rec.web_searches,
            rec.latency_ms,
        )

    def _new_group(self, key: _GroupKey, hour: datetime, at: datetime, groups: _Groups) -> _Acc:
        """Check a new group's string fields once, and set up its accumulator in ``groups``."""
        workload, endpoint, model, tier, priority, geo = key
        workload = _opt_str(workload, "workload")
        endpoint = _opt_str(endpoint, "endpoint")
        if not workload and not endpoint:
            raise LineError("workload", "missing: give `workload` or `endpoint`")
        if not isinstance(model, str) or not model.strip():
            raise LineError("model", f"must be a non-empty string, got {_show(model)}")
        tier = _opt_str(tier, "service_tier")
        priority = (_opt_str(priority, "priority") or "").strip().lower()
        geo = _opt_str(geo, "inference_geo")
        name = self.workloads.resolve(workload, endpoint)
        for field_name, value in (
            ("workload", name),
            ("model", model),
            ("service_tier", tier or ""),
            ("priority", priority),
        ):
            if len(value) > _MAX_LEN[field_name]:
                raise LineError(field_name, f"longer than {_MAX_LEN[field_name]} characters")
        meta = _Meta(hour, name, model, tier or "", priority, geo)
        g = groups[key] = _Acc(at, meta, self._threshold(model, hour))
        return g

    def _threshold(self, model: str, hour: datetime) -> int | None:
        """Return the prompt size above which ``model`` is priced higher (None: no tier)."""
        day = (model, hour.toordinal())
        if day not in self._thresholds:
            row = self.book.price_row(model, hour)
            self._thresholds[day] = row.tier.threshold if row and row.tier else None
        return self._thresholds[day]

    def rows(self, *, price: bool = True) -> list[BucketRow]:
        """Price every group and return one row per ``call_bucket`` key.

        With ``price=False`` the rows carry no cost (``priced`` is False), for a caller that
        only needs sums of costs: ``daily_costs`` prices the same calls in far fewer sums.
        """
        merged: dict[tuple[datetime, str, str, str, str], BucketRow] = {}
        for groups in self._hours.values():
            for g in groups.values():
                for acc in (g, g.over):
                    if acc is None or not acc.calls:
                        continue
                    tokens = acc.tokens()
                    cost = self._cost(acc.meta, acc.calls, tokens) if price else None
                    row = self._row(acc, tokens, cost)
                    existing = merged.get(row.key)
                    if existing is None:
                        merged[row.key] = row
                    else:
                        existing.add(row)
        return sorted(merged.values(), key=lambda r: r.key)

    def daily_costs(self, until: datetime | None = None) -> list[tuple[str, str, str, int, Cost]]:
        """Price the calls in sums per UTC day, workload, model, priority, geo and tier side.

        Return (workload, model, priority, calls, cost) for each sum, leaving out the hours
        after ``until``. Within one day's price row, tier and geo a cost is linear in the
        tokens, so these costs add up exactly (Decimal) to those of the hourly rows of `rows`,
        for about a 24th of the pricing work, which is most of what `rows` costs.
        """
        # Summed in _Acc's int slots (one Tokens per sum, at the end): this runs per group and
        # hour, and a new frozen value per addition would cost more than the sums.
        sums: dict[tuple[int, str, str, str, str | None, bool], _Acc] = {}
        for hour, groups in self._hours.items():
            if until is not None and hour > until:
                continue
            for g in groups.values():
                for over, acc in ((False, g), (True, g.over)):
                    if acc is None or not acc.calls:
                        continue
                    m = acc.meta
                    key = (hour.toordinal(), m.workload, m.model, m.priority, m.inference_geo, over)
                    total = sums.get(key)
                    if total is None:
                        total = sums[key] = _Acc(acc.first, m)
                    total.calls += acc.calls
                    total.input_tokens += acc.input_tokens
                    total.output_tokens += acc.output_tokens
                    total.cache_read += acc.cache_read
                    total.cache_write += acc.cache_write
                    total.cache_write_1h += acc.cache_write_1h
                    total.web_searches += acc.web_searches
        return [
            (m.workload, m.model, m.priority, t.calls, self._cost(m, t.calls, t.tokens()))
            for t in sums.values()
            for m in (t.meta,)
        ]

    def _cost(self, meta: _Meta, calls: int, tokens: Tokens) -> Cost:
        """Price ``calls`` calls of the group ``meta`` that used ``tokens`` between them."""
        usage = Usage.of(tokens, requests=calls, inference_geo=meta.inference_geo)
        # Every call in the group shares the price row (same day), the tier (split above) and
        # the geo, so pricing the sum is exactly the sum of pricing each call.
        return self.book.cost_of(meta.model, usage, meta.hour)

    def _row(self, acc: _Acc, tokens: Tokens, cost: Cost | None) -> BucketRow:
        meta = acc.meta
        return BucketRow(
            hour=meta.hour,
            workload=meta.workload,
            model=meta.model,
            service_tier=meta.service_tier,
            priority=meta.priority,
            calls=acc.calls,
            tokens=tokens,
            latency_ms_sum=round(acc.latency_sum),
            latency_ms_max=round(acc.latency_max),
            latency_count=acc.calls - acc.latency_missing,
            # A time in another zone was kept as written (see `feed`); store it in UTC.
            first_at=acc.first.astimezone(UTC),
            last_at=acc.last.astimezone(UTC),
            priced=cost is not None and cost.priced,
            cost_usd=None if cost is None else cost.standard_usd,
            batch_cost_usd=None if cost is None else cost.batch_usd,
        )

    def clear(self) -> None:
        """Forget the groups (after they were stored), keeping the cached lookups."""
        self._hours.clear()


def _show(value: Any) -> str:
    text = orjson.dumps(value).decode() if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _opt_str(value: Any, name: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise LineError(name, f"must be a string, got {_show(value)}")


@dataclass(frozen=True)
class _Record:
    key: tuple[Any, ...]
    at: datetime
    input_tokens: int
    output_tokens: int
    cache_read: int
    cache_write: int
    cache_write_1h: int
    web_searches: int
    latency_ms: float | None
    skipped: bool = False


def _count(obj: dict[str, Any], name: str, *, required: bool = False) -> int:
    value = obj.get(name)
    if value is None:
        if required:
            raise LineError(name, "missing (a token count is required)")
        return 0
    if type(value) is not int:
        raise LineError(name, f"must be a whole number, got {_show(value)}")
    if value < 0:
        raise LineError(name, f"must not be negative, got {value}")
    if value > _MAX_COUNT:
        raise LineError(name, f"{value} is more than {_MAX_COUNT:,}")
    return value


def parse_timestamp(value: Any) -> datetime:
    """Return a call-log timestamp as an aware UTC datetime; raise LineError naming the field.

    Accept ISO 8601 (a stamp without a zone is taken as UTC) or epoch seconds.
    """
    if isinstance(value, bool) or value is None:
        raise LineError("timestamp", "missing" if value is None else f"not a time: {value!r}")
    if isinstance(value, int | float):
        if not math.isfinite(value) or value < 0:
            raise LineError("timestamp", f"not a valid epoch time: {value!r}")
        if value > _MAX_EPOCH_SECONDS:
            raise LineError(
                "timestamp", f"{value!r} looks like milliseconds; write epoch seconds or ISO 8601"
            )
        at = datetime.fromtimestamp(value, UTC)
        if not bounds.time_ok(at):
            raise LineError("timestamp", f"{value!r} is not {bounds.TIME_RANGE}")
        return at
    if not isinstance(value, str):
        raise LineError("timestamp", f"must be ISO 8601 or epoch seconds, got {_show(value)}")
    try:
        at = datetime.fromisoformat(value.strip())
    except ValueError:
        raise LineError(
            "timestamp", f"not an ISO 8601 time or epoch seconds: {_show(value)}"
        ) from None
    at = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    if not bounds.time_ok(at):
        raise LineError("timestamp", f"{_show(value)} is not {bounds.TIME_RANGE}")
    return at


def _parse_slow(raw: bytes) -> _Record | None:
    """Parse one line with every check; return None for a blank line."""
    if not raw.strip():
        return None
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise LineError("json", f"not valid JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise LineError("json", f"a line must be a JSON object, got {type(obj).__name__}")
    if "timestamp" not in obj:
        raise LineError("timestamp", "missing")
    at = parse_timestamp(obj["timestamp"])
    if "model" not in obj:
        raise LineError("model", "missing")
    inp = _count(obj, "input_tokens", required=True)
    out = _count(obj, "output_tokens", required=True)
    cr = _count(obj, "cache_read_input_tokens")
    cw = _count(obj, "cache_creation_input_tokens")
    cw1 = 0
    cc = obj.get("cache_creation")
    if cc is not None:
        if not isinstance(cc, dict):
            raise LineError("cache_creation", f"must be an object, got {_show(cc)}")
        cw5 = _count(cc, "ephemeral_5m_input_tokens")
        cw1 = _count(cc, "ephemeral_1h_input_tokens")
        if "cache_creation_input_tokens" not in obj or obj["cache_creation_input_tokens"] is None:
            cw = cw5 + cw1
        elif cw1 > cw:
            raise LineError(
                "cache_creation",
                f"ephemeral_1h_input_tokens ({cw1}) exceeds cache_creation_input_tokens ({cw})",
            )
    ws = _count(obj, "web_search_requests")
    lat = obj.get("latency_ms")
    if lat is not None:
        if isinstance(lat, bool) or not isinstance(lat, int | float) or not math.isfinite(lat):
            raise LineError("latency_ms", f"must be a number of milliseconds, got {_show(lat)}")
        if lat < 0:
            raise LineError("latency_ms", f"must not be negative, got {lat}")
        if lat > _MAX_LATENCY_MS:
            raise LineError("latency_ms", f"{lat} is more than a day in milliseconds")
    status = obj.get("status")
    skipped = False
    if status is not None:
        if isinstance(status, bool) or not isinstance(status, int):
            raise LineError("status", f"must be an HTTP status code, got {_show(status)}")
        skipped = not 200 <= status < 300  # failed calls are not billed
    key = (
        obj.get("workload"),
        obj.get("endpoint"),
        obj["model"],
        obj.get("service_tier"),
        obj.get("priority"),
        obj.get("inference_geo"),
    )
    try:
        hash(key)
    except TypeError:
        # An object or array where a string belongs: report the first such field.
        for name, value in zip(
            ("workload", "endpoint", "model", "service_tier", "priority", "inference_geo"),
            key,
            strict=True,
        ):
            if not (value is None or isinstance(value, str | int | float)):
                raise LineError(name, f"must be a string, got {_show(value)}") from None
        raise
    return _Record(key, at, inp, out, cr, cw, cw1, ws, lat, skipped)


def read_lines(path: str | Path) -> Iterable[bytes]:
    """Yield the lines of ``path`` one by one (constant memory)."""
    with open(path, "rb") as fh:
        yield from fh
