"""Fixtures of the reliability suites: the soak switch and the figures each suite records."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

SOAK = os.environ.get("MONITOR_SOAK") == "1"
FIGURES_DIR = Path(
    os.environ.get(
        "MONITOR_FIGURES_DIR", Path(__file__).resolve().parents[2] / "reports" / "reliability"
    )
)


@pytest.fixture
def soak() -> bool:
    """Return True under ``make soak``: run the long version of a suite."""
    return SOAK


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Iterator[Callable[..., None]]:
    """Record figures of this test (``figures(faults_injected=12, ...)``) for the run summary.

    They are written to ``reports/reliability/<test>.json`` (with ``soak`` true or false) so the
    numbers quoted in a note can be traced to a run.
    """
    name = request.node.name
    values: dict[str, Any] = {}

    def record(**kw: Any) -> None:
        values.update(kw)

    yield record
    if values:
        values["soak"] = SOAK
        # user_properties travel from xdist workers to the controller, which prints them.
        request.node.user_properties.append(("reliability_figures", values))
        FIGURES_DIR.mkdir(parents=True, exist_ok=True)
        path = FIGURES_DIR / f"{name.replace('/', '_')}.json"
        path.write_text(json.dumps(values, indent=2, sort_keys=True, default=str) + "\n")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print the figures the suites recorded (in this process or on xdist workers)."""
    recorded: dict[str, Any] = {}
    for reports in terminalreporter.stats.values():
        for report in reports:
            if getattr(report, "when", None) != "teardown":
                continue
            for key, value in getattr(report, "user_properties", ()):
                if key == "reliability_figures":
                    recorded[report.nodeid] = value
    if not recorded:
        return
    terminalreporter.section("reliability figures" + (" (soak)" if SOAK else ""))
    for name, values in sorted(recorded.items()):
        shown = ", ".join(f"{k}={v}" for k, v in sorted(values.items()) if k != "soak")
        terminalreporter.write_line(f"{name}: {shown}")
