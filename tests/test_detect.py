"""Tests of the detectors on small hand-built histories (bench.analysis.detect)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.analysis.detect import (
    Alert,
    DetectorSettings,
    DetectorState,
    SettingsError,
    backtest,
    detect_latest,
    detect_online,
    format_alerts,
    legacy_alerts,
    legacy_online,
)
from bench.analysis.history import load_history

FILE = "inferred_interpreter.csv"
RUNS = [f"r{i:03d}" for i in range(60)]


def table_of(series: Mapping[tuple[str, str], Sequence[float | None]]) -> pd.DataFrame:
    """A long table from ``{(file, parameter): values per run}`` (None: not in that run)."""
    rows = []
    for (file, parameter), values in series.items():
        for run, value in zip(RUNS, values, strict=False):
            if value is not None:
                rows.append((run, file, parameter, value))
    return pd.DataFrame(rows, columns=["run", "file", "parameter", "value"])


def noisy(level: float, count: int, *, noise: float = 0.01, seed: int = 0) -> list[float]:
    """``count`` values around ``level`` with a relative gaussian noise (seeded)."""
    rng = np.random.default_rng(seed)
    return list(level * (1 + noise * rng.standard_normal(count)))


def changes(alerts: Sequence[Alert]) -> list[Alert]:
    return [a for a in alerts if a.kind in ("step", "drift", "run_shift", "noisy_run")]


def key(alert: Alert) -> tuple[str, str, str, str, str]:
    return (alert.run, alert.file, alert.parameter, alert.kind, alert.direction)


# --- steps, spikes, flapping ----------


def test_a_lasting_step_up_is_one_regression_at_the_next_run() -> None:
    """A +30% step on a 1%-noise series is reported once, as a regression, one run later."""
    values = noisy(10.0, 40)
    values[25:] = [v * 1.3 for v in values[25:]]
    alerts, _ = detect_online(table_of({(FILE, "a/N_IAdd_coeff"): values}))
    found = changes(alerts)
    assert [(a.run, a.kind, a.direction) for a in found] == [("r026", "step", "regression")]
    alert = found[0]
    assert alert.since == "r025"
    assert alert.baseline == pytest.approx(10.0, rel=0.03)
    assert alert.value == pytest.approx(13.0, rel=0.03)
    assert alert.magnitude_pct == pytest.approx(30, abs=3)
    assert alert.score > 4
    assert alert.reason.startswith("up 3")
    assert "its usual noise" in alert.reason


def test_a_one_run_spike_is_not_a_change() -> None:
    """A single run at +80% that comes back is never reported."""
    values = noisy(10.0, 40)
    values[25] *= 1.8
    alerts, _ = detect_online(table_of({(FILE, "a/N_IAdd_coeff"): values}))
    assert changes(alerts) == []


def test_a_step_within_the_noise_is_not_reported() -> None:
    """A +6% step on a 5%-noise series is not well outside the noise: no alert."""
    values = noisy(10.0, 40, noise=0.05)
    values[25:] = [v * 1.06 for v in values[25:]]
    alerts, _ = detect_online(table_of({(FILE, "a/N_IAdd_coeff"): values}))
    assert changes(alerts) == []


def test_a_step_below_the_relative_floor_is_not_reported() -> None:
    """A +3% step, far outside a 0.2% noise but below the 5% floor, is not reported."""
    values = noisy(10.0, 40, noise=0.002)
    values[25:] = [v * 1.03 for v in values[25:]]
    assert changes(detect_online(table_of({(FILE, "a/N_coeff"): values}))[0]) == []


def test_flapping_between_zero_and_tiny_values_is_not_a_change() -> None:
    """A positive-LASSO coefficient flapping between 0 and tiny values never alerts."""
    rng = np.random.default_rng(3)
    values = [
        0.0 if rng.random() < 0.5 else 0.002 * math.exp(0.5 * rng.standard_normal())
        for _ in range(60)
    ]
    alerts, _ = detect_online(table_of({(FILE, "a/N_ISub_coeff"): values}))
    assert changes(alerts) == []


def test_a_real_rise_of_a_flapping_coefficient_is_reported() -> None:
    """A flapping coefficient that jumps to a lasting large value is a regression."""
    rng = np.random.default_rng(4)
    values = [0.0 if rng.random() < 0.5 else 0.002 * (1 + 0.2 * rng.random()) for _ in range(40)]
    values[30:] = noisy(1.0, 10)
    found = changes(detect_online(table_of({(FILE, "a/N_ISub_coeff"): values}))[0])
    assert [(a.kind, a.direction) for a in found] == [("step", "regression")]


def test_absolute_floor_of_intercepts_and_per_pattern_overrides() -> None:
    """An intercept moving 1.5 ns (+15%) stays quiet (the 2 ns floor of *intercept); an
    override by name pattern silences a coefficient's 20% step."""
    intercept = noisy(10.0, 40, noise=0.002)
    intercept[25:] = [v + 1.5 for v in intercept[25:]]
    coeff = noisy(10.0, 40, noise=0.002, seed=1)
    coeff[25:] = [v * 1.2 for v in coeff[25:]]
    table = table_of({(FILE, "m/intercept"): intercept, (FILE, "m/N_coeff"): coeff})
    found = changes(detect_online(table)[0])
    assert [a.parameter for a in found] == ["m/N_coeff"]
    settings = DetectorSettings.from_mapping({"overrides": {"m/N_*": {"relative_floor": 0.3}}})
    assert changes(detect_online(table, settings=settings)[0]) == []


