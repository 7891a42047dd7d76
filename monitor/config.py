"""Settings: addresses and secrets from the environment, everything else from ``monitor.toml``.

Environment (secrets are only ever read from here, never from the TOML file):
``MONITOR_DATABASE_URL``, ``ANTHROPIC_API_KEY``, ``ANTHROPIC_ADMIN_KEY``, ``ANTHROPIC_BASE_URL``,
``MONITOR_SLACK_BOT_TOKEN``, ``MONITOR_SLACK_CHANNEL``, ``MONITOR_SLACK_WEBHOOK_URL``,
``MONITOR_SLACK_BASE_URL``, ``MONITOR_METRICS_HOST``, ``MONITOR_METRICS_PORT``, ``MONITOR_CONFIG``.

The TOML file (``MONITOR_CONFIG``, else ``./monitor.toml`` when present) holds workspaces,
workloads, price overrides, collection settings, rules and routing. A bad configuration is
reported whole: every problem, each naming the file (or variable) and the key.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from monitor import fmt, tomlfile
from monitor.fmt import parse_duration
from monitor.logs import scrub
from monitor.pricing import validate_price_entries
from monitor.rulekinds import validate_rule_entries
from monitor.tomlfile import ConfigError as ConfigError  # raised and caught as config's error
from monitor.workloads import Workload, WorkloadEntry, duplicate_names

DEFAULT_DATABASE_URL = "sqlite:///batch-monitor.db"
DEFAULT_CONFIG_FILE = "monitor.toml"

# Keys that look like secrets: refused in the TOML file so tokens never end up in a repo.
_SECRET_KEYS = {
    "api_key",
    "admin_key",
    "token",
    "bot_token",
    "slack_bot_token",
    "password",
    "anthropic_api_key",
    "anthropic_admin_key",
    "webhook_url",
    "slack_webhook_url",
}


def _positive(value: timedelta) -> timedelta:
    if value <= timedelta(0):
        raise ValueError(
            "must be longer than 0s (an interval, a timeout or a lease of 0 cannot work)"
        )
    return value


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
# Intervals, timeouts, leases and retention: zero cannot work (a busy loop, an instant timeout).
Positive = Annotated[timedelta, BeforeValidator(parse_duration), AfterValidator(_positive)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WorkspaceEntry(_Strict):
    """One ``[[workspaces]]`` entry: a workspace and the env var that holds its API key."""

    id: str
    name: str = ""
    api_key_env: str
    # The organisation's default workspace: the reports name it by no id at all (null), so its
    # real-time spend and bill are recorded under this entry's id.
    default: bool = False

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, v: str) -> str:
        # Not the key itself: a key pasted here would be repeated in every error about it.
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,127}", v):
            raise ValueError(
                "must name an environment variable (letters, digits and _), which holds the key; "
                "never put the key itself in this file"
            )
        return v

    @field_validator("id")
    @classmethod
    def _workspace_id(cls, v: str) -> str:
        if not (v.startswith("wrkspc_") or v == "default"):
            raise ValueError(f"workspace id {v!r} must start with 'wrkspc_' (or be 'default')")
        return v


class CollectSection(_Strict):
    """``[collect]``: intervals, backfill, retry limits and call-log files."""

    batches_interval: Positive = timedelta(minutes=5)
    usage_interval: Positive = timedelta(minutes=15)
    logs_interval: Positive = timedelta(minutes=1)
    backfill: Duration = timedelta(days=30)
    trailing_window: Positive = timedelta(hours=3)
    # Buckets are revised for a few minutes after they close; call them final after this lag.
    final_after: Duration = timedelta(hours=1)
    request_timeout: Positive = timedelta(seconds=60)
    max_retries: int = Field(default=3, ge=0, le=10)
    # The SDK honours retry-after without a cap; never let one response stall the daemon longer.
    max_retry_after: Positive = timedelta(seconds=60)
    # Fast retries of a batch's results (one per poll); then hourly, growing to daily.
    results_max_attempts: int = Field(default=5, ge=1, le=100)
    # Failed result reads in a row, in one workspace's poll, before the rest wait a poll.
    results_breaker: int = Field(default=3, ge=1, le=100)
    # The longest one poll of a source spends (over all its workspaces, each of which is still
    # listed and makes one step); what is left goes on at the next poll.
    poll_budget: Positive = timedelta(minutes=2)
    call_logs: list[str] = Field(default_factory=list)
    list_page_size: int = Field(default=100, ge=1, le=1000)


class AlertingSection(_Strict):
    """``[alerting]``: whether the default rules are active, and the evaluation interval."""

    default_rules: bool = True
    interval: Positive = timedelta(minutes=1)
    # How long a delivery worker holds a claimed event before another may take it over.
    claim_timeout: Positive = timedelta(minutes=10)
    # The longest wait between two delivery attempts of one event (it is never dropped).
    max_backoff: Positive = timedelta(hours=1)
    # How often the daemon drains the outbox (new events go out within this).
    delivery_interval: Positive = timedelta(seconds=10)


class SlackSection(_Strict):
    """``[slack]``: routing (a channel per severity) and delivery settings (no tokens here)."""

    channel: str | None = None
    channel_warning: str | None = None
    channel_critical: str | None = None
    channel_info: str | None = None
    timeout: Positive = timedelta(seconds=10)
    max_attempts: int = Field(default=10, ge=1, le=100)


class AdvisorSection(_Strict):
    """``[advisor]``: thresholds for recommendations."""

    # USD, exact: a threshold of money is never a binary float.
    min_monthly_savings: Decimal = Field(default=Decimal(10), ge=0)
    window: Positive = timedelta(days=30)
    # How often `run` refreshes the recommendations (a month of usage per run: not free).
    interval: Positive = timedelta(minutes=15)


def _forever_or_duration(value: Any) -> timedelta | None:
    if isinstance(value, str) and value.strip().lower() == "forever":
        return None
    return parse_duration(value)


class RetentionSection(_Strict):
    """``[retention]``: how long rows are kept (hourly data is rolled up into days first)."""

    # Hourly usage and call buckets, collect and job runs, delivered alert events.
    raw: Positive = timedelta(days=90)
    batches: Positive = timedelta(days=400)
    # Daily rollups: "forever" (the default) or a duration.
    rollups: Annotated[timedelta | None, BeforeValidator(_forever_or_duration)] = None


class RunSection(_Strict):
    """``[run]``: the daemon's leadership lease, job deadline and shutdown grace."""

    lease: Positive = timedelta(seconds=15)
    shutdown_timeout: Positive = timedelta(seconds=30)
    # A job still running after this is cut off (its transaction rolled back) and counted.
    job_timeout: Positive = timedelta(minutes=10)
    # How often the rollups are brought up to date and the advisor's advice stored.
    rollup_interval: Positive = timedelta(minutes=1)


