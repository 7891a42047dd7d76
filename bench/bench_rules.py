"""How long evaluating every default rule takes over a year of an organisation's history.

The data: 50,000 batches over a year, hourly usage buckets for 20 models x 10 workspaces x 3 tiers
(5.26 million rows), daily cost-report lines, hourly call-log buckets for a few workloads, and a
year of collection runs at the daemon's real intervals (about 700,000 rows). It is inserted with
SQLAlchemy Core executemany, once into SQLite and once into a PostgreSQL database created for
the run (and dropped after).

The figures: the median of several evaluations of each rule, and of ``evaluate_all`` over all of
them (target: under 150 ms on either database, reading the rollups), each against a floor
measured in the same run (one indexed COUNT of the last day's usage buckets). Every SELECT one
round issues is EXPLAINed to show whether it uses an index.

``BENCH_RULES_SCALE=0.1`` runs on a tenth of the data (for a quick look); ``BENCH_RULES_DB`` picks
``sqlite`` or ``postgresql`` only; ``BENCH_PG_URL`` points at another PostgreSQL server.
"""

from __future__ import annotations

import os
import random
import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event, text
from sqlmodel import Session, SQLModel

from bench import median_ms
from monitor import advisor, clock, db, rollups
from monitor.alerts import evaluate_all
from monitor.config import Settings
from monitor.models import Batch, CallBucket, CollectRun, CostBucket, UsageBucket
from monitor.rulekinds import Rule
from monitor.rules import evaluate, load_rules
from monitor.summary import last_success
from monitor.workloads import Workload

