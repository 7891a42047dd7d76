"""Database faults: ``batch-monitor run`` reports them, waits, recovers by itself, loses nothing.

Each test runs the daemon as a subprocess on the simulator's accelerated clock and breaks its
database underneath it:

- PostgreSQL (a cluster of the test's own, ``initdb``/``pg_ctl`` on a free port): restarted
  (``-m immediate``, connections cut without a goodbye) while the daemon works, then stopped
  for a while ("unreachable": 60 s under ``make soak``, 10 s in the short version).
- SQLite: another process holds ``BEGIN EXCLUSIVE`` for four times the busy timeout (the
  default 30 s one under soak, ``?timeout=2`` in the short version); then the disk the file
  lives on fills up (a small tmpfs, filled by a file of the test; where mounting is not
  allowed, writes fail with an injected ``disk I/O error`` instead: the figures say which).

Each time the daemon must report it (a log line, ``/readyz`` 503 naming the ``database``
check, ``batch_monitor_database_up`` 0 and ``batch_monitor_database_errors_total{kind}`` on
a ``/metrics`` that still answers), keep running (same pid), recover on its own once the
database is back (``database_up`` 1, ``/readyz`` 200, jobs succeed again), and lose nothing:
every row recorded before the fault is still there, the store equals the simulator's truth to
the cent at the end, and every failed job run it logged is counted in
``batch_monitor_job_runs_total{outcome="failed"}``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, col

from monitor import __version__, db
from monitor.models import Batch, CostBucket, JobRun, Tally, UsageBucket
from monitor.simulator import Scenario, SimulatorServer, build_scenario
from monitor.summary import build_summary
from tests.daemonkit import (
    RunProcess,
    base_env,
    free_port,
    http_get,
    running,
    wait_until,
    write_config,
)
from tests.simkit import assert_matches_truth

CONFIG = """
[collect]
batches_interval = "30m"
usage_interval = "1h"
backfill = "1d"
final_after = "1h"

[alerting]
default_rules = false
interval = "10m"
delivery_interval = "5m"

[run]
lease = "3s"
shutdown_timeout = "10s"
rollup_interval = "30m"
"""
REQUIRE_PG = os.environ.get("MONITOR_REQUIRE_POSTGRES") == "1"


# --- reading the daemon -------------------------------------------------------------------


def _metrics(proc: RunProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Scrape ``/metrics``: ``{(sample name, sorted labels): value}`` (empty if no answer)."""
    status, body = http_get(proc.url("/metrics"), timeout=10)
    if status != 200:
        return {}
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _metric(scraped: dict[Any, float], name: str, **labels: str) -> float | None:
    return scraped.get((name, tuple(sorted(labels.items()))))


def _ready(proc: RunProcess) -> tuple[int, dict[str, Any]]:
    status, body = http_get(proc.url("/readyz"), timeout=10)
    try:
        return status, json.loads(body) if body else {}
    except ValueError:
        return status, {}


def _records(proc: RunProcess) -> list[dict[str, Any]]:
    out = []
    for line in proc.log().splitlines():
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
    return out


def _db_log(proc: RunProcess, prefix: str) -> list[dict[str, Any]]:
    """Return the daemon's ``monitor.db`` log records whose message starts with ``prefix``."""
    return [
        r
        for r in _records(proc)
        if r.get("logger") == "monitor.db" and str(r.get("msg", "")).startswith(prefix)
    ]


