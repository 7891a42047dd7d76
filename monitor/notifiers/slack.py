"""Slack: Block Kit messages through the Web API (bot token) or an incoming webhook.

With a bot token the firing message is posted with ``chat.postMessage``; its channel id and
``ts`` are kept (Notification.target / message_ref) so the resolution is posted in its thread
and the original is edited with ``chat.update`` to read "resolved". A webhook cannot thread or
edit, so there every event is a new message.

slack_sdk's own retry handlers are switched off (``retry_handlers=[]``): a retry here would be
invisible to the outbox, would block the delivery step, and would not survive a restart. Every
failure becomes one ``NotifyError``, transient (rate limit, 5xx, network) or permanent (bad
token, unknown channel, not a member, deleted webhook), and the outbox decides what happens next.

Every alert message carries metadata naming its event (``METADATA_EVENT``). A delivery whose
outcome is unknown (the process died between Slack's answer and the outbox's record) is first
looked for in the channel's history, or in its thread for a resolution (``find``), and adopted
instead of posted twice. That look-up needs the bot's ``channels:history`` scope
(``groups:history`` for a private channel) and the channel given by id (the history methods do
not take names); without them the message is sent again (at least once) and the log says so.

Secrets: the token and the webhook URL never appear in a message, a log line or an error; the
SDK gets a logger of its own that stays quiet (its DEBUG lines print the webhook URL)
and scrubs them from anything it does log.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from monitor import fmt
from monitor.logs import scrub
from monitor.notifiers.base import Message, NotifyError, Sent, escape_mrkdwn

if TYPE_CHECKING:
    from monitor.config import Settings

log = logging.getLogger(__name__)

# Web API error codes worth another try (https://api.slack.com/methods/chat.postMessage#errors);
# every other ``ok: false`` answer will be the same next time, so it is permanent.
TRANSIENT_ERRORS = frozenset(
    {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}
)
# chat.update answers these when the original is gone or too old to edit: the resolution is
# still worth posting, so they are noted and skipped rather than failing the event.
_UNEDITABLE = frozenset(
    {"message_not_found", "cant_update_message", "edit_window_closed", "is_inactive"}
)
_EMOJI = {
    "critical": ":red_circle:",
    "warning": ":warning:",
    "info": ":information_source:",
}
# Slack caps a header at 150 characters, a section text at 3,000 and a section field at 2,000
# (with room left for the field's label).
_HEADER_MAX = 150
_TEXT_MAX = 2900
_FIELD_MAX = 1900
METADATA_EVENT = "batch_monitor_alert"
# Pages of channel history read when looking for a message whose delivery is in doubt.
_LOOKUP_PAGES = 5


def _sdk_logger(secrets: list[str]) -> logging.Logger:
    from monitor.logs import SecretFilter

    logger = logging.getLogger("monitor.notifiers.slack_sdk")
    # An explicit level, not NOTSET: the SDK checks ``logger.level <= DEBUG`` before logging
    # the full request (webhook URL included), and NOTSET (0) would pass that test. CRITICAL,
    # because every failure it would log is raised to us and logged once by the outbox.
    logger.setLevel(logging.CRITICAL)
    for old in list(logger.filters):
        logger.removeFilter(old)
    logger.addFilter(SecretFilter(secrets))
    return logger


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def clip_mrkdwn(escaped: str, limit: int) -> str:
    """Cut escaped mrkdwn to ``limit`` characters, never inside an entity like ``&lt;``.

    Escaping makes text longer (``<`` becomes four characters), so text is escaped first and
    cut after: cut first, 3,000 characters of ``<`` would become 12,000 and Slack would refuse
    the message (``invalid_blocks``), for good.
    """
    if len(escaped) <= limit:
        return escaped
    cut = escaped[: limit - 1]
    amp = cut.rfind("&")
    if amp >= 0 and ";" not in cut[amp:]:
        cut = cut[:amp]
    return cut + "…"


def _mrkdwn(text: str, limit: int = _TEXT_MAX) -> str:
    """Escape upstream text for mrkdwn and cut it to ``limit`` characters."""
    return clip_mrkdwn(escape_mrkdwn(text), limit)


def _link(url: str, label: str) -> str:
    # URLs come from the config, but a '|' or '>' would still end the link early.
    safe = escape_mrkdwn(url).replace("|", "%7C")
    return f"<{safe}|{label}>"


def title(message: Message) -> str:
    """Return the one-line title: what happened, to which rule, at which severity."""
    sev = message.severity.upper()
    if message.transition == "test":
        return "batch-monitor test message"
    if message.transition == "resolved":
        return f"Resolved: {sev} {message.rule}"
    if message.transition == "reminder":
        return f"Still firing: {sev} {message.rule}"
    return f"{sev} {message.rule} is firing"


def fallback_text(message: Message) -> str:
    """Return the plain notification text (push notifications, clients without blocks)."""
    notes = message.annotations
    text = title(message)
    details = []
    if notes.get("value"):
        against = f" (threshold {notes['threshold']})" if notes.get("threshold") else ""
        details.append(f"{notes['value']}{against}")
    scope = ", ".join(f"{k}={v}" for k, v in message.scope.items())
    if scope:
        details.append(scope)
    if details:
        text += " — " + "; ".join(details)
    return _mrkdwn(text)


def build_blocks(
    message: Message, grafana_url: str | None = None, *, as_resolved: bool = False
) -> list[dict[str, Any]]:
    """Build the Block Kit blocks for ``message``.

    Every piece of text that came from upstream (labels, reasons, values) is escaped for
    mrkdwn. ``as_resolved`` renders the *original* firing message as it should read once the
    alert resolved (used with ``chat.update``).
    """
    notes = message.annotations
    if as_resolved or message.transition == "resolved":
        emoji = ":white_check_mark:"
    elif message.transition == "test":
        emoji = ":wrench:"
    else:
        emoji = _EMOJI.get(message.severity, ":bell:")
    heading = title(message)
    if as_resolved:
        heading = f"Resolved (was {message.severity.upper()}): {message.rule}"
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": _clip(f"{emoji} {heading}", _HEADER_MAX)},
        }
    ]
    # The rule's summary says what the alert means; the reason says what was measured.
    summary = "\n".join(
        t for t in (notes.get("summary"), notes.get("description"), message.reason) if t
    )
    if summary:
        blocks.append(
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": _mrkdwn(summary)},
            }
        )
    fields = []
    if notes.get("value"):
        against = f" (threshold {notes['threshold']})" if notes.get("threshold") else ""
        label = "Value now" if message.transition == "resolved" else "Value"
        fields.append(f"*{label}*\n{_mrkdwn(notes['value'] + against, _FIELD_MAX)}")
    if notes.get("window"):
        fields.append(f"*Window*\n{_mrkdwn(notes['window'], _FIELD_MAX)}")
    scope = ", ".join(f"{k}={v}" for k, v in message.scope.items()) or "whole organisation"
    fields.append(f"*Scope*\n{_mrkdwn(scope, _FIELD_MAX)}")
    fields.append(f"*Severity*\n{_mrkdwn(message.severity, _FIELD_MAX)}")
    blocks.append({"type": "section", "fields": [{"type": "mrkdwn", "text": f} for f in fields]})
    if message.transition in ("firing", "reminder") and notes.get("action") and not as_resolved:
        blocks.append(
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": "*What to do:* " + _mrkdwn(notes["action"]),
                },
            }
        )
    links = []
    dashboard = notes.get("dashboard_url") or grafana_url
    if dashboard:
        links.append(_link(dashboard, "Grafana panel"))
    if notes.get("runbook_url"):
        links.append(_link(notes["runbook_url"], "Runbook"))
    when = message.created_at.strftime("%Y-%m-%d %H:%M UTC")
    context = {
        "firing": f"Fired {when}",
        "reminder": f"Reminder {when}",
        "resolved": f"Resolved {when}",
        "test": f"Sent {when}",
    }.get(message.transition, when)
    if as_resolved:
        context = f"Resolved {when}"
    blocks.append(
        {
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": " · ".join([*links, context])}],
        }
    )
    return blocks


def _header(headers: Mapping[str, Any] | None, name: str) -> str | None:
    if not headers:
        return None
    for key, value in headers.items():
        if key.lower() == name.lower():
            return str(value[0] if isinstance(value, list) else value)
    return None


def _retry_after(headers: Mapping[str, Any] | None) -> float | None:
    raw = _header(headers, "Retry-After")
    try:
        return max(0.0, float(raw)) if raw is not None else None
    except ValueError:
        return None


class SlackNotifier:
    """Post to Slack with a bot token (``chat.postMessage``, threads, ``chat.update``)."""

    name = "slack"

    def __init__(
        self,
        token: str,
        channel: str | None,
        *,
        channels: Mapping[str, str | None] | None = None,
        base_url: str | None = None,
        grafana_url: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        from slack_sdk import WebClient

        self._secrets = [token]
        self.channel = channel
        self.channels = {k: v for k, v in (channels or {}).items() if v}
        self.grafana_url = grafana_url
        kwargs: dict[str, Any] = {}
        if base_url:
            # The SDK appends the method name to base_url, so it must end with a slash.
            kwargs["base_url"] = base_url if base_url.endswith("/") else base_url + "/"
        self.client = WebClient(
            token=token,
            timeout=max(1, int(timeout)),
            retry_handlers=[],
            logger=_sdk_logger(self._secrets),
            **kwargs,
        )

    def channel_for(self, severity: str) -> str | None:
        """Return the channel for ``severity`` (its own, else the default channel)."""
        return self.channels.get(severity) or self.channel

    def send(self, message: Message) -> Sent:
        """Post ``message``; a resolution answers the firing message's thread and edits it."""
        text = fallback_text(message)
        blocks = build_blocks(message, self.grafana_url)
        thread = message.thread
        if message.transition == "resolved" and thread and thread.target and thread.message_ref:
            # Edit first: chat.update is idempotent, so if the reply below fails and the outbox
            # retries, the edit repeats harmlessly instead of a reply being posted twice.
            self._update_original(message, thread)
            data = self._call(
                "chat.postMessage",
                channel=thread.target,
                thread_ts=thread.message_ref,
                text=text,
                blocks=blocks,
                unfurl_links=False,
                unfurl_media=False,
                **_metadata(message),
            )
        else:
            channel = self.channel_for(message.severity)
            if not channel:
                raise NotifyError(
                    f"slack: no channel for severity {message.severity!r}; set "
                    "MONITOR_SLACK_CHANNEL or [slack] channel",
                    permanent=True,
                    kind="no_channel",
                )
            data = self._call(
                "chat.postMessage",
                channel=channel,
                text=text,
                blocks=blocks,
                unfurl_links=False,
                unfurl_media=False,
                **_metadata(message),
            )
        return Sent(target=_str(data.get("channel")), message_ref=_str(data.get("ts")))

    def find(self, message: Message) -> Sent | None:
        """Return where ``message`` already landed, if an earlier attempt did post it.

        A resolution is looked for among the replies of its thread, any other message in the
        channel's history since the event was created; both by the metadata ``send`` attaches.
        A look-up Slack refuses for good (scope, a channel name) says so and returns None, so
        the message is sent again; a transient failure raises ``NotifyError``.
        """
        if message.event_id is None:
            return None
        thread = message.thread
        params: dict[str, Any]
        channel: str | None
        if message.transition == "resolved" and thread and thread.target and thread.message_ref:
            method, channel = "conversations.replies", thread.target
            params = {"channel": channel, "ts": thread.message_ref}
        else:
            method, channel = "conversations.history", self.channel_for(message.severity)
            if not channel:
                return None
            since = message.created_at - timedelta(minutes=5)
            params = {"channel": channel, "oldest": f"{since.timestamp():.6f}"}
        params.update(include_all_metadata="true", limit="200")
        for _ in range(_LOOKUP_PAGES):
            try:
                data = self._call(method, query=params)
            except NotifyError as exc:
                if not exc.permanent:
                    raise
                log.warning(
                    "slack: cannot check whether alert event %s already arrived (%s); sending it "
                    "again. Give the bot channels:history and the channel's id to make this "
                    "exactly once",
                    message.event_id,
                    exc.message,
                )
                return None
            for posted in data.get("messages") or []:
                if isinstance(posted, Mapping) and _is_ours(posted.get("metadata"), message):
                    return Sent(target=_str(channel), message_ref=_str(posted.get("ts")))
            cursor = (data.get("response_metadata") or {}).get("next_cursor")
            if not data.get("has_more") or not cursor:
                break
            params = {**params, "cursor": cursor}
        return None

    def _update_original(self, message: Message, thread: Sent) -> None:
        try:
            self._call(
                "chat.update",
                channel=thread.target,
                ts=thread.message_ref,
                text=escape_mrkdwn(f"Resolved: {message.severity.upper()} {message.rule}"),
                blocks=build_blocks(message, self.grafana_url, as_resolved=True),
            )
        except NotifyError as exc:
            if exc.permanent and any(code in exc.message for code in _UNEDITABLE):
                log.info("slack: the firing message can no longer be edited (%s)", exc.message)
                return
            raise

    def check(self) -> str:
        """Call ``auth.test`` and return the bot's team and user (for ``notify-test``)."""
        data = self._call("auth.test")
        return f"team {data.get('team')!s}, user {data.get('user')!s}"

    def _call(
        self, method: str, *, query: Mapping[str, Any] | None = None, **params: Any
    ) -> Mapping[str, Any]:
        from slack_sdk.errors import SlackApiError, SlackClientError

        try:
            if query is not None:  # the read methods take form or query arguments, not JSON
                response = self.client.api_call(method, params=dict(query))
            else:
                response = self.client.api_call(method, json=params)
        except SlackApiError as exc:
            raise _api_error(method, exc.response, self._secrets) from None
        except (SlackClientError, OSError, ValueError) as exc:
            # Network failures (refused, reset, timeout) are worth another try.
            detail = scrub(f"{type(exc).__name__}: {exc}", self._secrets)
            raise NotifyError(f"slack {method}: {_clip(detail, 300)}", kind="network") from None
        data = response.data
        return data if isinstance(data, Mapping) else {}


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def _metadata(message: Message) -> dict[str, Any]:
    """Return the ``metadata`` argument that names the alert event of a post (none for a test)."""
    if message.event_id is None:
        return {}
    payload = {
        "event_id": message.event_id,
        "rule": message.rule,
        "transition": message.transition,
        "created_at": fmt.iso(message.created_at),
    }
    return {"metadata": {"event_type": METADATA_EVENT, "event_payload": payload}}