_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


class ReportSection(_Strict):
    """``[report]``: when the weekly report is built, where it goes, what it flags."""

    timezone: str = "UTC"
    weekday: str = "monday"
    time: str = "09:00"
    dir: str = "reports"
    monthly_budget: Decimal | None = Field(default=None, gt=0)
    share_drop_points: float = Field(default=5.0, gt=0, le=100)
    spend_increase_pct: float = Field(default=20.0, gt=0)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a name too long for a path
            raise ValueError(
                f"unknown time zone {v!r} (use an IANA name like Europe/Paris)"
            ) from None
        return v

    @field_validator("weekday")
    @classmethod
    def _weekday(cls, v: str) -> str:
        if v.lower() not in _WEEKDAYS:
            raise ValueError(f"weekday must be one of {', '.join(_WEEKDAYS)}, got {v!r}")
        return v.lower()

    @field_validator("time")
    @classmethod
    def _time(cls, v: str) -> str:
        if not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", v):
            raise ValueError(f'time must be HH:MM on a 24-hour clock, like "09:00", got {v!r}')
        return v


class MetricsSection(_Strict):
    """``[metrics]``: the exporter's label cardinality bound."""

    # Models, workspaces and workloads beyond the top N (by all-time spend) fold into "other".
    top_n: int = Field(default=20, ge=1, le=1000)