class Watch:
    """What a test saw of the daemon during one fault, for the checks and the figures."""

    def __init__(self, proc: RunProcess, kind: str) -> None:
        self.proc = proc
        self.kind = kind
        self.started = time.monotonic()
        self.before = _metric(_metrics(proc), "batch_monitor_database_errors_total", kind=kind)
        self.logged = len(self._log_lines())
        self.detected_after: float | None = None
        self.readyz_detail: str | None = None
        self.missing: list[str] = []

    def reported(self) -> bool:
        """Say whether the daemon reports the fault everywhere it should (and note when)."""
        assert self.proc.proc.poll() is None, "the daemon died:\n" + self.proc.log()[-3000:]
        status, ready = _ready(self.proc)
        scraped = _metrics(self.proc)
        checks = {c["name"]: c for c in ready.get("checks", [])}
        database = checks.get("database", {})
        errors = _metric(scraped, "batch_monitor_database_errors_total", kind=self.kind) or 0
        counted = f"batch_monitor_database_errors_total{{kind={self.kind}}} up"
        logged = f"a 'database {db.FAULT_TEXT[self.kind]}' log line"
        self.missing = [
            what
            for what, ok in (
                ("/readyz 503", status == 503),
                ("/readyz naming the database check", "database" in ready.get("failed", [])),
                ("batch_monitor_database_up 0", _metric(scraped, "batch_monitor_database_up") == 0),
                (counted, errors > (self.before or 0)),
                (logged, len(self._log_lines()) > self.logged),
            )
            if not ok
        ]
        seen = not self.missing
        if seen and self.detected_after is None:
            self.detected_after = time.monotonic() - self.started
            self.readyz_detail = str(database.get("detail"))
        return seen

    def wait_reported(self, timeout: float) -> None:
        """Wait until the fault is reported everywhere; fail naming what is missing."""
        try:
            wait_until(self.reported, timeout, f"the daemon to report the database {self.kind}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; still missing: {', '.join(self.missing)}") from None

    def _log_lines(self) -> list[dict[str, Any]]:
        return _db_log(self.proc, f"database {db.FAULT_TEXT[self.kind]}:")

    def hold(self, seconds: float) -> None:
        """Keep the fault for ``seconds`` (wall), checking the daemon stays up and answers."""
        deadline = self.started + seconds
        while time.monotonic() < deadline:
            assert self.proc.proc.poll() is None, "the daemon died:\n" + self.proc.log()[-3000:]
            assert http_get(self.proc.url("/healthz"))[0] == 200, "/healthz stopped answering"
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))


def _recovered(proc: RunProcess, since: datetime, engine: Engine) -> bool:
    """Say whether the daemon is fully back: writes work, it leads, a collection succeeded."""
    assert proc.proc.poll() is None, "the daemon died:\n" + proc.log()[-3000:]
    scraped = _metrics(proc)
    if _metric(scraped, "batch_monitor_database_up") != 1:
        return False
    if _metric(scraped, "batch_monitor_leader") != 1:
        return False
    with Session(engine) as s:
        ok = s.execute(
            select(func.count())
            .select_from(JobRun)
            .where(
                col(JobRun.job) == "collect_batches",
                col(JobRun.outcome) == "ok",
                col(JobRun.started_at) > since,
            )
        ).scalar_one()
    return ok > 0 and _ready(proc)[0] == 200


# --- the store ----------------------------------------------------------------------------


def _snapshot(engine: Engine) -> dict[str, Any]:
    """Return what is recorded now: batches, usage and cost buckets, job runs."""
    with Session(engine) as s:
        batches = {
            b.id: (b.processing_status, b.results_state, b.cost_usd, b.requests)
            for b in s.execute(select(Batch)).scalars()
        }
        usage = {
            (u.bucket_start, u.width, u.source, u.product, u.model, u.service_tier,
             u.workspace_id, u.api_key_id, u.context_window, u.inference_geo):
            (u.final, u.requests, u.input_tokens, u.output_tokens, u.cost_usd)
            for u in s.execute(select(UsageBucket)).scalars()
        }  # fmt: skip
        cost = {
            (c.day, c.source, c.product, c.workspace_id, c.description, c.model,
             c.service_tier, c.cost_type, c.token_type, c.context_window, c.inference_geo)
            for c in s.execute(select(CostBucket)).scalars()
        }  # fmt: skip
        runs = s.execute(select(func.count()).select_from(JobRun)).scalar_one()
    return {"batches": batches, "usage": usage, "cost": cost, "job_runs": runs}


def _assert_kept(before: dict[str, Any], after: dict[str, Any], what: str) -> None:
    """Every row recorded before ``what`` is still there; what was final has not changed."""
    lost = set(before["batches"]) - set(after["batches"])
    assert not lost, f"{what}: batches recorded before are gone: {sorted(lost)[:5]}"
    for bid, (status, results, cost, requests) in before["batches"].items():
        if results == "ingested":
            assert after["batches"][bid] == (status, results, cost, requests), (what, bid)
    lost_usage = set(before["usage"]) - set(after["usage"])
    assert not lost_usage, f"{what}: {len(lost_usage)} usage bucket(s) recorded before are gone"
    for key, row in before["usage"].items():
        if row[0]:  # final: it cannot change any more
            assert after["usage"][key] == row, (what, key)
    assert before["cost"] <= after["cost"], f"{what}: cost buckets recorded before are gone"
    assert after["job_runs"] >= before["job_runs"], f"{what}: job_run rows are gone"


