"""The alert lifecycle: decide (a pure state machine) and record (the outbox).

An alert *is* its label set (rule, severity, scope labels); its fingerprint is a hash of them.
``evaluate_all(session, now, rules)``, a plain function of ``(session, now)``:

1. Measure every enabled rule (``rules.evaluate``).
2. Feed each label set's condition to the pure ``next_state``: inactive -> pending (``for`` not
   yet elapsed) -> firing -> inactive again (resolved), ``keep_firing_for`` holding a firing
   alert through short gaps.
3. Write the new state with a compare-and-set on ``last_evaluated_at`` and, for every
   transition worth a message, one ``AlertEvent`` row (the outbox) in the same transaction. Two
   processes evaluating at once cannot both write a transition: the loser's update matches no
   row and it writes no event.

Silences and inhibition (``monitor.silences``) decide whether a transition is announced;
delivering the outbox is ``monitor.notifiers.delivery``. Every decision has a named reason
(``REASONS``) that is logged and stored on the alert.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import Table, func, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, SQLModel, col

from monitor import db, fmt
from monitor.crashpoints import crashpoint
from monitor.db import advisory_lock_key
from monitor.models import AlertEvent, AlertState, Silence
from monitor.rulekinds import SPECS, Rule
from monitor.rules import Evaluation, evaluate
from monitor.silences import (
    SEVERITY_RANK,
    Current,
    active_silences,
    current_from_db,
    dumps,
    loads,
    muted_by,
)

if TYPE_CHECKING:
    from monitor.config import Settings

log = logging.getLogger(__name__)

STATES = ("inactive", "pending", "firing")
TRANSITIONS = ("firing", "reminder", "resolved")

# Every decision next_state and the outbox can make, by name (logged, stored as the reason).
REASONS = {
    "inactive": "the condition is false and the alert is not active",
    "pending": "the condition just became true; waiting for `for` to elapse",
    "pending_waiting": "still pending: `for` has not elapsed yet",
    "pending_cleared": "the condition became false before `for` elapsed: no message",
    "fired": "the condition held for `for`: the alert fires and a message is queued",
    "fired_muted": "the alert fires but is silenced or inhibited: no message yet",
    "fired_after_mute": "a firing alert that was never announced is no longer muted: queued",
    "firing": "still firing; no reminder due yet",
    "firing_muted": "still firing, never announced, and still muted",
    "reminder_due": "still firing after `repeat_interval`: a reminder is queued",
    "reminder_muted": "a reminder is due but the alert is silenced or inhibited",
    "kept_firing": "the condition is false but `keep_firing_for` has not elapsed",
    "resolved": "the condition is false: the alert resolves and a message is queued",
    "resolved_quiet": "resolved; send_resolved is off",
    "resolved_unannounced": "resolved; its firing was never announced, so neither is this",
    "resolved_muted": "resolved while silenced or inhibited: no message",
    "rule_removed": "the rule is no longer configured (or disabled): the alert is dropped",
    "already_evaluated": "this alert was already evaluated at this very time: unchanged",
    "lost_race": "another process wrote this alert's state first: unchanged, no event",
    "rule_error": "the rule's measurement failed (see the log): state unchanged",
}


# --- the state machine (pure) ---------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    """The part of an alert's stored state the state machine reads and writes."""

    state: str = "inactive"
    active_since: datetime | None = None
    firing_since: datetime | None = None
    last_true_at: datetime | None = None
    last_notified_at: datetime | None = None
    resolved_at: datetime | None = None

    @property
    def announced(self) -> bool:
        """Return whether a message was queued for the current firing episode."""
        return (
            self.last_notified_at is not None
            and self.firing_since is not None
            and self.last_notified_at >= self.firing_since
        )


@dataclass(frozen=True)
class Decision:
    """What ``next_state`` decided: the new state, the event to queue (if any), and why."""

    state: Snapshot
    event: str | None
    reason: str


