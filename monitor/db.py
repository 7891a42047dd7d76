"""Database access: engines from URLs, sessions, dialect-aware upserts, migrations, locks.

SQLite (WAL mode) is the default; PostgreSQL is chosen by URL. Both run the same code.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlmodel import Session, SQLModel, create_engine

from monitor import models  # noqa: F401  (registers the tables on SQLModel.metadata)
from monitor.logs import scrub
from monitor.money import DecimalSum

# alembic/ at the top of a checkout; installed (wheel, container) as monitor/migrations.
_INSTALLED = Path(__file__).parent / "migrations"
MIGRATIONS_DIR = _INSTALLED if _INSTALLED.is_dir() else Path(__file__).parent.parent / "alembic"


class DatabaseError(Exception):
    """The database cannot be used: bad URL, unreachable, or not migrated."""

    def __init__(self, message: str, *, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def normalize_url(url: str) -> str:
    """Map ``postgresql://`` and ``postgres://`` to the psycopg 3 driver."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def redact_url(url: str) -> str:
    """Return ``url`` with any password hidden (for messages and logs)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable database URL>"


def _sqlite_on_connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
    # WAL lets the exporter read while the collector writes; busy_timeout rides out short locks.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    _sqlite_common(dbapi_conn, cur)


def _sqlite_on_connect_readonly(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
    # A read-only connection cannot switch the journal mode (the writer already did).
    _sqlite_common(dbapi_conn, dbapi_conn.cursor())


def _sqlite_common(dbapi_conn: sqlite3.Connection, cur: sqlite3.Cursor) -> None:
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()
    dbapi_conn.create_aggregate("decimal_sum", 1, DecimalSum)  # type: ignore[arg-type]


def make_engine(url: str, *, readonly: bool = False) -> Engine:
    """Create an engine for ``url`` (SQLite or PostgreSQL), with the project's settings.

    ``readonly`` is for commands that only read: a SQLite file is opened read-only (it must
    exist: nothing is created), and PostgreSQL sessions are read-only transactions. A SQLite
    file is never created in a directory that does not exist (a mistyped path is an error,
    not a new empty database somewhere).
    """
    url = normalize_url(url)
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        # The URL may hold a password: never echo it, nor the parser's message (which quotes it).
        raise DatabaseError(
            "invalid database URL (MONITOR_DATABASE_URL or database_url): use sqlite:///PATH or "
            "postgresql://USER@HOST:PORT/DB",
            exit_code=2,
        ) from None
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(url, parsed.database, readonly=readonly)
    if parsed.get_backend_name() != "postgresql":
        raise DatabaseError(
            f"unsupported database {parsed.get_backend_name()!r} in MONITOR_DATABASE_URL; "
            "use sqlite:///PATH or postgresql://USER@HOST/DB",
            exit_code=2,
        )
    connect_args: dict[str, Any] = {"connect_timeout": 10}
    if readonly:
        connect_args["options"] = "-c default_transaction_read_only=on"
    try:
        return create_engine(url, pool_pre_ping=True, connect_args=connect_args)
    except Exception as exc:  # a missing driver, a bad option
        reason = scrub(str(exc))
        raise DatabaseError(f"cannot use {redact_url(url)}: {reason}", exit_code=2) from None


def _sqlite_engine(url: str, database: str | None, *, readonly: bool) -> Engine:
    args = {"timeout": 30, "check_same_thread": False}
    if not database or database == ":memory:":
        engine = create_engine(url, connect_args=args)
        event.listen(engine, "connect", _sqlite_on_connect)
        return engine
    path = Path(database).expanduser().resolve()
    if readonly:
        if not path.is_file():
            raise DatabaseError(
                f"no database at {path}: run batch-monitor db upgrade to create it "
                "(or check MONITOR_DATABASE_URL)"
            )
        engine = create_engine(f"sqlite:///file:{path}?mode=ro&uri=true", connect_args=args)
        event.listen(engine, "connect", _sqlite_on_connect_readonly)
        return engine
    if not path.parent.is_dir():
        raise DatabaseError(
            f"the directory {path.parent} does not exist: create it, or check "
            "MONITOR_DATABASE_URL (batch-monitor does not create directories)"
        )
    engine = create_engine(url, connect_args=args)
    event.listen(engine, "connect", _sqlite_on_connect)
    return engine


def check_reachable(engine: Engine) -> None:
    """Connect once; raise DatabaseError (exit code 1) naming the URL if that fails."""
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except OperationalError as exc:
        reason = scrub(str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc))
        raise DatabaseError(
            f"cannot reach the database {engine.url.render_as_string(hide_password=True)}: {reason}"
        ) from exc


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """Yield a session that commits on success and rolls back on any exception."""
    session = Session(engine, expire_on_commit=False)
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def upsert(
    session: Session,
    model: type[SQLModel],
    rows: Sequence[Mapping[str, Any]],
    key: Sequence[str],
    update: Sequence[str] | None = None,
) -> int:
    """Insert ``rows`` into ``model``'s table, updating ``update`` columns on a key conflict.

    ``key`` names the natural key (primary key or unique constraint). ``update`` defaults to
    every column present in the rows except the key. Returns the number of rows sent.
    """
    if not rows:
        return 0
    table = SQLModel.metadata.tables[model.__tablename__]  # type: ignore[index]
    cols = list(rows[0].keys())
    update_cols = [c for c in (update if update is not None else cols) if c not in key]
    dialect = session.get_bind().dialect.name
    # Bind through the column types so Money/UTCDateTime conversions apply (Core insert does).
    stmt: Any = postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table)
    if update_cols:
        stmt = stmt.on_conflict_do_update(
            index_elements=list(key), set_={c: stmt.excluded[c] for c in update_cols}
        )
    else:
        stmt = stmt.on_conflict_do_nothing(index_elements=list(key))
    # Chunk to stay under SQLite's bound-parameter limit and keep statements reasonable.
    chunk = max(1, 30000 // max(1, len(cols)))
    for i in range(0, len(rows), chunk):
        session.execute(stmt, list(rows[i : i + chunk]))
    return len(rows)


def bump(session: Session, metric: str, key: str, n: int = 1) -> None:
    """Add ``n`` to the counter ``(metric, key)`` in ``tally`` (created at 0); the caller commits.

    Counters that /metrics exposes are kept here as rows finish, so pruning those rows never
    makes a counter go down, and a scrape reads a handful of rows instead of counting runs.
    """
    table = SQLModel.metadata.tables["tally"]
    dialect = session.get_bind().dialect.name
    stmt: Any = postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table)
    stmt = stmt.values(metric=metric, key=key, value=n)
    stmt = stmt.on_conflict_do_update(
        index_elements=["metric", "key"], set_={"value": table.c.value + stmt.excluded.value}
    )
    session.execute(stmt)


def rowcount(result: Any) -> int:
    """Return how many rows an UPDATE or DELETE touched (0 when the driver cannot tell)."""
    return int(getattr(result, "rowcount", 0) or 0)


def natural_key(model: type[SQLModel], constraint: str) -> tuple[str, ...]:
    """Return the column names of ``model``'s unique constraint ``constraint``."""
    table = SQLModel.metadata.tables[model.__tablename__]  # type: ignore[index]
    for c in table.constraints:
        if c.name == constraint:
            return tuple(col.name for col in c.columns)  # type: ignore[attr-defined]
    raise KeyError(f"{table.name} has no constraint {constraint!r}")