def _last_start(engine: Engine, job: str) -> datetime | None:
    with Session(engine) as s:
        return s.execute(select(func.max(JobRun.started_at)).where(JobRun.job == job)).scalar()


def _settled(engine: Engine, after: datetime) -> bool:
    """Say whether every collection ran (and succeeded) once after ``after`` plus an hour."""
    with Session(engine) as s:
        for job in ("collect_batches", "collect_usage", "collect_cost"):
            ok = s.execute(
                select(func.max(JobRun.started_at)).where(
                    JobRun.job == job,
                    JobRun.outcome == "ok",
                    col(JobRun.started_at) > after + timedelta(hours=1),
                )
            ).scalar()
            if ok is None:
                return False
    return True


def _sim_start(scenario: Scenario) -> datetime:
    """Return where the simulated clock starts: a day in, past the first batch archival.

    The ``org`` scenario creates a batch every hour. Its history holds two batches that the
    API archives during the week (29 days after they were created); the daemon does not
    re-read an ingested batch to see it archived (a fault-free run stores the same), so the
    run starts after the first archival and is frozen before the second (checked below).
    """
    return scenario.start + timedelta(hours=22)


def _check_truth(engine: Engine, sim: SimulatorServer, frozen: datetime) -> dict[str, Any]:
    """The store equals the scenario's truth at ``frozen``, to the cent; return the figures."""
    truth = sim.scenario.truth(frozen)
    began = _sim_start(sim.scenario)
    archived = [b for b in truth.batches.values() if b.archived_at and began < b.archived_at]
    assert not archived, f"the run went past an archival ({archived[0].archived_at}): shorten it"
    # Whole hours from the start of the run (the backfill reaches a day back from there; the
    # report's bucket of the hour the simulator froze in is still partial).
    until = frozen.replace(minute=0, second=0, microsecond=0)
    with Session(engine) as session:
        assert_matches_truth(session, truth)
        s = build_summary(session, began, until, frozen)
        realtime = truth.usage(began, until, product="messages_api")
        batch = truth.batch_totals(began, until)
        assert s.spend.realtime_cost_usd is not None and s.spend.batch_cost_usd is not None
        assert round(s.spend.realtime_cost_usd, 2) == round(realtime.cost_usd, 2)
        assert round(s.spend.batch_cost_usd, 2) == round(batch.cost_usd, 2)
        assert s.spend.realtime_requests == realtime.requests
    return {
        "batches_checked": len(truth.batches),
        "realtime_cost_usd": str(round(realtime.cost_usd, 2)),
        "batch_cost_usd": str(round(batch.cost_usd, 2)),
    }


def _failed_runs_counted(engine: Engine, proc: RunProcess) -> int:
    """Every failed job run the daemon logged is counted once in the job_runs tally."""
    logged = sum(1 for r in _records(proc) if r.get("job") and r.get("outcome") == "failed")
    with Session(engine) as s:
        counted = sum(
            v
            for k, v in s.execute(
                select(col(Tally.key), col(Tally.value)).where(col(Tally.metric) == "job_runs")
            )
            if k.endswith("|failed")
        )
    assert counted == logged, (
        f"the daemon logged {logged} failed job run(s) but batch_monitor_job_runs_total counts "
        f"{counted}: runs that failed while the database was down were not counted"
    )
    return logged


def _finish(
    engine: Engine, sim: SimulatorServer, proc: RunProcess, timeout: float
) -> dict[str, Any]:
    """Freeze the simulator, let the daemon catch up, stop it, check the store; return figures."""
    frozen = sim.freeze()
    wait_until(lambda: _settled(engine, frozen), timeout, "a collection round after the freeze")
    code, _took = proc.terminate(timeout=30)
    assert code == 0, proc.log()[-3000:]
    figures = _check_truth(engine, sim, frozen)
    figures["failed_job_runs_logged_and_counted"] = _failed_runs_counted(engine, proc)
    return figures


# --- PostgreSQL, a cluster of our own -----------------------------------------------------