def next_state(
    prev: Snapshot, condition: bool, now: datetime, rule: Rule, *, muted: str | None = None
) -> Decision:
    """Return the alert's next state given the condition at ``now`` (no I/O, no clock).

    ``muted`` names the silence or inhibition in force (None when not muted): a muted alert
    still changes state, but queues no message, and one that fired while muted is announced
    once it no longer is.
    """
    if condition:
        if prev.state == "inactive":
            started = replace(
                prev, active_since=now, firing_since=None, last_true_at=now, resolved_at=None
            )
            if rule.for_ > timedelta(0):
                return Decision(replace(started, state="pending"), None, "pending")
            return _fire(started, now, muted)
        if prev.state == "pending":
            active_since = prev.active_since or now
            if now - active_since >= rule.for_:
                return _fire(replace(prev, last_true_at=now), now, muted)
            return Decision(replace(prev, last_true_at=now), None, "pending_waiting")
        return _while_firing(replace(prev, last_true_at=now), now, rule, muted)

    if prev.state == "inactive":
        return Decision(prev, None, "inactive")
    if prev.state == "pending":
        return Decision(
            replace(prev, state="inactive", active_since=None, firing_since=None),
            None,
            "pending_cleared",
        )
    last_true = prev.last_true_at or prev.firing_since or now
    if now - last_true < rule.keep_firing_for:
        decision = _while_firing(prev, now, rule, muted)
        return decision if decision.event else Decision(decision.state, None, "kept_firing")
    resolved = replace(
        prev, state="inactive", active_since=None, firing_since=None, resolved_at=now
    )
    if not prev.announced:
        return Decision(resolved, None, "resolved_unannounced")
    if not rule.send_resolved:
        return Decision(resolved, None, "resolved_quiet")
    if muted:
        return Decision(resolved, None, "resolved_muted")
    return Decision(resolved, "resolved", "resolved")


def _fire(s: Snapshot, now: datetime, muted: str | None) -> Decision:
    s = replace(s, state="firing", firing_since=now, last_true_at=now)
    if muted:
        return Decision(s, None, "fired_muted")
    return Decision(replace(s, last_notified_at=now), "firing", "fired")


def _while_firing(s: Snapshot, now: datetime, rule: Rule, muted: str | None) -> Decision:
    if not s.announced:
        if muted:
            return Decision(s, None, "firing_muted")
        return Decision(replace(s, last_notified_at=now), "firing", "fired_after_mute")
    assert s.last_notified_at is not None  # announced implies it
    if rule.repeat_interval <= timedelta(0) or now - s.last_notified_at < rule.repeat_interval:
        return Decision(s, None, "firing")
    if muted:
        return Decision(s, None, "reminder_muted")
    return Decision(replace(s, last_notified_at=now), "reminder", "reminder_due")


# --- evaluate_all ---------------------------------------------------------------------


@dataclass(frozen=True)
class AlertResult:
    """What one evaluation round decided for one alert."""

    rule: str
    severity: str
    labels: dict[str, str]
    fingerprint: str
    state: str
    value: Decimal | None
    threshold: Decimal | None
    condition: str  # true | false | no-data | unknown
    decision: str  # a key of REASONS
    reason: str  # the decision and the measurement, in words
    event: str | None = None
    unit: str = ""  # the rule kind's unit: usd values are money

    def as_json(self) -> dict[str, Any]:
        """Return the ``batch-monitor check --json`` form (money as decimal strings)."""
        return {
            "rule": self.rule,
            "labels": self.labels,
            "state": self.state,
            "value": json_value(self.value, self.unit),
            "threshold": json_value(self.threshold, self.unit),
            "reason": self.reason,
        }


def json_value(value: Decimal | None, unit: str) -> float | str | None:
    """Return an alert value for JSON: money as a decimal string to the cent, else a number."""
    if value is None:
        return None
    return fmt.money_json(value) if unit == "usd" else float(value)


def _state_table() -> Table:
    return SQLModel.metadata.tables["alert_state"]


def _event_table() -> Table:
    return SQLModel.metadata.tables["alert_event"]


