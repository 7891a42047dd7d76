"""Leadership between replicas: a lease row with an expiry and a fencing token.

Every replica of ``batch-monitor run`` serves ``/metrics``, but scheduled work (collection,
evaluation, delivery, rollups, the report) runs on one: the holder of the ``scheduler`` lease.

1. ``acquire`` writes the row in one conditional UPDATE: it succeeds when the row is free,
   expired, or already ours, and then pushes ``expires_at`` one lease period ahead. A new
   holder gets ``token + 1`` (the fencing token); renewal keeps the token.
2. The holder renews every third of the period. A replica that cannot renew (database
   unreachable, process stalled) stops starting jobs once its own monotonic clock says the
   lease may have run out, before another replica can have taken it.
3. ``fence`` runs before every commit of a job's session: it reads the lease row ``FOR SHARE``
   on PostgreSQL (a takeover UPDATE then waits for this commit) and refuses the commit unless
   the row still carries our token and has not expired. So a stale leader's writes are refused
   even when it does not know it is stale.

Plain rows, not session advisory locks: those are tied to a connection, which PgBouncer in
transaction-pooling mode hands to other clients between transactions. Lease times come from
the database's own clock on PostgreSQL (replicas on several hosts may disagree about the
time), and from the real wall clock on SQLite (one host).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import case, event, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col

from monitor import clock, db
from monitor.models import Lease

if TYPE_CHECKING:
    from sqlalchemy import Engine

log = logging.getLogger(__name__)

SCHEDULER = "scheduler"


class LeaseLost(Exception):
    """A commit was refused: this process no longer holds the lease it worked under."""


@dataclass(frozen=True)
class Holder:
    """Who this process is, as written in the lease row."""

    id: str
    host: str
    pid: int

    @classmethod
    def me(cls) -> Holder:
        """Return this process's identity (host, pid and a random suffix)."""
        host, pid = socket.gethostname(), os.getpid()
        return cls(f"{host}:{pid}:{uuid.uuid4().hex[:8]}", host, pid)


@dataclass(frozen=True)
class LeaseView:
    """The lease as stored."""

    name: str
    holder: str
    host: str
    pid: int
    token: int
    acquired_at: datetime
    renewed_at: datetime
    expires_at: datetime


def db_now(session: Session) -> datetime:
    """Return the time leases are measured in: the database server's clock, or the wall."""
    if session.get_bind().dialect.name == "postgresql":
        value = session.execute(select(func.now())).scalar_one()
        return value  # type: ignore[no-any-return]
    return clock.wallnow()


def acquire(
    session: Session, holder: Holder, ttl: timedelta, *, name: str = SCHEDULER
) -> LeaseView | None:
    """Take or renew the lease ``name`` for ``ttl``; return it when we hold it, else None.

    The caller commits (and should commit at once: the row stays locked until then).
    """
    now = db_now(session)
    lease: Any = Lease
    changed = db.rowcount(
        session.execute(
            update(lease)
            .where(
                col(lease.name) == name,
                (col(lease.holder) == holder.id) | (col(lease.expires_at) <= now),
            )
            .values(
                # SET expressions read the row's old values: a new holder fences off the old
                # one (the token moves on), a renewal keeps token and acquired_at.
                token=case(
                    (col(lease.holder) == holder.id, col(lease.token)), else_=col(lease.token) + 1
                ),
                acquired_at=case(
                    (col(lease.holder) == holder.id, col(lease.acquired_at)), else_=now
                ),
                holder=holder.id,
                host=holder.host,
                pid=holder.pid,
                renewed_at=now,
                expires_at=now + ttl,
            )
        )
    )
    if not changed:
        exists = session.execute(select(col(lease.name)).where(col(lease.name) == name)).first()
        if exists is None:
            # Candidates may race to create the row: the first insert wins, the rest do nothing.
            dialect = session.get_bind().dialect.name
            stmt: Any = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(lease)
            stmt = stmt.values(
                name=name,
                holder=holder.id,
                host=holder.host,
                pid=holder.pid,
                token=1,
                acquired_at=now,
                renewed_at=now,
                expires_at=now + ttl,
            ).on_conflict_do_nothing(index_elements=["name"])
            session.execute(stmt)
    current = read(session, name=name)
    if current is not None and current.holder == holder.id:
        return current
    return None


def release(session: Session, holder: Holder, *, name: str = SCHEDULER) -> bool:
    """Give the lease up at once (on shutdown) so another replica can take over immediately."""
    now = db_now(session)
    return (
        db.rowcount(
            session.execute(
                update(Lease)
                .where(col(Lease.name) == name, col(Lease.holder) == holder.id)
                .values(expires_at=now)
            )
        )
        == 1
    )


