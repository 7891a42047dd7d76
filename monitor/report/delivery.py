"""Delivering the weekly report: exactly once per week, across restarts and replicas.

``deliver_due(session, now, settings, holder=...)`` is the daemon's one call (any replica, as
often as every few minutes):

1. Find the week whose scheduled time (``[report] weekday`` and ``time`` in ``[report]
   timezone``) is the latest one at or before ``now``. Only that week: a Monday missed while
   the daemon was down is sent when it comes back, older missed weeks are not.
2. Nothing to do if its ``report_run`` row says delivered, or a retry is not due yet.
3. Claim the row with a compare-and-set (insert it, or take it over when it is unclaimed or
   its claim expired): only the worker whose statement changed the row goes on.
4. Build the report, write the files to ``[report] dir`` (all forms and the chart; a rewrite
   replaces them whole), post the summary blocks to Slack and upload the chart in the
   message's thread. Each Slack step is recorded the moment it succeeds, so a retry skips it.
5. Mark the row delivered and release the claim.

A Slack failure never raises: it is recorded on the row with a backoff (Slack's
``Retry-After`` when given) and the next call retries the steps still missing. A step whose
outcome is unknown (a timeout, a crash between the post and its record) is first looked for in
Slack: the message carries metadata naming the week (``conversations.history``), the chart
its file name (``conversations.replies``), so it is adopted instead of sent twice. That look-up
needs the bot's ``channels:history`` scope (``groups:history`` for a private channel); without
it the step is sent again (at least once) and the log says so. A webhook cannot be asked, nor
upload a file: the chart stays in the report directory and the message says so.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import or_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col

from monitor import db, fmt
from monitor.logs import scrub
from monitor.models import ReportRun
from monitor.notifiers.base import NotifyError
from monitor.report.chart import chart_png
from monitor.report.render import FORMATS, render, slack_blocks, slack_text
from monitor.report.weekly import WeeklyReport, build_weekly
from monitor.report.weeks import Week, latest_due_week
from monitor.summary import data_since

if TYPE_CHECKING:
    from monitor.config import Settings

log = logging.getLogger(__name__)

CLAIM_TIMEOUT = timedelta(minutes=10)
MAX_BACKOFF = timedelta(hours=1)
METADATA_EVENT = "batch_monitor_weekly_report"
# Slack error codes worth another try; every other ``ok: false`` answer repeats itself.
_TRANSIENT = frozenset(
    {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}
)


@dataclass(frozen=True)
class ReportOutcome:
    """What one delivery attempt did.

    ``status``: ``delivered`` (files written, and posted when Slack is configured),
    ``retrying`` (a step failed; the row says when the next attempt is due),
    ``claimed_elsewhere`` (another worker holds the week) or ``already_delivered``.
    """

    week_start: str
    status: str
    paths: tuple[Path, ...] = ()
    posted: bool = False
    uploaded: bool = False
    attempts: int = 0
    error: str | None = None


def default_holder() -> str:
    """Return a claim holder name for this process (host and pid)."""
    return f"{socket.gethostname()}:{os.getpid()}"[:255]


def file_stem(week: Week) -> str:
    """Return the file name stem of a week's report (``weekly-2026-11-16``)."""
    return f"weekly-{week.start_date.isoformat()}"


