"""Slack faults: queued alerts arrive in order once Slack is back; permanent errors show and stop.

Two drives, both against the fake Slack Web API through the real ``slack_sdk``:

- ``batch-monitor run`` as a subprocess on the simulator's accelerated clock (rules that fire
  and remind every few simulated minutes): Slack down for one simulated hour (503 to every
  call), then a storm of 429s with a seeded ``Retry-After``, then the bot token revoked
  (``invalid_auth``), then the channel gone (``channel_not_found``). Under ``make soak`` the
  cycle repeats.
- The delivery step itself (``deliver_pending(session, now, ...)``, the daemon's job body)
  over hours of simulated minutes with a seeded random mix of those faults, on SQLite and
  PostgreSQL.

Promises checked: every event reaches Slack at most once, and the messages Slack received are
in the order the events were recorded (across alerts, after an outage too); no Slack call comes
before a ``Retry-After`` ran out, and an outage costs a handful of calls (backoff, one event at
the head of the queue), not one per queued event; a permanent error is tried once per event,
never again (the calls are counted), marked failed, shown by ``batch-monitor alerts`` and on
``/metrics`` (``batch_monitor_notification_failures_total{kind}``, equal to what the fake
answered).
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import random
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from sqlalchemy import Engine, func, select
from sqlmodel import Session, col

from monitor import db, exporter
from monitor.config import Settings
from monitor.models import AlertEvent, Notification
from monitor.notifiers.delivery import deliver_pending
from monitor.notifiers.slack import SlackNotifier
from monitor.simulator import SimulatorServer, build_scenario
from tests.daemonkit import RunProcess, base_env, http_get, running, wait_until, write_config
from tests.fakeslack import FakeSlack

SEED = int(os.environ.get("MONITOR_TEST_SEED", "20261115"))
SPEED = 600.0  # ten simulated minutes per second: an hour of outage is six seconds
CONFIG = """
[collect]
batches_interval = "30m"
usage_interval = "1h"
backfill = "1d"

[alerting]
default_rules = false
interval = "5m"
delivery_interval = "2m"

[run]
lease = "3s"
shutdown_timeout = "10s"
rollup_interval = "30m"

[[rules]]
name = "batch_share_low"
kind = "batch_share"
threshold = 0.999
window = "24h"
group_by = ["workspace"]
severity = "warning"
repeat_interval = "10m"

[[rules]]
name = "batch_failures"
kind = "batch_failure_rate"
threshold = 0.0
window = "3h"
group_by = ["workload"]
severity = "critical"
repeat_interval = "7d"
"""
H = timedelta(hours=1)
PERMANENT = ("invalid_auth", "channel_not_found")


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        yield fake


# --- what Slack received against what the outbox recorded ---------------------------------


def _events(engine: Engine) -> list[AlertEvent]:
    with Session(engine) as s:
        return list(s.execute(select(AlertEvent).order_by(col(AlertEvent.id))).scalars())


def _notifications(engine: Engine) -> list[Notification]:
    with Session(engine) as s:
        return list(s.execute(select(Notification).order_by(col(Notification.id))).scalars())


def _check_order_and_once(engine: Engine, slack: FakeSlack, seed: int) -> dict[str, int]:
    """Each message Slack holds is one delivered event, posted once, in the outbox's order."""
    rows = _notifications(engine)
    ok = [n for n in rows if n.outcome == "ok"]
    by_ref = {}
    for n in ok:
        assert n.message_ref not in by_ref, f"seed {seed}: two events claim message {n.message_ref}"
        by_ref[n.message_ref] = n.event_id
    per_event = Counter(n.event_id for n in ok)
    twice = [e for e, c in per_event.items() if c > 1]
    assert not twice, f"seed {seed}: events delivered more than once: {twice[:5]}"
    posted = sorted(slack.messages, key=lambda key: float(key[1]))
    order = []
    for _channel, ts in posted:
        assert ts in by_ref, f"seed {seed}: Slack holds message {ts} that no delivery recorded"
        order.append(by_ref[ts])
    assert len(order) == len(ok), f"seed {seed}: {len(ok)} deliveries, {len(order)} messages"
    late = [(a, b) for a, b in itertools.pairwise(order) if b <= a]
    assert not late, (
        f"seed {seed}: Slack got events out of the order they were recorded (event, then an "
        f"earlier one): {late[:5]}"
    )
    events = {e.id: e for e in _events(engine)}
    for event_id in per_event:
        assert events[event_id].status == "delivered", (seed, event_id, events[event_id].status)
    return {"delivered": len(order)}