class PgCluster:
    """A throwaway PostgreSQL cluster (``initdb``, ``pg_ctl``) on a free port of 127.0.0.1.

    PostgreSQL refuses to run as root, so under root every command runs as ``postgres`` in a
    directory it owns.
    """

    def __init__(self) -> None:
        found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=_version_key)
        path_ctl = shutil.which("pg_ctl")
        if found:
            self.bindir = found[-1].parent
        elif path_ctl:
            self.bindir = Path(path_ctl).parent
        else:
            raise RuntimeError("no PostgreSQL server binaries (pg_ctl, initdb) on this machine")
        self.as_root = os.geteuid() == 0
        if self.as_root and not shutil.which("runuser"):
            raise RuntimeError("running as root and runuser is missing")
        self.root = Path(tempfile.mkdtemp(prefix="bm-pg-"))
        if self.as_root:
            shutil.chown(self.root, "postgres")
        self.data = self.root / "data"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self.running = False

    def _run(self, *args: str, timeout: float = 120) -> None:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self.as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=self.root)
        if done.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({done.returncode}): {done.stderr[-2000:]}")

    def init(self) -> None:
        """Create the cluster (trust authentication, no fsync: a test's data)."""
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-N", "-E",
                  "UTF8")  # fmt: skip

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        opts = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c full_page_writes=off"
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-w",
                  "-t", "60", "-o", opts, "start")  # fmt: skip
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``immediate`` cuts every connection, as a crash would)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")
        self.running = False

    def close(self) -> None:
        """Stop the server if it runs and remove the cluster (for finally blocks)."""
        try:
            if self.running:
                self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(p) for p in path.parent.parent.name.split(".") if p.isdigit())


@contextlib.contextmanager
def pg_cluster() -> Iterator[PgCluster]:
    """Start a PostgreSQL cluster of our own; skip (fail under CI) when that is not possible."""
    try:
        cluster = PgCluster()
    except (RuntimeError, OSError, KeyError) as exc:
        _pg_unavailable(str(exc))
    try:
        try:
            cluster.init()
            cluster.start()
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
            _pg_unavailable(f"cannot start a PostgreSQL cluster: {exc}")
        yield cluster
    finally:
        cluster.close()


def _pg_unavailable(message: str) -> Any:
    if REQUIRE_PG:
        pytest.fail(message + "; MONITOR_REQUIRE_POSTGRES=1 requires it", pytrace=False)
    pytest.skip("!!! SKIPPING THE POSTGRESQL FAULT SUITE: " + message)


