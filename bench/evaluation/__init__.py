"""Scoring the detectors side by side: ``python -m bench.evaluation`` writes docs/detection.md.

Two kinds of labelled histories (see :mod:`bench.evaluation.sap` and
:mod:`bench.evaluation.synthetic`) are replayed run by run through the legacy rule and the
default detector exactly as the watcher (and ``bench-detect --online``) would see them, and
the alerts are scored by :func:`bench.evaluation.scoring.score_alerts`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.evaluation.scoring import Label, Score, score_alerts

if TYPE_CHECKING:
    import pandas as pd

    from bench.analysis.detect import Alert, DetectorSettings
    from bench.evaluation.synthetic import Scenario

__all__ = [
    "DETECTORS",
    "Label",
    "Result",
    "Score",
    "evaluate_sap",
    "evaluate_synthetic",
    "render_markdown",
    "run_detector",
    "score_alerts",
]

DETECTORS = ("legacy", "default")
#: Synthetic seeds of the main table (never used while developing the detector).
MAIN_SEEDS = tuple(range(1000, 1010))
#: Seeds of the variants table.
VARIANT_SEEDS = tuple(range(2000, 2004))


@dataclass
class Result:
    """The scores of each detector on one set of histories."""

    name: str
    scores: dict[str, Score]
    histories: int
    runs: int
    series: int
    seconds: dict[str, float] = field(default_factory=dict)
    f1_range: dict[str, tuple[float, float]] = field(default_factory=dict)


def run_detector(
    detector: str,
    table: pd.DataFrame,
    *,
    settings: DetectorSettings | None = None,
) -> list[Alert]:
    """Every alert of ``detector`` on ``table``, at the run where it is raised (what
    ``bench-detect --online`` prints)."""
    from bench.analysis.detect import backtest

    return backtest(table, detector=detector, online=True, settings=settings)


def _evaluate(
    name: str,
    histories: Sequence[tuple[pd.DataFrame, list[Label], list[str], int]],
    *,
    settings: DetectorSettings | None,
) -> Result:
    scores: dict[str, Score] = {}
    seconds: dict[str, float] = {}
    f1_range: dict[str, tuple[float, float]] = {}
    for detector in DETECTORS:
        total = Score()
        spent = 0.0
        f1s = []
        for table, labels, runs, parameter_runs in histories:
            started = time.perf_counter()
            alerts = run_detector(detector, table, settings=settings)
            spent += time.perf_counter() - started
            score = score_alerts(alerts, labels, runs=runs, parameter_runs=parameter_runs)
            f1s.append(score.f1)
            total = total + score
        scores[detector] = total
        seconds[detector] = spent
        f1_range[detector] = (min(f1s), max(f1s))
    return Result(
        name=name,
        scores=scores,
        histories=len(histories),
        runs=sum(len(h[2]) for h in histories),
        series=sum(int(h[0][["file", "parameter"]].drop_duplicates().shape[0]) for h in histories),
        seconds=seconds,
        f1_range=f1_range,
    )


def evaluate_sap(path: Path | None = None, *, settings: DetectorSettings | None = None) -> Result:
    """Both detectors on the 25 SAP HANA series (one history each)."""
    from bench.evaluation.sap import load_sap

    series = load_sap(path)
    histories = [(s.table, s.labels, s.runs, s.parameter_runs) for s in series]
    return _evaluate("SAP HANA (25 real series)", histories, settings=settings)


def evaluate_synthetic(
    scenario: Scenario,
    seeds: Sequence[int],
    *,
    settings: DetectorSettings | None = None,
    name: str | None = None,
) -> Result:
    """Both detectors on the synthetic histories of ``scenario`` for each seed (loaded as
    ``bench-detect`` loads them: renamings applied)."""
    from bench.evaluation.synthetic import apply_renamings_to_table, generate

    histories = []
    for seed in seeds:
        history = generate(scenario, seed)
        table = apply_renamings_to_table(history.table, history.renamings)
        histories.append((table, history.labels, history.runs, history.parameter_runs))
    return _evaluate(name or scenario.name, histories, settings=settings)


# --- the report ----------


def _fmt(value: float, digits: int = 2) -> str:
    return "-" if isinstance(value, float) and math.isnan(value) else f"{value:.{digits}f}"


def table_rows(result: Result) -> list[str]:
    rows = []
    for detector in DETECTORS:
        s = result.scores[detector]
        rows.append(
            f"| {result.name} | {detector} | {s.labels} | {s.tp} | {s.false_alarms} | "
            f"{s.repeats} | {_fmt(s.precision)} | {_fmt(s.recall)} | {_fmt(s.f1)} | "
            f"{_fmt(s.fa_per_1000)} | {_fmt(s.mean_delay)} |"
        )
    return rows


TABLE_HEADER = [
    "| data | detector | changes | found | false alarms | repeats | precision | recall | F1 "
    "| false alarms / 1,000 parameter-runs | mean delay (runs) |",
    "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
]


def main_table(results: Sequence[Result]) -> str:
    lines = list(TABLE_HEADER)
    for result in results:
        lines += table_rows(result)
    return "\n".join(lines) + "\n"


def targets(sap: Result, synthetic: Result) -> list[tuple[str, bool]]:
    d_sap, d_syn = sap.scores["default"], synthetic.scores["default"]
    return [
        (
            f"SAP: at least 4 of the 5 regressions ({d_sap.tp} found) with at most 2 false "
            f"alarms in total ({d_sap.false_alarms})",
            d_sap.tp >= 4 and d_sap.false_alarms <= 2,
        ),
        (f"synthetic: F1 >= 0.8 ({d_syn.f1:.3f})", d_syn.f1 >= 0.8),
        (
            f"synthetic: at most 1 false alarm per 1,000 parameter-runs ({d_syn.fa_per_1000:.2f})",
            d_syn.fa_per_1000 <= 1.0,
        ),
    ]


def render_markdown(
    sap: Result, synthetic: Result, variants: Sequence[Result], *, settings: Any
) -> str:
    """docs/detection.md (pure)."""
    from bench.evaluation.report import render

    return render(sap=sap, synthetic=synthetic, variants=variants, settings=settings)


def run_all(
    *,
    sap_path: Path | None = None,
    seeds: Sequence[int] = MAIN_SEEDS,
    variant_seeds: Sequence[int] = VARIANT_SEEDS,
    settings: DetectorSettings | None = None,
    progress: Callable[[str], None] | None = None,
) -> tuple[Result, Result, list[Result]]:
    """The SAP, main synthetic and variant evaluations."""
    from bench.evaluation.synthetic import SCENARIOS, Scenario

    say = progress or (lambda _text: None)
    say("SAP HANA data set")
    sap = evaluate_sap(sap_path, settings=settings)
    say(f"synthetic histories, {len(seeds)} seeds")
    main = evaluate_synthetic(
        Scenario(), seeds, settings=settings, name=f"synthetic ({len(seeds)} histories)"
    )
    variants = []
    for scenario in SCENARIOS:
        say(f"variant {scenario.name}")
        variants.append(evaluate_synthetic(scenario, variant_seeds, settings=settings))
    return sap, main, variants
