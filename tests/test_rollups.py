"""Rollups: daily rows give the same money as the hourly rows, and totals follow every change."""

from __future__ import annotations

import sqlite3
import threading
import time
from datetime import datetime
from decimal import Decimal as D
from pathlib import Path
from typing import Any

from sqlmodel import Session, SQLModel, select

from monitor import db, rollups
from monitor.models import (
    Batch,
    BatchDay,
    BatchTotal,
    RollupDay,
    SpendDay,
    SpendTotal,
    UsageBucket,
    UsageDay,
)
from monitor.summary import build_summary, spend_cells, window_parts
from tests.factories import DAY, H, add_ended_batch, add_history, add_usage_hour
from tests.factories import HISTORY_NOW as NOW
from tests.factories import HISTORY_T0 as T0


def _summary_json(session: Session, since: datetime, until: datetime) -> dict[str, Any]:
    return build_summary(session, since, until, NOW).to_json()


def test_windows_read_rollups_for_clean_days_with_the_same_money(session: Session) -> None:
    add_history(session)
    windows = [
        (T0, NOW),
        (T0 + 5 * H, T0 + 3 * DAY + 2 * H),
        (T0 + DAY, T0 + 4 * DAY),
        (T0 + 30 * H, T0 + 31 * H),
    ]
    before = [_summary_json(session, lo, hi) for lo, hi in windows]
    assert all(not p.daily for lo, hi in windows for p in window_parts(session, lo, hi))

    result = rollups.refresh(session, NOW)
    assert (result.days, result.remaining) == (6, 0)
    parts = window_parts(session, T0 + 5 * H, T0 + 3 * DAY + 2 * H)
    assert [(p.since, p.until, p.daily) for p in parts] == [
        (T0 + 5 * H, T0 + DAY, False),
        (T0 + DAY, T0 + 3 * DAY, True),
        (T0 + 3 * DAY, T0 + 3 * DAY + 2 * H, False),
    ]
    after = [_summary_json(session, lo, hi) for lo, hi in windows]
    assert after == before
    assert before[0]["realtime_cost_usd"] != "0.00"  # the windows do hold money


def test_a_pruned_clean_day_still_adds_up(session: Session) -> None:
    add_history(session)
    rollups.refresh(session, NOW)
    window = (T0, T0 + 4 * DAY)
    before = _summary_json(session, *window)
    # Hourly rows of the first three days gone, as retention would do: the rollups remain.
    for row in session.exec(select(UsageBucket).where(UsageBucket.bucket_start < T0 + 3 * DAY)):
        session.delete(row)
    session.commit()
    assert _summary_json(session, *window) == before


def test_a_dirty_day_is_read_raw_until_refreshed(session: Session) -> None:
    add_history(session)
    rollups.refresh(session, NOW)
    window = (T0 + DAY, T0 + 2 * DAY)
    before = D(_summary_json(session, *window)["realtime_cost_usd"])
    # A late revision: a new hourly row lands in a clean day, and the writer marks it dirty.
    add_usage_hour(session, T0 + DAY + 3 * H, "10.01", workspace="wrkspc_c")
    rollups.mark_dirty(session, [T0 + DAY + 3 * H], NOW)
    session.commit()
    assert D(_summary_json(session, *window)["realtime_cost_usd"]) == before + D("10.01")
    assert session.get(RollupDay, T0 + DAY).clean is False  # type: ignore[union-attr]
    rollups.refresh(session, NOW)
    assert D(_summary_json(session, *window)["realtime_cost_usd"]) == before + D("10.01")
    day = session.exec(
        select(UsageDay).where(UsageDay.day == T0 + DAY, UsageDay.workspace_id == "wrkspc_c")
    ).one()
    assert day.cost_usd == D("10.01") and day.buckets == 1


def test_spend_days_match_the_summary_and_totals_match_the_days(session: Session) -> None:
    add_history(session)
    rollups.refresh(session, NOW)
    days = session.exec(select(SpendDay)).all()
    for d in range(6):
        lo = T0 + d * DAY
        s = build_summary(session, lo, lo + DAY, NOW)
        mine = [r for r in days if r.day == lo]
        rt = sum((r.cost_usd or D(0) for r in mine if r.service_tier != "batch"), D(0))
        batch = sum((r.cost_usd or D(0) for r in mine if r.service_tier == "batch"), D(0))
        assert rt == (s.spend.realtime_cost_usd or 0), lo
        assert batch == (s.spend.batch_cost_usd or 0), lo
        billed = [r.billed_cost_usd for r in mine if r.billed_cost_usd is not None]
        assert sum(billed, D(0)) == (s.billed_cost_usd or 0), lo
    totals = {
        (t.service_tier, t.model, t.workspace_id): t for t in session.exec(select(SpendTotal))
    }
    for key, total in totals.items():
        rows = [r for r in days if (r.service_tier, r.model, r.workspace_id) == key]
        assert total.cost_usd == sum((r.cost_usd or D(0) for r in rows), D(0))
        assert total.input_tokens == sum(r.input_tokens for r in rows)
        assert total.billed_cost_usd == sum((r.billed_cost_usd or D(0) for r in rows), D(0))
    assert {k[0] for k in totals} == {"standard", "batch"}
    # The cells of a window add up to the summary's spend too.
    cells = spend_cells(session, T0, NOW)
    assert sum((c.cost_usd or D(0) for k, c in cells.items() if k[0] == "batch"), D(0)) == (
        build_summary(session, T0, NOW, NOW).spend.batch_cost_usd
    )