def test_postgresql_restarted_and_unreachable(
    tmp_path: Path, soak: bool, figures: Callable[..., None]
) -> None:
    restarts = 4 if soak else 1
    restart_pause = 5.0 if soak else 2.0  # seconds the server is down during a restart
    outage = 60.0 if soak else 10.0  # "unreachable for a minute" (shortened outside soak)
    speed = 900.0 if soak else 3600.0
    scenario = build_scenario("org")
    with pg_cluster() as pg:
        engine = db.make_engine(pg.url)
        db.upgrade(engine)
        with SimulatorServer(scenario, speed=speed, now=_sim_start(scenario)) as sim:
            env = base_env(sim, None, pg.url, tmp_path / "monitor.toml")
            env.update(write_config(tmp_path / "monitor.toml", sim, CONFIG))
            try:
                with running(env, tmp_path / "run.log") as proc:
                    wait_until(lambda: _ready(proc)[0] == 200, 90, "/readyz 200 at start-up")
                    pid = proc.pid
                    got: dict[str, Any] = {"speed": speed, "restarts": restarts}

                    # 1. Restarts: every connection cut at once, the server back after a pause.
                    recover_s = []
                    for i in range(restarts):
                        before = _snapshot(engine)
                        since = sim.now()
                        errors = _metric(
                            _metrics(proc), "batch_monitor_database_errors_total",
                            kind="unreachable",
                        ) or 0  # fmt: skip
                        pg.stop("immediate")
                        stopped = time.monotonic()
                        time.sleep(restart_pause)
                        pg.start()
                        wait_until(
                            functools.partial(_recovered, proc, since, engine), 90,
                            f"the daemon to recover from restart {i + 1}", step=0.25,
                        )  # fmt: skip
                        recover_s.append(round(time.monotonic() - stopped - restart_pause, 1))
                        after = _metric(
                            _metrics(proc), "batch_monitor_database_errors_total",
                            kind="unreachable",
                        ) or 0  # fmt: skip
                        assert after > errors, "the restart was not counted as a database fault"
                        _assert_kept(before, _snapshot(engine), f"restart {i + 1}")
                    back = _db_log(proc, "database usable again")
                    assert len(back) >= restarts, [r["msg"] for r in back]
                    got["restart_recovered_after_s"] = recover_s

                    # 2. Unreachable: the server stopped for `outage` seconds.
                    before = _snapshot(engine)
                    since = sim.now()
                    watch = Watch(proc, "unreachable")
                    pg.stop("fast")
                    watch.wait_reported(30)
                    assert watch.readyz_detail and "cannot reach the database" in (
                        watch.readyz_detail
                    ), watch.readyz_detail
                    # Not leading while it cannot renew its lease: no job starts.
                    wait_until(
                        lambda: _metric(_metrics(proc), "batch_monitor_leader") == 0,
                        15, "the daemon to stop leading",
                    )  # fmt: skip
                    watch.hold(outage)
                    pg.start()
                    restarted = time.monotonic()
                    wait_until(
                        lambda: _recovered(proc, since, engine), 120,
                        "the daemon to recover from the outage", step=0.25,
                    )  # fmt: skip
                    _assert_kept(before, _snapshot(engine), "the outage")
                    assert proc.pid == pid and proc.proc.poll() is None
                    errors = _metric(
                        _metrics(proc), "batch_monitor_database_errors_total", kind="unreachable"
                    )
                    got.update(
                        outage_s=outage,
                        outage_simulated_h=round(outage * speed / 3600, 1),
                        outage_detected_after_s=round(watch.detected_after or 0, 1),
                        outage_recovered_after_s=round(time.monotonic() - restarted, 1),
                        unreachable_faults_counted=errors,
                        batches_before_outage=len(before["batches"]),
                    )
                    got.update(_finish(engine, sim, proc, 120))
                figures(**got)
            finally:
                engine.dispose()


# --- SQLite: locked by another process, then a full disk ----------------------------------

_HOLDER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], timeout=120, isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("ROLLBACK")
print("released", flush=True)
"""

# Imported by the daemon (PYTHONPATH) where no tmpfs can be mounted: while the trigger file
# exists, every write fails as a dying disk's would.
_INJECTOR = """
import os
import sqlite3
import sqlite3.dbapi2

_TRIGGER = os.environ.get("BM_TEST_IO_ERROR_TRIGGER")
if _TRIGGER:
    _connect = sqlite3.connect

    def _failing():
        return os.path.exists(_TRIGGER)

    def _writes(sql):
        return str(sql).lstrip()[:6].upper() in ("INSERT", "UPDATE", "DELETE")

    class _Cursor(sqlite3.Cursor):
        def execute(self, sql, *args):
            if _failing() and _writes(sql):
                raise sqlite3.OperationalError("disk I/O error")
            return super().execute(sql, *args)

        def executemany(self, sql, *args):
            if _failing() and _writes(sql):
                raise sqlite3.OperationalError("disk I/O error")
            return super().executemany(sql, *args)

    class _Connection(sqlite3.Connection):
        def cursor(self, factory=_Cursor):
            return super().cursor(factory)

        def commit(self):
            if self.in_transaction and _failing():
                raise sqlite3.OperationalError("disk I/O error")
            return super().commit()

    def connect(*args, **kwargs):
        kwargs.setdefault("factory", _Connection)
        return _connect(*args, **kwargs)

    # SQLAlchemy connects through sqlite3.dbapi2, which has its own name for connect.
    sqlite3.connect = sqlite3.dbapi2.connect = connect
