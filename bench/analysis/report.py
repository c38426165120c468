"""The analysis of a new run: the history, the comparison CSVs, the alerts and a summary.

The history is the inference CSVs of every successful run from FIRST_DIR on, read from the
incremental cache into one long table (run, file, parameter, value). The comparison files are
gas_parameter_diff's, assembled as the old watcher did (``bench.analysis.gpd``); the alerts
follow the legacy rule (the default until a better detector lands). A file that cannot be read
is listed in the summary with the run, the file, the line and the reason; every other file is
analysed.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.analysis.history import apply_renamings, load_renamings
from bench.errors import BenchError, ConfigError
from bench.markers import atomic_write
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
    from bench.analysis.gpd import Column, assemble, compare_file
    from bench.snoop import SnoopFormatError, read_inference_csv
    from bench.store.cache import RunCache
    from bench.watch import write_summary

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
    parsed: dict[tuple[RunId, str], Any] = {}
    needed = set(history_runs) | {reference, run} | ({previous} if previous else set())
    for r in sorted(needed):
        for path in sorted(cache.path(r).glob("*.csv")):
            try:
                parsed[(r, path.name)] = read_inference_csv(path)
            except SnoopFormatError as err:
                problems.append(
                    {"run": r.name, "file": path.name, "line": err.line, "reason": err.reason}
                )
                log.warning("unreadable: %s", err)

    def column(r: RunId | None, name: str) -> Column | None:
        if r is None or (r, name) not in parsed:
            return None
        data = parsed[(r, name)]
        names = _renamed(data.names, renamings)
        return Column(label=f"input_csvs/{r.name}/{name}", names=names, texts=data.texts)

    newest_files = sorted(p.name for p in cache.path(run).glob("*.csv"))
    reports = []
    alerts: list[Alert] = []
    for name in newest_files:
        newest = column(run, name)
        if newest is None:
            continue  # unreadable: listed in problems
        report = compare_file(
            name,
            history=[c for c in (column(r, name) for r in history_runs) if c is not None],
            newest=newest,
            reference=column(reference, name),
            previous=column(previous, name),
            ref_explicit=ref_explicit,
            newest_run=run.name,
            reference_run=reference.name if reference != run else None,
            previous_run=previous.name if previous else None,
        )
        reports.append(report)
        alerts += _alerts(report, name, parsed, run, reference, previous, renamings)

    for filename, text in assemble(reports).items():
        atomic_write(report_dir / filename, text)

    previous_files = {n for (r, n) in parsed if r == previous} if previous else set()
    table = _long_table(parsed, sorted(set(history_runs) | {run}), renamings)
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
        parameters=sum(len(parsed[(run, n)].names) for n in newest_files if (run, n) in parsed),
        table_rows=len(table),
        changes=changes,
        events=events,
        detector=settings.watch.detector,
    )
    from bench.report import write_index, write_report

    series = _series(alerts, parsed, sorted(set(history_runs) | {reference}), renamings)
    html, plots = write_report(report_dir, summary, series)
    summary["html"] = html.relative_to(report_dir).as_posix()
    summary["plots"] = [p.relative_to(report_dir).as_posix() for p in plots]
    write_summary(report_dir, summary)  # last: its presence means the report is complete
    write_index(report_dir.parent)
    return summary


def _series(
    alerts: list[Alert],
    parsed: dict[tuple[RunId, str], Any],
    runs: list[RunId],
    renamings: dict[str, str],
) -> dict[tuple[str, str], list[tuple[str, float]]]:
    """The history of every alerted parameter, for the plots."""
    series: dict[tuple[str, str], list[tuple[str, float]]] = {}
    for alert in alerts:
        key = (alert.file, alert.parameter)
        if key in series:
            continue
        points = []
        for r in runs:
            data = parsed.get((r, alert.file))
            if data is None:
                continue
            values = dict(zip(_renamed(data.names, renamings), data.values, strict=True))
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
    parsed: dict[tuple[RunId, str], Any],
    run: RunId,
    reference: RunId,
    previous: RunId | None,
    renamings: dict[str, str],
) -> list[Alert]:
    from bench.analysis.gpd import legacy_alert_lines, regression_name

    def values(r: RunId | None) -> dict[str, float]:
        if r is None or (r, name) not in parsed:
            return {}
        data = parsed[(r, name)]
        return dict(zip(_renamed(data.names, renamings), data.values, strict=True))

    newest = values(run)
    found = []
    for against, base_run, diff in (
        ("reference", reference, report.reference),
        ("previous", previous, report.previous),
    ):
        if diff is None or base_run is None:
            continue
        base = values(base_run)
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


def _long_table(
    parsed: dict[tuple[RunId, str], Any], runs: list[RunId], renamings: dict[str, str]
) -> Any:
    """The history as one long table: run, file, parameter, value (renamings applied)."""
    import pandas as pd

    wanted = set(runs)
    frames = [
        pd.DataFrame(
            {
                "run": r.name,
                "file": name,
                "parameter": list(_renamed(data.names, renamings)),
                "value": list(data.values),
            }
        )
        for (r, name), data in parsed.items()
        if r in wanted
    ]
    if not frames:
        return pd.DataFrame(columns=["run", "file", "parameter", "value"])
    return pd.concat(frames, ignore_index=True)


DETECTOR_STATE = "detector_state.json"


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