def write_files(
    report: WeeklyReport, out_dir: Path, forms: tuple[str, ...] = FORMATS
) -> tuple[Path, ...]:
    """Write the report in ``forms`` and the chart PNG to ``out_dir``; return the paths.

    Each file is written to a temporary name and renamed over the old one, so a reader (or a
    crash) never sees half a report.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = file_stem(report.week)
    png = chart_png(report)
    paths = []
    for form in forms:
        paths.append(_write(out_dir / f"{stem}.{form}", render(report, form, png).encode()))
    paths.append(_write(out_dir / f"{stem}.png", png))
    return tuple(paths)


def _write(path: Path, data: bytes) -> Path:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path


# --- the record -----------------------------------------------------------------------------


def _claim(session: Session, week: Week, now: datetime, holder: str, timeout: timedelta) -> bool:
    """Claim the week's row for ``holder``; return whether this call got it."""
    table = ReportRun.__table__  # type: ignore[attr-defined]
    dialect = session.get_bind().dialect.name
    insert: Any = postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table)
    # RETURNING says whether this statement inserted the row (rowcount is not reliable for an
    # INSERT ... ON CONFLICT DO NOTHING on every driver).
    inserted = (
        session.execute(
            insert.values(
                week_start=week.start,
                created_at=now,
                summary="{}",
                claimed_by=holder,
                claimed_until=now + timeout,
                attempts=1,
            )
            .on_conflict_do_nothing(index_elements=["week_start"])
            .returning(table.c.week_start)
        ).first()
        is not None
    )
    if not inserted:
        inserted = (
            db.rowcount(
                session.execute(
                    update(ReportRun)
                    .where(
                        col(ReportRun.week_start) == week.start,
                        col(ReportRun.delivered_at).is_(None),
                        or_(
                            col(ReportRun.claimed_until).is_(None),
                            col(ReportRun.claimed_until) < now,
                        ),
                        or_(
                            col(ReportRun.next_attempt_at).is_(None),
                            col(ReportRun.next_attempt_at) <= now,
                        ),
                    )
                    .values(
                        claimed_by=holder,
                        claimed_until=now + timeout,
                        attempts=col(ReportRun.attempts) + 1,
                    )
                    .execution_options(synchronize_session=False)
                )
            )
            == 1
        )
    session.commit()
    return bool(inserted)