def _is_ours(metadata: Any, message: Message) -> bool:
    """Say whether a posted message's metadata names ``message``'s event.

    The time and transition are compared too: event ids of a store can be reused once old
    events are pruned.
    """
    if not isinstance(metadata, Mapping) or metadata.get("event_type") != METADATA_EVENT:
        return False
    payload = metadata.get("event_payload")
    return (
        isinstance(payload, Mapping) and payload == _metadata(message)["metadata"]["event_payload"]
    )


def _api_error(method: str, response: Any, secrets: list[str]) -> NotifyError:
    status = int(getattr(response, "status_code", 0) or 0)
    data = getattr(response, "data", None)
    code = str(data.get("error", "")) if isinstance(data, Mapping) else ""
    if code.startswith("Received a response in a non-JSON format"):
        code = "non-JSON response"  # an HTML error page from a proxy or an outage
    # Scrubbed before it is cut: a secret cut in two would no longer be recognised.
    code = _clip(scrub(code or "unknown_error", secrets), 200)
    retry_after = _retry_after(getattr(response, "headers", None))
    transient = status == 429 or status >= 500 or code in TRANSIENT_ERRORS
    text = f"slack {method}: {code} (HTTP {status})"
    if transient and retry_after is not None:
        text += f", retry after {retry_after:g}s"
    return NotifyError(
        text, permanent=not transient, retry_after=retry_after, kind=_kind(status, code, transient)
    )


