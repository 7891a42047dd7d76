"""The Slack notifiers against the fake Slack: what is posted, where, escaped, and how each
failure is classified (transient or permanent) without a secret in sight."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from monitor.cli import app
from monitor.config import Settings, SlackSection
from monitor.notifiers import REGISTRY, build, from_settings
from monitor.notifiers.base import Message, NotifyError, Sent, escape_mrkdwn
from monitor.notifiers.log import LogNotifier
from monitor.notifiers.slack import SlackNotifier, SlackWebhookNotifier, build_blocks
from tests.conftest import utc
from tests.fakeslack import FakeSlack

NOW = utc(2026, 11, 20, 12, 31)
RED, OK, POST = ":red_circle:", ":white_check_mark:", "slack chat.postMessage"
HOSTILE = "<!channel> & <@U024BE7LH> <https://evil.example|click>"


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        yield fake


def message(**kw: Any) -> Message:
    labels = {"rule": "batch_failure_rate", "severity": "critical", "workspace": "wrkspc_01"}
    labels.update(kw.pop("labels", {}))
    base: dict[str, Any] = {
        "rule": "batch_failure_rate",
        "severity": "critical",
        "transition": "firing",
        "labels": labels,
        "created_at": NOW,
        "value": 0.008,
        "threshold": 0.005,
        "reason": "batch failure rate 0.8 % is above 0.5 % over 24h",
        "annotations": {
            "summary": "Too many batch requests errored or expired.",
            "value": "0.8 %",
            "threshold": "> 0.5 %",
            "window": "24h",
            "action": "Look at the batch errors by type.",
            "runbook_url": "https://wiki.example/runbooks/batch-failures",
        },
    }
    base.update(kw)
    return Message(**base)


def bot(fake: FakeSlack, **kw: Any) -> SlackNotifier:
    return SlackNotifier(
        kw.pop("token", fake.token),
        kw.pop("channel", "#alerts"),
        base_url=fake.base_url,
        grafana_url="https://grafana.example/d/claude",
        **kw,
    )


def test_firing_message_blocks(slack: FakeSlack) -> None:
    sent = bot(slack).send(message())
    assert sent == Sent(target="C0ALERTS", message_ref="1800000001.000001")
    [req] = slack.requests
    assert req.method == "chat.postMessage"
    assert req.body["channel"] == "#alerts"
    assert req.body["unfurl_links"] is False
    assert req.body["text"] == (
        "CRITICAL batch_failure_rate is firing — 0.8 % (threshold &gt; 0.5 %); workspace=wrkspc_01"
    )
    assert req.body["blocks"] == [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": f"{RED} CRITICAL batch_failure_rate is firing"},
        },
        {
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": "Too many batch requests errored or expired.\n"
                "batch failure rate 0.8 % is above 0.5 % over 24h",
            },
        },
        {
            "type": "section",
            "fields": [
                {"type": "mrkdwn", "text": "*Value*\n0.8 % (threshold &gt; 0.5 %)"},
                {"type": "mrkdwn", "text": "*Window*\n24h"},
                {"type": "mrkdwn", "text": "*Scope*\nworkspace=wrkspc_01"},
                {"type": "mrkdwn", "text": "*Severity*\ncritical"},
            ],
        },
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": "*What to do:* Look at the batch errors by type."},
        },
        {
            "type": "context",
            "elements": [
                {
                    "type": "mrkdwn",
                    "text": "<https://grafana.example/d/claude|Grafana panel> · "
                    "<https://wiki.example/runbooks/batch-failures|Runbook> · "
                    "Fired 2026-11-20 12:31 UTC",
                }
            ],
        },
    ]  # fmt: skip


def test_upstream_text_cannot_mention_or_link(slack: FakeSlack) -> None:
    hostile = message(
        labels={"workspace": HOSTILE, "model": "claude<@U1>"},
        reason=f"error from upstream: {HOSTILE}",
        annotations={"value": "1 %", "threshold": "> 0.5 %", "summary": HOSTILE},
    )
    bot(slack).send(hostile)
    texts = slack.requests[0].texts()
    joined = "\n".join(texts)
    for raw in ("<!channel>", "<@U024BE7LH>", "<https://evil.example|click>", "<@U1>"):
        assert raw not in joined
    assert "&lt;!channel&gt; &amp; &lt;@U024BE7LH&gt;" in joined
    assert escape_mrkdwn("a<b>&c") == "a&lt;b&gt;&amp;c"


def test_channel_per_severity(slack: FakeSlack) -> None:
    notifier = bot(slack, channels={"critical": "#critical", "info": "#info"})
    notifier.send(message())
    notifier.send(message(severity="warning"))
    notifier.send(message(severity="info"))
    assert [r.channel for r in slack.requests] == ["#critical", "#alerts", "#info"]


def test_resolution_edits_the_original_and_answers_in_its_thread(slack: FakeSlack) -> None:
    notifier = bot(slack)
    first = notifier.send(message())
    notifier.send(message(transition="resolved", thread=first, value=0.001))
    assert slack.calls() == [
        ("chat.postMessage", "#alerts", None, ":red_circle: CRITICAL batch_failure_rate is firing"),
        ("chat.update", "C0ALERTS", first.message_ref,
         ":white_check_mark: Resolved (was CRITICAL): batch_failure_rate"),
        ("chat.postMessage", "C0ALERTS", first.message_ref,
         ":white_check_mark: Resolved: CRITICAL batch_failure_rate"),
    ]  # fmt: skip
    assert slack.messages[("C0ALERTS", str(first.message_ref))]["edited"] is True


def test_a_deleted_original_does_not_block_the_resolution(slack: FakeSlack) -> None:
    notifier = bot(slack)
    first = notifier.send(message())
    slack.fail("chat.update", error="message_not_found")
    notifier.send(message(transition="resolved", thread=first))
    assert [(r.method, r.error) for r in slack.requests] == [
        ("chat.postMessage", None),
        ("chat.update", "message_not_found"),
        ("chat.postMessage", None),
    ]


def test_a_resolution_without_a_thread_is_a_new_message(slack: FakeSlack) -> None:
    bot(slack).send(message(transition="resolved"))
    assert slack.calls() == [
        ("chat.postMessage", "#alerts", None, f"{OK} Resolved: CRITICAL batch_failure_rate")
    ]


@pytest.mark.parametrize(
    ("fault", "expected", "permanent", "retry_after"),
    [
        ({"error": "ratelimited", "retry_after": 30},
         "slack chat.postMessage: ratelimited (HTTP 429), retry after 30s", False, 30.0),
        ({"status": 500}, "slack chat.postMessage: non-JSON response (HTTP 500)", False, None),
        ({"status": 503, "error": "service_unavailable"},
         "slack chat.postMessage: service_unavailable (HTTP 503)", False, None),
        ({"error": "internal_error"}, f"{POST}: internal_error (HTTP 200)", False, None),
        ({"error": "invalid_auth"}, "slack chat.postMessage: invalid_auth (HTTP 200)", True, None),
        ({"error": "channel_not_found"},
         "slack chat.postMessage: channel_not_found (HTTP 200)", True, None),
        ({"error": "not_in_channel"}, f"{POST}: not_in_channel (HTTP 200)", True, None),
    ],
)  # fmt: skip
def test_web_api_errors_are_classified(
    slack: FakeSlack, fault: dict[str, Any], expected: str, permanent: bool, retry_after: float
) -> None:
    slack.fail("chat.postMessage", **fault)
    with pytest.raises(NotifyError) as info:
        bot(slack).send(message())
    assert (info.value.message, info.value.permanent, info.value.retry_after) == (
        expected,
        permanent,
        retry_after,
    )
    # One request: the SDK's own retry handlers are off.
    assert len(slack.requests) == 1


def test_real_slack_answers_for_bad_token_and_channels(slack: FakeSlack) -> None:
    cases = [
        (bot(slack, token="xoxb-not-the-right-one"), "invalid_auth"),
        (bot(slack, channel="#missing"), "channel_not_found"),
        (bot(slack, channel="#private"), "not_in_channel"),
    ]
    for notifier, code in cases:
        with pytest.raises(NotifyError) as info:
            notifier.send(message())
        assert info.value.permanent
        assert code in info.value.message
        assert "xoxb-not-the-right-one" not in str(info.value)


def test_an_unreachable_slack_is_transient_and_names_no_secret(
    slack: FakeSlack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    notifier = bot(slack)
    webhook = SlackWebhookNotifier(slack.webhook_url)
    slack.stop()
    for n in (notifier, webhook):
        with pytest.raises(NotifyError) as info:
            n.send(message())
        assert not info.value.permanent
        assert "Connection refused" in info.value.message or "refused" in info.value.message
        assert slack.token not in info.value.message
        assert "webhooksecretXYZ" not in info.value.message
    assert slack.token not in caplog.text
    assert "webhooksecretXYZ" not in caplog.text


def test_webhook_posts_the_same_blocks(slack: FakeSlack) -> None:
    webhook = SlackWebhookNotifier(
        slack.webhook_url, grafana_url="https://grafana.example/d/claude"
    )
    assert webhook.send(message()) == Sent(target="webhook")
    [req] = slack.requests
    assert req.method == "webhook"
    assert req.body["blocks"] == build_blocks(message(), "https://grafana.example/d/claude")
    # No thread on a webhook: a resolution is a new message.
    webhook.send(message(transition="resolved", thread=Sent("C1", "1.2")))
    assert "thread_ts" not in slack.requests[1].body


@pytest.mark.parametrize(
    ("status", "permanent"), [(404, True), (410, True), (403, True), (429, False), (500, False)]
)
def test_webhook_errors_are_classified(slack: FakeSlack, status: int, permanent: bool) -> None:
    slack.fail("webhook", status=status, retry_after=7 if status == 429 else None)
    with pytest.raises(NotifyError) as info:
        SlackWebhookNotifier(slack.webhook_url).send(message())
    assert info.value.permanent is permanent
    assert f"(HTTP {status})" in info.value.message
    assert "webhooksecretXYZ" not in info.value.message
    if status == 429:
        assert info.value.retry_after == 7.0


def test_from_settings_prefers_the_bot_token(slack: FakeSlack) -> None:
    both = Settings(
        slack_bot_token=SecretStr(slack.token),
        slack_channel="#alerts",
        slack_webhook_url=SecretStr(slack.webhook_url),
        slack_base_url=slack.base_url,
        slack=SlackSection(channel_critical="#critical"),
    )
    [notifier] = from_settings(both)
    assert isinstance(notifier, SlackNotifier)
    assert notifier.channel_for("critical") == "#critical"
    assert notifier.channel_for("warning") == "#alerts"
    hook_only = Settings(slack_webhook_url=SecretStr(slack.webhook_url))
    assert [type(n) for n in from_settings(hook_only)] == [SlackWebhookNotifier]
    assert [type(n) for n in from_settings(Settings())] == [LogNotifier]
    assert set(REGISTRY) == {"slack", "log"}
    assert build("slack", Settings()) is None
    with pytest.raises(KeyError):
        build("pager", Settings())


def test_notify_test_command(slack: FakeSlack) -> None:
    env = {
        "MONITOR_CONFIG": "",
        "MONITOR_SLACK_BOT_TOKEN": slack.token,
        "MONITOR_SLACK_CHANNEL": "#alerts",
        "MONITOR_SLACK_BASE_URL": slack.base_url,
    }
    runner = CliRunner()
    out = runner.invoke(app, ["notify-test"], env=env)
    assert out.exit_code == 0, out.output
    assert out.stdout == "slack: sent to C0ALERTS\n"
    out = runner.invoke(app, ["notify-test", "--channel", "#critical"], env=env)
    assert out.exit_code == 0, out.output
    assert [c[1] for c in slack.calls()] == ["#alerts", "#critical"]
    assert slack.calls()[0][3] == ":wrench: batch-monitor test message"
    failed = runner.invoke(app, ["notify-test", "--channel", "#private"], env=env)
    assert failed.exit_code == 1
    assert failed.stderr == (
        "slack: failed (permanent): slack chat.postMessage: not_in_channel (HTTP 200)\n"
    )
    assert slack.token not in out.output + failed.output
