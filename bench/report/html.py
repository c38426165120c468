"""The HTML report of an analysed run, and the index page over all of them.

Each page is built in two steps (house style 6): a pure function turns the analysis summary
(``reports/<run>/summary.json``, see :func:`bench.analysis.report._summary`) into the data the
page shows, with every limit applied there (:func:`build_report`, :func:`build_index`); a
Jinja2 template with autoescaping on renders it (parameter names, file names and reasons are
untrusted text). The writers put the pages and the plots on disk::

    reports/index.html                  the dashboard: every analysed run, newest first
    reports/<run>/index.html            the report of a run
    reports/<run>/plots/<n>-<name>.png  the history of each alerted parameter

Pages use relative links only and no external resources: the ``reports/`` directory can be
served as it is by any web server, or opened from disk.

jinja2 and matplotlib are imported inside the functions that need them.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from bench.markers import atomic_write
from bench.runs import RUN_NAME_RE, InvalidRunName, parse_run_name
from bench.watch import SUMMARY

log = logging.getLogger(__name__)

REPORT_FORMAT = 1
INDEX = "index.html"
PLOTS = "plots"
#: Plots drawn per report (regressions first): the rest of the alerts are listed without one.
MAX_PLOTS = 20
#: Items shown per list (alerts, unreadable files, new/removed parameters and files).
MAX_LISTED = 500
_SAFE = re.compile(r"[^A-Za-z0-9_-]+")
_PLOT_FILE = re.compile(r"^\d+-.*\.png$")
_RERUN = ".rerun-"
_DIRECTION_ORDER = {"regression": 0, "improvement": 1}
_COUNTS = (
    ("regressions", "regressions"),
    ("improvements", "improvements"),
    ("parameters", "parameters"),
    ("files", "files"),
    ("new_parameters", "new parameters"),
    ("removed_parameters", "removed parameters"),
    ("unreadable_files", "unreadable files"),
)

Series = Mapping[tuple[str, str], Sequence[tuple[str, float]]]


# --- the report of one run ----------


def build_report(summary: dict[str, Any], series: Series) -> dict[str, Any]:
    """The data the page of ``summary``'s run shows (pure, JSON-ready).

    ``series`` maps ``(file, parameter)`` to ``[(run, value), ...]``, the history of each
    alerted parameter. Alerts are listed regressions first, then improvements, then anything
    else, each group in the summary's order; the first :data:`MAX_PLOTS` alerts with a
    history get a plot (``plots/<n>-<name>.png``, relative to the page).
    """
    run = str(summary["run"])
    reference = summary.get("reference")
    changes = sorted(
        summary.get("changes") or [],
        key=lambda c: _DIRECTION_ORDER.get(str(c.get("direction")), 2),
    )
    plots: list[dict[str, Any]] = []
    plot_of: dict[tuple[str, str], str] = {}
    alerts: list[dict[str, Any]] = []
    for number, change in enumerate(changes[:MAX_LISTED], 1):
        key = (str(change.get("file", "")), str(change.get("parameter", "")))
        points = sorted(series.get(key) or (), key=lambda point: point[0])
        if key not in plot_of and points and len(plots) < MAX_PLOTS:
            runs = [str(r) for r, _ in points]
            since = change.get("since")
            change_at = next((r for r in (since, run) if r in runs), None)
            path = f"{PLOTS}/{len(plots) + 1:02d}-{safe_name(*key)}.png"
            plot: dict[str, Any] = {
                "number": len(plots) + 1,
                "path": path,
                "alert": number,
                "file": key[0],
                "parameter": key[1],
                "title": f"{key[1]} ({key[0]})",
                "caption": _caption(change),
                "direction": str(change.get("direction", "")),
                "runs": runs,
                "values": [_float(v) for _, v in points],
                "reference": reference if reference in runs else None,
                "change_at": change_at,
                "baseline": _finite(change.get("baseline")),
            }
            plots.append(plot)
            plot_of[key] = path
        alerts.append(_alert_row(number, change, plot_of.get(key)))

    optional = {
        name: any(change.get(name) not in (None, "") for change in changes)
        for name in ("kind", "score", "noise", "reason")
    }
    counts = summary.get("counts") or {}
    regressions = int(counts.get("regressions", 0) or 0)
    improvements = int(counts.get("improvements", 0) or 0)
    unreadable = int(counts.get("unreadable_files", 0) or 0)
    return {
        "format": REPORT_FORMAT,
        "title": f"Benchmark report {run}",
        "run": run,
        "date": run_date(run),
        "previous": summary.get("previous"),
        "reference": reference,
        "first": summary.get("first"),
        "detector": summary.get("detector"),
        "runs_in_history": summary.get("runs_in_history"),
        "status": _status(regressions, improvements, unreadable),
        "headline": _headline(regressions, improvements, unreadable),
        "counts": _count_cells(counts),
        "alerts": alerts,
        "alerts_omitted": max(0, len(changes) - MAX_LISTED),
        "columns": optional,
        "plots": plots,
        "alerts_without_plot": sum(1 for a in alerts if a["plot"] is None),
        "problems": [_problem(p) for p in (summary.get("problems") or [])[:MAX_LISTED]],
        "problems_omitted": max(0, len(summary.get("problems") or []) - MAX_LISTED),
        "lists": [
            _listing(title, summary.get(key) or [])
            for key, title in (
                ("new_parameters", "New parameters"),
                ("removed_parameters", "Removed parameters"),
                ("new_files", "New files"),
                ("removed_files", "Removed files"),
            )
        ],
    }


def render_report(report: dict[str, Any]) -> str:
    """The HTML of a report built by :func:`build_report` (pure)."""
    return str(_environment().get_template("report.html.j2").render(r=report))


def write_report(
    report_dir: Path, summary: dict[str, Any], series: Series
) -> tuple[Path, list[Path]]:
    """Write ``report_dir/index.html`` and its plots; return the page and the plots in display
    order (regressions first: the first ones are the ones to attach to a message).

    Plots left in ``report_dir/plots/`` by an earlier rendering that are no longer shown are
    removed; the page is written last and atomically.
    """
    from bench.report.plots import plot_series

    report = build_report(summary, series)
    paths = []
    for plot in report["plots"]:
        path = plot_series(
            report_dir / plot["path"],
            title=plot["title"],
            runs=plot["runs"],
            values=plot["values"],
            reference=plot["reference"],
            change_at=plot["change_at"],
            baseline=plot["baseline"],
        )
        paths.append(path)
    plots_dir = report_dir / PLOTS
    if plots_dir.is_dir():
        keep = {p.name for p in paths}
        for stale in plots_dir.iterdir():
            if _PLOT_FILE.match(stale.name) and stale.name not in keep:
                stale.unlink()
    page = report_dir / INDEX
    atomic_write(page, render_report(report))
    log.info("HTML report: %s (%d plot(s))", page, len(paths))
    return page, paths


# --- the index of all runs ----------


def build_index(entries: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The data of the dashboard (pure): ``entries`` are ``{"dir", "summary", "error",
    "page"}`` per report directory (``summary`` a dict or None, ``error`` why it could not be
    read, ``page`` whether it has an ``index.html``); rows come newest first."""
    rows = []
    for entry in entries:
        name = str(entry["dir"])
        key = _report_key(name)
        if key is None:
            continue
        run, rerun = key
        summary = entry.get("summary") or {}
        counts = summary.get("counts") or {}
        regressions = int(counts.get("regressions", 0) or 0)
        improvements = int(counts.get("improvements", 0) or 0)
        unreadable = int(counts.get("unreadable_files", 0) or 0)
        link = f"{quote(name)}/{INDEX}" if entry.get("page") else f"{quote(name)}/{SUMMARY}"
        rows.append(
            {
                "key": (run, rerun),
                "dir": name,
                "run": run,
                "rerun": rerun,
                "date": run_date(run),
                "href": link,
                "has_page": bool(entry.get("page")),
                "error": entry.get("error"),
                "previous": summary.get("previous"),
                "reference": summary.get("reference"),
                "reference_date": run_date(str(summary.get("reference") or "")),
                "regressions": regressions,
                "improvements": improvements,
                "parameters": counts.get("parameters"),
                "new_parameters": counts.get("new_parameters", 0),
                "removed_parameters": counts.get("removed_parameters", 0),
                "unreadable_files": unreadable,
                "status": "error" if entry.get("error") else _status(regressions, improvements, 0),
            }
        )
    rows.sort(key=lambda row: row["key"], reverse=True)
    for row in rows:
        del row["key"]
    return {
        "format": REPORT_FORMAT,
        "title": "Benchmark reports",
        "rows": rows,
        "runs": len({row["run"] for row in rows}),
        "with_regressions": sum(1 for row in rows if row["regressions"]),
        "newest": rows[0]["run"] if rows else None,
    }


