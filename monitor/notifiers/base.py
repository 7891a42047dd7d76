"""What every notifier shares: the message it is given, what it returns, how it fails.

A notifier delivers one alert event to one channel and either returns where the message landed
(``Sent``) or raises ``NotifyError``. It never retries on its own: the outbox in ``alerts.py``
decides when to try again, so a retry survives a restart and two processes never both retry.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Protocol

# Characters Slack's mrkdwn gives a meaning to in every context (links, mentions, entities).
_MRKDWN_ESCAPES = (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"))


def escape_mrkdwn(text: str) -> str:
    """Escape ``&``, ``<`` and ``>`` so upstream text cannot become a mention or a link.

    Slack documents exactly these three as the characters to escape in message text; with
    them escaped, ``<!channel>``, ``<@U123>`` and ``<https://evil|click>`` render literally.
    """
    for raw, escaped in _MRKDWN_ESCAPES:
        text = text.replace(raw, escaped)
    return text


@dataclass(frozen=True)
class Sent:
    """Where a message landed: a channel id and a message timestamp when the channel has them."""

    target: str | None = None
    message_ref: str | None = None


@dataclass(frozen=True)
class Message:
    """One alert event, as a notifier renders it.

    ``transition`` is ``firing``, ``reminder``, ``resolved`` or ``test``. ``annotations`` holds
    display text prepared by the rule (``summary``, ``value``, ``threshold``, ``window``,
    ``action``, ``runbook_url``, ``dashboard_url``). ``thread`` is where the firing message of
    the same alert landed on this notifier, so a resolution can answer it.
    """

    rule: str
    severity: str
    transition: str
    labels: Mapping[str, str]
    created_at: datetime
    value: Decimal | None = None
    threshold: Decimal | None = None
    reason: str | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)
    event_id: int | None = None
    thread: Sent | None = None

    @property
    def scope(self) -> dict[str, str]:
        """Return the labels that say *where* (everything except rule and severity)."""
        return {k: v for k, v in sorted(self.labels.items()) if k not in ("rule", "severity")}


# The kinds of failure /metrics counts (batch_monitor_notification_failures_total{kind}): the
# error codes Slack documents for the calls we make, and classes of transient trouble. Any
# other code is "other", so a misbehaving server cannot grow the label set.
FAILURE_KINDS = frozenset(
    {
        # transient
        "ratelimited", "server_error", "network",
        # the token or the app
        "invalid_auth", "not_authed", "account_inactive", "token_revoked", "token_expired",
        "no_permission", "missing_scope", "ekm_access_denied", "team_access_not_granted",
        # the channel
        "channel_not_found", "not_in_channel", "is_archived", "channel_is_archived",
        "restricted_action", "no_channel",
        # the message
        "msg_too_long", "no_text", "invalid_blocks", "invalid_arguments", "thread_not_found",
        # an incoming webhook
        "no_service", "action_prohibited", "invalid_payload", "invalid_token",
        # ours
        "crashed",
    }
)  # fmt: skip


def failure_kind(code: str | None) -> str:
    """Return ``code`` when it is one of ``FAILURE_KINDS``, else ``"other"``."""
    return code if code in FAILURE_KINDS else "other"


class NotifyError(Exception):
    """A delivery failed.

    ``permanent`` means trying again cannot help (bad token, unknown channel, deleted webhook):
    the event is marked failed and reported once. Otherwise the outbox retries after
    ``retry_after`` seconds when the channel said so (Slack's ``Retry-After``), else with backoff.
    ``kind`` names the failure for /metrics (one of ``FAILURE_KINDS``).
    """

    def __init__(
        self,
        message: str,
        permanent: bool = False,
        retry_after: float | None = None,
        kind: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.permanent = permanent
        self.retry_after = retry_after
        self.kind = failure_kind(kind)


class Notifier(Protocol):
    """A delivery channel: Slack, the log."""

    name: str

    def send(self, message: Message) -> Sent:
        """Deliver ``message`` once; return where it landed or raise ``NotifyError``."""
        ...
