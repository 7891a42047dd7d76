"""Rules: what to measure and when it is a problem.

A rule is a ``[[rules]]`` entry in ``monitor.toml`` (or one of the defaults below). Each *kind*
measures one figure through ``monitor.summary`` (so alerts, /metrics and reports agree) and
compares it with the rule's threshold. ``evaluate(rule, session, now)`` returns one
``Evaluation`` per label set: the value, the threshold, whether the condition holds (``True``,
``False``, or ``None`` for no data) and a sentence saying why. Deciding what to *do* about an
evaluation (pending, firing, messages) is ``alerts.py``'s job.

Defaults are active unless ``[alerting] default_rules = false``. A ``[[rules]]`` entry named like
a default replaces every default of that name; the keys it leaves out are taken from the default
of the same name (and severity, when it gives one), so ``name = "batch_failure_rate"`` with
``threshold = 0.01`` is a complete rule.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import Select, func, select, union
from sqlmodel import Session, col

from monitor import fmt
from monitor.config import ConfigError, parse_duration
from monitor.models import Batch, CollectRun, UsageBucket

if TYPE_CHECKING:
    from monitor.config import Settings

SEVERITIES = ("info", "warning", "critical")
NO_DATA_MODES = ("ok", "firing")
# Labels that say *where* an alert applies; user labels may not reuse them (or rule/severity).
SCOPE_KEYS = ("workspace", "workload", "model", "source")
RESERVED_LABELS = frozenset({"rule", "severity", *SCOPE_KEYS})
ANNOTATION_KEYS = ("summary", "description", "action", "runbook_url", "dashboard_url")
ENTRY_KEYS = frozenset(
    {
        "name",
        "kind",
        "threshold",
        "window",
        "severity",
        "for",
        "keep_firing_for",
        "repeat_interval",
        "send_resolved",
        "group_by",
        "filters",
        "enabled",
        "labels",
        "annotations",
        "no_data",
        "basis",
    }
)
# Batches expire 24 hours after creation (Message Batches API docs: "Batch expiration").
BATCH_LIFE = timedelta(hours=24)
UNASSIGNED = "unassigned"
_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,127}$")


@dataclass(frozen=True)
class Rule:
    """One configured rule (validated)."""

    name: str
    kind: str
    threshold: float
    severity: str = "warning"
    window: timedelta = timedelta(hours=24)
    for_: timedelta = timedelta(0)
    keep_firing_for: timedelta = timedelta(0)
    # Zero means "never remind".
    repeat_interval: timedelta = timedelta(hours=4)
    send_resolved: bool = True
    group_by: tuple[str, ...] = ()
    filters: Mapping[str, str] = field(default_factory=dict)
    enabled: bool = True
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    no_data: str = "ok"
    basis: str = "requests"


@dataclass(frozen=True)
class Evaluation:
    """One label set of one rule, measured once.

    ``condition`` is ``True`` (the problem is there), ``False`` (it is not) or ``None`` (too
    little data to say; the alert does not fire unless the rule has ``no_data = "firing"``).
    """

    rule: Rule
    scope: Mapping[str, str]
    value: float | None
    condition: bool | None
    reason: str
    value_text: str = ""

    @property
    def labels(self) -> dict[str, str]:
        """Return the alert's label set: rule, severity, the rule's labels and the scope."""
        return {
            "rule": self.rule.name,
            "severity": self.rule.severity,
            **dict(self.rule.labels),
            **dict(self.scope),
        }

    @property
    def threshold(self) -> float:
        """Return the rule's threshold (in the kind's unit)."""
        return self.rule.threshold

    @property
    def fingerprint(self) -> str:
        """Return the alert's identity: a hash of its label set."""
        return fingerprint(self.labels)

    @property
    def state_word(self) -> str:
        """Return ``true``, ``false`` or ``no-data``."""
        return "no-data" if self.condition is None else str(self.condition).lower()

    def annotations(self) -> dict[str, str]:
        """Return the display text a notifier needs (summary, value, threshold, links)."""
        kind = KINDS[self.rule.kind]
        notes = {
            "summary": kind.summary,
            "action": kind.action,
            "value": self.value_text,
            "threshold": f"{kind.op} {kind.fmt(self.rule.threshold)}",
            "window": fmt.span(self.rule.window) if kind.windowed else "",
            "kind": self.rule.kind,
        }
        notes.update({k: v for k, v in self.rule.annotations.items() if v})
        return {k: v for k, v in notes.items() if v}