def _lock_evaluation(session: Session) -> None:
    # On PostgreSQL, evaluation rounds of several processes queue up behind this lock (held
    # to commit); the compare-and-set below keeps them correct even without it. SQLite
    # serialises writers by itself.
    if session.get_bind().dialect.name == "postgresql":
        session.execute(
            text("SELECT pg_advisory_xact_lock(:k)"), {"k": advisory_lock_key("alerts.evaluate")}
        )


def _snapshot(row: Any) -> Snapshot:
    if row is None:
        return Snapshot()
    return Snapshot(
        state=row.state,
        active_since=row.active_since,
        firing_since=row.firing_since,
        last_true_at=row.last_true_at,
        last_notified_at=row.last_notified_at,
        resolved_at=row.resolved_at,
    )


@dataclass(frozen=True)
class _Item:
    """One alert to decide this round: measured now, or known from before and now absent."""

    rule: Rule | None
    severity: str
    rule_name: str
    labels: dict[str, str]
    fp: str
    evaluation: Evaluation | None


def evaluate_all(
    session: Session, now: datetime, rules: Sequence[Rule], *, settings: Settings | None = None
) -> list[AlertResult]:
    """Evaluate every enabled rule at ``now``, write state transitions and queue events.

    Commits once at the end. Returns one result per alert decided this round (measured
    label sets, plus active alerts that are no longer measured or whose rule is gone).
    """
    enabled = [r for r in rules if r.enabled]
    evaluations: list[Evaluation] = []
    failed: set[str] = set()
    memo: dict[tuple[Any, ...], Any] = {}  # figures shared by rules over the same window
    for rule in enabled:
        try:
            evaluations.extend(evaluate(rule, session, now, settings=settings, memo=memo))
        except Exception:
            # One broken rule must not stop the others (nor resolve its alerts).
            log.exception("rule %s (%s) could not be evaluated", rule.name, rule.kind)
            session.rollback()
            failed.add(rule.name)

    _lock_evaluation(session)
    rows = {
        r.fingerprint: r
        for r in session.execute(
            select(AlertState).execution_options(populate_existing=True)
        ).scalars()
    }
    silences = active_silences(session, now)
    current = current_from_db(session)

    items: list[_Item] = []
    seen: set[str] = set()
    for ev in evaluations:
        fp = ev.fingerprint
        if fp in seen:
            continue  # two rules with identical labels would be one alert; first one wins
        seen.add(fp)
        items.append(_Item(ev.rule, ev.rule.severity, ev.rule.name, ev.labels, fp, ev))
    by_key = {(r.name, r.severity): r for r in enabled}
    for fp, row in rows.items():
        if fp in seen or row.state == "inactive" or row.rule in failed:
            continue
        # Still active but not measured: its group disappeared, or its rule is gone.
        known = by_key.get((row.rule, row.severity))
        items.append(_Item(known, row.severity, row.rule, loads(row.labels), fp, None))
    # Critical first, so a warning decided in the same round sees the critical's new state.
    items.sort(key=lambda i: (-SEVERITY_RANK.get(i.severity, 0), i.rule_name, i.fp))

    results = []
    for item in items:
        result = _decide(session, now, item, rows.get(item.fp), silences, current)
        current.set(item.fp, item.rule_name, item.severity, item.labels, result.state)
        results.append(result)
    session.commit()
    for rule in enabled:
        if rule.name in failed:
            results.append(
                AlertResult(
                    rule=rule.name,
                    severity=rule.severity,
                    labels={"rule": rule.name, "severity": rule.severity},
                    fingerprint="",
                    state="unknown",
                    value=None,
                    threshold=_exact(rule.threshold),
                    condition="unknown",
                    decision="rule_error",
                    reason="rule_error: the measurement failed; see the log",
                    unit=SPECS[rule.kind].unit,
                )
            )
    return results


