"""Collection: run one source once, recording a CollectRun row whatever happens.

``collect_source(source, session, now)`` is the single entry point the scheduler, the CLI and the
tests call. The source does its own reading and upserting (committing where it needs atomic
units, e.g. one batch and its results); this module owns the run bookkeeping and makes sure a
failure is recorded with a message that carries no secret.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from sqlmodel import Session

from monitor import clock, db
from monitor.logs import scrub
from monitor.models import CollectRun

log = logging.getLogger(__name__)


@dataclass
class RunStats:
    """What one run of a source did (filled in by the source as it goes)."""

    items: int = 0
    api_calls: int = 0
    bad_lines: int = 0
    notes: list[str] = field(default_factory=list)

    def note(self, message: str) -> None:
        """Record a line for the person running ``batch-monitor collect``."""
        self.notes.append(message)


class Source(Protocol):
    """An upstream the daemon reads: Message Batches, usage/cost reports, call logs."""

    name: str

    def collect(self, session: Session, now: datetime, stats: RunStats) -> None:
        """Read what is new as of ``now`` and upsert it; raise on failure."""
        ...


class SourceError(Exception):
    """A source failed in a way worth one clear line (no traceback needed)."""


@dataclass(frozen=True)
class CollectResult:
    """The outcome of one run: the stored row plus the source's notes."""

    run: CollectRun
    stats: RunStats

    @property
    def ok(self) -> bool:
        """Whether the run succeeded."""
        return self.run.status == "ok"


def collect_source(
    source: Source, session: Session, now: datetime, secrets: Sequence[str] = ()
) -> CollectResult:
    """Run ``source`` once as of ``now`` and record the run; never raise for a source failure."""
    run = CollectRun(source=source.name, started_at=now, status="running")
    session.add(run)
    session.commit()
    stats = RunStats()
    started = clock.monotonic()
    try:
        source.collect(session, now, stats)
        session.commit()
        run.status = "ok"
    except Exception as exc:  # a failed source is recorded, the daemon goes on
        session.rollback()
        run.status = "failed"
        message = scrub(f"{type(exc).__name__}: {exc}", secrets)
        run.error = message[:4000]
        log.warning("collect %s failed: %s", source.name, message)
    run.finished_at = now + timedelta(seconds=clock.monotonic() - started)
    run.items, run.api_calls, run.bad_lines = stats.items, stats.api_calls, stats.bad_lines
    session.add(run)
    db.bump(session, "collect_runs", f"{source.name}|{run.status}")
    session.commit()
    return CollectResult(run=run, stats=stats)
