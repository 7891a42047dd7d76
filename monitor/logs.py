"""Logging set-up: text or JSON lines, UTC timestamps, and secrets scrubbed from every record.

Scrubbing happens twice on purpose: ``SecretFilter`` cleans the message as a record is created
(so any handler sees a clean message), and the formatters clean their *whole output*, which is
the only place a traceback (``log.exception``, ``exc_info=True``) or stack text becomes a
string. A secret is any configured key or token, plus the credentials of URLs (``user:pass@``)
and the path of a Slack incoming webhook.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

# A Slack incoming-webhook URL is a secret by its path (T.../B.../token).
_WEBHOOK_PATH = re.compile(r"(hooks\.slack\.com/services|/services)/[A-Za-z0-9_/-]{8,}")
# user:password@ in any URL (database URLs, grafana_url, proxies).
_URL_USERINFO = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s:@]+:[^/\s@]+@")
# Anthropic keys and Slack tokens have recognisable shapes even when we were not told them.
_TOKEN_SHAPES = re.compile(
    r"\bsk-ant-[a-z0-9]+-[A-Za-z0-9_-]{8,}|\bxox[abprs]-[A-Za-z0-9-]{8,}|\bxapp-[A-Za-z0-9-]{8,}"
)
MASK = "***"

# Attributes every LogRecord has; anything else was passed with ``extra=`` and is an event field.
_RECORD_ATTRS = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys() | {"message", "asctime"}
)


def scrub(text: str, secrets: Sequence[str] = ()) -> str:
    """Replace every secret in ``text`` with ``***`` (errors can echo URLs and headers).

    ``secrets`` are the configured values; key- and token-shaped strings, URL credentials and
    webhook paths are masked even when nobody listed them.
    """
    for secret in secrets:
        if secret and len(secret) >= 4:  # too short to be a secret, too likely to be a word
            text = text.replace(secret, MASK)
    text = _URL_USERINFO.sub(lambda m: f"{m.group(1)}{MASK}@", text)
    text = _WEBHOOK_PATH.sub(lambda m: f"{m.group(1)}/{MASK}", text)
    return _TOKEN_SHAPES.sub(MASK, text)


_SECRET_ENV = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|WEBHOOK", re.I)


def env_secrets(environ: Mapping[str, str] | None = None) -> list[str]:
    """Return the values of environment variables whose names say they hold a secret.

    Used where the configuration may not have loaded (a traceback printed by ``--debug``):
    ``ANTHROPIC_API_KEY``, ``ANTHROPIC_ADMIN_KEY``, the ``api_key_env`` variables of
    ``[[workspaces]]``, ``MONITOR_SLACK_BOT_TOKEN``, ``MONITOR_SLACK_WEBHOOK_URL``.
    """
    env = os.environ if environ is None else environ
    return [v for k, v in env.items() if _SECRET_ENV.search(k) and len(v) >= 8]


class SecretFilter(logging.Filter):
    """Replace known secret values in log records' messages with ``***``."""

    def __init__(self, secrets: Sequence[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s and len(s) >= 4]

    def filter(self, record: logging.LogRecord) -> bool:
        """Clean the record's message in place; never drop a record."""
        message = record.getMessage()
        cleaned = scrub(message, self.secrets)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


class TextFormatter(logging.Formatter):
    """``2026-11-15T10:00:00Z INFO monitor.x: message``, scrubbed as a whole.

    Text is for people: the message says what happened. The event's fields (``extra=``) go to
    the JSON lines, where log pipelines index them.
    """

    def __init__(self, secrets: Sequence[str] = ()) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.secrets = list(secrets)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """Format the record's time as ISO 8601 UTC with a ``Z``."""
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created))

    def format(self, record: logging.LogRecord) -> str:
        """Format the record (and its traceback) and scrub the result."""
        return scrub(super().format(record), self.secrets)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``logger``, ``msg`` and the event's fields.

    ``job`` and ``source`` are always present (null outside a job) so log pipelines can index
    them; a traceback goes under ``exc``. Every string is scrubbed.
    """

    def __init__(self, secrets: Sequence[str] = ()) -> None:
        super().__init__()
        self.secrets = list(secrets)

    def format(self, record: logging.LogRecord) -> str:
        """Return the record as one JSON line."""
        data: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "job": None,
            "source": None,
            "msg": record.getMessage(),
        }
        data.update(event_fields(record))
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            data["stack"] = self.formatStack(record.stack_info)
        line = orjson.dumps(data, default=str).decode()
        return scrub(line, self.secrets)


def event_fields(record: logging.LogRecord) -> dict[str, Any]:
    """Return the fields passed with ``extra=`` (the event's own data)."""
    return {k: v for k, v in vars(record).items() if k not in _RECORD_ATTRS}


def setup_logging(
    level: str, secrets: Sequence[str] = (), *, fmt: str = "text", stream: Any = None
) -> None:
    """Configure the root logger to ``stream`` (stderr) at ``level``, secrets scrubbed.

    ``fmt`` is ``text`` or ``json`` (one object per line, for log pipelines).
    """
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    formatter: logging.Formatter = (
        JsonFormatter(secrets) if fmt == "json" else TextFormatter(secrets)
    )
    handler.setFormatter(formatter)
    handler.addFilter(SecretFilter(secrets))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # The HTTP stacks log request lines (with URLs) at INFO; keep them quiet.
    noisy_loggers = (
        "httpx",
        "httpx2",
        "httpcore",
        "anthropic",
        "slack_sdk",
        "apscheduler",
        "alembic",
    )
    for noisy in noisy_loggers:
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