def _check_permanent_once(engine: Engine, slack: FakeSlack, seed: int) -> dict[str, int]:
    """A permanent error: one call per event, the event failed, never tried again."""
    events = _events(engine)
    calls: dict[int, list[str]] = {}
    for n in _notifications(engine):
        calls.setdefault(n.event_id, []).append(n.outcome)
    out = {}
    for code in PERMANENT:
        failed = [e for e in events if e.status == "failed" and code in (e.status_reason or "")]
        for e in failed:
            # Transient failures before it are retried; the permanent one ends the event.
            outcomes = calls.get(e.id or 0, [])
            assert outcomes.count("permanent") == 1 and outcomes[-1] == "permanent", (
                f"seed {seed}: event {e.id} failed with {code}; its calls: {outcomes}: a "
                "permanent error must be the event's last call"
            )
            assert e.attempts == len(outcomes), (seed, e.id, e.attempts, outcomes)
        answered = slack.answered(code)
        assert answered == len(failed), (
            f"seed {seed}: Slack answered {code} {answered} time(s), {len(failed)} event(s) "
            "failed with it: permanent errors were retried"
        )
        out[f"{code}_events"] = len(failed)
    stray = [e.id for e in events if e.status == "failed" and e.status_reason and not any(
        code in e.status_reason for code in PERMANENT)]  # fmt: skip
    assert not stray, f"seed {seed}: events failed for another reason: {stray[:5]}"
    return out


def _check_retry_after(engine: Engine, seed: int) -> int:
    """After a ``retry after Rs`` answer, nothing is sent to Slack for R seconds."""
    rows = [n for n in _notifications(engine) if n.channel == "slack"]
    honoured = 0
    for i, n in enumerate(rows):
        if n.outcome != "transient" or "retry after" not in (n.error or ""):
            continue
        wait = float((n.error or "").rsplit("retry after ", 1)[1].rstrip("s"))
        nxt = next((r for r in rows[i + 1 :]), None)
        if nxt is not None:
            assert nxt.created_at >= n.created_at + timedelta(seconds=wait), (
                f"seed {seed}: Slack said retry after {wait:g}s at {n.created_at}, the next "
                f"call came at {nxt.created_at}"
            )
        honoured += 1
    return honoured


def _failure_metrics(body: str) -> dict[tuple[str, str], float]:
    """Return ``batch_monitor_notification_failures_total`` as ``{(outcome, kind): value}``."""
    out = {}
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            if s.name == "batch_monitor_notification_failures_total":
                assert s.labels["channel"] == "slack"
                out[(s.labels["outcome"], s.labels["kind"])] = s.value
    return out


def _check_failure_metrics(body: str, slack: FakeSlack, seed: int) -> dict[str, float]:
    """The failures counted on /metrics are what the fake answered, kind by kind."""
    got = _failure_metrics(body)
    want = {
        ("transient", "ratelimited"): slack.answered("ratelimited"),
        ("transient", "server_error"): slack.answered(status=503) + slack.answered(status=500),
        ("permanent", "invalid_auth"): slack.answered("invalid_auth"),
        ("permanent", "channel_not_found"): slack.answered("channel_not_found"),
    }
    want = {k: v for k, v in want.items() if v}
    assert got == want, f"seed {seed}: /metrics counts {got}, Slack answered {want}"
    return {f"{kind}": value for (_o, kind), value in sorted(got.items())}


# --- through the daemon -------------------------------------------------------------------


