"""Rules: what to measure and when it is a problem.

A rule is a ``[[rules]]`` entry in ``monitor.toml`` (or a default); its kind, threshold and
checks are in ``monitor.rulekinds``. Each kind measures one figure through ``monitor.summary``
(so alerts, /metrics and reports agree) and compares it with the rule's threshold, exactly
(``Decimal``). ``evaluate(rule, session, now)`` returns one ``Evaluation`` per label set: the
value, the threshold, whether the condition holds (``True``, ``False``, or ``None`` for no data)
and a sentence saying why. Deciding what to *do* about an evaluation (pending, firing,
messages) is ``alerts.py``'s job.
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import Select, func, select, union
from sqlmodel import Session, col

from monitor import fmt
from monitor.config import ConfigError
from monitor.models import Batch, CollectRun, UsageBucket
from monitor.rulekinds import (
    BATCH_LIFE,
    SPECS,
    UNASSIGNED,
    Rule,
    build_rules,
)

if TYPE_CHECKING:
    from monitor.config import Settings


@dataclass(frozen=True)
class Evaluation:
    """One label set of one rule, measured once.

    ``condition`` is ``True`` (the problem is there), ``False`` (it is not) or ``None`` (too
    little data to say; the alert does not fire unless the rule has ``no_data = "firing"``).
    """

    rule: Rule
    scope: Mapping[str, str]
    value: Decimal | float | None  # Decimal for money (usd kinds)
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
    def threshold(self) -> Decimal | float:
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
        kind = SPECS[self.rule.kind]
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


def _judge(
    rule: Rule,
    scope: Mapping[str, str],
    value: float | Decimal | None,
    measure: str,
    detail: str,
    *,
    no_data: str = "",
) -> Evaluation:
    """Compare ``value`` with the rule's threshold, exactly, and say why in one sentence."""
    kind = SPECS[rule.kind]
    window = f" over {fmt.span(rule.window)}" if kind.windowed else ""
    if value is None:
        return Evaluation(rule, dict(scope), None, None, f"no data: {no_data or detail}")
    # Money stays Decimal end to end; ratios and seconds are the floats they were measured as.
    kept: Decimal | float = value if kind.unit == "usd" else float(value)
    if kind.unit == "usd" and not isinstance(kept, Decimal):
        kept = Decimal(str(kept))
    holds = kind.holds(kept, rule.threshold)
    text = kind.fmt(kept)
    verdict = "is" if holds else "is not"
    reason = f"{measure} {text} {verdict} {kind.words} {kind.fmt(rule.threshold)}{window}" + (
        f" ({detail})" if detail else ""
    )
    return Evaluation(rule, dict(scope), kept, holds, reason, text)


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


# Above this share of a window's batch requests with unread results, spend rules say "no data"
# instead of judging a figure that is only a lower bound (a batch ends before its results are
# read; the next collect round reads them, unless the batch was archived first).
UNREAD_LIMIT = 0.01


def _unread(share: float, window: str) -> str:
    return (
        f"{fmt.percent(share)} of the batch requests in {window} have results not read yet, "
        "so their cost is unknown"
    )


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
        if rule.basis == "spend" and fig.batch_unread_share > UNREAD_LIMIT:
            value = None
            detail = ""
            missing = _unread(fig.batch_unread_share, "the window")
        elif rule.basis == "spend":
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
        now_fig = ctx.figures(spend_figures, since, until, workspace=ws, cross_check=False)
        then_fig = ctx.figures(spend_figures, before, since, workspace=ws, cross_check=False)
        current, previous = now_fig.total_cost_usd, then_fig.total_cost_usd
        unread = [
            (share, which)
            for share, which in (
                (now_fig.batch_unread_share, f"the last {window}"),
                (then_fig.batch_unread_share, f"the {window} before"),
            )
            if share > UNREAD_LIMIT
        ]
        if unread:
            # A batch whose results are unread has no cost yet: comparing would read the gap as
            # a drop (or, in the earlier window, as growth).
            out.append(_judge(rule, scope, None, "", "", no_data=_unread(*unread[0])))
            continue
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
    from monitor.advisor import current
    from monitor.config import Settings as _Settings

    # The daemon's stored advice while fresh (a month of call buckets is the costliest read
    # of a round), else computed: the same advisor either way.
    recs = ctx.figures(current, ctx.now, ctx.settings or _Settings(), window=rule.window)
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


# What each kind measures (its static description is ``rulekinds.SPECS``).
MEASURES: dict[str, Measure] = {
    "batch_share": _batch_share,
    "batch_turnaround_p95": _turnaround,
    "batch_failure_rate": _failure_rate,
    "batch_expiry_risk": _expiry_risk,
    "cost_drift": _cost_drift,
    "spend_increase": _spend_increase,
    "batch_candidate": _batch_candidate,
    "collector_stale": _collector_stale,
}


def load_rules(settings: Settings) -> list[Rule]:
    """Return the effective rules: the defaults (unless disabled) merged with ``[[rules]]``.

    Disabled rules are included (``enabled=False``) so their old alerts can be resolved.
    Raise ConfigError listing every problem.
    """
    where = f"{settings.config_path or 'monitor.toml'} [[rules]]"
    rules, problems = build_rules(
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
    return MEASURES[rule.kind](rule, ctx)