def fingerprint(labels: Mapping[str, str]) -> str:
    """Hash a label set (order does not matter) into a 64-character hex identity."""
    return hashlib.sha256(orjson.dumps(dict(labels), option=orjson.OPT_SORT_KEYS)).hexdigest()


# --- formatting ---------------------------------------------------------------------------


def fmt_life(value: float) -> str:
    """Format a fraction of a batch's 24 h life ("50 % (12h)")."""
    return f"{fmt.percent(value)} ({fmt.seconds(value * BATCH_LIFE.total_seconds())})"


# --- kinds --------------------------------------------------------------------------------


@dataclass
class Context:
    """What a measurement reads: the session, the moment, the settings, and a memo.

    The memo lives for one evaluation round, so rules over the same window (the two batch-share
    defaults, the two turnaround severities) compute their figures once.
    """

    session: Session
    now: datetime
    settings: Settings | None = None
    memo: dict[tuple[Any, ...], Any] = field(default_factory=dict)

    def figures(self, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        """Return ``fn(session, *args, **kw)``, computed once per round."""
        key = (
            fn.__module__,
            fn.__name__,
            tuple(_memo_key(a) for a in args),
            tuple((k, _memo_key(v)) for k, v in sorted(kw.items())),
        )
        if key not in self.memo:
            self.memo[key] = fn(self.session, *args, **kw)
        return self.memo[key]


def _memo_key(value: Any) -> Any:
    # Settings hold lists (unhashable); within one round the same object means the same value.
    try:
        hash(value)
    except TypeError:
        return ("object", id(value))
    return value


Measure = Callable[[Rule, Context], list[Evaluation]]


@dataclass(frozen=True)
class Kind:
    """What a rule kind measures, how its threshold reads, and what it can be split by."""

    name: str
    op: str  # how the value must compare with the threshold for the condition to hold
    unit: str  # ratio | seconds | life | usd
    low: float  # threshold range
    high: float | None
    low_inclusive: bool
    group_by: frozenset[str]
    filters: frozenset[str]
    max_group_by: int
    windowed: bool
    summary: str
    action: str
    measure: Measure

    def fmt(self, value: float) -> str:
        """Format a value or threshold in this kind's unit."""
        return {
            "ratio": fmt.percent,
            "seconds": fmt.seconds,
            "life": fmt_life,
            "usd": fmt.usd,
        }[self.unit](value)

    def holds(self, value: float | Decimal, threshold: float) -> bool:
        """Return whether ``value`` is on the wrong side of ``threshold``."""
        limit: float | Decimal = threshold
        if isinstance(value, Decimal):
            limit = Decimal(str(threshold))  # compare money exactly
        if self.op == "<":
            return value < limit
        if self.op == ">":
            return value > limit
        return value >= limit

    @property
    def words(self) -> str:
        """Return the comparison in words ("above")."""
        return {"<": "below", ">": "above", ">=": "at or above"}[self.op]


def _judge(
    rule: Rule,
    scope: Mapping[str, str],
    value: float | Decimal | None,
    measure: str,
    detail: str,
    *,
    no_data: str = "",
) -> Evaluation:
    """Compare ``value`` with the rule's threshold and explain the result in one sentence."""
    kind = KINDS[rule.kind]
    window = f" over {fmt.span(rule.window)}" if kind.windowed else ""
    if value is None:
        return Evaluation(rule, dict(scope), None, None, f"no data: {no_data or detail}")
    holds = kind.holds(value, rule.threshold)
    text = kind.fmt(float(value))
    verdict = "is" if holds else "is not"
    reason = f"{measure} {text} {verdict} {kind.words} {kind.fmt(rule.threshold)}{window}" + (
        f" ({detail})" if detail else ""
    )
    return Evaluation(rule, dict(scope), float(value), holds, reason, text)


def _window(rule: Rule, now: datetime) -> tuple[datetime, datetime]:
    return now - rule.window, now


def _workspaces(session: Session, since: datetime, until: datetime) -> list[str]:
    """Return the workspaces with usage or ended batches in the window."""
    usage: Select[tuple[str]] = select(col(UsageBucket.workspace_id).label("w")).where(
        col(UsageBucket.bucket_start) >= since, col(UsageBucket.bucket_start) < until
    )
    batches: Select[tuple[str]] = select(col(Batch.workspace_id).label("w")).where(
        col(Batch.ended_at) >= since, col(Batch.ended_at) < until
    )
    rows = session.execute(union(usage, batches))
    return sorted({r[0] for r in rows})


def _batch_share(rule: Rule, ctx: Context) -> list[Evaluation]:
    from monitor.summary import spend_figures

    since, until = _window(rule, ctx.now)
    if "workspace" in rule.group_by:
        scopes = [{"workspace": w} for w in ctx.figures(_workspaces, since, until)]
    else:
        scopes = [dict(rule.filters)]
    out = []
    for scope in scopes:
        fig = ctx.figures(
            spend_figures, since, until, workspace=scope.get("workspace"), cross_check=False
        )
        if rule.basis == "spend":
            value = fig.batch_share_spend
            detail = (
                f"batch {fmt.usd(fig.batch_cost_usd)} of {fmt.usd(fig.total_cost_usd)}"
                if fig.batch_cost_usd is not None and fig.total_cost_usd is not None
                else ""
            )
            missing = "no real-time and batch spend recorded in the window"
        else:
            value = fig.batch_share_requests
            total = (fig.batch_requests or 0) + (fig.realtime_requests or 0)
            detail = f"{fig.batch_requests or 0:,} batch of {total:,} requests"
            missing = (
                "no requests recorded in the window"
                if total == 0
                else "request counts are unknown (the legacy usage report has none)"
            )
        out.append(
            _judge(
                rule,
                scope,
                value,
                f"batch share of {rule.basis}",
                detail,
                no_data=f"{missing} ({fmt.span(rule.window)})",
            )
        )
    return out or [_judge(rule, rule.filters, None, "", "", no_data="no workspace has data")]


def _batch_groups(rule: Rule, ctx: Context, since: datetime, until: datetime) -> list[Any]:
    """Return ``(scope, BatchFigures)`` per group of ended batches the rule looks at."""
    from monitor.summary import batch_figures, batch_figures_by

    workspace, workload = rule.filters.get("workspace"), rule.filters.get("workload")
    if not rule.group_by:
        fig = ctx.figures(batch_figures, since, until, workspace=workspace, workload=workload)
        return [(dict(rule.filters), fig)]
    by = rule.group_by[0]
    groups = []
    for key, fig in ctx.figures(batch_figures_by, since, until, by).items():
        scope = {**rule.filters, by: key or UNASSIGNED}
        if rule.filters:
            if not key:
                # Unassigned batches cannot be selected by workload together with a filter.
                continue
            fig = ctx.figures(
                batch_figures,
                since,
                until,
                workspace=key if by == "workspace" else workspace,
                workload=key if by == "workload" else workload,
            )
            if fig.batches_ended == 0:
                continue
        groups.append((scope, fig))
    return groups


def _no_groups(rule: Rule, what: str) -> list[Evaluation]:
    window = fmt.span(rule.window)
    return [_judge(rule, rule.filters, None, "", "", no_data=f"{what} in the last {window}")]


def _turnaround(rule: Rule, ctx: Context) -> list[Evaluation]:
    since, until = _window(rule, ctx.now)
    out = []
    for scope, fig in _batch_groups(rule, ctx, since, until):
        window = fmt.span(rule.window)
        out.append(
            _judge(
                rule,
                scope,
                fig.turnaround_p95_seconds,
                "p95 batch turnaround",
                f"{fig.batches_ended:,} batches ended",
                no_data=f"no batch ended in the last {window}",
            )
        )
    return out or _no_groups(rule, "no batch ended")


def _failure_rate(rule: Rule, ctx: Context) -> list[Evaluation]:
    since, until = _window(rule, ctx.now)
    out = []
    for scope, fig in _batch_groups(rule, ctx, since, until):
        window = fmt.span(rule.window)
        out.append(
            _judge(
                rule,
                scope,
                fig.failure_rate,
                "batch failure rate",
                f"{fig.errored:,} errored + {fig.expired:,} expired of {fig.requests:,} "
                f"requests in {fig.batches_ended:,} batches",
                no_data=f"no batch request ended in the last {window}",
            )
        )
    return out or _no_groups(rule, "no batch request ended")


def _life_used(batch: Any) -> float:
    """Return the fraction of its life a batch has used (its own expiry, else 24 h)."""
    life = (batch.expires_at - batch.created_at) if batch.expires_at else BATCH_LIFE
    return float(batch.age_seconds / max(life.total_seconds(), 1.0))


def _expiry_risk(rule: Rule, ctx: Context) -> list[Evaluation]:
    from monitor.summary import in_progress

    batches = ctx.figures(in_progress, ctx.now, workspace=rule.filters.get("workspace"))
    if "workload" in rule.filters:
        batches = [b for b in batches if b.workload == rule.filters["workload"]]
    groups: dict[tuple[tuple[str, str], ...], list[Any]] = defaultdict(list)
    for b in batches:
        scope = dict(rule.filters)
        if "workspace" in rule.group_by:
            scope["workspace"] = b.workspace_id
        if "workload" in rule.group_by:
            scope["workload"] = b.workload or UNASSIGNED
        groups[tuple(sorted(scope.items()))].append(b)
    if not groups:
        return [Evaluation(rule, dict(rule.filters), None, False, "no batch in progress")]
    out = []
    for key, members in sorted(groups.items()):
        worst = max(members, key=_life_used)
        detail = (
            f"batch {worst.id} created {worst.created_at:%Y-%m-%d %H:%M} UTC, "
            f"{len(members)} in progress"
        )
        out.append(_judge(rule, dict(key), _life_used(worst), "oldest unended batch used", detail))
    return out


def _cost_drift(rule: Rule, ctx: Context) -> list[Evaluation]:
    from monitor.summary import daily_drift

    # Only whole UTC days are billed; today is still open, so the window ends at midnight.
    until = fmt.day_floor(ctx.now)
    days = max(1, math.ceil(rule.window / timedelta(days=1)))
    rows = ctx.figures(daily_drift, until - timedelta(days=days), until)
    model = rule.filters.get("model")
    sums: dict[tuple[str, datetime], list[Decimal]] = defaultdict(lambda: [Decimal(0), Decimal(0)])
    for r in rows:
        if model is not None and r.model != model:
            continue
        key = (r.model if "model" in rule.group_by else "", r.day)
        sums[key][0] += r.computed_usd
        sums[key][1] += r.billed_usd
    worst: dict[str, tuple[float, datetime, Decimal, Decimal]] = {}
    for (group, day), (computed, billed) in sums.items():
        if billed == 0:
            continue  # nothing billed (yet): no basis for a ratio
        drift = float(abs(computed - billed) / billed)
        if group not in worst or drift > worst[group][0]:
            worst[group] = (drift, day, computed, billed)
    if not worst:
        return _no_groups(rule, "no billed cost")
    out = []
    for group, (drift, day, computed, billed) in sorted(worst.items()):
        scope = dict(rule.filters)
        if "model" in rule.group_by:
            scope["model"] = group
        detail = f"worst day {day:%Y-%m-%d}: computed {fmt.usd(computed)}, billed {fmt.usd(billed)}"
        out.append(_judge(rule, scope, drift, "cost drift", detail))
    return out


def _spend_increase(rule: Rule, ctx: Context) -> list[Evaluation]:
    from monitor.summary import data_since, spend_figures

    since, until = _window(rule, ctx.now)
    before = since - rule.window
    if "workspace" in rule.group_by:
        scopes = [{"workspace": w} for w in ctx.figures(_workspaces, before, until)]
    else:
        scopes = [dict(rule.filters)]
    out = []
    window = fmt.span(rule.window)
    first = ctx.figures(data_since)
    if first is None or first > before + timedelta(hours=1):
        # The previous window is not fully recorded (the monitor started within it): its
        # smaller total would read as growth. Compare only once both windows are covered.
        covered = (
            "nothing recorded yet"
            if first is None
            else f"data only since {first:%Y-%m-%d %H:%M} UTC"
        )
        return [
            _judge(
                rule,
                dict(rule.filters),
                None,
                "",
                "",
                no_data=f"the {window} before the last {window} is not fully recorded ({covered})",
            )
        ]
    for scope in scopes:
        ws = scope.get("workspace")
        current = ctx.figures(
            spend_figures, since, until, workspace=ws, cross_check=False
        ).total_cost_usd
        previous = ctx.figures(
            spend_figures, before, since, workspace=ws, cross_check=False
        ).total_cost_usd
        if current is None or not previous:
            out.append(
                _judge(
                    rule,
                    scope,
                    None,
                    "",
                    "",
                    no_data=f"no spend recorded in the {window} before the last {window}",
                )
            )
            continue
        growth = float((current - previous) / previous)
        detail = f"{fmt.usd(current)} in the last {window} vs {fmt.usd(previous)} before"
        out.append(_judge(rule, scope, growth, "spend growth", detail))
    return out or _no_groups(rule, "no spend recorded")


def _batch_candidate(rule: Rule, ctx: Context) -> list[Evaluation]:
    try:
        from monitor.advisor import advise
    except ImportError:
        return [_judge(rule, rule.filters, None, "", "", no_data="the advisor is not available")]
    from monitor.config import Settings as _Settings

    recs = ctx.figures(advise, ctx.now, ctx.settings or _Settings(), window=rule.window)
    savings: dict[str, Decimal] = defaultdict(Decimal)
    models: dict[str, list[str]] = defaultdict(list)
    for rec in recs:
        workload = str(rec.workload)
        if "workload" in rule.filters and workload != rule.filters["workload"]:
            continue
        savings.setdefault(workload, Decimal(0))
        if rec.recommendation in ("BATCH", "HYBRID") and rec.monthly_savings_usd is not None:
            savings[workload] += rec.monthly_savings_usd
            models[workload].append(f"{rec.model}: {rec.recommendation}")
    if not savings:
        return _no_groups(rule, "no real-time workload to advise on")
    out = []
    for workload, amount in sorted(savings.items()):
        detail = "; ".join(models[workload]) or "keep real-time"
        out.append(
            _judge(
                rule,
                {**rule.filters, "workload": workload},
                amount,
                "monthly savings by moving to batch",
                detail,
            )
        )
    return out


def _collector_stale(rule: Rule, ctx: Context) -> list[Evaluation]:
    from monitor.summary import last_success

    wanted = rule.filters.get("source")
    out = []
    for source, finished in sorted(ctx.figures(last_success).items()):
        if wanted is not None and source != wanted:
            continue
        if finished is None:
            # Never succeeded: count from its first attempt, so a fresh install is not stale.
            first = ctx.session.execute(
                select(func.min(col(CollectRun.started_at))).where(col(CollectRun.source) == source)
            ).scalar_one()
            age = max(0.0, (ctx.now - first).total_seconds())
            detail = f"never succeeded; first attempt {first:%Y-%m-%d %H:%M} UTC"
        else:
            age = max(0.0, (ctx.now - finished).total_seconds())
            detail = f"last success {finished:%Y-%m-%d %H:%M} UTC"
        out.append(
            _judge(rule, {"source": source}, age, "time since a successful collection", detail)
        )
    if not out:
        scope = {"source": wanted} if wanted else {}
        return [_judge(rule, scope, None, "", "", no_data="no collection has run yet")]
    return out


KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind(
            "batch_share", "<", "ratio", 0.0, 1.0, True,
            frozenset({"workspace"}), frozenset({"workspace"}), 1, True,
            "Less of the traffic goes through the Message Batches API (50 % cheaper) than "
            "the target.",
            "Find real-time workloads that can wait (the advisor's batch candidates) and send "
            "them through the Message Batches API.",
            _batch_share,
        ),
        Kind(
            "batch_turnaround_p95", ">", "seconds", 0.0, BATCH_LIFE.total_seconds(), False,
            frozenset({"workspace", "workload"}), frozenset({"workspace", "workload"}), 1, True,
            "Message Batches take longer than usual to finish.",
            "Check status.anthropic.com and the sizes of recent batches; split very large "
            "batches and submit earlier, since unfinished requests expire after 24 h.",
            _turnaround,
        ),
        Kind(
            "batch_failure_rate", ">", "ratio", 0.0, 1.0, True,
            frozenset({"workspace", "workload"}), frozenset({"workspace", "workload"}), 1, True,
            "Too many batch requests errored or expired.",
            "Look at the batch errors by type: invalid requests need fixing at the source; "
            "expired ones need smaller or earlier batches. Failed requests are not retried.",
            _failure_rate,
        ),
        Kind(
            "batch_expiry_risk", ">=", "life", 0.0, 1.0, False,
            frozenset({"workspace", "workload"}), frozenset({"workspace", "workload"}), 2,
            False,
            "A batch is still running late in its 24 h life and may expire unfinished.",
            "If its results are needed soon, cancel it and send the unfinished requests in "
            "real time or in smaller batches; expired requests are not billed but are lost.",
            _expiry_risk,
        ),
        Kind(
            "cost_drift", ">", "ratio", 0.0, 1.0, True,
            frozenset({"model"}), frozenset({"model"}), 1, True,
            "The cost computed from usage differs from what Anthropic billed.",
            "Compare the price table with the bill: a new model, a price change or a modifier "
            "(data residency, long context) is missing. Add a [[prices]] entry if so.",
            _cost_drift,
        ),
        Kind(
            "spend_increase", ">", "ratio", 0.0, 1000.0, False,
            frozenset({"workspace"}), frozenset({"workspace"}), 1, True,
            "Spend grew faster than expected compared with the previous window.",
            "Find which workspace and model grew on the cost dashboard, and whether it was "
            "planned.",
            _spend_increase,
        ),
        Kind(
            "batch_candidate", ">=", "usd", 0.0, None, True,
            frozenset({"workload"}), frozenset({"workload"}), 1, True,
            "A real-time workload could move to the Message Batches API and save money.",
            "If the workload can wait up to 24 h for answers, submit it as Message Batches "
            "(50 % off every token).",
            _batch_candidate,
        ),
        Kind(
            "collector_stale", ">", "seconds", 0.0, None, False,
            frozenset(), frozenset({"source"}), 0, False,
            "A data source has not been collected successfully for a while; figures and "
            "alerts built on it are stale.",
            "Check the daemon's log for collect errors (API key, network, rate limits) and "
            "run `batch-monitor collect` by hand to see the error.",
            _collector_stale,
        ),
    )
}  # fmt: skip


