"""Notifiers: one class per delivery channel, and the registry that builds them from Settings.

Each module exposes ``from_settings(settings) -> Notifier | None`` (None when the channel is not
configured). Modules are imported only when used, so the CLI stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from monitor.notifiers.base import Message, Notifier, NotifyError, Sent

if TYPE_CHECKING:
    from monitor.config import Settings

__all__ = ["REGISTRY", "Message", "Notifier", "NotifyError", "Sent", "build", "from_settings"]

# name -> module that holds ``from_settings``; the order is the order of preference.
REGISTRY: dict[str, str] = {
    "slack": "monitor.notifiers.slack",
    "log": "monitor.notifiers.log",
}


def build(name: str, settings: Settings) -> Notifier | None:
    """Build the notifier registered as ``name`` (None when it is not configured)."""
    if name not in REGISTRY:
        raise KeyError(f"unknown notifier {name!r} (known: {', '.join(sorted(REGISTRY))})")
    module = importlib.import_module(REGISTRY[name])
    notifier: Notifier | None = module.from_settings(settings)
    return notifier


def from_settings(settings: Settings) -> list[Notifier]:
    """Return the notifiers to deliver with: Slack when configured, else the log notifier."""
    slack = build("slack", settings)
    if slack is not None:
        return [slack]
    log = build("log", settings)
    return [log] if log is not None else []