def test_fit_quality_columns_never_alert() -> None:
    """R2_score, RMSE_score and T-value columns are not judged, whatever they do."""
    values = noisy(10.0, 40)
    values[25:] = [v * 3 for v in values[25:]]
    table = table_of(
        {
            (FILE, "R2_score-interpreter-bench"): values,
            (FILE, "T-value-a/N_IAdd_coeff"): values,
            (FILE, "RMSE_score-interpreter-bench"): values,
        }
    )
    assert detect_online(table)[0] == []


def test_an_improvement_is_worded_as_such_and_regressions_come_first() -> None:
    """A fall is an improvement ("down ...: an improvement"); at one run regressions are
    listed before improvements."""
    down = noisy(10.0, 40)
    down[25:] = [v * 0.7 for v in down[25:]]
    up = noisy(5.0, 40, seed=2)
    up[25:] = [v * 1.2 for v in up[25:]]
    alerts, _ = detect_online(table_of({(FILE, "a/down_coeff"): down, (FILE, "b/up_coeff"): up}))
    found = changes(alerts)
    assert [(a.parameter, a.direction) for a in found] == [
        ("b/up_coeff", "regression"),
        ("a/down_coeff", "improvement"),
    ]
    assert found[1].reason.startswith("down 30%")
    assert found[1].reason.endswith("an improvement")
    assert "improvement" not in found[0].reason


def test_a_borderline_step_waits_one_more_run() -> None:
    """A step of ~3.5 noise units is reported after three runs (still within 2 runs)."""
    cycle = [9.8, 10.0, 10.2, 9.9, 10.1]
    values = [cycle[i % 5] for i in range(25)] + [10.55, 10.6, 10.58] + [10.6] * 10
    found = changes(detect_online(table_of({(FILE, "a/N_coeff"): values}))[0])
    assert [(a.run, a.since, a.reason.split(" for ")[1][:6]) for a in found] == [
        ("r027", "r025", "3 runs")
    ]


def test_confirm_runs_zero_reports_a_clear_step_at_once() -> None:
    """With confirm_runs = 0 a clear step is reported at the run where it appears."""
    values = noisy(10.0, 40)
    values[25:] = [v * 1.5 for v in values[25:]]
    settings = DetectorSettings(confirm_runs=0)
    found = changes(detect_online(table_of({(FILE, "a/N_coeff"): values}), settings=settings)[0])
    assert [a.run for a in found] == ["r025"]


# --- run level ----------


def many(count: int, length: int = 40) -> dict[tuple[str, str], list[float]]:
    return {
        (f"inferred_m{i % 5}.csv", f"m{i % 5}/N_op{i}_coeff"): noisy(
            1 + i, length, noise=0.01, seed=100 + i
        )
        for i in range(count)
    }


def test_a_noisy_run_is_one_event_not_an_alert_per_parameter() -> None:
    """When most parameters jump in one run and come back, there is one noisy_run alert,
    raised at the next run, and no per-parameter alert."""
    series = many(30)
    for values in series.values():
        values[25] *= 1.35
    alerts, state = detect_online(table_of(series))
    assert [(a.run, a.kind, a.direction, a.file, a.since) for a in alerts] == [
        ("r026", "noisy_run", "regression", "*", "r025")
    ]
    assert "r025" in state.noisy_runs


def test_a_persistent_run_wide_shift_is_reported_once() -> None:
    """When every parameter moves for good, one run_shift alert two runs later, and no alert
    afterwards."""
    series = many(30)
    for values in series.values():
        values[25:] = [v * 1.3 for v in values[25:]]
    alerts, state = detect_online(table_of(series))
    assert [(a.run, a.kind, a.direction) for a in alerts] == [("r027", "run_shift", "regression")]
    assert state.rebase == "r025"
    assert "30%" in alerts[0].reason


