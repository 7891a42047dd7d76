"""The ``batch-monitor`` command line: every command is a thin call into the modules.

Exit codes: 0 ok, 1 a failure (unreachable database, a source that failed), 2 bad usage or
configuration. Errors print one clear line; ``--debug`` adds the traceback. Heavy imports (the
Anthropic SDK alone costs over a second) happen inside commands so ``--help`` stays instant.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import typer

from monitor import __version__

app = typer.Typer(
    name="batch-monitor",
    help="Watch Claude Message Batches versus real-time spend: collect, alert, advise.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
db_app = typer.Typer(help="Database schema commands.", no_args_is_help=True)
config_app = typer.Typer(help="Configuration commands.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(config_app, name="config")

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

        traceback.print_exc()


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


def load_settings() -> Any:
    """Load and validate the configuration (raises ConfigError with every problem)."""
    from monitor.config import load_settings as _load

    return _load()


def open_db(settings: Any, *, migrated: bool = True) -> Any:
    """Return an engine for the configured database, checked reachable (and migrated)."""
    from monitor import db

    engine = db.make_engine(settings.database_url)
    if migrated:
        db.require_migrated(engine)
    else:
        db.check_reachable(engine)
    return engine


# --- db ----------------------------------------------------------------------------------


@db_app.command("upgrade")
@handle_errors
def db_upgrade(
    revision: str = typer.Argument("head", help="Target revision (default: the newest)."),
) -> None:
    """Apply the database migrations (creates the schema on a new database)."""
    from monitor import db

    settings = load_settings()
    engine = open_db(settings, migrated=False)
    before = db.current_revision(engine)
    db.upgrade(engine, revision)
    after = db.current_revision(engine)
    where = db.redact_url(settings.database_url)
    if before == after:
        typer.echo(f"{where}: already at revision {after}")
    else:
        typer.echo(f"{where}: upgraded {before or 'empty'} -> {after}")


@db_app.command("downgrade")
@handle_errors
def db_downgrade(
    revision: str = typer.Argument(..., help="Target revision, or 'base' to drop everything."),
) -> None:
    """Revert the database migrations down to REVISION."""
    from monitor import db

    settings = load_settings()
    engine = open_db(settings, migrated=False)
    db.downgrade(engine, revision)
    typer.echo(f"{db.redact_url(settings.database_url)}: at revision {db.current_revision(engine)}")


@db_app.command("status")
@handle_errors
def db_status() -> None:
    """Show the database's migration revision and the one this version needs."""
    from monitor import db

    settings = load_settings()
    engine = open_db(settings, migrated=False)
    current, head = db.current_revision(engine), db.head_revision()
    typer.echo(f"database: {db.redact_url(settings.database_url)}")
    typer.echo(f"revision: {current or 'none (run: batch-monitor db upgrade)'}")
    typer.echo(f"needed:   {head}")
    if current != head:
        raise typer.Exit(1)


# --- config ------------------------------------------------------------------------------


@config_app.command("check")
@handle_errors
def config_check(
    as_json: bool = typer.Option(False, "--json", help="Print the effective config as JSON."),
) -> None:
    """Validate the configuration and print it with secrets masked (exit 2 when invalid)."""
    settings = load_settings()
    data = settings.masked()
    if as_json:
        print_json(data)
        return
    typer.echo(f"configuration OK ({data['config_file'] or 'no config file; defaults and env'})")
    for key, value in data.items():
        if key == "config_file":
            continue
        typer.echo(f"{key} = {_render(value)}")


def _render(value: Any) -> str:
    import orjson

    return orjson.dumps(value).decode() if not isinstance(value, str) else value


# --- commands added by feature modules go below, one section each --------------------------

# [pricing commands]

# [simulator commands]

# [batches commands]

# [usage commands]

# [advisor commands]

# [alerting commands]


def main() -> None:
    """Run the CLI."""
    app()


if __name__ == "__main__":
    main()
