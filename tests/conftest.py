"""Shared fixtures: one store suite parametrized over SQLite and PostgreSQL.

PostgreSQL comes from ``MONITOR_TEST_POSTGRES_URL`` (default: the local server on
127.0.0.1:5432, user postgres, database test). Each xdist worker gets its own database. When the
server is absent, PostgreSQL tests skip with a loud reason, unless ``MONITOR_REQUIRE_POSTGRES=1``
(set by CI), where they fail.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, SQLModel

from monitor import db

PG_URL = os.environ.get(
    "MONITOR_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REQUIRE_PG = os.environ.get("MONITOR_REQUIRE_POSTGRES") == "1"

_pg_state: dict[str, object] = {}


def _worker() -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


def pg_admin_url() -> str:
    """Return the URL of the PostgreSQL server's base database (for CREATE DATABASE)."""
    return db.normalize_url(PG_URL)


def _pg_database_url() -> str:
    """Create (once per worker) and return a private PostgreSQL database for this worker."""
    if "url" in _pg_state:
        return str(_pg_state["url"])
    if "error" in _pg_state:
        _pg_unavailable(str(_pg_state["error"]))
    # A name per process: several test runs (and xdist workers) can share one server.
    name = f"bm_test_{_worker()}_{os.getpid()}"
    try:
        admin = db.make_engine(pg_admin_url())
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
    except OperationalError as exc:  # no server: skip (or fail when required)
        _pg_state["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
        _pg_unavailable(str(_pg_state["error"]))
    url = pg_admin_url().rsplit("/", 1)[0] + "/" + name
    _pg_state["url"] = url
    _pg_state.setdefault("created", []).append(name)  # type: ignore[attr-defined]
    return url


def _pg_unavailable(reason: str) -> None:
    message = f"PostgreSQL at {db.redact_url(PG_URL)} is not available ({reason})"
    if REQUIRE_PG:
        pytest.fail(message + "; MONITOR_REQUIRE_POSTGRES=1 requires it", pytrace=False)
    pytest.skip("!!! SKIPPING POSTGRESQL TESTS: " + message)


def _reset_pg(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
    SQLModel.metadata.create_all(engine)
    names = ", ".join(f'"{t.name}"' for t in SQLModel.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))


_pg_engine: dict[str, Engine] = {}


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Yield a database URL with an empty schema (all tables), on SQLite or PostgreSQL."""
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("db") / "monitor.db"
        url = f"sqlite:///{path}"
        engine = db.make_engine(url)
        SQLModel.metadata.create_all(engine)
        engine.dispose()
        return url
    url = _pg_database_url()
    if url not in _pg_engine:
        _pg_engine[url] = db.make_engine(url)
    _reset_pg(_pg_engine[url])
    return url


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """Yield an engine on a fresh schema (parametrized over both databases)."""
    eng = db.make_engine(db_url)
    try:
        yield eng
    finally:
        eng.dispose()


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    """Yield a session on a fresh schema; commits are the test's business."""
    with Session(engine, expire_on_commit=False) as s:
        yield s


@pytest.fixture
def dialect(engine: Engine) -> str:
    """Return the dialect name of the parametrized database."""
    return engine.dialect.name


def utc(*args: int) -> datetime:
    """Build an aware UTC datetime (shorthand for tests)."""
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_db_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Yield the URL of a database with no tables at all (for migration tests)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('mig') / 'empty.db'}"
    base = _pg_database_url()  # skips or fails when PostgreSQL is absent
    name = f"bm_empty_{_worker()}_{os.getpid()}"
    _pg_state.setdefault("created", []).append(name)  # type: ignore[attr-defined]
    admin = db.make_engine(pg_admin_url())
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return base.rsplit("/", 1)[0] + "/" + name


def migrate_fresh(url: str) -> None:
    """Replace the fixture's tables with a schema built by the real migrations.

    Needed where a test runs the CLI, which refuses an un-migrated database.
    """
    engine = db.make_engine(url)
    try:
        SQLModel.metadata.drop_all(engine)
        with engine.begin() as conn:
            conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
        db.upgrade(engine)
    finally:
        engine.dispose()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Drop the PostgreSQL databases this process created."""
    names = list(_pg_state.get("created", []))  # type: ignore[call-overload]
    if not names:
        return
    for eng in _pg_engine.values():
        eng.dispose()
    admin = db.make_engine(pg_admin_url())
    try:
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            for name in dict.fromkeys(names):
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()
