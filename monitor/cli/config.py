"""``batch-monitor config check``: validate the configuration and show it, secrets masked."""

from __future__ import annotations

from typing import Any

import typer

from monitor.cli import app, handle_errors, load_settings, print_json

config_app = typer.Typer(help="Configuration commands.", no_args_is_help=True)
app.add_typer(config_app, name="config")


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
