"""Delivering the weekly report: once per week, to the fake Slack over HTTP, on both databases.

``deliver_due`` is what the daemon calls every few minutes. These tests call it as two daemons
would (two threads, two engines, the same moment), across a restart (a new engine on the same
database), after a crash between the Slack post and its record, with Slack failing, and after a
Monday the daemon missed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import SecretStr
from sqlalchemy import update
from sqlmodel import Session, col

from monitor import db
from monitor.config import ReportSection, Settings, SlackSection
from monitor.models import ReportRun
from monitor.report import Week, deliver_due
from monitor.report.delivery import METADATA_EVENT, ReportOutcome
from monitor.report.weeks import latest_due_week
from tests.fakeslack import FakeSlack
from tests.reportkit import collected_url, report_settings

MONDAY = datetime(2026, 10, 12, 9, tzinfo=UTC)  # the week of 5 October is due
WEEK = Week(date(2026, 10, 5), "UTC")
CHANNELS = {"#reports": "C0REPORTS", "#alerts": "C0ALERTS"}


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    return collected_url(request.param, tmp_path_factory)


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack(channels=dict(CHANNELS), not_member=set()) as fake:
        yield fake


def _settings(tmp_path: Path, fake: FakeSlack | None = None, **changes: Any) -> Settings:
    settings = report_settings(report=ReportSection(dir=str(tmp_path / "reports")))
    if fake is not None:
        settings = replace(
            settings,
            slack_bot_token=SecretStr(fake.token),
            slack_channel="#reports",
            slack_base_url=fake.base_url,
        )
    return replace(settings, **changes)


def _deliver(
    url: str, now: datetime, settings: Settings, holder: str = "a"
) -> ReportOutcome | None:
    """Call deliver_due as a daemon would: its own engine and session (a process of its own)."""
    engine = db.make_engine(url)
    try:
        with Session(engine) as session:
            return deliver_due(session, now, settings, holder=holder)
    finally:
        engine.dispose()


def _row(url: str, week: Week = WEEK) -> ReportRun:
    engine = db.make_engine(url)
    try:
        with Session(engine) as session:
            row = session.get(ReportRun, week.start)
            assert row is not None
            return row
    finally:
        engine.dispose()


def _slack_calls(slack: FakeSlack) -> list[str]:
    return [r.method for r in slack.requests if r.status == 200 and not r.error]


def test_posted_once_with_the_chart_in_its_thread(
    url: str, slack: FakeSlack, tmp_path: Path
) -> None:
    settings = _settings(tmp_path, slack)
    outcome = _deliver(url, MONDAY, settings)
    assert outcome is not None
    assert (outcome.week_start, outcome.status, outcome.posted, outcome.uploaded) == (
        "2026-10-05", "delivered", True, True,
    )  # fmt: skip
    (post,) = slack.posts()
    assert post.channel == "#reports"
    assert post.title == "Claude spend, week of 2026-10-05 (UTC)"
    assert post.body["metadata"] == {
        "event_type": METADATA_EVENT, "event_payload": {"week_start": "2026-10-05"},
    }  # fmt: skip
    text = "\n".join(post.texts())
    report = orjson.loads((tmp_path / "reports" / "weekly-2026-10-05.json").read_bytes())
    assert report["total_cost_usd"] in text.replace(",", "")
    assert "tier shift (real-time vs batch)" in text and "*tier_regression*" in text
    (shared,) = slack.shared_files()
    ts = post_ts(slack)
    assert (shared["channel"], shared["thread_ts"], shared["filename"]) == (
        "C0REPORTS", ts, "weekly-2026-10-05.png",
    )  # fmt: skip
    assert shared["data"] == (tmp_path / "reports" / "weekly-2026-10-05.png").read_bytes()
    for form in ("md", "html", "json", "csv", "png"):
        assert (tmp_path / "reports" / f"weekly-2026-10-05.{form}").stat().st_size > 0
    row = _row(url)
    assert (row.delivered_at, row.message_channel, row.message_ts) == (MONDAY, "C0REPORTS", ts)
    assert row.file_id == shared["id"] and row.attempts == 1 and row.claimed_by is None
    assert orjson.loads(row.summary)["total_cost_usd"] == report["total_cost_usd"]

    # Every later call finds nothing due: the same process, and after a restart.
    calls = len(slack.requests)
    assert _deliver(url, MONDAY + timedelta(minutes=5), settings, holder="a") is None
    assert _deliver(url, MONDAY + timedelta(days=3), settings, holder="restarted") is None
    assert len(slack.requests) == calls


def post_ts(slack: FakeSlack) -> str:
    return next(str(ts) for (_, ts), m in slack.messages.items() if m.get("blocks"))


def test_two_daemons_at_once_post_once(url: str, slack: FakeSlack, tmp_path: Path) -> None:
    slack.delay = 0.2  # every Slack call is slow, so the two overlap
    settings = _settings(tmp_path, slack)
    outcomes: dict[str, ReportOutcome | None] = {}
    start = threading.Barrier(2)

    def daemon(name: str) -> None:
        start.wait()
        outcomes[name] = _deliver(url, MONDAY, settings, holder=name)

    threads = [threading.Thread(target=daemon, args=(n,)) for n in ("replica-1", "replica-2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    statuses = sorted(o.status if o else "nothing due" for o in outcomes.values())
    assert statuses in (["claimed_elsewhere", "delivered"], ["delivered", "nothing due"])
    assert len(slack.posts()) == 1 and len(slack.shared_files()) == 1
    assert _row(url).attempts == 1


def test_a_crash_between_the_post_and_its_record_does_not_post_twice(
    url: str, slack: FakeSlack, tmp_path: Path
) -> None:
    settings = _settings(tmp_path, slack)
    assert (outcome := _deliver(url, MONDAY, settings)) and outcome.status == "delivered"
    # Put back what a process that died right after Slack accepted the post leaves behind: a post
    # started and never recorded, no chart uploaded, no delivery, no live claim.
    ts = post_ts(slack)
    engine = db.make_engine(url)
    with Session(engine) as session:
        session.execute(
            update(ReportRun)
            .where(col(ReportRun.week_start) == WEEK.start)
            .values(
                post_started_at=MONDAY, message_ts=None, message_channel=None, file_id=None,
                upload_started_at=None, delivered_at=None, claimed_by=None, claimed_until=None,
            )
        )  # fmt: skip
        session.commit()
    engine.dispose()
    unshare(slack)
    outcome = _deliver(url, MONDAY + timedelta(minutes=5), settings, holder="restarted")
    assert outcome is not None and outcome.status == "delivered"
    assert len(slack.posts()) == 1  # the message Slack already had was found, not sent again
    (shared,) = slack.shared_files()
    assert shared["thread_ts"] == ts
    assert _row(url).message_ts == ts


def unshare(slack: FakeSlack) -> None:
    """Forget the chart's upload, as if the process had died before uploading it."""
    for key, message in list(slack.messages.items()):
        if message.get("files"):
            del slack.messages[key]
    slack.files.clear()