class FileConfig(_Strict):
    """The whole TOML file."""

    database_url: str | None = None
    grafana_url: str | None = None
    metrics_host: str | None = None
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    log_level: str | None = None
    workspaces: list[WorkspaceEntry] = Field(default_factory=list)
    workloads: list[WorkloadEntry] = Field(default_factory=list)
    prices: list[dict[str, Any]] = Field(default_factory=list)
    rules: list[dict[str, Any]] = Field(default_factory=list)
    collect: CollectSection = Field(default_factory=CollectSection)
    alerting: AlertingSection = Field(default_factory=AlertingSection)
    slack: SlackSection = Field(default_factory=SlackSection)
    advisor: AdvisorSection = Field(default_factory=AdvisorSection)
    retention: RetentionSection = Field(default_factory=RetentionSection)
    run: RunSection = Field(default_factory=RunSection)
    report: ReportSection = Field(default_factory=ReportSection)
    metrics: MetricsSection = Field(default_factory=MetricsSection)


class EnvSettings(BaseSettings):
    """The environment variables the product reads (names are part of its contract)."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=False)

    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("MONITOR_DATABASE_URL")
    )
    config: str | None = Field(default=None, validation_alias=AliasChoices("MONITOR_CONFIG"))
    anthropic_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("ANTHROPIC_API_KEY")
    )
    anthropic_admin_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("ANTHROPIC_ADMIN_KEY")
    )
    anthropic_base_url: str | None = Field(
        default=None, validation_alias=AliasChoices("ANTHROPIC_BASE_URL")
    )
    slack_bot_token: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("MONITOR_SLACK_BOT_TOKEN")
    )
    slack_channel: str | None = Field(
        default=None, validation_alias=AliasChoices("MONITOR_SLACK_CHANNEL")
    )
    slack_webhook_url: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("MONITOR_SLACK_WEBHOOK_URL")
    )
    slack_base_url: str | None = Field(
        default=None, validation_alias=AliasChoices("MONITOR_SLACK_BASE_URL")
    )
    metrics_host: str | None = Field(
        default=None, validation_alias=AliasChoices("MONITOR_METRICS_HOST")
    )
    metrics_port: int | None = Field(
        default=None, ge=1, le=65535, validation_alias=AliasChoices("MONITOR_METRICS_PORT")
    )
    log_level: str | None = Field(default=None, validation_alias=AliasChoices("MONITOR_LOG_LEVEL"))


_ENV_NAMES = {
    "database_url": "MONITOR_DATABASE_URL",
    "config": "MONITOR_CONFIG",
    "anthropic_base_url": "ANTHROPIC_BASE_URL",
    "metrics_host": "MONITOR_METRICS_HOST",
    "metrics_port": "MONITOR_METRICS_PORT",
    "slack_channel": "MONITOR_SLACK_CHANNEL",
    "slack_base_url": "MONITOR_SLACK_BASE_URL",
    "log_level": "MONITOR_LOG_LEVEL",
}


@dataclass(frozen=True)
class Workspace:
    """A workspace whose Message Batches are collected, with the key that can read them."""

    id: str
    name: str
    api_key: SecretStr
    default: bool = False


@dataclass(frozen=True)
class Settings:
    """The effective configuration, validated."""

    database_url: str = DEFAULT_DATABASE_URL
    config_path: Path | None = None
    anthropic_base_url: str | None = None
    anthropic_admin_key: SecretStr | None = None
    workspaces: tuple[Workspace, ...] = ()
    workloads: tuple[Workload, ...] = ()
    prices: tuple[Mapping[str, Any], ...] = ()
    rules: tuple[Mapping[str, Any], ...] = ()
    slack_bot_token: SecretStr | None = None
    slack_channel: str | None = None
    slack_webhook_url: SecretStr | None = None
    slack_base_url: str | None = None
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9464
    grafana_url: str | None = None
    log_level: str = "INFO"
    collect: CollectSection = field(default_factory=CollectSection)
    alerting: AlertingSection = field(default_factory=AlertingSection)
    slack: SlackSection = field(default_factory=SlackSection)
    advisor: AdvisorSection = field(default_factory=AdvisorSection)
    retention: RetentionSection = field(default_factory=RetentionSection)
    run: RunSection = field(default_factory=RunSection)
    report: ReportSection = field(default_factory=ReportSection)
    metrics: MetricsSection = field(default_factory=MetricsSection)

    @property
    def default_workspace(self) -> str:
        """Return the id the reports' unnamed (default) workspace is recorded under."""
        for w in self.workspaces:
            if w.default:
                return w.id
        return "default"

    def resolve_workspace(self, given: str) -> str | None:
        """Return the id of a configured workspace named ``given`` (its id or its name)."""
        for w in self.workspaces:
            if given in (w.id, w.name):
                return w.id
        return None

    def secrets(self) -> list[str]:
        """Return every secret value, so logs and errors can be scrubbed of them."""
        found = [w.api_key.get_secret_value() for w in self.workspaces]
        for s in (self.anthropic_admin_key, self.slack_bot_token, self.slack_webhook_url):
            if s is not None:
                found.append(s.get_secret_value())
        return [s for s in found if s]

    def masked(self) -> dict[str, Any]:
        """Return the effective configuration as plain data with secrets masked."""
        return {
            "config_file": str(self.config_path) if self.config_path else None,
            "database_url": _redact_db(self.database_url),
            "anthropic_base_url": _redact(self.anthropic_base_url),
            "anthropic_admin_key": mask(self.anthropic_admin_key),
            "workspaces": [
                {"id": w.id, "name": w.name, "api_key": mask(w.api_key)} for w in self.workspaces
            ],
            "workloads": [
                {
                    "name": w.name,
                    "match": w.match.pattern if w.match else None,
                    "max_latency": fmt.duration(w.max_latency) if w.max_latency else None,
                    "user_facing": w.user_facing,
                }
                for w in self.workloads
            ],
            "prices": [dict(p) for p in self.prices],
            "rules": [dict(r) for r in self.rules],
            "slack": {
                "bot_token": mask(self.slack_bot_token),
                "channel": self.slack_channel,
                "webhook_url": mask(self.slack_webhook_url),
                "base_url": _redact(self.slack_base_url),
                **_plain(self.slack.model_dump()),
            },
            "metrics": {
                "host": self.metrics_host,
                "port": self.metrics_port,
                **_plain(self.metrics.model_dump()),
            },
            "grafana_url": _redact(self.grafana_url),
            "log_level": self.log_level,
            "collect": _plain(self.collect.model_dump()),
            "alerting": _plain(self.alerting.model_dump()),
            "advisor": _plain(self.advisor.model_dump()),
            "retention": _plain(self.retention.model_dump()),
            "run": _plain(self.run.model_dump()),
            "report": _plain(self.report.model_dump()),
        }


