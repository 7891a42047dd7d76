"""Upstream faults (issue 11, item 1): a month under seeded random faults ends where the
fault-free month ends, to the cent.

The collectors run as ``collect_source(source, session, now)`` (what the daemon's jobs call)
on an hourly schedule of simulated time against the Anthropic simulator, through the real SDK
over HTTP. One run has no fault (the baseline); the others get, at seeded random hours: 429
with a short ``retry-after`` (the SDK waits and retries) and with a long one (refused by the
capped transport: the run fails and the next poll retries), 500 and 529 bursts, timeouts, TCP
resets, results streams cut at a random byte, a malformed results line at a random line, a
report page whose cursor points back and one that has more after it but no cursor, and, all
month long, usage and cost buckets shown at a provisional value for a while after they close
(``late_revision``: a bucket revised after it was read). Every kind is injected at least once.

After the month both runs take the same fault-free catch-up polls (over 36 hours: long enough
for a slowed-down results retry), then the end states are compared: every row of the
batch, batch usage, batch error, usage bucket, cost bucket and rollup tables (bookkeeping such
as fetch times and attempt counts aside), and ``summary --json`` for every day that has data,
from the CLI. A wrong read that a later read heals would slip past that comparison, so after
every poll that went through, what it settled (final usage hours, the previous day of cost,
the batches whose results it ingested) must already equal the fault-free month
(:class:`Checker`). The figures record how many faults of each kind were injected and fired (the
simulator's ``Fault.fired``; for ``late_revision``, the report rows served at a provisional
value) and how many collector runs failed on the way.

Short version: 2 days on SQLite, and the same on PostgreSQL with another seed (both compared
with one SQLite baseline). Soak (``MONITOR_SOAK=1``): 30 days, likewise. ``MONITOR_FAULT_SEED``
sets the seeds (SQLite: it, PostgreSQL: it + 2) to replay a failure.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Integer, func, inspect, select
from sqlmodel import Session, SQLModel, col
from typer.testing import CliRunner

from monitor import cli, db, rollups, sources
from monitor.collect import collect_source
from monitor.config import CollectSection
from monitor.models import (
    Batch,
    BatchDay,
    BatchError,
    BatchTotal,
    BatchUsage,
    CallDay,
    CollectRun,
    CostBucket,
    RollupDay,
    SpendDay,
    SpendTotal,
    UsageBucket,
    UsageDay,
)
from monitor.simulator import (
    Fault,
    Scenario,
    SimulatorServer,
    build_scenario,
    connection_reset,
    cut_stream,
    late_revision,
    malformed_line,
    overloaded,
    rate_limit,
    repeat_page,
    server_error,
    skip_page,
    slow,
)
from tests.conftest import migrate_fresh
from tests.reliability.conftest import SOAK
from tests.simkit import settings_for

STEP = timedelta(hours=1)
# Fault-free polls after the month, the same in every run (hours after its last poll): hourly
# while the last batches end and buckets become final, then through a day and a half of
# slowed-down results retries (1 h, 2 h, 4 h ... after the fast ones).
CATCH_UP = (1, 2, 3, 4, 5, 6, 12, 24, 36)
REFRESH_EVERY = 6  # polls between rollup refreshes (the daemon refreshes on its own job)
TIMEOUT = timedelta(seconds=0.75)  # the SDK's request timeout; a "timeout" fault waits longer
# Report page sizes: several pages per read (per region pass for usage), so a paging fault
# always has a chain to break.
PAGE_LIMIT = {"usage": 6, "cost": 25}
LIST_PAGE = 10  # batch listing page size
DAYS = 30.0 if SOAK else 2.0
# Mean faults per hourly poll, on top of one of each kind placed at random.
RATE = 0.3 if SOAK else 0.15
FIRST_SEED = int(os.environ.get("MONITOR_FAULT_SEED", "1101"))

# What the schedule injects: a label, and which simulator fault kind it is.
LABELS = (
    "rate_limit_short",
    "rate_limit_long",
    "server_error_burst",
    "overloaded_burst",
    "timeout",
    "connection_reset",
    "cut_stream",
    "malformed_line",
    "repeat_page",
    "skip_page",
)
ENDPOINTS = (
    "batches.list",
    "batches.retrieve",
    "batches.results",
    "analytics.usage",
    "analytics.cost",
)
REPORTS = ("analytics.usage", "analytics.cost")

# Columns that say when or how often something happened, not what was recorded: a faulty run
# sees a batch first later, fetches a bucket at another poll, reads results on a retry.
BOOKKEEPING = {
    "fetched_at",
    "updated_at",
    "first_seen_at",
    "results_ingested_at",
    "results_attempts",
    "marked_at",
}
COMPARED = (
    Batch,
    BatchUsage,
    BatchError,
    UsageBucket,
    CostBucket,
    RollupDay,
    UsageDay,
    CallDay,
    SpendDay,
    SpendTotal,
    BatchDay,
    BatchTotal,
)


# --- the schedule of faults ---------------------------------------------------------------


@dataclass
class Injector:
    """Seeded random faults: which to add at each poll, and what became of them."""

    seed: int
    polls: int
    rate: float
    rng: random.Random = field(init=False)
    plan: dict[int, list[str]] = field(init=False)
    added: list[tuple[str, Fault]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.plan = {}
        # One of each kind in the first 60 % of the month, so every kind is seen even in the
        # short version, then random ones: a Poisson number per poll (by thinning).
        for label in LABELS:
            self.plan.setdefault(self.rng.randrange(max(1, self.polls * 6 // 10)), []).append(label)
        for poll in range(self.polls):
            for _ in range(4):
                if self.rng.random() < self.rate / 4:
                    self.plan.setdefault(poll, []).append(self.rng.choice(LABELS))

    def start(self, sim: SimulatorServer) -> None:
        """Add the month-long fault: buckets revised for up to 50 minutes after they close.

        ``final_after`` is an hour: a bucket still being revised is never marked final.
        """
        lag = timedelta(minutes=self.rng.randint(5, 50))
        fraction = Decimal(self.rng.randint(50, 95)) / 100
        self.added.append(("late_revision", sim.add_fault(late_revision(fraction, lag))))

    def before(self, poll: int, sim: SimulatorServer) -> None:
        """Add the faults planned for ``poll``."""
        for label in self.plan.get(poll, ()):
            self.added.append((label, sim.add_fault(self.make(label))))

    def make(self, label: str) -> Fault:
        """Return a fault of kind ``label`` with seeded random parameters."""
        rng = self.rng
        endpoint = rng.choice(ENDPOINTS)
        if label == "rate_limit_short":  # the SDK waits and retries (max_retries=2)
            return rate_limit(
                retry_after=None,
                retry_after_ms=rng.randint(20, 400),
                times=rng.randint(1, 2),
                endpoint=endpoint,
            )
        if label == "rate_limit_long":  # longer than max_retry_after: the run fails
            wait = rng.choice([30, 90, 600, 3600])
            return rate_limit(retry_after=wait, endpoint=endpoint, times=1)
        if label == "server_error_burst":  # more than 3 in a row fail the request
            return server_error(times=rng.randint(1, 4), endpoint=endpoint)
        if label == "overloaded_burst":
            return overloaded(
                times=rng.randint(1, 4), endpoint=endpoint, retry_after=rng.choice([None, 0.05])
            )
        if label == "timeout":
            return slow(TIMEOUT.total_seconds() + 0.5, times=1, endpoint=endpoint)
        if label == "connection_reset":
            return connection_reset(times=rng.randint(1, 3), endpoint=endpoint)
        if label == "cut_stream":  # the next results read(s), cut at a random byte
            return cut_stream(at=rng.random(), times=rng.randint(1, 2))
        if label == "malformed_line":
            return malformed_line(at=rng.random(), times=1)
        if label == "repeat_page":
            return repeat_page(times=rng.randint(1, 2), endpoint=rng.choice(REPORTS))
        if label == "skip_page":
            return skip_page(times=1, endpoint=rng.choice(REPORTS))
        raise AssertionError(label)

    def tally(self) -> dict[str, dict[str, int]]:
        """Return, per label, how many faults were added and how often they fired."""
        out: dict[str, dict[str, int]] = {}
        for label, fault in self.added:
            row = out.setdefault(label, {"injected": 0, "fired": 0})
            row["injected"] += 1
            row["fired"] += fault.fired
        return out


@dataclass
class Outage(Injector):
    """A scripted fault: the report endpoints refuse every request (429 with an hour's
    ``retry-after``) from ``begin`` for ``hours`` polls, all under ``late_revision``."""

    begin: int = 0
    hours: int = 24
    fault: Fault | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        self.plan = {}

    def start(self, sim: SimulatorServer) -> None:
        fault = late_revision(Decimal("0.8"), timedelta(minutes=50))
        self.added.append(("late_revision", sim.add_fault(fault)))

    def before(self, poll: int, sim: SimulatorServer) -> None:
        if poll == self.begin:
            self.fault = sim.add_fault(rate_limit(retry_after=3600, endpoint="analytics"))
            self.added.append(("report_outage", self.fault))
        elif poll == self.begin + self.hours and self.fault is not None:
            self.fault.times = self.fault.fired  # exhausted: the endpoints answer again


# --- what must hold after every poll ------------------------------------------------------

# What a batch's results give it: a batch ingested from a truncated or doubled read differs.
RESULT_COLS = (
    "workload",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "web_searches",
    "cost_usd",
    "standard_cost_usd",
    "unpriced_requests",
)


def _rows(session: Session, model: type[SQLModel], *where: Any) -> Counter[tuple[Any, ...]]:
    """Return rows as a multiset of ``(column, value)`` tuples, bookkeeping left out."""
    cols = [
        c
        for c in inspect(model).columns
        # A surrogate id says nothing; a batch's id is what it is.
        if c.name not in BOOKKEEPING and not (c.name == "id" and isinstance(c.type, Integer))
    ]
    return Counter(
        tuple((c.name, _norm(v)) for c, v in zip(cols, row, strict=True))
        for row in session.execute(select(*cols).where(*where))
    )


@dataclass
class Checker:
    """The fault-free month's end state, and the check that a poll never stores less or more.

    The end-state comparison alone can miss a wrong read that a later read heals (the usage
    source re-reads its trailing window each poll). So after every poll that went through,
    what it stored as settled must already equal the fault-free month: the hours it read that
    are final (ended ``final_after`` ago, past any revision), the previous UTC day of cost,
    and every batch whose results it ingested.
    """

    base_url: str
    # The collectors' defaults, which run_month keeps: a usage poll re-reads this window.
    trailing: timedelta = CollectSection().trailing_window
    final_after: timedelta = CollectSection().final_after
    checked: Counter[str] = field(default_factory=Counter)

    def after_poll(self, session: Session, now: datetime, ok: dict[str, bool], seed: int) -> None:
        """Compare what the poll at ``now`` settled with the fault-free month."""
        engine = db.make_engine(self.base_url)
        try:
            with Session(engine) as base:
                if ok["usage"]:
                    hour = now - self.trailing
                    while hour + STEP <= now - self.final_after:
                        what = f"usage hour {hour:%Y-%m-%d %H:00}"
                        where = col(UsageBucket.bucket_start) == hour
                        self._same(base, session, UsageBucket, seed, now, what, where)
                        self.checked["final_usage_hours"] += 1
                        hour += STEP
                day = now.replace(hour=0, minute=0, second=0, microsecond=0)
                if ok["cost"] and now - day >= self.final_after:
                    prev = day - timedelta(days=1)
                    self._same(base, session, CostBucket, seed, now, f"cost day {prev:%Y-%m-%d}",
                               col(CostBucket.day) == prev)  # fmt: skip
                    self.checked["final_cost_days"] += 1
                ingested = session.execute(
                    select(col(Batch.id)).where(col(Batch.results_ingested_at) == now)
                ).scalars()
                for bid in ingested:
                    what = f"batch {bid}"
                    for model, where in (
                        (BatchUsage, col(BatchUsage.batch_id) == bid),
                        (BatchError, col(BatchError.batch_id) == bid),
                    ):
                        self._same(base, session, model, seed, now, what, where)
                    cols = [getattr(Batch, c) for c in RESULT_COLS]
                    want = base.execute(select(*cols).where(col(Batch.id) == bid)).one()
                    have = session.execute(select(*cols).where(col(Batch.id) == bid)).one()
                    assert tuple(want) == tuple(have), (
                        f"seed {seed}: poll at {now:%Y-%m-%d %H:%M}: {what} ingested as "
                        f"{dict(zip(RESULT_COLS, have, strict=True))}, the fault-free run has "
                        f"{dict(zip(RESULT_COLS, want, strict=True))}"
                    )
                    self.checked["ingested_batches"] += 1
        finally:
            engine.dispose()

    def _same(
        self,
        base: Session,
        got: Session,
        model: type[SQLModel],
        seed: int,
        now: datetime,
        what: str,
        *where: Any,
    ) -> None:
        want, have = _rows(base, model, *where), _rows(got, model, *where)
        missing, extra = want - have, have - want
        assert not missing and not extra, (
            f"seed {seed}: the poll at {now:%Y-%m-%d %H:%M} went through but left {what} unlike "
            f"the fault-free run: {sum(missing.values())} row(s) missing or changed, "
            f"{sum(extra.values())} unexpected; {_show(missing, extra)}"
        )


# --- one run ------------------------------------------------------------------------------


@dataclass
class Run:
    """What one month of polls left behind, and how it went."""

    url: str
    final_now: datetime
    failed_runs: dict[str, int]
    errors: Counter[str]
    seconds: float
    faults: dict[str, dict[str, int]]


def scenario() -> Scenario:
    """Return the month (the short version: its first days) of the ``org`` scenario."""
    return build_scenario("org", seed=0, days=DAYS)


def run_month(
    url: str,
    injector: Injector | None,
    checker: Checker | None = None,
    names: tuple[str, ...] = ("batches", "usage", "cost"),
    first: int = 0,
    page_limit: dict[str, int] = PAGE_LIMIT,
) -> Run:
    """Poll the ``org`` scenario hourly for the month, then catch up fault-free.

    With a ``checker``, what each poll settled is compared with the fault-free month.
    ``names`` are the sources polled (each reads its own upstream endpoints); ``first`` is
    the first poll (the usage and cost sources backfill what came before it).
    """
    began = time.monotonic()
    engine = db.make_engine(url)
    sc = scenario()
    polls = int((sc.end - sc.start) / STEP) + 1
    try:
        with (
            SimulatorServer(sc, now=sc.start) as sim,
            Session(engine, expire_on_commit=False) as session,
        ):
            settings = settings_for(
                sim,
                request_timeout=TIMEOUT,
                max_retries=2,
                max_retry_after=timedelta(seconds=2),
                list_page_size=LIST_PAGE,
            )
            srcs: list[Any] = [sources.build(n, settings) for n in names]
            for src in srcs:
                if src.name != "batches":
                    src.progress = False
                    src.page_limit = page_limit[src.name]
            secrets = settings.secrets()
            if injector is not None:
                injector.start(sim)
            month_end = sc.start + STEP * (polls - 1)
            month = [(poll, sc.start + STEP * poll) for poll in range(first, polls)]
            catch_up = [(polls + i, month_end + timedelta(hours=h)) for i, h in enumerate(CATCH_UP)]
            for poll, now in [*month, *catch_up]:
                if poll == polls:
                    sim.clear_faults()  # the catch-up: upstream healthy again
                elif injector is not None:
                    injector.before(poll, sim)
                sim.set_now(now)
                ok = {src.name: collect_source(src, session, now, secrets).ok for src in srcs}
                if checker is not None:
                    ok = {"batches": True, "usage": True, "cost": True, **ok}
                    checker.after_poll(session, now, ok, injector.seed if injector else 0)
                if poll % REFRESH_EVERY == REFRESH_EVERY - 1:
                    rollups.refresh(session, now)
            final_now = catch_up[-1][1]
            rollups.refresh(session, final_now)
            failed = dict(
                session.execute(
                    select(col(CollectRun.source), func.count())
                    .where(col(CollectRun.status) == "failed")
                    .group_by(col(CollectRun.source))
                ).all()
            )
            errors: Counter[str] = Counter()
            for (error,) in session.execute(
                select(col(CollectRun.error)).where(col(CollectRun.status) == "failed")
            ):
                errors.update(_error_kinds(error or ""))
            # The last poll, fault-free, went through for every source.
            last = session.execute(
                select(col(CollectRun.source), col(CollectRun.status), col(CollectRun.error)).where(
                    col(CollectRun.started_at) == final_now
                )
            ).all()
            assert all(status == "ok" for _, status, _ in last), last
    finally:
        engine.dispose()
    return Run(
        url=url,
        final_now=final_now,
        failed_runs=failed,
        errors=errors,
        seconds=round(time.monotonic() - began, 1),
        faults=injector.tally() if injector is not None else {},
    )


def _error_kinds(error: str) -> list[str]:
    """Name what made a collector run fail (for the figures)."""
    kinds = [
        name
        for name in (
            "ReportPagingError",
            "RateLimitError",
            "InternalServerError",
            "APITimeoutError",
            "APIConnectionError",
            "OverloadedError",
            "ResultsError",
        )
        if name in error
    ]
    return kinds or ["other"]


# --- comparing end states -----------------------------------------------------------------


def _norm(value: Any) -> Any:
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    if isinstance(value, Decimal):
        return value.normalize()
    return value


def assert_same_rows(
    base_url: str,
    got_url: str,
    seed: int,
    tables: tuple[type[SQLModel], ...] = COMPARED,
    since: datetime | None = None,
) -> dict[str, int]:
    """Assert every compared table holds the same rows in both stores; return row counts.

    ``since`` leaves out report buckets before it (a run that started late backfilled less).
    """
    counts: dict[str, int] = {}
    base_engine, got_engine = db.make_engine(base_url), db.make_engine(got_url)
    try:
        with Session(base_engine) as base, Session(got_engine) as got:
            for model in tables:
                where = []
                if since is not None and model in (UsageBucket, CostBucket):
                    when = UsageBucket.bucket_start if model is UsageBucket else CostBucket.day
                    where.append(col(when) >= since)
                want, have = _rows(base, model, *where), _rows(got, model, *where)
                name = str(model.__tablename__)
                missing, extra = want - have, have - want
                assert not missing and not extra, (
                    f"seed {seed}: table {name} differs from the fault-free run: "
                    f"{sum(missing.values())} row(s) missing or changed, "
                    f"{sum(extra.values())} unexpected; {_show(missing, extra)}"
                )
                counts[name] = sum(want.values())
    finally:
        base_engine.dispose()
        got_engine.dispose()
    assert all(counts[t] for t in ("batch", "usage_bucket", "cost_bucket") if t in counts), counts
    return counts


def _show(missing: Counter[tuple[Any, ...]], extra: Counter[tuple[Any, ...]]) -> str:
    """Describe up to three differing rows: the fields that differ from the nearest row."""
    lines = []
    for row in list(missing)[:3]:
        want = dict(row)
        near = max(
            extra, key=lambda e: sum(dict(e).get(k) == v for k, v in want.items()), default=None
        )
        if near is None:
            lines.append(f"missing {want}")
            continue
        have = dict(near)
        same = {k: v for k, v in want.items() if have.get(k) == v and k in _KEYS}
        diff = {k: f"{v!r} -> {have.get(k)!r}" for k, v in want.items() if have.get(k) != v}
        lines.append(f"{same}: {diff}")
    if not missing:
        lines = [f"unexpected {dict(r)}" for r in list(extra)[:3]]
    return "; ".join(lines)


# Fields that name a row in the messages (the rest are what differs).
_KEYS = {
    "id",
    "batch_id",
    "bucket_start",
    "day",
    "model",
    "workspace_id",
    "product",
    "service_tier",
    "inference_geo",
    "token_type",
    "context_window",
}


def days_with_data(url: str) -> set[datetime]:
    """Return the UTC days a batch, usage bucket or cost line of the store falls on."""
    engine = db.make_engine(url)
    days: set[datetime] = set()
    try:
        with Session(engine) as session:
            for stmt in (
                select(col(Batch.ended_at)).where(col(Batch.ended_at).is_not(None)),
                select(col(Batch.created_at)),
                select(col(UsageBucket.bucket_start)),
                select(col(CostBucket.day)),
            ):
                for (at,) in session.execute(stmt.distinct()):
                    days.add(_norm(at).replace(hour=0, minute=0, second=0, microsecond=0))
    finally:
        engine.dispose()
    return days


def summary_json(url: str, since: datetime, until: datetime) -> dict[str, Any]:
    """Return what ``batch-monitor summary --json`` prints for the window, from the CLI."""
    out = CliRunner().invoke(
        cli.app,
        ["summary", "--json", "--since", since.isoformat(), "--until", until.isoformat()],
        env={"MONITOR_DATABASE_URL": url},
    )
    assert out.exit_code == 0, out.output
    data: dict[str, Any] = json.loads(out.stdout)
    return data


def assert_same_summaries(base_url: str, got_url: str, seed: int) -> int:
    """Assert ``summary --json`` agrees for every day with data, and for the whole span."""
    days = sorted(days_with_data(base_url) | days_with_data(got_url))
    windows = [(d, d + timedelta(days=1)) for d in days]
    windows.append((days[0], days[-1] + timedelta(days=1)))
    for since, until in windows:
        want, have = summary_json(base_url, since, until), summary_json(got_url, since, until)
        diff = {k: (want.get(k), have.get(k)) for k in want.keys() | have.keys()
                if want.get(k) != have.get(k)}  # fmt: skip
        assert not diff, f"seed {seed}: summary --json {since:%Y-%m-%d}..{until:%Y-%m-%d}: {diff}"
    return len(windows)


# --- fixtures -----------------------------------------------------------------------------


def _migrated_sqlite(path: Path) -> str:
    url = f"sqlite:///{path}"
    engine = db.make_engine(url)
    try:
        db.upgrade(engine)
    finally:
        engine.dispose()
    return url


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """The fault-free month, on SQLite: what every faulty run must end up equal to."""
    url = _migrated_sqlite(tmp_path_factory.mktemp("baseline") / "baseline.db")
    return run_month(url, None)


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Run the CLI in an empty directory: no monitor.toml."""
    monkeypatch.chdir(tmp_path)
    yield tmp_path


