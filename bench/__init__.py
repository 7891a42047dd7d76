"""Benchmarks: each ``bench/bench_*.py`` module has a ``main()`` that prints a table."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

from monitor import clock


def median_ms(fn: Callable[[], Any], repeats: int, *, warm: bool = False) -> float:
    """Return the median wall time of ``repeats`` calls of ``fn``, in milliseconds.

    ``warm`` calls it once first, untimed (what a long-running process has already done).
    """
    if warm:
        fn()
    times = []
    for _ in range(repeats):
        started = clock.monotonic()
        fn()
        times.append((clock.monotonic() - started) * 1000)
    return statistics.median(times)
