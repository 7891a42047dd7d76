"""Benchmarks: each ``bench/bench_*.py`` module has a ``main()`` that prints a table."""
