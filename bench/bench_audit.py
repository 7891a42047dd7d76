"""``batch-monitor audit`` over a generated call log, against a floor and the naive approach.

Variants, each in a fresh subprocess (so peak RSS is its own), timed after imports:

- ``floor``: read the file and ``orjson.loads`` every line, nothing else: the least any
  reader of this format can do;
- ``audit``: ``monitor.advisor.audit_files``: validate every line, aggregate per hour, price,
  infer patterns and recommend (the whole command minus printing);
- ``naive``: what the batch migration guides do: ``json.loads`` every line into a dict, keep
  per-endpoint lists of timestamps and token counts, then parse, sort and sum them at the end.

Targets: audit within 2x of the floor, at least 5x faster than naive, and peak memory flat in
the number of lines (1M lines within 20 % of 250k lines). The lines are what
``monitor.instrument`` writes; the file lives in a temp dir and is deleted afterwards.
"""

from __future__ import annotations

import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

N_SMALL = 250_000
N_LARGE = 1_000_000
START = datetime(2026, 10, 1, tzinfo=UTC)
SPAN = timedelta(days=30)
# (workload, model, input range, output range, cache-read share, urgent share, busy UTC hours)
WORKLOADS = (
    ("support-chat", "claude-sonnet-4-6", (300, 4_000), (50, 800), 0.7, 0.0, range(7, 20)),
    ("summarize", "claude-haiku-4-5", (2_000, 30_000), (100, 1_500), 0.0, 0.0, range(24)),
    ("nightly-digest", "claude-opus-4-7", (5_000, 60_000), (500, 4_000), 0.2, 0.0, range(2, 4)),
    ("code-review", "claude-sonnet-4-6", (8_000, 40_000), (500, 5_000), 0.1, 0.2, range(24)),
    ("classify", "claude-haiku-5-5", (500, 150_000), (5, 50), 0.0, 0.0, range(24)),
    ("search-answers", "claude-sonnet-5-5", (1_000, 8_000), (100, 900), 0.4, 0.1, range(6, 22)),
)


def generate(path: Path, n: int, seed: int = 7) -> None:
    """Write ``n`` call-log lines in time order over 30 days, like ``monitor.instrument`` does."""
    import orjson

    rng = random.Random(seed)
    step = SPAN.total_seconds() / n
    with open(path, "wb", buffering=1 << 20) as fh:
        for i in range(n):
            at = START + timedelta(seconds=i * step)
            name, model, inp, out, cached, urgent, hours = rng.choice(WORKLOADS)
            if at.hour not in hours:
                name, model, inp, out, cached, urgent, _ = WORKLOADS[1]
            prompt = rng.randint(*inp)
            read = int(prompt * cached) if rng.random() < 0.8 else 0
            write = rng.choice((0, 0, 0, 1_024))
            record = {
                "timestamp": at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z",
                "workload": name,
                "model": model,
                "input_tokens": prompt - read,
                "output_tokens": rng.randint(*out),
                "cache_read_input_tokens": read,
                "cache_creation_input_tokens": write,
                "cache_creation": {
                    "ephemeral_5m_input_tokens": write,
                    "ephemeral_1h_input_tokens": 0,
                },
                "service_tier": "standard",
                "latency_ms": rng.randint(300, 20_000),
                "request_id": f"req_011C{rng.getrandbits(64):016x}",
            }
            if urgent and rng.random() < urgent:
                record["priority"] = "high"
            fh.write(orjson.dumps(record) + b"\n")


def _floor(path: str) -> int:
    import orjson

    loads = orjson.loads
    n = 0
    with open(path, "rb") as fh:
        for line in fh:
            loads(line)
            n += 1
    return n


def _audit(path: str) -> int:
    from monitor.advisor import audit_files

    recs = audit_files([path])
    assert {r.workload for r in recs} == {w[0] for w in WORKLOADS}, recs
    return sum(r.calls or 0 for r in recs)