def mask(secret: SecretStr | None) -> str | None:
    """Show that a secret is set without showing it (only a short prefix and the length)."""
    if secret is None:
        return None
    value = secret.get_secret_value()
    prefix = value[:7] if value.startswith("sk-ant-") else value[:3]
    return f"{prefix}…({len(value)} chars)"


def _redact(url: str | None) -> str | None:
    """Mask the credentials of a URL (``user:password@``) and anything shaped like a key."""
    return None if url is None else scrub(url)


def _redact_db(url: str) -> str:
    from monitor.db import redact_url

    return redact_url(url)


def _plain(data: dict[str, Any]) -> dict[str, Any]:
    def plain(v: Any) -> Any:
        if isinstance(v, timedelta):
            return fmt.duration(v)
        return str(v) if isinstance(v, Decimal) else v

    return {k: plain(v) for k, v in data.items()}


def _secret_keys_in(data: Any, trail: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Return the paths (keys and list indexes) of secret-named keys, outermost first."""
    found: list[tuple[Any, ...]] = []
    if isinstance(data, dict):
        for k, v in data.items():
            here = (*trail, k)
            if str(k).lower() in _SECRET_KEYS:
                found.append(here)
            found.extend(_secret_keys_in(v, here))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            found.extend(_secret_keys_in(v, (*trail, i)))
    return found


def load_settings(
    environ: Mapping[str, str] | None = None, config_path: str | Path | None = None
) -> Settings:
    """Read the environment and the TOML file into Settings.

    Raise ConfigError listing every problem found, not only the first.
    """
    env_map = dict(os.environ if environ is None else environ)
    problems: list[str] = []

    env, env_problems = _env_from(env_map)
    problems.extend(env_problems)

    path: Path | None
    if config_path is not None:
        path = Path(config_path)
    elif env.config:
        path = Path(env.config)
    else:
        default = Path(DEFAULT_CONFIG_FILE)
        path = default if default.exists() else None

    file_cfg = FileConfig()
    raw_workspaces: Any = None
    if path is not None:
        if not path.exists():
            problems.append(
                f"{path}: config file not found "
                f"(named by {'MONITOR_CONFIG' if env.config else 'the caller'})"
            )
        else:
            raw, text = tomlfile.read(path, "config file", problems)
            raw_workspaces = raw.get("workspaces")
            for secret in _secret_keys_in(raw):
                problems.append(
                    f"{path}: {tomlfile.dotted(secret)}: secrets are never read from the config "
                    "file; put them in the environment (see monitor.example.toml)"
                )
            # Innermost first: dropping an outer key first would leave an inner one unreachable.
            for secret in reversed(_secret_keys_in(raw)):
                _drop_key(raw, secret)
            # Section by section: a type error in one section hides no problem of another.
            good: dict[str, Any] = {}
            for key, value in raw.items():
                try:
                    FileConfig.model_validate({key: value})
                except ValidationError as exc:
                    problems.extend(tomlfile.pydantic_problems(path, text, exc))
                else:
                    good[key] = value
            file_cfg = FileConfig.model_validate(good)
            # Price and rule entries are checked by the modules that know prices and rule
            # kinds (neither reads the store nor this module), every problem at once.
            if file_cfg.prices:
                problems.extend(validate_price_entries(file_cfg.prices, f"{path} [[prices]]"))
            if file_cfg.rules:
                problems.extend(validate_rule_entries(file_cfg.rules, f"{path} [[rules]]"))

    workspaces: list[Workspace] = []
    for i, w in enumerate(file_cfg.workspaces, start=1):
        env_key = env_map.get(w.api_key_env)
        if not env_key:
            problems.append(
                f"{path}: workspaces[{i}] ({w.id}): environment variable {w.api_key_env} "
                "named by api_key_env is not set"
            )
            continue
        workspaces.append(
            Workspace(id=w.id, name=w.name or w.id, api_key=SecretStr(env_key), default=w.default)
        )
    if sum(1 for w in file_cfg.workspaces if w.default) > 1:
        problems.append(f"{path}: workspaces: only one workspace can be the default")
    ids = [w.id for w in file_cfg.workspaces]
    for dup in sorted({i for i in ids if ids.count(i) > 1}):
        problems.append(f"{path}: workspaces: id {dup} is listed more than once")
    if not file_cfg.workspaces and env.anthropic_api_key is not None:
        workspaces.append(
            Workspace(id="default", name="default", api_key=env.anthropic_api_key, default=True)
        )

    for dup in duplicate_names(file_cfg.workloads):
        problems.append(f"{path}: workloads: name {dup!r} is listed more than once")

    database_url = env.database_url or file_cfg.database_url or DEFAULT_DATABASE_URL
    if not re.match(r"^(sqlite|postgres|postgresql)(\+\w+)?://", database_url):
        source = "MONITOR_DATABASE_URL" if env.database_url else f"{path}: database_url"
        problems.append(
            f"{source}: unsupported database URL {_redact_db(database_url)!r}; "
            "use sqlite:///PATH or postgresql://USER@HOST:PORT/DB"
        )

    log_level = (env.log_level or file_cfg.log_level or "INFO").upper()
    if log_level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        source = "environment variable MONITOR_LOG_LEVEL" if env.log_level else f"{path}: log_level"
        problems.append(f"{source}: {log_level!r} is not DEBUG, INFO, WARNING or ERROR")

    if problems:
        # A problem quotes what it refuses; a secret of this configuration pasted in a wrong
        # place (a regex, a name) would be quoted with it.
        known = _known_secrets(env_map, raw_workspaces)
        raise ConfigError([scrub(p, known) for p in problems])

    return Settings(
        database_url=database_url,
        config_path=path,
        anthropic_base_url=env.anthropic_base_url,
        anthropic_admin_key=env.anthropic_admin_key,
        workspaces=tuple(workspaces),
        workloads=tuple(w.workload() for w in file_cfg.workloads),
        prices=tuple(file_cfg.prices),
        rules=tuple(file_cfg.rules),
        slack_bot_token=env.slack_bot_token,
        slack_channel=env.slack_channel or file_cfg.slack.channel,
        slack_webhook_url=env.slack_webhook_url,
        slack_base_url=env.slack_base_url,
        metrics_host=env.metrics_host or file_cfg.metrics_host or "127.0.0.1",
        metrics_port=env.metrics_port or file_cfg.metrics_port or 9464,
        grafana_url=file_cfg.grafana_url,
        log_level=log_level,
        collect=file_cfg.collect,
        alerting=file_cfg.alerting,
        slack=file_cfg.slack,
        advisor=file_cfg.advisor,
        retention=file_cfg.retention,
        run=file_cfg.run,
        report=file_cfg.report,
        metrics=file_cfg.metrics,
    )


def _known_secrets(env_map: Mapping[str, str], workspaces: Any) -> list[str]:
    """Return the secrets a configuration names: its key and token variables' values."""
    names = [
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_ADMIN_KEY",
        "MONITOR_SLACK_BOT_TOKEN",
        "MONITOR_SLACK_WEBHOOK_URL",
    ]
    if isinstance(workspaces, list):
        names += [str(w.get("api_key_env")) for w in workspaces if isinstance(w, dict)]
    return [env_map[n] for n in names if env_map.get(n)]


def _env_from(env_map: Mapping[str, str]) -> tuple[EnvSettings, list[str]]:
    """Validate the environment variable by variable, so one bad value hides no other."""
    good: dict[str, str] = {}
    problems: list[str] = []
    for name in EnvSettings.model_fields:
        for alias in _aliases(name):
            if alias not in env_map:
                continue
            try:
                EnvSettings.model_validate({alias: env_map[alias]})
            except ValidationError as exc:
                for err in exc.errors():
                    problems.append(f"environment variable {alias}: {err['msg']}")
            else:
                good[alias] = env_map[alias]
    return EnvSettings.model_validate(good), problems


def _aliases(name: str) -> list[str]:
    alias = EnvSettings.model_fields[name].validation_alias
    if isinstance(alias, AliasChoices):
        return [str(a) for a in alias.choices]
    return [name]


def _drop_key(raw: Any, path: tuple[Any, ...]) -> None:
    # Remove a refused secret key so the schema check does not report it a second time. The
    # path holds the keys themselves: a quoted key may contain dots or brackets.
    node = raw
    for part in path[:-1]:
        node = node[part]
    if isinstance(node, dict):
        node.pop(path[-1], None)
