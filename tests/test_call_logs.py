"""The call-log source (incremental, rotation-safe, exactly-once) and the instrument wrapper.

Real files in a temp dir, the real pricing engine, both databases through the fixtures, and the
real ``anthropic`` SDK talking HTTP to a tiny server on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlmodel import Session, col, select

from monitor import sources
from monitor.calllog import BadLine, HourlyTally, LineError, parse_timestamp, read_lines
from monitor.collect import CollectResult, collect_source
from monitor.config import CollectSection, Settings, Workload
from monitor.models import CallBucket, CollectRun, SourceCursor
from monitor.pricing import Usage, default_book
from monitor.sources.call_logs import (
    CallLogSource,
    ConcurrentReadError,
    Cursor,
    cursor_key,
    from_settings,
)
from monitor.workloads import WorkloadMap

D = Decimal
T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
NOW = datetime(2026, 11, 21, tzinfo=UTC)


def call(at: datetime = T0, **fields: Any) -> dict[str, Any]:
    """Return one call-log object (Sonnet 4.6, 1,000 in / 500 out unless overridden)."""
    obj: dict[str, Any] = {
        "timestamp": at.isoformat().replace("+00:00", "Z"),
        "workload": "summarize",
        "model": "claude-sonnet-4-6",
        "input_tokens": 1000,
        "output_tokens": 500,
        "latency_ms": 1200,
    }
    obj.update(fields)
    return {k: v for k, v in obj.items() if v is not ...}


def line(obj: dict[str, Any] | None = None, **fields: Any) -> bytes:
    return orjson.dumps(obj if obj is not None else call(**fields)) + b"\n"


def write(path: Path, *lines: bytes, mode: str = "ab") -> None:
    with open(path, mode) as fh:
        fh.write(b"".join(lines))


def source(
    *patterns: Path | str, workloads: tuple[Workload, ...] = (), chunk_bytes: int | None = None
) -> CallLogSource:
    src = CallLogSource(
        patterns=[str(p) for p in patterns], workloads=WorkloadMap(workloads), book=default_book()
    )
    if chunk_bytes is not None:
        src.chunk_bytes = chunk_bytes
    return src


def run(src: CallLogSource, session: Session, now: datetime = NOW) -> CollectResult:
    return collect_source(src, session, now)


def buckets(session: Session) -> list[CallBucket]:
    session.expire_all()
    return list(
        session.exec(
            select(CallBucket).order_by(
                col(CallBucket.hour), col(CallBucket.workload), col(CallBucket.priority)
            )
        )
    )


def total_calls(session: Session) -> int:
    return sum(b.calls for b in buckets(session))


# 1,000 input at $3/MTok + 500 output at $15/MTok; batch is half.
ONE_CALL_USD = D("0.0105")
ONE_CALL_BATCH_USD = D("0.00525")


# --- reading and aggregating --------------------------------------------------------------------


def test_lines_become_hourly_buckets_priced_at_real_time_and_batch_rates(
    session: Session, tmp_path: Path
) -> None:
    log = tmp_path / "calls.jsonl"
    write(
        log,
        line(call(T0 + timedelta(minutes=5), priority="high", latency_ms=900)),
        line(call(T0 + timedelta(minutes=50), latency_ms=2000)),
        line(call(T0 + timedelta(minutes=55), latency_ms=1000)),
        line(call(T0 + timedelta(hours=1, minutes=1), workload="tagging", service_tier="priority")),
        line(call(T0 + timedelta(minutes=7), cache_read_input_tokens=4000)),
    )
    result = run(source(log), session)
    assert result.ok, result.run.error
    assert result.run.items == 5 and result.run.bad_lines == 0

    rows = buckets(session)
    assert [(b.hour, b.workload, b.service_tier, b.priority, b.calls) for b in rows] == [
        (T0, "summarize", "", "", 3),
        (T0, "summarize", "", "high", 1),
        (T0 + timedelta(hours=1), "tagging", "priority", "", 1),
    ]
    normal = rows[0]
    assert normal.input_tokens == 3000 and normal.output_tokens == 1500
    assert normal.cache_read_tokens == 4000
    assert normal.latency_ms_sum == 4200 and normal.latency_ms_max == 2000
    assert normal.latency_count == 3
    assert normal.first_at == T0 + timedelta(minutes=7)
    assert normal.last_at == T0 + timedelta(minutes=55)
    # 4,000 cache-read tokens at $0.30/MTok = $0.0012 on top of three plain calls.
    assert normal.priced
    assert normal.cost_usd == 3 * ONE_CALL_USD + D("0.0012")
    assert normal.batch_cost_usd == 3 * ONE_CALL_BATCH_USD + D("0.0006")
    assert rows[1].cost_usd == ONE_CALL_USD and rows[1].batch_cost_usd == ONE_CALL_BATCH_USD


def test_appended_lines_are_read_from_the_offset_and_a_second_run_reads_nothing(
    session: Session, tmp_path: Path
) -> None:
    log = tmp_path / "calls.jsonl"
    write(log, line(), line())
    src = source(log)
    assert run(src, session).run.items == 2

    write(log, line(), line(), line())
    assert run(src, session).run.items == 3
    assert total_calls(session) == 5

    # Exactly once: nothing new, nothing counted, however often it runs.
    again = run(src, session)
    assert again.ok and again.run.items == 0
    assert total_calls(session) == 5
    assert buckets(session)[0].cost_usd == 5 * ONE_CALL_USD

    stored = session.get(SourceCursor, cursor_key(str(log)))
    assert stored is not None
    cursor = Cursor.from_json(stored.cursor)
    assert cursor is not None
    assert (cursor.offset, cursor.line) == (log.stat().st_size, 5)


def test_a_partial_last_line_waits_for_its_newline(session: Session, tmp_path: Path) -> None:
    log = tmp_path / "calls.jsonl"
    whole = line(workload="late")
    write(log, line(), whole[:25])  # the writer is midway through line 2
    src = source(log)
    assert run(src, session).run.items == 1

    write(log, whole[25:], b"{not json\n")  # line 2 completes; line 3 is bad
    result = run(src, session)
    assert result.run.items == 1 and result.run.bad_lines == 1
    assert f"{log}:3: json" in "\n".join(result.stats.notes)  # line numbers carry across runs
    assert {b.workload: b.calls for b in buckets(session)} == {"summarize": 1, "late": 1}


def test_a_chunk_boundary_or_a_line_longer_than_a_chunk_changes_nothing(
    session: Session, tmp_path: Path
) -> None:
    log = tmp_path / "calls.jsonl"
    long_line = line(workload="long", note="x" * 900)  # unknown keys are ignored
    write(log, *(line() for _ in range(7)), long_line, line(), line())
    result = run(source(log, chunk_bytes=300), session)
    assert result.ok and result.run.items == 10
    assert {b.workload: b.calls for b in buckets(session)} == {"summarize": 9, "long": 1}
    assert buckets(session)[0].cost_usd == ONE_CALL_USD  # "long" sorts first


# --- rotation and truncation --------------------------------------------------------------------


def test_a_replaced_file_is_read_from_its_start(session: Session, tmp_path: Path) -> None:
    log = tmp_path / "calls.jsonl"
    write(log, line(), line())
    src = source(log)
    run(src, session)

    # logrotate's "create": the old file moves out of the pattern, a new one takes the path.
    os.rename(log, tmp_path / "calls.jsonl.old")
    write(log, line(workload="after"))
    result = run(src, session)
    assert result.run.items == 1
    assert any("rotated" in n for n in result.stats.notes)
    assert {b.workload: b.calls for b in buckets(session)} == {"summarize": 2, "after": 1}


def test_a_rotated_file_still_matched_by_the_pattern_is_not_read_twice(
    session: Session, tmp_path: Path
) -> None:
    log = tmp_path / "app.log"
    write(log, line(), line())
    src = source(str(tmp_path / "app.log*"))
    run(src, session)

    write(log, line(workload="tail"))  # written after the last read, before the rotation
    os.rename(log, tmp_path / "app.log.1")
    write(log, line(workload="fresh"))
    result = run(src, session)
    assert result.ok and result.run.items == 2
    assert any("renamed from" in n for n in result.stats.notes)
    assert {b.workload: b.calls for b in buckets(session)} == {
        "summarize": 2,
        "tail": 1,
        "fresh": 1,
    }
    assert run(src, session).run.items == 0


def test_copytruncate_rotation_reads_each_line_once(session: Session, tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    write(log, line(), line())
    src = source(str(tmp_path / "app.log*"))
    run(src, session)

    write(log, line(workload="tail"))
    shutil.copyfile(log, tmp_path / "app.log.1")  # logrotate copytruncate: copy, then truncate
    write(log, line(workload="fresh", at=T0 + timedelta(hours=2)), mode="wb")
    result = run(src, session)
    assert result.ok and result.run.items == 2
    assert {b.workload: b.calls for b in buckets(session)} == {
        "summarize": 2,
        "tail": 1,
        "fresh": 1,
    }


def test_a_truncated_file_is_read_again_from_the_top(session: Session, tmp_path: Path) -> None:
    log = tmp_path / "calls.jsonl"
    write(log, line(), line(), line())
    src = source(log)
    run(src, session)

    write(log, line(workload="restarted", at=T0 + timedelta(hours=3)), mode="wb")
    result = run(src, session)
    assert result.run.items == 1
    assert any("truncated" in n for n in result.stats.notes)
    assert {b.workload: b.calls for b in buckets(session)} == {"summarize": 3, "restarted": 1}


def test_a_cursor_moved_by_another_collector_is_never_counted_twice(
    session: Session, tmp_path: Path
) -> None:
    log = tmp_path / "calls.jsonl"
    write(log, line())
    src = source(log)
    run(src, session)
    stored = session.get(SourceCursor, cursor_key(str(log)))
    assert stored is not None
    stale = stored.cursor
    write(log, line())
    run(src, session)  # the "other collector" reads line 2

    # This collector still believes the cursor is at line 1 and tries to store line 2 again.
    tally = HourlyTally(WorkloadMap(), default_book())
    tally.feed([line().rstrip(b"\n")], str(log), 2, lambda bad: None)
    after = Cursor.from_json(stale)
    assert after is not None
    after.offset, after.line = after.offset + len(line()), 2
    with pytest.raises(ConcurrentReadError):
        src._store(session, cursor_key(str(log)), stale, after, tally.rows(), NOW)
    assert total_calls(session) == 2


# --- bad input ----------------------------------------------------------------------------------


def test_bad_lines_are_counted_reported_with_file_line_and_field_and_skipped(
    session: Session, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = tmp_path / "calls.jsonl"
    write(
        log,
        line(),
        b'{"timestamp": "2026-11-20T09:00:00Z", "model": \n',
        line(call(model=...)),
        line(input_tokens=-5),
        line(call(timestamp="yesterday")),
        line(output_tokens=1.5),
        b"\n",  # a blank line is nothing, not an error
        line(call(workload=..., endpoint=...)),
        line(latency_ms="slow"),
        b"[1, 2]\n",
        line(),
        line(cache_read_input_tokens=""),  # falsy, still not a number
        line(cache_read_input_tokens=None, cache_creation_input_tokens=None),  # null is 0
    )
    with caplog.at_level(logging.WARNING, logger="monitor.sources.call_logs"):
        result = run(source(log), session)
    assert result.ok
    assert result.run.items == 3 and result.run.bad_lines == 9
    notes = "\n".join(result.stats.notes)
    for lineno, field in (
        (2, "json"),
        (3, "model"),
        (4, "input_tokens"),
        (5, "timestamp"),
        (6, "output_tokens"),
        (8, "workload"),
        (9, "latency_ms"),
        (10, "json"),
        (12, "cache_read_input_tokens"),
    ):
        assert f"{log}:{lineno}: {field}: " in notes, (lineno, field, notes)
        assert f"{log}:{lineno}: {field}: " in caplog.text
    assert "must not be negative, got -5" in notes
    assert "'yesterday'" in notes
    stored = session.get(CollectRun, result.run.id)
    assert stored is not None and stored.bad_lines == 9
    assert total_calls(session) == 3


def test_timestamps_in_other_forms_land_in_their_utc_hour(session: Session, tmp_path: Path) -> None:
    log = tmp_path / "calls.jsonl"
    epoch = int((T0 + timedelta(minutes=30)).timestamp())
    write(
        log,
        line(call(timestamp=epoch)),
        line(call(timestamp="2026-11-20T11:15:00+02:00")),  # 09:15 UTC
        line(call(timestamp="2026-11-20T09:45:00")),  # no zone: UTC
        line(call(timestamp=epoch * 1000)),  # milliseconds: refused, not mis-dated
    )
    result = run(source(log), session)
    assert result.run.items == 3 and result.run.bad_lines == 1
    assert "looks like milliseconds" in "\n".join(result.stats.notes)
    (row,) = buckets(session)
    assert (row.hour, row.calls) == (T0, 3)
    assert row.first_at == T0 + timedelta(minutes=15)
    assert row.last_at == T0 + timedelta(minutes=45)


def test_unknown_model_keeps_its_tokens_and_is_marked_unpriced(
    session: Session, tmp_path: Path
) -> None:
    log = tmp_path / "calls.jsonl"
    write(log, line(model="claude-unknown-9"), line(model="claude-unknown-9"))
    run(source(log), session)
    (row,) = buckets(session)
    assert row.model == "claude-unknown-9" and row.calls == 2
    assert row.input_tokens == 2000 and row.output_tokens == 1000
    assert not row.priced and row.cost_usd is None and row.batch_cost_usd is None


def test_failed_calls_are_skipped_because_they_are_not_billed(
    session: Session, tmp_path: Path
) -> None:
    log = tmp_path / "calls.jsonl"
    write(log, line(status=200), line(status=529), line(status="500"))
    result = run(source(log), session)
    assert result.run.items == 1 and result.run.bad_lines == 1  # "500" is not a status code
    assert total_calls(session) == 1


def test_pricing_groups_equals_pricing_each_call_across_tiers_geo_and_cache(
    session: Session, tmp_path: Path
) -> None:
    # Haiku 5.5 charges every token of a request over 100K prompt tokens at a higher tier,
    # so a group that mixes sizes must not be priced by its average.
    calls = [
        call(model="claude-haiku-5-5", input_tokens=150_000, output_tokens=900),
        call(model="claude-haiku-5-5", input_tokens=2_000, output_tokens=300),
        call(
            model="claude-haiku-5-5",
            input_tokens=60_000,
            cache_read_input_tokens=50_000,
            output_tokens=10,
        ),
        call(
            model="claude-sonnet-4-6",
            inference_geo="us",
            cache_creation_input_tokens=3_000,
            cache_creation={"ephemeral_5m_input_tokens": 1_000, "ephemeral_1h_input_tokens": 2_000},
            web_search_requests=2,
        ),
    ]
    log = tmp_path / "calls.jsonl"
    write(log, *(line(c) for c in calls))
    run(source(log), session)

    def each(c: dict[str, Any]) -> tuple[Decimal, Decimal]:
        split = c.get("cache_creation", {})
        usage = Usage(
            input_tokens=c["input_tokens"],
            output_tokens=c["output_tokens"],
            cache_read_tokens=c.get("cache_read_input_tokens", 0),
            cache_write_5m_tokens=split.get("ephemeral_5m_input_tokens", 0),
            cache_write_1h_tokens=split.get("ephemeral_1h_input_tokens", 0),
            web_searches=c.get("web_search_requests", 0),
            inference_geo=c.get("inference_geo"),
        )
        cost = default_book().cost_of(c["model"], usage, T0)
        assert cost.standard_usd is not None and cost.batch_usd is not None
        return cost.standard_usd, cost.batch_usd

    for model in ("claude-haiku-5-5", "claude-sonnet-4-6"):
        (row,) = [b for b in buckets(session) if b.model == model]
        costs = [each(c) for c in calls if c["model"] == model]
        assert row.cost_usd == sum((s for s, _ in costs), D(0))
        assert row.batch_cost_usd == sum((b for _, b in costs), D(0))
    sonnet = next(b for b in buckets(session) if b.model == "claude-sonnet-4-6")
    assert sonnet.cache_write_tokens == 3_000


def test_every_timestamp_form_lands_in_its_utc_hour_with_first_and_last_in_utc() -> None:
    # One hour written every way a log may write it; the reader's fast path takes some
    # forms and leaves the others to the slow path, and the result must not show which.
    stamps = [
        "2026-11-20T09:10:00Z",
        "2026-11-20T09:20:00+00:00",
        "2026-11-20T09:40:00",  # no zone: UTC
        int((T0 + timedelta(minutes=50)).timestamp()),
        (T0 + timedelta(minutes=5, seconds=0.5)).timestamp(),
        "20261120T0930Z",
        " 2026-11-20T09:35:00Z",
        "2026-11-20T11:58:00+02:00",  # 09:58 UTC, the last
    ]
    tally = HourlyTally(WorkloadMap(), default_book())
    bad: list[BadLine] = []
    lines = [line(call(timestamp=stamp)) for stamp in stamps]
    assert tally.feed(lines, "calls.jsonl", 1, bad.append) == len(stamps) and not bad
    (row,) = tally.rows()
    assert (row.hour, row.calls, row.latency_count) == (T0, len(stamps), len(stamps))
    assert row.first_at == T0 + timedelta(minutes=5, seconds=0.5)
    assert row.last_at == T0 + timedelta(minutes=58)
    assert row.first_at.tzinfo is UTC and row.last_at.tzinfo is UTC


def test_a_cache_split_is_read_the_same_whether_or_not_the_total_is_given() -> None:
    split = {"ephemeral_5m_input_tokens": 500, "ephemeral_1h_input_tokens": 200}
    lines = [
        line(cache_creation=split),  # no total: the split's sum is the cache write
        line(cache_creation_input_tokens=700, cache_creation=split),
        line(cache_creation_input_tokens=0, cache_creation={"ephemeral_5m_input_tokens": "x"}),
        line(cache_creation_input_tokens=100, cache_creation={"ephemeral_1h_input_tokens": 200}),
    ]
    tally = HourlyTally(WorkloadMap(), default_book())
    bad: list[BadLine] = []
    assert tally.feed(lines, "calls.jsonl", 1, bad.append) == 2
    assert [(b.line, b.field) for b in bad] == [
        (3, "ephemeral_5m_input_tokens"),
        (4, "cache_creation"),
    ]
    (row,) = tally.rows()
    assert row.cache_write_tokens == 1_400
    usage = Usage(
        input_tokens=2_000,
        output_tokens=1_000,
        cache_write_5m_tokens=1_000,
        cache_write_1h_tokens=400,
        requests=2,
    )
    cost = default_book().cost_of("claude-sonnet-4-6", usage, T0)
    assert (row.cost_usd, row.batch_cost_usd) == (cost.standard_usd, cost.batch_usd)


def test_calls_before_since_are_checked_but_not_added() -> None:
    since = T0 + timedelta(minutes=30)
    lines = [
        line(call(T0 + timedelta(minutes=10))),
        line(call(T0 + timedelta(minutes=20), input_tokens=-1)),
        line(call(T0 + timedelta(minutes=40))),
        line(call(T0 + timedelta(minutes=25), workload=5)),  # a new group before `since`
        line(call(T0 - timedelta(hours=2))),
        line(call(since, latency_ms=None)),
    ]
    tally = HourlyTally(WorkloadMap(), default_book())
    bad: list[BadLine] = []
    assert tally.feed(lines, "calls.jsonl", 1, bad.append, since=since) == 2
    assert [(b.line, b.field) for b in bad] == [(2, "input_tokens"), (4, "workload")]
    assert (tally.calls, tally.bad_lines) == (2, 2)
    (row,) = tally.rows()
    assert (row.calls, row.latency_count, row.latency_ms_sum) == (2, 1, 1200)
    assert (row.first_at, row.last_at) == (since, T0 + timedelta(minutes=40))


def test_daily_costs_add_up_exactly_to_the_costs_of_the_hourly_rows() -> None:
    variants: list[tuple[str, int, dict[str, Any]]] = [
        ("claude-haiku-5-5", 150_000, {}),  # above the 100K tier
        ("claude-haiku-5-5", 2_000, {}),
        ("claude-sonnet-4-6", 1_000, {"inference_geo": "us", "priority": "high"}),
        ("claude-unknown-9", 1_000, {}),
    ]
    lines = [
        line(call(T0 + timedelta(hours=hour), model=model, input_tokens=tokens, **extra))
        for hour in (0, 1, 5, 30)  # two UTC days
        for model, tokens, extra in variants
    ]
    tally = HourlyTally(WorkloadMap(), default_book())
    assert tally.feed(lines, "calls.jsonl", 1, lambda bad: None) == len(lines)
    until = T0 + timedelta(hours=5)

    def add(sums: dict[Any, list[Any]], key: Any, calls: int, std: Any, bat: Any) -> None:
        acc = sums.setdefault(key, [0, D(0), D(0), 0])  # calls, standard, batch, unpriced calls
        acc[0] += calls
        if std is None or bat is None:
            acc[3] += calls
        else:
            acc[1] += std
            acc[2] += bat

    hourly: dict[Any, list[Any]] = {}
    rows = [r for r in tally.rows() if r.hour <= until]
    for r in rows:
        add(hourly, (r.workload, r.model, r.priority), r.calls, r.cost_usd, r.batch_cost_usd)
    daily: dict[Any, list[Any]] = {}
    costs = tally.daily_costs(until=until)
    for workload, model, priority, calls, cost in costs:
        add(daily, (workload, model, priority), calls, cost.standard_usd, cost.batch_usd)
    assert daily == hourly
    assert hourly[("summarize", "claude-unknown-9", "")][3] == 3
    assert len(costs) == len(variants) < len(rows)


def test_out_of_range_values_are_bad_lines_and_the_rest_is_kept(
    session: Session, tmp_path: Path
) -> None:
    log = tmp_path / "calls.jsonl"
    write(
        log,
        line(),
        line(call(timestamp="9999-12-31T23:59:59Z")),  # the hour after it cannot be written
        line(call(timestamp="1970-01-01T00:00:00Z")),
        line(call(timestamp=4e10)),  # epoch seconds in year 3237: not a time we keep
        line(input_tokens=9 * 10**18),  # a handful summed overflow a 64-bit column
        line(cache_read_input_tokens=10**16),
        line(web_search_requests=10**16),
        line(latency_ms=1e12),
        line(),
    )
    result = run(source(log), session)
    assert result.ok, result.run.error
    assert result.run.items == 2 and result.run.bad_lines == 7
    notes = "\n".join(result.stats.notes)
    for lineno, field in (
        (2, "timestamp"),
        (3, "timestamp"),
        (4, "timestamp"),
        (5, "input_tokens"),
        (6, "cache_read_input_tokens"),
        (7, "web_search_requests"),
        (8, "latency_ms"),
    ):
        assert f"{log}:{lineno}: {field}: " in notes, (lineno, field, notes)
    assert "'9999-12-31T23:59:59Z' is not between 2000-01-01 and 2999-12-31" in notes
    assert total_calls(session) == 2
    # The next run goes on from there: the bad line does not wedge the source.
    write(log, line())
    again = run(source(log), session)
    assert again.ok and again.run.items == 1 and again.run.bad_lines == 0


def test_parse_timestamp_names_the_field() -> None:
    assert parse_timestamp("2026-11-20T09:00:00Z") == T0
    assert parse_timestamp(T0.timestamp()) == T0
    for bad in ("", "2026-13-01T00:00:00Z", None, True, [1], -1):
        with pytest.raises(LineError) as err:
            parse_timestamp(bad)
        assert err.value.field == "timestamp"


# --- workloads and configuration ----------------------------------------------------------------


def test_workloads_map_through_declared_match_regexes(session: Session, tmp_path: Path) -> None:
    log = tmp_path / "calls.jsonl"
    write(
        log,
        line(call(workload=..., endpoint="/api/chat/send")),
        line(call(workload=..., endpoint="/api/chat/history")),
        line(call(workload=..., endpoint="/api/review")),
        line(call(workload="nightly-digest", endpoint="/api/chat/digest")),  # by name first
    )
    declared = (
        Workload("chat", re.compile(r"^/api/chat"), timedelta(minutes=1), True),
        Workload("nightly-digest", None, timedelta(days=1), False),
    )
    run(source(log, workloads=declared), session)
    assert {b.workload: b.calls for b in buckets(session)} == {
        "chat": 2,
        "/api/review": 1,
        "nightly-digest": 1,
    }


def test_from_settings_and_the_registry(tmp_path: Path) -> None:
    assert from_settings("logs", Settings()) is None
    settings = Settings(collect=CollectSection(call_logs=[str(tmp_path / "*.jsonl")]))
    built = sources.build("logs", settings)
    assert isinstance(built, CallLogSource) and built.name == "logs"
    assert "logs" in sources.available()


def test_a_missing_file_is_only_a_note(session: Session, tmp_path: Path) -> None:
    result = run(source(tmp_path / "nothing-yet.jsonl"), session)
    assert result.ok and result.run.items == 0
    assert "no call-log file there yet" in result.stats.notes[0]


def test_an_unreadable_file_fails_the_run_and_names_it(session: Session, tmp_path: Path) -> None:
    log = tmp_path / "calls.jsonl"
    write(log, line())
    log.chmod(0)
    try:
        if os.access(log, os.R_OK):
            pytest.skip("running as a user who can read any file (root)")
        failed = run(source(log), session)
        assert not failed.ok and f"{log}: cannot read" in (failed.run.error or "")
    finally:
        log.chmod(0o644)


def test_audit_style_feeding_reports_bad_lines_through_the_callback(tmp_path: Path) -> None:
    log = tmp_path / "calls.jsonl"
    write(log, line(), b"oops\n", line())
    bad: list[BadLine] = []
    tally = HourlyTally(WorkloadMap(), default_book())
    assert tally.feed(read_lines(log), str(log), 1, bad.append) == 2
    assert [(b.path, b.line, b.field) for b in bad] == [(str(log), 2, "json")]
    assert str(bad[0]).startswith(f"{log}:2: json: not valid JSON")
    assert tally.bad_lines == 1 and tally.calls == 2


# --- the instrument wrapper, with the real SDK ---------------------------------------------------

MESSAGE = {
    "id": "msg_01TEST",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-6",
    "content": [{"type": "text", "text": "Hello."}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 1200,
        "output_tokens": 80,
        "cache_read_input_tokens": 3000,
        "cache_creation_input_tokens": 500,
        "cache_creation": {"ephemeral_5m_input_tokens": 500, "ephemeral_1h_input_tokens": 0},
        "service_tier": "standard",
    },
}


def _sse(kind: str, data: dict[str, Any]) -> bytes:
    return f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode()


STREAM = b"".join(
    [
        _sse(
            "message_start",
            {
                "type": "message_start",
                "message": {
                    **MESSAGE,
                    "content": [],
                    "usage": {**MESSAGE["usage"], "output_tokens": 1},
                },  # type: ignore[dict-item]
            },
        ),
        _sse(
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        ),
        _sse(
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": "Hi"},
            },
        ),
        _sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
        _sse(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": 80},
            },
        ),
        _sse("message_stop", {"type": "message_stop"}),
    ]
)


# The same stream, but the final message_delta carries a usage field the wrapper cannot read
# (an API shape it does not know): the delta holds the call's final output count.
CHANGED_DELTA_STREAM = STREAM.replace(
    b'"usage": {"output_tokens": 80}', b'"usage": {"output_tokens": 80, "cache_creation": "new"}'
)
assert CHANGED_DELTA_STREAM != STREAM


class _MessagesAPI(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    stream = STREAM  # what a stream=True request gets

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path != "/v1/messages":
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        streaming = bool(body.get("stream"))
        payload = self.stream if streaming else json.dumps(MESSAGE).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream" if streaming else "application/json")
        self.send_header("request-id", "req_01TEST")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: Any) -> None:  # keep the test output clean
        pass


class _ChangedDeltaAPI(_MessagesAPI):
    stream = CHANGED_DELTA_STREAM


@contextlib.contextmanager
def _serve(handler: type[_MessagesAPI]) -> Iterator[str]:
    """Serve POST /v1/messages with ``handler`` on 127.0.0.1; yield the base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def api_url() -> Iterator[str]:
    """Serve POST /v1/messages on 127.0.0.1 for the duration of one test."""
    with _serve(_MessagesAPI) as url:
        yield url