SCALE = float(os.environ.get("BENCH_RULES_SCALE", "1"))
PG_URL = os.environ.get("BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
PG_DB = "bm_bench_rules"
NOW = datetime(2026, 11, 1, tzinfo=UTC)
YEAR = timedelta(days=365)
MODELS = [f"claude-model-{i:02d}" for i in range(20)]
WORKSPACES = [f"wrkspc_{i:02d}" for i in range(10)]
TIERS = (
    ("standard", "messages_api"),
    ("priority", "messages_api"),
    ("batch", "message_batches_api"),
)
WORKLOADS = ("nightly-report", "support-chat", "classifier", "embeddings-prep", "summaries")
# The daemon's default intervals: batches 5 min, usage and cost 15 min, call logs 1 min.
RUN_INTERVALS = (("batches", 5), ("usage", 15), ("cost", 15), ("logs", 1))
REPEATS = 7
CHUNK = 20_000


# --- data -----------------------------------------------------------------------------------


def _batches(rng: random.Random, span: timedelta, count: int) -> Iterator[dict[str, Any]]:
    start = NOW - span
    step = span / max(count, 1)
    for i in range(count):
        created = start + i * step + timedelta(seconds=rng.randint(0, 60))
        turnaround = timedelta(seconds=int(rng.lognormvariate(7.8, 0.8)))  # ~40 min median
        ended: datetime | None = created + turnaround
        if ended is not None and ended >= NOW:
            ended = None  # still running at the end of the year
        requests = rng.randint(100, 10_000)
        errored = rng.randint(0, requests // 500)
        expired = requests // 50 if rng.random() < 0.01 else 0
        cost = Decimal(requests) * Decimal("0.0013")
        yield {
            "id": f"msgbatch_{i:08d}",
            "workspace_id": rng.choice(WORKSPACES),
            "workload": rng.choice((*WORKLOADS, None)),
            "processing_status": "ended" if ended else "in_progress",
            "created_at": created,
            "ended_at": ended,
            "expires_at": created + timedelta(hours=24),
            "requests": requests,
            "processing": 0 if ended else requests,
            "succeeded": requests - errored - expired if ended else 0,
            "errored": errored if ended else 0,
            "expired": expired if ended else 0,
            "turnaround_seconds": turnaround.total_seconds() if ended else None,
            "input_tokens": requests * 900,
            "output_tokens": requests * 200,
            "cost_usd": cost if ended else None,
            "standard_cost_usd": cost * 2 if ended else None,
            "results_state": "ingested" if ended else "pending",
            "first_seen_at": created,
            "updated_at": ended or created,
        }


def _usage(rng: random.Random, hours: int) -> Iterator[dict[str, Any]]:
    start = NOW - timedelta(hours=hours)
    for h in range(hours):
        bucket = start + timedelta(hours=h)
        for ws in WORKSPACES:
            for model in MODELS:
                for tier, product in TIERS:
                    requests = rng.randint(0, 400)
                    yield {
                        "bucket_start": bucket,
                        "bucket_end": bucket + timedelta(hours=1),
                        "width": "1h",
                        "source": "analytics",
                        "product": product,
                        "model": model,
                        "service_tier": tier,
                        "workspace_id": ws,
                        "requests": requests,
                        "input_tokens": requests * 800,
                        "output_tokens": requests * 150,
                        "cost_usd": Decimal(requests) * Decimal("0.0041"),
                        "final": True,
                        "fetched_at": bucket + timedelta(hours=2),
                    }


def _costs(rng: random.Random, hours: int) -> Iterator[dict[str, Any]]:
    days = max(1, hours // 24)
    start = (NOW - timedelta(days=days)).replace(hour=0)
    for d in range(days):
        day = start + timedelta(days=d)
        for ws in WORKSPACES:
            for model in MODELS:
                for tier in ("standard", "batch"):
                    yield {
                        "day": day,
                        "source": "analytics",
                        "workspace_id": ws,
                        "model": model,
                        "service_tier": tier,
                        "cost_type": "tokens",
                        "token_type": "uncached_input_tokens",
                        "amount_usd": Decimal(rng.randint(1000, 5000)) / 100,
                        "fetched_at": day + timedelta(days=1),
                    }


def _calls(rng: random.Random, hours: int) -> Iterator[dict[str, Any]]:
    start = NOW - timedelta(hours=hours)
    for h in range(hours):
        hour = start + timedelta(hours=h)
        for workload in WORKLOADS:
            calls = rng.randint(10, 500)
            cost = Decimal(calls) * Decimal("0.012")
            yield {
                "hour": hour,
                "workload": workload,
                "model": MODELS[0],
                "calls": calls,
                "input_tokens": calls * 3000,
                "output_tokens": calls * 400,
                "cost_usd": cost,
                "batch_cost_usd": cost / 2,
            }


def _runs(hours: int) -> Iterator[dict[str, Any]]:
    start = NOW - timedelta(hours=hours)
    for source, minutes in RUN_INTERVALS:
        every = timedelta(minutes=minutes)
        t = start
        while t < NOW - every:
            yield {
                "source": source,
                "started_at": t,
                "finished_at": t + timedelta(seconds=3),
                "status": "ok",
                "items": 10,
            }
            t += every


def _insert(engine: Engine, model: type[SQLModel], rows: Iterator[dict[str, Any]]) -> int:
    table = SQLModel.metadata.tables[model.__tablename__]  # type: ignore[index]
    total = 0
    chunk: list[dict[str, Any]] = []
    with engine.begin() as conn:
        for row in rows:
            chunk.append(row)
            if len(chunk) == CHUNK:
                conn.execute(table.insert(), chunk)
                total += len(chunk)
                chunk = []
        if chunk:
            conn.execute(table.insert(), chunk)
            total += len(chunk)
    return total


def load(engine: Engine, span: timedelta = YEAR, scale: float = SCALE) -> None:
    """Create the schema and insert ``span`` (a year by default) of history, rolled up.

    ``scale`` shortens the history (0.1: the last tenth of it). The organisation is the same
    whatever the span: a month is a year's last month.
    """
    SQLModel.metadata.create_all(engine)
    rng = random.Random(20261101)
    hours = int(span / timedelta(hours=1) * scale)
    batches = int(50_000 * scale * span / YEAR)
    for model, rows in (
        (Batch, _batches(rng, span, batches)),
        (UsageBucket, _usage(rng, hours)),
        (CostBucket, _costs(rng, hours)),
        (CallBucket, _calls(rng, hours)),
        (CollectRun, _runs(hours)),
    ):
        started = clock.monotonic()
        n = _insert(engine, model, rows)
        secs = clock.monotonic() - started
        print(f"  {model.__tablename__:<13} {n:>10,} rows in {secs:6.1f} s ({n / secs:,.0f}/s)")
    started = clock.monotonic()
    days = rollup_all(engine, timedelta(hours=hours))
    secs = clock.monotonic() - started
    print(f"  {'rollups':<13} {days:>10,} days in {secs:6.1f} s ({secs / max(days, 1):.2f} s/day)")
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        # Fresh statistics and (PostgreSQL) a visibility map, as autovacuum keeps them on a
        # long-running database: index-only scans depend on it.
        conn.execute(text("VACUUM ANALYZE" if engine.dialect.name == "postgresql" else "ANALYZE"))


def rollup_all(engine: Engine, span: timedelta = YEAR) -> int:
    """Roll the whole history up into days, as the daemon's rollup job keeps it."""
    with Session(engine) as session:
        first = NOW - span - timedelta(days=1)
        rollups.mark_dirty(session, rollups.days_between(first, NOW + timedelta(days=1)), NOW)
        session.commit()
        return rollups.refresh(session, NOW).days


# --- measuring ------------------------------------------------------------------------------


def floor(session: Session) -> int:
    """Count the last day's usage buckets through the index (the unit of every ratio)."""
    return int(
        session.execute(
            text(
                "SELECT count(*) FROM usage_bucket WHERE bucket_start >= :a AND bucket_start < :b"
            ),
            {"a": _bind(session, NOW - timedelta(days=1)), "b": _bind(session, NOW)},
        ).scalar_one()
    )


def _bind(session: Session, ts: datetime) -> Any:
    # Raw SQL bypasses the column type: store SQLite's text form, PostgreSQL's timestamptz.
    if session.get_bind().dialect.name == "sqlite":
        return ts.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ")
    return ts


def measure(engine: Engine, rules: list[Rule], settings: Settings) -> dict[str, float]:
    """Return the median milliseconds of the floor, each rule, and evaluate_all."""
    out: dict[str, float] = {}
    with Session(engine) as session:
        # What the daemon's advise job keeps fresh (batch_candidate reads it).
        advisor.store(session, NOW, settings)
        session.commit()
        floor(session)  # warm the cache as a running daemon would have it
        out["floor"] = median_ms(lambda: floor(session), REPEATS)
        for r in rules:
            key = f"{r.name} ({r.severity})"
            out[key] = median_ms(lambda r=r: evaluate(r, session, NOW, settings=settings), REPEATS)  # type: ignore[misc]
        tick = iter(range(1, 1000))

        def run_all() -> None:
            evaluate_all(session, NOW + timedelta(seconds=next(tick)), rules, settings=settings)

        run_all()  # the first round inserts the alert states
        out["evaluate_all"] = median_ms(run_all, REPEATS)
        out["summary.last_success"] = median_ms(lambda: last_success(session), REPEATS)
    return out


def _verdict(sqlite: bool, statement: str, lines: list[str]) -> str:
    if sqlite:
        # SEARCH = an index range or key lookup; SCAN = every row of the table or index.
        scans = [line for line in lines if line.startswith("SCAN ") and "CONSTANT" not in line]
    else:
        scans = [line.strip() for line in lines if "Seq Scan" in line]
    if not scans:
        return "index"
    upper = statement.upper()
    if " LIMIT " in upper and " WHERE " not in upper:
        return "scan, stops at the first row"
    return "FULL SCAN: " + "; ".join(scans)


def explain(engine: Engine, rules: list[Rule], settings: Settings) -> list[tuple[str, str, str]]:
    """Return ``(sql, verdict, plan)`` for every distinct SELECT one evaluation round issues."""
    seen: dict[str, Any] = {}

    def record(conn: Any, cursor: Any, statement: str, params: Any, *a: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "advisory" not in statement:
            seen.setdefault(statement, params)

    event.listen(engine, "before_cursor_execute", record)
    try:
        with Session(engine) as session:
            evaluate_all(session, NOW + timedelta(hours=1), rules, settings=settings)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    sqlite = engine.dialect.name == "sqlite"
    out = []
    with engine.connect() as conn:
        for statement, params in seen.items():
            prefix = "EXPLAIN QUERY PLAN " if sqlite else "EXPLAIN "
            rows = conn.exec_driver_sql(prefix + statement, params).all()
            lines = [str(r[-1] if sqlite else r[0]) for r in rows]
            plan = " | ".join(line.strip() for line in lines)
            out.append((" ".join(statement.split()), _verdict(sqlite, statement, lines), plan))
    return out


@contextmanager
def pg_engine(name: str = PG_DB) -> Iterator[Engine]:
    """Yield an engine on a PostgreSQL database created for the run (dropped after)."""
    admin = db.make_engine(PG_URL)
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine = db.make_engine(db.normalize_url(PG_URL).rsplit("/", 1)[0] + "/" + name)
    try:
        yield engine
    finally:
        engine.dispose()
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def sqlite_engine(tmp: Path, name: str = "bench_rules") -> Iterator[Engine]:
    """Yield an engine on a SQLite file in ``tmp``."""
    engine = db.make_engine(f"sqlite:///{tmp / (name + '.db')}")
    try:
        yield engine
    finally:
        engine.dispose()


def main() -> None:
    """Load a year of history into each database, time the rules, and EXPLAIN their queries."""
    settings = Settings(
        workloads=tuple(
            Workload(name, None, timedelta(hours=24) if i % 2 == 0 else None, None)
            for i, name in enumerate(WORKLOADS)
        )
    )
    rules = load_rules(settings)
    wanted = os.environ.get("BENCH_RULES_DB")
    results: dict[str, dict[str, dict[str, float]]] = {}
    plans: dict[str, list[tuple[str, str, str]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench_rules_") as tmp:
        factories: list[tuple[str, Callable[[], AbstractContextManager[Engine]]]] = [
            ("sqlite", lambda: sqlite_engine(Path(tmp))),
            ("postgresql", pg_engine),
        ]
        for name, factory in factories:
            if wanted and wanted != name:
                continue
            print(f"{name}: loading a year of history (scale {SCALE:g})", flush=True)
            with factory() as engine:
                load(engine)
                results[name] = measure(engine, rules, settings)
                plans[name] = explain(engine, rules, settings)

    for name, res in results.items():
        print(f"\n{name}: median of {REPEATS} runs, milliseconds")
        print(f"{'measurement':<46} {'ms':>9} {'x floor':>8}")
        for key, ms in res.items():
            label = {
                "floor": "floor: indexed COUNT of 1 day of usage",
                "evaluate_all": f"evaluate_all: all {len(rules)} default rules",
            }.get(key, key)
            print(f"{label:<46} {ms:>9.1f} {ms / res['floor']:>8.1f}")
    for name, res in results.items():
        total = res["evaluate_all"]
        verdict = "within" if total < 150 else "OVER"
        print(f"{name}: evaluate_all {total:.0f} ms, {verdict} the 150 ms target (rollups)")

    for name, plan in plans.items():
        print(f"\n{name}: query plans of one evaluation round ({len(plan)} distinct SELECTs)")
        for sql, verdict, lines in plan:
            print(f"- [{verdict}] {sql[:160]}{'...' if len(sql) > 160 else ''}")
            print(f"    {lines[:500]}")


if __name__ == "__main__":
    main()
