"""Ingest the results of one large batch served by the simulator over HTTP.

Variants, each in a fresh subprocess (so peak RSS is its own):

- ``floor``: the same bytes over the same HTTP path (the SDK client's streaming response),
  ``iter_lines`` + ``orjson.loads`` and nothing else: the least any reader can do;
- ``collector``: what the batches collector does per batch (tally every line, attribute the
  workload, group by model and tier) and then prices the groups;
- ``sdk``: the SDK's own ``messages.batches.results()`` decoder, for reference (100k only).

Target: the collector within 1.5x of the floor, and peak memory flat in the number of lines
(1M lines within 20 % of 100k lines).
"""

from __future__ import annotations

import resource
import subprocess
import sys
import time
from datetime import timedelta

N_SMALL = 100_000
N_LARGE = 1_000_000


def _child(variant: str, url: str, key: str, batch_id: str) -> None:
    import orjson

    from monitor.client import make_client

    client = make_client(
        key, base_url=url, timeout=timedelta(minutes=10), max_retries=0,
        max_retry_after=timedelta(seconds=1),
    )  # fmt: skip
    from monitor import clock
    from monitor.pricing import default_book
    from monitor.sources.batches import BatchesSource, WorkspaceClient, price_tally

    book = default_book()  # load the price table before the clock starts, as the daemon has
    t0 = time.perf_counter()
    lines = 0
    if variant == "floor":
        with client.messages.batches.with_streaming_response.results(batch_id) as resp:
            for line in resp.iter_lines():
                if line:
                    orjson.loads(line)
                    lines += 1
    elif variant == "collector":
        src = BatchesSource([], book)
        tally = src._stream_results(WorkspaceClient("w", "w", client), batch_id)
        price_tally(tally, book, clock.utcnow())
        lines = tally.lines
    elif variant == "sdk":
        for _ in client.messages.batches.results(batch_id):
            lines += 1
    elapsed = time.perf_counter() - t0
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"{lines} {elapsed:.6f} {peak_kb}")


def _run(variant: str, url: str, key: str, batch_id: str) -> tuple[int, float, int]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.bench_results", "--child", variant, url, key, batch_id],
        capture_output=True, text=True, check=True, timeout=900,
    )  # fmt: skip
    lines, secs, kb = out.stdout.split()
    return int(lines), float(secs), int(kb)


def main() -> None:
    """Serve a 100k and a 1M request batch and time each variant against them."""
    from monitor.simulator import SimulatorServer, build_scenario

    rows = []
    for n in (N_SMALL, N_LARGE):
        scenario = build_scenario("large", batch_requests=n)
        batch = next(b for b in scenario.truth().batches.values() if b.request_count == n)
        key = scenario.workspace(batch.workspace_id).api_key
        with SimulatorServer(scenario) as sim:
            sim.prepare_results(batch.id)  # render once, so every variant reads the same bytes
            variants = ["floor", "collector"] + (["sdk"] if n == N_SMALL else [])
            for variant in variants:
                lines, secs, kb = _run(variant, sim.url, key, batch.id)
                assert lines == n, (variant, lines, n)
                rows.append((n, variant, lines / secs, secs, kb / 1024))
    floor = {n: secs for n, v, _, secs, _ in rows if v == "floor"}
    mem = {(n, v): mb for n, v, _, _, mb in rows}
    head = ("lines", "variant", "lines/s", "seconds", "x floor", "peak MB")
    print("{:>9} {:<10} {:>12} {:>8} {:>8} {:>8}".format(*head))
    for n, variant, rate, secs, mb in rows:
        ratio = secs / floor[n]
        print(f"{n:>9} {variant:<10} {rate:>12,.0f} {secs:>8.2f} {ratio:>8.2f} {mb:>8.1f}")
    growth = mem[(N_LARGE, "collector")] / mem[(N_SMALL, "collector")]
    print(f"collector peak RSS 1M / 100k lines: {growth:.2f} (target <= 1.20)")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child(*sys.argv[2:6])
    else:
        main()