def read(session: Session, *, name: str = SCHEDULER) -> LeaseView | None:
    """Return the lease row ``name`` (expired or not), or None."""
    row = session.execute(select(Lease).where(col(Lease.name) == name)).scalar_one_or_none()
    if row is None:
        return None
    return LeaseView(
        row.name,
        row.holder,
        row.host,
        row.pid,
        row.token,
        row.acquired_at,
        row.renewed_at,
        row.expires_at,
    )


def current_leader(session: Session, *, name: str = SCHEDULER) -> LeaseView | None:
    """Return the lease when it is held now (not expired), else None."""
    lease = read(session, name=name)
    if lease is None or lease.expires_at <= db_now(session):
        return None
    return lease


def fence(session: Session, holder: Holder, token: int, *, name: str = SCHEDULER) -> None:
    """Raise LeaseLost unless ``holder`` still holds the lease under ``token``.

    Call it inside the transaction about to commit: on PostgreSQL the lease row is read
    ``FOR SHARE``, so a takeover cannot slip in between this check and the commit.
    """
    stmt = select(col(Lease.holder), col(Lease.token), col(Lease.expires_at)).where(
        col(Lease.name) == name
    )
    if session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update(read=True)
    row = session.execute(stmt).first()
    now = db_now(session)
    # On SQLite only one daemon can run per file (the run lock), so an expired lease that
    # nobody took over is still ours: a renewal that queued behind a long write (a
    # 100,000-request ingestion) must not make the jobs of the only daemon throw work away.
    # A takeover still moves holder and token, which refuses the write.
    expired = row is not None and row.expires_at <= now
    if expired and session.get_bind().dialect.name == "sqlite":
        expired = False
    if row is None or row.holder != holder.id or row.token != token or expired:
        raise LeaseLost(f"lease {name!r} is no longer ours (token {token}); this write is refused")


def fenced_session(engine: Engine, holder: Holder, token: int) -> Session:
    """Return a session whose every commit is fenced by the lease (``fence``)."""
    session = Session(engine, expire_on_commit=False)

    @event.listens_for(session, "before_commit")
    def _check(s: Session) -> None:
        fence(s, holder, token)

    return session


class Leadership:
    """Keep (or wait for) the scheduler lease in a background thread.

    ``is_leader()`` is what jobs ask before they start: true only while the last renewal is
    recent enough that the lease cannot have expired, measured on this process's monotonic
    clock with a safety margin of a third of the period.
    """

    def __init__(self, engine: Engine, ttl: timedelta, holder: Holder | None = None) -> None:
        self.engine = engine
        self.ttl = ttl
        self.holder = holder or Holder.me()
        self.token: int | None = None
        self.since: datetime | None = None
        self._valid_until = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.last_error: str | None = None
        self.on_change: list[Any] = []

    def is_leader(self) -> bool:
        """Return whether this process may start scheduled work now."""
        with self._lock:
            return self.token is not None and clock.monotonic() < self._valid_until

    def tick(self) -> bool:
        """Try once to take or renew the lease; return whether we hold it."""
        started = clock.monotonic()
        try:
            with db.session_scope(self.engine) as session:
                lease = acquire(session, self.holder, self.ttl)
        except Exception as exc:  # unreachable database: stop leading before it expires
            self.last_error = (
                f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            )
            log.warning("lease: cannot renew: %s", self.last_error)
            lease = None
            failed = True
        else:
            failed = False
            self.last_error = None
        with self._lock:
            was = self.token
            if lease is not None:
                self.token = lease.token
                self.since = lease.acquired_at
                # Count from before the round trip: the row's expiry may be that much earlier.
                margin = self.ttl.total_seconds() / 3
                self._valid_until = started + self.ttl.total_seconds() - margin
            elif not failed or clock.monotonic() >= self._valid_until:
                self.token = None
            now_token = self.token
        if was != now_token:
            if now_token is not None:
                log.info(
                    "lease: %s leads (token %d)",
                    self.holder.id,
                    now_token,
                    extra={"holder": self.holder.id},
                )
            else:
                log.info(
                    "lease: %s no longer leads", self.holder.id, extra={"holder": self.holder.id}
                )
            for callback in self.on_change:
                callback(now_token is not None)
        return now_token is not None

    def start(self) -> None:
        """Renew every third of the lease period in a daemon thread."""
        if self._thread is not None:
            return
        self.tick()

        def loop() -> None:
            period = self.ttl.total_seconds() / 3
            while not self._stop.wait(period):
                self.tick()

        self._thread = threading.Thread(target=loop, name="lease", daemon=True)
        self._thread.start()

    def stop(self, *, release_lease: bool = True) -> None:
        """Stop renewing and (by default) give the lease up so a peer takes over at once."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.ttl.total_seconds())
            self._thread = None
        if release_lease and self.token is not None:
            try:
                with db.session_scope(self.engine) as session:
                    release(session, self.holder)
            except Exception as exc:  # the peer takes over at expiry instead
                log.warning("lease: cannot release: %s", exc)
        with self._lock:
            self.token = None
