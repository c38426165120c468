"""The analysis of a new run: the history, the comparison CSVs, the alerts and a summary.

The history is the inference CSVs of every successful run from FIRST_DIR on, read from the
incremental cache, each run parsed once into its digest (``bench.analysis.digest``): the
comparisons take a file's lines from each run's digest, the detector one long table (run,
file, parameter, value) built from the digests' values. The comparison files are
gas_parameter_diff's, assembled as the old watcher did (``bench.analysis.gpd``); the alerts
follow the legacy rule (the default until a better detector lands). A file that cannot be read
is listed in the summary with the run, the file, the line and the reason; every other file is
analysed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bench.analysis.history import apply_renamings, load_renamings
from bench.errors import BenchError, ConfigError
from bench.markers import atomic_write, fsync_dir
from bench.runs import InvalidRunName, RunId, parse_run_name

log = logging.getLogger(__name__)

SUMMARY_FORMAT = 1
#: Slack's limits on one message (Block Kit).
MAX_BLOCKS = 50
MAX_SECTION_TEXT = 3000
WORST_SHOWN = 5


@dataclass(frozen=True)
class Alert:
    file: str
    parameter: str
    against: str  # "reference" or "previous"
    baseline_run: str
    baseline: float
    value: float
    change_pct: float  # the tool's symmetric CHANGE (%)

    @property
    def direction(self) -> str:
        return "regression" if self.value > self.baseline else "improvement"

    @property
    def relative_pct(self) -> float:
        """Signed change from the baseline, in % of the baseline."""
        if self.baseline == 0:
            return math.inf if self.value > 0 else -math.inf
        return 100.0 * (self.value - self.baseline) / abs(self.baseline)


def analyse_run(
    settings: Any,
    *,
    store: Any,
    cache_dir: Path,
    run: RunId,
    report_dir: Path,
    options: Any,
) -> dict[str, Any]:
    """Analyse ``run`` against its history; write the report files; return the summary."""
    from bench.analysis.gpd import Diff, compare_file
    from bench.store.cache import RunCache
    from bench.watch import write_summary

    started = time.perf_counter()
    cache = RunCache(store, cache_dir)
    listed = [r for r in store.list_runs() if r <= run]
    successful = [r for r in listed if cache.has(r) or store.has_success(r)]
    if run not in successful:
        raise BenchError(f"{run} has no SUCCESS in {store.url}: it cannot be analysed")
    synced = cache.sync(successful)
    if synced.downloaded:
        log.info(
            "downloaded %d new run(s) into the cache (%d files)",
            len(synced.downloaded),
            synced.files,
        )

    synced_at = time.perf_counter()
    first = _pick(options.first_dir, successful, "FIRST_DIR") or successful[0]
    history_runs = [r for r in successful if r >= first]
    ref_explicit = bool(options.ref_dir)
    reference = _pick(options.ref_dir, successful, "REF_DIR") or first
    earlier = [r for r in successful if r < run]
    previous = earlier[-1] if earlier else None
    renamings = load_renamings(options.renamings)

    problems: list[dict[str, Any]] = [
        {"run": "", "file": key, "line": None, "reason": "refused key in the store"}
        for key in synced.rejected
    ]
    needed = set(history_runs) | {reference, run} | ({previous} if previous else set())
    history = _History(cache, sorted(needed), renamings)
    for r in sorted(needed):
        for name, (line, reason) in sorted(history.digests[r].problems.items()):
            problems.append({"run": r.name, "file": name, "line": line, "reason": reason})
            where = f"{cache.path(r) / name}" + (f":{line}" if line is not None else "")
            log.warning("unreadable: %s: %s", where, reason)

    newest_files = sorted(history.digests[run].files)
    reports = []
    alerts: list[Alert] = []
    with _Outputs(report_dir) as outputs:
        for name in newest_files:
            report = compare_file(
                name,
                history=[
                    c for c in (history.column(r, name) for r in history_runs) if c is not None
                ],
                newest=history.column(run, name),
                reference=history.column(reference, name),
                previous=history.column(previous, name),
                ref_explicit=ref_explicit,
                newest_run=run.name,
                reference_run=reference.name if reference != run else None,
                previous_run=previous.name if previous else None,
            )
            outputs.write(report)
            # The ``all`` table (a column per run of the history) is on disk now: let it go.
            reports.append(replace(report, all=Diff("", [], {}, report.all.header)))
            alerts += _alerts(report, name, history, run, reference, previous)

    previous_files = set(history.digests[previous].files) if previous else set()
    parameters = sum(len(history.names(run, n)) for n in newest_files)
    series = _series(alerts, history, sorted(set(history_runs) | {reference}))
    table = history.table(sorted(set(history_runs) | {run}))
    del history  # the detector's arrays come next: the digests are no longer needed
    _give_back_freed_memory()
    if settings.watch.detector == "default":
        changes, events = _detect(settings, table, run, reference, report_dir, options)
    else:
        changes, events = _legacy_changes(alerts), []
    summary = _summary(
        run=run,
        first=first,
        reference=reference,
        previous=previous,
        history=history_runs,
        reports=reports,
        new_files=sorted(set(newest_files) - previous_files) if previous else [],
        removed_files=sorted(previous_files - set(newest_files)),
        problems=problems,
        parameters=parameters,
        table_rows=len(table),
        changes=changes,
        events=events,
        detector=settings.watch.detector,
    )
    del table
    from bench.report import write_index, write_report

    analysed_at = time.perf_counter()
    html, plots = write_report(report_dir, summary, series)
    summary["html"] = html.relative_to(report_dir).as_posix()
    summary["plots"] = [p.relative_to(report_dir).as_posix() for p in plots]
    rendered_at = time.perf_counter()
    summary["seconds"] = {
        "sync": round(synced_at - started, 3),
        "analysis": round(analysed_at - synced_at, 3),
        "render": round(rendered_at - analysed_at, 3),
    }
    log.info(
        "analysed %s: %d files, %d values of %d runs in %.1f s (cache sync %.1f s); "
        "page and %d plot(s) in %.1f s",
        run,
        len(reports),
        summary["history_values"],
        len(history_runs),
        analysed_at - synced_at,
        synced_at - started,
        len(plots),
        rendered_at - analysed_at,
    )
    write_summary(report_dir, summary)  # last: its presence means the report is complete
    write_index(report_dir.parent)
    return summary


class _History:
    """The CSVs of the runs an analysis reads, from their digests, with the renamings applied
    to the parameter names."""

    def __init__(self, cache: Any, runs: list[RunId], renamings: dict[str, str]) -> None:
        from bench.analysis.digest import load_digest

        self.digests = {r: load_digest(cache.path(r)) for r in runs}
        self.renamings = renamings
        self._renamed: dict[str, tuple[str, ...]] = {}  # names line -> renamed names
        self._headers: dict[str, tuple[str, ...]] = {}  # names line -> names as read

    def has(self, r: RunId | None, file: str) -> bool:
        return r is not None and file in self.digests[r].files

    def names(self, r: RunId, file: str) -> tuple[str, ...]:
        """The parameters of ``file`` in ``r`` (renamed), in file order."""
        line = self.digests[r].files[file][0]
        names = self._renamed.get(line)
        if names is None:
            names = self._renamed[line] = _renamed(self._header(line), self.renamings)
        return names

    def column(self, r: RunId | None, file: str) -> Any:
        """``file`` of ``r`` as a gas_parameter_diff column; None when ``r`` lacks it."""
        from bench.analysis.gpd import Column

        if r is None or not self.has(r, file):
            return None
        digest = self.digests[r]
        return Column(
            label=f"input_csvs/{r.name}/{file}",
            names=self.names(r, file),
            texts=digest.texts(file),
            values=tuple(digest.numbers(file).tolist()),
        )

    def values(self, r: RunId | None, file: str) -> dict[str, float]:
        """``{parameter: value}`` of ``file`` in ``r`` (empty when ``r`` lacks it)."""
        if r is None or not self.has(r, file):
            return {}
        numbers = self.digests[r].numbers(file).tolist()
        return dict(zip(self.names(r, file), numbers, strict=True))

    def table(self, runs: list[RunId]) -> Any:
        """The long table (run, file, parameter, value) of ``runs``, for the detector."""
        from bench.analysis.history import TableBuilder

        builder = TableBuilder((r.name for r in runs), self.renamings)
        for code, r in enumerate(runs):
            digest = self.digests[r]
            files = [(file, self._header(line)) for file, (line, _texts) in digest.files.items()]
            builder.add_run(code, files, digest.values)
        return builder.table()

    def _header(self, line: str) -> tuple[str, ...]:
        """The names of a names line as read (one tuple per distinct line)."""
        names = self._headers.get(line)
        if names is None:
            names = self._headers[line] = tuple(line.split(",")) if line else ()
        return names


class _Outputs:
    """The old watcher's output files, written a file's sections at a time (the ``all`` table
    of a large history is tens of MB) and renamed into place when every file was written."""

    def __init__(self, report_dir: Path) -> None:
        from bench.analysis.gpd import OUTPUT_FILES

        self.paths = {name: report_dir / name for name in OUTPUT_FILES}
        self.tmps = {
            name: path.with_name(f".{path.name}.tmp{os.getpid()}")
            for name, path in self.paths.items()
        }
        self.handles: dict[str, Any] = {}

    def __enter__(self) -> _Outputs:
        for name, tmp in self.tmps.items():
            self.handles[name] = tmp.open("w", encoding="utf-8")
        return self

    def write(self, report: Any) -> None:
        from bench.analysis.gpd import sections

        for name, text in sections(report).items():
            self.handles[name].write(text)

    def __exit__(self, kind: object, *exc: object) -> None:
        try:
            for handle in self.handles.values():
                if kind is None:
                    handle.flush()
                    os.fsync(handle.fileno())
                handle.close()
            if kind is None:
                for name, tmp in self.tmps.items():
                    os.replace(tmp, self.paths[name])
                fsync_dir(next(iter(self.paths.values())).parent)
        finally:
            for tmp in self.tmps.values():
                with contextlib.suppress(OSError):
                    tmp.unlink()


def _series(
    alerts: list[Alert], history: _History, runs: list[RunId]
) -> dict[tuple[str, str], list[tuple[str, float]]]:
    """The history of every alerted parameter, for the plots."""
    series: dict[tuple[str, str], list[tuple[str, float]]] = {}
    for alert in alerts:
        key = (alert.file, alert.parameter)
        if key in series:
            continue
        points = []
        for r in runs:
            values = history.values(r, alert.file)
            if alert.parameter in values:
                points.append((r.name, values[alert.parameter]))
        series[key] = points
    return series


def _pick(text: str, runs: list[RunId], what: str) -> RunId | None:
    if not text:
        return None
    try:
        run = parse_run_name(text)
    except InvalidRunName as err:
        raise ConfigError(f"{what}: {err}") from None
    if run not in runs:
        raise ConfigError(
            f"{what} = {run} is not a successful run of the store",
            hint="choose a run that has SUCCESS (see the store's complete_results/)",
        )
    return run


def _renamed(names: Iterable[str], renamings: dict[str, str]) -> tuple[str, ...]:
    return tuple(apply_renamings(names, renamings))


def _alerts(
    report: Any,
    name: str,
    history: _History,
    run: RunId,
    reference: RunId,
    previous: RunId | None,
) -> list[Alert]:
    from bench.analysis.gpd import legacy_alert_lines, regression_name

    newest = history.values(run, name)
    found = []
    for against, base_run, diff in (
        ("reference", reference, report.reference),
        ("previous", previous, report.previous),
    ):
        if diff is None or base_run is None:
            continue
        base = history.values(base_run, name)
        for line in legacy_alert_lines(diff):
            parameter = regression_name(line) if "%" in line else None
            if parameter is None or parameter not in base or parameter not in newest:
                continue
            change = float(line.split("%", 1)[0])
            found.append(
                Alert(
                    name,
                    parameter,
                    against,
                    base_run.name,
                    base[parameter],
                    newest[parameter],
                    change,
                )
            )
    return found


DETECTOR_STATE = "detector_state.json"


def _give_back_freed_memory() -> None:
    """Hand the free pages of the heap back to the system (glibc's ``malloc_trim``).

    The digests of a large history are some 90,000 strings and small objects (150 MB at the
    large scale of ``python -m bench.perf``). Once dropped, glibc keeps their pages for later
    small allocations, while the detector's arrays are new mappings: without this, the two
    add up in the watcher's peak memory. Where there is no glibc, nothing is done.
    """
    import ctypes

    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError):
        return
    trim(0)


def _detect(
    settings: Any,
    table: Any,
    run: RunId,
    reference: RunId,
    report_dir: Path,
    options: Any,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The default detector at ``run``, from the state saved when the previous report was
    delivered; the new state waits in the report directory until this one is delivered."""
    from bench.analysis.detect import (
        CHANGE_KINDS,
        DetectorSettings,
        DetectorState,
        SettingsError,
        detect_latest,
        sort_alerts,
    )

    source = f"{settings.config_file or 'configuration'} [detect]"
    try:
        detector_settings = DetectorSettings.from_mapping(settings.detect, source=source)
    except SettingsError as err:
        raise ConfigError(str(err)) from None
    state = None
    saved = settings.watch.root / DETECTOR_STATE
    if saved.exists() and not getattr(options, "rerun", None):
        state = DetectorState.from_json(saved.read_text(encoding="utf-8"))
        if state.last_run is not None and state.last_run >= run.name:
            state = None  # an older run analysed again: judge it on its own history
    found, new_state = detect_latest(
        table, settings=detector_settings, state=state, run=run.name, reference=reference.name
    )
    atomic_write(report_dir / DETECTOR_STATE, new_state.to_json())
    changes, events = [], []
    for alert in sort_alerts(found):
        data = alert.to_dict()
        if alert.kind in CHANGE_KINDS or alert.kind == "run_shift":
            magnitude = data["magnitude_pct"]
            signed = math.inf if magnitude is None else magnitude
            data["relative_pct"] = signed if alert.direction == "regression" else -signed
            data["against"] = "its recent history"
            changes.append(data)
        elif alert.kind == "noisy_run":
            events.append(data)
    return changes, events


def _legacy_changes(alerts: list[Alert]) -> list[dict[str, Any]]:
    """The legacy rule's alerts, one per parameter (the larger change wins)."""
    by_parameter: dict[tuple[str, str], Alert] = {}
    for alert in alerts:
        key = (alert.file, alert.parameter)
        best = by_parameter.get(key)
        if best is None or abs(alert.relative_pct) > abs(best.relative_pct):
            by_parameter[key] = alert
    distinct = sorted(
        by_parameter.values(),
        key=lambda a: (a.direction != "regression", -abs(a.relative_pct)),
    )
    return [_alert_dict(a) for a in distinct]


def _summary(
    *,
    run: RunId,
    first: RunId,
    reference: RunId,
    previous: RunId | None,
    history: list[RunId],
    reports: list[Any],
    new_files: list[str],
    removed_files: list[str],
    problems: list[dict[str, Any]],
    parameters: int,
    table_rows: int,
    changes: list[dict[str, Any]],
    events: list[dict[str, Any]],
    detector: str,
) -> dict[str, Any]:
    regressions = [c for c in changes if c["direction"] == "regression"]
    improvements = [c for c in changes if c["direction"] == "improvement"]
    new_params: list[str] = []
    removed_params: list[str] = []
    for report in reports:
        for diff in (report.previous,):
            if diff is None:
                continue
            for line in diff.stderr:
                if line.endswith(" is new."):
                    new_params.append(f"{report.name}: {line[: -len(' is new.')]}")
                elif line.endswith(" is removed."):
                    removed_params.append(f"{report.name}: {line[: -len(' is removed.')]}")
    return {
        "format": SUMMARY_FORMAT,
        "run": run.name,
        "first": first.name,
        "reference": reference.name,
        "previous": previous.name if previous else None,
        "runs_in_history": len(history),
        "history_values": table_rows,
        "detector": detector,
        "counts": {
            "files": len(reports),
            "parameters": parameters,
            "regressions": len(regressions),
            "improvements": len(improvements),
            "new_parameters": len(new_params),
            "removed_parameters": len(removed_params),
            "unreadable_files": len(problems),
        },
        "changes": changes,
        "events": events,
        "new_parameters": new_params,
        "removed_parameters": removed_params,
        "new_files": new_files,
        "removed_files": removed_files,
        "problems": problems,
    }


def _alert_dict(alert: Alert) -> dict[str, Any]:
    return {
        "file": alert.file,
        "parameter": alert.parameter,
        "direction": alert.direction,
        "kind": "legacy",
        "reason": "",
        "score": None,
        "against": alert.against,
        "baseline_run": alert.baseline_run,
        "baseline": alert.baseline,
        "value": alert.value,
        "relative_pct": alert.relative_pct,
        "change_pct": alert.change_pct,
    }


# --- the message ----------


def render_summary(summary: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """The summary message: text and Block Kit blocks, within Slack's limits (pure)."""
    from bench.notify import template_environment

    env = template_environment()
    context = {
        "s": summary,
        "regressions": [c for c in summary["changes"] if c["direction"] == "regression"],
        "improvements": [c for c in summary["changes"] if c["direction"] == "improvement"],
        "shown": WORST_SHOWN,
    }
    text = env.get_template("watch_summary.txt.j2").render(**context).strip()
    raw = env.get_template("watch_summary.blocks.json.j2").render(**context)
    blocks = json.loads(raw)
    return text, _within_limits(blocks)


def _within_limits(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for block in blocks:
        text = block.get("text")
        if isinstance(text, dict) and len(text.get("text", "")) > MAX_SECTION_TEXT:
            text["text"] = text["text"][: MAX_SECTION_TEXT - 20] + "\n… (truncated)"
        out.append(block)
    if len(out) > MAX_BLOCKS:
        more = {
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": "… more in the attached files"}],
        }
        out = [*out[: MAX_BLOCKS - 1], more]
    return out


def fmt_pct(value: float | None) -> str:
    if value is None:
        return "?"
    if math.isinf(value):
        return "from 0"
    return f"{abs(value):.1f}%"


def fmt_number(value: float | None) -> str:
    return "?" if value is None else f"{value:.6g}"