def test_two_noisy_runs_in_a_row_are_one_noisy_event_not_a_shift() -> None:
    """Two consecutive noisy runs (same direction) are one noisy_run alert, no run_shift, no
    per-parameter alert."""
    series = many(30)
    for values in series.values():
        values[25] *= 1.35
        values[26] *= 1.3
    alerts, state = detect_online(table_of(series))
    assert [(a.run, a.kind, a.since) for a in alerts] == [("r027", "noisy_run", "r025")]
    assert "r025 and r026" in alerts[0].reason
    assert state.noisy_runs == ["r025", "r026"] and state.rebase is None


def test_a_noisy_run_does_not_hide_a_real_step_in_the_same_run() -> None:
    """A real step that starts in a noisy run is still reported within two runs of it."""
    series = many(30)
    for values in series.values():
        values[25] *= 1.35
    target = next(iter(series))
    series[target][25:] = [v * 1.5 for v in series[target][25:]]
    found = changes(detect_online(table_of(series))[0])
    kinds = sorted((a.run, a.kind, a.parameter) for a in found)
    assert kinds[0][:2] == ("r026", "noisy_run")
    assert [(run, p) for run, kind, p in kinds if kind == "step"] == [("r027", target[1])]


# --- drift ----------


def test_slow_drift_is_reported_once() -> None:
    """A +1%/run ramp with no single step is reported once, as a drift."""
    values = noisy(10.0, 60, noise=0.005)
    for i in range(15, 60):
        values[i] *= 1 + 0.0025 * (i - 14)
    found = changes(detect_online(table_of({(FILE, "a/N_coeff"): values}))[0])
    assert [(a.kind, a.direction) for a in found] == [("drift", "regression")]
    assert found[0].reason.startswith("drifted up")


def test_no_drift_alert_without_drift() -> None:
    """A long flat noisy series raises nothing, drift included."""
    values = noisy(10.0, 60, noise=0.05, seed=11)
    assert changes(detect_online(table_of({(FILE, "a/N_coeff"): values}))[0]) == []


# --- presence and renames ----------


def test_a_new_parameter_is_reported_as_new_never_as_a_regression() -> None:
    """A parameter that appears mid-history is one new_parameter alert, not a regression."""
    old = noisy(10.0, 40)
    new: list[float | None] = [None] * 20 + noisy(50.0, 20)
    alerts, _ = detect_online(table_of({(FILE, "a/old_coeff"): old, (FILE, "a/new_coeff"): new}))
    assert [(a.run, a.kind, a.parameter, a.direction) for a in alerts] == [
        ("r020", "new_parameter", "a/new_coeff", "improvement")
    ]


def test_a_new_file_is_one_alert_and_a_removed_file_is_reported_once() -> None:
    """A file that appears is one new_file alert; one that disappears, one removed_file alert
    once it has been missing from 3 runs."""
    series: dict[tuple[str, str], list[float | None]] = {
        ("a.csv", "a/x_coeff"): noisy(1.0, 40),
        ("b.csv", "b/x_coeff"): [None] * 10 + noisy(2.0, 30),
        ("b.csv", "b/y_coeff"): [None] * 10 + noisy(3.0, 30),
        ("c.csv", "c/x_coeff"): noisy(4.0, 20) + [None] * 20,
    }
    alerts, _ = detect_online(table_of(series))
    assert [(a.run, a.kind, a.file, a.parameter) for a in alerts] == [
        ("r010", "new_file", "b.csv", "*"),
        ("r022", "removed_file", "c.csv", "*"),
    ]


def test_a_file_missing_from_one_run_is_not_reported() -> None:
    """A file absent from a single run comes back without any alert."""
    values: list[float | None] = list(noisy(1.0, 40))
    values[20] = None
    other = noisy(2.0, 40, seed=5)
    alerts, _ = detect_online(table_of({("a.csv", "a/x"): values, ("b.csv", "b/x"): other}))
    assert alerts == []


