"""Hostile input to the one-shot commands: clear one-line errors, nothing created or destroyed."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlmodel import Session

from monitor import db
from monitor.models import Batch, BatchUsage, UsageBucket
from monitor.simulator import parse_fault
from monitor.summary import build_summary
from tests.conftest import utc


def _cli(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "monitor", *args],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )


@pytest.fixture
def migrated(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'monitor.db'}"
    engine = db.make_engine(url)
    db.upgrade(engine)
    engine.dispose()
    return url


def test_a_read_command_on_a_mistyped_path_creates_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'no' / 'such' / 'monitor.db'}"
    for command in (["summary"], ["batches"], ["alerts"], ["status"], ["db", "status"]):
        result = _cli(*command, cwd=tmp_path, MONITOR_DATABASE_URL=url)
        assert result.returncode == 1, (command, result.stderr)
        assert "no database at" in result.stderr and "db upgrade" in result.stderr
    assert not (tmp_path / "no").exists()
    upgrade = _cli("db", "upgrade", cwd=tmp_path, MONITOR_DATABASE_URL=url)
    assert upgrade.returncode == 1 and "does not exist" in upgrade.stderr
    assert not (tmp_path / "no").exists()


def test_read_commands_change_nothing_in_the_file(migrated: str, tmp_path: Path) -> None:
    path = migrated.removeprefix("sqlite:///")
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode=DELETE")
    for command in (["summary", "--json"], ["batches", "--json"], ["db", "status"]):
        result = _cli(*command, cwd=tmp_path, MONITOR_DATABASE_URL=migrated)
        assert result.returncode == 0, (command, result.stderr)
    with sqlite3.connect(path) as conn:
        # A writer would have switched it to WAL: read commands open the file read-only.
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    engine = db.make_engine(migrated, readonly=True)
    with pytest.raises(Exception, match="readonly"), engine.begin() as conn:
        conn.execute(text("DELETE FROM batch"))
    engine.dispose()


def test_a_database_newer_than_the_code_is_named_as_such(migrated: str, tmp_path: Path) -> None:
    engine = db.make_engine(migrated)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    for command in (["summary"], ["db", "upgrade"], ["collect"]):
        result = _cli(*command, cwd=tmp_path, MONITOR_DATABASE_URL=migrated)
        assert result.returncode == 1, command
        assert (
            "newer than this version" in result.stderr and "upgrade batch-monitor" in result.stderr
        )


def test_downgrade_to_base_needs_yes_and_says_what_is_lost(migrated: str, tmp_path: Path) -> None:
    engine = db.make_engine(migrated)
    with Session(engine) as session:
        session.add(
            Batch(
                id="msgbatch_1",
                processing_status="ended",
                created_at=utc(2026, 11, 1),
                first_seen_at=utc(2026, 11, 1),
                updated_at=utc(2026, 11, 1),
            )
        )
        session.commit()
    refused = _cli("db", "downgrade", "base", cwd=tmp_path, MONITOR_DATABASE_URL=migrated)
    assert refused.returncode == 2 and "batch (1)" in refused.stderr and "--yes" in refused.stderr
    assert db.current_revision(engine) == db.head_revision()  # nothing dropped
    done = _cli("db", "downgrade", "base", "--yes", cwd=tmp_path, MONITOR_DATABASE_URL=migrated)
    assert done.returncode == 0, done.stderr
    assert db.current_revision(engine) is None
    engine.dispose()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["batches", "--since", "2026-11-10", "--until", "2026-11-01"], "must be before --until"),
        (["summary", "--since", "2026-11-10", "--until", "2026-11-01"], "must be before --until"),
        (["summary", "--window", "999999999d"], "longer than 100 years"),
        (["summary", "--window", "9" * 30 + "d"], "longer than 100 years"),
        (["silence", "add", "--match", "rule=x", "--for", "9999999999d"], "longer than 100 years"),
        (["summary", "--since", "1066-10-14"], "outside the years"),
        (["summary", "--bogus"], "No such option: --bogus"),
        (["run", "--log-format", "yaml"], "--log-format"),
    ],
)
def test_usage_errors_are_one_line_with_exit_2(
    migrated: str, tmp_path: Path, args: list[str], message: str
) -> None:
    result = _cli(*args, cwd=tmp_path, MONITOR_DATABASE_URL=migrated)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_debug_works_after_the_subcommand(migrated: str, tmp_path: Path) -> None:
    result = _cli(
        "summary", "--since", "nope", "--debug", cwd=tmp_path, MONITOR_DATABASE_URL=migrated
    )
    assert result.returncode == 2 and "Traceback" in result.stderr


def test_the_readme_fault_example_parses() -> None:
    assert parse_fault("cut_stream:after_lines=100").line == 100


def test_the_printed_total_is_the_sum_of_the_printed_parts(session: Session) -> None:
    start = utc(2026, 11, 1, 10)
    session.add(
        UsageBucket(
            bucket_start=start,
            bucket_end=utc(2026, 11, 1, 11),
            width="1h",
            source="analytics",
            product="messages_api",
            service_tier="standard",
            model="claude-sonnet-4-6",
            requests=1,
            cost_usd=Decimal("0.005"),
            fetched_at=start,
        )
    )
    session.add(
        Batch(
            id="msgbatch_x",
            processing_status="ended",
            created_at=start,
            ended_at=start,
            requests=1,
            succeeded=1,
            cost_usd=Decimal("0.005"),
            standard_cost_usd=Decimal("0.01"),
            results_state="ingested",
            first_seen_at=start,
            updated_at=start,
        )
    )
    session.flush()
    session.add(
        BatchUsage(
            batch_id="msgbatch_x",
            model="claude-sonnet-4-6",
            requests=1,
            cost_usd=Decimal("0.005"),
            standard_cost_usd=Decimal("0.01"),
        )
    )
    session.commit()
    data = build_summary(session, utc(2026, 11, 1), utc(2026, 11, 2), utc(2026, 11, 2)).to_json()
    assert (data["realtime_cost_usd"], data["batch_cost_usd"]) == ("0.01", "0.01")
    assert data["total_cost_usd"] == "0.02"  # not "0.01", the rounded exact total
    [row] = data["by_model"]
    assert row["total_cost_usd"] == "0.02"


def test_an_upstream_that_echoes_the_key_does_not_put_it_on_screen(
    migrated: str, tmp_path: Path
) -> None:
    from tests.httpkit import json_server

    def echo(request: Any) -> tuple[int, Any]:
        message = f"bad request with headers {dict(request.headers)}"
        return 400, {
            "type": "error",
            "error": {"type": "invalid_request_error", "message": message},
        }

    key = "sk-ant-admin01-ECHOEDsecretKEY0123456789abcdef"
    with json_server(echo) as url:
        result = _cli(
            "collect",
            "--source",
            "usage",
            cwd=tmp_path,
            MONITOR_DATABASE_URL=migrated,
            ANTHROPIC_ADMIN_KEY=key,
            ANTHROPIC_BASE_URL=url,
        )
    assert result.returncode == 1
    assert "400" in result.stdout + result.stderr  # the failure is reported...
    assert key not in result.stdout and key not in result.stderr  # ...without the key
    engine = db.make_engine(migrated)
    with engine.connect() as conn:
        stored = " ".join(str(r[0]) for r in conn.execute(text("SELECT error FROM collect_run")))
    engine.dispose()
    assert "400" in stored and key not in stored


def test_workload_names_cannot_drive_the_terminal(tmp_path: Path) -> None:
    log = tmp_path / "calls.jsonl"
    evil = "chat\x1b[2J\x1b]0;pwned\x07[bold red]x[/]"
    lines = [
        json_line(
            {
                "timestamp": f"2026-11-0{1 + i % 5}T{i % 24:02d}:00:00Z",
                "workload": evil,
                "model": "claude-sonnet-4-6",
                "input_tokens": 2000,
                "output_tokens": 500,
                "latency_ms": 900,
            }
        )
        for i in range(60)
    ]
    log.write_text("\n".join(lines) + "\n")
    result = _cli("audit", str(log), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stdout and "\x07" not in result.stdout
    assert "\\x1b[2J" in result.stdout  # shown, escaped
    assert "[bold red]" in result.stdout  # rich markup printed as text, not applied


def test_one_far_future_timestamp_does_not_stop_audit(tmp_path: Path) -> None:
    log = tmp_path / "calls.jsonl"
    good = {"workload": "nightly-digest", "model": "claude-sonnet-4-6", "input_tokens": 20000,
            "output_tokens": 2000, "latency_ms": 900}  # fmt: skip
    lines = [
        json_line({"timestamp": f"2026-11-{1 + i % 20:02d}T{i % 24:02d}:00:00Z", **good})
        for i in range(200)
    ]
    lines.insert(100, json_line({"timestamp": "9999-12-31T23:59:59Z", **good}))
    log.write_text("\n".join(lines) + "\n")
    result = _cli("audit", str(log), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"{log}:101: timestamp:" in result.stdout + result.stderr
    assert "nightly-digest" in result.stdout  # the advice from the other 200 lines


def json_line(obj: dict[str, object]) -> str:
    import json

    return json.dumps(obj)


def test_workspace_takes_the_configured_name_or_a_known_id_and_refuses_the_rest(
    migrated: str, tmp_path: Path
) -> None:
    from datetime import UTC, datetime, timedelta
    from decimal import Decimal

    from sqlmodel import Session

    from monitor.models import Batch

    (tmp_path / "monitor.toml").write_text(
        '[[workspaces]]\nid = "wrkspc_prod"\nname = "Production"\napi_key_env = "PROD_KEY"\n'
    )
    ended = datetime.now(UTC) - timedelta(hours=2)
    engine = db.make_engine(migrated)
    with Session(engine) as session:
        for bid, ws, cost in (("b1", "wrkspc_prod", "4.00"), ("b2", "wrkspc_other", "1.50")):
            session.add(
                Batch(
                    id=bid,
                    workspace_id=ws,
                    processing_status="ended",
                    created_at=ended - timedelta(hours=1),
                    ended_at=ended,
                    requests=10,
                    succeeded=10,
                    cost_usd=Decimal(cost),
                    standard_cost_usd=Decimal(cost) * 2,
                    results_state="ingested",
                    first_seen_at=ended,
                    updated_at=ended,
                )
            )
        session.commit()
    engine.dispose()
    env = {"MONITOR_DATABASE_URL": migrated, "MONITOR_CONFIG": str(tmp_path / "monitor.toml"),
           "PROD_KEY": "sk-ant-api03-prodkey0123456789"}  # fmt: skip

    def batch_cost(*args: str) -> str:
        result = _cli("summary", "--window", "24h", "--json", *args, cwd=tmp_path, **env)
        assert result.returncode == 0, result.stderr
        data = json.loads(result.stdout)
        return str(data["batch_cost_usd"])

    assert batch_cost("--workspace", "Production") == batch_cost("--workspace", "wrkspc_prod")
    assert batch_cost("--workspace", "Production") == "4.00"
    assert batch_cost("--workspace", "wrkspc_other") == "1.50"  # in the store, not configured
    wrong = _cli("summary", "--workspace", "Prod", cwd=tmp_path, **env)
    assert wrong.returncode == 2
    assert wrong.stderr.count("\n") == 1
    assert "'Prod' is not a configured workspace" in wrong.stderr
    assert "Production (wrkspc_prod)" in wrong.stderr
