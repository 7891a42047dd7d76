"""Rollups: daily rows that keep every figure of the hourly rows, and all-time totals.

Why: a year of hourly usage is millions of rows; the summary, the rules, the exporter and the
weekly report need whole-day sums, and the exporter's counters need all-time sums. So:

1. Writers call ``mark_dirty`` for the UTC days their rows fall in, in the same transaction
   as the rows (``rollup_day.clean = false``).
2. ``refresh(session, now)`` takes each dirty day in turn and, in one transaction, locks its
   ``rollup_day`` row (writers of that day wait), recomputes ``usage_day``, ``call_day``,
   ``batch_day`` and ``spend_day`` from the raw rows, moves ``spend_total`` and
   ``batch_total`` by the difference between the new and the old day rows, and marks the day
   clean.
3. Readers (``summary.window_parts``) read a whole day from the rollups only when it is
   clean, so the money is the same to the cent whichever table a figure came from.

The totals only ever change by the difference a refresh makes, so they stay equal to the sum
of the day rows while raw rows are pruned (``retention.py``) underneath.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy import case, delete, func, select, update
from sqlmodel import Session, SQLModel, col

from monitor import db, fmt
from monitor.models import (
    TURNAROUND_BUCKETS,
    Batch,
    BatchDay,
    BatchTotal,
    CallBucket,
    CallDay,
    CostBucket,
    RollupDay,
    SpendDay,
    SpendTotal,
    Tally,
    UsageBucket,
    UsageDay,
)
from monitor.money import ZERO, money_sum
from monitor.summary import PRICED_COST_TYPES, TOKEN_KINDS, contract_tier, spend_cells

log = logging.getLogger(__name__)

DAY = timedelta(days=1)
TURNAROUND_COLS = tuple(f"turnaround_le_{b}" for b in TURNAROUND_BUCKETS)


def days_between(since: datetime, until: datetime) -> list[datetime]:
    """Return the UTC days that ``[since, until)`` touches."""
    if until <= since:
        return []
    day, out = fmt.day_floor(since), []
    while day < until:
        out.append(day)
        day += DAY
    return out


def mark_dirty(session: Session, days: Iterable[datetime], now: datetime) -> None:
    """Mark ``days`` (any time within each) as needing a refresh; the caller commits."""
    rows = [
        {"day": d, "clean": False, "marked_at": now}
        for d in sorted({fmt.day_floor(x) for x in days})
    ]
    if rows:
        db.upsert(session, RollupDay, rows, key=["day"])


def dirty_days(session: Session, *, before: datetime | None = None) -> list[datetime]:
    """Return the days waiting for a refresh, oldest first."""
    stmt = select(col(RollupDay.day)).where(col(RollupDay.clean).is_(False))
    if before is not None:
        stmt = stmt.where(col(RollupDay.day) < before)
    return list(session.execute(stmt.order_by(col(RollupDay.day))).scalars())


# Seconds between two days' transactions of a refresh on SQLite (see ``refresh``).
SQLITE_WRITER_GAP = 0.12

# The tally row that holds the day before which rollups are frozen (epoch seconds).
FROZEN = ("frozen_before", "rollups")


def frozen_before(session: Session) -> datetime | None:
    """Return the day before which rollups are frozen (their raw rows pruned), if any."""
    row = session.get(Tally, FROZEN)
    return datetime.fromtimestamp(row.value, UTC) if row is not None else None


def freeze(session: Session, before: datetime) -> None:
    """Never recompute days before ``before`` again (retention prunes their raw rows)."""
    row = session.get(Tally, FROZEN)
    stamp = int(before.timestamp())
    if row is None:
        session.add(Tally(metric=FROZEN[0], key=FROZEN[1], value=stamp))
    elif row.value < stamp:
        row.value = stamp


@dataclass(frozen=True)
class RefreshResult:
    """What one ``refresh`` did."""

    days: int
    remaining: int


def refresh(
    session: Session,
    now: datetime,
    *,
    max_days: int | None = None,
    deadline: float | None = None,
    before: datetime | None = None,
) -> RefreshResult:
    """Recompute every dirty day (oldest first), one transaction per day.

    ``max_days`` and ``deadline`` (a ``clock.monotonic()`` reading) bound one run; what is
    left stays dirty for the next run, and readers use the raw rows for it meanwhile.
    ``before`` limits the run to older days. Days older than the freeze horizon (raw rows
    pruned) are marked clean as they are, with a warning.
    """
    from monitor import clock

    todo = dirty_days(session, before=before)
    frozen = frozen_before(session)
    session.commit()
    sqlite = session.get_bind().dialect.name == "sqlite"
    done = 0
    for day in todo:
        if max_days is not None and done >= max_days:
            break
        if deadline is not None and clock.monotonic() > deadline:
            break
        if frozen is not None and day < frozen:
            # Its raw rows are pruned: recomputing would drop what they held. Keep the day.
            log.warning(
                "late data for %s, older than the raw retention: left out of the rollups",
                fmt.iso(day),
            )
            session.execute(update(RollupDay).where(col(RollupDay.day) == day).values(clean=True))
        else:
            refresh_day(session, day, now)
        session.commit()
        done += 1
        if sqlite and done < len(todo):
            # SQLite has one write lock and no queue for it: a writer that finds it taken polls
            # (sleeping up to 100 ms), and a refresh that takes it again at once for the next
            # day held every other job off for the whole catch-up (12 s after a month's
            # backfill, which put the 10 s delivery job past its interval). A pause longer
            # than the longest poll lets the waiting writers in between two days.
            clock.sleep(SQLITE_WRITER_GAP)
    return RefreshResult(days=done, remaining=len(todo) - done)


def refresh_day(session: Session, day: datetime, now: datetime) -> None:
    """Recompute the rollups of one UTC day and mark it clean (the caller commits).

    The day's ``rollup_day`` row is locked first (an UPDATE takes the row lock on PostgreSQL
    and the write lock on SQLite), so a writer of this day either committed before (and its
    rows are read here) or waits and marks the day dirty again after.
    """
    day = fmt.day_floor(day)
    locked = db.rowcount(
        session.execute(
            update(RollupDay).where(col(RollupDay.day) == day).values(marked_at=RollupDay.marked_at)
        )
    )
    if not locked:
        mark_dirty(session, [day], now)
    end = day + DAY
    _replace(session, UsageDay, day, _usage_rows(session, day, end))
    _replace(session, CallDay, day, _call_rows(session, day, end))
    old_batch = _day_rows(session, BatchDay, day, ("workspace_id",), _BATCH_SUMS)
    _replace(session, BatchDay, day, _batch_rows(session, day, end))
    new_batch = _day_rows(session, BatchDay, day, ("workspace_id",), _BATCH_SUMS)
    session.execute(update(RollupDay).where(col(RollupDay.day) == day).values(clean=True))
    old_spend = _day_rows(session, SpendDay, day, _SPEND_KEY, _SPEND_SUMS)
    _replace(session, SpendDay, day, _spend_rows(session, day, end, now))
    new_spend = _day_rows(session, SpendDay, day, _SPEND_KEY, _SPEND_SUMS)
    _apply_delta(session, SpendTotal, _SPEND_KEY, _SPEND_SUMS, old_spend, new_spend)
    _apply_delta(session, BatchTotal, ("workspace_id",), _BATCH_SUMS, old_batch, new_batch)


# --- the day rows -----------------------------------------------------------------------


def _replace(
    session: Session, model: type[SQLModel], day: datetime, rows: list[dict[str, Any]]
) -> None:
    table: Any = model
    session.execute(delete(table).where(col(table.day) == day))
    if rows:
        session.execute(SQLModel.metadata.tables[model.__tablename__].insert(), rows)  # type: ignore[index]


_TOKEN_COLS = (
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
)


def _usage_rows(session: Session, day: datetime, end: datetime) -> list[dict[str, Any]]:
    keys = ("source", "product", "service_tier", "model", "workspace_id", "inference_geo")
    u: Any = UsageBucket
    tokens = [col(getattr(u, c)) for c in _TOKEN_COLS]
    total_tokens = tokens[0] + tokens[1] + tokens[2] + tokens[3] + tokens[4]
    stmt = (
        select(
            *(col(getattr(u, k)) for k in keys),
            func.count(col(u.id)),
            func.sum(col(u.requests)),
            *(func.sum(t) for t in tokens),
            func.sum(col(u.web_searches)),
            func.sum(case((col(u.priced).is_(False), total_tokens), else_=0)),
            money_sum(col(u.cost_usd)),
            money_sum(col(u.standard_cost_usd)),
        )
        .where(col(u.bucket_start) >= day, col(u.bucket_start) < end)
        .group_by(*(col(getattr(u, k)) for k in keys))
    )
    out = []
    for r in session.execute(stmt):
        row = dict(zip(keys, r[: len(keys)], strict=True))
        n, reqs, *tok, web, unpriced, cost, standard = r[len(keys) :]
        row.update(
            day=day,
            buckets=int(n),
            requests=int(reqs) if reqs is not None else None,
            web_searches=int(web or 0),
            unpriced_tokens=int(unpriced or 0),
            cost_usd=cost,
            standard_cost_usd=standard,
        )
        row.update({c: int(v or 0) for c, v in zip(_TOKEN_COLS, tok, strict=True)})
        out.append(row)
    return out


_CALL_SUMS = (
    "calls",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "latency_ms_sum",
    "latency_count",
)


def _call_rows(session: Session, day: datetime, end: datetime) -> list[dict[str, Any]]:
    keys = ("workload", "model", "service_tier", "priority")
    c: Any = CallBucket
    stmt = (
        select(
            *(col(getattr(c, k)) for k in keys),
            *(func.sum(col(getattr(c, s))) for s in _CALL_SUMS),
            func.max(col(c.latency_ms_max)),
            money_sum(col(c.cost_usd)),
            money_sum(col(c.batch_cost_usd)),
        )
        .where(col(c.hour) >= day, col(c.hour) < end)
        .group_by(*(col(getattr(c, k)) for k in keys))
    )
    out = []
    for r in session.execute(stmt):
        row: dict[str, Any] = dict(zip(keys, r[: len(keys)], strict=True))
        sums = r[len(keys) : len(keys) + len(_CALL_SUMS)]
        row.update({s: int(v or 0) for s, v in zip(_CALL_SUMS, sums, strict=True)})
        latency_max, cost, batch_cost = r[len(keys) + len(_CALL_SUMS) :]
        row.update(
            day=day, latency_ms_max=int(latency_max or 0), cost_usd=cost, batch_cost_usd=batch_cost
        )
        out.append(row)
    return out


_BATCH_SUMS = (
    "ended",
    "canceled",
    "expired",
    "archived",
    "requests_succeeded",
    "requests_errored",
    "requests_canceled",
    "requests_expired",
    *TURNAROUND_COLS,
    "turnaround_sum",
    "turnaround_count",
)


def turnaround_column(seconds: float) -> str | None:
    """Return the histogram column a turnaround falls in (None: slower than 24 h)."""
    for bound, name in zip(TURNAROUND_BUCKETS, TURNAROUND_COLS, strict=True):
        if seconds <= bound:
            return name
    return None


def _batch_rows(session: Session, day: datetime, end: datetime) -> list[dict[str, Any]]:
    b: Any = Batch
    stmt = select(
        col(b.workspace_id),
        col(b.workload),
        col(b.requests),
        col(b.succeeded),
        col(b.errored),
        col(b.canceled),
        col(b.expired),
        col(b.cancel_initiated_at),
        col(b.archived_at),
        col(b.turnaround_seconds),
        col(b.results_state),
        col(b.unpriced_requests),
        col(b.cost_usd),
        col(b.standard_cost_usd),
    ).where(col(b.ended_at).is_not(None), col(b.ended_at) >= day, col(b.ended_at) < end)
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for r in session.execute(stmt):
        key = (r.workspace_id, r.workload or "")
        g = groups.get(key)
        if g is None:
            g = groups[key] = {
                "day": day,
                "workspace_id": key[0],
                "workload": key[1],
                **dict.fromkeys(_BATCH_SUMS, 0),
                "turnaround_sum": 0.0,
                "requests": 0,
                "results_unread": 0,
                "results_unavailable": 0,
                "requests_unread": 0,
                "unpriced_requests": 0,
                "cost_usd": None,
                "standard_cost_usd": None,
                "_times": [],
            }
        g["ended"] += 1
        g["canceled"] += r.cancel_initiated_at is not None
        g["expired"] += r.expired > 0
        g["archived"] += r.archived_at is not None
        g["results_unread"] += r.results_state != "ingested"
        g["results_unavailable"] += r.results_state == "unavailable"
        g["requests_unread"] += r.requests if r.results_state != "ingested" else 0
        g["unpriced_requests"] += r.unpriced_requests
        g["requests"] += r.requests
        g["requests_succeeded"] += r.succeeded
        g["requests_errored"] += r.errored
        g["requests_canceled"] += r.canceled
        g["requests_expired"] += r.expired
        if r.turnaround_seconds is not None:
            bucket = turnaround_column(r.turnaround_seconds)
            if bucket is not None:
                g[bucket] += 1
            g["turnaround_sum"] += r.turnaround_seconds
            g["turnaround_count"] += 1
            g["_times"].append(r.turnaround_seconds)
        for money in ("cost_usd", "standard_cost_usd"):
            value = getattr(r, money)
            if value is not None:
                g[money] = value if g[money] is None else g[money] + value
    for g in groups.values():
        g["turnarounds"] = orjson.dumps(sorted(g.pop("_times"))).decode()
    return list(groups.values())


_SPEND_KEY = ("service_tier", "model", "workspace_id")
_SPEND_SUMS = (
    "requests",
    *_TOKEN_COLS,
    "unpriced_tokens",
    "cost_usd",
    "standard_cost_usd",
    "billed_cost_usd",
)


def _spend_rows(
    session: Session, day: datetime, end: datetime, now: datetime
) -> list[dict[str, Any]]:
    complete = (
        end <= now
        and not session.execute(
            select(col(UsageBucket.id))
            .where(
                col(UsageBucket.bucket_start) >= day,
                col(UsageBucket.bucket_start) < end,
                col(UsageBucket.final).is_(False),
            )
            .limit(1)
        ).first()
    )
    rows: dict[tuple[str, str, str], dict[str, Any]] = {}

    def row(key: tuple[str, str, str]) -> dict[str, Any]:
        if key not in rows:
            rows[key] = {
                "day": day,
                "service_tier": key[0],
                "model": key[1],
                "workspace_id": key[2],
                "requests": None,
                "batches": 0,
                **dict.fromkeys(_TOKEN_COLS, 0),
                "unpriced_tokens": 0,
                "cost_usd": None,
                "standard_cost_usd": None,
                "billed_cost_usd": None,
                "complete": bool(complete),
                "updated_at": now,
            }
        return rows[key]

    for key, cell in spend_cells(session, day, end, use_rollups=False).items():
        r = row(key)
        r["requests"] = cell.requests
        r["batches"] = cell.batches
        for kind, name in zip(TOKEN_KINDS, _TOKEN_COLS, strict=True):
            r[name] = cell.tokens[kind]
        r["unpriced_tokens"] = cell.unpriced_tokens
        r["cost_usd"], r["standard_cost_usd"] = cell.cost_usd, cell.standard_cost_usd
    billed = (
        select(
            col(CostBucket.service_tier),
            col(CostBucket.model),
            col(CostBucket.workspace_id),
            money_sum(col(CostBucket.amount_usd)),
        )
        .where(
            col(CostBucket.day) >= day,
            col(CostBucket.day) < end,
            col(CostBucket.cost_type).in_(PRICED_COST_TYPES),
        )
        .group_by(col(CostBucket.service_tier), col(CostBucket.model), col(CostBucket.workspace_id))
    )
    for tier, model, ws, amount in session.execute(billed):
        r = row((contract_tier(tier), model, ws))
        r["billed_cost_usd"] = (
            amount if r["billed_cost_usd"] is None else r["billed_cost_usd"] + amount
        )
    return list(rows.values())


def _add(a: Decimal | None, b: Decimal | None) -> Decimal | None:
    return b if a is None else a if b is None else a + b


# --- totals by difference -------------------------------------------------------------------


def _day_rows(
    session: Session,
    model: type[SQLModel],
    day: datetime,
    key: Sequence[str],
    sums: Sequence[str],
) -> dict[tuple[Any, ...], dict[str, Any]]:
    """Return the day's rows of ``model`` summed per ``key``."""
    table: Any = model
    out: dict[tuple[Any, ...], dict[str, Any]] = defaultdict(dict)
    stmt = select(*(col(getattr(table, k)) for k in key), *(col(getattr(table, s)) for s in sums))
    for r in session.execute(stmt.where(col(table.day) == day)):
        acc = out[tuple(r[: len(key)])]
        for name, value in zip(sums, r[len(key) :], strict=True):
            if value is not None:
                acc[name] = acc.get(name, 0) + value
    return out


def _apply_delta(
    session: Session,
    model: type[SQLModel],
    key: Sequence[str],
    sums: Sequence[str],
    old: Mapping[tuple[Any, ...], Mapping[str, Any]],
    new: Mapping[tuple[Any, ...], Mapping[str, Any]],
) -> None:
    """Move the totals of ``model`` by ``new - old`` (only the keys that changed)."""
    for k in set(old) | set(new):
        before, after = old.get(k, {}), new.get(k, {})
        delta = {s: after.get(s, 0) - before.get(s, 0) for s in sums}
        if not any(delta.values()):
            continue
        total = session.get(model, k)
        if total is None:
            total = model(**dict(zip(key, k, strict=True)))
            for s in sums:
                setattr(total, s, ZERO if isinstance(getattr(total, s), Decimal) else 0)
            session.add(total)
        for s, d in delta.items():
            if d:
                setattr(total, s, getattr(total, s) + d)
    session.flush()
