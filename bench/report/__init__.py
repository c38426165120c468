"""HTML reports of analysed runs: one page per run with a plot per alerted parameter, and an
index page over all runs (see :mod:`bench.report.html` and :mod:`bench.report.plots`)."""

from __future__ import annotations

from bench.report.html import build_index, build_report, write_index, write_report
from bench.report.plots import plot_series

__all__ = ["build_index", "build_report", "plot_series", "write_index", "write_report"]
