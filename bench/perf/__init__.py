"""Benchmarks of the pipeline against the old tools (``python -m bench.perf --help``).

Not part of the test run: they print tables of medians measured side by side in one run.
They need the ``test`` extras (moto); the old tool, ``aws``, is measured when it is on PATH.
"""