def _kind(status: int, code: str, transient: bool) -> str:
    """Name a failure for /metrics: a rate limit, a server error, or Slack's own error code."""
    if status == 429 or code in ("ratelimited", "rate_limited"):
        return "ratelimited"
    if transient:
        return "server_error"
    return code


class SlackWebhookNotifier:
    """Post to Slack through an incoming webhook (no threads, no edits)."""

    name = "slack"

    def __init__(self, url: str, *, grafana_url: str | None = None, timeout: float = 10.0) -> None:
        from slack_sdk.webhook import WebhookClient

        self._secrets = [url]
        self.grafana_url = grafana_url
        self.client = WebhookClient(
            url, timeout=max(1, int(timeout)), retry_handlers=[], logger=_sdk_logger([url])
        )

    def send(self, message: Message) -> Sent:
        """Post ``message`` to the webhook's channel."""
        try:
            response = self.client.send(
                text=fallback_text(message),
                blocks=build_blocks(message, self.grafana_url),
                unfurl_links=False,
                unfurl_media=False,
            )
        except (OSError, ValueError) as exc:
            detail = scrub(f"{type(exc).__name__}: {exc}", self._secrets)
            raise NotifyError(f"slack webhook: {_clip(detail, 300)}", kind="network") from None
        status = int(response.status_code)
        if status == 200:
            return Sent(target="webhook")
        body = _clip(scrub((response.body or "").strip() or "no body", self._secrets), 200)
        retry_after = _retry_after(response.headers)
        # 404 no_service / 410 channel_is_archived / 403 action_prohibited / 400 invalid_payload
        # repeat forever; only rate limits and server errors may clear up.
        transient = status == 429 or status >= 500
        text = f"slack webhook: {body} (HTTP {status})"
        if transient and retry_after is not None:
            text += f", retry after {retry_after:g}s"
        raise NotifyError(
            text,
            permanent=not transient,
            retry_after=retry_after,
            kind=_kind(status, body, transient),
        )


def from_settings(
    settings: Settings, *, channel: str | None = None
) -> SlackNotifier | SlackWebhookNotifier | None:
    """Build the Slack notifier the settings ask for (bot token first, else webhook), or None.

    ``channel`` overrides every configured channel (``notify-test --channel``).
    """
    timeout = settings.slack.timeout.total_seconds()
    if settings.slack_bot_token is not None and settings.slack_bot_token.get_secret_value():
        channels: dict[str, str | None] = {
            "warning": settings.slack.channel_warning,
            "critical": settings.slack.channel_critical,
            "info": settings.slack.channel_info,
        }
        return SlackNotifier(
            settings.slack_bot_token.get_secret_value(),
            channel or settings.slack_channel,
            channels={} if channel else channels,
            base_url=settings.slack_base_url,
            grafana_url=settings.grafana_url,
            timeout=timeout,
        )
    if settings.slack_webhook_url is not None and settings.slack_webhook_url.get_secret_value():
        return SlackWebhookNotifier(
            settings.slack_webhook_url.get_secret_value(),
            grafana_url=settings.grafana_url,
            timeout=timeout,
        )
    return None
