"""The ``batch-monitor`` command line: every command is a thin call into the modules.

This package holds the app, the error handling and the option parsers every command shares;
each command group lives in its own module (``db``, ``config``, ``price``, ``simulate``,
``collect``, ``summary``, ``advise``, ``alerts``) and only parses options, calls the product's
functions and renders what they return.

Exit codes: 0 ok, 1 a failure (unreachable database, a source that failed), 2 bad usage or
configuration. Errors print one clear line; ``--debug`` adds the traceback. Heavy imports (the
Anthropic SDK alone costs over a second) happen inside commands so ``--help`` stays instant.
"""

from __future__ import annotations

import functools
import importlib
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import typer

from monitor import __version__

if TYPE_CHECKING:
    from rich.console import Console
    from sqlalchemy import Engine

    from monitor.config import Settings

app = typer.Typer(
    name="batch-monitor",
    help="Watch Claude Message Batches versus real-time spend: collect, alert, advise.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Help texts name TOML sections like [advisor] and [[workloads]]: not rich markup.
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

_state: dict[str, Any] = {"debug": False}
# Dates a command accepts: Claude usage is from this century; anything else is a typo.
MIN_DATE = datetime(2000, 1, 1, tzinfo=UTC)
MAX_DATE = datetime(2999, 12, 31, tzinfo=UTC)

F = TypeVar("F", bound=Callable[..., Any])


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit code 2."""


def fail(message: str, code: int = 1) -> NoReturn:
    """Print ``message`` to stderr (secrets scrubbed) and exit with ``code``."""
    from monitor.logs import env_secrets, scrub

    # An error can quote an upstream answer or a URL: scrubbed like every other output.
    secrets = [*_state.get("secrets", []), *env_secrets()]
    typer.echo(f"batch-monitor: {scrub(message, secrets)}", err=True)
    raise typer.Exit(code)


def handle_errors(func: F) -> F:
    """Turn the project's known exceptions into one-line messages and exit codes."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from monitor.config import ConfigError
        from monitor.db import DatabaseError

        try:
            return func(*args, **kwargs)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except ConfigError as exc:
            _maybe_trace()
            fail(str(exc), 2)
        except UsageError as exc:
            _maybe_trace()
            fail(str(exc), 2)
        except DatabaseError as exc:
            _maybe_trace()
            fail(str(exc), exc.exit_code)
        except KeyboardInterrupt:
            fail("interrupted", 130)
        except Exception as exc:  # anything unexpected: one line unless --debug
            _maybe_trace()
            fail(f"{type(exc).__name__}: {exc} (run with --debug for the traceback)", 1)

    return wrapper  # type: ignore[return-value]


def _maybe_trace() -> None:
    if _state["debug"]:
        import traceback

        from monitor.logs import env_secrets, scrub

        # A traceback can quote URLs, headers and request bodies: scrub it like a log line,
        # of the configured secrets too (a key's variable need not be named *KEY*).
        secrets = [*_state.get("secrets", []), *env_secrets()]
        sys.stderr.write(scrub(traceback.format_exc(), secrets))


def make_console() -> Console:
    """Return a rich Console: the terminal's width, or a wide fixed one when piped."""
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 200)


def safe(text: str) -> str:
    """Make upstream text (workload, model, batch ids) safe to put in a rich table cell."""
    from rich.markup import escape

    from monitor import fmt

    return escape(fmt.terminal(text))


def print_json(data: Any) -> None:
    """Print ``data`` as indented JSON (Decimals must already be strings)."""
    import orjson

    sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"batch-monitor {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors."),
) -> None:
    """Watch Claude Message Batches versus real-time spend: collect, alert, advise."""
    _state["debug"] = debug


def load_settings() -> Settings:
    """Load and validate the configuration (raises ConfigError with every problem)."""
    from monitor.config import load_settings as _load

    settings = _load()
    _state["secrets"] = settings.secrets()
    return settings


def say(text: str, *, err: bool = False) -> None:
    """Print a line that may carry upstream text: secrets scrubbed, control characters escaped.

    Upstream servers echo requests back in errors (headers with keys, webhook paths), and
    workload or model names come from whoever submits requests: neither reaches the terminal
    raw.
    """
    from monitor import fmt
    from monitor.logs import env_secrets, scrub

    secrets = [*_state.get("secrets", []), *env_secrets()]
    typer.echo(fmt.terminal(scrub(text, secrets)), err=err)


