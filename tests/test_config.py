"""Configuration: env + TOML, every problem at once, secrets never from the file nor shown."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from monitor.cli import app
from monitor.config import ConfigError, load_settings
from monitor.fmt import parse_duration


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "monitor.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "expected"),
    [("90s", timedelta(seconds=90)), ("15m", timedelta(minutes=15)), ("2h", timedelta(hours=2)),
     ("7d", timedelta(days=7)), ("1h30m", timedelta(minutes=90))],
)  # fmt: skip
def test_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("bad", ["", "15", "m", "15 minutes", "-5m", "1.5h", 15])
def test_bad_durations(bad: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


def test_defaults_with_empty_environment() -> None:
    s = load_settings({})
    assert s.database_url == "sqlite:///batch-monitor.db"
    assert (s.metrics_host, s.metrics_port) == ("127.0.0.1", 9464)
    assert s.workspaces == ()


def test_env_names_are_the_contract(tmp_path: Path) -> None:
    env = {
        "MONITOR_DATABASE_URL": "postgresql://u@h/db",
        "ANTHROPIC_API_KEY": "sk-ant-api03-abcdef",
        "ANTHROPIC_ADMIN_KEY": "sk-ant-admin01-xyz",
        "ANTHROPIC_BASE_URL": "http://127.0.0.1:9",
        "MONITOR_SLACK_BOT_TOKEN": "xoxb-secret",
        "MONITOR_SLACK_CHANNEL": "#cost",
        "MONITOR_SLACK_WEBHOOK_URL": "https://hooks.example/T/B/X",
        "MONITOR_SLACK_BASE_URL": "http://127.0.0.1:8/api/",
        "MONITOR_METRICS_HOST": "0.0.0.0",
        "MONITOR_METRICS_PORT": "9999",
    }
    s = load_settings(env)
    assert s.database_url == "postgresql://u@h/db"
    assert [w.id for w in s.workspaces] == ["default"]
    assert s.workspaces[0].api_key.get_secret_value() == "sk-ant-api03-abcdef"
    assert s.anthropic_admin_key is not None
    assert s.slack_channel == "#cost" and s.slack_base_url == "http://127.0.0.1:8/api/"
    assert (s.metrics_host, s.metrics_port) == ("0.0.0.0", 9999)
    shown = orjson.dumps(s.masked()).decode()
    for secret in ("sk-ant-api03-abcdef", "sk-ant-admin01-xyz", "xoxb-secret", "hooks.example"):
        assert secret not in shown


def test_workspaces_read_keys_from_named_env(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        '[[workspaces]]\nid = "wrkspc_a"\nname = "prod"\napi_key_env = "KEY_A"\n'
        '[[workspaces]]\nid = "wrkspc_b"\napi_key_env = "KEY_B"\n'
        '[[workloads]]\nname = "chat"\nmatch = "^chat"\nmax_latency = "1m"\nuser_facing = true\n',
    )
    s = load_settings({"KEY_A": "ka", "KEY_B": "kb", "ANTHROPIC_API_KEY": "ignored"}, path)
    assert [(w.id, w.name, w.api_key.get_secret_value()) for w in s.workspaces] == [
        ("wrkspc_a", "prod", "ka"),
        ("wrkspc_b", "wrkspc_b", "kb"),
    ]
    assert s.workloads[0].max_latency == timedelta(minutes=1)
    assert s.workloads[0].match is not None and s.workloads[0].match.search("chat-1")


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "bogus_key = 1\n"
        '[collect]\nbatches_interval = "soon"\n'
        '[[workspaces]]\nid = "nope"\napi_key_env = "MISSING"\n'
        '[[workloads]]\nname = "x"\nmatch = "("\n',
    )
    with pytest.raises(ConfigError) as info:
        load_settings({"MONITOR_METRICS_PORT": "notaport"}, path)
    problems = info.value.problems
    text = "\n".join(problems)
    assert len(problems) >= 5, text
    assert "bogus_key: unknown key" in text
    assert "collect.batches_interval" in text and "invalid duration 'soon'" in text
    assert "workspaces[1].id" in text
    assert "workloads[1].match" in text
    assert "MONITOR_METRICS_PORT" in text
    assert all(str(path) in p for p in problems if "MONITOR_METRICS_PORT" not in p)
    # the line number of the bad duration is named
    assert f"{path}:3: collect.batches_interval" in text


def test_secrets_in_the_file_are_refused(tmp_path: Path) -> None:
    path = _write(
        tmp_path, '[[workspaces]]\nid = "wrkspc_a"\napi_key_env = "K"\napi_key = "sk-ant-leak"\n'
    )
    with pytest.raises(ConfigError) as info:
        load_settings({"K": "k"}, path)
    assert "secrets are never read from the config file" in str(info.value)
    assert "sk-ant-leak" not in str(info.value)


def test_malformed_toml_names_file_and_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "[collect\nx = 1\n")
    with pytest.raises(ConfigError) as info:
        load_settings({}, path)
    assert str(path) in str(info.value) and "line 1" in str(info.value)


def test_config_check_cli_masks_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ANTHROPIC_ADMIN_KEY", "sk-ant-admin01-topsecret")
    monkeypatch.setenv("MONITOR_DATABASE_URL", "postgresql://bob:hunter2@db/x")
    result = CliRunner().invoke(app, ["config", "check", "--json"])
    assert result.exit_code == 0, result.output
    data = orjson.loads(result.stdout)
    assert data["anthropic_admin_key"].startswith("sk-ant-") and "topsecret" not in result.stdout
    assert "hunter2" not in result.stdout and data["database_url"] == "postgresql://bob:***@db/x"


def test_config_check_cli_bad_file_exits_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path, '[collect]\nusage_interval = "fortnight"\n')
    monkeypatch.setenv("MONITOR_CONFIG", str(path))
    result = CliRunner().invoke(app, ["config", "check"])
    assert result.exit_code == 2
    assert "usage_interval" in result.stderr and "Traceback" not in result.output


def test_example_config_loads_and_its_commented_entries_are_valid(tmp_path: Path) -> None:
    example = Path(__file__).parent.parent / "monitor.example.toml"
    assert load_settings({}, example).collect.backfill == timedelta(days=30)
    # Uncomment each example array entry ([[workloads]], [[prices]], [[rules]], [[workspaces]])
    # and check the result is accepted, so the documentation cannot rot.
    blocks, current = [], None
    for line in example.read_text().splitlines():
        if line.startswith("# [["):
            current = [line[2:]]
            blocks.append(current)
        elif current is not None and line.startswith("# ") and "=" in line:
            current.append(line[2:])
        else:
            current = None
    assert {b[0] for b in blocks} >= {"[[workspaces]]", "[[workloads]]", "[[prices]]", "[[rules]]"}
    path = _write(tmp_path, "\n".join("\n".join(b) for b in blocks) + "\n")
    s = load_settings({"ANTHROPIC_API_KEY_PROD": "sk-ant-x"}, path)
    assert (len(s.workspaces), len(s.workloads), len(s.prices), len(s.rules)) == (1, 1, 1, 1)
    from monitor.rules import load_rules

    assert any(r.threshold == 0.01 for r in load_rules(s))


def test_every_section_is_checked_even_when_another_is_broken(tmp_path: Path) -> None:
    path = tmp_path / "monitor.toml"
    path.write_text(
        "[collect]\nbatches_interval = 5\n\n"  # a type error in one section...
        '[[prices]]\nmodel = "x"\ninput = -1\noutput = 1\n\n'  # ...hides nothing of the others
        '[[rules]]\nname = "r"\nkind = "nope"\nthreshold = 1\n\n'
        '[[workspaces]]\nid = "bad"\napi_key_env = "K"\n\n'
        '[[workloads]]\nname = "a"\n\n[[workloads]]\nname = "b"\nmatch = "(x"\n'
    )
    with pytest.raises(ConfigError) as info:
        load_settings({"MONITOR_METRICS_PORT": "99999"}, config_path=path)
    text = "\n".join(info.value.problems)
    assert "collect.batches_interval" in text
    assert "[[prices]]" in text and "[[rules]] #1 (r): kind" in text
    assert "workspaces[1].id" in text
    assert f"{path}:23: workloads[2].match" in text  # the line of the second entry
    assert "MONITOR_METRICS_PORT" in text  # the environment's problem too


def test_what_cannot_work_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "monitor.toml"
    path.write_text(
        '[collect]\nbatches_interval = "0s"\nbackfill = "999999d"\n'
        '[alerting]\ndelivery_interval = "0s"\n[run]\nlease = "0s"\n'
    )
    with pytest.raises(ConfigError) as info:
        load_settings({}, config_path=path)
    text = "\n".join(info.value.problems)
    assert "collect.batches_interval: must be longer than 0s" in text
    assert "collect.backfill: invalid duration '999999d': longer than 100 years" in text
    assert "alerting.delivery_interval" in text and "run.lease" in text


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"\xef\xbb\xbf[collect]\n", "byte-order mark"), (b"\x00\xff\xfe binary", "not UTF-8")],
)
def test_a_binary_or_bom_file_is_a_clear_error(
    tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "monitor.toml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        load_settings({}, config_path=path)
    assert message in str(info.value) and str(path) in str(info.value)
