"""A faithful local simulator of the parts of the Anthropic API this product reads.

It serves, over plain HTTP on 127.0.0.1, what the real ``anthropic`` SDK calls (shapes from
``shared/reference/anthropic-api.md``):

- Message Batches: list (``after_id``/``before_id`` paging), retrieve, create, cancel, delete,
  and the results JSONL, streamed with chunked transfer encoding so a million-line file is
  served with flat memory;
- the Usage and Cost Analytics API (beta): ``/v1/organizations/analytics/{usage,cost}``;
- the legacy Admin reports: ``/v1/organizations/usage_report/messages`` and ``/cost_report``.

Everything it shows is a function of a seeded :class:`Scenario` and the server's own clock
(``set_now``/``advance``, or ``speed`` times wall time). Faults (:class:`Fault`) make it
misbehave on purpose: 429/500/529, slow replies, connection resets, a results stream cut off
or with a malformed line, report pages that repeat or lose their cursor, the analytics API
refused, billed-price drift and late revisions. ``Scenario.truth()``
is the ground truth: every figure the monitor should arrive at, computed from the scenario
model directly, never from HTTP responses.

**Pricing is not checked here.** The simulator's ground truth prices usage with
``monitor.pricing`` (the product's own engine, see :mod:`monitor.simulator.pricer`), so it
cannot check pricing itself: a wrong price would be wrong in the truth too, and every test
against the simulator would still pass. Pricing is checked only by the hand-computed figures
in ``tests/test_pricing.py``, which must stay complete (every model, tier and modifier).

The product does not depend on the simulator: only the CLI's ``simulate`` command and
``monitor/demo.py`` import it (``tests/test_layout.py`` checks this).

One module per concern, in dependency order:

- ``formats``: token-type order, RFC 3339 times, report buckets, model display names;
- ``seeded``: deterministic randomness (64-bit mixing, ids, uniform draws);
- ``requests``: workload profiles, generated and submitted batch requests, result lines;
- ``batches``: a batch's spec (its processing) and its view at one instant;
- ``calls``: real-time calls as a call log records them;
- ``pricer``: pricing of the simulated usage, through ``monitor.pricing``;
- ``events``: usage events, what the reports aggregate and the truth sums;
- ``truth``: the ground truth (totals per batch, workload, window);
- ``organisation``: :class:`Scenario`, the simulated organisation and the served state;
- ``scenarios``: the named scenarios and :func:`build_scenario`;
- ``faults``: :class:`Fault`, its constructors and :func:`parse_fault`;
- ``protocol``: error answers, query parameters and page tokens shared by every endpoint;
- ``reports``: the usage and cost report endpoints and their aggregation;
- ``server``: :class:`SimulatorServer`, the HTTP server, routing and the Message Batches API.

Usage in a test::

    with SimulatorServer(build_scenario("small")) as sim:
        client = anthropic.Anthropic(api_key=sim.scenario.workspaces[0].api_key,
                                     base_url=sim.url, max_retries=0)
        ...
"""

from __future__ import annotations

from monitor.simulator.events import UsageEvent
from monitor.simulator.faults import (
    FAULT_KINDS,
    Fault,
    analytics_refused,
    connection_reset,
    cut_stream,
    echo_headers,
    late_revision,
    malformed_line,
    overloaded,
    parse_fault,
    price_drift,
    rate_limit,
    repeat_page,
    server_error,
    skip_page,
    slow,
)
from monitor.simulator.formats import TOKEN_TYPES, floor_time, iso, workload_of
from monitor.simulator.organisation import ADMIN_KEY, ApiKey, Scenario, Workspace
from monitor.simulator.pricer import Price, Pricer
from monitor.simulator.reports import cents
from monitor.simulator.scenarios import SCENARIOS, UNKNOWN_MODEL, build_scenario
from monitor.simulator.server import SimulatorServer
from monitor.simulator.truth import BatchTruth, Totals, Truth, WindowTruth, WorkloadTruth

__all__ = [
    "ADMIN_KEY",
    "FAULT_KINDS",
    "SCENARIOS",
    "TOKEN_TYPES",
    "UNKNOWN_MODEL",
    "ApiKey",
    "BatchTruth",
    "Fault",
    "Price",
    "Pricer",
    "Scenario",
    "SimulatorServer",
    "Totals",
    "Truth",
    "UsageEvent",
    "WindowTruth",
    "WorkloadTruth",
    "Workspace",
    "analytics_refused",
    "build_scenario",
    "cents",
    "connection_reset",
    "cut_stream",
    "echo_headers",
    "floor_time",
    "iso",
    "late_revision",
    "malformed_line",
    "overloaded",
    "parse_fault",
    "price_drift",
    "rate_limit",
    "repeat_page",
    "server_error",
    "skip_page",
    "slow",
    "workload_of",
]
