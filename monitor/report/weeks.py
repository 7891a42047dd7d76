"""Report weeks in the report's time zone: Monday 00:00 to the next Monday 00:00.

A week is named by the local date of its Monday. Its bounds are local midnights converted to
UTC (so a week across a daylight-saving change is 167 or 169 hours long), and everything
inside the product stays in aware UTC.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


class WeekError(ValueError):
    """A week that cannot be reported (not a Monday, not started yet); the message says why."""


@dataclass(frozen=True)
class Week:
    """One report week: its local Monday, the zone, and its UTC bounds."""

    start_date: date
    tz: str

    @property
    def zone(self) -> ZoneInfo:
        """Return the week's time zone."""
        return ZoneInfo(self.tz)

    @property
    def end_date(self) -> date:
        """Return the next Monday (exclusive end)."""
        return self.start_date + timedelta(days=7)

    @property
    def start(self) -> datetime:
        """Return the UTC instant of the week's first local midnight."""
        return local_midnight(self.start_date, self.tz)

    @property
    def end(self) -> datetime:
        """Return the UTC instant of the next Monday's local midnight (exclusive)."""
        return local_midnight(self.end_date, self.tz)

    @property
    def previous(self) -> Week:
        """Return the week before."""
        return Week(self.start_date - timedelta(days=7), self.tz)

    def days(self) -> list[tuple[date, datetime, datetime]]:
        """Return each local day of the week as ``(date, UTC start, UTC end)``."""
        out = []
        for i in range(7):
            d = self.start_date + timedelta(days=i)
            out.append(
                (d, local_midnight(d, self.tz), local_midnight(d + timedelta(days=1), self.tz))
            )
        return out


def local_midnight(day: date, tz: str) -> datetime:
    """Return the UTC instant of 00:00 local time on ``day`` in ``tz``."""
    return datetime.combine(day, time(0), tzinfo=ZoneInfo(tz)).astimezone(UTC)


def local_date(at: datetime, tz: str) -> date:
    """Return the local calendar date of the UTC instant ``at`` in ``tz``."""
    return at.astimezone(ZoneInfo(tz)).date()


def week_of(day: date, tz: str) -> Week:
    """Return the week (Monday to Monday) holding the local date ``day``."""
    return Week(day - timedelta(days=day.weekday()), tz)


def parse_week_start(value: str, tz: str) -> Week:
    """Parse ``YYYY-MM-DD`` naming a Monday; raise WeekError saying what is wrong."""
    try:
        day = date.fromisoformat(value.strip())
    except ValueError:
        raise WeekError(f"{value!r} is not a date (YYYY-MM-DD)") from None
    if day.weekday() != 0:
        monday = day - timedelta(days=day.weekday())
        raise WeekError(
            f"{day.isoformat()} is a {WEEKDAYS[day.weekday()].capitalize()}; weeks start on "
            f"Monday (that week starts on {monday.isoformat()})"
        )
    return Week(day, tz)


def last_complete_week(now: datetime, tz: str) -> Week:
    """Return the most recent week that ended at or before ``now``."""
    this = week_of(local_date(now, tz), tz)
    return this.previous if this.end > now else this


def scheduled_at(week: Week, weekday: str, at: str) -> datetime:
    """Return when the report of ``week`` is due: the first ``weekday`` ``at`` after it ends.

    With the default Monday 09:00, that is 09:00 on the Monday the week ends.
    """
    hour, minute = (int(p) for p in at.split(":"))
    target = WEEKDAYS.index(weekday.lower())
    day = week.end_date + timedelta(days=(target - week.end_date.weekday()) % 7)
    return datetime.combine(day, time(hour, minute), tzinfo=ZoneInfo(week.tz)).astimezone(UTC)


def latest_due_week(now: datetime, tz: str, weekday: str, at: str) -> Week | None:
    """Return the week whose scheduled report time is the latest one at or before ``now``."""
    week = week_of(local_date(now, tz), tz)
    # The report of a week is due at most 7 days after it ends: look back a few weeks.
    for _ in range(4):
        if scheduled_at(week, weekday, at) <= now:
            return week
        week = week.previous
    return None