def _alerts_json(env: dict[str, str], cwd: Path) -> list[dict[str, Any]]:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "MONITOR_"))}
    full.update(env)
    done = subprocess.run(
        [sys.executable, "-m", "monitor", "alerts", "--json"],
        env=full, capture_output=True, text=True, timeout=60, cwd=cwd,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows: list[dict[str, Any]] = json.loads(done.stdout)
    return rows


def _all_settled(engine: Engine, upto: int) -> bool:
    """Say whether every event up to id ``upto`` is delivered or failed."""
    return all(e.status in ("delivered", "failed") for e in _events(engine) if e.id <= upto)


def _last_id(engine: Engine) -> int:
    with Session(engine) as s:
        return int(s.execute(select(func.max(AlertEvent.id))).scalar() or 0)


def _failed_with(engine: Engine, code: str) -> int:
    return sum(
        1 for e in _events(engine) if e.status == "failed" and code in (e.status_reason or "")
    )


def _failed_at_least(engine: Engine, code: str, n: int) -> bool:
    return _failed_with(engine, code) >= n


def _shown_failed(env: dict[str, str], cwd: Path, code: str) -> list[dict[str, Any]]:
    """Return the rows of ``batch-monitor alerts --json`` whose delivery failed with ``code``."""
    return [
        r
        for r in _alerts_json(env, cwd)
        if r["delivery"] == "failed" and code in (r["delivery_error"] or "")
    ]


def _counted(proc: RunProcess, slack: FakeSlack, code: str) -> bool:
    """Say whether /metrics counts as many ``code`` failures as Slack answered."""
    scraped = _failure_metrics(http_get(proc.url("/metrics"))[1].decode())
    return scraped.get(("permanent", code)) == slack.answered(code)


def _one_cycle(
    proc: RunProcess,
    engine: Engine,
    sim: SimulatorServer,
    slack: FakeSlack,
    env: dict[str, str],
    rng: random.Random,
    seed: int,
    cwd: Path,
) -> dict[str, Any]:
    """Outage of a simulated hour, a 429 storm, invalid_auth, channel_not_found; return figures."""
    got: dict[str, Any] = {}
    # 1. Slack down for an hour of simulated time.
    calls = len(slack.requests)
    first = _last_id(engine) + 1
    began = sim.now()
    slack.start_outage(503)
    try:
        wait_until(lambda: sim.now() >= began + H, 60, "an hour of outage", step=0.05)
    finally:
        slack.end_outage()
    during = len(slack.requests) - calls
    queued = [e for e in _events(engine) if e.id >= first and e.created_at < began + H]
    assert len(queued) >= 3, f"seed {seed}: only {len(queued)} event(s) during the outage"
    # Backoff, and the queue waits behind its head: a handful of calls, not one per event.
    assert during <= 12, f"seed {seed}: {during} calls to Slack during a one-hour outage"
    upto = _last_id(engine)
    wait_until(lambda: _all_settled(engine, upto), 60, "the queue to drain after the outage")
    got.update(outage_events_queued=len(queued), outage_calls=during)

    # 2. A storm of 429s with Retry-After.
    times, retry_after = rng.randint(4, 8), rng.choice((30, 60, 120, 300))
    before = slack.answered("ratelimited")
    slack.fail("chat.postMessage", error="ratelimited", retry_after=retry_after, times=times)
    wait_until(lambda: slack.answered("ratelimited") == before + times, 60, "the 429 storm to pass")
    upto = _last_id(engine)
    wait_until(lambda: _all_settled(engine, upto), 60, "the queue to drain after the storm")
    got.update(storm_429s=times, storm_retry_after_s=retry_after)

    # 3. Permanent errors: the token revoked, then the channel gone.
    for code in PERMANENT:
        before_failed = _failed_with(engine, code)
        if code == "invalid_auth":
            token, slack.token = slack.token, "xoxb-revoked-0000-token"
        else:
            channel = slack.channels.pop("#alerts")
        try:
            wait_until(
                functools.partial(_failed_at_least, engine, code, before_failed + 2),
                60, f"two events to fail with {code}",
            )  # fmt: skip
            rows = wait_until(
                functools.partial(_shown_failed, env, cwd, code),
                60, f"batch-monitor alerts to show a delivery failed with {code}", step=0.5,
            )  # fmt: skip
            # Equal between two deliveries (a call in flight is answered before it is counted).
            wait_until(
                functools.partial(_counted, proc, slack, code),
                30, f"/metrics to count the {code} answers",
            )  # fmt: skip
        finally:
            if code == "invalid_auth":
                slack.token = token
            else:
                slack.channels["#alerts"] = channel
        got[f"{code}_shown_by_alerts"] = len(rows)
    # Slack works again: the failed events stay failed, with their one call each.
    answered = {code: slack.answered(code) for code in PERMANENT}
    mark = sim.now()
    wait_until(lambda: sim.now() >= mark + H, 60, "an hour after the fix", step=0.05)
    assert {code: slack.answered(code) for code in PERMANENT} == answered, (
        f"seed {seed}: permanent errors were tried again once Slack worked"
    )
    return got


def test_slack_outage_storm_and_permanent_errors_through_the_daemon(
    tmp_path: Path, slack: FakeSlack, soak: bool, figures: Callable[..., None]
) -> None:
    seed = SEED
    rng = random.Random(seed)
    cycles = 4 if soak else 1
    scenario = build_scenario("org")
    url = f"sqlite:///{tmp_path / 'monitor.db'}"
    engine = db.make_engine(url)
    db.upgrade(engine)
    with SimulatorServer(scenario, speed=SPEED, now=scenario.start + 12 * H) as sim:
        env = base_env(sim, slack, url, tmp_path / "monitor.toml")
        env.update(write_config(tmp_path / "monitor.toml", sim, CONFIG))
        try:
            with running(env, tmp_path / "run.log") as proc:
                wait_until(lambda: len(slack.posts()) >= 3, 90, "the first alerts to reach Slack")
                got: dict[str, Any] = {"seed": seed, "cycles": cycles, "speed": SPEED}
                for _ in range(cycles):
                    for key, value in _one_cycle(
                        proc, engine, sim, slack, env, rng, seed, tmp_path
                    ).items():
                        got.setdefault(key, []).append(value)
                upto = _last_id(engine)
                wait_until(lambda: _all_settled(engine, upto), 60, "the queue to drain")
                body = http_get(proc.url("/metrics"))[1].decode()
                code, _took = proc.terminate(timeout=30)
                assert code == 0, proc.log()[-3000:]
            got.update(_check_order_and_once(engine, slack, seed))
            got.update(_check_permanent_once(engine, slack, seed))
            got["retry_after_honoured"] = _check_retry_after(engine, seed)
            got["failures_on_metrics"] = _check_failure_metrics(body, slack, seed)
            got["events"] = len(_events(engine))
            got["slack_calls"] = len(slack.requests)
            assert slack.token not in proc.log()
            figures(**got)
        finally:
            engine.dispose()


# --- the delivery step, driven minute by minute -------------------------------------------

T0 = datetime(2026, 11, 16, tzinfo=UTC)


def _add_event(session: Session, alert: int, transition: str, now: datetime) -> None:
    labels = {"rule": "spend_increase", "severity": "warning", "workspace": f"wrkspc_{alert}"}
    session.add(
        AlertEvent(
            fingerprint=f"{alert:064x}",
            rule="spend_increase",
            severity="warning",
            labels=json.dumps(labels, sort_keys=True),
            transition=transition,
            created_at=now,
            annotations=json.dumps({"summary": f"alert {alert}, {transition} at {now}"}),
        )
    )
    session.commit()


def _plan(rng: random.Random, minutes: int) -> dict[int, list[tuple[str, Any]]]:
    """Return the faults to start at each minute: outages, 429 storms, 500s, permanent errors."""
    plan: dict[int, list[tuple[str, Any]]] = {}
    hours = max(1, minutes // 60)
    for _ in range(max(1, hours // 4)):
        start = rng.randrange(0, minutes - 60)
        plan.setdefault(start, []).append(("outage", 60))
    for _ in range(hours):
        kind = rng.choice(("ratelimited", "ratelimited", "server_error", *PERMANENT))
        at = rng.randrange(0, minutes)
        if kind == "ratelimited":
            spec: Any = (rng.randint(2, 6), rng.choice((5, 30, 90, 300, 1800)))
        elif kind == "server_error":
            spec = rng.randint(1, 4)
        else:
            spec = rng.randint(1, 2)
        plan.setdefault(at, []).append((kind, spec))
    return plan


@pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)
def test_delivery_through_random_slack_faults(
    session: Session, engine: Engine, slack: FakeSlack, soak: bool, figures: Callable[..., None]
) -> None:
    seed = SEED + (1 if engine.dialect.name == "postgresql" else 0)
    rng = random.Random(seed)
    minutes = 3 * 24 * 60 if soak else 8 * 60
    notifier = SlackNotifier(slack.token, "#alerts", base_url=slack.base_url, timeout=5)
    plan = _plan(rng, minutes)
    firing: set[int] = set()
    outage_until: int | None = None
    outage_calls: list[int] = []
    injected: Counter[str] = Counter()
    now = T0
    step = 0
    while True:
        now = T0 + timedelta(minutes=step)
        if step < minutes:
            for kind, spec in plan.get(step, []):
                if kind == "outage" and outage_until is not None:
                    continue  # one outage at a time
                injected[kind] += 1
                if kind == "outage":
                    slack.start_outage(503)
                    outage_until, outage_calls = step + spec, [len(slack.requests)]
                elif kind == "ratelimited":
                    slack.fail("chat.postMessage", error=kind, retry_after=spec[1], times=spec[0])
                elif kind == "server_error":
                    slack.fail("chat.postMessage", status=500, times=spec)
                elif kind in PERMANENT:
                    slack.fail("chat.postMessage", error=kind, times=spec)
            if rng.random() < 0.12:
                alert = rng.randrange(6)
                if alert not in firing:
                    firing.add(alert)
                    _add_event(session, alert, "firing", now)
                elif rng.random() < 0.3:
                    firing.discard(alert)
                    _add_event(session, alert, "resolved", now)
                else:
                    _add_event(session, alert, "reminder", now)
        if outage_until is not None and step >= outage_until:
            slack.end_outage()
            outage_calls.append(len(slack.requests))
            assert outage_calls[1] - outage_calls[0] <= 12, (
                f"seed {seed}: {outage_calls[1] - outage_calls[0]} calls in a one-hour outage"
            )
            outage_until = None
        deliver_pending(
            session, now, [notifier], "worker-1", claim_timeout=timedelta(minutes=10),
            max_backoff=H, warn_after_attempts=10,
        )  # fmt: skip
        step += 1
        if step >= minutes and outage_until is None:
            slack.clear_faults()
            if all(e.status in ("delivered", "failed") for e in _events(engine)):
                break
        assert step < minutes + 3 * 60, f"seed {seed}: the queue did not drain in 3 h"
    answered = {
        "outage_503": slack.answered(status=503),
        "http_500": slack.answered(status=500),
        "ratelimited": slack.answered("ratelimited"),
        **{code: slack.answered(code) for code in PERMANENT},
    }
    got: dict[str, Any] = {
        "seed": seed,
        "minutes": minutes,
        "faults_planned": dict(injected),
        "faults_answered": answered,
        "outages": injected["outage"],
    }
    got.update(_check_order_and_once(engine, slack, seed))
    got.update(_check_permanent_once(engine, slack, seed))
    got["retry_after_honoured"] = _check_retry_after(engine, seed)
    settings = Settings(
        database_url=str(engine.url),
        slack_bot_token=SecretStr(slack.token),
        slack_channel="#alerts",
        slack_base_url=slack.base_url,
    )
    body, _ctype = exporter.exposition(
        exporter.registry_for(exporter.CostMetrics(engine, settings))
    )
    got["failures_on_metrics"] = _check_failure_metrics(body.decode(), slack, seed)
    got["events"] = len(_events(engine))
    got["slack_calls"] = len(slack.requests)
    figures(**got)