# --- the suite ----------------------------------------------------------------------------


def test_a_month_of_upstream_faults_ends_equal_to_the_fault_free_month(
    db_url: str, baseline: Run, in_tmp: Path, figures: Callable[..., None]
) -> None:
    dialect = "sqlite" if db_url.startswith("sqlite") else "postgresql"
    seed = FIRST_SEED if dialect == "sqlite" else FIRST_SEED + 2
    migrate_fresh(db_url)  # the CLI reads only a migrated store
    sc = scenario()
    polls = int((sc.end - sc.start) / STEP) + 1
    injector = Injector(seed, polls, RATE)
    checker = Checker(baseline.url)
    faulty = run_month(db_url, injector, checker)
    assert faulty.final_now == baseline.final_now
    # Every kind was injected and hit a request (else the month proved nothing of it).
    fired = {k: v["fired"] for k, v in faulty.faults.items()}
    silent = [k for k in (*LABELS, "late_revision") if not fired.get(k)]
    assert not silent, f"seed {seed}: faults that never fired: {silent}"
    counts = assert_same_rows(baseline.url, db_url, seed)
    windows = assert_same_summaries(baseline.url, db_url, seed)
    # The paging faults were caught (a failed run, retried), never stored as complete.
    assert faulty.errors["ReportPagingError"] >= 1, (seed, faulty.errors)
    figures(
        dialect=dialect,
        seed=seed,
        days=DAYS,
        polls=polls + len(CATCH_UP),
        faults=faulty.faults,
        faults_injected=sum(v["injected"] for v in faulty.faults.values()),
        faults_fired=sum(v["fired"] for k, v in faulty.faults.items() if k != "late_revision"),
        failed_runs=faulty.failed_runs,
        failure_causes=dict(faulty.errors),
        settled_after_each_poll_checked=dict(checker.checked),
        rows_compared=counts,
        summary_windows_compared=windows,
        seconds=faulty.seconds,
        baseline_seconds=baseline.seconds,
        baseline_failed_runs=baseline.failed_runs,
    )