def test_a_post_whose_answer_is_lost_is_found_not_repeated(
    url: str, slack: FakeSlack, tmp_path: Path
) -> None:
    # Slack takes the message but answers after the client gave up (1 s timeout).
    slack.delays["chat.postMessage"] = 2.5
    settings = _settings(tmp_path, slack, slack=SlackSection(timeout=timedelta(seconds=1)))
    first = _deliver(url, MONDAY, settings)
    assert first is not None and first.status == "retrying" and not first.posted
    assert first.error is not None and "outcome unknown" in first.error
    slack.delays.clear()
    row = _row(url)
    assert row.post_started_at is not None and row.message_ts is None
    assert row.next_attempt_at == MONDAY + timedelta(seconds=30)
    # Not due before the backoff; then the retry finds the message and uploads the chart.
    assert _deliver(url, MONDAY + timedelta(seconds=10), settings) is None
    second = _deliver(url, MONDAY + timedelta(seconds=31), settings)
    assert second is not None and second.status == "delivered"
    assert len(slack.posts()) == 1 and len(slack.shared_files()) == 1
    assert "conversations.history" in _slack_calls(slack)


def test_an_upload_whose_answer_is_lost_is_found_not_repeated(
    url: str, slack: FakeSlack, tmp_path: Path
) -> None:
    # Slack shares the chart but answers after the client gave up (1 s timeout).
    slack.delays["files.completeUploadExternal"] = 2.5
    settings = _settings(tmp_path, slack, slack=SlackSection(timeout=timedelta(seconds=1)))
    first = _deliver(url, MONDAY, settings)
    assert first is not None and first.status == "retrying" and first.posted
    assert not first.uploaded and first.error is not None and "outcome unknown" in first.error
    slack.delays.clear()
    assert _row(url).upload_started_at is not None
    second = _deliver(url, MONDAY + timedelta(seconds=31), settings)
    assert second is not None and (second.status, second.uploaded) == ("delivered", True)
    assert len(slack.posts()) == 1 and len(slack.shared_files()) == 1
    assert "conversations.replies" in _slack_calls(slack)
    assert _row(url).file_id == slack.shared_files()[0]["id"]


