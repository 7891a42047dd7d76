"""The window contract (``monitor/summary.py``): every figure of ``summary`` and ``batches``.

Rows are inserted directly (``tests/factories.py``) on SQLite and PostgreSQL, and every expected
figure is computed by hand from them, money as ``Decimal`` and checked to the cent. One window
is read from raw rows only and from clean daily rollups (with a dirty day inside and ragged
ends), and must give exactly the same figures.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import delete
from sqlmodel import Session, col

from monitor import rollups
from monitor.models import BatchUsage, CallBucket, UsageBucket
from monitor.summary import (
    DriftRow,
    Part,
    build_summary,
    list_batches,
    printed_total,
    recorded_workspaces,
    window_figures,
    window_parts,
)
from tests.conftest import utc
from tests.factories import (
    DAY,
    HISTORY_NOW,
    HISTORY_T0,
    H,
    add_batch,
    add_billed,
    add_ended_batch,
    add_history,
    add_usage,
    add_usage_hour,
)

D = Decimal
DAY0 = utc(2026, 11, 16)  # a Monday; the window is this UTC day
NOW = DAY0 + DAY + 2 * H
SONNET, HAIKU = "claude-sonnet-4-6", "claude-haiku-4-5"
BILLED_NOTE = "billed cost and drift cover the whole UTC days of the window only"
SOURCES = {
    "batch": "batch ledger (Message Batches API results)",
    "realtime": "analytics usage report",
    "batches": "batch ledger (Message Batches API)",
    "usage_report": "analytics",
    "billed": "analytics cost report",
}


def window_rows(session: Session, day: datetime, a: str = "wrkspc_a", b: str = "wrkspc_b") -> None:
    """One day of every kind of row around ``day`` (workspaces ``a`` and ``b``), committed.

    Inside ``[day, day + 1d)``:
    - real-time usage: a/Sonnet 1.004 (10 requests) and 2.003 (20), b/Haiku 0.338 (30);
    - the usage report's batch rows: a/Sonnet 1.50;
    - batches ended: b1 (a, 100 requests, 2 errored, 1 expired, 1 h, 1.005 / standard 2.010),
      b2 (b, Haiku, 50 requests, 2 h, 0.12 / 0.24), b3 (a, 40 requests, 30 min, results unread);
    - billed: a/Sonnet/standard 2.90, b/Haiku/standard 0.338, a/Sonnet/batch 1.50.
    Outside it: usage the hour before (100) and at its end (200), a batch ended before it
    (7), one created in it and ended after it (9), billed days before (50) and after (60).
    At its end two batches are in progress: ``run`` (b, unended) and ``late`` (a).
    """
    add_usage(session, day + H, cost="1.004", requests=10, workspace=a)
    add_usage(session, day + 2 * H, cost="2.003", requests=20, workspace=a)
    add_usage(session, day + 3 * H, cost="0.338", requests=30, workspace=b, model=HAIKU)
    add_usage(session, day - H, cost="100", requests=1000, workspace=a)
    add_usage(session, day + DAY, cost="200", requests=2000, workspace=a)
    add_usage(
        session,
        day + 6 * H,
        cost="1.50",
        requests=150,
        workspace=a,
        product="message_batches_api",
        tier="batch",
    )
    add_ended_batch(
        session, f"{a}_b1", day + 5 * H, "1.005", minutes=60, errored=2, expired=1, workspace=a
    )
    add_ended_batch(
        session,
        f"{b}_b2",
        day + 10 * H,
        "0.12",
        minutes=120,
        requests=50,
        workspace=b,
        workload="digest",
        model=HAIKU,
    )
    add_ended_batch(
        session, f"{a}_b3", day + 20 * H, "0", requests=40, workspace=a, results="pending"
    )
    add_ended_batch(session, f"{a}_before", day - 2 * H, "7", workspace=a)
    add_ended_batch(session, f"{a}_late", day + 25 * H, "9", minutes=120, workspace=a)
    add_batch(session, f"{b}_run", created=day + 22 * H, workspace=b)
    add_billed(session, day, "2.90", workspace=a)
    add_billed(session, day, "0.338", model=HAIKU, workspace=b)
    add_billed(session, day, "1.50", tier="batch", workspace=a)
    add_billed(session, day - DAY, "50.00", workspace=a)
    add_billed(session, day + DAY, "60.00", workspace=a)
    session.commit()


def _money_row(
    key: str, name: str, rt: str | None, batch: str | None, total: str, savings: str | None
) -> dict[str, Any]:
    """One ``by_model`` / ``by_workspace`` object as ``summary --json`` prints it."""
    return {
        key: name,
        "realtime_cost_usd": rt,
        "batch_cost_usd": batch,
        "total_cost_usd": total,
        "savings_usd": savings,
    }


# --- build_summary and Summary.to_json -----------------------------------------------------


def test_summary_of_a_day_every_figure(session: Session) -> None:
    window_rows(session, DAY0)
    summary = build_summary(session, DAY0, DAY0 + DAY, NOW)

    realtime = D("1.004") + D("2.003") + D("0.338")  # 3.345
    batch = D("1.005") + D("0.12")  # 1.125; b3's results are unread: no cost yet
    standard = D("2.010") + D("0.24")
    assert summary.spend.realtime_cost_usd == realtime
    assert summary.spend.batch_cost_usd == batch
    assert summary.spend.total_cost_usd == realtime + batch == D("4.47")
    assert printed_total(realtime, batch) == D("4.48")
    assert (summary.spend.realtime_requests, summary.spend.batch_requests) == (60, 190)
    assert summary.batches.standard_cost_usd == standard
    assert summary.batches.savings_usd == standard - batch
    assert (summary.batches.succeeded, summary.batches.requests_unread) == (97 + 50 + 40, 40)
    assert summary.spend.batch_unread_share == 40 / 190
    assert summary.billed_cost_usd == D("2.90") + D("0.338") + D("1.50")
    computed = D("3.007") + D("0.338") + D("1.50")
    assert summary.drift == (
        DriftRow(DAY0, HAIKU, "standard", D("0.338"), D("0.338"), 0.0),
        DriftRow(DAY0, SONNET, "batch", D("1.50"), D("1.50"), 0.0),
        DriftRow(
            DAY0,
            SONNET,
            "standard",
            D("3.007"),
            D("2.90"),
            float((D("3.007") - D("2.90")) / D("2.90")),
        ),
    )

    assert summary.to_json() == {
        "since": "2026-11-16T00:00:00Z",
        "until": "2026-11-17T00:00:00Z",
        "workspace": None,
        "realtime_cost_usd": "3.35",  # 3.345, half-up
        "batch_cost_usd": "1.13",  # 1.125, half-up
        # The printed parts add up (3.35 + 1.13), where the exact total would print 4.47.
        "total_cost_usd": "4.48",
        "batch_share_requests": 0.76,  # 190 / (190 + 60)
        "batch_share_spend": float(batch / (realtime + batch)),
        "savings_usd": "1.13",  # 2.25 - 1.125
        "batches_ended": 3,
        "batches_results_unread": 1,
        "batch_failure_rate": float(D(3) / D(190)),  # 2 errored + 1 expired
        "batch_expired_rate": float(D(1) / D(190)),
        "batch_turnaround_p50_seconds": 3600.0,  # nearest rank of 1800, 3600, 7200
        "batch_turnaround_p95_seconds": 7200.0,
        "batches_in_progress": 2,  # run (unended) and late (ended after the window)
        "billed_cost_usd": "4.74",  # 4.738
        "cost_drift_ratio": float(computed / D("4.738") - 1),
        "by_model": [
            _money_row("model", HAIKU, "0.34", "0.12", "0.46", "0.12"),
            # 3.007 + 1.005 = 4.012, but the printed 3.01 + 1.01 make 4.02.
            _money_row("model", SONNET, "3.01", "1.01", "4.02", "1.01"),
        ],
        "by_workspace": [
            _money_row("workspace", "wrkspc_a", "3.01", "1.01", "4.02", "1.01"),
            _money_row("workspace", "wrkspc_b", "0.34", "0.12", "0.46", "0.12"),
        ],
        "sources": SOURCES,
        "notes": [
            "1 ended batch(es) have results not read yet (21.05 % of the window's batch "
            "requests): batch spend and savings are a lower bound until the collector reads them",
            "batch cost differs between the batch ledger ($1.13) and the analytics usage report "
            "($1.50); the ledger is shown. Batches still unread, archived or ending near the "
            "window edge explain small gaps",
            BILLED_NOTE,
            "cost drift 2026-11-16 claude-sonnet-4-6 standard: computed $3.01, billed $2.90 "
            "(+3.7%)",
        ],
    }


def test_windows_are_half_open_and_a_partial_day_has_no_billed_cost(session: Session) -> None:
    window_rows(session, DAY0)
    # [02:00, 05:00): two usage hours; b1 ends at 05:00, so it is not in yet nor in progress.
    before = build_summary(session, DAY0 + 2 * H, DAY0 + 5 * H, NOW).to_json()
    assert (before["realtime_cost_usd"], before["batch_cost_usd"]) == ("2.34", "0.00")
    assert (before["batches_ended"], before["batches_in_progress"]) == (0, 0)
    assert before["billed_cost_usd"] is None and before["cost_drift_ratio"] is None
    assert before["sources"]["billed"] is None
    assert before["notes"] == [
        "no cost report covers a whole UTC day of this window: billed cost unknown"
    ]
    # [05:00, 06:00): b1 ended at 05:00 and counts; the report's batch row at 06:00 does not,
    # and no usage row at all means real-time spend is unknown, not $0.
    at_five = build_summary(session, DAY0 + 5 * H, DAY0 + 6 * H, NOW).to_json()
    assert (at_five["realtime_cost_usd"], at_five["batch_cost_usd"]) == (None, "1.01")
    assert at_five["total_cost_usd"] == "1.01" and at_five["batch_share_requests"] is None
    assert at_five["batches_ended"] == 1 and at_five["batch_turnaround_p95_seconds"] == 3600.0
    assert not any("differs" in n for n in at_five["notes"])
    # In progress is counted at the window's end: run was created at 22:00, late at 23:00.
    half_past = 30 * timedelta(minutes=1)
    assert build_summary(session, DAY0, DAY0 + 22 * H + half_past, NOW).batches_in_progress == 1
    assert build_summary(session, DAY0, DAY0 + 23 * H + half_past, NOW).batches_in_progress == 2


def test_printed_total_is_made_of_the_printed_parts() -> None:
    assert printed_total(D("1.005"), D("1.005")) == D("2.02")  # exact 2.010 prints 2.01
    assert printed_total(D("0.004"), D("0.004")) == D("0.00")  # exact 0.008 prints 0.01
    assert printed_total(D("3.345"), None) == D("3.35")
    assert printed_total(None, D("0.125")) == D("0.13")
    assert printed_total(None, None) is None
    assert printed_total(D("12.344999999999"), D("0.005")) == D("12.35")


def test_workspace_filter_narrows_every_figure(session: Session) -> None:
    window_rows(session, DAY0)
    data = build_summary(session, DAY0, DAY0 + DAY, NOW, workspace="wrkspc_b").to_json()
    assert data == {
        "since": "2026-11-16T00:00:00Z",
        "until": "2026-11-17T00:00:00Z",
        "workspace": "wrkspc_b",
        "realtime_cost_usd": "0.34",
        "batch_cost_usd": "0.12",
        "total_cost_usd": "0.46",
        "batch_share_requests": 0.625,  # 50 / (50 + 30)
        "batch_share_spend": float(D("0.12") / D("0.458")),
        "savings_usd": "0.12",
        "batches_ended": 1,
        "batches_results_unread": 0,
        "batch_failure_rate": 0.0,
        "batch_expired_rate": 0.0,
        "batch_turnaround_p50_seconds": 7200.0,
        "batch_turnaround_p95_seconds": 7200.0,
        "batches_in_progress": 1,
        "billed_cost_usd": "0.34",
        "cost_drift_ratio": 0.0,
        "by_model": [_money_row("model", HAIKU, "0.34", "0.12", "0.46", "0.12")],
        "by_workspace": [_money_row("workspace", "wrkspc_b", "0.34", "0.12", "0.46", "0.12")],
        "sources": SOURCES,
        # Workspace b has no unread batch and no batch row in the usage report.
        "notes": [BILLED_NOTE],
    }
    other = build_summary(session, DAY0, DAY0 + DAY, NOW, workspace="wrkspc_a").to_json()
    assert (other["realtime_cost_usd"], other["batch_cost_usd"]) == ("3.01", "1.01")
    assert other["batches_results_unread"] == 1 and other["batches_in_progress"] == 1
    assert other["billed_cost_usd"] == "4.40"  # 2.90 + 1.50
    nobody = build_summary(session, DAY0, DAY0 + DAY, NOW, workspace="wrkspc_none").to_json()
    assert (nobody["realtime_cost_usd"], nobody["batch_cost_usd"]) == ("0.00", "0.00")
    assert nobody["by_model"] == nobody["by_workspace"] == []


def test_window_figures_are_the_summarys_headline(session: Session) -> None:
    window_rows(session, DAY0)
    summary = build_summary(session, DAY0, DAY0 + DAY, NOW)
    quick = window_figures(session, DAY0, DAY0 + DAY)
    assert quick.batches == summary.batches
    assert quick.drift == summary.drift
    assert quick.billed_cost_usd == summary.billed_cost_usd == D("4.738")
    assert quick.cost_drift_ratio == summary.cost_drift_ratio
    # Without the cross-check, the ledger is not compared with the usage report's batch rows.
    assert replace(quick.spend, notes=()) == replace(summary.spend, notes=())
    assert len(quick.spend.notes) == 1 and "not read yet" in quick.spend.notes[0]
    assert window_figures(session, DAY0, DAY0 + DAY, cross_check=True).spend == summary.spend
    b = window_figures(session, DAY0, DAY0 + DAY, workspace="wrkspc_b")
    assert (b.spend.realtime_cost_usd, b.spend.batch_cost_usd) == (D("0.338"), D("0.12"))
    assert b.batches.batches_ended == 1 and b.billed_cost_usd == D("0.338")


# --- notes ------------------------------------------------------------------------------------


def test_archived_unread_results_make_batch_money_a_lower_bound(session: Session) -> None:
    add_usage(session, DAY0 + H, cost="1.00", requests=10)
    add_ended_batch(session, "read", DAY0 + 2 * H, "2.00", requests=30)
    add_ended_batch(session, "gone", DAY0 + 3 * H, "0", requests=10, results="unavailable")
    add_ended_batch(session, "failed", DAY0 + 4 * H, "0", requests=60, results="failed")
    session.commit()
    summary = build_summary(session, DAY0 + H, DAY0 + 5 * H, NOW)
    data = summary.to_json()
    assert data["batch_cost_usd"] == "2.00"  # never a guess for the unread ones
    assert data["batches_ended"] == 3 and data["batches_results_unread"] == 2
    assert summary.batches.batches_without_token_data == 1
    assert summary.spend.batch_unread_share == 70 / 100
    assert data["notes"][:2] == [
        "1 ended batch(es) have results not read yet (70 % of the window's batch requests): "
        "batch spend and savings are a lower bound until the collector reads them",
        "1 ended batch(es) were archived before their results were read: their cost is "
        "unknown and not included, so batch spend and savings are a lower bound",
    ]


def test_ledger_and_usage_report_equal_to_the_cent_give_no_note(session: Session) -> None:
    add_ended_batch(session, "b", DAY0 + 2 * H, "1.0049")
    add_usage(session, DAY0 + H, cost="1.00", product="message_batches_api", tier="batch")
    add_usage(session, DAY0 + H, cost="5.00", requests=5)
    session.commit()
    data = build_summary(session, DAY0 + H, DAY0 + 3 * H, NOW).to_json()
    assert (data["batch_cost_usd"], data["realtime_cost_usd"]) == ("1.00", "5.00")
    assert not any("differs" in n for n in data["notes"]), data["notes"]
    # A cent apart is a difference worth saying.
    add_usage(session, DAY0 + 2 * H, cost="0.01", product="message_batches_api", tier="batch")
    session.commit()
    data = build_summary(session, DAY0 + H, DAY0 + 3 * H, NOW).to_json()
    assert data["notes"][0] == (
        "batch cost differs between the batch ledger ($1.00) and the analytics usage report "
        "($1.01); the ledger is shown. Batches still unread, archived or ending near the "
        "window edge explain small gaps"
    )


def test_without_a_ledger_or_a_usage_report_the_other_sources_are_read(session: Session) -> None:
    # No batch was ever recorded: the batch side is the usage report's batch rows.
    add_usage_hour(
        session, DAY0 + H, "2.5", product="message_batches_api", tier="batch", requests=40
    )
    add_usage_hour(session, DAY0 + H, "1.25", requests=10)
    session.commit()
    data = build_summary(session, DAY0, DAY0 + 6 * H, NOW).to_json()
    assert (data["batch_cost_usd"], data["savings_usd"], data["total_cost_usd"]) == (
        "2.50",
        "2.50",  # standard 5.00 - 2.50
        "3.75",
    )
    assert data["batch_share_requests"] == 0.8 and data["batches_ended"] == 0
    assert data["sources"]["batch"] == "analytics usage report (billed request counts)"
    # No usage report at all: real-time spend is what the call logs saw, organisation-wide only.
    session.execute(delete(UsageBucket))
    session.add(
        CallBucket(hour=DAY0 + 2 * H, workload="chat", model=SONNET, calls=7, cost_usd=D("0.705"))
    )
    session.commit()
    data = build_summary(session, DAY0, DAY0 + 6 * H, NOW).to_json()
    assert (data["realtime_cost_usd"], data["batch_cost_usd"]) == ("0.71", None)
    assert data["sources"]["realtime"] == "application call logs"
    assert data["sources"]["usage_report"] is None and "batch" not in data["sources"]
    assert data["by_model"] == [_money_row("model", SONNET, "0.71", None, "0.71", None)]
    scoped = build_summary(session, DAY0, DAY0 + 6 * H, NOW, workspace="wrkspc_a").to_json()
    assert scoped["realtime_cost_usd"] is None and scoped["total_cost_usd"] is None


# --- recorded workspaces ----------------------------------------------------------------------


def test_recorded_workspaces_include_rolled_up_days_after_their_rows_are_gone(
    session: Session,
) -> None:
    assert recorded_workspaces(session) == set()
    window_rows(session, DAY0)
    add_usage(session, DAY0 - 3 * DAY, cost="1", workspace="wrkspc_old")
    add_billed(session, DAY0 - 3 * DAY, "1")  # the organisation's line: no workspace
    rollups.mark_dirty(session, [DAY0 - 3 * DAY], NOW)
    session.commit()
    assert recorded_workspaces(session) == {"wrkspc_a", "wrkspc_b", "wrkspc_old"}
    rollups.refresh(session, NOW)
    session.execute(delete(UsageBucket).where(col(UsageBucket.workspace_id) == "wrkspc_old"))
    session.commit()
    assert recorded_workspaces(session) == {"wrkspc_a", "wrkspc_b", "wrkspc_old"}


# --- list_batches and BatchRow ------------------------------------------------------------------


def test_list_batches_newest_first_with_their_models(session: Session) -> None:
    window_rows(session, DAY0)
    # b1 also ran Haiku requests: its models are both, sorted.
    session.add(BatchUsage(batch_id="wrkspc_a_b1", model=HAIKU, requests=0))
    session.commit()
    rows = list_batches(session)
    assert [r.batch.id for r in rows] == [
        "wrkspc_a_late",  # created 23:00
        "wrkspc_b_run",  # 22:00
        "wrkspc_a_b3",  # 19:30
        "wrkspc_b_b2",  # 08:00
        "wrkspc_a_b1",  # 04:00
        "wrkspc_a_before",  # 21:30 the day before
    ]
    by_id = {r.batch.id: r for r in rows}
    assert by_id["wrkspc_a_b1"].to_json() == {
        "id": "wrkspc_a_b1",
        "workspace": "wrkspc_a",
        "workload": "nightly",
        "status": "ended",
        "archived": False,
        "requests": 100,
        "succeeded": 97,
        "errored": 2,
        "canceled": 0,
        "expired": 1,
        "processing": 0,
        "created_at": "2026-11-16T04:00:00Z",
        "ended_at": "2026-11-16T05:00:00Z",
        "turnaround_seconds": 3600.0,
        "failure_rate": 0.03,
        "input_tokens": 0,
        "output_tokens": 0,
        "cache_read_tokens": 0,
        "cache_write_5m_tokens": 0,
        "cache_write_1h_tokens": 0,
        "cost_usd": "1.01",  # 1.005
        "standard_cost_usd": "2.01",
        "savings_usd": "1.01",  # 2.010 - 1.005
        "models": [HAIKU, SONNET],
        "results": "ingested",
    }
    running = by_id["wrkspc_b_run"].to_json()
    assert (running["status"], running["ended_at"], running["processing"]) == (
        "in_progress",
        None,
        100,
    )
    assert running["turnaround_seconds"] is running["failure_rate"] is None
    assert running["cost_usd"] is running["savings_usd"] is None and running["models"] == []
    unread = by_id["wrkspc_a_b3"].to_json()
    assert (unread["results"], unread["cost_usd"], unread["models"]) == ("pending", None, [])
    assert unread["turnaround_seconds"] == 1800.0

    # Filters: created in [since, until), and the status; the models follow the same filter.
    day = list_batches(session, since=DAY0, until=DAY0 + 22 * H)
    assert [r.batch.id for r in day] == ["wrkspc_a_b3", "wrkspc_b_b2", "wrkspc_a_b1"]
    assert [r.models for r in day] == [(), (HAIKU,), (HAIKU, SONNET)]
    assert [r.batch.id for r in list_batches(session, status="in_progress")] == ["wrkspc_b_run"]
    ended = list_batches(session, since=DAY0 + 22 * H, status="ended")
    assert [r.batch.id for r in ended] == ["wrkspc_a_late"]
    assert ended[0].models == (SONNET,)


# --- rollups: the same window from clean days and from raw rows -------------------------------

ROLLUP_WINDOWS = [
    (HISTORY_T0 + 5 * H, HISTORY_T0 + 4 * DAY + 2 * H),  # ragged ends, rolled days inside
    (HISTORY_T0, HISTORY_NOW),
    (HISTORY_T0 + DAY, HISTORY_T0 + 3 * DAY),
    (HISTORY_T0 + DAY + 19 * H, HISTORY_T0 + DAY + 21 * H),
]
DIRTY = HISTORY_T0 + 2 * DAY


def _read(session: Session) -> list[tuple[Any, ...]]:
    """Every window's figures and JSON, organisation-wide and for two workspaces."""
    out: list[tuple[Any, ...]] = []
    for lo, hi in ROLLUP_WINDOWS:
        for ws in (None, "wrkspc_x", "wrkspc_y"):
            out.append(
                (
                    window_figures(session, lo, hi, workspace=ws, cross_check=True),
                    build_summary(session, lo, hi, HISTORY_NOW, workspace=ws).to_json(),
                )
            )
    return out


