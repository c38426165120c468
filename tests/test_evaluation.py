"""Tests of the evaluation: scoring, the SAP loader, the synthetic generator."""

from __future__ import annotations

import math

import pytest

from bench.analysis.detect import Alert
from bench.evaluation import evaluate_synthetic, main_table, targets
from bench.evaluation.sap import default_path, load_sap
from bench.evaluation.scoring import Label, score_alerts
from bench.evaluation.synthetic import Scenario, generate

RUNS = [f"r{i}" for i in range(10)]


def alert(run: str, parameter: str, direction: str = "regression", kind: str = "step") -> Alert:
    return Alert(
        run=run, file="f.csv", parameter=parameter, direction=direction, kind=kind,
        magnitude_pct=10.0, baseline=1.0, value=1.1, score=5.0, reason="",
    )  # fmt: skip


def test_scoring_on_a_hand_labelled_case() -> None:
    """TP: right series and direction, at the change's run or the next 2; the second alert
    of a change is a repeat; wrong direction, too late, or unlabelled: false alarms;
    presence alerts are not counted."""
    labels = [
        Label("f.csv", "a", "regression", "r2"),
        Label("f.csv", "b", "improvement", "r3"),
        Label("f.csv", "c", "regression", "r1"),
        Label("f.csv", "d", "regression", "r2", "r5", kind="drift"),
    ]
    alerts = [
        alert("r3", "a"),  # TP, delay 1
        alert("r4", "a"),  # repeat
        alert("r3", "b", "regression"),  # wrong direction: false alarm
        alert("r4", "c"),  # 3 runs late: false alarm
        alert("r7", "d", kind="drift"),  # drift: within 2 runs of its end: TP, delay 5
        alert("r8", "e"),  # unlabelled: false alarm
        alert("r5", "x", "improvement", kind="new_parameter"),  # not counted
    ]
    score = score_alerts(alerts, labels, runs=RUNS, parameter_runs=2000)
    assert (score.tp, score.repeats, score.false_alarms, score.info) == (2, 1, 3, 1)
    assert score.precision == pytest.approx(2 / 6)
    assert score.recall == pytest.approx(2 / 4)
    assert score.f1 == pytest.approx(2 * (1 / 3) * 0.5 / (1 / 3 + 0.5))
    assert score.fa_per_1000 == pytest.approx(1.5)
    assert score.mean_delay == pytest.approx(3.0)
    assert {label.parameter for label in score.missed} == {"b", "c"}


def test_scoring_accepts_the_json_dicts_of_bench_detect() -> None:
    """Alerts as bench-detect's JSON objects (nulls included) score like Alert objects."""
    labels = [Label("f.csv", "a", "regression", "r2")]
    data = [dict(alert("r2", "a").to_dict(), score=None)]
    assert score_alerts(data, labels, runs=RUNS, parameter_runs=10).tp == 1


def test_no_alerts_no_labels() -> None:
    """An empty case is perfect precision, recall 1, no delay."""
    score = score_alerts([], [], runs=RUNS, parameter_runs=10)
    assert (score.precision, score.recall, score.fa_per_1000) == (1.0, 1.0, 0.0)
    assert math.isnan(score.mean_delay)


@pytest.mark.skipif(not default_path().is_dir(), reason="the SAP data set is not in ../shared")
def test_sap_histories_one_run_per_build_and_five_labels() -> None:
    """25 series; the 5 regressions labelled at the build after the change point; values
    are the medians of each build's measurements."""
    series = load_sap()
    assert len(series) == 25
    labelled = {s.name: s for s in series if s.labels}
    assert sorted(labelled) == ["0002.csv", "0011.csv", "0012.csv", "0013.csv", "0016.csv"]
    s = labelled["0002.csv"]
    assert s.labels[0].start == s.runs[14] and s.runs[14].endswith("-510252")
    assert s.table["value"].iloc[14] == pytest.approx(52.582)  # median of 50.962 53.582 52.582
    assert s.table["run"].is_unique


def test_the_generator_is_seeded_and_labelled() -> None:
    """The same seed gives the same history; labels name series of the table, renamings
    name old -> new parameters."""
    scenario = Scenario(runs=30, files=6)
    first, again = generate(scenario, 5), generate(scenario, 5)
    assert first.table.equals(again.table) and first.labels == again.labels
    assert first.labels
    names = set(first.table["parameter"].astype(str)) | set(first.renamings.values())
    assert all(label.parameter in names for label in first.labels if label.file != "*")
    assert all(new in names for new in first.renamings.values())
    assert first.parameter_runs > 0


def test_default_detector_beats_the_legacy_rule_on_a_small_synthetic_set() -> None:
    """On two small synthetic histories the default detector has far fewer false alarms and
    a better F1 than the legacy rule (the evaluation runs end to end)."""
    result = evaluate_synthetic(Scenario(runs=60, files=20), [11, 12], name="small")
    default, legacy = result.scores["default"], result.scores["legacy"]
    assert default.f1 > legacy.f1 + 0.4
    assert default.fa_per_1000 < legacy.fa_per_1000 / 20
    assert "| small | default |" in main_table([result])
    assert len(targets(result, result)) == 3
