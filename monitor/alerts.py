"""The alert lifecycle: decide (state machine), record (outbox), deliver (exactly once).

An alert *is* its label set (rule, severity, scope labels); its fingerprint is a hash of them.
Two plain steps, each a function of ``(session, now)``:

``evaluate_all(session, now, rules)``
    1. Measure every enabled rule (``rules.evaluate``).
    2. Feed each label set's condition to the pure ``next_state``: inactive -> pending (``for``
       not yet elapsed) -> firing -> inactive again (resolved), ``keep_firing_for`` holding a
       firing alert through short gaps.
    3. Write the new state with a compare-and-set on ``last_evaluated_at`` and, for every
       transition worth a message, one ``AlertEvent`` row (the outbox) in the same transaction.
       Two processes evaluating at once cannot both write a transition: the loser's update
       matches no row and it writes no event.

``deliver_pending(session, now, notifiers, worker_id)``
    1. Pick events that are due (pending and past ``next_attempt_at``, or claimed by a worker
       whose lease expired), oldest first, never overtaking an earlier event of the same alert.
    2. Claim each with ``UPDATE ... WHERE status = 'pending'`` (or lease expired); only the
       worker whose update changed one row sends it.
    3. Send, record a ``Notification`` row per attempt, then mark the event delivered, failed
       (a permanent error: reported once, never retried) or pending again with a backoff that
       honours Slack's ``Retry-After``. An event is never dropped and never sent twice.

Silences and inhibition (a firing critical mutes the lower severities of the same rule and
scope) are checked when an event is decided and again when it is delivered. Every decision has
a named reason (``REASONS``) that is logged and stored on the alert.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import Table, and_, func, or_, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, SQLModel, col

from monitor import clock, db
from monitor.db import advisory_lock_key
from monitor.models import AlertEvent, AlertState, Notification, Silence
from monitor.notifiers.base import Message, Notifier, NotifyError, Sent
from monitor.rules import SCOPE_KEYS, Evaluation, Rule, evaluate

if TYPE_CHECKING:
    from monitor.config import Settings

log = logging.getLogger(__name__)

SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}
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
    "already_evaluated": "this alert was already evaluated at this time or later: unchanged",
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


# --- silences and inhibition ----------------------------------------------------------


def _json(data: Mapping[str, Any]) -> str:
    return orjson.dumps(dict(data), option=orjson.OPT_SORT_KEYS).decode()


def _loads(raw: str | None) -> dict[str, Any]:
    if not raw:
        return {}
    data = orjson.loads(raw)
    return data if isinstance(data, dict) else {}


def silence_matches(matchers: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    """Return whether every matcher equals the alert's label of the same name."""
    return bool(matchers) and all(labels.get(k) == v for k, v in matchers.items())


def active_silences(session: Session, now: datetime) -> list[Silence]:
    """Return the silences in force at ``now``."""
    stmt = (
        select(Silence)
        .where(col(Silence.starts_at) <= now, col(Silence.ends_at) > now)
        .order_by(col(Silence.id))
        .execution_options(populate_existing=True)
    )
    return list(session.execute(stmt).scalars())


def add_silence(
    session: Session,
    now: datetime,
    matchers: Mapping[str, str],
    duration: timedelta,
    comment: str = "",
    *,
    starts_at: datetime | None = None,
) -> Silence:
    """Create a silence for ``duration`` from ``starts_at`` (default ``now``) and commit it."""
    if not matchers:
        raise ValueError("a silence needs at least one matcher, like rule=batch_failure_rate")
    if duration <= timedelta(0):
        raise ValueError("a silence must last longer than 0s")
    start = starts_at or now
    silence = Silence(
        matchers=_json(matchers),
        starts_at=start,
        ends_at=start + duration,
        comment=comment,
        created_at=now,
    )
    session.add(silence)
    session.commit()
    log.info("silence %s added: %s until %s", silence.id, silence.matchers, silence.ends_at)
    return silence


def list_silences(
    session: Session, now: datetime, *, include_expired: bool = False
) -> list[Silence]:
    """Return the silences that have not ended (or all of them), newest first."""
    stmt = (
        select(Silence).order_by(col(Silence.id).desc()).execution_options(populate_existing=True)
    )
    if not include_expired:
        stmt = stmt.where(col(Silence.ends_at) > now)
    return list(session.execute(stmt).scalars())