def advisory_lock_key(name: str) -> int:
    """Map a lock name to a stable signed 64-bit key for pg_advisory locks."""
    digest = hashlib.sha256(name.encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def try_advisory_lock(session: Session, name: str) -> bool:
    """Take a transaction-scoped advisory lock on PostgreSQL (always True on SQLite).

    SQLite serialises writers itself; on PostgreSQL this keeps two daemons from running the
    same step at once. The lock is released when the session's transaction ends.
    """
    if session.get_bind().dialect.name != "postgresql":
        return True
    got = session.execute(
        text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": advisory_lock_key(name)}
    ).scalar()
    return bool(got)


# --- migrations -------------------------------------------------------------------------


def alembic_config(url: str) -> Any:
    """Return an Alembic Config that points at the packaged migrations and ``url``."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    # Alembic's config is ConfigParser-based: escape '%' in passwords.
    cfg.set_main_option("sqlalchemy.url", normalize_url(url).replace("%", "%%"))
    cfg.attributes["configure_logger"] = False
    return cfg


def head_revision() -> str | None:
    """Return the newest migration revision shipped with this version."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def known_revisions() -> set[str]:
    """Return every migration revision this version ships."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    return {r.revision for r in script.walk_revisions()}


def table_rows(engine: Engine) -> dict[str, int]:
    """Return how many rows each of the project's tables holds (those that exist)."""
    from sqlalchemy import func, inspect, select

    present = set(inspect(engine).get_table_names())
    out: dict[str, int] = {}
    with engine.connect() as conn:
        for table in SQLModel.metadata.sorted_tables:
            if table.name in present:
                out[table.name] = int(
                    conn.execute(select(func.count()).select_from(table)).scalar_one()
                )
    return out


def current_revision(engine: Engine) -> str | None:
    """Return the revision the database is at (None when never migrated)."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply migrations up to ``revision`` on ``engine``'s database."""
    from alembic import command

    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def downgrade(engine: Engine, revision: str) -> None:
    """Revert migrations down to ``revision`` (``base`` empties the schema)."""
    from alembic import command

    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)


def require_migrated(engine: Engine) -> None:
    """Raise DatabaseError unless the database is at the shipped head revision."""
    check_reachable(engine)
    current = current_revision(engine)
    head = head_revision()
    if current is not None and current not in known_revisions():
        raise DatabaseError(
            f"the database {engine.url.render_as_string(hide_password=True)} is at revision "
            f"{current}, newer than this version of batch-monitor knows (it needs {head}): "
            "upgrade batch-monitor, or point MONITOR_DATABASE_URL at another database"
        )
    if current != head:
        state = "has no schema yet" if current is None else f"is at revision {current}"
        raise DatabaseError(
            f"the database {engine.url.render_as_string(hide_password=True)} {state}, but this "
            f"version needs revision {head}. Run: batch-monitor db upgrade"
        )