# --- defaults and configuration -----------------------------------------------------------


def default_entries(settings: Settings | None = None) -> list[dict[str, Any]]:
    """Return the default rules as ``[[rules]]`` entries (the candidate rule follows [advisor])."""
    min_savings = settings.advisor.min_monthly_savings if settings is not None else 10.0
    advisor_window = fmt.duration(settings.advisor.window) if settings is not None else "30d"
    return [
        {"name": "batch_share_requests", "kind": "batch_share", "basis": "requests",
         "threshold": 0.50, "window": "24h", "for": "30m", "severity": "warning"},
        {"name": "batch_share_spend", "kind": "batch_share", "basis": "spend",
         "threshold": 0.40, "window": "24h", "for": "30m", "severity": "warning"},
        {"name": "batch_turnaround_p95", "kind": "batch_turnaround_p95", "threshold": "90m",
         "window": "24h", "severity": "warning"},
        {"name": "batch_turnaround_p95", "kind": "batch_turnaround_p95", "threshold": "2h",
         "window": "24h", "severity": "critical"},
        {"name": "batch_failure_rate", "kind": "batch_failure_rate", "threshold": 0.005,
         "window": "24h", "severity": "critical"},
        {"name": "batch_expiry_risk", "kind": "batch_expiry_risk", "threshold": "12h",
         "severity": "warning"},
        {"name": "cost_drift", "kind": "cost_drift", "threshold": 0.02, "window": "3d",
         "severity": "warning", "repeat_interval": "24h"},
        {"name": "spend_increase", "kind": "spend_increase", "threshold": 0.25, "window": "7d",
         "severity": "warning", "repeat_interval": "24h"},
        {"name": "batch_candidate", "kind": "batch_candidate", "threshold": min_savings,
         "window": advisor_window, "severity": "info", "repeat_interval": "0s",
         "send_resolved": False, "keep_firing_for": "7d"},
        {"name": "collector_stale", "kind": "collector_stale", "threshold": "30m",
         "severity": "critical", "repeat_interval": "1h"},
    ]  # fmt: skip


