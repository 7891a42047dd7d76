"""Run every benchmark: ``python -m bench`` (``make bench``), or ``python -m bench NAME``."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path


def main() -> None:
    """Import each bench_* module and call its main(), in name order."""
    wanted = set(sys.argv[1:])
    here = Path(__file__).parent
    names = sorted(m.name for m in pkgutil.iter_modules([str(here)]) if m.name.startswith("bench_"))
    for name in names:
        if wanted and name not in wanted and name.removeprefix("bench_") not in wanted:
            continue
        print(f"\n=== {name} ===", flush=True)
        importlib.import_module(f"bench.{name}").main()


main()