def render_index(index: dict[str, Any]) -> str:
    """The HTML of the dashboard built by :func:`build_index` (pure)."""
    return str(_environment().get_template("index.html.j2").render(ix=index))


def write_index(reports_root: Path) -> Path:
    """Write ``reports_root/index.html`` over every ``reports_root/<run>[.rerun-<n>]/`` that has
    a ``summary.json`` (the analysis writes it last); return its path."""
    entries = []
    children = sorted(reports_root.iterdir()) if reports_root.is_dir() else []
    for child in children:
        if not child.is_dir() or _report_key(child.name) is None:
            continue
        path = child / SUMMARY
        if not path.is_file():
            continue  # still being analysed, or never finished
        summary: Any = None
        error = None
        try:
            summary = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(summary, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as err:
            summary, error = None, f"unreadable {SUMMARY}: {err}"
            log.warning("%s: %s", path, error)
        entries.append(
            {
                "dir": child.name,
                "summary": summary,
                "error": error,
                "page": (child / INDEX).is_file(),
            }
        )
    page = reports_root / INDEX
    reports_root.mkdir(parents=True, exist_ok=True)
    atomic_write(page, render_index(build_index(entries)))
    return page


# --- helpers ----------


def safe_name(file: str, parameter: str) -> str:
    """A file-name-safe, bounded rendering of ``file``/``parameter`` (untrusted text)."""
    stem = file.rsplit(".", 1)[0] if file.endswith(".csv") else file
    name = _SAFE.sub("_", f"{stem}-{parameter}").strip("_-")
    return name[:60] or "parameter"


def run_date(run: str) -> str:
    """``YYYY-MM-DD HH:MM`` from a run name, ``""`` if it is not one."""
    m = RUN_NAME_RE.match(run)
    if m is None:
        return ""
    d, t = m["date"], m["time"]
    return f"{d[:4]}-{d[4:6]}-{d[6:]} {t[:2]}:{t[2:]}"


def _report_key(name: str) -> tuple[str, int] | None:
    """``(run, rerun number)`` of a report directory's name, None if it is not one."""
    base, sep, number = name.partition(_RERUN)
    if sep and not number.isdigit():
        return None
    try:
        run = parse_run_name(base)
    except InvalidRunName:
        return None
    if run.name != base:
        return None
    return run.name, int(number) if sep else 0


def _alert_row(number: int, change: Mapping[str, Any], plot: str | None) -> dict[str, Any]:
    score = _finite(change.get("score"))
    noise = _finite(change.get("noise"))
    return {
        "number": number,
        "file": str(change.get("file", "")),
        "parameter": str(change.get("parameter", "")),
        "direction": str(change.get("direction", "")),
        "kind": str(change.get("kind") or ""),
        "against": str(change.get("against") or ""),
        "baseline_run": str(change.get("baseline_run") or ""),
        "baseline": _number(change.get("baseline")),
        "value": _number(change.get("value")),
        "magnitude": _magnitude(change),
        "change_pct": _finite(change.get("change_pct")),
        "score": f"{score:.1f}" if score is not None else "",
        "noise": _number(noise) if noise is not None else "",
        "reason": str(change.get("reason") or ""),
        "plot": plot,
    }


def _magnitude(change: Mapping[str, Any]) -> str:
    """The change relative to the baseline, signed: ``+25.0%``, ``−3.1%``, ``from 0``."""
    relative = change.get("relative_pct")
    if relative is None and change.get("magnitude_pct") is not None:
        size = float(change["magnitude_pct"])
        relative = -size if change.get("direction") == "improvement" else size
    if relative is None:
        return "—"
    value = float(relative)
    if math.isinf(value):
        return "from 0"
    if math.isnan(value):
        return "—"
    return f"{'+' if value >= 0 else '−'}{abs(value):.1f}%"


def _caption(change: Mapping[str, Any]) -> str:
    direction = str(change.get("direction", "")) or "change"
    against = change.get("against")
    text = f"{direction} {_magnitude(change)}"
    if against:
        text += f" vs {against}"
    return f"{text}: {_number(change.get('baseline'))} → {_number(change.get('value'))}"


def _count_cells(counts: Mapping[str, Any]) -> list[dict[str, Any]]:
    known = [(key, label) for key, label in _COUNTS if key in counts]
    extra = [(key, key.replace("_", " ")) for key in sorted(counts) if key not in dict(_COUNTS)]
    return [{"key": key, "label": label, "value": counts[key]} for key, label in known + extra]


def _problem(problem: Mapping[str, Any]) -> dict[str, str]:
    line = problem.get("line")
    return {
        "run": str(problem.get("run") or ""),
        "file": str(problem.get("file") or ""),
        "line": "" if line in (None, "") else str(line),
        "reason": str(problem.get("reason") or ""),
    }


def _listing(title: str, items: Sequence[Any]) -> dict[str, Any]:
    return {
        "title": title,
        "items": [str(item) for item in items[:MAX_LISTED]],
        "count": len(items),
        "omitted": max(0, len(items) - MAX_LISTED),
    }


def _status(regressions: int, improvements: int, unreadable: int) -> str:
    if regressions:
        return "regression"
    if unreadable:
        return "warning"
    return "improvement" if improvements else "ok"


def _headline(regressions: int, improvements: int, unreadable: int) -> str:
    parts = [
        _plural(regressions, "regression"),
        _plural(improvements, "improvement"),
    ]
    if unreadable:
        parts.append(_plural(unreadable, "unreadable file"))
    return ", ".join(parts)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _number(value: Any) -> str:
    number = _finite(value)
    return "—" if number is None else f"{number:.6g}"


def _finite(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _float(value: Any) -> float:
    number = _finite(value)
    return math.nan if number is None else number


@functools.cache
def _environment() -> Any:
    """The Jinja2 environment of the pages: autoescaping on for every template."""
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader("bench.report", "templates"),
        undefined=jinja2.StrictUndefined,
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