def expire_silence(session: Session, now: datetime, silence_id: int) -> bool:
    """End a silence at ``now``; return False when there is no such silence still in force."""
    result = session.execute(
        update(Silence)
        .where(col(Silence.id) == silence_id, col(Silence.ends_at) > now)
        .values(ends_at=now)
        .execution_options(synchronize_session=False)
    )
    session.commit()
    return db.rowcount(result) == 1


def _scope(labels: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple((k, labels[k]) for k in SCOPE_KEYS if k in labels)


@dataclass
class _Current:
    """The alerts' states as known during one evaluation round (for inhibition)."""

    by_key: dict[tuple[str, tuple[tuple[str, str], ...]], dict[str, tuple[str, str]]] = field(
        default_factory=dict
    )

    def set(self, fp: str, rule: str, severity: str, labels: Mapping[str, str], state: str) -> None:
        self.by_key.setdefault((rule, _scope(labels)), {})[fp] = (severity, state)

    def inhibitor(self, rule: str, severity: str, labels: Mapping[str, str]) -> str | None:
        """Return a description of a firing higher-severity alert of the same rule and scope."""
        rank = SEVERITY_RANK.get(severity, 0)
        for fp, (sev, state) in sorted(self.by_key.get((rule, _scope(labels)), {}).items()):
            if state == "firing" and SEVERITY_RANK.get(sev, 0) > rank:
                return f"inhibited by the firing {sev} alert {fp[:12]}"
        return None


def _muted(
    silences: Sequence[Silence],
    current: _Current,
    rule: str,
    severity: str,
    labels: Mapping[str, str],
) -> str | None:
    for s in silences:
        if silence_matches(_loads(s.matchers), labels):
            return f"silenced by silence {s.id}" + (f" ({s.comment})" if s.comment else "")
    return current.inhibitor(rule, severity, labels)


def _current_from_db(session: Session) -> _Current:
    current = _Current()
    stmt = select(
        col(AlertState.fingerprint),
        col(AlertState.rule),
        col(AlertState.severity),
        col(AlertState.labels),
        col(AlertState.state),
    ).where(col(AlertState.state) == "firing")
    for fp, rule, severity, labels, state in session.execute(stmt):
        current.set(fp, rule, severity, _loads(labels), state)
    return current


# --- evaluate_all ---------------------------------------------------------------------


@dataclass(frozen=True)
class AlertResult:
    """What one evaluation round decided for one alert."""

    rule: str
    severity: str
    labels: dict[str, str]
    fingerprint: str
    state: str
    value: float | None
    threshold: float | None
    condition: str  # true | false | no-data | unknown
    decision: str  # a key of REASONS
    reason: str  # the decision and the measurement, in words
    event: str | None = None

    def as_json(self) -> dict[str, Any]:
        """Return the ``batch-monitor check --json`` form."""
        return {
            "rule": self.rule,
            "labels": self.labels,
            "state": self.state,
            "value": self.value,
            "threshold": self.threshold,
            "reason": self.reason,
        }


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
    current = _current_from_db(session)

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
        items.append(_Item(known, row.severity, row.rule, _loads(row.labels), fp, None))
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
                    rule.name, rule.severity, {"rule": rule.name, "severity": rule.severity},
                    "", "unknown", None, rule.threshold, "unknown", "rule_error",
                    "rule_error: the measurement failed; see the log",
                )
            )  # fmt: skip
    return results


def _decide(
    session: Session,
    now: datetime,
    item: _Item,
    row: AlertState | None,
    silences: Sequence[Silence],
    current: _Current,
) -> AlertResult:
    ev = item.evaluation
    prev = _snapshot(row)
    value = ev.value if ev else (row.value if row else None)
    threshold = ev.threshold if ev else (row.threshold if row else None)
    condition_word = ev.state_word if ev else "false"

    def result(state: str, decision: str, detail: str, event: str | None = None) -> AlertResult:
        return AlertResult(
            item.rule_name, item.severity, item.labels, item.fp, state, value, threshold,
            condition_word, decision, f"{decision}: {detail}", event,
        )  # fmt: skip

    if row is not None and row.last_evaluated_at is not None and now <= row.last_evaluated_at:
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
        muted = _muted(silences, current, item.rule_name, item.severity, item.labels)
        decision = next_state(prev, condition, now, item.rule, muted=muted)
        if muted and decision.reason.endswith("_muted"):
            detail = f"{muted}; {detail}"

    s = decision.state
    annotations = ev.annotations() if ev else _loads(row.annotations if row else None)
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
        "annotations": _json(annotations),
        "last_evaluated_at": now,
    }
    if row is None:
        stmt = _insert(session).values(
            fingerprint=item.fp,
            rule=item.rule_name,
            severity=item.severity,
            labels=_json(item.labels),
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
                labels=_json(item.labels),
                transition=decision.event,
                value=value,
                threshold=threshold,
                reason=detail[:4000],
                annotations=_json(annotations),
                created_at=now,
                status="pending",
                attempts=0,
                next_attempt_at=now,
            )
        )
    level = logging.INFO if decision.event or s.state != prev.state else logging.DEBUG
    log.log(
        level,
        "alert %s %s: %s -> %s (%s)%s: %s",
        item.rule_name,
        _fmt_labels(item.labels),
        prev.state,
        s.state,
        decision.reason,
        f", queued {decision.event}" if decision.event else "",
        detail,
    )
    return result(s.state, decision.reason, detail, decision.event)