def test_a_renamed_parameter_keeps_its_history(tmp_path: Path) -> None:
    """With the renamings applied when loading, a renamed parameter is one series: no alert
    at the rename, and its later step is found; without them, new + removed (not regressions)."""
    values = noisy(10.0, 45)
    values[35:] = [v * 1.4 for v in values[35:]]
    rows = [
        (run, FILE, "a/N_old_coeff" if i < 20 else "a/N_new_coeff", value)
        for i, (run, value) in enumerate(zip(RUNS, values, strict=False))
    ]
    path = tmp_path / "history.csv"
    pd.DataFrame(rows, columns=["run", "file", "parameter", "value"]).to_csv(path, index=False)
    renamed, _ = load_history(path, renamings={"a/N_old_coeff": "a/N_new_coeff"})
    alerts, _ = detect_online(renamed)
    assert [(a.run, a.kind, a.parameter) for a in alerts] == [("r036", "step", "a/N_new_coeff")]
    raw, _ = load_history(path)
    unrenamed, _ = detect_online(raw)
    assert {(a.kind, a.direction) for a in unrenamed if a.run < "r030"} == {
        ("new_parameter", "improvement"),
        ("removed_parameter", "improvement"),
    }


# --- state: each change reported once ----------


def history_with_everything() -> pd.DataFrame:
    series = many(30, length=50)
    for values in series.values():
        values[20] *= 1.4  # a noisy run
    first, second = list(series)[:2]
    series[first][30:] = [v * 1.5 for v in series[first][30:]]
    series[second][35:] = [v * 0.6 for v in series[second][35:]]
    return table_of(series)


def test_successive_detect_latest_calls_report_each_change_once() -> None:
    """Calling detect_latest run after run, with the state saved as JSON in between, raises
    exactly the alerts of the online replay, each once."""
    table = history_with_everything()
    online, final = detect_online(table)
    state: DetectorState | None = None
    seen: list[Alert] = []
    for run in RUNS[:50]:
        text = state.to_json() if state is not None else None
        alerts, state = detect_latest(
            table, state=DetectorState.from_json(text) if text else None, run=run
        )
        assert all(a.run == run for a in alerts)
        seen += alerts
    assert sorted(map(key, seen)) == sorted(map(key, online))
    assert len({key(a) for a in seen if a.kind == "step"}) == 2
    assert state is not None and state.to_json() == final.to_json()


def test_detect_latest_catches_up_runs_the_state_has_not_seen() -> None:
    """Given a state a few runs old, detect_latest also returns the alerts of the runs in
    between (each with its run), as the replay does."""
    table = history_with_everything()
    online, _ = detect_online(table)
    _, state = detect_online(table, runs=RUNS[:29])
    alerts, _ = detect_latest(table, state=state, run="r036")
    assert sorted(map(key, alerts)) == sorted(key(a) for a in online if "r029" <= a.run <= "r036")


def test_detect_latest_refuses_a_state_past_the_run() -> None:
    """A state that already covers the run is an error, not a silent double report."""
    table = history_with_everything()
    _, state = detect_online(table, runs=RUNS[:40])
    with pytest.raises(ValueError, match="already covers"):
        detect_latest(table, state=state, run="r030")


def test_state_round_trips_through_json_with_a_format_version() -> None:
    """The state is JSON with a format version; from_json(to_json()) is the same state."""
    table = history_with_everything()
    _, state = detect_online(table)
    data = json.loads(state.to_json())
    assert data["format"] == 1
    assert data["noisy_runs"] == ["r020"]
    assert DetectorState.from_json(state.to_json()) == state
    with pytest.raises(ValueError, match="format"):
        DetectorState.from_json(json.dumps({"format": 99}))


# --- settings ----------


def test_settings_from_a_detect_table() -> None:
    """from_mapping reads a [detect] table, adds overrides after the defaults, and names the
    key of a bad value."""
    settings = DetectorSettings.from_mapping(
        {
            "relative_floor": 0.1,
            "confirm_runs": 2,
            "overrides": {"*/N_ILsl_*": {"noise_multiplier": 6}},
        }
    )
    assert settings.relative_floor == 0.1
    assert settings.thresholds("x/N_ILsl_coeff") == (0.1, 0.0, 6.0)
    assert settings.thresholds("x/intercept") == (0.1, 2.0, 4.0)
    with pytest.raises(SettingsError, match="unknown key"):
        DetectorSettings.from_mapping({"relative_flor": 0.1})
    with pytest.raises(SettingsError, match="confirm_runs"):
        DetectorSettings.from_mapping({"confirm_runs": 5})
    with pytest.raises(SettingsError, match="relative_floor"):
        DetectorSettings.from_mapping({"relative_floor": "5%"})


# --- the legacy rule ----------


