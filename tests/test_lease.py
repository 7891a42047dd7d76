"""Leadership: one holder at a time, takeover at expiry, and a stale leader's writes refused."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select

from monitor import db, lease
from monitor.models import Lease, Tally

TTL = timedelta(seconds=30)


def _holder(name: str) -> lease.Holder:
    return lease.Holder(f"{name}:1:x", name, 1)


def _expire(engine: Engine) -> None:
    """Move the lease's expiry into the past, as if its holder stopped renewing long ago."""
    with db.session_scope(engine) as s:
        row = s.get(Lease, lease.SCHEDULER)
        assert row is not None
        row.expires_at = lease.db_now(s) - timedelta(seconds=1)


def test_one_holder_at_a_time_and_renewal_keeps_the_token(engine: Engine) -> None:
    a, b = _holder("a"), _holder("b")
    with db.session_scope(engine) as s:
        first = lease.acquire(s, a, TTL)
    with db.session_scope(engine) as s:
        assert lease.acquire(s, b, TTL) is None  # held by a, not expired
    with db.session_scope(engine) as s:
        again = lease.acquire(s, a, TTL)
    assert first is not None and again is not None
    assert (first.token, again.token) == (1, 1)
    assert again.acquired_at == first.acquired_at and again.expires_at >= first.expires_at


def test_takeover_after_expiry_moves_the_fencing_token_on(engine: Engine) -> None:
    a, b = _holder("a"), _holder("b")
    with db.session_scope(engine) as s:
        assert lease.acquire(s, a, TTL) is not None
    _expire(engine)
    with db.session_scope(engine) as s:
        taken = lease.acquire(s, b, TTL)
        assert taken is not None and taken.token == 2 and taken.holder == b.id
        assert lease.current_leader(s) == taken
    with db.session_scope(engine) as s:
        assert lease.acquire(s, a, TTL) is None  # the old holder does not get it back


def test_a_stale_leader_cannot_commit(engine: Engine) -> None:
    a, b = _holder("a"), _holder("b")
    with db.session_scope(engine) as s:
        got = lease.acquire(s, a, TTL)
    assert got is not None
    session = lease.fenced_session(engine, a, got.token)
    session.add(Tally(metric="m", key="before", value=1))
    session.commit()  # still the holder: accepted
    _expire(engine)
    with db.session_scope(engine) as s:
        assert lease.acquire(s, b, TTL) is not None
    session.add(Tally(metric="m", key="after", value=1))
    with pytest.raises(lease.LeaseLost):
        session.commit()
    session.rollback()
    session.close()
    with Session(engine) as s:
        keys = set(s.exec(select(Tally.key).where(Tally.metric == "m")))
    assert keys == {"before"}  # the refused write left nothing behind


def test_release_hands_over_at_once(engine: Engine) -> None:
    a, b = _holder("a"), _holder("b")
    with db.session_scope(engine) as s:
        assert lease.acquire(s, a, TTL) is not None
    with db.session_scope(engine) as s:
        assert lease.release(s, a)
    with db.session_scope(engine) as s:
        assert lease.current_leader(s) is None
        taken = lease.acquire(s, b, TTL)
    assert taken is not None and taken.token == 2


def test_concurrent_candidates_elect_exactly_one(engine: Engine, dialect: str) -> None:
    if dialect == "sqlite":
        pytest.skip("SQLite serialises writers itself; this race is about PostgreSQL")
    winners: list[str] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(6)

    def candidate(i: int) -> None:
        h = _holder(f"c{i}")
        barrier.wait()
        try:
            with db.session_scope(engine) as s:
                if lease.acquire(s, h, TTL) is not None:
                    winners.append(h.id)
        except BaseException as exc:  # a candidate must lose quietly, never crash
            errors.append(exc)

    threads = [threading.Thread(target=candidate, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert errors == [] and len(winners) == 1


def test_leadership_stops_leading_when_it_cannot_renew(engine: Engine) -> None:
    ttl = timedelta(seconds=0.6)
    leadership = lease.Leadership(engine, ttl, _holder("a"))
    assert leadership.tick() and leadership.is_leader()
    # The database becomes unusable for this process: every renewal fails.
    leadership.engine = db.make_engine("postgresql://nobody@127.0.0.1:1/none")
    leadership.tick()
    # Still inside the safe part of the lease: keeps leading for now...
    deadline = time.monotonic() + 5
    while leadership.is_leader() and time.monotonic() < deadline:
        time.sleep(0.05)
        leadership.tick()
    # ...and stops before the lease (0.6 s) could have expired and been taken over.
    assert not leadership.is_leader()
    leadership.engine.dispose()


def test_an_expired_lease_nobody_took_over(engine: Engine, dialect: str) -> None:
    a = _holder("a")
    with db.session_scope(engine) as s:
        got = lease.acquire(s, a, TTL)
    assert got is not None
    session = lease.fenced_session(engine, a, got.token)
    _expire(engine)
    session.add(Tally(metric="m", key="late", value=1))
    if dialect == "sqlite":
        # One daemon per SQLite file (the run lock): a late renewal loses nothing.
        session.commit()
    else:
        # Replicas share PostgreSQL: an expired lease may be taken over any moment.
        with pytest.raises(lease.LeaseLost):
            session.commit()
        session.rollback()
    session.close()
    with Session(engine) as s:
        keys = set(s.exec(select(Tally.key).where(Tally.metric == "m")))
    assert keys == ({"late"} if dialect == "sqlite" else set())