def _threshold(kind: Kind, raw: Any) -> float:
    """Parse a threshold in ``kind``'s unit; raise ValueError with a readable reason."""
    if isinstance(raw, bool):
        raise ValueError(f"must be a number, got {raw!r}")
    if kind.unit in ("seconds", "life") and isinstance(raw, str):
        seconds = parse_duration(raw).total_seconds()
        value = seconds / BATCH_LIFE.total_seconds() if kind.unit == "life" else seconds
    elif isinstance(raw, int | float):
        value = float(raw)
    else:
        unit = {
            "ratio": "a ratio such as 0.05",
            "seconds": 'a duration such as "90m" (or seconds)',
            "life": 'a fraction of the 24 h batch life such as 0.5, or a duration such as "12h"',
            "usd": "an amount in USD such as 25",
        }[kind.unit]
        raise ValueError(f"must be {unit}, got {raw!r}")
    if not math.isfinite(value):
        raise ValueError(f"must be a finite number, got {raw!r}")
    low_ok = value >= kind.low if kind.low_inclusive else value > kind.low
    high_ok = kind.high is None or value <= kind.high
    if not (low_ok and high_ok):
        low = f"{'>=' if kind.low_inclusive else '>'} {kind.fmt(kind.low)}"
        high = f" and <= {kind.fmt(kind.high)}" if kind.high is not None else ""
        raise ValueError(f"out of range: must be {low}{high}, got {raw!r}")
    return value


