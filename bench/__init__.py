"""gas-bench-pipeline: run CSV-producing benchmarks from cron, store the runs, watch them."""

__version__ = "0.1.0"
