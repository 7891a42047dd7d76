"""The log notifier: alerts as log lines (the default when Slack is not configured)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from monitor.notifiers.base import Message, Sent

if TYPE_CHECKING:
    from monitor.config import Settings

log = logging.getLogger("monitor.alerts.log")

_LEVELS = {"critical": logging.ERROR, "warning": logging.WARNING, "info": logging.INFO}


def render_line(message: Message) -> str:
    """Render ``message`` as one line: severity, rule, transition, value, window, scope."""
    notes = message.annotations
    scope = " ".join(f"{k}={v}" for k, v in message.scope.items()) or "all"
    parts = [f"[{message.severity.upper()}] {message.rule} {message.transition}"]
    if notes.get("value"):
        against = f" (threshold {notes['threshold']})" if notes.get("threshold") else ""
        parts.append(f"value {notes['value']}{against}")
    if notes.get("window"):
        parts.append(f"window {notes['window']}")
    parts.append(f"scope {scope}")
    if message.reason:
        parts.append(message.reason)
    return "; ".join(parts)


class LogNotifier:
    """Write each alert event to the ``monitor.alerts.log`` logger, at its severity's level."""

    name = "log"

    def send(self, message: Message) -> Sent:
        """Log ``message`` (a resolution at INFO); never fails."""
        level = logging.INFO if message.transition in ("resolved", "test") else None
        log.log(level or _LEVELS.get(message.severity, logging.WARNING), "%s", render_line(message))
        return Sent(target="log")


def from_settings(settings: Settings) -> LogNotifier:
    """Return the log notifier (it needs no configuration)."""
    return LogNotifier()