"""


class DiskFault:
    """Fill the disk of the SQLite file (a tmpfs of our own), or inject ``disk I/O error``."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.method = "injected disk I/O error"
        self.kind = "io_error"
        self.mount: Path | None = None
        self.reason = ""
        self.filler: Path | None = None
        self.trigger = tmp_path / "io-error.on"
        self.inject_dir = tmp_path / "inject"
        if os.environ.get("MONITOR_TEST_DISK_FAULT", "tmpfs") == "tmpfs":
            self._try_mount()

    def _try_mount(self) -> None:
        mount = self.tmp_path / "small-disk"
        mount.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64m,mode=0700", "tmpfs", str(mount)],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        if done.returncode == 0:
            self.mount, self.method, self.kind = mount, "tmpfs filled up (64 MB)", "disk_full"
        else:
            self.reason = (done.stderr or "").strip()[:200]

    @property
    def directory(self) -> Path:
        """Return where the database file goes."""
        return self.mount or self.tmp_path

    def env(self) -> dict[str, str]:
        """Return what the daemon's environment needs for the injection (nothing on tmpfs)."""
        if self.mount is not None:
            return {}
        self.inject_dir.mkdir(exist_ok=True)
        (self.inject_dir / "sitecustomize.py").write_text(_INJECTOR)
        path = os.pathsep.join(p for p in (str(self.inject_dir), os.environ.get("PYTHONPATH")) if p)
        return {"PYTHONPATH": path, "BM_TEST_IO_ERROR_TRIGGER": str(self.trigger)}

    def start(self) -> None:
        """Make every write fail: fill the disk to its last byte, or switch the injection on."""
        if self.mount is None:
            self.trigger.touch()
            return
        self.filler = self.mount / "filler"
        chunk = b"\0" * (1 << 20)
        with open(self.filler, "wb", buffering=0) as f:  # unbuffered: nothing left to flush
            for size in (len(chunk), 4096):  # megabytes, then the last one 4 KB at a time
                with contextlib.suppress(OSError):
                    while f.write(chunk[:size]):
                        pass

    def stop(self) -> None:
        """Free the disk again (or switch the injection off)."""
        if self.filler is not None:
            self.filler.unlink(missing_ok=True)
            self.filler = None
        self.trigger.unlink(missing_ok=True)

    def close(self) -> None:
        """Undo everything (for finally blocks): free the disk and unmount it."""
        self.stop()
        if self.mount is not None:
            subprocess.run(["umount", "-l", str(self.mount)], capture_output=True, timeout=30)
            self.mount = None


def test_sqlite_locked_by_another_process_then_a_full_disk(
    tmp_path: Path, soak: bool, figures: Callable[..., None]
) -> None:
    busy = 30.0 if soak else 2.0  # the busy timeout (30 s is the default)
    hold = 4 * busy  # the lock is held this long: well past the busy timeout
    full_for = 60.0 if soak else 8.0
    speed = 900.0 if soak else 3600.0
    scenario = build_scenario("org")
    disk = DiskFault(tmp_path)
    try:
        path = disk.directory / "monitor.db"
        url = f"sqlite:///{path}" + ("" if soak else f"?timeout={busy:g}")
        engine = db.make_engine(url)
        db.upgrade(engine)
        with SimulatorServer(scenario, speed=speed, now=_sim_start(scenario)) as sim:
            env = base_env(sim, None, url, tmp_path / "monitor.toml")
            env.update(write_config(tmp_path / "monitor.toml", sim, CONFIG))
            env.update(disk.env())
            try:
                with running(env, tmp_path / "run.log") as proc:
                    wait_until(lambda: _ready(proc)[0] == 200, 90, "/readyz 200 at start-up")
                    pid = proc.pid
                    got: dict[str, Any] = {
                        "speed": speed,
                        "busy_timeout_s": busy,
                        "disk_fault": disk.method,
                    }
                    if disk.reason:
                        got["tmpfs_refused"] = disk.reason

                    # 1. Another process holds the write lock for four busy timeouts.
                    before = _snapshot(engine)
                    since = sim.now()
                    watch = Watch(proc, "locked")
                    holder = subprocess.Popen(
                        [sys.executable, "-c", _HOLDER, str(path), str(hold)],
                        stdout=subprocess.PIPE, text=True,
                    )  # fmt: skip
                    try:
                        assert holder.stdout is not None
                        assert holder.stdout.readline().strip() == "locked"
                        watch.started = time.monotonic()
                        watch.wait_reported(hold)
                        assert "locked" in (watch.readyz_detail or ""), watch.readyz_detail
                        assert holder.wait(timeout=hold + 60) == 0
                    finally:
                        if holder.poll() is None:
                            holder.kill()
                            holder.wait(timeout=10)
                    released = time.monotonic()
                    wait_until(
                        lambda: _recovered(proc, since, engine), 60 + busy,
                        "the daemon to recover from the lock", step=0.25,
                    )  # fmt: skip
                    _assert_kept(before, _snapshot(engine), "the lock")
                    got.update(
                        lock_held_s=hold,
                        lock_detected_after_s=round(watch.detected_after or 0, 1),
                        lock_recovered_after_s=round(time.monotonic() - released, 1),
                        locked_faults_counted=_metric(
                            _metrics(proc), "batch_monitor_database_errors_total", kind="locked"
                        ),
                    )

                    # 2. The disk fills up (or fails).
                    before = _snapshot(engine)
                    since = sim.now()
                    watch = Watch(proc, disk.kind)
                    disk.start()
                    watch.wait_reported(60)
                    watch.hold(full_for)
                    disk.stop()
                    freed = time.monotonic()
                    wait_until(
                        lambda: _recovered(proc, since, engine), 60,
                        f"the daemon to recover from {disk.method}", step=0.25,
                    )  # fmt: skip
                    _assert_kept(before, _snapshot(engine), disk.method)
                    assert proc.pid == pid and proc.proc.poll() is None
                    got.update(
                        disk_fault_s=full_for,
                        disk_fault_detected_after_s=round(watch.detected_after or 0, 1),
                        disk_fault_recovered_after_s=round(time.monotonic() - freed, 1),
                        disk_faults_counted=_metric(
                            _metrics(proc), "batch_monitor_database_errors_total", kind=disk.kind
                        ),
                        disk_fault_readyz=watch.readyz_detail,
                    )
                    got.update(_finish(engine, sim, proc, 120))
                with Session(engine) as s:
                    integrity = s.connection().exec_driver_sql("PRAGMA integrity_check").scalar()
                assert integrity == "ok"
                figures(**got)
            finally:
                engine.dispose()
    finally:
        disk.close()