def _decide(
    session: Session,
    now: datetime,
    item: _Item,
    row: AlertState | None,
    silences: Sequence[Silence],
    current: Current,
) -> AlertResult:
    ev = item.evaluation
    prev = _snapshot(row)
    value = _exact(ev.value) if ev else (row.value if row else None)
    threshold = _exact(ev.threshold) if ev else (row.threshold if row else None)
    condition_word = ev.state_word if ev else "false"

    unit = SPECS[item.rule.kind].unit if item.rule is not None else ""

    def result(state: str, decision: str, detail: str, event: str | None = None) -> AlertResult:
        return AlertResult(
            rule=item.rule_name,
            severity=item.severity,
            labels=item.labels,
            fingerprint=item.fp,
            state=state,
            value=value,
            threshold=threshold,
            condition=condition_word,
            decision=decision,
            reason=f"{decision}: {detail}",
            event=event,
            unit=unit,
        )

    # The same round twice changes nothing. An evaluation time stored *later* than now (a
    # clock that jumped back, an old replay) must not freeze the alert: it is evaluated.
    if row is not None and row.last_evaluated_at is not None and now == row.last_evaluated_at:
        return result(row.state, "already_evaluated", f"last evaluated {row.last_evaluated_at}")

    if item.rule is None:
        # The rule is gone: drop the alert quietly (there is no rule left to say how).
        decision = Decision(
            replace(prev, state="inactive", active_since=None, firing_since=None, resolved_at=now),
            None,
            "rule_removed",
        )
        detail = "no rule of this name and severity is configured and enabled"
    else:
        if ev is None:
            condition, detail = False, "the label set is no longer measured"
        elif ev.condition is None:
            condition, detail = item.rule.no_data == "firing", ev.reason
        else:
            condition, detail = ev.condition, ev.reason
        muted = muted_by(silences, current, item.rule_name, item.severity, item.labels)
        decision = next_state(prev, condition, now, item.rule, muted=muted)
        if muted and decision.reason.endswith("_muted"):
            detail = f"{muted}; {detail}"

    s = decision.state
    annotations = ev.annotations() if ev else loads(row.annotations if row else None)
    values: dict[str, Any] = {
        "state": s.state,
        "active_since": s.active_since,
        "firing_since": s.firing_since,
        "last_true_at": s.last_true_at,
        "last_notified_at": s.last_notified_at,
        "resolved_at": s.resolved_at,
        "value": value,
        "threshold": threshold,
        "reason": f"{decision.reason}: {detail}"[:4000],
        "annotations": dumps(annotations),
        "last_evaluated_at": now,
    }
    if row is None:
        stmt = _insert(session).values(
            fingerprint=item.fp,
            rule=item.rule_name,
            severity=item.severity,
            labels=dumps(item.labels),
            **values,
        )
        # RETURNING, not rowcount: psycopg reports -1 for INSERT .. ON CONFLICT DO NOTHING.
        inserted = session.execute(
            stmt.on_conflict_do_nothing(index_elements=["fingerprint"]).returning(
                _state_table().c.fingerprint
            )
        ).first()
        done = 1 if inserted is not None else 0
    else:
        # Compare-and-set: only the process that read this exact version may move it on.
        guard = (
            col(AlertState.last_evaluated_at).is_(None)
            if row.last_evaluated_at is None
            else col(AlertState.last_evaluated_at) == row.last_evaluated_at
        )
        done = db.rowcount(
            session.execute(
                update(AlertState)
                .where(col(AlertState.fingerprint) == item.fp, guard)
                .values(**values)
                .execution_options(synchronize_session=False)
            )
        )
    if done != 1:
        log.info(
            "alert %s %s: lost_race (another process decided first)", item.rule_name, item.fp[:12]
        )
        return result(row.state if row else "inactive", "lost_race", REASONS["lost_race"])

    if decision.event is not None:
        session.execute(
            _event_table()
            .insert()
            .values(
                fingerprint=item.fp,
                rule=item.rule_name,
                severity=item.severity,
                labels=dumps(item.labels),
                transition=decision.event,
                value=value,
                threshold=threshold,
                reason=detail[:4000],
                annotations=dumps(annotations),
                created_at=now,
                status="pending",
                attempts=0,
                next_attempt_at=now,
            )
        )
        crashpoint("alerts.transition")
    level = logging.INFO if decision.event or s.state != prev.state else logging.DEBUG
    log.log(
        level,
        "alert %s %s: %s -> %s (%s)%s: %s",
        item.rule_name,
        "{" + fmt.scope_text(item.labels, empty="") + "}",
        prev.state,
        s.state,
        decision.reason,
        f", queued {decision.event}" if decision.event else "",
        detail,
    )
    return result(s.state, decision.reason, detail, decision.event)


