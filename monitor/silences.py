"""Silences and inhibition: when an alert's message is held back, and why.

A *silence* mutes the alerts whose labels match all its matchers between two times; it is a
row (``silence``) that ``batch-monitor silence add/list/expire`` manage. *Inhibition* mutes an
alert while a firing alert of the same rule and scope has a higher severity (a firing critical
mutes the warning). Both are checked when a transition is decided (``alerts.evaluate_all``) and
again when its message is delivered (``notifiers.delivery``), so a silence added in between
still holds. Every mute has a reason in words, stored and logged.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import select, update
from sqlmodel import Session, col

from monitor import db
from monitor.models import AlertState, Silence
from monitor.rulekinds import SCOPE_KEYS

log = logging.getLogger(__name__)

SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}


def dumps(data: Mapping[str, Any]) -> str:
    """Serialise labels or annotations the way alert rows store them (sorted keys)."""
    return orjson.dumps(dict(data), option=orjson.OPT_SORT_KEYS).decode()


def loads(raw: str | None) -> dict[str, Any]:
    """Read labels or annotations back from an alert row (an empty dict when unset)."""
    if not raw:
        return {}
    data = orjson.loads(raw)
    return data if isinstance(data, dict) else {}


def silence_matches(matchers: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    """Return whether every matcher equals the alert's label of the same name."""
    return bool(matchers) and all(labels.get(k) == v for k, v in matchers.items())


def active_silences(session: Session, now: datetime) -> list[Silence]:
    """Return the silences in force at ``now``."""
    stmt = (
        select(Silence)
        .where(col(Silence.starts_at) <= now, col(Silence.ends_at) > now)
        .order_by(col(Silence.id))
        .execution_options(populate_existing=True)
    )
    return list(session.execute(stmt).scalars())


def add_silence(
    session: Session,
    now: datetime,
    matchers: Mapping[str, str],
    duration: timedelta,
    comment: str = "",
    *,
    starts_at: datetime | None = None,
) -> Silence:
    """Create a silence for ``duration`` from ``starts_at`` (default ``now``) and commit it."""
    if not matchers:
        raise ValueError("a silence needs at least one matcher, like rule=batch_failure_rate")
    if duration <= timedelta(0):
        raise ValueError("a silence must last longer than 0s")
    start = starts_at or now
    silence = Silence(
        matchers=dumps(matchers),
        starts_at=start,
        ends_at=start + duration,
        comment=comment,
        created_at=now,
    )
    session.add(silence)
    session.commit()
    log.info("silence %s added: %s until %s", silence.id, silence.matchers, silence.ends_at)
    return silence


def list_silences(
    session: Session, now: datetime, *, include_expired: bool = False
) -> list[Silence]:
    """Return the silences that have not ended (or all of them), newest first."""
    stmt = (
        select(Silence).order_by(col(Silence.id).desc()).execution_options(populate_existing=True)
    )
    if not include_expired:
        stmt = stmt.where(col(Silence.ends_at) > now)
    return list(session.execute(stmt).scalars())


def expire_silence(session: Session, now: datetime, silence_id: int) -> bool:
    """End a silence at ``now``; return False when there is no such silence still in force."""
    result = session.execute(
        update(Silence)
        .where(col(Silence.id) == silence_id, col(Silence.ends_at) > now)
        .values(ends_at=now)
        .execution_options(synchronize_session=False)
    )
    session.commit()
    return db.rowcount(result) == 1


def _scope(labels: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple((k, labels[k]) for k in SCOPE_KEYS if k in labels)


@dataclass
class Current:
    """The alerts' states as known during one evaluation round (for inhibition)."""

    by_key: dict[tuple[str, tuple[tuple[str, str], ...]], dict[str, tuple[str, str]]] = field(
        default_factory=dict
    )

    def set(self, fp: str, rule: str, severity: str, labels: Mapping[str, str], state: str) -> None:
        """Record the state of one alert (``fp``) of ``rule`` at ``severity``."""
        self.by_key.setdefault((rule, _scope(labels)), {})[fp] = (severity, state)

    def inhibitor(self, rule: str, severity: str, labels: Mapping[str, str]) -> str | None:
        """Return a description of a firing higher-severity alert of the same rule and scope."""
        rank = SEVERITY_RANK.get(severity, 0)
        for fp, (sev, state) in sorted(self.by_key.get((rule, _scope(labels)), {}).items()):
            if state == "firing" and SEVERITY_RANK.get(sev, 0) > rank:
                return f"inhibited by the firing {sev} alert {fp[:12]}"
        return None


def muted_by(
    silences: Sequence[Silence],
    current: Current,
    rule: str,
    severity: str,
    labels: Mapping[str, str],
) -> str | None:
    """Return why an alert with these labels is muted (a silence or inhibition), else None."""
    for s in silences:
        if silence_matches(loads(s.matchers), labels):
            return f"silenced by silence {s.id}" + (f" ({s.comment})" if s.comment else "")
    return current.inhibitor(rule, severity, labels)


def current_from_db(session: Session) -> Current:
    """Return the firing alerts as stored (what inhibition looks at)."""
    current = Current()
    stmt = select(
        col(AlertState.fingerprint),
        col(AlertState.rule),
        col(AlertState.severity),
        col(AlertState.labels),
        col(AlertState.state),
    ).where(col(AlertState.state) == "firing")
    for fp, rule, severity, labels, state in session.execute(stmt):
        current.set(fp, rule, severity, loads(labels), state)
    return current
