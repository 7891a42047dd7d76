"""Crash points: named spots where a crash test can SIGKILL the process on purpose.

A SIGKILL sent from outside at a random time rarely lands inside a particular write, so the
risky spots call ``crashpoint(name)``: a write done but not committed, a Slack message sent but
not yet recorded. ``MONITOR_CRASHPOINT`` arms them, for tests only::

    MONITOR_CRASHPOINT=results.ingest:3            # SIGKILL on the 3rd time that point is hit
    MONITOR_CRASHPOINT=delivery.sent,retention.prune:2   # several points (":1" by default)

The points: ``results.ingest`` (a batch's result rows written, before the commit),
``alerts.transition`` (an alert transition's event row written, before the commit),
``delivery.sent`` (Slack accepted a message, before the outbox records it) and
``retention.prune`` (old rows deleted, before the commit).

The variable is read once, at import; when it is unset a call is one dictionary check.
"""

from __future__ import annotations

import os
import signal
from typing import Any

ENV = "MONITOR_CRASHPOINT"


def parse(spec: str) -> dict[str, int]:
    """Parse a ``MONITOR_CRASHPOINT`` value into point name -> the hit that kills."""
    armed: dict[str, int] = {}
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        name, _, nth = item.partition(":")
        try:
            count = int(nth) if nth else 1
        except ValueError:
            count = 0
        if not name or count < 1:
            raise ValueError(f"{ENV}={spec!r}: expected 'name[:n]' items with n >= 1")
        armed[name] = count
    return armed


_ARMED: dict[str, int] = parse(os.environ.get(ENV, ""))
_HITS: dict[str, int] = {}


def crashpoint(name: str, *, flush: Any = None) -> None:
    """SIGKILL this process if ``MONITOR_CRASHPOINT`` arms ``name`` for this hit.

    ``flush`` (a session) is flushed first, so the pending rows really are written, inside
    the transaction the crash leaves uncommitted.
    """
    if not _ARMED:
        return
    nth = _ARMED.get(name)
    if nth is None:
        return
    hits = _HITS[name] = _HITS.get(name, 0) + 1
    if hits != nth:
        return
    if flush is not None:
        flush.flush()
    # Said on stderr (the log), so a test can tell which point fired.
    os.write(2, f"crashpoint {name} (hit {hits}): SIGKILL\n".encode())
    os.kill(os.getpid(), signal.SIGKILL)
