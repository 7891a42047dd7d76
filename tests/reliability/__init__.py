"""Reliability suites: faults, crashes, bad input, load and secrets (issue 11).

Each suite has a short version that runs in ``make test`` and a long one under ``make soak``
(``MONITOR_SOAK=1``); the figures each records are printed at the end of the run and written to
``reports/reliability/<suite>.json``.
"""
