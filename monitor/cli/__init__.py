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
from datetime import datetime, timedelta
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

F = TypeVar("F", bound=Callable[..., Any])


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit code 2."""


def fail(message: str, code: int = 1) -> NoReturn:
    """Print ``message`` to stderr and exit with ``code``."""
    typer.echo(f"batch-monitor: {message}", err=True)
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

        # A traceback can quote URLs, headers and request bodies: scrub it like a log line.
        sys.stderr.write(scrub(traceback.format_exc(), env_secrets()))


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

    return _load()


def open_db(settings: Settings, *, migrated: bool = True) -> Engine:
    """Return an engine for the configured database, checked reachable (and migrated)."""
    from monitor import db

    engine = db.make_engine(settings.database_url)
    if migrated:
        db.require_migrated(engine)
    else:
        db.check_reachable(engine)
    return engine


# --- option parsers every command shares ----------------------------------------------


def parse_when(value: str, option: str) -> datetime:
    """Parse ``YYYY-MM-DD`` or an ISO 8601 timestamp as UTC (naive means UTC)."""
    from datetime import UTC

    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"{option}: {value!r} is not a date (YYYY-MM-DD) or an ISO 8601 timestamp"
        ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def parse_span(value: str, option: str) -> timedelta:
    """Parse a duration option (``"7d"``, ``"24h"``) that must be longer than zero."""
    from monitor.config import parse_duration

    try:
        span = parse_duration(value)
    except ValueError as exc:
        raise UsageError(f"{option}: {exc}") from None
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
    from monitor import fmt

    if window is not None and (since is not None or until is not None):
        raise UsageError("--window cannot be combined with --since/--until")
    span = parse_span(window, "--window") if window is not None else default
    hi = parse_when(until, "--until") if until else now
    lo = parse_when(since, "--since") if since else hi - span
    if lo >= hi:
        raise UsageError(f"--since ({fmt.iso(lo)}) must be before --until ({fmt.iso(hi)})")
    return lo, hi


def main() -> None:
    """Run the CLI."""
    app()


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
    "simulate",
)
for _name in COMMAND_MODULES:
    importlib.import_module(f"{__name__}.{_name}")
