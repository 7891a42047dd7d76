"""Logging set-up: one format, UTC timestamps, and secrets scrubbed from every record."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence


def scrub(text: str, secrets: Sequence[str]) -> str:
    """Replace every secret in ``text`` with ``***`` (errors can echo URLs and headers)."""
    for secret in secrets:
        if secret and len(secret) >= 4:  # too short to be a secret, too likely to be a word
            text = text.replace(secret, "***")
    return text


class SecretFilter(logging.Filter):
    """Replace known secret values in log records with ``***``."""

    def __init__(self, secrets: Sequence[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s and len(s) >= 4]

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        message = record.getMessage()
        cleaned = scrub(message, self.secrets)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def setup_logging(level: str, secrets: Sequence[str] = ()) -> None:
    """Configure the root logger to stderr at ``level`` with secret scrubbing."""
    handler = logging.StreamHandler()
    formatter = logging.Formatter("%(asctime)sZ %(levelname)s %(name)s: %(message)s")
    formatter.converter = time.gmtime  # UTC inside, always
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
