"""Delivery: drain the outbox of alert events, each message sent once.

``deliver_pending(session, now, notifiers, worker_id)``
    1. Pick events that are due (pending and past ``next_attempt_at``, or claimed by a worker
       whose lease expired), oldest first, never overtaking an earlier event still on its way:
       of the same alert, or of any alert while that one waits out a backoff or is in flight,
       so a channel that comes back gets the queue in the order it was recorded.
    2. Claim each with ``UPDATE ... WHERE status = 'pending'`` (or lease expired); only the
       worker whose update changed one row sends it.
    3. Send, record a ``Notification`` row per attempt, then mark the event delivered, failed
       (a permanent error: reported once, never retried) or pending again with a backoff that
       honours Slack's ``Retry-After``. An event is never dropped and never sent twice.

A send whose outcome is unknown (the process died after Slack took the message and before the
outbox recorded it: an attempt left no ``Notification`` row for the channel) is in doubt: the
next attempt asks the notifier where the message landed (``find``, Slack's history) before it
sends, and adopts it when found. A notifier that cannot look sends again (at least once).

Silences and inhibition are checked again here (``monitor.silences``): a silence added after a
transition was decided still holds its message back.
"""

from __future__ import annotations

import logging
import os
import socket
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlmodel import Session, SQLModel, col

from monitor import clock, db
from monitor.crashpoints import crashpoint
from monitor.models import AlertEvent, AlertState, Notification
from monitor.notifiers.base import Message, Notifier, NotifyError, Sent
from monitor.silences import active_silences, current_from_db, loads, muted_by

log = logging.getLogger("monitor.alerts")


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
    # The undelivered events of these alerts, in one query (not one per candidate): an event
    # waits while an earlier one of the same alert is still on its way.
    open_ids: dict[str, set[int]] = defaultdict(set)
    fps = sorted({fp for _, fp in candidates})
    for i in range(0, len(fps), 500):
        for oid, ofp in session.execute(
            select(col(AlertEvent.id), col(AlertEvent.fingerprint)).where(
                col(AlertEvent.fingerprint).in_(fps[i : i + 500]),
                col(AlertEvent.status).in_(("pending", "claimed")),
            )
        ):
            open_ids[ofp].add(oid)
    # The oldest event not due yet (backing off after a transient failure, or claimed by a
    # worker still sending it): nothing recorded after it may overtake it.
    head = session.execute(
        select(func.min(col(AlertEvent.id))).where(
            or_(
                and_(col(AlertEvent.status) == "pending", col(AlertEvent.next_attempt_at) > now),
                and_(col(AlertEvent.status) == "claimed", col(AlertEvent.claimed_until) >= now),
            )
        )
    ).scalar_one_or_none()
    session.commit()
    backing_off: dict[str, datetime] = {}
    for event_id, fp in candidates:
        assert event_id is not None
        if any(other < event_id for other in open_ids[fp]) or (
            head is not None and head < event_id
        ):
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
        if report.outcomes[-1][1] != "retrying":  # delivered, failed or suppressed: out of the way
            open_ids[fp].discard(event_id)
    return report


def _in_doubt(session: Session, event: AlertEvent, todo: Sequence[Notifier]) -> set[str]:
    """Return the channels an earlier attempt of ``event`` may have sent to without a record.

    Every attempt that finishes records one ``Notification`` row per channel it tried, so a
    channel with fewer rows than earlier attempts saw one cut off (or skipped while backing
    off, which costs one needless look-up).
    """
    earlier = event.attempts - 1  # this attempt's claim counted itself
    if earlier < 1:
        return set()
    rows = dict(
        session.execute(
            select(col(Notification.channel), func.count())
            .where(col(Notification.event_id) == event.id)
            .group_by(col(Notification.channel))
        ).all()
    )
    return {n.name for n in todo if rows.get(n.name, 0) < earlier}


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
        labels={str(k): str(v) for k, v in loads(event.labels).items()},
        created_at=event.created_at,
        value=event.value,
        threshold=event.threshold,
        reason=event.reason,
        annotations={str(k): str(v) for k, v in loads(event.annotations).items()},
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
    labels = loads(event.labels)
    muted = muted_by(
        active_silences(session, now), current_from_db(session), event.rule, event.severity, labels
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
    in_doubt = _in_doubt(session, event, todo)
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
        rendered = _message(event, threads.get(notifier.name))
        find = getattr(notifier, "find", None) if notifier.name in in_doubt else None
        try:
            if find is not None:
                sent = find(rendered)
                if sent is not None:
                    log.info(
                        "alert event %s (%s %s) was already on %s (an attempt cut off after "
                        "sending): not sent again", event.id, event.rule, event.transition,
                        notifier.name,
                    )  # fmt: skip
            if sent is None:
                sent = notifier.send(rendered)
                crashpoint("delivery.sent")  # sent, and not yet recorded: the in-doubt case
        except NotifyError as exc:
            if find is not None and sent is None and not exc.permanent:
                # The look-up (or the send after it) failed: no row, so the doubt stays.
                transient.append(exc)
                backing_off[notifier.name] = now + backoff(
                    event.attempts, exc.retry_after, max_backoff
                )
                continue
            error = exc
        except Exception as exc:
            # A bug in a notifier: keep the event queued (never drop it) and say so loudly.
            log.exception("notifier %s crashed on alert event %s", notifier.name, event.id)
            error = NotifyError(f"{notifier.name}: {type(exc).__name__}", kind="crashed")
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
        db.bump(session, "notification_failures", f"{notifier.name}|{_outcome(error)}|{error.kind}")
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