def _insert(session: Session) -> Any:
    table = _state_table()
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def _fmt_labels(labels: Mapping[str, str]) -> str:
    scope = {k: v for k, v in labels.items() if k not in ("rule", "severity")}
    return "{" + ", ".join(f"{k}={v}" for k, v in sorted(scope.items())) + "}"


# --- deliver_pending ------------------------------------------------------------------


@dataclass
class DeliveryReport:
    """What one delivery step did, event by event."""

    delivered: int = 0
    retrying: int = 0
    failed: int = 0
    suppressed: int = 0
    skipped: int = 0
    outcomes: list[tuple[int, str, str]] = field(default_factory=list)  # (event, outcome, why)

    def add(self, event_id: int, outcome: str, why: str) -> None:
        """Record one event's outcome (delivered, retrying, failed, suppressed, skipped)."""
        setattr(self, outcome, getattr(self, outcome) + 1)
        self.outcomes.append((event_id, outcome, why))


def default_worker_id() -> str:
    """Return an identity for this process (host and pid) for claims."""
    return f"{socket.gethostname()}:{os.getpid()}"[:128]


def _due(now: datetime) -> Any:
    return or_(
        and_(
            col(AlertEvent.status) == "pending",
            or_(col(AlertEvent.next_attempt_at).is_(None), col(AlertEvent.next_attempt_at) <= now),
        ),
        and_(col(AlertEvent.status) == "claimed", col(AlertEvent.claimed_until) < now),
    )


def backoff(attempts: int, retry_after: float | None, max_backoff: timedelta) -> timedelta:
    """Return how long to wait before the next attempt.

    Slack's ``Retry-After`` wins when given (capped at ``max_backoff``); otherwise 30 s doubled
    per failed attempt, capped at ``max_backoff``.
    """
    if retry_after is not None:
        return min(timedelta(seconds=retry_after), max_backoff)
    return min(timedelta(seconds=30 * 2 ** max(0, min(attempts - 1, 20))), max_backoff)


def deliver_pending(
    session: Session,
    now: datetime,
    notifiers: Sequence[Notifier],
    worker_id: str,
    *,
    claim_timeout: timedelta = timedelta(minutes=10),
    max_backoff: timedelta = timedelta(hours=1),
    warn_after_attempts: int = 10,
    limit: int = 200,
) -> DeliveryReport:
    """Deliver the due events of the outbox once each; return what happened to every one.

    ``claim_timeout`` is the lease on a claimed event: a worker that dies mid-delivery holds it
    that long before another may take it over. ``warn_after_attempts`` transient failures in a
    row are logged as an error once (the event keeps being retried).
    """
    report = DeliveryReport()
    candidates = session.execute(
        select(col(AlertEvent.id), col(AlertEvent.fingerprint))
        .where(_due(now))
        .order_by(col(AlertEvent.id))
        .limit(limit)
    ).all()
    session.commit()
    backing_off: dict[str, datetime] = {}
    for event_id, fp in candidates:
        assert event_id is not None
        earlier = session.execute(
            select(func.count())
            .select_from(AlertEvent)
            .where(
                col(AlertEvent.fingerprint) == fp,
                col(AlertEvent.id) < event_id,
                col(AlertEvent.status).in_(("pending", "claimed")),
            )
        ).scalar_one()
        if earlier:
            report.add(event_id, "skipped", "waiting_for_earlier_event")
            continue
        done = _delivered_to(session, event_id)
        todo = [n for n in notifiers if n.name not in done]
        if todo and all(n.name in backing_off for n in todo):
            report.add(event_id, "skipped", "channel_backing_off")
            continue

        claimed = db.rowcount(
            session.execute(
                update(AlertEvent)
                .where(col(AlertEvent.id) == event_id, _due(now))
                .values(
                    status="claimed",
                    claimed_by=worker_id,
                    claimed_until=now + claim_timeout,
                    attempts=col(AlertEvent.attempts) + 1,
                )
                .execution_options(synchronize_session=False)
            )
        )
        session.commit()
        if claimed != 1:
            report.add(event_id, "skipped", "claimed_elsewhere")
            continue
        _deliver_one(
            session, now, event_id, todo, worker_id, backing_off, report, max_backoff,
            warn_after_attempts,
        )  # fmt: skip
    return report