def _string_table(raw: Any, what: str) -> dict[str, str]:
    if not isinstance(raw, Mapping):
        raise ValueError(f'must be a table of strings, like {what} = {{ key = "value" }}')
    bad = [k for k, v in raw.items() if not isinstance(v, str)]
    if bad:
        raise ValueError(f"values must be strings (not for {', '.join(map(str, bad))})")
    return {str(k): v for k, v in raw.items()}


def _build(entry: Mapping[str, Any], problem: Callable[[str, str], None]) -> Rule | None:
    """Build a Rule from a merged entry, reporting each bad field through ``problem``."""
    ok = True

    def bad(key: str, message: str) -> None:
        nonlocal ok
        ok = False
        problem(key, message)

    for key in sorted(set(map(str, entry)) - ENTRY_KEYS):
        bad(key, "unknown key (known: " + ", ".join(sorted(ENTRY_KEYS)) + ")")

    name = entry.get("name")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        bad(
            "name",
            f"required: letters, digits, '_', '.', '-', starting with a letter; got {name!r}",
        )
    kind_name = entry.get("kind")
    kind = KINDS.get(kind_name) if isinstance(kind_name, str) else None
    if kind is None:
        if kind_name is None:
            bad("kind", "required (one of " + ", ".join(KINDS) + ")")
        else:
            bad("kind", f"unknown kind {kind_name!r} (known: " + ", ".join(KINDS) + ")")

    threshold = 0.0
    if "threshold" not in entry:
        bad("threshold", "required")
    elif kind is not None:
        try:
            threshold = _threshold(kind, entry["threshold"])
        except ValueError as exc:
            bad("threshold", str(exc))

    durations: dict[str, timedelta] = {}
    for key, default in (
        ("window", timedelta(hours=24)),
        ("for", timedelta(0)),
        ("keep_firing_for", timedelta(0)),
        ("repeat_interval", timedelta(hours=4)),
    ):
        durations[key] = default
        if key in entry:
            try:
                durations[key] = parse_duration(entry[key])
            except ValueError as exc:
                bad(key, str(exc))
    if durations["window"] <= timedelta(0):
        bad("window", "must be longer than 0s")

    severity = entry.get("severity", "warning")
    if severity not in SEVERITIES:
        bad("severity", f"must be one of {', '.join(SEVERITIES)}, got {severity!r}")

    flags: dict[str, bool] = {}
    for key in ("send_resolved", "enabled"):
        flags[key] = entry.get(key, True)
        if not isinstance(flags[key], bool):
            bad(key, f"must be true or false, got {flags[key]!r}")

    group_by: tuple[str, ...] = ()
    raw_group = entry.get("group_by", [])
    if isinstance(raw_group, str):
        raw_group = [raw_group]
    if not isinstance(raw_group, list) or not all(isinstance(g, str) for g in raw_group):
        bad("group_by", f"must be a list of label names, got {raw_group!r}")
    else:
        group_by = tuple(dict.fromkeys(raw_group))
        if kind is not None:
            unknown = [g for g in group_by if g not in kind.group_by]
            allowed = ", ".join(sorted(kind.group_by)) or "nothing"
            if unknown:
                bad(
                    "group_by", f"{kind.name} can be grouped by {allowed}, not {', '.join(unknown)}"
                )
            elif len(group_by) > kind.max_group_by:
                bad("group_by", f"{kind.name} can be grouped by one of {allowed} at a time")

    filters: dict[str, str] = {}
    if "filters" in entry:
        try:
            filters = _string_table(entry["filters"], "filters")
        except ValueError as exc:
            bad("filters", str(exc))
        if kind is not None:
            unknown = sorted(set(filters) - kind.filters)
            if unknown:
                allowed = ", ".join(sorted(kind.filters)) or "nothing"
                bad(
                    "filters", f"{kind.name} can be filtered by {allowed}, not {', '.join(unknown)}"
                )
            both = sorted(set(filters) & set(group_by))
            if both:
                bad("filters", f"{', '.join(both)} is both a filter and in group_by")

    labels: dict[str, str] = {}
    if "labels" in entry:
        try:
            labels = _string_table(entry["labels"], "labels")
        except ValueError as exc:
            bad("labels", str(exc))
        reserved = sorted(set(labels) & RESERVED_LABELS)
        if reserved:
            bad("labels", f"{', '.join(reserved)} is set by the rule itself and cannot be a label")

    annotations: dict[str, str] = {}
    if "annotations" in entry:
        try:
            annotations = _string_table(entry["annotations"], "annotations")
        except ValueError as exc:
            bad("annotations", str(exc))
        unknown = sorted(set(annotations) - set(ANNOTATION_KEYS))
        if unknown:
            bad(
                "annotations", f"unknown {', '.join(unknown)} (known: {', '.join(ANNOTATION_KEYS)})"
            )
        for key in ("runbook_url", "dashboard_url"):
            url = annotations.get(key)
            if url is not None and not re.match(r"^https?://\S+$", url):
                bad(f"annotations.{key}", f"must be an http(s) URL, got {url!r}")

    no_data = entry.get("no_data", "ok")
    if no_data not in NO_DATA_MODES:
        bad("no_data", f'must be "ok" or "firing", got {no_data!r}')

    basis = entry.get("basis", "requests")
    if "basis" in entry and kind is not None and kind.name != "batch_share":
        bad("basis", "only batch_share rules have a basis")
    elif basis not in ("requests", "spend"):
        bad("basis", f'must be "requests" or "spend", got {basis!r}')

    if not ok or kind is None:
        return None
    return Rule(
        name=str(name),
        kind=kind.name,
        threshold=threshold,
        severity=str(severity),
        window=durations["window"],
        for_=durations["for"],
        keep_firing_for=durations["keep_firing_for"],
        repeat_interval=durations["repeat_interval"],
        send_resolved=flags["send_resolved"],
        group_by=group_by,
        filters=filters,
        enabled=flags["enabled"],
        labels=labels,
        annotations=annotations,
        no_data=str(no_data),
        basis=str(basis),
    )


