"""The advisor: ``advise`` (database) and ``audit_files`` (files) give the same, exact advice.

Call logs are real files; they reach the database through the real call-log source and both
databases through the fixtures. Money is checked exactly (Decimal) and to the cent.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
import time_machine
from sqlmodel import Session
from typer.testing import CliRunner

from monitor import cli, tomlfile
from monitor.advisor import (
    BATCH,
    HYBRID,
    REAL_TIME,
    Recommendation,
    advise,
    audit_files,
    infer_pattern,
)
from monitor.calllog import BadLine
from monitor.collect import collect_source
from monitor.config import AdvisorSection, ConfigError, Settings
from monitor.models import CallBucket, UsageBucket
from monitor.pricing import default_book
from monitor.sources.call_logs import CallLogSource
from monitor.workloads import Workload, WorkloadMap
from monitor.workloads import load_file as load_workloads_file
from tests.conftest import migrate_fresh

D = Decimal
START = datetime(2026, 11, 1, tzinfo=UTC)
NOW = datetime(2026, 11, 10, tzinfo=UTC)
SONNET = "claude-sonnet-4-6"  # $3 / $15 per MTok

JSON_KEYS = {
    "workload",
    "model",
    "requests_per_day",
    "input_tokens_per_request",
    "output_tokens_per_request",
    "monthly_standard_usd",
    "monthly_batch_usd",
    "monthly_savings_usd",
    "recommendation",
    "reason",
    "max_latency_minutes",
    "latency_source",
    "caching_candidate",
    "caching_extra_savings_usd",
}


def calls(
    workload: str,
    n: int,
    input_tokens: int,
    output_tokens: int,
    *,
    start: datetime = START,
    seconds: float = 86_399,
    model: str = SONNET,
    urgent_every: int = 0,
    **extra: Any,
) -> Iterator[bytes]:
    """Yield ``n`` call-log lines spread evenly over ``seconds`` from ``start``."""
    step = seconds / n
    for i in range(n):
        at = start + timedelta(seconds=i * step)
        obj: dict[str, Any] = {
            "timestamp": at.isoformat().replace("+00:00", "Z"),
            "workload": workload,
            "model": model,
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            **extra,
        }
        if urgent_every and i % urgent_every == 0:
            obj["priority"] = "high"
        yield orjson.dumps(obj) + b"\n"


def daily(
    workload: str, days: int, hours: Iterable[int], per_hour: int, **kw: Any
) -> Iterator[bytes]:
    """Yield calls in the given UTC hours of each of ``days`` days (``per_hour`` per hour)."""
    for day in range(days):
        for hour in hours:
            start = START + timedelta(days=day, hours=hour)
            yield from calls(workload, per_hour, 1000, 500, start=start, seconds=3599, **kw)


def write(path: Path, *parts: Iterable[bytes]) -> Path:
    with open(path, "wb") as fh:
        for part in parts:
            fh.writelines(part)
    return path


def settings(workloads: tuple[Workload, ...] = (), min_savings: float = 10.0) -> Settings:
    return Settings(workloads=workloads, advisor=AdvisorSection(min_monthly_savings=min_savings))


def collect(session: Session, paths: Iterable[Path], cfg: Settings, chunk: int = 0) -> None:
    src = CallLogSource(
        patterns=[str(p) for p in paths],
        workloads=WorkloadMap(cfg.workloads),
        book=default_book(),
    )
    if chunk:
        src.chunk_bytes = chunk
    result = collect_source(src, session, NOW)
    assert result.ok, result.run.error


def by_name(recs: list[Recommendation]) -> dict[str, Recommendation]:
    return {r.workload: r for r in recs}


def both(session: Session, paths: list[Path], cfg: Settings) -> list[Recommendation]:
    """Advise through the database and through the files; assert they agree; return one."""
    collect(session, paths, cfg)
    from_db = advise(session, NOW, cfg)
    from_files = audit_files(
        paths, cfg.workloads, min_monthly_savings=D(str(cfg.advisor.min_monthly_savings))
    )
    assert from_db == from_files
    return from_db


def minutes(n: float) -> timedelta:
    return timedelta(minutes=n)


# --- the acceptance examples --------------------------------------------------------------------

ACCEPTANCE = (
    Workload("live-chat", None, minutes(1), None),
    Workload("content-generation", None, minutes(1440), None),
    Workload("code-review", None, minutes(120), None),
)


@pytest.fixture
def acceptance_log(tmp_path: Path) -> Path:
    """One day of the three workloads of the acceptance example (so daily = per day)."""
    return write(
        tmp_path / "calls.jsonl",
        calls("live-chat", 6_667, 3_000, 1_000),
        calls("content-generation", 500, 5_000, 3_000),
        calls("code-review", 100, 20_000, 5_000),
    )


def check_acceptance(recs: list[Recommendation]) -> None:
    got = by_name(recs)
    chat, content, review = got["live-chat"], got["content-generation"], got["code-review"]

    assert chat.recommendation == REAL_TIME
    assert chat.requests_per_day == 6_667
    assert (chat.input_tokens_per_request, chat.output_tokens_per_request) == (3_000, 1_000)
    # 6,667 x 30 x (3,000 x $3 + 1,000 x $15) / 1M
    assert chat.monthly_standard_usd == D("4800.24")
    assert chat.monthly_savings_usd == D("2400.12")
    assert "under 60 min" in chat.reason

    assert content.recommendation == BATCH
    assert (content.model, content.requests_per_day) == (SONNET, 500)
    assert content.monthly_standard_usd == D("900")
    assert content.monthly_batch_usd == D("450")
    assert content.monthly_savings_usd == D("450")
    assert content.to_json()["monthly_savings_usd"] == "450.00"
    assert "$450.00/month" in content.reason
    assert (content.max_latency_minutes, content.latency_source) == (1440, "declared")
    assert not content.caching_candidate

    assert review.recommendation == BATCH
    assert review.monthly_standard_usd == D("405")
    assert review.monthly_savings_usd == D("202.5")
    assert review.to_json()["monthly_savings_usd"] == "202.50"
    # 20K-token prompts, nothing cached: half the input read from cache at batch prices saves
    # 100 x 30 x 10,000 x ($1.50 - $0.15) / 1M = $40.50 a month more.
    assert review.caching_candidate
    assert review.caching_extra_savings_usd == D("40.5")

    assert [r.workload for r in recs] == ["live-chat", "content-generation", "code-review"]


def test_acceptance_examples_through_advise(session: Session, acceptance_log: Path) -> None:
    cfg = settings(ACCEPTANCE)
    collect(session, [acceptance_log], cfg)
    check_acceptance(advise(session, NOW, cfg))


def test_acceptance_examples_through_audit(acceptance_log: Path) -> None:
    check_acceptance(audit_files([acceptance_log], ACCEPTANCE))


# --- the two entry points agree ------------------------------------------------------------------


def test_audit_equals_advise_on_mixed_traffic(session: Session, tmp_path: Path) -> None:
    mixed = [
        # Tiered Haiku 5.5 (prompts above and below 100K), priorities, cache, an unknown model,
        # several days and hours, bad lines, epoch stamps: every path of the aggregation.
        b'{"timestamp": %d, "workload": "ingest", "model": "claude-haiku-5-5", '
        b'"input_tokens": 150000, "output_tokens": 10}\n' % (START.timestamp() + 3600),
        b"not json\n",
    ]
    paths = [
        write(tmp_path / "a.jsonl", mixed, daily("triage", 3, [9, 14, 20], 7, urgent_every=3)),
        write(
            tmp_path / "b.jsonl",
            calls("ingest", 40, 90_000, 200, model="claude-haiku-5-5", seconds=3 * 86_400),
            calls("ingest", 15, 20_000, 900, cache_read_input_tokens=4_000, seconds=86_400),
            calls("mystery", 30, 1_000, 10, model="claude-unknown-9"),
            daily("nightly", 4, [2], 30),
        ),
    ]
    cfg = settings((Workload("triage", re.compile("^tri"), minutes(90), None),))
    collect(session, paths, cfg, chunk=700)  # many chunks, many transactions
    bad: list[BadLine] = []
    from_files = audit_files(paths, cfg.workloads, on_bad_line=bad.append)
    assert [(b.line, b.field) for b in bad] == [(2, "json")]
    from_db = advise(session, NOW, cfg)
    assert from_db == from_files
    assert {r.workload for r in from_db} == {"triage", "ingest", "mystery", "nightly"}


# --- the rules -----------------------------------------------------------------------------------


def test_hybrid_when_urgent_calls_are_marked_in_the_gray_zone(
    session: Session, tmp_path: Path
) -> None:
    log = write(tmp_path / "calls.jsonl", calls("triage", 100, 1_000, 500, urgent_every=5))
    (rec,) = both(session, [log], settings((Workload("triage", None, minutes(90), None),)))
    assert rec.recommendation == HYBRID
    # 100 calls a day at $0.0105; the 20 urgent ones stay real-time, 80 go at half price.
    assert rec.monthly_standard_usd == D("31.5")
    assert rec.monthly_batch_usd == D("18.9")
    assert rec.monthly_savings_usd == D("12.6")
    assert "20% of calls are priority high" in rec.reason


def test_the_gray_zone_without_a_priority_signal_follows_the_60_minute_line(
    session: Session, tmp_path: Path
) -> None:
    log = write(
        tmp_path / "calls.jsonl",
        calls("reports", 100, 1_000, 500),
        calls("alerts", 100, 1_000, 500),
        calls("urgent-alerts", 400, 1_000, 500, urgent_every=2),
    )
    declared = (
        Workload("reports", None, minutes(90), None),
        Workload("alerts", None, minutes(45), None),
        Workload("urgent-alerts", None, minutes(45), None),
    )
    got = by_name(both(session, [log], settings(declared)))
    assert got["reports"].recommendation == BATCH
    assert got["reports"].monthly_savings_usd == D("15.75")
    assert got["alerts"].recommendation == REAL_TIME
    assert got["urgent-alerts"].recommendation == HYBRID  # 45 min is in the 30-120 gray zone


def test_a_small_saving_stays_real_time_unless_the_minimum_is_lowered(
    session: Session, tmp_path: Path
) -> None:
    log = write(tmp_path / "calls.jsonl", calls("tiny", 10, 1_000, 500))
    declared = (Workload("tiny", None, minutes(1440), None),)
    (rec,) = both(session, [log], settings(declared))
    assert rec.recommendation == REAL_TIME
    assert rec.monthly_savings_usd == D("1.575")
    assert "$1.58/month" in rec.reason and "$10.00 minimum" in rec.reason
    (rec,) = audit_files([log], declared, min_monthly_savings=D(0))
    assert rec.recommendation == BATCH


def test_declared_user_facing_stays_real_time_whatever_the_saving(tmp_path: Path) -> None:
    log = write(tmp_path / "calls.jsonl", calls("assistant", 5_000, 3_000, 1_000))
    (rec,) = audit_files([log], (Workload("assistant", None, None, True),))
    assert rec.recommendation == REAL_TIME
    assert rec.latency_source == "declared" and rec.user_facing
    assert "user-facing" in rec.reason


def test_an_unknown_model_gets_no_money_and_says_which_price_is_missing(tmp_path: Path) -> None:
    log = write(
        tmp_path / "calls.jsonl", calls("mystery", 100, 1_000, 500, model="claude-unknown-9")
    )
    (rec,) = audit_files([log], (Workload("mystery", None, minutes(1440), None),))
    assert rec.recommendation == REAL_TIME
    assert rec.monthly_standard_usd is None and rec.monthly_savings_usd is None
    assert "no price for claude-unknown-9" in rec.reason
    assert rec.to_json()["monthly_savings_usd"] is None


# --- inferred latency ----------------------------------------------------------------------------


def test_a_scheduled_burst_is_inferred_batchable(session: Session, tmp_path: Path) -> None:
    log = write(tmp_path / "calls.jsonl", daily("nightly", 3, [2], 200))
    (rec,) = both(session, [log], settings())
    assert rec.recommendation == BATCH
    assert (rec.max_latency_minutes, rec.latency_source) == (1440, "inferred")
    assert rec.requests_per_day == 200  # 600 calls over 2 days and an hour: 3 days
    assert rec.monthly_savings_usd == D("31.5")
    assert "Inferred from traffic" in rec.reason and "scheduled job" in rec.reason
    assert "02:00" in rec.reason


def test_a_daytime_pattern_is_inferred_user_facing(session: Session, tmp_path: Path) -> None:
    log = write(tmp_path / "calls.jsonl", daily("helpdesk", 3, range(8, 18), 20))
    (rec,) = both(session, [log], settings())
    assert rec.recommendation == REAL_TIME
    assert rec.latency_source == "inferred" and rec.user_facing is True
    assert rec.max_latency_minutes is None
    assert "daytime" in rec.reason and "user-facing" in rec.reason


def test_steady_arrival_is_inferred_queue_like(session: Session, tmp_path: Path) -> None:
    log = write(tmp_path / "calls.jsonl", daily("pipeline", 2, range(24), 10, urgent_every=0))
    (rec,) = both(session, [log], settings())
    assert (rec.max_latency_minutes, rec.latency_source) == (60, "inferred")
    assert rec.recommendation == BATCH
    assert "queue" in rec.reason


def test_too_few_calls_give_no_guess(tmp_path: Path) -> None:
    log = write(tmp_path / "calls.jsonl", calls("rare", 5, 1_000, 500))
    (rec,) = audit_files([log])
    assert rec.recommendation == REAL_TIME and rec.max_latency_minutes is None
    assert "too few calls (5)" in rec.reason and "declare max_latency" in rec.reason


def test_declared_not_user_facing_keeps_the_inferred_latency(tmp_path: Path) -> None:
    log = write(tmp_path / "calls.jsonl", daily("nightly", 3, [2], 200))
    (rec,) = audit_files([log], (Workload("nightly", None, None, False),))
    assert rec.recommendation == BATCH and rec.latency_source == "inferred"
    assert rec.user_facing is False


def test_infer_pattern_kinds() -> None:
    burst = [0] * 24
    burst[3] = 100
    assert infer_pattern(burst, 3, 3).kind == "scheduled"
    office = [0] * 8 + [10] * 10 + [0] * 6
    assert infer_pattern(office, 3, 3).kind == "interactive"
    assert infer_pattern([5] * 24, 3, 3).kind == "queue"
    assert infer_pattern([1] * 10 + [0] * 14, 1, 1).kind == "unknown"


# --- prompt caching ------------------------------------------------------------------------------


def test_caching_candidates_need_big_prompts_that_are_barely_cached(tmp_path: Path) -> None:
    log = write(
        tmp_path / "calls.jsonl",
        calls("uncached", 100, 20_000, 500),
        calls("cached", 100, 5_000, 500, cache_read_input_tokens=15_000),
        calls("small", 100, 2_000, 500),
    )
    declared = tuple(Workload(n, None, minutes(1), None) for n in ("uncached", "cached", "small"))
    got = by_name(audit_files([log], declared))
    assert got["uncached"].caching_candidate
    # Real-time here: 100 x 30 x 10,000 x ($3.00 - $0.30) / 1M = $81.00 a month.
    assert got["uncached"].caching_extra_savings_usd == D("81")
    assert "stacks with the batch discount" in got["uncached"].reason
    assert got["uncached"].input_tokens_per_request == 20_000
    assert not got["cached"].caching_candidate
    assert got["cached"].input_tokens_per_request == 20_000  # the prompt includes cache reads
    assert not got["small"].caching_candidate
    assert got["small"].caching_extra_savings_usd is None


def test_audit_reads_only_the_window(tmp_path: Path) -> None:
    log = write(
        tmp_path / "calls.jsonl",
        calls("old", 100, 1_000, 500, start=NOW - timedelta(days=40)),
        calls("recent", 100, 1_000, 500, start=NOW - timedelta(days=2)),
        calls("later", 10, 1_000, 500, start=NOW + timedelta(hours=2), seconds=600),
    )
    assert [r.workload for r in audit_files([log], now=NOW, window=timedelta(days=30))] == [
        "recent"
    ]
    names = {r.workload for r in audit_files([log], now=NOW, window=timedelta(days=60))}
    assert names == {"old", "recent"}
    assert {r.workload for r in audit_files([log])} == {"old", "recent", "later"}


# --- the database path ---------------------------------------------------------------------------


def test_advise_reads_only_the_window(session: Session, tmp_path: Path) -> None:
    log = write(
        tmp_path / "calls.jsonl",
        calls("old", 100, 1_000, 500, start=NOW - timedelta(days=40)),
        calls("recent", 100, 1_000, 500, start=NOW - timedelta(days=2)),
    )
    collect(session, [log], settings())
    assert [r.workload for r in advise(session, NOW, settings())] == ["recent"]
    names = {r.workload for r in advise(session, NOW, settings(), window=timedelta(days=60))}
    assert names == {"old", "recent"}


def test_a_declaration_added_after_collection_still_claims_the_stored_name(
    session: Session, tmp_path: Path
) -> None:
    log = write(tmp_path / "calls.jsonl", calls("/api/summarize", 500, 5_000, 3_000))
    collect(session, [log], settings())
    later = settings((Workload("summaries", re.compile("summar"), minutes(1440), None),))
    (rec,) = advise(session, NOW, later)
    assert (rec.workload, rec.recommendation, rec.monthly_savings_usd) == (
        "summaries",
        BATCH,
        D("450"),
    )


def _usage(hour: datetime, **kw: Any) -> UsageBucket:
    values: dict[str, Any] = {
        "bucket_start": hour,
        "bucket_end": hour + timedelta(hours=1),
        "width": "1h",
        "source": "analytics",
        "product": "messages_api",
        "model": SONNET,
        "service_tier": "standard",
        "api_key_id": "apikey_01",
        "workspace_id": "wrkspc_01",
        "requests": 20,
        "input_tokens": 100_000,
        "output_tokens": 60_000,
        "fetched_at": NOW,
    }
    values.update(kw)
    return UsageBucket(**values)


def test_without_call_logs_the_usage_report_gives_one_workload_per_workspace(
    session: Session,
) -> None:
    day = START + timedelta(days=5)
    for h in range(24):
        session.add(_usage(day + timedelta(hours=h)))
        session.add(_usage(day + timedelta(hours=h), workspace_id="wrkspc_02", requests=None))
        # Batch usage and a second width of the same usage are not real-time workloads.
        session.add(_usage(day + timedelta(hours=h), product="message_batches_api"))
    session.add(_usage(day, width="1d", bucket_end=day + timedelta(days=1), requests=480))
    session.commit()
    # One workload per workspace, API key or not: the analytics report is not grouped by key,
    # and the legacy one must give the same advice.
    declared = (Workload("workspace:wrkspc_01", None, minutes(1440), None),)
    got = by_name(advise(session, NOW, settings(declared)))
    assert set(got) == {"workspace:wrkspc_01", "workspace:wrkspc_02"}
    key = got["workspace:wrkspc_01"]
    assert key.recommendation == BATCH
    assert key.requests_per_day == 480
    # 24 x ($0.30 + $0.90) a day = $28.80; a month $864.00, half of it saved.
    assert key.monthly_standard_usd == D("864")
    assert key.monthly_savings_usd == D("432")
    assert "usage report" in key.reason
    uncounted = got["workspace:wrkspc_02"]
    assert uncounted.requests_per_day is None and uncounted.input_tokens_per_request is None


def test_call_logs_take_precedence_over_the_usage_report(session: Session, tmp_path: Path) -> None:
    session.add(_usage(START + timedelta(days=5)))
    session.commit()
    log = write(tmp_path / "calls.jsonl", calls("chat", 100, 1_000, 500))
    collect(session, [log], settings())
    assert [r.workload for r in advise(session, NOW, settings())] == ["chat"]
    assert session.get(CallBucket, 1) is not None


# --- the workloads file --------------------------------------------------------------------------


def test_load_workloads_file(tmp_path: Path) -> None:
    good = tmp_path / "workloads.toml"
    good.write_text(
        '[[workloads]]\nname = "chat"\nmatch = "^/chat"\nmax_latency = "1m"\nuser_facing = true\n'
        '\n[[workloads]]\nname = "digest"\nmax_latency = "1d"\n'
    )
    chat, digest = load_workloads_file(good)
    assert chat.match is not None and chat.match.pattern == "^/chat" and chat.user_facing
    assert digest.max_latency == timedelta(days=1)

    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[[workloads]]\nname = "chat"\nmax_latency = "soon"\n\n'
        '[[workloads]]\nname = "x"\nmatch = "(unclosed"\ncolour = "red"\n'
    )
    with pytest.raises(ConfigError) as err:
        load_workloads_file(bad)
    text = str(err.value)
    assert f"{bad}:3: workloads[1].max_latency: invalid duration 'soon'" in text
    assert f"{bad}:7: workloads[2].match: invalid regular expression" in text
    assert f"{bad}:8: workloads[2].colour: unknown key" in text


def test_advisor_and_workloads_load_neither_the_settings_nor_a_source(tmp_path: Path) -> None:
    # The advisor reads buckets through monitor.calllog and declarations through
    # monitor.workloads; a bad workloads file raises the one ConfigError without loading
    # monitor.config (which imports monitor.workloads, not the other way round).
    bad = tmp_path / "bad.toml"
    bad.write_text('[[workloads]]\nname = "x"\nmax_latency = "soon"\n')
    code = (
        "import sys\n"
        "import monitor.advisor, monitor.tomlfile, monitor.workloads\n"
        "try:\n"
        f"    monitor.workloads.load_file({str(bad)!r})\n"
        "except monitor.tomlfile.ConfigError as exc:\n"
        "    print('raised', 'workloads[1].max_latency' in str(exc))\n"
        "print(*sorted(m for m in sys.modules if m == 'monitor.config'"
        " or m.startswith('monitor.sources')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == ["raised True", ""]
    assert ConfigError is tomlfile.ConfigError  # what the CLI catches is what workloads raise


# --- the CLI -------------------------------------------------------------------------------------

runner = CliRunner()


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run the CLI in an empty directory (no monitor.toml) with a clean environment."""
    monkeypatch.chdir(tmp_path)
    for name in ("MONITOR_CONFIG", "MONITOR_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def test_cli_audit_json(in_tmp: Path, acceptance_log: Path) -> None:
    workloads = in_tmp / "workloads.toml"
    workloads.write_text(
        '[[workloads]]\nname = "live-chat"\nmax_latency = "1m"\n'
        '[[workloads]]\nname = "content-generation"\nmax_latency = "1d"\n'
        '[[workloads]]\nname = "code-review"\nmax_latency = "2h"\n'
    )
    with open(acceptance_log, "ab") as fh:
        fh.write(b'{"timestamp": "2026-11-01T05:00:00Z", "workload": "x"}\n')
    result = runner.invoke(
        cli.app, ["audit", str(acceptance_log), "--workloads", str(workloads), "--json"]
    )
    assert result.exit_code == 0, result.output
    data = orjson.loads(result.stdout)
    assert all(set(item) == JSON_KEYS for item in data)
    got = {item["workload"]: item for item in data}
    assert got["content-generation"]["recommendation"] == "BATCH"
    assert got["content-generation"]["monthly_savings_usd"] == "450.00"
    assert got["code-review"]["monthly_savings_usd"] == "202.50"
    assert got["code-review"]["monthly_standard_usd"] == "405.00"
    assert got["live-chat"]["monthly_standard_usd"] == "4800.24"
    assert got["live-chat"]["recommendation"] == "REAL-TIME"
    assert got["content-generation"]["max_latency_minutes"] == 1440
    assert got["content-generation"]["latency_source"] == "declared"
    assert got["code-review"]["caching_extra_savings_usd"] == "40.50"
    # The bad line is reported on stderr with file:line and the field, and counted.
    assert f"{acceptance_log}:7268: model: missing" in result.stderr
    assert "1 bad line(s) skipped" in result.stderr
    assert "batch-monitor" not in result.stdout


def test_cli_audit_table_and_usage_errors(in_tmp: Path, acceptance_log: Path) -> None:
    result = runner.invoke(cli.app, ["audit", str(acceptance_log)])
    assert result.exit_code == 0, result.output
    for word in ("live-chat", "$4,800.24", "saves $/mo", "1 h (inferred)", "code-review: BATCH: "):
        assert word in result.stdout

    missing = runner.invoke(cli.app, ["audit", str(in_tmp / "nope.jsonl")])
    assert missing.exit_code == 2 and "no such file" in missing.stderr

    bad = in_tmp / "w.toml"
    bad.write_text('[[workloads]]\nname = "x"\nmax_latency = "soon"\n')
    wrong = runner.invoke(cli.app, ["audit", str(acceptance_log), "--workloads", str(bad)])
    assert wrong.exit_code == 2 and f"{bad}:3: workloads[1].max_latency" in wrong.stderr


def test_cli_advise_json_from_the_database(
    in_tmp: Path, db_url: str, acceptance_log: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    migrate_fresh(db_url)
    (in_tmp / "monitor.toml").write_text(
        f'[collect]\ncall_logs = ["{acceptance_log}"]\n\n'
        '[[workloads]]\nname = "content-generation"\nmax_latency = "1d"\n\n'
        '[[workloads]]\nname = "code-review"\nmax_latency = "2h"\n\n'
        '[[workloads]]\nname = "live-chat"\nmax_latency = "1m"\n'
    )
    monkeypatch.setenv("MONITOR_DATABASE_URL", db_url)
    with time_machine.travel(NOW, tick=False):
        collected = runner.invoke(cli.app, ["collect", "--source", "logs"])
        assert collected.exit_code == 0, collected.output
        assert "logs: ok, 7267 item(s)" in collected.stdout
        result = runner.invoke(cli.app, ["advise", "--json", "--window", "30d"])
    assert result.exit_code == 0, result.output
    data = orjson.loads(result.stdout)
    assert [item["workload"] for item in data] == ["live-chat", "content-generation", "code-review"]
    assert all(set(item) == JSON_KEYS for item in data)
    assert [item["monthly_savings_usd"] for item in data] == ["2400.12", "450.00", "202.50"]
    assert [item["recommendation"] for item in data] == ["REAL-TIME", "BATCH", "BATCH"]

    with time_machine.travel(NOW, tick=False):
        table = runner.invoke(cli.app, ["advise"])
        empty = runner.invoke(cli.app, ["advise", "--window", "1h"])
        bad = runner.invoke(cli.app, ["advise", "--window", "soon"])
    assert table.exit_code == 0 and "content-generation" in table.stdout
    assert empty.exit_code == 0 and "no real-time traffic" in empty.stdout
    assert bad.exit_code == 2 and "--window" in bad.stderr
