"""The alert lifecycle end to end: rows in the database, time moved by hand, the real slack_sdk
talking to a fake Slack over HTTP, and the exact messages it received."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import Engine, func, select, update
from sqlmodel import Session, col
from typer.testing import CliRunner

from monitor import db
from monitor.alerts import Snapshot, evaluate_all, list_alerts, next_state
from monitor.cli import app
from monitor.config import Settings
from monitor.models import AlertEvent, AlertState, Batch, Notification
from monitor.notifiers import from_settings
from monitor.notifiers.base import Notifier
from monitor.notifiers.delivery import deliver_pending
from monitor.notifiers.log import LogNotifier
from monitor.notifiers.slack import SlackNotifier, SlackWebhookNotifier
from monitor.rulekinds import Rule
from monitor.silences import add_silence, expire_silence, list_silences
from tests.conftest import migrate_fresh, utc
from tests.factories import add_batch, add_run, rule
from tests.fakeslack import FakeSlack

T0 = utc(2026, 11, 20, 12)
M = timedelta(minutes=1)
H = timedelta(hours=1)
FIRING_TS = "1800000001.000001"  # the fake's first message
OK = ":white_check_mark:"


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        yield fake


def bot(fake: FakeSlack, **kw: Any) -> SlackNotifier:
    """Return a bot-token notifier pointed at the fake (critical alerts to #critical)."""
    return SlackNotifier(
        kw.pop("token", fake.token),
        kw.pop("channel", "#alerts"),
        channels=kw.pop("channels", {"critical": "#critical"}),
        base_url=fake.base_url,
        **kw,
    )


def stale(threshold: str = "30m", severity: str = "warning", **kw: Any) -> Rule:
    """Return a collector_stale rule named "stale" that reminds every hour."""
    kw.setdefault("repeat_interval", "1h")
    return rule("collector_stale", threshold, name="stale", severity=severity, **kw)


def step(
    session: Session,
    now: datetime,
    rules: Sequence[Rule],
    notifiers: Sequence[Notifier],
    worker: str = "w1",
) -> Any:
    """Evaluate and deliver once at ``now`` (what the daemon does every minute)."""
    evaluate_all(session, now, rules)
    return deliver_pending(session, now, notifiers, worker)


def events(session: Session) -> list[tuple[str, str, str]]:
    """Return ``(severity, transition, status)`` of every event, oldest first."""
    rows = session.execute(
        select(
            col(AlertEvent.severity), col(AlertEvent.transition), col(AlertEvent.status)
        ).order_by(col(AlertEvent.id))
    )
    return [(a, b, c) for a, b, c in rows]


def state_of(session: Session, severity: str = "warning") -> AlertState:
    return session.execute(
        select(AlertState)
        .where(AlertState.severity == severity)  # type: ignore[arg-type]
        .execution_options(populate_existing=True)
    ).scalar_one()


# --- next_state: the pure state machine ---------------------------------------------------


def test_next_state_waits_for_for_then_fires_once_then_reminds() -> None:
    r = rule("collector_stale", "30m", **{"for": "10m", "repeat_interval": "1h"})
    s0 = Snapshot()
    d1 = next_state(s0, True, T0, r)
    assert (d1.state.state, d1.event, d1.reason) == ("pending", None, "pending")
    d2 = next_state(d1.state, True, T0 + 9 * M, r)
    assert (d2.state.state, d2.event, d2.reason) == ("pending", None, "pending_waiting")
    d3 = next_state(d2.state, True, T0 + 10 * M, r)
    assert (d3.state.state, d3.event, d3.reason) == ("firing", "firing", "fired")
    assert d3.state.firing_since == T0 + 10 * M
    d4 = next_state(d3.state, True, T0 + 69 * M, r)
    assert (d4.event, d4.reason) == (None, "firing")
    d5 = next_state(d4.state, True, T0 + 70 * M, r)
    assert (d5.event, d5.reason) == ("reminder", "reminder_due")
    d6 = next_state(d5.state, False, T0 + 71 * M, r)
    assert (d6.state.state, d6.event, d6.reason) == ("inactive", "resolved", "resolved")
    assert d6.state.resolved_at == T0 + 71 * M


def test_next_state_pending_that_clears_sends_nothing() -> None:
    r = rule("collector_stale", "30m", **{"for": "10m"})
    d = next_state(next_state(Snapshot(), True, T0, r).state, False, T0 + 5 * M, r)
    assert (d.state.state, d.event, d.reason) == ("inactive", None, "pending_cleared")


def test_next_state_keep_firing_for_rides_out_a_gap() -> None:
    r = rule("collector_stale", "30m", keep_firing_for="15m")
    firing = next_state(Snapshot(), True, T0, r).state
    gap = next_state(firing, False, T0 + 10 * M, r)
    assert (gap.state.state, gap.event, gap.reason) == ("firing", None, "kept_firing")
    back = next_state(gap.state, True, T0 + 12 * M, r)
    assert (back.state.state, back.event) == ("firing", None)
    # 15 minutes after the condition was last true, it resolves.
    assert next_state(back.state, False, T0 + 26 * M, r).reason == "kept_firing"
    assert next_state(back.state, False, T0 + 27 * M, r).event == "resolved"


def test_next_state_muted_alert_is_announced_when_the_mute_ends() -> None:
    r = rule("collector_stale", "30m", repeat_interval="4h")
    muted = next_state(Snapshot(), True, T0, r, muted="silenced by silence 1")
    assert (muted.state.state, muted.event, muted.reason) == ("firing", None, "fired_muted")
    still = next_state(muted.state, True, T0 + M, r, muted="silenced by silence 1")
    assert (still.event, still.reason) == (None, "firing_muted")
    after = next_state(still.state, True, T0 + 2 * M, r)
    assert (after.event, after.reason) == ("firing", "fired_after_mute")
    # Resolving an alert that was never announced is not announced either.
    never = next_state(muted.state, False, T0 + M, r)
    assert (never.event, never.reason) == (None, "resolved_unannounced")


def test_next_state_send_resolved_off_and_no_reminders() -> None:
    r = rule("collector_stale", "30m", send_resolved=False, repeat_interval="0s")
    firing = next_state(Snapshot(), True, T0, r).state
    assert next_state(firing, True, T0 + 30 * 24 * H, r).event is None
    d = next_state(firing, False, T0 + H, r)
    assert (d.state.state, d.event, d.reason) == ("inactive", None, "resolved_quiet")


# --- the messages Slack receives ----------------------------------------------------------


def test_firing_reminder_then_resolved_in_thread(session: Session, slack: FakeSlack) -> None:
    add_run(session, "batches", T0 - 5 * M, T0)
    session.commit()
    n = [bot(slack, grafana_url="https://grafana.example/d/batch")]
    r = [stale()]
    for minutes in (10, 31, 45, 91):
        step(session, T0 + minutes * M, r, n)
    add_run(session, "batches", T0 + 99 * M, T0 + 100 * M)
    session.commit()
    step(session, T0 + 101 * M, r, n)
    step(session, T0 + 125 * M, r, n)  # fresh again: nothing more

    assert slack.calls() == [
        ("chat.postMessage", "#alerts", None, ":warning: WARNING stale is firing"),
        ("chat.postMessage", "#alerts", None, ":warning: Still firing: WARNING stale"),
        ("chat.update", "C0ALERTS", FIRING_TS, ":white_check_mark: Resolved (was WARNING): stale"),
        ("chat.postMessage", "C0ALERTS", FIRING_TS, ":white_check_mark: Resolved: WARNING stale"),
    ]
    firing = " | ".join(slack.requests[0].texts())
    for part in (
        "*Value*\n31m (threshold &gt; 30m)",
        "*Scope*\nsource=batches",
        "*What to do:* Check the daemon's log",
        "<https://grafana.example/d/batch|Grafana panel>",
        "time since a successful collection 31m is above 30m",
    ):
        assert part in firing
    assert slack.requests[0].headers["Authorization"] == f"Bearer {slack.token}"
    assert events(session) == [
        ("warning", "firing", "delivered"),
        ("warning", "reminder", "delivered"),
        ("warning", "resolved", "delivered"),
    ]
    notes = session.execute(
        select(col(Notification.outcome), col(Notification.target), col(Notification.message_ref))
    ).all()
    assert [tuple(n) for n in notes] == [
        ("ok", "C0ALERTS", FIRING_TS),
        ("ok", "C0ALERTS", "1800000002.000002"),
        ("ok", "C0ALERTS", "1800000003.000003"),
    ]
    [view] = list_alerts(session)
    assert (view.state, view.delivery, view.last_notified_at) == ("inactive", "ok", T0 + 91 * M)


def test_nothing_is_sent_during_a_silence(session: Session, slack: FakeSlack) -> None:
    add_run(session, "batches", T0 - 5 * M, T0)
    session.commit()
    n, r = [bot(slack)], [stale()]
    silence = add_silence(
        session, T0 + 20 * M, {"rule": "stale", "source": "batches"}, 2 * H, "collector upgrade"
    )
    step(session, T0 + 31 * M, r, n)
    assert state_of(session).state == "firing"
    assert state_of(session).reason is not None
    assert state_of(session).reason.startswith(  # type: ignore[union-attr]
        f"fired_muted: silenced by silence {silence.id} (collector upgrade)"
    )
    step(session, T0 + 91 * M, r, n)
    step(session, T0 + 139 * M, r, n)
    assert slack.calls() == []
    assert [s.id for s in list_silences(session, T0 + 139 * M)] == [silence.id]
    # The silence ended at +140m: the alert, still firing and never announced, is announced.
    step(session, T0 + 141 * M, r, n)
    assert list_silences(session, T0 + 141 * M) == []
    assert slack.calls() == [
        ("chat.postMessage", "#alerts", None, ":warning: WARNING stale is firing")
    ]
    assert state_of(session).reason.startswith("fired_after_mute")  # type: ignore[union-attr]


def test_a_queued_event_is_suppressed_when_a_silence_starts_before_delivery(
    session: Session, slack: FakeSlack
) -> None:
    add_run(session, "batches", T0 - 5 * M, T0)
    session.commit()
    n, r = [bot(slack)], [stale()]
    evaluate_all(session, T0 + 31 * M, r)  # queued, not yet delivered
    silence = add_silence(session, T0 + 31 * M, {"rule": "stale"}, H)
    report = deliver_pending(session, T0 + 32 * M, n, "w1")
    assert (report.suppressed, slack.calls()) == (1, [])
    assert events(session) == [("warning", "firing", "suppressed")]
    assert expire_silence(session, T0 + 40 * M, silence.id or 0) is True
    assert expire_silence(session, T0 + 40 * M, silence.id or 0) is False
    step(session, T0 + 41 * M, r, n)
    assert slack.calls() == [
        ("chat.postMessage", "#alerts", None, ":warning: WARNING stale is firing")
    ]


def test_a_firing_critical_mutes_the_warning_of_the_same_rule_and_scope(
    session: Session, slack: FakeSlack
) -> None:
    add_run(session, "batches", T0 - 5 * M, T0)
    add_run(session, "usage", T0 - 5 * M, T0 + 2 * H)  # fresh: never alerts
    session.commit()
    n = [bot(slack)]
    r = [stale("30m", "warning"), stale("1h", "critical")]
    for minutes in (31, 61, 91, 121):
        step(session, T0 + minutes * M, r, n)
    add_run(session, "batches", T0 + 125 * M, T0 + 125 * M)
    session.commit()
    step(session, T0 + 126 * M, r, n)
    crit_ts = "1800000002.000002"
    assert slack.calls() == [
        ("chat.postMessage", "#alerts", None, ":warning: WARNING stale is firing"),
        ("chat.postMessage", "#critical", None, ":red_circle: CRITICAL stale is firing"),
        # +91m: the warning's reminder was due, but the critical was firing: muted.
        ("chat.postMessage", "#critical", None, ":red_circle: Still firing: CRITICAL stale"),
        # Both resolve in one round; the critical is decided first.
        ("chat.update", "C0CRIT", crit_ts, ":white_check_mark: Resolved (was CRITICAL): stale"),
        ("chat.postMessage", "C0CRIT", crit_ts, ":white_check_mark: Resolved: CRITICAL stale"),
        ("chat.update", "C0ALERTS", FIRING_TS, ":white_check_mark: Resolved (was WARNING): stale"),
        ("chat.postMessage", "C0ALERTS", FIRING_TS, ":white_check_mark: Resolved: WARNING stale"),
    ]


def test_warning_and_critical_firing_together_send_only_the_critical(
    session: Session, slack: FakeSlack
) -> None:
    add_run(session, "batches", T0 - 5 * M, T0)
    session.commit()
    n = [bot(slack)]
    step(session, T0 + 61 * M, [stale("30m", "warning"), stale("1h", "critical")], n)
    assert slack.calls() == [
        ("chat.postMessage", "#critical", None, ":red_circle: CRITICAL stale is firing")
    ]
    warning = state_of(session, "warning")
    assert warning.state == "firing"
    assert warning.reason is not None
    assert warning.reason.startswith("fired_muted: inhibited by the firing critical alert")


def test_a_message_queued_during_an_outage_is_delivered_after_it(
    session: Session, slack: FakeSlack
) -> None:
    add_run(session, "batches", T0 - 5 * M, T0)
    session.commit()
    n, r = [bot(slack)], [stale()]
    slack.start_outage()
    report = step(session, T0 + 31 * M, r, n)
    assert (report.retrying, report.delivered) == (1, 0)
    event = session.execute(
        select(AlertEvent).execution_options(populate_existing=True)
    ).scalar_one()
    assert (event.status, event.attempts) == ("pending", 1)
    assert event.next_attempt_at == T0 + 31 * M + timedelta(seconds=30)
    # Not due yet: no request at all.
    deliver_pending(session, T0 + 31 * M + timedelta(seconds=20), n, "w1")
    assert len(slack.requests) == 1
    # The condition clears while Slack is still down: the resolution queues behind the firing.
    add_run(session, "batches", T0 + 35 * M, T0 + 35 * M)
    session.commit()
    report = step(session, T0 + 36 * M, r, n)
    assert report.outcomes[-1][1:] == ("skipped", "waiting_for_earlier_event")
    slack.end_outage()
    deliver_pending(session, T0 + 36 * M + timedelta(seconds=59), n, "w1")  # backoff: 60 s
    assert len(slack.requests) == 2
    deliver_pending(session, T0 + 37 * M, n, "w1")
    firing = ("chat.postMessage", "#alerts", None, ":warning: WARNING stale is firing")
    assert [(c, r.status) for c, r in zip(slack.calls(), slack.requests, strict=True)] == [
        (firing, 503),
        (firing, 503),
        (firing, 200),
        (("chat.update", "C0ALERTS", FIRING_TS, f"{OK} Resolved (was WARNING): stale"), 200),
        (("chat.postMessage", "C0ALERTS", FIRING_TS, f"{OK} Resolved: WARNING stale"), 200),
    ]
    outcomes = session.execute(
        select(col(Notification.outcome)).order_by(col(Notification.id))
    ).all()
    assert [o for (o,) in outcomes] == ["transient", "transient", "ok", "ok"]
    assert events(session) == [
        ("warning", "firing", "delivered"),
        ("warning", "resolved", "delivered"),
    ]


def test_rate_limit_retry_after_is_honoured(session: Session, slack: FakeSlack) -> None:
    add_run(session, "batches", T0 - 5 * M, T0)
    session.commit()
    n = [bot(slack)]
    slack.fail("chat.postMessage", error="ratelimited", retry_after=120)
    step(session, T0 + 31 * M, [stale()], n)
    # slack_sdk's own retry handlers are off: exactly one request, then our backoff.
    assert [r.status for r in slack.requests] == [429]
    event = session.execute(
        select(AlertEvent).execution_options(populate_existing=True)
    ).scalar_one()
    assert event.next_attempt_at == T0 + 33 * M
    assert event.status_reason == "slack chat.postMessage: ratelimited (HTTP 429), retry after 120s"
    deliver_pending(session, T0 + 32 * M, n, "w1")
    assert [r.status for r in slack.requests] == [429]
    deliver_pending(session, T0 + 33 * M, n, "w1")
    assert [r.status for r in slack.requests] == [429, 200]
    assert events(session) == [("warning", "firing", "delivered")]


def _permanent(kind: str, slack: FakeSlack) -> tuple[Notifier, str]:
    if kind == "invalid_auth":
        return bot(slack, token="xoxb-wrong-secret-value"), "slack chat.postMessage: invalid_auth"
    if kind == "channel_not_found":
        return bot(slack, channel="#nope"), "slack chat.postMessage: channel_not_found"
    if kind == "not_in_channel":
        return bot(slack, channel="#private"), "slack chat.postMessage: not_in_channel"
    secret_url = slack.webhook_url.replace("webhooksecretXYZ", "deletedhookSECRET")
    return SlackWebhookNotifier(secret_url), "slack webhook: no_service (HTTP 404)"


@pytest.mark.parametrize(
    "kind", ["invalid_auth", "channel_not_found", "not_in_channel", "webhook_404"]
)
def test_a_permanent_error_is_recorded_once_and_not_retried(
    session: Session, slack: FakeSlack, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    caplog.set_level(logging.INFO)
    add_run(session, "batches", T0 - 5 * M, T0)
    session.commit()
    notifier, error = _permanent(kind, slack)
    report = step(session, T0 + 31 * M, [stale(repeat_interval="0s")], [notifier])
    assert report.failed == 1
    for minutes in (32, 40, 60, 120):
        step(session, T0 + minutes * M, [stale(repeat_interval="0s")], [notifier])
    assert len(slack.requests) == 1
    assert events(session) == [("warning", "firing", "failed")]
    [note] = session.execute(select(Notification)).scalars()
    assert note.outcome == "permanent"
    assert note.error is not None and note.error.startswith(error)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert error in errors[0].getMessage()
    [view] = list_alerts(session)
    assert (view.state, view.delivery) == ("firing", "failed")
    assert view.delivery_error is not None and view.delivery_error.startswith(error)
    # Secrets stay out of the log and the database.
    for secret in ("xoxb-wrong-secret-value", "deletedhookSECRET", slack.token):
        assert secret not in caplog.text
        assert secret not in (note.error or "")


def _six_alerts(session: Session) -> list[Rule]:
    for i in range(6):
        add_run(session, f"source{i}", T0 - 5 * M, T0)
    session.commit()
    return [stale()]


def test_two_processes_never_send_the_same_event_twice(
    db_url: str, engine: Engine, slack: FakeSlack
) -> None:
    with Session(engine) as session:
        rules = _six_alerts(session)
        evaluate_all(session, T0 + 31 * M, rules)
    slack.delay = 0.05  # long enough for both workers to overlap on every event
    engines = [db.make_engine(db_url), db.make_engine(db_url)]
    barrier = threading.Barrier(2)
    reports: list[Any] = [None, None]

    def worker(i: int) -> None:
        with Session(engines[i]) as s:
            barrier.wait()
            reports[i] = deliver_pending(s, T0 + 32 * M, [bot(slack)], f"worker-{i}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for e in engines:
        e.dispose()
    posts = slack.posts()
    assert len(posts) == 6
    assert sorted(p.body["text"].rsplit("source=", 1)[1] for p in posts) == [
        f"source{i}" for i in range(6)
    ]
    assert reports[0].delivered + reports[1].delivered == 6
    with Session(engine) as session:
        assert session.execute(select(func.count()).select_from(Notification)).scalar() == 6
        assert {s for (_, _, s) in events(session)} == {"delivered"}


def test_two_processes_evaluating_at_once_queue_each_transition_once(
    db_url: str, engine: Engine
) -> None:
    with Session(engine) as session:
        rules = _six_alerts(session)
    engines = [db.make_engine(db_url), db.make_engine(db_url)]
    barrier = threading.Barrier(2)

    def worker(i: int) -> None:
        with Session(engines[i]) as s:
            barrier.wait()
            evaluate_all(s, T0 + 31 * M, rules)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for e in engines:
        e.dispose()
    with Session(engine) as session:
        assert events(session) == [("warning", "firing", "pending")] * 6


def test_a_restart_neither_repeats_nor_loses_an_alert(db_url: str, slack: FakeSlack) -> None:
    first = db.make_engine(db_url)
    with Session(first) as session:
        add_run(session, "batches", T0 - 5 * M, T0)
        session.commit()
        evaluate_all(session, T0 + 31 * M, [stale()])  # queued; the process then stops
    first.dispose()

    second = db.make_engine(db_url)  # the restarted process
    with Session(second) as session:
        step(session, T0 + 32 * M, [stale()], [bot(slack)])
        step(session, T0 + 33 * M, [stale()], [bot(slack)])
        # Replaying an earlier moment queues nothing either (the same round twice is skipped;
        # an earlier time is evaluated, so a stored time in the future can never freeze it).
        [result] = evaluate_all(session, T0 + 31 * M, [stale()])
        assert result.event is None and result.state == "firing"
        [again] = evaluate_all(session, T0 + 31 * M, [stale()])
        assert again.decision == "already_evaluated"
    second.dispose()
    assert slack.calls() == [
        ("chat.postMessage", "#alerts", None, ":warning: WARNING stale is firing")
    ]


def test_an_event_claimed_by_a_dead_worker_is_taken_over_after_its_lease(
    session: Session, slack: FakeSlack
) -> None:
    add_run(session, "batches", T0 - 5 * M, T0)
    session.commit()
    evaluate_all(session, T0 + 31 * M, [stale()])
    # A worker claimed it and died before sending.
    session.execute(
        update(AlertEvent).values(
            status="claimed", claimed_by="dead", claimed_until=T0 + 41 * M, attempts=1
        )
    )
    session.commit()
    assert deliver_pending(session, T0 + 35 * M, [bot(slack)], "w1").delivered == 0
    assert slack.calls() == []
    assert deliver_pending(session, T0 + 42 * M, [bot(slack)], "w1").delivered == 1
    assert len(slack.posts()) == 1


def test_an_alert_whose_group_disappears_resolves(session: Session, slack: FakeSlack) -> None:
    add_batch(session, "late", created=T0 - 13 * H, workspace="wrkspc_a")
    session.commit()
    r = [rule("batch_expiry_risk", "12h", name="expiry", group_by=["workspace"])]
    step(session, T0, r, [bot(slack)])
    # The batch ends: its workspace has nothing in progress any more.
    session.execute(
        update(Batch)
        .where(Batch.id == "late")  # type: ignore[arg-type]
        .values(ended_at=T0 + M, processing_status="ended")
    )
    session.commit()
    step(session, T0 + 2 * M, r, [bot(slack)])
    assert [c[3] for c in slack.calls()] == [
        ":warning: WARNING expiry is firing",
        ":white_check_mark: Resolved (was WARNING): expiry",
        ":white_check_mark: Resolved: WARNING expiry",
    ]
    views = sorted((v.labels.get("workspace", ""), v.state, v.reason) for v in list_alerts(session))
    assert views == [
        ("", "inactive", "inactive: no batch in progress"),
        ("wrkspc_a", "inactive", "resolved: the label set is no longer measured"),
    ]


def test_an_alert_of_a_removed_rule_is_dropped_quietly(session: Session, slack: FakeSlack) -> None:
    add_run(session, "batches", T0 - 5 * M, T0)
    session.commit()
    step(session, T0 + 31 * M, [stale()], [bot(slack)])
    [result] = evaluate_all(session, T0 + 32 * M, [])
    assert (result.state, result.decision) == ("inactive", "rule_removed")
    deliver_pending(session, T0 + 32 * M, [bot(slack)], "w1")
    assert len(slack.requests) == 1


def test_log_notifier_is_the_default_without_slack(
    session: Session, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="monitor.alerts.log")
    notifiers = from_settings(Settings())
    assert [type(n) for n in notifiers] == [LogNotifier]
    add_run(session, "batches", T0 - 5 * M, T0)
    session.commit()
    step(session, T0 + 31 * M, [stale()], notifiers)
    lines = [r.getMessage() for r in caplog.records if r.name == "monitor.alerts.log"]
    assert lines == [
        "[WARNING] stale firing; value 31m (threshold > 30m); scope source=batches; "
        "time since a successful collection 31m is above 30m (last success 2026-11-20 12:00 UTC)"
    ]


# --- the commands -------------------------------------------------------------------------


@pytest.fixture
def cli_env(empty_db_url: str, tmp_path: Path, slack: FakeSlack) -> Iterator[dict[str, str]]:
    engine = db.make_engine(empty_db_url)
    db.upgrade(engine)
    with Session(engine) as session:
        add_run(session, "batches", T0 - 5 * M, T0)
        session.commit()
    engine.dispose()
    config = tmp_path / "monitor.toml"
    config.write_text(
        "[alerting]\ndefault_rules = false\n\n"
        '[[rules]]\nname = "stale"\nkind = "collector_stale"\nthreshold = "30m"\n'
        'repeat_interval = "1h"\n'
    )
    yield {
        "MONITOR_DATABASE_URL": empty_db_url,
        "MONITOR_CONFIG": str(config),
        "MONITOR_SLACK_BOT_TOKEN": slack.token,
        "MONITOR_SLACK_CHANNEL": "#alerts",
        "MONITOR_SLACK_BASE_URL": slack.base_url,
        "MONITOR_SLACK_WEBHOOK_URL": "",
    }


def test_check_and_alerts_commands(cli_env: dict[str, str], slack: FakeSlack) -> None:
    runner = CliRunner()
    out = runner.invoke(app, ["check", "--at", "2026-11-20T12:31:00Z", "--json"], env=cli_env)
    assert out.exit_code == 0, out.output
    [checked] = orjson.loads(out.stdout)
    assert checked == {
        "rule": "stale",
        "labels": {"rule": "stale", "severity": "warning", "source": "batches"},
        "state": "firing",
        "value": 1860.0,
        "threshold": 1800.0,
        "reason": "fired: time since a successful collection 31m is above 30m "
        "(last success 2026-11-20 12:00 UTC)",
    }
    assert slack.calls() == [
        ("chat.postMessage", "#alerts", None, ":warning: WARNING stale is firing")
    ]
    listed = runner.invoke(app, ["alerts", "--json"], env=cli_env)
    assert listed.exit_code == 0, listed.output
    [alert] = orjson.loads(listed.stdout)
    assert alert == {
        "rule": "stale",
        "labels": {"rule": "stale", "severity": "warning", "source": "batches"},
        "state": "firing",
        "value": 1860.0,
        "threshold": 1800.0,
        "since": "2026-11-20T12:31:00Z",
        "last_notified_at": "2026-11-20T12:31:00Z",
        "delivery": "ok",
        "delivery_error": None,
        "reason": checked["reason"],
    }
    table = runner.invoke(app, ["alerts"], env=cli_env)
    assert table.exit_code == 0 and "source=batches" in table.stdout
    assert slack.token not in out.output + listed.output + table.output


def test_silence_commands(cli_env: dict[str, str]) -> None:
    runner = CliRunner()
    added = runner.invoke(
        app,
        ["silence", "add", "--match", "rule=stale", "--match", "source=batches", "--for", "2h",
         "--comment", "upgrade"],
        env=cli_env,
    )  # fmt: skip
    assert added.exit_code == 0, added.output
    assert added.stdout.startswith("silence 1 added until ")
    listed = runner.invoke(app, ["silence", "list", "--json"], env=cli_env)
    [entry] = orjson.loads(listed.stdout)
    assert (entry["id"], entry["matchers"], entry["comment"], entry["active"]) == (
        1,
        {"rule": "stale", "source": "batches"},
        "upgrade",
        True,
    )
    assert runner.invoke(app, ["silence", "expire", "1"], env=cli_env).exit_code == 0
    assert orjson.loads(runner.invoke(app, ["silence", "list", "--json"], env=cli_env).stdout) == []
    again = runner.invoke(app, ["silence", "expire", "1"], env=cli_env)
    assert again.exit_code == 1 and "no silence 1 in force" in again.stderr
    bad = runner.invoke(app, ["silence", "add", "--match", "rule", "--for", "2h"], env=cli_env)
    assert bad.exit_code == 2 and "LABEL=VALUE" in bad.stderr
    bad = runner.invoke(app, ["silence", "add", "--match", "rule=x", "--for", "soon"], env=cli_env)
    assert bad.exit_code == 2 and "--for: invalid duration 'soon'" in bad.stderr


def test_a_stored_evaluation_time_in_the_future_never_freezes_an_alert(session: Session) -> None:
    add_run(session, "batches", T0 - 5 * M, T0)
    session.commit()
    # A bogus far-future evaluation (the old `check --at 9999-12-31`) left its time behind.
    evaluate_all(session, utc(9999, 12, 31), [stale()])
    [result] = evaluate_all(session, T0 + 31 * M, [stale()])
    assert result.decision != "already_evaluated"
    stored = session.execute(select(AlertState)).scalar_one()
    assert stored.last_evaluated_at == T0 + 31 * M


def test_check_at_a_future_time_is_refused(
    db_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    migrate_fresh(db_url)
    monkeypatch.setenv("MONITOR_DATABASE_URL", db_url)
    monkeypatch.chdir(tmp_path)
    for at in ("9999-12-31", "2999-01-01"):  # past our dates, and a date in the far future
        result = CliRunner().invoke(app, ["check", "--at", at])
        assert result.exit_code == 2, at
        assert "in the future" in result.stderr or "outside the years" in result.stderr
    result = CliRunner().invoke(app, ["check", "--at", "2999-01-01"])
    assert "is in the future" in result.stderr
    with Session(db.make_engine(db_url)) as session:  # and nothing was evaluated
        assert session.execute(select(func.count()).select_from(AlertState)).scalar_one() == 0


def test_money_thresholds_and_values_stay_exact(session: Session) -> None:
    from monitor.alerts import AlertResult
    from monitor.rulekinds import build_rules

    [rule_], problems = build_rules(
        [{"name": "save", "kind": "batch_candidate", "threshold": 10.3, "window": "30d"}],
        "test",
        None,
        with_defaults=False,
    )
    assert problems == [] and rule_.threshold == Decimal("10.30")
    assert isinstance(rule_.threshold, Decimal)
    # An alert's value goes to the store and back without a binary float in between.
    session.add(
        AlertState(
            fingerprint="f" * 64,
            rule="save",
            severity="info",
            labels="{}",
            state="firing",
            value=Decimal("0.1") + Decimal("0.2"),
            threshold=rule_.threshold,
        )
    )
    session.commit()
    session.expire_all()
    stored = session.execute(select(AlertState)).scalar_one()
    assert stored.value == Decimal("0.3") and stored.threshold == Decimal("10.3")
    result = AlertResult(
        rule="save",
        severity="info",
        labels={},
        fingerprint="x",
        state="firing",
        value=Decimal("40.5700000001"),
        threshold=Decimal("10.3"),
        condition="true",
        decision="fired",
        reason="",
        unit="usd",
    )
    # check --json shows money as decimal strings, like every other command.
    assert result.as_json()["value"] == "40.57" and result.as_json()["threshold"] == "10.30"