def _dirty_all(session: Session) -> None:
    rollups.mark_dirty(session, [HISTORY_T0 + d * DAY for d in range(6)], HISTORY_NOW)
    session.commit()


def test_rolled_up_days_give_exactly_the_raw_figures(session: Session) -> None:
    add_history(session)
    # Every kind of batch and usage on the first whole day, in workspaces of their own.
    window_rows(session, HISTORY_T0 + DAY, a="wrkspc_x", b="wrkspc_y")
    _dirty_all(session)
    raw = _read(session)
    lo, hi = ROLLUP_WINDOWS[0]
    assert not any(p.daily for p in window_parts(session, lo, hi))

    rollups.refresh(session, HISTORY_NOW)
    assert [(p.since, p.until, p.daily) for p in window_parts(session, lo, hi)] == [
        (lo, HISTORY_T0 + DAY, False),
        (HISTORY_T0 + DAY, HISTORY_T0 + 4 * DAY, True),
        (HISTORY_T0 + 4 * DAY, hi, False),
    ]
    assert _read(session) == raw

    # A late revision lands in a clean day: that day is read raw, the others from rollups.
    add_usage(session, DIRTY + 3 * H, cost="10.015", requests=5, workspace="wrkspc_x")
    add_ended_batch(session, "late_one", DIRTY + 4 * H, "0.335", workspace="wrkspc_y")
    rollups.mark_dirty(session, [DIRTY + 3 * H], HISTORY_NOW)
    session.commit()
    assert window_parts(session, lo, hi) == [
        Part(lo, HISTORY_T0 + DAY, False),
        Part(HISTORY_T0 + DAY, DIRTY, True),
        Part(DIRTY, DIRTY + DAY, False),
        Part(DIRTY + DAY, HISTORY_T0 + 4 * DAY, True),
        Part(HISTORY_T0 + 4 * DAY, hi, False),
    ]
    mixed = _read(session)
    assert mixed != raw  # the late rows are counted
    _dirty_all(session)
    assert _read(session) == mixed  # the same rows read raw only
    rollups.refresh(session, HISTORY_NOW)
    assert _read(session) == mixed
    # Sanity: the windows hold every kind of figure the rollups must carry.
    figures, data = mixed[0]
    assert figures.batches.results_unread == 1 and figures.batches.errored == 2
    assert figures.batches.expired == 1 and data["batches_in_progress"] == 1  # y_run
    assert data["billed_cost_usd"] is not None and len(data["notes"]) >= 3


# --- billed cost: whole UTC days only -----------------------------------------------------------


def test_a_window_ending_mid_day_bills_only_its_whole_days(session: Session) -> None:
    window_rows(session, DAY0)
    # [DAY0, DAY0 + 1d + 2h): one whole day, DAY0, billed 4.738; the next day's bill (60.00)
    # covers 24 hours of which the window holds 2 (usage 200 at midnight).
    summary = build_summary(session, DAY0, DAY0 + DAY + 2 * H, NOW)
    assert summary.spend.realtime_cost_usd == D("203.345")  # the 2 hours do count as spend
    assert summary.billed_cost_usd == D("4.738")
    assert [r.day for r in summary.drift] == [DAY0, DAY0, DAY0]
    # [DAY0 + 12h, DAY0 + 1d + 2h): no whole day at all.
    ragged = build_summary(session, DAY0 + 12 * H, DAY0 + DAY + 2 * H, NOW).to_json()
    assert ragged["billed_cost_usd"] is None and ragged["cost_drift_ratio"] is None