def _client(api_url: str) -> Any:
    from anthropic import Anthropic

    return Anthropic(api_key="sk-ant-test", base_url=api_url, max_retries=0)


REQUEST: dict[str, Any] = {
    "model": "claude-sonnet-4-6",
    "max_tokens": 100,
    "messages": [{"role": "user", "content": "Hi"}],
}


def test_instrument_logs_each_call_in_the_collector_format(api_url: str, tmp_path: Path) -> None:
    from monitor.instrument import instrument, tag, writer_of

    log = tmp_path / "calls.jsonl"
    client = instrument(_client(api_url), log, workload="support-bot")
    assert instrument(client, log) is client  # a second wrap is a no-op
    message = client.messages.create(**REQUEST)
    assert message.id == "msg_01TEST"  # the caller gets the SDK's own object
    with tag(workload="nightly-digest", priority="high"):
        client.messages.create(**REQUEST)
    writer = writer_of(client)
    assert writer is not None and writer.flush()

    first, second = (orjson.loads(x) for x in log.read_bytes().splitlines())
    assert first["workload"] == "support-bot" and "priority" not in first
    assert (second["workload"], second["priority"]) == ("nightly-digest", "high")
    assert first["model"] == "claude-sonnet-4-6"
    assert (first["input_tokens"], first["output_tokens"]) == (1200, 80)
    assert first["cache_read_input_tokens"] == 3000
    assert first["cache_creation_input_tokens"] == 500
    assert first["service_tier"] == "standard" and first["request_id"] == "req_01TEST"
    assert isinstance(first["latency_ms"], int) and first["latency_ms"] >= 0
    assert parse_timestamp(first["timestamp"]).tzinfo is UTC

    # The collector reads what the wrapper wrote, with no bad line.
    bad: list[BadLine] = []
    tally = HourlyTally(WorkloadMap(), default_book())
    assert tally.feed(read_lines(log), str(log), 1, bad.append) == 2 and not bad
    writer.close()