@pytest.mark.parametrize(
    ("fault", "retry_after"),
    [
        ({"method": "chat.postMessage", "error": "ratelimited", "retry_after": 120}, 120),
        ({"method": "chat.postMessage", "status": 500}, 30),
        ({"method": "files.completeUploadExternal", "status": 503}, 30),
        ({"method": "files.getUploadURLExternal", "error": "internal_error"}, 30),
    ],
)
def test_a_failed_step_is_retried_and_nothing_is_doubled(
    url: str, slack: FakeSlack, tmp_path: Path, fault: dict[str, Any], retry_after: int
) -> None:
    settings = _settings(tmp_path, slack)
    slack.fail(**fault)
    first = _deliver(url, MONDAY, settings)
    assert first is not None and first.status == "retrying"
    assert first.posted == fault["method"].startswith("files.")
    assert _row(url).next_attempt_at == MONDAY + timedelta(seconds=retry_after)
    assert _deliver(url, MONDAY + timedelta(seconds=retry_after - 1), settings) is None
    second = _deliver(url, MONDAY + timedelta(seconds=retry_after), settings, holder="b")
    assert second is not None and second.status == "delivered"
    assert len(slack.posts()) == 1 and len(slack.shared_files()) == 1
    assert _row(url).attempts == 2


def test_a_refused_post_is_recorded_without_the_token(
    url: str, slack: FakeSlack, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = _settings(tmp_path, slack, slack_bot_token=SecretStr("xoxb-wrong-secret-token"))
    caplog.set_level(logging.DEBUG)
    outcome = _deliver(url, MONDAY, settings)
    assert outcome is not None and outcome.status == "retrying"
    assert outcome.error == "slack chat.postMessage: invalid_auth (HTTP 200)"
    row = _row(url)
    assert row.error == outcome.error and row.post_started_at is None  # Slack said no: not sent
    assert "xoxb-wrong-secret-token" not in caplog.text
    assert slack.posts() == []


def test_a_missed_monday_is_caught_up_once(url: str, slack: FakeSlack, tmp_path: Path) -> None:
    settings = _settings(tmp_path, slack)
    # The daemon was down from before the Monday 5 October report until Wednesday 14 October:
    # only the latest week is sent, not the backlog.
    wednesday = datetime(2026, 10, 14, 15, tzinfo=UTC)
    outcome = _deliver(url, wednesday, settings)
    assert outcome is not None and outcome.week_start == "2026-10-05"
    assert _deliver(url, wednesday + timedelta(hours=1), settings) is None
    assert len(slack.posts()) == 1
    assert [p.title for p in slack.posts()] == ["Claude spend, week of 2026-10-05 (UTC)"]


def test_each_week_at_its_time(url: str, slack: FakeSlack, tmp_path: Path) -> None:
    settings = _settings(tmp_path, slack)
    first = datetime(2026, 10, 5, 9, tzinfo=UTC)
    assert _deliver(url, first - timedelta(minutes=1), settings) is None  # nothing before data
    assert (o := _deliver(url, first, settings)) and o.week_start == "2026-09-28"
    assert _deliver(url, MONDAY - timedelta(minutes=1), settings) is None
    assert (o := _deliver(url, MONDAY, settings)) and o.week_start == "2026-10-05"
    assert [p.title[-16:] for p in slack.posts()] == ["2026-09-28 (UTC)", "2026-10-05 (UTC)"]
    # The first week's report says its previous week was not recorded (collection started then).
    early = orjson.loads((tmp_path / "reports" / "weekly-2026-09-28.json").read_bytes())
    assert early["complete"] is False and early["previous_total_cost_usd"] == "0.00"


def test_a_webhook_gets_the_blocks_and_the_chart_stays_in_the_directory(
    url: str, slack: FakeSlack, tmp_path: Path
) -> None:
    settings = _settings(tmp_path, slack_webhook_url=SecretStr(slack.webhook_url))
    outcome = _deliver(url, MONDAY, settings)
    assert outcome is not None and (outcome.status, outcome.posted, outcome.uploaded) == (
        "delivered", True, False,
    )  # fmt: skip
    (post,) = slack.posts()
    assert post.method == "webhook"
    assert "the chart is in the report directory" in "\n".join(post.texts())
    assert (tmp_path / "reports" / "weekly-2026-10-05.png").exists()
    assert _deliver(url, MONDAY + timedelta(minutes=5), settings) is None
    assert len(slack.posts()) == 1


def test_without_slack_the_files_are_the_delivery(url: str, tmp_path: Path) -> None:
    outcome = _deliver(url, MONDAY, _settings(tmp_path))
    assert outcome is not None and (outcome.status, outcome.posted) == ("delivered", False)
    assert sorted(p.name for p in outcome.paths) == sorted(
        f"weekly-2026-10-05.{f}" for f in ("md", "html", "json", "csv", "png")
    )


def test_an_unwritable_directory_is_retried_not_raised(url: str, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    settings = replace(_settings(tmp_path), report=ReportSection(dir=str(blocker / "reports")))
    outcome = _deliver(url, MONDAY, settings)
    assert outcome is not None and outcome.status == "retrying"
    assert outcome.error is not None and outcome.error.startswith("cannot write the report")
    assert _row(url).delivered_at is None


@pytest.mark.parametrize(
    ("now", "tz", "weekday", "at", "week"),
    [
        (datetime(2026, 10, 12, 8, 59, tzinfo=UTC), "UTC", "monday", "09:00", date(2026, 9, 28)),
        (datetime(2026, 10, 12, 9, 0, tzinfo=UTC), "UTC", "monday", "09:00", date(2026, 10, 5)),
        (datetime(2026, 10, 18, 23, 0, tzinfo=UTC), "UTC", "monday", "09:00", date(2026, 10, 5)),
        # 09:00 in Tokyo is 00:00 UTC.
        (
            datetime(2026, 10, 12, 0, 0, tzinfo=UTC),
            "Asia/Tokyo",
            "monday",
            "09:00",
            date(2026, 10, 5),
        ),
        # A Wednesday 07:30 schedule in Paris (UTC+2 in October).
        (
            datetime(2026, 10, 14, 5, 29, tzinfo=UTC),
            "Europe/Paris",
            "wednesday",
            "07:30",
            date(2026, 9, 28),
        ),
        (
            datetime(2026, 10, 14, 5, 30, tzinfo=UTC),
            "Europe/Paris",
            "wednesday",
            "07:30",
            date(2026, 10, 5),
        ),
    ],
)
def test_which_week_is_due(now: datetime, tz: str, weekday: str, at: str, week: date) -> None:
    due = latest_due_week(now, tz, weekday, at)
    assert due is not None and due.start_date == week and due.tz == tz


def test_a_stale_claim_is_taken_over_a_live_one_is_not(
    url: str, slack: FakeSlack, tmp_path: Path
) -> None:
    settings = _settings(tmp_path, slack)
    engine = db.make_engine(url)
    with Session(engine) as session:
        # A replica claimed the week and died (it holds the claim for ten minutes).
        session.add(
            ReportRun(
                week_start=WEEK.start, created_at=MONDAY, claimed_by="dead",
                claimed_until=MONDAY + timedelta(minutes=10), attempts=1,
            )
        )  # fmt: skip
        session.commit()
    engine.dispose()
    assert _deliver(url, MONDAY + timedelta(minutes=5), settings, holder="b") is None
    assert slack.requests == []
    outcome = _deliver(url, MONDAY + timedelta(minutes=11), settings, holder="b")
    assert outcome is not None and outcome.status == "delivered"
    row = _row(url)
    assert (row.attempts, row.claimed_by, len(slack.posts())) == (2, None, 1)