def test_a_day_long_report_outage_after_a_provisional_read_still_ends_final(
    tmp_path: Path, baseline: Run, figures: Callable[..., None]
) -> None:
    """The report endpoints go down an hour after midnight, right after the day before was
    read at a provisional value, and stay down a day: longer than any re-read window. When
    they are back, that day must be read again, not left provisional for good."""
    url = _migrated_sqlite(tmp_path / "outage.db")
    sc = scenario()
    polls = int((sc.end - sc.start) / STEP) + 1
    midnight = polls - 1 - 24  # the month's last midnight but one
    outage = Outage(FIRST_SEED, polls, 0.0, begin=midnight + 1, hours=24)
    checker = Checker(baseline.url)
    # From a day before, with whole pages: the first poll backfills what came before.
    first = midnight - 24
    whole = {"usage": 1000, "cost": 1000}
    run = run_month(url, outage, checker, ("usage", "cost"), first, whole)
    backfilled = sc.start + STEP * first - CollectSection().backfill
    tables = (UsageBucket, CostBucket)
    counts = assert_same_rows(baseline.url, url, outage.seed, tables, since=backfilled)
    assert run.failed_runs == {"usage": 24, "cost": 24}, run.failed_runs
    figures(
        outage_polls=24,
        failed_runs=run.failed_runs,
        rows_compared=counts,
        settled_after_each_poll_checked=dict(checker.checked),
        seconds=run.seconds,
    )
