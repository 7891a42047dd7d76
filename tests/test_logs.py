"""Logging: both formats carry the event's fields, and no secret survives any part of a record."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from monitor import db
from monitor.cli import app
from monitor.logs import env_secrets, scrub, setup_logging

KEY = "sk-ant-api03-PLANTEDsecretVALUE0123456789"
ADMIN = "sk-ant-admin01-PLANTEDadminVALUE0123456789"
TOKEN = "xoxb-1111-2222-PLANTEDslackTOKEN"
WEBHOOK = "https://hooks.slack.com/services/T0PLANT/B0PLANT/PLANTEDwebhookPATH"


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """Yield the stream the root logger writes to; restore the root logger afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield io.StringIO()
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_traceback_is_scrubbed_in_both_formats(captured: io.StringIO, fmt: str) -> None:
    setup_logging("INFO", [KEY], fmt=fmt, stream=captured)
    try:
        raise RuntimeError(f"upstream said: bad key {KEY} via {WEBHOOK}")
    except RuntimeError:
        logging.getLogger("monitor.test").exception("collect failed")
    out = captured.getvalue()
    assert "RuntimeError" in out and "Traceback" in out  # the traceback is there...
    assert KEY not in out and "PLANTEDwebhookPATH" not in out  # ...without the secrets
    assert "***" in out


def test_json_lines_carry_the_contract_keys_and_event_fields(captured: io.StringIO) -> None:
    setup_logging("INFO", fmt="json", stream=captured)
    logging.getLogger("monitor.scheduler").info(
        "job finished", extra={"job": "collect_batches", "source": "batches", "items": 3}
    )
    logging.getLogger("monitor.other").warning("plain")
    first, second = (json.loads(line) for line in captured.getvalue().splitlines())
    assert {"ts", "level", "logger", "job", "source", "msg"} <= set(first)
    assert first["job"] == "collect_batches" and first["source"] == "batches"
    assert first["items"] == 3 and first["msg"] == "job finished" and first["level"] == "INFO"
    assert first["ts"].endswith("Z")
    assert second["job"] is None and second["source"] is None


def test_text_lines_are_for_people_and_utc(captured: io.StringIO) -> None:
    setup_logging("INFO", stream=captured)
    logging.getLogger("monitor.scheduler").info(
        "job evaluate ok: 3 item(s)", extra={"job": "evaluate", "outcome": "ok"}
    )
    line = captured.getvalue().strip()
    stamp, rest = line.split(" ", 1)
    assert stamp.endswith("Z") and stamp[10] == "T"
    assert rest == "INFO monitor.scheduler: job evaluate ok: 3 item(s)"


def test_scrub_masks_unlisted_credentials_by_their_shape() -> None:
    text = (
        f"key {KEY} admin {ADMIN} token {TOKEN} hook {WEBHOOK} "
        "db postgresql://bm:hunter22@db.internal:5432/monitor grafana https://u:pw@grafana.x/d"
    )
    clean = scrub(text)
    for secret in (KEY, ADMIN, TOKEN, "PLANTEDwebhookPATH", "hunter22", ":pw@"):
        assert secret not in clean, secret
    assert "db.internal:5432/monitor" in clean  # the rest of the message survives


def test_env_secrets_picks_secret_named_variables_only() -> None:
    env = {"ANTHROPIC_API_KEY": KEY, "MY_TEAM_KEY": "abcdefgh123", "HOME": "/root/secrets"}
    assert sorted(env_secrets(env)) == sorted([KEY, "abcdefgh123"])


def test_a_bad_database_url_is_never_echoed() -> None:
    for url in ("postgresql//bm:hunter22@h/x", "postgresql://bm:hunter22@h:notaport/x"):
        with pytest.raises(db.DatabaseError) as info:
            db.make_engine(url)
        assert "hunter22" not in str(info.value)
        assert info.value.exit_code == 2


def test_debug_traceback_of_a_command_is_scrubbed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_ADMIN_KEY", ADMIN)
    monkeypatch.setenv("MONITOR_DATABASE_URL", "postgresql://bm:hunter22@127.0.0.1:1/x")
    result = CliRunner().invoke(app, ["--debug", "summary"])
    assert result.exit_code == 1
    assert "hunter22" not in result.stderr and ADMIN not in result.stderr