def _delivered_to(session: Session, event_id: int) -> set[str]:
    stmt = select(col(Notification.channel)).where(
        col(Notification.event_id) == event_id, col(Notification.outcome) == "ok"
    )
    return {c for (c,) in session.execute(stmt)}


def _thread(session: Session, event: AlertEvent, channel: str) -> Sent | None:
    """Return where the firing message of this alert's current episode landed on ``channel``."""
    firing_id = session.execute(
        select(func.max(col(AlertEvent.id))).where(
            col(AlertEvent.fingerprint) == event.fingerprint,
            col(AlertEvent.transition) == "firing",
            col(AlertEvent.id) < event.id,
        )
    ).scalar_one_or_none()
    if firing_id is None:
        return None
    row = session.execute(
        select(col(Notification.target), col(Notification.message_ref))
        .where(
            col(Notification.event_id) == firing_id,
            col(Notification.channel) == channel,
            col(Notification.outcome) == "ok",
        )
        .order_by(col(Notification.id).desc())
        .limit(1)
    ).first()
    return Sent(target=row[0], message_ref=row[1]) if row else None


def _message(event: AlertEvent, thread: Sent | None) -> Message:
    return Message(
        rule=event.rule,
        severity=event.severity,
        transition=event.transition,
        labels={str(k): str(v) for k, v in _loads(event.labels).items()},
        created_at=event.created_at,
        value=event.value,
        threshold=event.threshold,
        reason=event.reason,
        annotations={str(k): str(v) for k, v in _loads(event.annotations).items()},
        event_id=event.id,
        thread=thread,
    )


def _deliver_one(
    session: Session,
    now: datetime,
    event_id: int,
    todo: Sequence[Notifier],
    worker_id: str,
    backing_off: dict[str, datetime],
    report: DeliveryReport,
    max_backoff: timedelta,
    warn_after_attempts: int,
) -> None:
    event = session.execute(
        select(AlertEvent)
        .where(col(AlertEvent.id) == event_id)
        .execution_options(populate_existing=True)
    ).scalar_one()
    session.expunge(event)  # a detached value: the updates below are explicit statements
    labels = _loads(event.labels)
    muted = _muted(
        active_silences(session, now), _current_from_db(session), event.rule, event.severity, labels
    )
    if muted:
        _finish(session, event, worker_id, status="suppressed", reason=muted, now=now)
        if event.transition == "firing":
            # Never announced: let the next evaluation announce it once the mute is over.
            session.execute(
                update(AlertState)
                .where(
                    col(AlertState.fingerprint) == event.fingerprint,
                    col(AlertState.last_notified_at) == event.created_at,
                )
                .values(last_notified_at=None)
                .execution_options(synchronize_session=False)
            )
        session.commit()
        log.info(
            "alert event %s (%s %s) suppressed: %s", event.id, event.rule, event.transition, muted
        )
        report.add(event_id, "suppressed", muted)
        return

    threads = {n.name: _thread(session, event, n.name) for n in todo}
    session.commit()  # no transaction stays open while we wait on the network

    transient: list[NotifyError] = []
    permanent: list[tuple[str, NotifyError]] = []
    for notifier in todo:
        if notifier.name in backing_off:
            transient.append(NotifyError(f"{notifier.name}: backing off"))
            continue
        started = clock.monotonic()
        sent: Sent | None = None
        error: NotifyError | None = None
        try:
            sent = notifier.send(_message(event, threads.get(notifier.name)))
        except NotifyError as exc:
            error = exc
        except Exception as exc:
            # A bug in a notifier: keep the event queued (never drop it) and say so loudly.
            log.exception("notifier %s crashed on alert event %s", notifier.name, event.id)
            error = NotifyError(f"{notifier.name}: {type(exc).__name__}")
        session.execute(
            SQLModel.metadata.tables["notification"]
            .insert()
            .values(
                event_id=event.id,
                channel=notifier.name,
                outcome=_outcome(error),
                error=None if error is None else error.message[:4000],
                duration_seconds=round(clock.monotonic() - started, 6),
                created_at=now,
                target=sent.target if sent else None,
                message_ref=sent.message_ref if sent else None,
            )
        )
        if error is None:
            continue
        if error.permanent:
            permanent.append((notifier.name, error))
        else:
            transient.append(error)
            wait = backoff(event.attempts, error.retry_after, max_backoff)
            backing_off[notifier.name] = now + wait

    if transient:
        retry_after = max((e.retry_after or 0.0 for e in transient), default=0.0) or None
        wait = backoff(event.attempts, retry_after, max_backoff)
        message = "; ".join(e.message for e in transient)
        _finish(
            session, event, worker_id, status="pending", reason=message[:255], now=now,
            next_attempt_at=now + wait,
        )  # fmt: skip
        session.commit()
        logger = log.error if event.attempts == warn_after_attempts else log.warning
        logger(
            "alert event %s (%s %s) not delivered (attempt %s): %s; retrying at %s%s",
            event.id, event.rule, event.transition, event.attempts, message,
            (now + wait).isoformat(timespec="seconds"),
            " (it keeps being retried)" if event.attempts >= warn_after_attempts else "",
        )  # fmt: skip
        report.add(event_id, "retrying", message)
        return
    if permanent:
        message = "; ".join(e.message for _, e in permanent)
        _finish(session, event, worker_id, status="failed", reason=message[:255], now=now)
        session.commit()
        # Logged once: a failed event is never picked up again.
        log.error(
            "alert event %s (%s %s) could not be delivered and will not be retried: %s",
            event.id, event.rule, event.transition, message,
        )  # fmt: skip
        report.add(event_id, "failed", message)
        return
    _finish(session, event, worker_id, status="delivered", reason=None, now=now)
    session.commit()
    log.info("alert event %s (%s %s) delivered", event.id, event.rule, event.transition)
    report.add(event_id, "delivered", "ok")


