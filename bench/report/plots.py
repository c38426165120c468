"""One parameter's history as a PNG: readable as a Slack thumbnail, byte-for-byte reproducible.

matplotlib is imported inside :func:`plot_series` (a watcher tick that finds nothing new must
not pay for it) and drawn on a bare :class:`~matplotlib.figure.Figure` with the Agg canvas: no
pyplot, no global figure registry, nothing left open between calls.
"""

from __future__ import annotations

import contextlib
import math
import os
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.markers import fsync_dir
from bench.runs import RUN_NAME_RE

#: 800 x 400 px: legible at Slack's thumbnail width, small on disk (~30-60 KB).
FIGSIZE = (8.0, 4.0)
DPI = 100
MAX_TITLE = 72  # characters per title line; longer names are wrapped, then cut
MAX_TICKS = 8

_SERIES = "#1f4e79"
_REFERENCE = "#2e7d32"
_CHANGE = "#c62828"
_BASELINE = "#6d6d6d"


def run_label(run: str, *, with_time: bool = False) -> str:
    """The date of a run from its name (``_snoop_YYYYMMDD_HHMM_...``); the name itself if it
    is not a run name."""
    m = RUN_NAME_RE.match(run)
    if m is None:
        return run
    when = datetime.strptime(m["date"] + m["time"], "%Y%m%d%H%M")
    return f"{when:%m-%d %H:%M}" if with_time else f"{when:%Y-%m-%d}"


def plot_series(
    path: Path,
    *,
    title: str,
    runs: list[str],
    values: list[float],
    reference: str | None,
    change_at: str | None,
    baseline: float | None,
) -> Path:
    """Draw ``values`` over ``runs`` (in the given order) into the PNG ``path``; return it.

    The reference run is a dotted vertical line, the change a solid one with the runs from
    it on shaded, the baseline a dashed horizontal line. Missing or infinite values are gaps.
    The file is written atomically and carries no timestamp or version (same input, same
    bytes).
    """
    if len(runs) != len(values):
        raise ValueError(f"{len(runs)} runs but {len(values)} values")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.style
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    ys = [v if v is not None and math.isfinite(v) else math.nan for v in values]
    xs = list(range(len(runs)))
    dates = [run_label(r) for r in runs]
    with_time = len(set(dates)) < len(dates)
    labels = [run_label(r, with_time=with_time) for r in runs]

    with matplotlib.style.context("default"), matplotlib.rc_context(_RC):
        fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        ax.set_title(_wrap(title), loc="left", fontsize=12, fontweight="bold")

        if change_at in runs:
            start = runs.index(change_at)
            ax.axvspan(start - 0.5, len(runs) - 0.5, color=_CHANGE, alpha=0.08, lw=0)
            ax.axvline(start, color=_CHANGE, lw=1.6, label=f"change ({labels[start]})")
        if reference in runs:
            at = runs.index(reference)
            ax.axvline(at, color=_REFERENCE, lw=1.6, ls=":", label=f"reference ({labels[at]})")
        if baseline is not None and math.isfinite(baseline):
            ax.axhline(baseline, color=_BASELINE, lw=1.2, ls="--", label=f"baseline {baseline:.4g}")

        marker = "o" if len(runs) <= 60 else None
        ax.plot(xs, ys, color=_SERIES, lw=1.8, marker=marker, ms=4, label="value")
        if change_at in runs and not math.isnan(ys[runs.index(change_at)]):
            at = runs.index(change_at)
            ax.plot([at], [ys[at]], "o", color=_CHANGE, ms=8, zorder=5)
        if not runs or all(math.isnan(y) for y in ys):
            ax.text(0.5, 0.5, "no values", transform=ax.transAxes, ha="center", va="center")

        ax.set_xlim(-0.5, max(len(runs) - 0.5, 0.5))
        ax.xaxis.set_major_locator(MaxNLocator(nbins=MAX_TICKS, integer=True))
        ax.xaxis.set_major_formatter(
            FuncFormatter(lambda x, _pos: labels[int(x)] if 0 <= int(x) < len(labels) else "")
        )
        ax.tick_params(axis="x", labelrotation=30)
        ax.grid(True, color="#dddddd", lw=0.8)
        ax.set_axisbelow(True)
        ax.legend(loc="best", fontsize=9, framealpha=0.9)

        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        try:
            fig.savefig(tmp, format="png", dpi=DPI, metadata={"Software": None})
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
    fsync_dir(path.parent)
    return path


#: Settings that make the picture independent of the user's matplotlibrc and readable small.
_RC: Any = {  # (matplotlib types its keys as literals)
    "font.family": "DejaVu Sans",  # shipped with matplotlib: the same glyphs everywhere
    "font.size": 11,
    "axes.titlesize": 12,
    "axes.labelsize": 11,
    "xtick.labelsize": 10,
    "ytick.labelsize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "text.parse_math": False,  # names are untrusted text: a ``$`` is not mathtext
    "path.simplify": True,
}


def _wrap(title: str) -> str:
    """At most two lines of :data:`MAX_TITLE` characters, cut with an ellipsis."""
    text = " ".join(title.split())
    if len(text) <= MAX_TITLE:
        return text
    cut = text.rfind(" ", 0, MAX_TITLE + 1)
    cut = cut if cut > MAX_TITLE // 2 else MAX_TITLE
    first, rest = text[:cut].rstrip(), text[cut:].lstrip()
    if len(rest) > MAX_TITLE:
        rest = rest[: MAX_TITLE - 1] + "…"
    return f"{first}\n{rest}"
