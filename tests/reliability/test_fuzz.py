"""Bad input, fuzzed: whatever upstream, a log, the TOML file or a person sends, nothing breaks.

Every input the monitor reads from someone else is fuzzed with hypothesis: batch results lines,
Message Batch objects, usage and cost report pages (analytics and legacy), call-log lines,
``monitor.toml`` files and the dates and durations of the command line. The promise, for each:

- no crash: a parser raises only its own "this item is bad" error, a collector never raises
  (its run is recorded), a command prints one line and exits 2, the daemon stays up;
- every bad item is reported with where it came from (file and line, batch id and results line,
  report page and item or bucket, TOML file and key);
- the good items around it are kept, exactly, and whatever is accepted fits the store (a
  value too long for its column or a count past 64 bits would wedge a source on PostgreSQL).

Upstream input goes through the real SDK: a hostile proxy sits between the collector and the
simulator and spoils one item of one answer (the simulator's own answers are the templates, so
the shapes are real), and what the collector stored is checked against the simulator's ground
truth or against a run without the spoiled item. The short version runs a few dozen cases per
input kind, derandomized so CI is stable; ``make soak`` runs thousands, randomly (hypothesis
prints the seed of a failure). The number of cases per kind is recorded with ``figures``.
"""

from __future__ import annotations

import copy
import json
import os
import re
import threading
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, select
from sqlmodel import Session, SQLModel

from monitor import bounds, db
from monitor.calllog import BadLine, HourlyTally
from monitor.collect import CollectResult, collect_source
from monitor.config import ConfigError, Settings, load_settings
from monitor.models import Batch, BatchError, BatchUsage, CallBucket, CostBucket, UsageBucket
from monitor.pricing import PriceBook
from monitor.simulator import SimulatorServer, Truth, analytics_refused, build_scenario
from monitor.sources import batches as batches_source
from monitor.sources import usage as usage_source
from monitor.sources.batches import ResultsError, ResultsTally, price_tally
from monitor.sources.call_logs import CallLogSource
from monitor.summary import build_summary
from monitor.workloads import WorkloadMap
from tests.simkit import assert_matches_truth, settings_for

SOAK = os.environ.get("MONITOR_SOAK") == "1"
CASES: Counter[str] = Counter()  # generated cases per input kind, for the figures


def fuzz(short: int, long: int) -> Any:
    """Return hypothesis settings: ``short`` derandomized cases, or ``long`` random ones (soak)."""
    return settings(
        max_examples=long if SOAK else short,
        derandomize=not SOAK,
        deadline=None,
        database=None,
        print_blob=True,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
        ],
    )


# --- odd values ---------------------------------------------------------------------------

HUGE_TEXT = "x" * 5000
MISSING: Any = type("Missing", (), {"__repr__": lambda self: "<missing>"})()

# Missing, null, huge, negative, fractional, not-a-number and odd-typed values; strings that are
# numbers or times, hostile markup and control characters.
ODD = st.one_of(
    st.just(MISSING),
    st.none(),
    st.booleans(),
    st.sampled_from([0, -1, -(10**20), 2**63, 2**64 + 7, 10**30, 10**15 + 1, 10**12 + 1]),
    st.integers(),
    st.floats(),  # NaN and the infinities too (json.dumps writes them, the SDK reads them)
    st.sampled_from(
        [
            "",
            "0",
            "12",
            "-5",
            "1e3",
            "NaN",
            "null",
            HUGE_TEXT,
            "<!channel>",
            "\x1b[2J\x00",
            "2026-11-15T10:00:00Z",
            "9999-12-31T23:59:59Z",
            "1970-01-01T00:00:00Z",
            "2026-13-45T99:00:00Z",
            "claude-sonnet-4-6",
        ]
    ),
    st.text(max_size=30),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)