def _record(session: Session, week: Week, holder: str, **values: Any) -> bool:
    """Update the week's row while ``holder`` still holds it; commit; return whether it did."""
    done = db.rowcount(
        session.execute(
            update(ReportRun)
            .where(col(ReportRun.week_start) == week.start, col(ReportRun.claimed_by) == holder)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
    )
    session.commit()
    return done == 1


def _row(session: Session, week: Week) -> ReportRun:
    session.expire_all()
    row = session.get(ReportRun, week.start)
    assert row is not None, "the row exists once claimed"
    return row


def backoff(attempts: int, retry_after: float | None) -> timedelta:
    """Return the wait before the next attempt: Slack's Retry-After, else 30 s doubling."""
    if retry_after is not None:
        return min(timedelta(seconds=retry_after), MAX_BACKOFF)
    return min(timedelta(seconds=30 * 2 ** max(0, min(attempts - 1, 20))), MAX_BACKOFF)


# --- entry points ---------------------------------------------------------------------------


def due_week(session: Session, now: datetime, settings: Settings) -> Week | None:
    """Return the week whose report is due at ``now`` and not delivered yet (None: none)."""
    r = settings.report
    week = latest_due_week(now, r.timezone, r.weekday, r.time)
    if week is None:
        return None
    row = session.get(ReportRun, week.start)
    if row is not None and (
        row.delivered_at is not None
        or (row.next_attempt_at is not None and row.next_attempt_at > now)
        or (row.claimed_until is not None and row.claimed_until >= now)
    ):
        return None
    since = data_since(session)
    if since is None or since >= week.end:
        return None  # nothing was recorded for that week: no report to send
    return week


def deliver_due(
    session: Session,
    now: datetime,
    settings: Settings,
    *,
    holder: str,
    claim_timeout: timedelta = CLAIM_TIMEOUT,
) -> ReportOutcome | None:
    """Build, write and post the weekly report that is due, once; None when none is due.

    Never raises for a Slack failure (it is recorded and retried on a later call); raises only
    for bugs and database errors.
    """
    week = due_week(session, now, settings)
    session.commit()
    if week is None:
        return None
    return deliver_week(
        session, week, now, settings, holder=holder, out_dir=Path(settings.report.dir),
        claim_timeout=claim_timeout,
    )  # fmt: skip


def deliver_week(
    session: Session,
    week: Week,
    now: datetime,
    settings: Settings,
    *,
    holder: str,
    out_dir: Path | None,
    forms: tuple[str, ...] = FORMATS,
    report: WeeklyReport | None = None,
    claim_timeout: timedelta = CLAIM_TIMEOUT,
) -> ReportOutcome:
    """Deliver the report of ``week`` unless it was already delivered (the CLI's ``--post``).

    ``out_dir`` (None: write no files) receives the report in ``forms`` and the chart;
    ``report`` is used instead of building it again when the caller already has it.
    """
    label = week.start_date.isoformat()
    if not _claim(session, week, now, holder, claim_timeout):
        row = session.get(ReportRun, week.start)
        delivered = row is not None and row.delivered_at is not None
        status = "already_delivered" if delivered else "claimed_elsewhere"
        return ReportOutcome(
            label, status, posted=bool(row and row.message_ts), uploaded=bool(row and row.file_id),
            attempts=row.attempts if row else 0,
        )  # fmt: skip
    try:
        if report is None:
            report = build_weekly(session, week, now, settings)
        session.commit()
        paths: tuple[Path, ...] = ()
        if out_dir is not None:
            paths = write_files(report, out_dir, forms)
        png = chart_png(report) if out_dir is None else paths[-1].read_bytes()
    except OSError as exc:
        # The report directory is not writable (or full): retried like a failed post.
        return _failed(session, week, now, holder, f"cannot write the report: {exc}", None)
    except BaseException:
        _record(session, week, holder, claimed_by=None, claimed_until=None)
        raise
    files_note = f"Full report: {file_stem(week)}.html in {out_dir}" if out_dir is not None else ""
    try:
        posted, uploaded = _post(session, week, now, settings, holder, report, png, files_note)
    except NotifyError as exc:
        return _failed(session, week, now, holder, exc.message, exc.retry_after, paths)
    row = _row(session, week)
    _record(
        session, week, holder,
        delivered_at=now, claimed_by=None, claimed_until=None, next_attempt_at=None, error=None,
        summary=report.summary_json(),
    )  # fmt: skip
    log.info(
        "weekly report %s delivered (%s)", label, ", ".join(str(p) for p in paths) or "no files"
    )
    return ReportOutcome(label, "delivered", paths, posted, uploaded, row.attempts)


def _failed(
    session: Session,
    week: Week,
    now: datetime,
    holder: str,
    error: str,
    retry_after: float | None,
    paths: tuple[Path, ...] = (),
) -> ReportOutcome:
    row = _row(session, week)
    wait = backoff(row.attempts, retry_after)
    _record(
        session, week, holder,
        claimed_by=None, claimed_until=None, error=error[:2000], next_attempt_at=now + wait,
    )  # fmt: skip
    log.warning(
        "weekly report %s: %s; attempt %d, retrying after %s",
        week.start_date.isoformat(), error, row.attempts, fmt.iso(now + wait),
    )  # fmt: skip
    return ReportOutcome(
        week.start_date.isoformat(), "retrying", paths, bool(row.message_ts), bool(row.file_id),
        row.attempts, error,
    )  # fmt: skip


# --- Slack ----------------------------------------------------------------------------------


def _post(
    session: Session,
    week: Week,
    now: datetime,
    settings: Settings,
    holder: str,
    report: WeeklyReport,
    png: bytes,
    files_note: str,
) -> tuple[bool, bool]:
    """Post the summary and upload the chart, each at most once; return (posted, uploaded)."""
    from monitor.notifiers.slack import SlackNotifier, SlackWebhookNotifier
    from monitor.notifiers.slack import from_settings as slack_from_settings

    notifier = slack_from_settings(settings)
    if notifier is None:
        return False, False
    row = _row(session, week)
    if isinstance(notifier, SlackWebhookNotifier):
        if row.message_ts is None:
            note = (
                files_note + "; " if files_note else ""
            ) + "the chart is in the report directory"
            _webhook_post(notifier, report, note)
            _record(session, week, holder, message_channel="webhook", message_ts="webhook")
        return True, False
    assert isinstance(notifier, SlackNotifier)
    slack = _Slack(notifier)
    if row.message_ts is None:
        found = None
        if row.post_started_at is not None:
            found = slack.find_message(notifier.channel, week, row.post_started_at)
        if found is None:
            if not notifier.channel:
                raise NotifyError(
                    "slack: no channel for the weekly report; set MONITOR_SLACK_CHANNEL or "
                    "[slack] channel",
                    permanent=True,
                )
            _record(session, week, holder, post_started_at=now)
            note = (files_note + "; " if files_note else "") + "chart in the thread"
            try:
                found = slack.post(notifier.channel, week, report, note)
            except OutcomeUnknown:
                raise  # keep the mark: the retry looks for the message first
            except NotifyError:
                _record(session, week, holder, post_started_at=None)  # Slack said no
                raise
        _record(
            session,
            week,
            holder,
            message_channel=found[0],
            message_ts=found[1],
            post_started_at=None,
        )
        row = _row(session, week)
    assert row.message_channel is not None and row.message_ts is not None
    if row.file_id is None:
        file_id = None
        if row.upload_started_at is not None:
            file_id = slack.find_file(row.message_channel, row.message_ts, week)
        if file_id is None:
            _record(session, week, holder, upload_started_at=now)
            try:
                file_id = slack.upload(row.message_channel, row.message_ts, week, png)
            except OutcomeUnknown:
                raise
            except NotifyError:
                _record(session, week, holder, upload_started_at=None)
                raise
        _record(session, week, holder, file_id=file_id, upload_started_at=None)
    return True, True


class OutcomeUnknown(NotifyError):
    """A Slack call whose outcome is unknown: the request may or may not have arrived."""


class _Slack:
    """The Web API calls of the report, each failure turned into one ``NotifyError``.

    A definite refusal (Slack answered) clears the step's "started" mark, so the retry sends
    it; an unknown outcome (the connection broke) keeps it, so the retry looks first.
    """

    def __init__(self, notifier: Any) -> None:
        self.client = notifier.client
        self.secrets: list[str] = list(getattr(notifier, "_secrets", []))

    def post(
        self, channel: str, week: Week, report: WeeklyReport, files_note: str
    ) -> tuple[str, str]:
        data = self._call(
            "chat.postMessage",
            lambda: self.client.api_call(
                "chat.postMessage",
                json={
                    "channel": channel,
                    "text": slack_text(report),
                    "blocks": slack_blocks(report, files_note=files_note),
                    "unfurl_links": False,
                    "unfurl_media": False,
                    "metadata": {
                        "event_type": METADATA_EVENT,
                        "event_payload": {"week_start": week.start_date.isoformat()},
                    },
                },
            ),
        )
        return str(data.get("channel") or channel), str(data["ts"])

    def upload(self, channel: str, thread_ts: str, week: Week, png: bytes) -> str:
        data = self._call(
            "files_upload_v2",
            lambda: self.client.files_upload_v2(
                channel=channel,
                thread_ts=thread_ts,
                file=png,
                filename=f"{file_stem(week)}.png",
                title=f"Claude spend by day, week of {week.start_date.isoformat()}",
                alt_txt="Daily spend by tier for both weeks with the batch share",
            ),
        )
        file = data.get("file") or {}
        return str(file.get("id") or "uploaded")

    def find_message(
        self, channel: str | None, week: Week, since: datetime
    ) -> tuple[str, str] | None:
        """Look for this week's message posted since ``since`` (a post whose answer was lost)."""
        if not channel:
            return None
        try:
            data = self._call(
                "conversations.history",
                lambda: self.client.api_call(
                    "conversations.history",
                    params={
                        "channel": channel,
                        "oldest": f"{(since - timedelta(minutes=5)).timestamp():.6f}",
                        "include_all_metadata": "true",
                        "limit": "200",
                    },
                ),
            )
        except NotifyError as exc:
            if exc.permanent:
                log.warning(
                    "weekly report %s: cannot check whether the last post arrived (%s); "
                    "posting again. Give the bot channels:history to make this exactly once",
                    week.start_date.isoformat(), exc.message,
                )  # fmt: skip
                return None
            raise
        for message in data.get("messages") or []:
            meta = message.get("metadata") or {}
            payload = meta.get("event_payload") or {}
            if (
                meta.get("event_type") == METADATA_EVENT
                and payload.get("week_start") == week.start_date.isoformat()
            ):
                return str(data.get("channel") or channel), str(message["ts"])
        return None

    def find_file(self, channel: str, thread_ts: str, week: Week) -> str | None:
        """Look for the chart in the message's thread (an upload whose answer was lost)."""
        name = f"{file_stem(week)}.png"
        try:
            data = self._call(
                "conversations.replies",
                lambda: self.client.api_call(
                    "conversations.replies", params={"channel": channel, "ts": thread_ts}
                ),
            )
        except NotifyError as exc:
            if exc.permanent:
                log.warning(
                    "weekly report %s: cannot check whether the chart arrived (%s); uploading "
                    "again", week.start_date.isoformat(), exc.message,
                )  # fmt: skip
                return None
            raise
        for message in data.get("messages") or []:
            for file in message.get("files") or []:
                if file.get("name") == name:
                    return str(file.get("id") or "uploaded")
        return None

    def _call(self, method: str, call: Any) -> Mapping[str, Any]:
        from slack_sdk.errors import SlackApiError, SlackClientError

        try:
            response = call()
        except SlackApiError as exc:
            raise _api_error(method, exc.response, self.secrets) from None
        except SlackClientError as exc:
            # The SDK refused before or between calls (an upload URL that answered non-200):
            # Slack holds nothing of it, so it is a definite, retryable failure.
            detail = scrub(f"{type(exc).__name__}: {exc}", self.secrets)
            raise NotifyError(f"slack {method}: {detail[:300]}") from None
        except (OSError, ValueError) as exc:
            detail = scrub(f"{type(exc).__name__}: {exc}", self.secrets)
            raise OutcomeUnknown(f"slack {method}: {detail[:300]} (outcome unknown)") from None
        data = response.data
        return data if isinstance(data, Mapping) else {}


def _api_error(method: str, response: Any, secrets: list[str]) -> NotifyError:
    status = int(getattr(response, "status_code", 0) or 0)
    data = getattr(response, "data", None)
    code = str(data.get("error", "")) if isinstance(data, Mapping) else ""
    if code.startswith("Received a response in a non-JSON format"):
        code = "non-JSON response"
    code = scrub((code or "unknown_error")[:200], secrets)
    headers = getattr(response, "headers", None) or {}
    retry_after = None
    for key, value in dict(headers).items():
        if key.lower() == "retry-after":
            try:
                retry_after = max(0.0, float(value[0] if isinstance(value, list) else value))
            except ValueError:
                retry_after = None
    transient = status == 429 or status >= 500 or code in _TRANSIENT
    return NotifyError(
        f"slack {method}: {code} (HTTP {status})", permanent=not transient, retry_after=retry_after
    )


def _webhook_post(notifier: Any, report: WeeklyReport, files_note: str) -> None:
    try:
        response = notifier.client.send(
            text=slack_text(report),
            blocks=slack_blocks(report, files_note=files_note),
            unfurl_links=False,
            unfurl_media=False,
        )
    except (OSError, ValueError) as exc:
        detail = scrub(f"{type(exc).__name__}: {exc}", list(getattr(notifier, "_secrets", [])))
        raise NotifyError(f"slack webhook: {detail[:300]}") from None
    if int(response.status_code) != 200:
        body = scrub(
            (response.body or "").strip()[:200] or "no body",
            list(getattr(notifier, "_secrets", [])),
        )
        status = int(response.status_code)
        raise NotifyError(
            f"slack webhook: {body} (HTTP {status})", permanent=not (status == 429 or status >= 500)
        )


__all__ = [
    "CLAIM_TIMEOUT",
    "ReportOutcome",
    "default_holder",
    "deliver_due",
    "deliver_week",
    "due_week",
    "file_stem",
    "write_files",
]