def test_legacy_rule_alerts_above_20_percent_and_const_needs_2() -> None:
    """The old rule: > 20% vs previous or reference; const/intercept also need a difference
    > 2; exactly 20% and fit-quality columns never alert; the larger change wins."""
    rows = [
        ("r0", FILE, "a/x_coeff", 1.0),
        ("r1", FILE, "a/x_coeff", 1.0),
        ("r2", FILE, "a/x_coeff", 1.3),
        ("r0", FILE, "a/y_coeff", 800.0),
        ("r1", FILE, "a/y_coeff", 800.0),
        ("r2", FILE, "a/y_coeff", 640.0),  # exactly 20%: no alert
        ("r0", FILE, "a/intercept", 5.0),
        ("r1", FILE, "a/intercept", 5.0),
        ("r2", FILE, "a/intercept", 6.5),  # +30% but only 1.5
        ("r0", FILE, "R2_score-a-b", 0.1),
        ("r1", FILE, "R2_score-a-b", 0.1),
        ("r2", FILE, "R2_score-a-b", 0.9),
        ("r0", FILE, "a/z_coeff", 10.0),
        ("r1", FILE, "a/z_coeff", 5.0),
        ("r2", FILE, "a/z_coeff", 4.0),  # -20% vs previous, -60% vs reference
    ]
    table = pd.DataFrame(rows, columns=["run", "file", "parameter", "value"])
    alerts = legacy_alerts(table, run="r2", previous="r1", reference="r0")
    assert [(a.parameter, a.direction, round(a.baseline, 2)) for a in alerts] == [
        ("a/x_coeff", "regression", 1.0),
        ("a/z_coeff", "improvement", 10.0),
    ]
    assert "reference" in alerts[1].reason
    assert [a.run for a in legacy_online(table)] == ["r1", "r2", "r2"]


# --- backtest and output ----------


def test_backtest_without_online_gives_the_newest_runs_alerts() -> None:
    """backtest(online=False) is the online replay's alerts at the newest run."""
    values = noisy(10.0, 30)
    values[28:] = [v * 1.5 for v in values[28:]]
    values[10:] = [v * 0.7 for v in values[10:]]  # an earlier change, reported at r011
    table = table_of({(FILE, "a/N_coeff"): values})
    assert [a.run for a in backtest(table, online=True)] == ["r011", "r029"]
    assert [a.run for a in backtest(table)] == ["r029"]


def test_json_output_has_the_contract_fields_and_no_infinities() -> None:
    """format_alerts(json) is one list of objects with the contract's fields; a change from 0
    has a null magnitude rather than an invalid Infinity."""
    alert = Alert(
        run="r1", file=FILE, parameter="a/x", direction="regression", kind="step",
        magnitude_pct=math.inf, baseline=0.0, value=1.0, score=math.nan, reason="up from 0",
    )  # fmt: skip
    data = json.loads(format_alerts([alert], "json"))
    assert set(data[0]) >= {
        "run", "file", "parameter", "direction", "kind", "magnitude_pct", "baseline",
        "value", "score", "reason",
    }  # fmt: skip
    assert data[0]["magnitude_pct"] is None and data[0]["score"] is None
    assert format_alerts([alert], "csv").splitlines()[0].startswith("run,file,parameter")
    assert "REGRESSION (step)" in format_alerts([alert], "text")


def test_the_matrix_codes_are_factorizes_whatever_the_width_of_the_table() -> None:
    """The matrix numbers names and series as pandas' sorted factorize does, whether the
    table's columns are strings or categoricals (unused and missing categories included),
    and whether the series are numbered through a table of keys or a hash table."""
    from bench.analysis.detect import _factorize, _series_codes

    rng = np.random.default_rng(3)
    names = [f"p{i:03d}" for i in rng.permutation(300)]
    picked = rng.choice(len(names) - 20, size=5000)  # the last 20 categories are never used
    as_text = pd.Series([names[i] for i in picked], dtype=object)
    as_categorical = pd.Series(pd.Categorical([names[i] for i in picked], categories=names))
    as_categorical[::97] = None  # missing: code -1
    for column in (as_text, as_categorical):
        codes, sorted_names = _factorize(column)
        as_names = column.astype(object)  # sorted by name, not by category order
        expected_codes, uniques = pd.factorize(as_names, sort=True, use_na_sentinel=True)
        assert sorted_names == [str(u) for u in uniques]
        assert codes.tolist() == expected_codes.tolist()
    assert _factorize(as_categorical)[0].dtype == np.int16  # not widened

    for n_keys in (1000, 1 << 22):  # few possible keys (a table of them), many (hashing)
        key = rng.choice(n_keys, size=20_000).astype(np.int32)
        codes, uniques = _series_codes(key, n_keys)
        expected_codes, expected = pd.factorize(key, sort=True)
        assert codes.tolist() == expected_codes.tolist()
        assert uniques.tolist() == expected.tolist()
