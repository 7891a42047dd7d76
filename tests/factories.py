"""Row and rule builders shared by the store tests: each inserts real rows the collectors would.

Two families:

- one-row builders (``add_batch``, ``add_usage``, ``add_billed``, ``add_run``) and rule helpers
  (``rule``, ``measured``), as the rules and alerts tests use them: the minimum columns, every
  amount given as a decimal string;
- the rollups history (``add_history`` and its ``add_usage_hour`` / ``add_ended_batch``): five
  days and seven hours of hourly usage, batches with their per-model usage, billed days and
  call-log hours from ``HISTORY_T0`` to ``HISTORY_NOW``, with amounts that do not round evenly.

Nothing here commits except ``add_history``; the caller commits.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlmodel import Session

from monitor import rollups
from monitor.config import AlertingSection, Settings
from monitor.models import Batch, BatchUsage, CallBucket, CollectRun, CostBucket, UsageBucket
from monitor.rulekinds import Rule, validate_rule_entries
from monitor.rules import load_rules
from tests.conftest import utc

H = timedelta(hours=1)
DAY = timedelta(days=1)
# Where the rule helpers say their entries come from (in configuration error messages).
RULES_WHERE = "monitor.toml [[rules]]"


# --- one row each --------------------------------------------------------------------------


def add_batch(
    session: Session,
    bid: str,
    *,
    created: datetime,
    ended: datetime | None = None,
    requests: int = 100,
    errored: int = 0,
    expired: int = 0,
    workspace: str = "wrkspc_a",
    workload: str | None = None,
    expires: datetime | None = None,
    cost: str | None = None,
) -> None:
    """Insert one batch (ended, its results read, when ``ended`` is given; else in progress).

    No ``batch_usage`` rows: the batch's money is ``cost`` (None: not priced).
    """
    session.add(
        Batch(
            id=bid,
            workspace_id=workspace,
            workload=workload,
            processing_status="ended" if ended else "in_progress",
            created_at=created,
            ended_at=ended,
            expires_at=expires,
            requests=requests,
            succeeded=requests - errored - expired if ended else 0,
            processing=0 if ended else requests,
            errored=errored,
            expired=expired,
            turnaround_seconds=(ended - created).total_seconds() if ended else None,
            cost_usd=Decimal(cost) if cost is not None else None,
            results_state="ingested" if ended else "pending",
            first_seen_at=created,
            updated_at=ended or created,
        )
    )


def add_usage(
    session: Session,
    start: datetime,
    *,
    cost: str,
    requests: int | None = None,
    product: str = "messages_api",
    tier: str = "standard",
    workspace: str = "wrkspc_a",
    model: str = "claude-sonnet-4-6",
) -> None:
    """Insert one hourly analytics usage bucket starting at ``start`` (no token counts)."""
    session.add(
        UsageBucket(
            bucket_start=start,
            bucket_end=start + H,
            width="1h",
            source="analytics",
            product=product,
            model=model,
            service_tier=tier,
            workspace_id=workspace,
            requests=requests,
            cost_usd=Decimal(cost),
            fetched_at=start + H,
        )
    )


def add_billed(
    session: Session,
    day: datetime,
    amount: str,
    *,
    model: str = "claude-sonnet-4-6",
    tier: str = "standard",
    workspace: str = "",
) -> None:
    """Insert one line of the analytics cost report (token cost) for the UTC day ``day``."""
    session.add(
        CostBucket(
            day=day,
            source="analytics",
            workspace_id=workspace,
            model=model,
            service_tier=tier,
            cost_type="tokens",
            amount_usd=Decimal(amount),
            fetched_at=day + timedelta(days=1),
        )
    )


def add_run(
    session: Session, source: str, started: datetime, finished: datetime, status: str = "ok"
) -> None:
    """Insert one collection run of ``source``."""
    session.add(CollectRun(source=source, started_at=started, finished_at=finished, status=status))


# --- rules ---------------------------------------------------------------------------------


def rule(kind: str, threshold: Any, **kw: Any) -> Rule:
    """Build a rule the way the config does (durations as strings), checked as the config is."""
    # Named apart from the defaults, so nothing is inherited from them.
    entry = {"name": kw.pop("name", f"t_{kind}"), "kind": kind, "threshold": threshold, **kw}
    assert validate_rule_entries([entry], RULES_WHERE) == []
    [built] = load_rules(Settings(rules=(entry,), alerting=AlertingSection(default_rules=False)))
    return built


def measured(evaluations: list[Any]) -> list[tuple[dict[str, str], float | None, bool | None]]:
    """Return ``(scope, value, condition)`` per evaluation of a rule."""
    return [(dict(e.scope), e.value, e.condition) for e in evaluations]


# --- the rollups history -------------------------------------------------------------------

HISTORY_T0 = utc(2026, 11, 10)
HISTORY_NOW = HISTORY_T0 + 5 * DAY + 7 * H


def add_usage_hour(
    session: Session,
    start: datetime,
    cost: str,
    *,
    product: str = "messages_api",
    tier: str = "standard",
    workspace: str = "wrkspc_a",
    model: str = "claude-sonnet-4-6",
    requests: int | None = 10,
    tokens: int = 1000,
) -> None:
    """Insert one final hourly analytics bucket with tokens and its standard-price cost.

    ``tokens`` input tokens, a tenth as many output and half as many cache reads; the
    standard cost is twice ``cost`` on the batch tier, ``cost`` otherwise.
    """
    session.add(
        UsageBucket(
            bucket_start=start,
            bucket_end=start + H,
            width="1h",
            source="analytics",
            product=product,
            model=model,
            service_tier=tier,
            workspace_id=workspace,
            requests=requests,
            input_tokens=tokens,
            output_tokens=tokens // 10,
            cache_read_tokens=tokens // 2,
            cost_usd=Decimal(cost),
            standard_cost_usd=Decimal(cost) * (2 if tier == "batch" else 1),
            final=True,
            fetched_at=start + H,
        )
    )


def add_ended_batch(session: Session, bid: str, ended: datetime, cost: str, **kw: Any) -> None:
    """Insert one ended batch and, when its results were read, its ``batch_usage`` row (flushes).

    Keywords: ``minutes`` of turnaround (30), ``requests`` (100), ``errored`` (0), ``expired``
    (0), ``workspace`` ("wrkspc_a"), ``workload`` ("nightly"), ``model`` of its usage row
    ("claude-sonnet-4-6"), ``results`` ("ingested"; "pending", "failed" or "unavailable" store
    no cost and no usage row, as the collector does before or without reading the results;
    "unavailable" is archived when it ends). The standard cost is twice ``cost``.
    """
    created = ended - timedelta(minutes=kw.pop("minutes", 30))
    requests = kw.pop("requests", 100)
    errored = kw.pop("errored", 0)
    expired = kw.pop("expired", 0)
    model = kw.pop("model", "claude-sonnet-4-6")
    results = kw.pop("results", "ingested")
    read = results == "ingested"
    workspace, workload = kw.pop("workspace", "wrkspc_a"), kw.pop("workload", "nightly")
    assert not kw, f"unknown keywords {sorted(kw)}"
    session.add(
        Batch(
            id=bid,
            workspace_id=workspace,
            workload=workload,
            processing_status="ended",
            created_at=created,
            ended_at=ended,
            archived_at=ended if results == "unavailable" else None,
            requests=requests,
            succeeded=requests - errored - expired,
            errored=errored,
            expired=expired,
            turnaround_seconds=(ended - created).total_seconds(),
            cost_usd=Decimal(cost) if read else None,
            standard_cost_usd=Decimal(cost) * 2 if read else None,
            results_state=results,
            first_seen_at=created,
            updated_at=ended,
        )
    )
    session.flush()
    if not read:
        return
    session.add(
        BatchUsage(
            batch_id=bid,
            model=model,
            requests=requests - errored - expired,
            input_tokens=5000,
            output_tokens=500,
            cost_usd=Decimal(cost),
            standard_cost_usd=Decimal(cost) * 2,
        )
    )


def add_history(session: Session) -> None:
    """Five days of hourly usage, batches, billed days and calls, with awkward amounts.

    Every hour from ``HISTORY_T0`` to ``HISTORY_NOW``: real-time usage of wrkspc_a
    (``1 + h % 7`` dollars and a trillionth) and wrkspc_b (0.333333333333 on Haiku); every fifth
    hour a batch-tier usage row of 2.5; every sixth an ended batch of 1.005. Billed 95.10 a day
    for the first five days, one call-log hour, and every day marked dirty (not rolled up).
    Commits.
    """
    for h in range(5 * 24 + 7):
        start = HISTORY_T0 + h * H
        add_usage_hour(session, start, f"{1 + h % 7}.000000000001")
        add_usage_hour(
            session, start, "0.333333333333", workspace="wrkspc_b", model="claude-haiku-4-5"
        )
        if h % 5 == 0:
            add_usage_hour(session, start, "2.5", product="message_batches_api", tier="batch")
        if h % 6 == 0:
            add_ended_batch(
                session, f"msgbatch_{h:04d}", start + 17 * timedelta(minutes=1), "1.005"
            )
    for d in range(5):
        session.add(
            CostBucket(
                day=HISTORY_T0 + d * DAY,
                source="analytics",
                model="claude-sonnet-4-6",
                service_tier="standard",
                cost_type="tokens",
                amount_usd=Decimal("95.10"),
                fetched_at=HISTORY_NOW,
            )
        )
    session.add(
        CallBucket(
            hour=HISTORY_T0 + 3 * H,
            workload="chat",
            model="claude-sonnet-4-6",
            calls=4,
            cost_usd=Decimal("0.4"),
        )
    )
    rollups.mark_dirty(session, [HISTORY_T0 + d * DAY for d in range(6)], HISTORY_NOW)
    session.commit()