def _merge(entry: Mapping[str, Any], defaults: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Fill the keys ``entry`` leaves out from the default of the same name (and severity)."""
    same = [d for d in defaults if d["name"] == entry.get("name")]
    if "severity" in entry:
        same = [d for d in same if d.get("severity", "warning") == entry["severity"]] or same
    if not same:
        return dict(entry)
    base = same[0]
    if "kind" in entry and entry["kind"] != base["kind"]:
        return dict(entry)  # a different kind shares nothing but the name
    return {**base, **entry}


def _build_all(
    entries: Sequence[Mapping[str, Any]],
    where: str,
    settings: Settings | None,
    *,
    with_defaults: bool,
) -> tuple[list[Rule], list[str]]:
    problems: list[str] = []
    defaults = default_entries(settings)
    rules: list[Rule] = []
    seen: dict[tuple[str, str], int] = {}
    for n, entry in enumerate(entries, start=1):
        label = f"{where} #{n}"
        if not isinstance(entry, Mapping):
            problems.append(f"{label}: must be a table with name, kind and threshold")
            continue
        if isinstance(entry.get("name"), str):
            label += f" ({entry['name']})"

        def problem(key: str, message: str, label: str = label) -> None:
            problems.append(f"{label}: {key}: {message}")

        rule = _build(_merge(entry, defaults), problem)
        if rule is None:
            continue
        key = (rule.name, rule.severity)
        if key in seen:
            problem("name", f"a {rule.severity} rule named {rule.name!r} is already #{seen[key]}")
            continue
        seen[key] = n
        rules.append(rule)
    if with_defaults:
        replaced = {str(e.get("name")) for e in entries if isinstance(e, Mapping)}
        kept = []
        for entry in defaults:
            if entry["name"] in replaced:
                continue
            rule = _build(entry, lambda k, m: problems.append(f"default rule: {k}: {m}"))
            if rule is not None:
                kept.append(rule)
        rules = kept + rules
    return rules, problems


def validate_rule_entries(entries: Sequence[Mapping[str, Any]], where: str) -> list[str]:
    """Check ``[[rules]]`` entries and return every problem (empty when valid).

    Each message starts with ``where``, the entry's 1-based position and its name, then the
    field: ``"monitor.toml [[rules]] #2 (slow): window: invalid duration '5 min' ..."``.
    """
    return _build_all(entries, where, None, with_defaults=False)[1]


def load_rules(settings: Settings) -> list[Rule]:
    """Return the effective rules: the defaults (unless disabled) merged with ``[[rules]]``.

    Disabled rules are included (``enabled=False``) so their old alerts can be resolved.
    Raise ConfigError listing every problem.
    """
    where = f"{settings.config_path or 'monitor.toml'} [[rules]]"
    rules, problems = _build_all(
        list(settings.rules), where, settings, with_defaults=settings.alerting.default_rules
    )
    if problems:
        raise ConfigError(problems)
    return rules


def evaluate(
    rule: Rule,
    session: Session,
    now: datetime,
    *,
    settings: Settings | None = None,
    memo: dict[tuple[Any, ...], Any] | None = None,
) -> list[Evaluation]:
    """Measure ``rule`` as of ``now``: one Evaluation per label set (never empty).

    ``settings`` is needed by ``batch_candidate`` (the advisor reads workloads from it); the
    defaults are used when it is not given. ``memo`` (a dict kept for one evaluation round)
    lets rules over the same window share their figures.
    """
    ctx = Context(session, now, settings, memo if memo is not None else {})
    return KINDS[rule.kind].measure(rule, ctx)
