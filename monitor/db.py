"""Database access: engines from URLs, sessions, dialect-aware upserts, migrations, locks.

SQLite (WAL mode) is the default; PostgreSQL is chosen by URL. Both run the same code.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import threading
import weakref
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlmodel import Session, SQLModel, create_engine

from monitor import (
    clock,
    models,  # noqa: F401  (registers the tables on SQLModel.metadata)
)
from monitor.logs import scrub
from monitor.money import DecimalSum

log = logging.getLogger(__name__)

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


# How long a SQLite writer waits for another's lock before "database is locked" (seconds);
# ``sqlite:///PATH?timeout=SECONDS`` changes it.
SQLITE_BUSY_TIMEOUT = 30.0


def _sqlite_on_connect(busy_timeout: float, *, readonly: bool = False) -> Any:
    def on_connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        if not readonly:
            # WAL lets the exporter read while the collector writes. A read-only connection
            # cannot switch the journal mode (the writer already did).
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
        # busy_timeout rides out short locks; a longer one fails the statement (a fault the
        # daemon reports and waits out, see DatabaseHealth).
        cur.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()
        dbapi_conn.create_aggregate("decimal_sum", 1, DecimalSum)  # type: ignore[arg-type]

    return on_connect


def _sqlite_busy_timeout(query: Mapping[str, Any]) -> float:
    raw = query.get("timeout")
    if raw is None:
        return SQLITE_BUSY_TIMEOUT
    try:
        value = float(raw if isinstance(raw, str) else raw[0])
    except (TypeError, ValueError, IndexError):
        value = -1.0
    if not 0 < value <= 3600:
        raise DatabaseError(
            f"invalid timeout={raw!r} in the SQLite database URL: give the seconds a writer "
            "waits for a lock (more than 0, at most 3600)",
            exit_code=2,
        )
    return value


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
        busy = _sqlite_busy_timeout(parsed.query)
        return watch(_sqlite_engine(url, parsed.database, readonly=readonly, busy_timeout=busy))
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
        # pool_pre_ping: after a PostgreSQL restart the pooled connections are dead; each is
        # tested on checkout and replaced, so the first job after the restart does not fail.
        return watch(create_engine(url, pool_pre_ping=True, connect_args=connect_args))
    except Exception as exc:  # a missing driver, a bad option
        reason = scrub(str(exc))
        raise DatabaseError(f"cannot use {redact_url(url)}: {reason}", exit_code=2) from None


def _sqlite_engine(
    url: str, database: str | None, *, readonly: bool, busy_timeout: float
) -> Engine:
    args = {"timeout": busy_timeout, "check_same_thread": False}
    if not database or database == ":memory:":
        engine = create_engine(url, connect_args=args)
        event.listen(engine, "connect", _sqlite_on_connect(busy_timeout))
        return engine
    path = Path(database).expanduser().resolve()
    if readonly:
        if not path.is_file():
            raise DatabaseError(
                f"no database at {path}: run batch-monitor db upgrade to create it "
                "(or check MONITOR_DATABASE_URL)"
            )
        engine = create_engine(f"sqlite:///file:{path}?mode=ro&uri=true", connect_args=args)
        event.listen(engine, "connect", _sqlite_on_connect(busy_timeout, readonly=True))
        return engine
    if not path.parent.is_dir():
        raise DatabaseError(
            f"the directory {path.parent} does not exist: create it, or check "
            "MONITOR_DATABASE_URL (batch-monitor does not create directories)"
        )
    engine = create_engine(url, connect_args=args)
    event.listen(engine, "connect", _sqlite_on_connect(busy_timeout))
    return engine


# --- faults -----------------------------------------------------------------------------

FAULT_KINDS = ("unreachable", "locked", "disk_full", "io_error", "other")
# How a kind reads in a sentence ("database locked: ...", "/readyz: disk full for 12s").
FAULT_TEXT = {
    "unreachable": "unreachable",
    "locked": "locked",
    "disk_full": "disk full",
    "io_error": "I/O error",
    "other": "failing",
}


def fault_kind(exc: BaseException) -> str | None:
    """Return which kind of database fault ``exc`` is (``FAULT_KINDS``), or None.

    A fault is the database being unusable for a while: unreachable, locked for longer than
    the busy timeout, out of space, failing I/O. A bad statement, a constraint or a statement
    our own watchdog interrupted are not faults (waiting would not help, or nothing is wrong).
    """
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).lower()
    if isinstance(orig, sqlite3.Error):
        if not isinstance(orig, sqlite3.OperationalError) or "interrupted" in text:
            return None
        if "locked" in text or "busy" in text:
            return "locked"
        if "full" in text:
            return "disk_full"
        if "i/o error" in text:
            return "io_error"
        if "unable to open" in text:
            return "unreachable"
        return "other"
    if type(orig).__module__.split(".")[0] == "psycopg":
        state = getattr(orig, "sqlstate", None) or ""
        if state == "57014":  # query_canceled: the job watchdog at work
            return None
        if state == "53100":
            return "disk_full"
        if state in ("55P03", "40P01"):
            return "locked"
        if state.startswith("58"):
            return "io_error"
        # No SQLSTATE: the client lost the server (refused, reset, closed); 08: connection
        # exceptions; 57P0x: the server shutting down, crashed, or starting up.
        if not state or state.startswith(("08", "57P")):
            return "unreachable" if type(orig).__name__ != "ProgrammingError" else None
        return "other" if type(orig).__name__ == "OperationalError" else None
    if getattr(exc, "connection_invalidated", False):
        return "unreachable"
    return None


@dataclass(frozen=True)
class HealthState:
    """A copy of what ``DatabaseHealth`` knows, for /readyz and /metrics."""

    faults: dict[str, int]  # kind -> faults seen since the process started
    failing: str | None  # the kind of the fault going on, if any
    detail: str | None  # its first line (no secret)
    seconds: float  # how long it has been going on


class DatabaseHealth:
    """What this process saw of its database: the faults by kind, and whether one goes on.

    Fed by the engine's events (``watch``): a fault in any statement or connection attempt
    starts an episode, logged once; the next committed write ends it, logged once with how
    long it lasted. A successful read does not end it: while another process holds the SQLite
    write lock, or the disk is full, reads still work and writes do not. /readyz and /metrics
    read this because they must say the database is failing when they cannot ask it.

    Episodes are logged only when ``announce`` is set (by the daemon): a one-shot command
    reports its failure in its own one line.
    """

    def __init__(self) -> None:
        self.announce = False
        self._lock = threading.Lock()
        self._faults = dict.fromkeys(FAULT_KINDS, 0)
        self._failing: str | None = None
        self._detail: str | None = None
        self._since = 0.0
        self._during = 0

    def fault(self, kind: str, detail: str) -> None:
        """Record a fault of ``kind``; the first of an episode is logged."""
        with self._lock:
            self._faults[kind] = self._faults.get(kind, 0) + 1
            first = self._failing is None
            if first:
                self._since, self._during = clock.monotonic(), 0
            if first or kind != "other":  # a telling kind is not replaced by "other"
                self._failing, self._detail = kind, detail
            self._during += 1
        if first and self.announce:
            log.error(
                "database %s: %s; waiting for it (jobs that need it fail and run again at "
                "their next interval)",
                FAULT_TEXT.get(kind, kind),
                detail,
                extra={"database": kind},
            )

    def recovered(self) -> None:
        """End the episode going on (a write was committed); log how long it lasted."""
        with self._lock:
            if self._failing is None:
                return
            kind, during = self._failing, self._during
            seconds = clock.monotonic() - self._since
            self._failing = self._detail = None
        if not self.announce:
            return
        log.warning(
            "database usable again after %.0fs (%s, %d fault(s))",
            seconds,
            FAULT_TEXT.get(kind, kind),
            during,
            extra={"database": "ok"},
        )

    def state(self) -> HealthState:
        """Return a consistent copy of the counters and the episode going on."""
        with self._lock:
            seconds = clock.monotonic() - self._since if self._failing else 0.0
            return HealthState(dict(self._faults), self._failing, self._detail, seconds)


_HEALTH: weakref.WeakKeyDictionary[Engine, DatabaseHealth] = weakref.WeakKeyDictionary()
_WROTE = "batch_monitor_wrote"  # keys in a DBAPI connection's info dict
_COMMITTING = "batch_monitor_committing"


def health(engine: Engine) -> DatabaseHealth:
    """Return the health record of ``engine`` (empty for an engine nobody watches)."""
    found = _HEALTH.get(engine)
    if found is None:
        found = _HEALTH[engine] = DatabaseHealth()
    return found


def fault_detail(exc: BaseException) -> str:
    """Return the first line of a database error, without secrets (for logs and /readyz)."""
    orig = getattr(exc, "orig", None) or exc
    lines = str(orig).strip().splitlines()
    return scrub(lines[0] if lines else type(orig).__name__)[:300]


def _is_write(statement: str, context: Any) -> bool:
    if context is not None and (context.isinsert or context.isupdate or context.isdelete):
        return True
    return statement.lstrip()[:6].upper() in ("INSERT", "UPDATE", "DELETE")


def _info(conn: Any) -> dict[str, Any]:
    try:
        return conn.info  # type: ignore[no-any-return]
    except Exception:  # an invalidated connection has no record left
        return {}


def watch(engine: Engine) -> Engine:
    """Feed ``health(engine)`` from ``engine``'s events; return the engine.

    A fault: any error ``fault_kind`` recognises (a failed pre-ping is not one: the pool
    replaces the connection and carries on). A recovery: a commit after at least one write,
    seen as done when the connection starts its next transaction or goes back to the pool.
    """
    state = health(engine)

    def on_error(ctx: Any) -> None:
        if ctx.is_pre_ping:
            return
        if ctx.connection is not None:
            _info(ctx.connection).pop(_COMMITTING, None)
        kind = fault_kind(ctx.original_exception)
        if kind is None and ctx.is_disconnect:
            kind = "unreachable"
        if kind is not None:
            state.fault(kind, fault_detail(ctx.original_exception))

    def after_execute(conn: Any, _cur: Any, statement: str, _p: Any, ctx: Any, _m: Any) -> None:
        if _is_write(statement, ctx):
            _info(conn)[_WROTE] = True

    def on_commit(conn: Any) -> None:
        info = _info(conn)
        if info.pop(_WROTE, False):
            info[_COMMITTING] = True

    def on_rollback(conn: Any) -> None:
        _info(conn).pop(_WROTE, None)

    def settled(info: dict[str, Any]) -> None:
        if info.pop(_COMMITTING, False):
            state.recovered()

    event.listen(engine, "handle_error", on_error)
    event.listen(engine, "after_cursor_execute", after_execute)
    event.listen(engine, "commit", on_commit)
    event.listen(engine, "rollback", on_rollback)
    event.listen(engine, "begin", lambda conn: settled(_info(conn)))
    event.listen(engine, "checkin", lambda _dbapi, record: settled(record.info))
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