def test_instrument_logs_a_streamed_call_when_the_stream_ends(api_url: str, tmp_path: Path) -> None:
    from monitor.instrument import instrument, writer_of

    log = tmp_path / "calls.jsonl"
    client = instrument(_client(api_url), log, workload="chat")
    with client.messages.create(**REQUEST, stream=True) as stream:
        kinds = [event.type for event in stream]
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    writer = writer_of(client)
    assert writer is not None and writer.flush()
    (logged,) = (orjson.loads(x) for x in log.read_bytes().splitlines())
    assert (logged["workload"], logged["input_tokens"], logged["output_tokens"]) == (
        "chat",
        1200,
        80,
    )
    writer.close()


def test_instrument_counts_and_logs_a_stream_event_it_cannot_read(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from monitor.instrument import instrument, writer_of

    log = tmp_path / "calls.jsonl"
    with (
        _serve(_ChangedDeltaAPI) as url,
        caplog.at_level(logging.WARNING, logger="monitor.instrument"),
    ):
        client = instrument(_client(url), log, workload="chat")
        with client.messages.create(**REQUEST, stream=True) as stream:
            kinds = [event.type for event in stream]
    # The caller gets every event, untouched; the logging problem is never theirs.
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop" and len(kinds) == 6
    writer = writer_of(client)
    assert writer is not None and writer.flush()
    (logged,) = (orjson.loads(x) for x in log.read_bytes().splitlines())
    # The final output count was in the unreadable event: the line undercounts the call, and
    # that is counted and said, not silent.
    assert (logged["input_tokens"], logged["output_tokens"]) == (1200, 1)
    assert writer.incomplete == 1
    (warning,) = (r for r in caplog.records if r.name == "monitor.instrument")
    assert "'message_delta' event" in warning.getMessage()
    assert "undercount" in warning.getMessage() and warning.exc_info is not None
    writer.close()


def test_instrument_never_waits_on_the_disk(api_url: str, tmp_path: Path) -> None:
    from monitor.instrument import instrument, writer_of

    # A FIFO nobody reads: opening it for writing blocks until a reader comes. The call must
    # return anyway, and the line must arrive once someone reads.
    fifo = tmp_path / "calls.fifo"
    os.mkfifo(fifo)
    client = instrument(_client(api_url), fifo, workload="blocked")
    message = client.messages.create(**REQUEST)
    assert message.id == "msg_01TEST"
    with open(fifo, "rb") as reader:
        logged = orjson.loads(reader.readline())
    assert logged["workload"] == "blocked"
    writer = writer_of(client)
    assert writer is not None
    writer.close()


def test_instrument_never_raises_into_the_caller(api_url: str, tmp_path: Path) -> None:
    from monitor.instrument import instrument, writer_of

    client = instrument(_client(api_url), tmp_path / "no-such-dir" / "calls.jsonl")
    assert client.messages.create(**REQUEST).id == "msg_01TEST"
    writer = writer_of(client)
    assert writer is not None and writer.flush()
    assert writer.errors == 1 and writer.written == 0
    writer.close()


def test_a_call_that_cannot_be_recorded_is_counted_not_raised(
    api_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from monitor import instrument as inst

    def broken(usage: Any) -> dict[str, Any]:
        raise ValueError("an SDK change we do not know")

    monkeypatch.setattr(inst, "_usage_fields", broken)
    client = inst.instrument(_client(api_url), tmp_path / "calls.jsonl")
    assert client.messages.create(**REQUEST).id == "msg_01TEST"
    writer = inst.writer_of(client)
    assert writer is not None and writer.flush()
    assert (writer.errors, writer.written) == (1, 0)  # lost, and said so
    # A streamed call: every event still reaches the caller, and the call is counted once as
    # incomplete (its line, if any, may undercount).
    with client.messages.create(**REQUEST, stream=True) as stream:
        kinds = [event.type for event in stream]
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert writer.flush()
    assert (writer.errors, writer.incomplete) == (1, 1)
    writer.close()
