"""The store: migrations match the models, upserts are idempotent, money is exact."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, select, text
from sqlmodel import Session, SQLModel

from monitor import db
from monitor.models import Batch, BatchUsage, UsageBucket
from monitor.money import money_sum
from tests.conftest import utc

NOW = utc(2026, 11, 20, 12)


def _batch(bid: str, cost: str | None, **kw: object) -> dict[str, object]:
    row: dict[str, object] = {
        "id": bid,
        "processing_status": "ended",
        "created_at": NOW,
        "first_seen_at": NOW,
        "updated_at": NOW,
        "cost_usd": Decimal(cost) if cost is not None else None,
    }
    row.update(kw)
    return row


def _diff(url: str) -> list[object]:
    engine = db.make_engine(url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            return list(compare_metadata(ctx, SQLModel.metadata))
    finally:
        engine.dispose()


def test_migrations_match_models_and_round_trip(empty_db_url: str) -> None:
    engine = db.make_engine(empty_db_url)
    try:
        assert db.current_revision(engine) is None
        db.upgrade(engine)
        assert db.current_revision(engine) == db.head_revision()
        assert _diff(empty_db_url) == []
        db.downgrade(engine, "base")
        assert db.current_revision(engine) is None
        tables = set(inspect(engine).get_table_names()) - {"alembic_version"}
        assert tables == set()
        db.upgrade(engine)
        assert _diff(empty_db_url) == []
        assert set(SQLModel.metadata.tables) <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_require_migrated_names_the_command(empty_db_url: str) -> None:
    engine = db.make_engine(empty_db_url)
    try:
        with pytest.raises(db.DatabaseError, match="batch-monitor db upgrade") as info:
            db.require_migrated(engine)
        assert "has no schema yet" in str(info.value)
        db.upgrade(engine)
        db.require_migrated(engine)  # no error once migrated
    finally:
        engine.dispose()


def test_upsert_updates_on_natural_key(session: Session) -> None:
    db.upsert(session, Batch, [_batch("b1", "1.10"), _batch("b2", "2.20")], key=["id"])
    db.upsert(session, Batch, [_batch("b1", "5.55", processing="0")], key=["id"])
    session.commit()
    rows = {b.id: b for b in session.exec(select(Batch)).scalars()}  # type: ignore[call-overload]
    assert rows["b1"].cost_usd == Decimal("5.55")
    assert rows["b2"].cost_usd == Decimal("2.20")
    assert len(rows) == 2


def test_upsert_on_unique_constraint_replaces_revised_bucket(session: Session) -> None:
    base = {
        "bucket_start": NOW,
        "bucket_end": NOW + timedelta(hours=1),
        "width": "1h",
        "source": "analytics",
        "product": "messages_api",
        "model": "claude-sonnet-4-6",
        "service_tier": "standard",
        "workspace_id": "wrkspc_a",
        "api_key_id": "",
        "context_window": "",
        "inference_geo": "",
        "fetched_at": NOW,
    }
    key = [
        "bucket_start", "width", "source", "product", "model", "service_tier",
        "workspace_id", "api_key_id", "context_window", "inference_geo",
    ]  # fmt: skip
    db.upsert(session, UsageBucket, [{**base, "input_tokens": 80}], key=key)
    db.upsert(session, UsageBucket, [{**base, "input_tokens": 100, "final": True}], key=key)
    session.commit()
    rows = session.exec(select(UsageBucket)).scalars().all()  # type: ignore[call-overload]
    assert [(r.input_tokens, r.final) for r in rows] == [(100, True)]


def test_money_is_exact_to_twelve_places(session: Session) -> None:
    # 0.1 + 0.2 is the classic float trap; the ledger must add up exactly.
    amounts = ["0.1", "0.2", "0.000000000005", "123456789.123456789012"]
    db.upsert(session, Batch, [_batch(f"b{i}", a) for i, a in enumerate(amounts)], key=["id"])
    session.commit()
    total = session.execute(select(money_sum(Batch.cost_usd))).scalar_one()
    assert total == Decimal("123456789.423456789017")
    got = session.get(Batch, "b3")
    assert got is not None and got.cost_usd == Decimal("123456789.123456789012")


def test_money_sum_groups_and_ignores_nulls(session: Session) -> None:
    db.upsert(session, Batch, [_batch("b1", None)], key=["id"])
    rows = [
        {"batch_id": "b1", "model": m, "cost_usd": Decimal(c)}
        for m, c in [("a", "0.105"), ("b", "0.005")]
    ]
    db.upsert(session, BatchUsage, rows, key=["batch_id", "model"])
    session.commit()
    assert session.execute(select(money_sum(Batch.cost_usd))).scalar_one() is None
    grouped = session.execute(
        select(BatchUsage.batch_id, money_sum(BatchUsage.cost_usd)).group_by(BatchUsage.batch_id)
    ).all()
    assert grouped == [("b1", Decimal("0.11"))]


def test_money_refuses_floats(session: Session) -> None:
    with pytest.raises(Exception, match="Decimal"):
        db.upsert(session, Batch, [{**_batch("b1", None), "cost_usd": 0.1}], key=["id"])


def test_datetimes_come_back_aware_utc(session: Session) -> None:
    db.upsert(session, Batch, [_batch("b1", "1")], key=["id"])
    session.commit()
    got = session.get(Batch, "b1")
    assert got is not None and got.created_at == NOW and got.created_at.tzinfo is not None


def test_sqlite_uses_wal(tmp_path: object) -> None:
    engine = db.make_engine(f"sqlite:///{tmp_path}/w.db")
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
    engine.dispose()


def test_advisory_lock_excludes_a_second_holder(engine: object, dialect: str) -> None:
    from sqlalchemy import Engine

    assert isinstance(engine, Engine)
    with Session(engine) as a, Session(engine) as b:
        assert db.try_advisory_lock(a, "collect:batches")
        if dialect == "postgresql":
            assert not db.try_advisory_lock(b, "collect:batches")
            a.commit()  # releases the transaction-scoped lock
            assert db.try_advisory_lock(b, "collect:batches")
        else:
            assert db.try_advisory_lock(b, "collect:batches")


def test_bad_url_is_a_usage_error() -> None:
    with pytest.raises(db.DatabaseError) as info:
        db.make_engine("mysql://x@y/z")
    assert info.value.exit_code == 2


def test_unreachable_database_is_exit_1() -> None:
    engine = db.make_engine("postgresql://nobody:secretpw@127.0.0.1:1/none")
    with pytest.raises(db.DatabaseError) as info:
        db.check_reachable(engine)
    assert info.value.exit_code == 1
    assert "secretpw" not in str(info.value)
    assert "127.0.0.1:1" in str(info.value)


def test_counts_past_two_to_the_31_are_kept(empty_db_url: str) -> None:
    """One batch of 100,000 long prompts holds billions of tokens: no column may cut it."""
    from monitor.models import BatchDay, UsageDay

    engine = db.make_engine(empty_db_url)
    try:
        db.upgrade(engine)
        big = 5_000_000_000
        with Session(engine) as session:
            session.add(Batch(**_batch("b_big", "1.00", workspace_id="w", input_tokens=big)))  # type: ignore[arg-type]
            session.add(UsageDay(day=NOW, source="analytics", input_tokens=3 * big))
            session.add(BatchDay(day=NOW, requests=big, turnaround_count=1))
            session.commit()
        with Session(engine) as session:
            stored = session.get(Batch, "b_big")
            assert stored is not None and stored.input_tokens == big
            assert session.scalars(select(UsageDay.input_tokens)).one() == 3 * big
            assert session.scalars(select(BatchDay.requests)).one() == big
        assert _diff(empty_db_url) == []
    finally:
        engine.dispose()