def open_db(settings: Settings, *, migrated: bool = True, readonly: bool = False) -> Engine:
    """Return an engine for the configured database, checked reachable (and migrated).

    ``readonly`` for commands that only read: they never create or change anything.
    """
    from monitor import db

    engine = db.make_engine(settings.database_url, readonly=readonly)
    if migrated:
        db.require_migrated(engine)
    else:
        db.check_reachable(engine)
    return engine


# --- option parsers every command shares ----------------------------------------------

# An error quotes the value it refuses; a 5,000-character value must not make a screenful.
_MAX_SHOWN = 60
_MAX_ERROR = 300


def shown(value: str) -> str:
    """Quote a value from the command line in an error: its repr, cut to 60 characters."""
    text = repr(value)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 4] + "...'"


def shown_error(exc: BaseException) -> str:
    """Return an error's text on one line, its middle cut out when too long to read."""
    text = " ".join(str(exc).splitlines())
    return text if len(text) <= _MAX_ERROR else text[:200] + " … " + text[-80:]


def parse_when(value: str, option: str) -> datetime:
    """Parse ``YYYY-MM-DD`` or an ISO 8601 timestamp as UTC (naive means UTC)."""
    from datetime import UTC

    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        parsed = parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        raise UsageError(
            f"{option}: {shown(value)} is not a date (YYYY-MM-DD) or an ISO 8601 timestamp"
        ) from None
    if not MIN_DATE <= parsed <= MAX_DATE:
        raise UsageError(f"{option}: {shown(value)} is outside the years 2000 to 2999")
    return parsed


def parse_span(value: str, option: str) -> timedelta:
    """Parse a duration option (``"7d"``, ``"24h"``) that must be longer than zero."""
    from monitor.fmt import parse_duration

    try:
        span = parse_duration(value)
    except ValueError as exc:
        raise UsageError(f"{option}: {shown_error(exc)}") from None
    if span <= timedelta(0):
        raise UsageError(f"{option} must be longer than 0s")
    return span


def parse_window(
    since: str | None,
    until: str | None,
    window: str | None,
    now: datetime,
    *,
    default: timedelta = timedelta(days=7),
) -> tuple[datetime, datetime]:
    """Resolve ``--since/--until/--window`` to a half-open UTC window ``[since, until)``."""
    if window is not None and (since is not None or until is not None):
        raise UsageError("--window cannot be combined with --since/--until")
    span = parse_span(window, "--window") if window is not None else default
    hi = parse_when(until, "--until") if until else now
    lo = parse_when(since, "--since") if since else hi - span
    check_range(lo, hi)
    return lo, hi


def check_range(since: datetime | None, until: datetime | None) -> None:
    """Refuse ``--since`` at or after ``--until`` (every command alike)."""
    from monitor import fmt

    if since is not None and until is not None and since >= until:
        raise UsageError(f"--since ({fmt.iso(since)}) must be before --until ({fmt.iso(until)})")


def main(argv: list[str] | None = None) -> None:
    """Run the CLI: usage errors are one line (exit 2), ``--debug`` works anywhere."""
    # Typer vendors click as typer._click; its exception classes are what a usage error is.
    from typer._click.exceptions import NoArgsIsHelpError
    from typer._click.exceptions import UsageError as ClickUsageError

    args = list(sys.argv[1:] if argv is None else argv)
    if "--debug" in args[1:]:
        # ``--debug`` is the root's flag; accept it after the subcommand as well.
        args = ["--debug", *[a for a in args if a != "--debug"]]
    try:
        code = app(args, prog_name="batch-monitor", standalone_mode=False)
    except NoArgsIsHelpError as exc:  # a group without its subcommand: show its help
        if exc.ctx is not None:
            typer.echo(exc.ctx.get_help(), err=True)
        sys.exit(2)
    except ClickUsageError as exc:
        where = exc.ctx.command_path if exc.ctx is not None else "batch-monitor"
        typer.echo(f"{where}: {exc.format_message()}", err=True)
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        typer.echo("batch-monitor: aborted", err=True)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


# Register the command groups, in the order ``--help`` lists them (each module adds its
# commands to ``app``). They import only typer at module level, so ``--help`` stays instant.
COMMAND_MODULES = (
    "db",
    "config",
    "price",
    "collect",
    "summary",
    "advise",
    "alerts",
    "report",
    "run",
    "simulate",
)
for _name in COMMAND_MODULES:
    importlib.import_module(f"{__name__}.{_name}")