def _outcome(error: NotifyError | None) -> str:
    if error is None:
        return "ok"
    return "permanent" if error.permanent else "transient"


def _finish(
    session: Session,
    event: AlertEvent,
    worker_id: str,
    *,
    status: str,
    reason: str | None,
    now: datetime,
    next_attempt_at: datetime | None = None,
) -> None:
    values: dict[str, Any] = {
        "status": status,
        "status_reason": reason,
        "claimed_by": None,
        "claimed_until": None,
    }
    if status == "pending":
        values["next_attempt_at"] = next_attempt_at
    else:
        values["processed_at"] = now
    result = session.execute(
        update(AlertEvent)
        .where(
            col(AlertEvent.id) == event.id,
            col(AlertEvent.status) == "claimed",
            col(AlertEvent.claimed_by) == worker_id,
        )
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if db.rowcount(result) != 1:
        log.warning(
            "alert event %s: the claim expired before delivery finished (another worker may "
            "have taken it over); raise [alerting] claim_timeout",
            event.id,
        )


# --- reading the state back -----------------------------------------------------------


@dataclass(frozen=True)
class AlertView:
    """One alert as ``batch-monitor alerts`` shows it."""

    rule: str
    severity: str
    labels: dict[str, str]
    fingerprint: str
    state: str
    value: float | None
    threshold: float | None
    value_text: str
    threshold_text: str
    since: datetime | None
    last_notified_at: datetime | None
    delivery: str  # ok | pending | failed
    delivery_error: str | None
    reason: str | None

    def as_json(self) -> dict[str, Any]:
        """Return the ``batch-monitor alerts --json`` form."""
        return {
            "rule": self.rule,
            "labels": self.labels,
            "state": self.state,
            "value": self.value,
            "threshold": self.threshold,
            "since": self.since.isoformat() if self.since else None,
            "last_notified_at": self.last_notified_at.isoformat()
            if self.last_notified_at
            else None,
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
        notes = _loads(row.annotations)
        since = {"firing": row.firing_since, "pending": row.active_since}.get(
            row.state, row.resolved_at
        )
        out.append(
            AlertView(
                rule=row.rule,
                severity=row.severity,
                labels={str(k): str(v) for k, v in _loads(row.labels).items()},
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
            )
        )
    return out


def notify_test_message(now: datetime) -> Message:
    """Return the message ``batch-monitor notify-test`` sends."""
    return Message(
        rule="notify_test",
        severity="info",
        transition="test",
        labels={"rule": "notify_test", "severity": "info"},
        created_at=now,
        reason="If you can read this, batch-monitor can deliver alerts here.",
        annotations={"summary": "Test message from batch-monitor."},
    )