def test_totals_move_by_the_difference_and_never_double_count(session: Session) -> None:
    add_history(session)
    rollups.refresh(session, NOW)
    total = session.get(SpendTotal, ("standard", "claude-sonnet-4-6", "wrkspc_a"))
    assert total is not None
    before = total.cost_usd
    # Refreshing clean days again changes nothing.
    rollups.mark_dirty(session, [T0 + d * DAY for d in range(6)], NOW)
    session.commit()
    rollups.refresh(session, NOW)
    session.refresh(total)
    assert total.cost_usd == before
    # A bucket revised downwards moves the total by exactly the difference.
    row = session.exec(select(UsageBucket).where(UsageBucket.bucket_start == T0 + 2 * H)).first()
    assert row is not None and row.workspace_id == "wrkspc_a"
    old = row.cost_usd
    row.cost_usd = D("0.25")
    session.add(row)
    rollups.mark_dirty(session, [row.bucket_start], NOW)
    session.commit()
    rollups.refresh(session, NOW)
    session.refresh(total)
    assert old is not None and total.cost_usd == before - old + D("0.25")


def test_batch_days_count_outcomes_and_turnaround(session: Session) -> None:
    add_history(session)
    add_ended_batch(
        session, "msgbatch_slow", T0 + 10 * H, "3", minutes=100, errored=7, workspace="wrkspc_b"
    )
    rollups.mark_dirty(session, [T0], NOW)
    session.commit()
    rollups.refresh(session, NOW)
    day0 = session.exec(select(BatchDay).where(BatchDay.day == T0)).all()
    slow = [d for d in day0 if d.workspace_id == "wrkspc_b"]
    assert len(slow) == 1 and slow[0].ended == 1 and slow[0].requests_errored == 7
    assert slow[0].turnaround_le_7200 == 1 and slow[0].turnaround_sum == 6000.0
    fast = next(d for d in day0 if d.workspace_id == "wrkspc_a")
    assert fast.turnaround_le_1800 == fast.ended == 4  # h = 0, 6, 12, 18 ended that day
    total_a = session.get(BatchTotal, "wrkspc_a")
    assert total_a is not None
    assert total_a.ended == len(
        session.exec(select(Batch).where(Batch.workspace_id == "wrkspc_a")).all()
    )


def test_a_refresh_on_sqlite_lets_other_writers_in_between_days(tmp_path: Path) -> None:
    # SQLite has one write lock and no queue: a refresh that took it again at once for the
    # next day kept every other job waiting for the whole catch-up (the load soak's 10 s
    # delivery job waited 12 s behind a month's refresh). Another writer that starts once the
    # first day is clean must commit before the last day is.
    engine = db.make_engine(f"sqlite:///{tmp_path / 'r.db'}")
    SQLModel.metadata.create_all(engine)
    with Session(engine) as s:
        add_history(s)
    days = 6
    clean_when_written: list[int] = []

    def other_writer() -> None:
        conn = sqlite3.connect(tmp_path / "r.db", timeout=30)
        try:
            count = "SELECT count(*) FROM rollup_day WHERE clean"
            for _ in range(2000):  # bounded: the refresh takes well under 10 s
                if conn.execute(count).fetchone()[0] >= 1:
                    break
                time.sleep(0.005)
            conn.execute("INSERT INTO tally (metric, key, value) VALUES ('other', 'writer', 1)")
            clean_when_written.append(conn.execute(count).fetchone()[0])
            conn.commit()
        finally:
            conn.close()

    thread = threading.Thread(target=other_writer)
    thread.start()
    with Session(engine) as s:
        result = rollups.refresh(s, NOW)
    thread.join(timeout=30)
    engine.dispose()
    assert (result.days, result.remaining) == (days, 0)
    assert clean_when_written and 1 <= clean_when_written[0] < days, clean_when_written