def _naive(path: str) -> int:
    import json
    from collections import Counter, defaultdict

    # The guides' per-endpoint analysis: every timestamp kept, parsed and sorted at the end.
    stamps: dict[str, list[str]] = defaultdict(list)
    tokens: dict[str, list[tuple[int, int, int]]] = defaultdict(list)
    with open(path) as fh:
        for line in fh:
            rec = json.loads(line)
            endpoint = rec.get("endpoint") or rec.get("workload")
            stamps[endpoint].append(rec["timestamp"])
            tokens[endpoint].append(
                (rec["input_tokens"], rec["output_tokens"], rec.get("cache_read_input_tokens", 0))
            )
    n = 0
    for endpoint, raw in stamps.items():
        times = sorted(datetime.fromisoformat(s.replace("Z", "+00:00")) for s in raw)
        by_hour = Counter(t.hour for t in times)
        days = max(1, -(-(times[-1] - times[0]).total_seconds() // 86_400))
        per_day = len(times) / days
        inp = sum(t[0] for t in tokens[endpoint])
        out = sum(t[1] for t in tokens[endpoint])
        monthly = (inp * 3 + out * 15) / 1e6 * 30 / days  # floats, one price for every model
        assert by_hour and per_day and monthly >= 0
        n += len(times)
    return n


VARIANTS = {"floor": _floor, "audit": _audit, "naive": _naive}


def _child(variant: str, path: str) -> None:
    work = VARIANTS[variant]
    if variant == "audit":
        import monitor.advisor  # noqa: F401  (imports are not part of the timing)
    t0 = time.perf_counter()
    lines = work(path)
    elapsed = time.perf_counter() - t0
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"{lines} {elapsed:.6f} {peak_kb}")


def _run(variant: str, path: Path) -> tuple[int, float, int]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.bench_audit", "--child", variant, str(path)],
        capture_output=True, text=True, check=True, timeout=1800,
    )  # fmt: skip
    lines, secs, kb = out.stdout.split()
    return int(lines), float(secs), int(kb)


def main() -> None:
    """Generate 250k- and 1M-line logs and time each variant on each."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-audit-") as tmp:
        for n in (N_SMALL, N_LARGE):
            path = Path(tmp) / f"calls-{n}.jsonl"
            generate(path, n)
            size_mb = os.path.getsize(path) / 1e6
            print(f"{n:,} lines, {size_mb:.0f} MB", flush=True)
            for variant in ("floor", "audit", "naive"):
                lines, secs, kb = _run(variant, path)
                assert lines == n, (variant, lines, n)
                rows.append((n, variant, lines / secs, secs, kb / 1024))
            path.unlink()
    floor = {n: secs for n, v, _, secs, _ in rows if v == "floor"}
    naive = {n: secs for n, v, _, secs, _ in rows if v == "naive"}
    mem = {(n, v): mb for n, v, _, _, mb in rows}
    print(
        f"{'lines':>9} {'variant':<7} {'lines/s':>11} {'seconds':>8} {'x floor':>8} "
        f"{'naive/x':>8} {'peak MB':>8}"
    )
    for n, variant, rate, secs, mb in rows:
        print(
            f"{n:>9,} {variant:<7} {rate:>11,.0f} {secs:>8.2f} {secs / floor[n]:>8.2f} "
            f"{naive[n] / secs:>8.2f} {mb:>8.1f}"
        )
    for variant in ("floor", "audit", "naive"):
        growth = mem[(N_LARGE, variant)] / mem[(N_SMALL, variant)]
        print(f"{variant} peak RSS 1M / 250k lines: {growth:.2f}")
    audit = {n: secs for n, v, _, secs, _ in rows if v == "audit"}
    print(
        f"targets: audit <= 2.00x floor (got {audit[N_LARGE] / floor[N_LARGE]:.2f}x), "
        f">= 5x faster than naive (got {naive[N_LARGE] / audit[N_LARGE]:.2f}x), "
        f"audit RSS 1M/250k <= 1.20 (got {mem[(N_LARGE, 'audit')] / mem[(N_SMALL, 'audit')]:.2f})"
    )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child(sys.argv[2], sys.argv[3])
    else:
        main()