# --- the pieces, without a daemon ---------------------------------------------------------


def test_the_sqlite_busy_timeout_comes_from_the_url(tmp_path: Path) -> None:
    engine = db.make_engine(f"sqlite:///{tmp_path / 'x.db'}?timeout=0.5")
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 500
    finally:
        engine.dispose()
    for bad in ("0", "-1", "soon", "7200"):
        with pytest.raises(db.DatabaseError) as caught:
            db.make_engine(f"sqlite:///{tmp_path / 'x.db'}?timeout={bad}")
        assert caught.value.exit_code == 2 and "timeout" in str(caught.value)


def test_metrics_and_readiness_say_the_database_is_down_while_it_is(tmp_path: Path) -> None:
    """Nothing listens on the port: /metrics still renders, database_up 0, /readyz names it."""
    from monitor import exporter
    from monitor.config import Settings

    url = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"
    engine = db.make_engine(url)
    try:
        settings = Settings(database_url=url)
        metrics = exporter.CostMetrics(engine, settings)
        body, _ctype = exporter.exposition(exporter.registry_for(metrics))
        scraped = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body.decode())
            for s in family.samples
        }
        assert _metric(scraped, "batch_monitor_database_up") == 0
        assert (
            _metric(scraped, "batch_monitor_database_errors_total", kind="unreachable") or 0
        ) >= 1
        assert _metric(scraped, "batch_monitor_build_info", version=__version__) == 1
        assert not any(name.startswith("claude_") for name, _labels in scraped)
        checks = exporter.readiness(engine, settings, datetime.now(UTC), {"batches": timedelta(1)})
        assert [(c.name, c.ok) for c in checks] == [("database", False)]
        assert "cannot reach the database" in checks[0].detail
    finally:
        engine.dispose()


def test_a_write_ends_a_fault_episode_a_read_does_not(tmp_path: Path) -> None:
    """Reads work while another process holds the write lock; only a committed write clears."""
    path = tmp_path / "x.db"
    engine = db.make_engine(f"sqlite:///{path}?timeout=0.2")
    db.upgrade(engine)
    health = db.health(engine)
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(path), "30"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(OperationalError), db.session_scope(engine) as s:
            db.bump(s, "test", "k")
        assert health.state().failing == "locked"
        with db.session_scope(engine) as s:  # a read works, and proves nothing about writes
            s.execute(select(func.count()).select_from(Tally)).scalar_one()
        assert health.state().failing == "locked"
    finally:
        holder.kill()
        holder.wait(timeout=10)
    with db.session_scope(engine) as s:
        db.bump(s, "test", "k")
    state = health.state()
    assert state.failing is None and state.faults["locked"] >= 1
    engine.dispose()
