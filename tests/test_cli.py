"""The CLI skeleton: version, help, exit codes, migrations, lazy imports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from monitor import __version__
from monitor.cli import app

runner = CliRunner()


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"batch-monitor {__version__}"


def test_help_lists_commands_and_every_command_has_help() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for name in ("db", "config", "price", "collect", "batches"):
        assert name in result.stdout
        sub = runner.invoke(app, [name, "--help"])
        assert sub.exit_code == 0, (name, sub.output)


def test_help_does_not_import_the_sdk() -> None:
    # `import anthropic` alone costs over a second: --help must not pay it.
    code = (
        "import sys; from monitor.cli import app; "
        "from typer.testing import CliRunner; CliRunner().invoke(app, ['--help']); "
        "print('anthropic' in sys.modules, 'sqlmodel' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_python_dash_m_works() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "monitor", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == f"batch-monitor {__version__}"


def test_db_upgrade_then_commands_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MONITOR_DATABASE_URL", f"sqlite:///{tmp_path}/m.db")
    before = runner.invoke(app, ["batches", "--json"])
    assert before.exit_code == 1
    assert "batch-monitor db upgrade" in before.stderr
    up = runner.invoke(app, ["db", "upgrade"])
    assert up.exit_code == 0, up.output
    assert "upgraded empty -> " in up.stdout
    again = runner.invoke(app, ["db", "upgrade"])
    assert "already at revision" in again.stdout
    listed = runner.invoke(app, ["batches", "--json"])
    assert listed.exit_code == 0 and listed.stdout.strip() == "[]"
    status = runner.invoke(app, ["db", "status"])
    assert status.exit_code == 0


def test_unreachable_database_exits_1_without_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MONITOR_DATABASE_URL", "postgresql://u:pw123@127.0.0.1:1/x")
    result = runner.invoke(app, ["db", "upgrade"])
    assert result.exit_code == 1
    assert "cannot reach the database" in result.stderr
    assert "Traceback" not in result.output and "pw123" not in result.output


def test_bad_database_url_exits_2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MONITOR_DATABASE_URL", "mysql://u@h/x")
    result = runner.invoke(app, ["db", "upgrade"])
    assert result.exit_code == 2
    assert "MONITOR_DATABASE_URL" in result.stderr


def test_collect_without_any_source_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for var in ("ANTHROPIC_API_KEY", "ANTHROPIC_ADMIN_KEY", "MONITOR_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MONITOR_DATABASE_URL", f"sqlite:///{tmp_path}/m.db")
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
    result = runner.invoke(app, ["collect", "--source", "batches"])
    assert result.exit_code == 2
    assert "ANTHROPIC_API_KEY" in result.stderr
    bad = runner.invoke(app, ["collect", "--source", "nope"])
    assert bad.exit_code == 2 and "--source" in bad.stderr


def test_batches_rejects_bad_dates_and_status(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MONITOR_DATABASE_URL", f"sqlite:///{tmp_path}/m.db")
    r1 = runner.invoke(app, ["batches", "--since", "last tuesday"])
    assert r1.exit_code == 2 and "--since" in r1.stderr
    r2 = runner.invoke(app, ["batches", "--status", "failed"])
    assert r2.exit_code == 2 and "--status" in r2.stderr


def test_debug_adds_the_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MONITOR_DATABASE_URL", "postgresql://u:pw123@127.0.0.1:1/x")
    result = runner.invoke(app, ["--debug", "db", "upgrade"])
    assert result.exit_code == 1
    assert "Traceback" in result.stderr and "cannot reach the database" in result.stderr
    assert "pw123" not in result.stderr