def paths_of(obj: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Yield the path of ``obj`` itself and of everything inside it (two list items at most)."""
    yield prefix
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from paths_of(value, (*prefix, key))
    elif isinstance(obj, list):
        for i, value in enumerate(obj[:2]):
            yield from paths_of(value, (*prefix, i))


def set_path(obj: Any, path: tuple[Any, ...], value: Any) -> Any:
    """Return a copy of ``obj`` with ``path`` set to ``value`` (MISSING deletes it)."""
    if not path:
        return value
    out = copy.deepcopy(obj)
    node = out
    for part in path[:-1]:
        node = node[part]
    last = path[-1]
    if value is MISSING:
        del node[last]
    else:
        node[last] = value
    return out


def dumps(value: Any) -> bytes:
    """Encode JSON as a careless upstream would (NaN and Infinity included)."""
    return json.dumps(value, allow_nan=True).encode()


# --- what the store can hold ------------------------------------------------------------------


def assert_storable(table: type[SQLModel], row: dict[str, Any], where: str) -> None:
    """Check that ``row`` fits ``table``: text within its column, counts within 64 bits."""
    columns = table.__table__.columns  # type: ignore[attr-defined]
    for name, value in row.items():
        if name not in columns:
            continue
        length = getattr(columns[name].type, "length", None)
        if isinstance(value, str):
            assert length is None or len(value) <= length, (
                f"{where}: {table.__name__}.{name} is {len(value)} characters, column holds "
                f"{length}: {value[:60]!r}"
            )
        elif isinstance(value, bool) or value is None:
            continue
        elif isinstance(value, int):
            assert -(2**63) <= value < 2**63, f"{where}: {table.__name__}.{name} = {value}"
        elif isinstance(value, Decimal):
            assert value.is_finite() and abs(value) <= bounds.MAX_USD, (where, name, value)
        elif isinstance(value, datetime):
            assert value.tzinfo is not None and bounds.time_ok(value), (where, name, value)


def assert_store_holds_only_storable_rows(engine: Engine) -> None:
    """Check every row of every table (SQLite stores a too-long text; PostgreSQL refuses it)."""
    with Session(engine) as s:
        for table in SQLModel.metadata.sorted_tables:
            for row in s.execute(select(table)).mappings():
                model = _MODELS.get(table.name)
                if model is not None:
                    assert_storable(model, dict(row), f"stored {table.name}")


_MODELS: dict[str, type[SQLModel]] = {
    m.__tablename__: m  # type: ignore[misc]
    for m in (Batch, BatchUsage, BatchError, UsageBucket, CostBucket, CallBucket)
}


def clear(engine: Engine) -> None:
    """Delete every row (one database serves all the cases of a test)."""
    with engine.begin() as conn:
        for table in reversed(SQLModel.metadata.sorted_tables):
            conn.execute(table.delete())


# --- a hostile proxy in front of the simulator ----------------------------------------------


@dataclass
class Spoil:
    """One spoiled answer: which endpoint, and how its JSON body or results lines change."""

    endpoint: str  # batches.list+retrieve | batches.results | analytics.usage | ...
    apply: Callable[[str, Any], Any]  # (request path and query, body) -> body; None: untouched
    hits: int = 0
    where: list[str] = field(default_factory=list)


def endpoint_of(path: str) -> str:
    """Name the endpoint of a request path (as the simulator's fault names do)."""
    path = path.split("?", 1)[0]
    if path == "/v1/messages/batches":
        return "batches.list"
    if path.startswith("/v1/messages/batches/"):
        return "batches.results" if path.endswith("/results") else "batches.retrieve"
    return {
        "/v1/organizations/analytics/usage": "analytics.usage",
        "/v1/organizations/analytics/cost": "analytics.cost",
        "/v1/organizations/usage_report/messages": "usage_report.messages",
        "/v1/organizations/cost_report": "cost_report",
    }.get(path, "other")


class HostileProxy:
    """Forward every request to the simulator; spoil what the current ``Spoil`` asks for.

    The ``Host`` header is passed on, so the ``results_url`` the simulator writes points back
    here and results downloads are spoiled too.
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.spoil: Spoil | None = None
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out at once, no 40 ms stall

            def do_GET(self) -> None:
                proxy._forward(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """Return the proxy's base URL (what ANTHROPIC_BASE_URL is set to)."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> HostileProxy:
        """Serve in a background thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and join the thread."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def _forward(self, h: BaseHTTPRequestHandler) -> None:
        headers = {k: v for k, v in h.headers.items() if k.lower() not in ("connection",)}
        request = urllib.request.Request(self.upstream + h.path, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as resp:
                status, body, rheaders = resp.status, resp.read(), resp.headers
        except urllib.error.HTTPError as exc:
            status, body, rheaders = exc.code, exc.read(), exc.headers
        endpoint = endpoint_of(h.path)
        with self._lock:
            spoil = self.spoil
            if spoil is not None and status == 200 and endpoint in spoil.endpoint.split("+"):
                if endpoint == "batches.results":
                    changed = spoil.apply(h.path, body)
                    if changed is not None:
                        body = changed
                        spoil.hits += 1
                else:
                    changed = spoil.apply(h.path, json.loads(body))
                    if changed is not None:
                        body = changed if isinstance(changed, bytes) else dumps(changed)
                        spoil.hits += 1
                        spoil.where.append(h.path)
        h.send_response(status)
        for name, value in rheaders.items():
            if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                h.send_header(name, value)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)


def raw_get(base: str, path: str, key: str) -> Any:
    """GET a JSON body from the simulator (to take real answers as templates)."""
    request = urllib.request.Request(
        base + path,
        headers={
            "x-api-key": key,
            "anthropic-version": "2023-06-01",
            "anthropic-beta": "analytics-usage-cost-2026-08-24",
        },
    )
    with urllib.request.urlopen(request, timeout=30) as resp:
        return json.loads(resp.read())


class Upstream:
    """The simulator, the proxy in front of it, and the real answers taken as templates."""

    def __init__(
        self,
        sim: SimulatorServer,
        proxy: HostileProxy,
        objects: dict[str, dict[str, Any]],
        results: dict[str, list[bytes]],
    ) -> None:
        self.sim = sim
        self.proxy = proxy
        self.now = sim.now()
        self.truth = sim.scenario.truth(self.now)
        self.objects = objects  # batch id -> the object as listed
        self.results = results  # batch id -> its results lines (ended, not archived)

    def __repr__(self) -> str:
        return f"<Upstream {self.sim.url} via {self.proxy.url}>"

    def settings(self, **collect: Any) -> Settings:
        """Return settings that read through the proxy."""
        base = settings_for(self.sim, backfill=timedelta(days=3), **collect)
        return replace(base, anthropic_base_url=self.proxy.url)


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    """Serve the small scenario behind a hostile proxy, for the whole module."""
    sim = SimulatorServer(build_scenario("small")).start()
    proxy = HostileProxy(sim.url).start()
    try:
        objects: dict[str, dict[str, Any]] = {}
        results: dict[str, list[bytes]] = {}
        for ws in sim.scenario.workspaces:
            listed = raw_get(sim.url, "/v1/messages/batches?limit=1000", ws.api_key)
            for obj in listed["data"]:
                objects[obj["id"]] = obj
                if obj["results_url"] and obj["archived_at"] is None:
                    request = urllib.request.Request(
                        obj["results_url"],
                        headers={"x-api-key": ws.api_key, "anthropic-version": "2023-06-01"},
                    )
                    with urllib.request.urlopen(request, timeout=30) as resp:
                        results[obj["id"]] = resp.read().splitlines(keepends=True)
        yield Upstream(sim, proxy, objects, results)
    finally:
        proxy.stop()
        sim.close()


# --- 1. batch results lines, parsed ---------------------------------------------------------

RESULT_KINDS = ("succeeded", "errored", "canceled", "expired")


def sample_lines(results: dict[str, list[bytes]]) -> list[bytes]:
    """Return a few real results lines of every result type (the good lines of a case)."""
    by_kind: dict[str, list[bytes]] = {k: [] for k in RESULT_KINDS}
    for lines in results.values():
        for line in lines:
            kind = orjson.loads(line)["result"]["type"]
            if len(by_kind[kind]) < 2:
                by_kind[kind].append(line.rstrip(b"\n"))
    return [line for kind in RESULT_KINDS for line in by_kind[kind]]


@st.composite
def spoiled_line(draw: st.DrawFn, good: list[bytes]) -> bytes:
    """Return a results line spoiled in one field, or raw garbage, or a good line cut short."""
    base = draw(st.sampled_from(good))
    how = draw(st.sampled_from(["field", "field", "field", "raw"]))
    if how == "raw":
        return draw(
            st.one_of(
                st.binary(max_size=40),
                st.sampled_from([b"{", b"null", b"[]", b"42", b'"x"', b"\xff\xfe{}", b"{}"]),
                st.integers(1, max(1, len(base) - 1)).map(lambda n: base[:n]),
            )
        ).replace(b"\n", b" ")
    obj = orjson.loads(base)
    path = draw(st.sampled_from([p for p in paths_of(obj) if p]))
    value = draw(ODD)
    return dumps(set_path(obj, path, value)).replace(b"\n", b" ")


def tally_of(lines: list[bytes]) -> ResultsTally:
    """Tally ``lines`` as the collector does."""
    tally = ResultsTally()
    tally.consume(lines)
    return tally


def token_sums(tally: ResultsTally) -> tuple[int, ...]:
    """Return the tally's token sums and request count over every group."""
    sums = [0] * 7
    for acc in tally.groups.values():
        for i in range(7):
            sums[i] += acc[i]
    return tuple(sums)


# The simulator's scenario, built here without serving it: its ids and results lines are the
# ones the module's simulator serves (the scenario is fully determined by its name and seed).
SMALL = build_scenario("small")
GOOD_LINES = sample_lines({s.id: list(SMALL.result_lines(s)) for s in SMALL.batches})
SUCCEEDED, ERRORED = orjson.loads(GOOD_LINES[0]), orjson.loads(GOOD_LINES[2])


def line_with(template: dict[str, Any], path: tuple[Any, ...], value: Any) -> bytes:
    """Return a results line: ``template`` with ``path`` set to ``value``."""
    return dumps(set_path(template, path, value))


@given(bad=spoiled_line(GOOD_LINES), at=st.integers(0, len(GOOD_LINES)))
# Every short run tries these (the random cases change whenever the test's code does).
@example(bad=line_with(SUCCEEDED, ("result", "message", "model"), None), at=0)
@example(bad=line_with(SUCCEEDED, ("result", "message", "model"), 5), at=1)
@example(bad=line_with(SUCCEEDED, ("result", "message", "model"), "m" * 500), at=2)
@example(bad=line_with(SUCCEEDED, ("result", "message", "usage", "inference_geo"), 5), at=3)
@example(bad=line_with(ERRORED, ("result", "error", "error", "type"), 5), at=4)
@example(bad=line_with(ERRORED, ("result", "error", "error", "type"), "t" * 100), at=5)
@example(bad=line_with(ERRORED, ("result", "error", "error", "message"), {"a": [1]}), at=6)
@example(bad=line_with(SUCCEEDED, ("custom_id",), "c" * 300), at=7)
@fuzz(short=300, long=10_000)
def test_results_lines_fuzzed(bad: bytes, at: int, figures: Any) -> None:
    good = GOOD_LINES
    lines = [*good[:at], bad, *good[at:]]
    CASES["results_lines"] += 1
    figures(results_lines=CASES["results_lines"])
    try:
        tally = tally_of(lines)
    except ResultsError as exc:
        # Refused: the message names the line (the batch is retried, nothing half-written).
        assert re.search(rf"\bline {at + 1}\b", str(exc)), str(exc)
        return
    # Accepted: it adds exactly its own share to the good lines' sums...
    alone = tally_of([bad])
    both = token_sums(tally_of(good))
    assert token_sums(tally) == tuple(a + b for a, b in zip(both, token_sums(alone), strict=True))
    # (An empty line is not counted; the collector then refuses the file by its line count.)
    assert tally.lines == len(lines) - (bad == b"")
    # ...and everything the collector would write from it fits the store.
    per_model, _unknown = price_tally(tally, PriceBook.load(()), SMALL.end)
    for model, totals in sorted(per_model.items()):
        row = {"batch_id": "b", "model": model, "requests": totals.requests}
        row.update(asdict(totals.tokens))
        assert_storable(BatchUsage, row, "results line")
    for etype, (count, sample) in sorted(tally.errors.items()):
        assert isinstance(sample, str | None), sample
        assert_storable(BatchError, {"error_type": etype, "count": count}, "results line")
    assert_storable(Batch, {"workload": tally.workload()}, "results line")


# --- 2. batch objects and results, collected through the SDK -------------------------------


def _delete_batch(session: Session, batch_id: str) -> None:
    for model in (BatchUsage, BatchError):
        session.execute(model.__table__.delete().where(model.batch_id == batch_id))  # type: ignore[attr-defined]
    session.execute(Batch.__table__.delete().where(Batch.id == batch_id))  # type: ignore[attr-defined]
    session.commit()


def check_good_batches(engine: Engine, truth: Truth, target: str) -> None:
    """Every batch but ``target`` is stored exactly as the ground truth says.

    The spoiled batch is set aside first, also when a spoiled id stored it under another id.
    """
    with Session(engine) as s:
        for stored in list(s.execute(select(Batch.id)).scalars()):
            if stored == target or stored not in truth.batches:
                _delete_batch(s, stored)
        others = replace(truth, batches={k: v for k, v in truth.batches.items() if k != target})
        kept = set(s.execute(select(Batch.id)).scalars())
        lost = sorted(set(others.batches) - kept)
        assert not lost, f"{len(lost)} good batch(es) around the spoiled one were lost: {lost}"
        unread = sorted(
            b.id
            for b in s.execute(select(Batch)).scalars()
            if b.results_state != "ingested"
            and others.batches[b.id].results_available
            and others.batches[b.id].ended_at is not None
        )
        assert not unread, f"the results of good batch(es) were not read: {unread}"
        assert_matches_truth(s, others)


def collect_batches(engine: Engine, up: Upstream) -> CollectResult:
    """Run the batches collector once through the proxy."""
    source = batches_source.from_settings("batches", up.settings())
    assert source is not None
    with Session(engine, expire_on_commit=False) as s:
        return collect_source(source, s, up.now)


BATCH_IDS = sorted(s.id for s in SMALL.batches)
# An ended batch whose results are read (its spoiled object also spoils a results read).
ENDED = next(b.id for b in SMALL.truth(SMALL.end).batches.values() if b.results_available)
# Everything in a MessageBatch object, as the API lists it.
OBJECT_PATHS = [
    (),
    ("id",),
    ("type",),
    ("processing_status",),
    ("request_counts",),
    *(("request_counts", k) for k in ("processing", "succeeded", "errored", "canceled", "expired")),
    ("created_at",),
    ("ended_at",),
    ("expires_at",),
    ("cancel_initiated_at",),
    ("archived_at",),
    ("results_url",),
]


@given(spoil=st.tuples(st.sampled_from(BATCH_IDS), st.sampled_from(OBJECT_PATHS), ODD))
@example(spoil=(ENDED, ("request_counts",), None))
@example(spoil=(ENDED, ("id",), None))
@example(spoil=(ENDED, ("id",), [1]))
@example(spoil=(ENDED, (), "not an object"))
@fuzz(short=5, long=200)
def test_batch_objects_fuzzed(
    upstream: Upstream, db_url: str, spoil: tuple[str, tuple[Any, ...], Any], figures: Any
) -> None:
    up = upstream
    engine = db.make_engine(db_url)
    kind = f"batch_objects_{engine.dialect.name}"
    try:
        bid, path, value = spoil

        def spoiled(request: str, body: Any) -> Any:
            if body.get("data") is not None:  # a listing page
                if not any(o.get("id") == bid for o in body["data"]):
                    return None
                items = [
                    set_path(o, path, value) if o.get("id") == bid else o for o in body["data"]
                ]
                return {**body, "data": [x for x in items if x is not MISSING]}
            if body.get("id") == bid:
                changed = set_path(body, path, value)
                return b"" if changed is MISSING else changed
            return None

        clear(engine)
        up.proxy.spoil = Spoil("batches.list+batches.retrieve", spoiled)
        try:
            result = collect_batches(engine, up)
        finally:
            up.proxy.spoil = None
        CASES[kind] += 1
        figures(cases=CASES[kind])
        run, notes = result.run, result.stats.notes
        assert_store_holds_only_storable_rows(engine)
        with Session(engine) as s:
            stored = s.get(Batch, bid)
        check_good_batches(engine, up.truth, bid)
        # What names the spoiled batch in a report: its id, or the id it was given.
        names = [bid] + ([str(value)[:128]] if path == ("id",) and str(value) else [])
        if stored is None and run.status == "ok" and path != ():
            # Left out: reported as a bad item, naming the batch (or where it was listed).
            assert result.stats.bad_lines >= 1, notes
            assert any(
                "bad item" in n and (any(x in n for x in names) or "position" in n) for n in notes
            ), notes
        if run.status != "ok":
            # Only the spoiled batch's results may fail, and the error names it.
            assert run.error, run
            assert any(x in run.error for x in names) or "position" in run.error, run.error
    finally:
        engine.dispose()


@st.composite
def results_spoil(draw: st.DrawFn, up: Upstream) -> tuple[str, int, bytes]:
    """Pick an ended batch, one of its results lines and what to put there instead."""
    bid = draw(st.sampled_from(sorted(up.results)))
    lines = up.results[bid]
    at = draw(st.integers(0, len(lines) - 1))
    good = [line.rstrip(b"\n") for line in lines]
    return bid, at, draw(spoiled_line(good))


@given(data=st.data())
@fuzz(short=5, long=200)
def test_results_files_fuzzed(
    upstream: Upstream, db_url: str, data: st.DataObject, figures: Any
) -> None:
    up = upstream
    engine = db.make_engine(db_url)
    kind = f"results_files_{engine.dialect.name}"
    try:
        bid, at, line = data.draw(results_spoil(up), label="spoil")

        def spoil(request: str, body: bytes) -> bytes | None:
            if f"/batches/{bid}/results" not in request:
                return None
            lines = body.splitlines(keepends=True)
            lines[at] = line + b"\n"
            return b"".join(lines)

        clear(engine)
        up.proxy.spoil = Spoil("batches.results", spoil)
        try:
            result = collect_batches(engine, up)
            hits = up.proxy.spoil.hits
        finally:
            up.proxy.spoil = None
        CASES[kind] += 1
        figures(cases=CASES[kind])
        assert hits >= 1
        run = result.run
        assert_store_holds_only_storable_rows(engine)
        with Session(engine, expire_on_commit=False) as s:
            stored = s.get(Batch, bid)
        check_good_batches(engine, up.truth, bid)
        assert stored is not None
        if stored.results_state == "ingested":
            return  # accepted (a null where a count may be null, an unknown result type)
        # Refused: nothing of it is recorded, it waits for a retry, and the error says which
        # batch and which line.
        assert stored.results_state == "retry" and stored.cost_usd is None
        assert run.status == "failed" and run.error and bid in run.error, run.error
        assert stored.results_error is not None
        assert re.search(rf"\bline {at + 1}\b", stored.results_error) or (
            "lines but the batch has" in stored.results_error
        ), stored.results_error
    finally:
        engine.dispose()


# --- 3. usage and cost report pages, collected through the SDK -----------------------------

# (source, endpoint the proxy spoils, whether the analytics API is refused so legacy is read)
REPORTS = {
    "usage-analytics": ("usage", "analytics.usage", False),
    "cost-analytics": ("cost", "analytics.cost", False),
    "usage-legacy": ("usage", "usage_report.messages", True),
    "cost-legacy": ("cost", "cost_report", True),
}
# Dimensions the collectors read from an analytics item's group (the others are ignored).
READ_GROUP = {"product", "model", "service_tier", "workspace_id", "context_window"}
READ_GROUP |= {"inference_geo", "cost_type", "token_type"}


def report_rows(engine: Engine, source: str) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    """Return the stored report rows of ``source`` as natural key -> the other values."""
    table = UsageBucket if source == "usage" else CostBucket
    key = usage_source.USAGE_KEY if source == "usage" else usage_source.COST_KEY
    skip = {"id", "fetched_at", *key}
    out = {}
    with Session(engine) as s:
        for row in s.execute(select(table)).scalars():
            values = row.model_dump()
            out[tuple(values[k] for k in key)] = tuple(
                (k, v) for k, v in sorted(values.items()) if k not in skip
            )
    return out


def collect_report(engine: Engine, up: Upstream, source: str) -> CollectResult:
    """Run the usage or cost collector once through the proxy."""
    src = usage_source.from_settings(source, up.settings())
    assert src is not None
    with Session(engine, expire_on_commit=False) as s:
        return collect_source(src, s, up.now)


@dataclass
class Control:
    """A run without spoiling: the rows it stored and the first page of the spoiled endpoint."""

    rows: dict[tuple[Any, ...], tuple[Any, ...]]
    request: str
    page: dict[str, Any]


def control_run(engine: Engine, up: Upstream, report: str) -> Control:
    """Collect ``report`` unspoiled; keep the first non-empty page of its endpoint."""
    source, endpoint, _legacy = REPORTS[report]
    pages: list[tuple[str, Any]] = []

    def record(request: str, body: Any) -> None:
        if not pages and isinstance(body, dict) and body.get("data"):
            pages.append((request, copy.deepcopy(body)))

    clear(engine)
    up.proxy.spoil = Spoil(endpoint, record)
    try:
        result = collect_report(engine, up, source)
    finally:
        up.proxy.spoil = None
    assert result.run.status == "ok", result.run.error
    assert result.stats.bad_lines == 0 and pages, result.stats.notes
    return Control(report_rows(engine, source), pages[0][0], pages[0][1])


def page_paths(page: dict[str, Any], legacy: bool) -> list[tuple[Any, ...]]:
    """Return the places in a page worth spoiling: items, buckets and the fields read."""
    out = []
    for path in paths_of(page["data"], ("data",)):
        if len(path) < 2:
            continue
        if not legacy and len(path) >= 4 and path[2] == "group" and path[3] not in READ_GROUP:
            continue
        out.append(path)
    return out


def check_report_spoil(
    engine: Engine, up: Upstream, report: str, control: Control, path: tuple[Any, ...], value: Any
) -> None:
    """Collect ``report`` with ``path`` of its first page set to ``value``; check the promise."""
    source, endpoint, legacy = REPORTS[report]
    spoiled = set_path(control.page, path, value)

    def spoil(request: str, body: Any) -> Any:
        return spoiled if request == control.request else None

    clear(engine)
    up.proxy.spoil = Spoil(endpoint, spoil)
    try:
        result = collect_report(engine, up, source)
        hits = up.proxy.spoil.hits
    finally:
        up.proxy.spoil = None
    assert hits == 1
    run, stats = result.run, result.stats
    # An item's fault is the item's, never the run's.
    assert run.status == "ok", (path, value, run.error)
    assert_store_holds_only_storable_rows(engine)
    rows = report_rows(engine, source)
    changed = {k for k in control.rows.keys() | rows.keys() if control.rows.get(k) != rows.get(k)}
    # The spoiled unit: an analytics item, or a legacy bucket or one result in it.
    unit = path[:2] if not legacy or len(path) < 4 or path[2] != "results" else path[:4]
    start = usage_source.parse_time(control.page["data"][unit[1]]["starting_at"])
    if stats.bad_lines == 0:
        # Accepted (or simply gone): only the rows of the spoiled unit may differ, where it
        # was and, when a spoiled time or dimension moved it, where it went.
        moved_to = {k[0] for k in changed} - {start}
        assert len(moved_to) <= 1, (path, value, sorted(changed)[:5])
        if not legacy or len(unit) == 4:
            # One item: its row, plus the row it now adds to when it became another's twin.
            assert len(changed) <= 3, (path, value, sorted(changed)[:5])
        return
    # Refused: reported with its page and item (or bucket and result), the rest kept.
    place = (
        f"item {unit[1] + 1}"
        if not legacy
        else f"bucket {unit[1] + 1}" + (f" result {unit[3] + 1}" if len(unit) == 4 else "")
    )
    assert any("page 1" in n and place in n for n in stats.notes), (place, stats.notes)
    assert all(k in control.rows and k not in rows for k in changed), (path, value)
    assert all(k[0] == start for k in changed), (start, sorted(changed))


@contextmanager
def report_store(up: Upstream, db_url: str, report: str) -> Iterator[tuple[Engine, Control]]:
    """Yield an engine on ``db_url`` and the unspoiled run of ``report`` through the proxy."""
    engine = db.make_engine(db_url)
    if REPORTS[report][2]:
        up.sim.add_fault(analytics_refused())
    try:
        yield engine, control_run(engine, up, report)
    finally:
        up.sim.clear_faults()
        engine.dispose()


@pytest.mark.parametrize("report", sorted(REPORTS))
@given(data=st.data())
@fuzz(short=2, long=60)
def test_report_pages_fuzzed(
    upstream: Upstream, db_url: str, report: str, data: st.DataObject, figures: Any
) -> None:
    legacy = REPORTS[report][2]
    with report_store(upstream, db_url, report) as (engine, control):
        kind = f"report_items_{report}_{engine.dialect.name}"
        path = data.draw(st.sampled_from(page_paths(control.page, legacy)), label="path")
        value = data.draw(ODD, label="value")
        CASES[kind] += 1
        figures(cases=CASES[kind])
        check_report_spoil(engine, upstream, report, control, path, value)


# Bad items every short run tries (random cases are a different few each time the test
# changes): a text too long for its column (PostgreSQL refuses it, SQLite keeps it), a group
# or a whole item that is null, a bucket whose results are not a list, a time out of range.
KNOWN_BAD_ITEMS = {
    "usage-analytics": [(("data", 0, "group", "model"), "m" * 500), (("data", 0, "group"), None)],
    "cost-analytics": [
        (("data", 1, "group", "inference_geo"), -(10**15)),
        (("data", 0), None),
        (("data", 0, "starting_at"), 2**63),  # the SDK reads it as the year 2262
    ],
    "usage-legacy": [(("data", 1, "results"), False), (("data", 1, "starting_at"), "9999-12-31")],
    "cost-legacy": [
        (("data", 1, "results", 1), None),
        (("data", 1, "results", 0, "model"), HUGE_TEXT),
        (("data", 1), MISSING),  # a whole bucket gone
    ],
}


@pytest.mark.parametrize("report", sorted(REPORTS))
def test_known_bad_report_items(upstream: Upstream, db_url: str, report: str) -> None:
    with report_store(upstream, db_url, report) as (engine, control):
        for path, value in KNOWN_BAD_ITEMS[report]:
            check_report_spoil(engine, upstream, report, control, path, value)


# --- 4. call-log lines ----------------------------------------------------------------------

CALL = {
    "timestamp": "2026-11-15T10:15:22.123Z",
    "workload": "summarize",
    "endpoint": "/api/summarize",
    "model": "claude-sonnet-4-6",
    "input_tokens": 5123,
    "output_tokens": 812,
    "cache_read_input_tokens": 2048,
    "cache_creation_input_tokens": 300,
    "cache_creation": {"ephemeral_5m_input_tokens": 200, "ephemeral_1h_input_tokens": 100},
    "web_search_requests": 1,
    "inference_geo": "us",
    "latency_ms": 2345,
    "service_tier": "standard",
    "priority": "high",
    "status": 200,
}
# Good lines: the full shape, the smallest one, epoch seconds, another hour, zone and model.
GOOD_CALLS = [
    CALL,
    {k: CALL[k] for k in ("timestamp", "endpoint", "model", "input_tokens", "output_tokens")},
    {**CALL, "timestamp": 1763201722.5, "workload": "classify", "priority": None},
    {**CALL, "timestamp": "2026-11-15T12:59:59+02:00", "model": "claude-haiku-4-5"},
    {**CALL, "model": "claude-unknown-9", "status": 201, "latency_ms": None},
    {**CALL, "status": 429},  # a failed call: not billed, skipped
]


@st.composite
def spoiled_call(draw: st.DrawFn) -> bytes:
    """Return a call-log line spoiled in one field, or raw garbage, or cut short."""
    base = draw(st.sampled_from(GOOD_CALLS))
    how = draw(st.sampled_from(["field", "field", "field", "raw"]))
    if how == "raw":
        text = dumps(base)
        return draw(
            st.one_of(
                st.binary(max_size=40),
                st.sampled_from([b"{", b"null", b"[]", b"42", b"\xff\xfe{}", b"{}", b"   "]),
                st.integers(1, len(text) - 1).map(lambda n: text[:n]),
            )
        ).replace(b"\n", b" ")
    path = draw(st.sampled_from([p for p in paths_of(base) if p]))
    return dumps(set_path(base, path, draw(ODD))).replace(b"\n", b" ")


def feed(lines: list[bytes], first: int = 1) -> tuple[HourlyTally, list[BadLine]]:
    """Tally call-log lines as the collector does; return the tally and the bad lines."""
    tally = HourlyTally(WorkloadMap(), PriceBook.load(()))
    bad: list[BadLine] = []
    tally.feed(lines, "calls.jsonl", first, bad.append)
    return tally, bad


def bucket_sums(tally: HourlyTally) -> Counter[tuple[Any, ...]]:
    """Return calls and tokens per bucket key (what adds up line by line)."""
    out: Counter[tuple[Any, ...]] = Counter()
    for row in tally.rows():
        for name in ("calls", "input_tokens", "output_tokens", "cache_read_tokens"):
            out[(*row.key, name)] += getattr(row, name)
        out[(*row.key, "cache_write_tokens")] += row.cache_write_tokens
    return out


@given(bad=spoiled_call(), at=st.integers(0, len(GOOD_CALLS)), first=st.integers(1, 10**6))
@fuzz(short=400, long=10_000)
def test_call_log_lines_fuzzed(bad: bytes, at: int, first: int, figures: Any) -> None:
    good = [dumps(c) for c in GOOD_CALLS]
    lines = [*good[:at], bad, *good[at:]]
    CASES["call_log_lines"] += 1
    figures(call_log_lines=CASES["call_log_lines"])
    tally, reported = feed(lines, first)
    alone, alone_bad = feed([bad], first + at)
    good_tally, good_bad = feed(good)
    assert not good_bad
    if reported:
        # Refused: once, with its file, line and field; the good lines are kept, exactly.
        [one] = reported
        assert (one.path, one.line) == ("calls.jsonl", first + at), one
        assert one.field and one.message, one
        assert str(one).startswith(f"calls.jsonl:{first + at}: {one.field}: ")
        assert alone_bad == reported
        assert bucket_sums(tally) == bucket_sums(good_tally)
    else:
        # Accepted (or blank, or a failed call): it adds exactly its own share.
        assert not alone_bad
        assert bucket_sums(tally) == bucket_sums(good_tally) + bucket_sums(alone)
    for row in tally.rows():
        assert_storable(CallBucket, row.values(), "call-log line")


def test_call_logs_with_bad_lines_and_huge_counts_never_wedge_the_source(
    db_url: str, tmp_path: Path, figures: Any
) -> None:
    """The collector keeps the good lines of a hostile file, on both stores, run after run.

    Ten thousand calls of the largest count a line may carry land in one hour: their sum must
    still fit the bucket's 64-bit columns, or the chunk fails on every run (the cursor never
    moves past it) and nothing after it is ever counted.
    """
    engine = db.make_engine(db_url)
    log = tmp_path / "calls.jsonl"
    big = {**GOOD_CALLS[1], "endpoint": "/api/big", "input_tokens": bounds.MAX_COUNT}
    hostile = [
        b"{",
        dumps({**CALL, "model": HUGE_TEXT}),
        dumps({**CALL, "workload": "w" * 129}),
        dumps({**CALL, "priority": "p" * 17}),
        dumps({**CALL, "service_tier": ["batch"]}),
        dumps({**CALL, "input_tokens": 2**64}),
        dumps({**CALL, "latency_ms": float("nan")}),
        dumps({**CALL, "timestamp": "9999-12-31T23:59:59Z"}),
        b"\xff\xfe",
    ]
    good = [dumps(c) for c in GOOD_CALLS]
    try:
        log.write_bytes(b"\n".join([*good, *hostile, *good, *[dumps(big)] * 10_000]) + b"\n")
        source = CallLogSource(("calls.jsonl",), WorkloadMap(), PriceBook.load(()))
        source.patterns = (str(log),)
        with Session(engine, expire_on_commit=False) as s:
            first = collect_source(source, s, datetime(2026, 11, 16, tzinfo=UTC))
        assert first.ok, first.run.error
        assert first.stats.bad_lines == len(hostile)
        for n in range(len(hostile)):
            assert any(f"{log}:{len(good) + n + 1}: " in note for note in first.stats.notes)
        billed = sum(1 for c in GOOD_CALLS if c.get("status", 200) < 300)
        with Session(engine) as s:
            calls = sum(s.execute(select(CallBucket.calls)).scalars())
            biggest = max(s.execute(select(CallBucket.input_tokens)).scalars())
        assert calls == 2 * billed + 10_000
        assert biggest == 10_000 * bounds.MAX_COUNT
        # The next run goes on from there.
        with log.open("ab") as fh:
            fh.write(dumps(CALL) + b"\n")
        with Session(engine, expire_on_commit=False) as s:
            second = collect_source(source, s, datetime(2026, 11, 16, tzinfo=UTC))
        assert second.ok and second.run.items == 1 and second.stats.bad_lines == 0
        figures(hostile_lines=len(hostile), maximal_lines=10_000)
    finally:
        engine.dispose()


# --- 5. monitor.toml ------------------------------------------------------------------------

# A configuration that uses every section (checked to load in the test below).
BASE_CONFIG: dict[str, Any] = {
    "database_url": "sqlite:///fuzz.db",
    "grafana_url": "http://grafana.example/d/claude",
    "metrics_host": "127.0.0.1",
    "metrics_port": 9464,
    "log_level": "INFO",
    "collect": {
        "batches_interval": "5m",
        "backfill": "30d",
        "max_retries": 3,
        "call_logs": ["/var/log/app/calls-*.jsonl"],
        "list_page_size": 100,
    },
    "advisor": {"min_monthly_savings": 10.5, "window": "30d"},
    "alerting": {"default_rules": True, "interval": "1m"},
    "run": {"lease": "15s", "job_timeout": "10m"},
    "retention": {"raw": "90d", "rollups": "forever"},
    "report": {"timezone": "Europe/Paris", "weekday": "monday", "time": "09:00"},
    "metrics": {"top_n": 20},
    "slack": {"channel": "#claude-costs", "timeout": "10s", "max_attempts": 10},
    "workspaces": [
        {"id": "wrkspc_01prod", "name": "prod", "api_key_env": "FUZZ_KEY_PROD", "default": True}
    ],
    "workloads": [{"name": "content", "match": "^contentgen", "max_latency": "24h"}],
    "prices": [
        {
            "model": "claude-new-1",
            "effective_from": "2026-12-01",
            "input": 3.0,
            "output": 15.0,
            "aliases": ["claude-new-1-20261201"],
        }
    ],
    "rules": [
        {
            "name": "batch_failure_rate",
            "kind": "batch_failure_rate",
            "threshold": 0.01,
            "window": "24h",
            "severity": "critical",
            "for": "10m",
            "group_by": ["workload"],
            "labels": {"team": "data"},
        }
    ],
}
CONFIG_ENV = {"FUZZ_KEY_PROD": "fuzz-workspace-key-0001"}
# Keys to add anywhere: secrets (refused in the file), dotted and odd names, unknown ones.
ODD_KEYS = ["token", "api_key", "webhook_url", "a.b", "x y", "", "ümlaut", "unknown", "0"]


def toml_value(value: Any) -> str:
    """Write one TOML value (an inline table for a dict)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return (
            "nan"
            if value != value
            else {float("inf"): "inf", float("-inf"): "-inf"}.get(value, repr(value))
        )
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value if v is not None) + "]"
    if isinstance(value, dict):
        inner = ", ".join(
            f"{json.dumps(str(k))} = {toml_value(v)}" for k, v in value.items() if v is not None
        )
        return "{" + inner + "}"
    raise TypeError(type(value))


def to_toml(data: dict[str, Any]) -> str:
    """Write ``data`` as a TOML document: plain keys, then tables, then arrays of tables."""
    head, tables, arrays = [], [], []
    for key, value in data.items():
        name = json.dumps(str(key))
        if value is None:
            continue
        if isinstance(value, dict):
            tables.append(f"[{name}]")
            tables += [
                f"{json.dumps(str(k))} = {toml_value(v)}" for k, v in value.items() if v is not None
            ]
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for entry in value:
                arrays.append(f"[[{name}]]")
                arrays += [
                    f"{json.dumps(str(k))} = {toml_value(v)}"
                    for k, v in entry.items()
                    if v is not None
                ]
        else:
            head.append(f"{name} = {toml_value(value)}")
    return "\n".join([*head, *tables, *arrays]) + "\n"


@st.composite
def spoiled_config(draw: st.DrawFn) -> bytes:
    """Return ``BASE_CONFIG`` with one value spoiled or one odd key added, or its text mangled."""
    how = draw(st.sampled_from(["value", "value", "key", "text"]))
    data = copy.deepcopy(BASE_CONFIG)
    if how == "value":
        path = draw(st.sampled_from([p for p in paths_of(data) if p]))
        data = set_path(data, path, draw(ODD))
    elif how == "key":
        tables = [p for p in paths_of(data) if isinstance(_at(data, p), dict)]
        where = draw(st.sampled_from(tables))
        value = draw(st.one_of(ODD, st.just({"token": "x"})))
        key = draw(st.sampled_from(ODD_KEYS))
        if value is not MISSING:
            _at(data, where)[key] = value
    text = to_toml(data).encode()
    if how == "text":
        cut = draw(st.integers(0, len(text)))
        junk = draw(
            st.sampled_from(
                [b"", b"\xff", b"\xef\xbb\xbf", b"[", b"=", b'"', b"\x00", b"\n[[x]]\n"]
            )
        )
        text = (junk + text) if draw(st.booleans()) else text[:cut] + junk + text[cut:]
    return text


def _at(data: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        data = data[part]
    return data


def test_the_base_configuration_loads(tmp_path: Path) -> None:
    path = tmp_path / "monitor.toml"
    path.write_text(to_toml(BASE_CONFIG))
    settings = load_settings(CONFIG_ENV, path)
    assert settings.workspaces[0].id == "wrkspc_01prod" and settings.rules and settings.prices


@given(text=spoiled_config())
# A secret-named table holding a secret key, and a secret under a key with a dot in it: the
# check that refuses them crashed on both.
@example(text=to_toml({**BASE_CONFIG, "token": {"token": "x"}}).encode())
@example(text=to_toml({**BASE_CONFIG, "slack": {"a.b": {"token": "x"}}}).encode())
@example(text=to_toml({**BASE_CONFIG, "report": {"timezone": HUGE_TEXT}}).encode())
@fuzz(short=250, long=5_000)
def test_monitor_toml_fuzzed(
    text: bytes, tmp_path_factory: pytest.TempPathFactory, figures: Any
) -> None:
    CASES["monitor_toml"] += 1
    figures(monitor_toml=CASES["monitor_toml"])
    settings = check_config(text, tmp_path_factory.mktemp("toml") / "monitor.toml")
    if settings is None:
        return
    # Accepted: usable as it is (what `config show` prints).
    settings.masked()
    assert settings.secrets() == [CONFIG_ENV["FUZZ_KEY_PROD"]] or not settings.workspaces


def check_config(text: bytes, path: Path) -> Settings | None:
    """Load ``text`` as monitor.toml: Settings, or None after checking every problem's form."""
    path.write_bytes(text)
    try:
        return load_settings(CONFIG_ENV, path)
    except ConfigError as exc:
        # Every problem is one line naming the file (and the key), short enough to read.
        assert exc.problems
        for problem in exc.problems:
            assert problem.startswith(f"{path}"), problem
            assert "\n" not in problem and len(problem) < 600, problem[:600]
        return None


def test_every_config_value_huge_or_of_another_type(tmp_path: Path, figures: Any) -> None:
    """A sweep the random cases may miss: each value made huge, a huge number, or a list."""
    cases = 0
    for path in [p for p in paths_of(BASE_CONFIG) if p]:
        for value in (HUGE_TEXT, "9" * 5000 + "d", 10**30, [1, "a"], {"token": "x"}):
            check_config(to_toml(set_path(BASE_CONFIG, path, value)).encode(), tmp_path / "m.toml")
            cases += 1
    figures(cases=cases)


# --- 6. dates and durations on the command line ---------------------------------------------

DATE_LIKE = st.from_regex(
    r"\A[0-9]{1,6}-[0-9]{1,2}-[0-9]{1,2}(T[0-9]{1,2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,9})?)?"
    r"([+-][0-9]{2}:[0-9]{2}|Z)?)?\Z"
)
DURATION_LIKE = st.from_regex(r"\A[0-9]{0,25}[smhdy]?([0-9]{0,6}[smhd]?){0,2}\Z")
CLI_ODD = st.sampled_from(
    [
        "2026-11-15",
        "2026-02-30",
        "9999-12-31",
        "9999-12-31T23:59:59-01:00",
        "0001-01-01T00:00:00+01:00",
        "2026-11-15T10:00:00+14:00",
        "2026-11-16",  # a Monday
        "2999-12-30",
        "1999-12-27",
        "7d",
        "0s",
        "-7d",
        "1h30m",
        "9" * 5000 + "d",
        "99999999999999999999d",
        "٣d",
        "\x00",
        " ",
        "-",
        "<!channel>",
        HUGE_TEXT,
    ]
)
# (the command line up to the option, the option) for every date or duration option.
DATE_OPTIONS = [
    (["summary"], "--since"),
    (["summary"], "--until"),
    (["batches"], "--since"),
    (["batches"], "--until"),
    (["alerts"], "--at"),
    (["report", "weekly"], "--week-start"),
]
DURATION_OPTIONS = [
    (["summary"], "--window"),
    (["advise"], "--window"),
    (["silence", "add", "--match", "rule=fuzz"], "--for"),
]


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point the command line at a fresh, migrated SQLite file and nothing else."""
    url = f"sqlite:///{tmp_path / 'monitor.db'}"
    engine = db.make_engine(url)
    db.upgrade(engine)
    engine.dispose()
    for name in list(os.environ):
        if name.startswith(("MONITOR_", "ANTHROPIC_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("MONITOR_DATABASE_URL", url)
    monkeypatch.chdir(tmp_path)
    return url


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run the command line in this process; return its exit code, stdout and stderr."""
    from monitor.cli import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        main(args)
    out, err = capsys.readouterr()
    code = exited.value.code
    return (code if isinstance(code, int) else 1), out, err


@given(
    which=st.sampled_from(DATE_OPTIONS + DURATION_OPTIONS),
    value=st.one_of(CLI_ODD, DATE_LIKE, DURATION_LIKE, st.text(max_size=30)),
)
@example(which=(["report", "weekly"], "--week-start"), value="0001-01-01")
@example(which=(["report", "weekly"], "--week-start"), value="9999-12-27")
@example(which=(["summary"], "--window"), value="9" * 5000 + "d")
@example(which=(["summary"], "--since"), value=HUGE_TEXT)
@example(which=(["silence", "add", "--match", "rule=fuzz"], "--for"), value=HUGE_TEXT)
@fuzz(short=80, long=1_000)
def test_cli_dates_and_durations_fuzzed(
    cli_env: str,
    capsys: pytest.CaptureFixture[str],
    which: tuple[list[str], str],
    value: str,
    figures: Any,
) -> None:
    prefix, option = which
    CASES["cli_values"] += 1
    figures(cli_values=CASES["cli_values"])
    code, _out, err = run_cli([*prefix, f"{option}={value}"], capsys)
    # It works, or it is a usage error: one line, exit 2, naming the option; never a traceback.
    assert "Traceback" not in err, err
    if code == 0:
        return
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, (code, err[:2000])
    assert option in lines[0], lines[0]


@given(
    value=st.one_of(CLI_ODD, DATE_LIKE, DURATION_LIKE, st.text(max_size=30)),
    option=st.sampled_from(["--since", "--until", "--window", "--for", "--at"]),
)
@example(value="9" * 5000 + "d", option="--for")
@example(value=HUGE_TEXT, option="--since")
@example(value="٣d", option="--window")
@fuzz(short=300, long=10_000)
def test_cli_parsers_fuzzed(value: str, option: str, figures: Any) -> None:
    from monitor.cli import MAX_DATE, MIN_DATE, UsageError, parse_span, parse_when

    CASES["cli_parser_values"] += 1
    figures(cli_parser_values=CASES["cli_parser_values"])
    for parse in (parse_when, parse_span):
        try:
            got = parse(value, option)
        except UsageError as exc:
            assert str(exc).startswith(option) and "\n" not in str(exc), str(exc)[:300]
            assert len(str(exc)) < 600, str(exc)[:300]
            continue
        if isinstance(got, datetime):
            assert got.tzinfo is not None and MIN_DATE <= got <= MAX_DATE
        else:
            assert timedelta(0) < got <= timedelta(days=36500)
            assert value.isascii(), value  # digits of another script are not a duration


# --- 7. the daemon, fed all of it at once ---------------------------------------------------

# Junk items added to every answer (the real items stay, so the ground truth still holds).
JUNK_BATCHES: list[Any] = [
    None,
    "msgbatch_not_an_object",
    {"id": None, "processing_status": "ended"},
    {"id": "msgbatch_hostile/../../x", "type": "message_batch"},
    {"id": "msgbatch_junk_counts", "processing_status": "ended", "request_counts": "lots",
     "created_at": "2026-11-15T00:00:00Z"},
    {"id": "msgbatch_junk_time", "processing_status": "in_progress", "created_at": 10**30,
     "request_counts": {"processing": 1}},
]  # fmt: skip
JUNK_REPORT_ITEMS: list[Any] = [
    None,
    {"starting_at": "9999-12-31T00:00:00Z", "ending_at": "9999-12-31T01:00:00Z"},
    {"starting_at": "2026-11-16T00:00:00Z", "group": None, "usage": None, "cost": None},
    {"starting_at": "2026-11-16T00:00:00Z", "ending_at": "2026-11-16T01:00:00Z",
     "group": {"model": "m" * 500}, "usage": {"output_tokens": -1}, "cost": {"amount": "NaN"}},
]  # fmt: skip


def add_junk(request: str, body: Any) -> Any:
    """Append junk items to every listing and report page (results files are left alone)."""
    if not isinstance(body, dict) or not isinstance(body.get("data"), list):
        return None
    junk = JUNK_BATCHES if "/messages/batches" in request else JUNK_REPORT_ITEMS
    return {**body, "data": [*body["data"], *junk]}


def test_the_daemon_stays_up_on_junk_from_every_side(tmp_path: Path, figures: Any) -> None:
    """``batch-monitor run`` against junk in every listing, report page and call log.

    It never exits or stops answering, logs each bad item with where it came from, and what it
    stored of the good items equals the simulator's ground truth.
    """
    from monitor import clock
    from monitor.models import JobRun
    from tests.daemonkit import base_env, http_get, running, wait_until, write_config

    scenario = build_scenario("small")
    url = f"sqlite:///{tmp_path / 'monitor.db'}"
    engine = db.make_engine(url)
    db.upgrade(engine)
    calls = tmp_path / "calls.jsonl"
    calls.write_bytes(
        b"\n".join([dumps(GOOD_CALLS[0]), b"{", b"\xff", dumps({**CALL, "input_tokens": -5})])
        + b"\n"
    )
    with SimulatorServer(scenario) as sim:
        proxy = HostileProxy(sim.url).start()
        proxy.spoil = Spoil(
            "batches.list+analytics.usage+analytics.cost+usage_report.messages+cost_report",
            add_junk,
        )
        try:
            env = base_env(sim, None, url, tmp_path / "monitor.toml")
            env["ANTHROPIC_BASE_URL"] = proxy.url
            # Business time starts at the simulator's (frozen) now and runs at wall speed.
            env["MONITOR_CLOCK"] = clock.SimulatedClock(sim.now(), clock.epoch(), 1.0).spec()
            config = f"""
[collect]
batches_interval = "2s"
usage_interval = "2s"
logs_interval = "1s"
backfill = "3d"
call_logs = ["{calls}"]
"""
            env.update(write_config(tmp_path / "monitor.toml", sim, config))
            with running(env, tmp_path / "run.log") as proc:
                wait_until(lambda: http_get(proc.url("/healthz"))[0] == 200, 60, "/healthz")
                jobs = ("collect_batches", "collect_usage", "collect_cost", "collect_logs")

                def rounds() -> int:
                    with Session(engine) as s:
                        ran = Counter(
                            s.execute(select(JobRun.job).where(JobRun.outcome == "ok")).scalars()
                        )
                    return min(ran[j] for j in jobs)

                wait_until(lambda: rounds() >= 3, 120, "three good rounds of every collector")
                assert proc.proc.poll() is None, proc.log()[-3000:]
                assert http_get(proc.url("/healthz"))[0] == 200
                assert http_get(proc.url("/metrics"))[0] == 200
                code, _took = proc.terminate(timeout=30)
                log = proc.log()
            assert code == 0, log[-3000:]
        finally:
            proxy.stop()
        frozen = sim.now()
        start = scenario.start - timedelta(days=1)
        truth = scenario.truth(frozen)
        with Session(engine) as s:
            assert_matches_truth(s, truth)
            spend = build_summary(s, start, frozen, frozen).spend
            stored_calls = sum(s.execute(select(CallBucket.calls)).scalars())
        realtime = truth.usage(start, frozen, product="messages_api")
        assert spend.realtime_cost_usd is not None
        assert round(spend.realtime_cost_usd, 2) == round(realtime.cost_usd, 2)
        assert spend.realtime_requests == realtime.requests
        assert stored_calls == 1
        # Each kind of bad item is in the log with where it came from.
        for where in (
            "batch at listing page 1 position",
            "batch msgbatch_junk_counts: request_counts",
            "analytics usage us page 1 item",
            "analytics cost page 1 item",
            f"{calls}:2: json",
            f"{calls}:4: input_tokens",
        ):
            assert where in log, where
        assert "Traceback" not in log
        figures(junk_items=len(JUNK_BATCHES) + len(JUNK_REPORT_ITEMS) + 3)
    engine.dispose()