def _exact(value: Decimal | float | None) -> Decimal | None:
    """Return a measured value as stored: exact (floats through their shortest text)."""
    if value is None or isinstance(value, Decimal):
        return value
    return Decimal(str(value))


def _insert(session: Session) -> Any:
    table = _state_table()
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


# --- reading the state back -----------------------------------------------------------


@dataclass(frozen=True)
class AlertView:
    """One alert as ``batch-monitor alerts`` shows it."""

    rule: str
    severity: str
    labels: dict[str, str]
    fingerprint: str
    state: str
    value: Decimal | None
    threshold: Decimal | None
    value_text: str
    threshold_text: str
    since: datetime | None
    last_notified_at: datetime | None
    delivery: str  # ok | pending | failed
    delivery_error: str | None
    reason: str | None
    unit: str = ""

    def as_json(self) -> dict[str, Any]:
        """Return the ``batch-monitor alerts --json`` form."""
        return {
            "rule": self.rule,
            "labels": self.labels,
            "state": self.state,
            "value": json_value(self.value, self.unit),
            "threshold": json_value(self.threshold, self.unit),
            "since": fmt.iso(self.since),
            "last_notified_at": fmt.iso(self.last_notified_at),
            "delivery": self.delivery,
            "delivery_error": self.delivery_error,
            "reason": self.reason,
        }


_DELIVERY = {
    "delivered": "ok",
    "suppressed": "ok",
    "pending": "pending",
    "claimed": "pending",
    "failed": "failed",
}


def list_alerts(session: Session) -> list[AlertView]:
    """Return every known alert with its state and the delivery state of its latest event."""
    latest = (
        select(col(AlertEvent.fingerprint), func.max(col(AlertEvent.id)).label("id"))
        .group_by(col(AlertEvent.fingerprint))
        .subquery()
    )
    events = {
        fp: (status, reason)
        for fp, status, reason in session.execute(
            select(
                col(AlertEvent.fingerprint), col(AlertEvent.status), col(AlertEvent.status_reason)
            ).join(latest, col(AlertEvent.id) == latest.c.id)
        )
    }
    order = {"firing": 0, "pending": 1, "inactive": 2}
    rows = sorted(
        session.execute(select(AlertState).execution_options(populate_existing=True)).scalars(),
        key=lambda r: (order.get(r.state, 3), -SEVERITY_RANK.get(r.severity, 0), r.rule, r.labels),
    )
    out = []
    for row in rows:
        status, status_reason = events.get(row.fingerprint, ("delivered", None))
        delivery = _DELIVERY.get(status, "pending")
        notes = loads(row.annotations)
        since = {"firing": row.firing_since, "pending": row.active_since}.get(
            row.state, row.resolved_at
        )
        out.append(
            AlertView(
                rule=row.rule,
                severity=row.severity,
                labels={str(k): str(v) for k, v in loads(row.labels).items()},
                fingerprint=row.fingerprint,
                state=row.state,
                value=row.value,
                threshold=row.threshold,
                value_text=str(notes.get("value", "")),
                threshold_text=str(notes.get("threshold", "")),
                since=since,
                last_notified_at=row.last_notified_at,
                delivery=delivery,
                delivery_error=status_reason if delivery != "ok" else None,
                reason=row.reason,
                unit=SPECS[str(notes["kind"])].unit if notes.get("kind") in SPECS else "",
            )
        )
    return out
