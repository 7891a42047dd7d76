"""``batch-monitor db``: apply, revert and show the schema migrations."""

from __future__ import annotations

import typer

from monitor.cli import UsageError, app, handle_errors, load_settings, open_db

db_app = typer.Typer(help="Database schema commands.", no_args_is_help=True)
app.add_typer(db_app, name="db")


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
    if before is not None and before not in db.known_revisions():
        raise db.DatabaseError(
            f"{db.redact_url(settings.database_url)} is at revision {before}, newer than this "
            f"version of batch-monitor knows (its newest is {db.head_revision()}): upgrade "
            "batch-monitor instead"
        )
    if revision != "head" and revision not in db.known_revisions():
        raise UsageError(f"unknown revision {revision!r} (known: {', '.join(_revisions())})")
    db.upgrade(engine, revision)
    after = db.current_revision(engine)
    where = db.redact_url(settings.database_url)
    if before == after:
        typer.echo(f"{where}: already at revision {after}")
    else:
        typer.echo(f"{where}: upgraded {before or 'empty'} -> {after}")


def _revisions() -> list[str]:
    from monitor import db

    return sorted(db.known_revisions())


@db_app.command("downgrade")
@handle_errors
def db_downgrade(
    revision: str = typer.Argument(..., help="Target revision, or 'base' to drop everything."),
    yes: bool = typer.Option(
        False, "--yes", help="Really revert (tables the migrations created are dropped)."
    ),
) -> None:
    """Revert the database migrations down to REVISION (needs --yes: data is lost)."""
    from monitor import db

    if revision != "base" and revision not in db.known_revisions():
        raise UsageError(f"unknown revision {revision!r} (known: base, {', '.join(_revisions())})")
    settings = load_settings()
    engine = open_db(settings, migrated=False)
    if not yes:
        rows = db.table_rows(engine)
        held = ", ".join(f"{t} ({n:,})" for t, n in rows.items() if n) or "no rows"
        raise UsageError(
            f"reverting {db.redact_url(settings.database_url)} to {revision} drops tables and "
            f"their data; it now holds {held}. Run again with --yes to do it"
        )
    db.downgrade(engine, revision)
    typer.echo(f"{db.redact_url(settings.database_url)}: at revision {db.current_revision(engine)}")


@db_app.command("status")
@handle_errors
def db_status() -> None:
    """Show the database's migration revision and the one this version needs."""
    from monitor import db

    settings = load_settings()
    engine = open_db(settings, migrated=False, readonly=True)
    current, head = db.current_revision(engine), db.head_revision()
    typer.echo(f"database: {db.redact_url(settings.database_url)}")
    typer.echo(f"revision: {current or 'none (run: batch-monitor db upgrade)'}")
    typer.echo(f"needed:   {head}")
    if current != head:
        raise typer.Exit(1)


@db_app.command("prune")
@handle_errors
def db_prune(
    dry_run: bool = typer.Option(False, "--dry-run", help="Only count what would be deleted."),
) -> None:
    """Roll old hourly rows up into days and delete what [retention] says is old."""
    from monitor import clock, db, fmt, retention

    settings = load_settings()
    engine = open_db(settings)
    with db.session_scope(engine) as session:
        result = retention.prune(session, clock.utcnow(), settings.retention, dry_run=dry_run)
    verb = "would delete" if dry_run else "deleted"
    keep = settings.retention
    typer.echo(
        f"raw rows before {fmt.iso(result.raw_before)} (raw = {fmt.duration(keep.raw)}), "
        f"batches ended before {fmt.iso(result.batches_before)} "
        f"(batches = {fmt.duration(keep.batches)}), rollups "
        + (f"before {fmt.iso(result.rollups_before)}" if result.rollups_before else "kept forever")
    )
    for table, n in result.deleted.items():
        if n:
            typer.echo(f"{table}: {verb} {n} row(s)")
    if not any(result.deleted.values()):
        typer.echo(f"nothing to prune ({verb} 0 rows)")
