"""Labelled synthetic gas-parameter histories, seeded.

Each history looks like the inference CSVs of a snoop run: files ``inferred_<model>.csv``, each
with an intercept (``.../intercept``, in ns), coefficients (``.../N_<op>_coeff``) and the
fit-quality columns (``R2_score-...``, ``RMSE_score-...``, ``T-value-...``). What makes real
histories hard is put in on purpose:

- multiplicative noise of 1-15% (log-uniform per parameter) with heavy tails (Student t),
  plus rare one-run spikes (a value 1.3-3 times too high);
- intercepts with an absolute noise of a few ns on top;
- positive-LASSO coefficients that flap between exactly 0 and tiny values;
- noisy runs in which most parameters jump together for one run;
- slow drifts, renamed parameters (with the renamings), new models (files that appear),
  removed models, files missing from a run or two;
- and, optionally, a run-wide shift (every parameter moves for good).

The labels are the true changes: steps (sometimes reverted later: two labels), slow drifts
(from their start to their end) and the run-wide shift (``file = parameter = "*"``). Every
random choice comes from one seeded generator.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.evaluation.scoring import Label

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

__all__ = ["SCENARIOS", "Scenario", "SyntheticHistory", "generate", "write_tree"]


@dataclass(frozen=True)
class Scenario:
    """The knobs of a synthetic history (defaults: ~80 runs x ~400 parameters)."""

    name: str = "default"
    description: str = "80 runs, ~400 parameters in 40 files, every difficulty at once"
    runs: int = 80
    files: int = 40
    params_per_file: tuple[int, int] = (4, 16)  # coefficients per file, plus one intercept
    noise: tuple[float, float] = (0.01, 0.15)  # multiplicative noise (sd), log-uniform
    tail_df: float = 3.0  # Student t degrees of freedom (heavy tails)
    spike_rate: float = 0.005  # one-run spikes per value
    const_noise_ns: tuple[float, float] = (1.0, 4.0)  # absolute noise of intercepts (sd)
    zero_share: float = 0.08  # coefficients that flap between 0 and tiny values
    noisy_run_rate: float = 0.03
    drift_share: float = 0.015
    change_rate: float = 0.0025  # steps per parameter-run
    change_size: tuple[float, float] = (0.10, 1.0)  # relative size of a step, log-uniform
    min_change_noise: float = 4.0  # a step is at least this many times its series' noise
    revert_share: float = 0.2  # steps undone some runs later
    renames: int = 3
    new_models: int = 2
    removed_models: int = 1
    missing_rate: float = 0.01  # a file missing from a run
    run_shift: bool = False
    fit_columns: bool = True

    def with_(self, **changes: object) -> Scenario:
        return replace(self, **changes)  # type: ignore[arg-type]


#: Variants of the default scenario, each changing one thing (the evaluation's second table).
SCENARIOS = (
    Scenario(
        name="light tails",
        description="near-normal noise (t, 50 d.f.), spikes 5 times rarer",
        tail_df=50.0,
        spike_rate=0.001,
    ),
    Scenario(
        name="heavy tails",
        description="t noise with 2.5 d.f., spikes twice as frequent",
        tail_df=2.5,
        spike_rate=0.01,
    ),
    Scenario(name="noisy runs", description="8% of the runs are noisy", noisy_run_rate=0.08),
    Scenario(
        name="run-wide shift", description="every parameter up 15-30% at one run", run_shift=True
    ),
    Scenario(name="long", description="200 runs, 20 files", runs=200, files=20),
    Scenario(name="low noise", description="noise 0.5-5%", noise=(0.005, 0.05)),
    Scenario(name="high noise", description="noise 3-25%", noise=(0.03, 0.25)),
    Scenario(
        name="small changes",
        description="changes from 2x (not 4x) their parameter's noise",
        min_change_noise=2.0,
    ),
)


@dataclass
class SyntheticHistory:
    scenario: Scenario
    seed: int
    table: pd.DataFrame
    labels: list[Label]
    renamings: dict[str, str]  # old -> new, as the loader takes them
    runs: list[str]
    parameter_runs: int
    notes: dict[str, Any] = field(default_factory=dict)
    #: (file, parameter) -> the relative noise (sd) it was generated with, for diagnostics.
    noise: dict[tuple[str, str], float] = field(default_factory=dict)


def run_names(count: int) -> list[str]:
    """Run names in the project's format, one every 3-4 days (Tuesdays and Fridays)."""
    from datetime import datetime, timedelta

    start = datetime(2023, 1, 3, 20, 0)
    names = []
    for i in range(count):
        day = start + timedelta(days=7 * (i // 2) + 3 * (i % 2))
        names.append(f"_snoop_{day:%Y%m%d}_{day:%H%M}_v18.0-{1000 + i}-g{i:07x}")
    return names


def _heavy(rng: np.random.Generator, df: float, size: tuple[int, ...]) -> np.ndarray:
    """Student-t noise scaled to a unit median absolute deviation / 0.6745 (robust sd = 1)."""
    import numpy as np

    draws = rng.standard_t(df, size=size)
    # The MAD of t(df) relative to the normal's, so that "noise 5%" means a robust sd of 5%.
    mad = float(np.median(np.abs(rng.standard_t(df, size=20000))))
    out: np.ndarray = draws * (0.6745 / mad)
    return out


def generate(scenario: Scenario, seed: int) -> SyntheticHistory:
    """A labelled history for ``scenario`` from ``seed``."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    sc = scenario
    T = sc.runs
    runs = run_names(T)

    # --- the parameters ---
    files: list[str] = []
    series_file: list[int] = []
    names: list[str] = []
    is_const: list[bool] = []
    for f in range(sc.files):
        model = f"model_{seed % 1000:03d}_{f:03d}"
        namespace = ("interpreter", "encoding", "cache", "carbonated_map", "storage")[f % 5]
        files.append(f"inferred_{namespace}__{model}.csv")
        count = int(rng.integers(sc.params_per_file[0], sc.params_per_file[1] + 1))
        names.append(f"{namespace}/{model}/intercept")
        series_file.append(f)
        is_const.append(True)
        for j in range(count):
            names.append(f"{namespace}/{model}/N_op{j:02d}_coeff")
            series_file.append(f)
            is_const.append(False)
    S = len(names)
    sfile = np.array(series_file)
    const = np.array(is_const)
    base = np.where(
        const,
        rng.uniform(20, 3000, S),
        10 ** rng.uniform(-2.5, 3.0, S),
    )
    log_lo, log_hi = math.log(sc.noise[0]), math.log(sc.noise[1])
    sigma = np.exp(rng.uniform(log_lo, log_hi, S))
    flapper = ~const & (rng.random(S) < sc.zero_share)

    # --- the levels over time: steps, reverts, drifts, a run-wide shift ---
    log_level = np.tile(np.log(base)[:, None], (1, T))
    labels: list[Label] = []
    lo_size, hi_size = math.log(sc.change_size[0]), math.log(sc.change_size[1])
    for s in np.flatnonzero(~flapper):
        count = rng.poisson(sc.change_rate * T)
        taken: list[int] = []
        for _ in range(count):
            at = int(rng.integers(8, T - 2))
            if any(abs(at - other) < 8 for other in taken):
                continue
            # Log-uniform between the bounds of change_size, both raised to min_change_noise
            # (and 2.5 x that) times the parameter's noise: a person labels the changes that
            # stand out of a parameter's noise, and a noisy parameter's visible changes are
            # larger. A fall of the same size as a rise: x (1 + size) up, / (1 + size) down.
            low = max(lo_size, math.log(math.expm1(sc.min_change_noise * sigma[s])))
            high = max(hi_size, math.log(math.expm1(2.5 * sc.min_change_noise * sigma[s])))
            up = rng.random() < 0.6
            factor = math.log1p(math.exp(rng.uniform(low, high))) * (1 if up else -1)
            log_level[s, at:] += factor
            taken.append(at)
            labels.append(_label(files[sfile[s]], names[s], up, runs[at]))
            if rng.random() < sc.revert_share:
                back = at + int(rng.integers(5, 13))
                if back < T - 2 and not any(abs(back - o) < 8 for o in taken if o != at):
                    log_level[s, back:] -= factor
                    taken.append(back)
                    labels.append(_label(files[sfile[s]], names[s], not up, runs[back]))
    drifting = np.flatnonzero(~flapper & (rng.random(S) < sc.drift_share))
    for s in drifting:
        length = int(rng.integers(15, 41))
        if T - length - 3 <= 5:
            continue
        start = int(rng.integers(5, T - length - 2))
        total = rng.uniform(0.15, 0.5) * (1 if rng.random() < 0.6 else -1)
        ramp = np.clip((np.arange(T) - start + 1) / length, 0, 1) * math.log1p(total)
        log_level[s] += ramp
        end = start + length - 1
        labels.append(
            Label(
                files[sfile[s]],
                names[s],
                "regression" if total > 0 else "improvement",
                runs[start],
                runs[end],
                kind="drift",
            )
        )
    if sc.run_shift:
        at = int(rng.integers(T // 2, T - 5))
        log_level[:, at:] += rng.uniform(0.15, 0.3)
        labels.append(Label("*", "*", "regression", runs[at], kind="run_shift"))

    # --- noise ---
    noise = _heavy(rng, sc.tail_df, (S, T)) * sigma[:, None]
    values = np.exp(log_level + noise)
    spikes = rng.random((S, T)) < sc.spike_rate
    values[spikes] *= rng.uniform(1.3, 3.0, spikes.sum())
    noisy_runs = [t for t in range(5, T) if rng.random() < sc.noisy_run_rate]
    notes_noisy = list(noisy_runs)
    for t in noisy_runs:
        hit = rng.random(S) < rng.uniform(0.7, 1.0)
        shift = rng.uniform(0.15, 0.5) * (1 if rng.random() < 0.8 else -1)
        values[hit, t] *= np.exp(shift + 0.08 * rng.standard_normal(hit.sum()))
    c_sd = rng.uniform(*sc.const_noise_ns, S)
    values[const] += (_heavy(rng, sc.tail_df, (S, T)) * c_sd[:, None])[const]
    # Positive LASSO: tiny values, exactly 0 in a share of the runs.
    tiny = 10 ** rng.uniform(-4, -1, S)
    p_zero = rng.uniform(0.2, 0.7, S)
    flap_values = tiny[:, None] * np.exp(0.5 * rng.standard_normal((S, T)))
    flap_values[rng.random((S, T)) < p_zero[:, None]] = 0.0
    values[flapper] = flap_values[flapper]
    values[const] = np.maximum(values[const], 0.0)

    # --- presence: new and removed models, missing files ---
    present = np.ones((len(files), T), dtype=bool)
    order = rng.permutation(len(files))
    for f in order[: sc.new_models]:
        present[f, : int(rng.integers(T // 4, 3 * T // 4))] = False
    for f in order[sc.new_models : sc.new_models + sc.removed_models]:
        present[f, int(rng.integers(T // 2, T - 5)) :] = False
    missing = rng.random((len(files), T)) < sc.missing_rate
    longer = missing & (rng.random((len(files), T)) < 0.3)
    missing[:, 1:] |= longer[:, :-1]
    missing[:, 0] = False
    present &= ~missing

    # --- renames: the old name before the run, the new one from it on ---
    renamings: dict[str, str] = {}
    shown = [[name] * T for name in names]
    candidates = np.flatnonzero(~const)
    for s in rng.choice(candidates, size=min(sc.renames, len(candidates)), replace=False):
        at = int(rng.integers(T // 4, 3 * T // 4))
        old = names[s].replace("_coeff", "_old_coeff")
        renamings[old] = names[s]
        for t in range(at):
            shown[s][t] = old

    # A change is labelled at the first run that shows it (its file may be missing from the
    # run where it happened); changes that no run shows in time, or with too little history
    # before them, are not labelled.
    kept: list[Label] = []
    file_index = {name: i for i, name in enumerate(files)}
    position = {name: i for i, name in enumerate(runs)}
    for label in labels:
        if label.file == "*":
            kept.append(label)
            continue
        f = file_index[label.file]
        at = position[label.start]
        shown_at = at + int(np.argmax(present[f, at:])) if present[f, at:].any() else T
        if shown_at >= T - 1 or present[f, :at].sum() < 8:
            continue
        kept.append(replace(label, start=runs[shown_at]))
    labels = kept

    # --- the long table ---
    rows_run: list[np.ndarray] = []
    rows_file: list[np.ndarray] = []
    rows_param: list[list[str]] = []
    rows_value: list[np.ndarray] = []
    parameter_runs = 0
    for f, name in enumerate(files):
        members = np.flatnonzero(sfile == f)
        for col in np.flatnonzero(present[f]):
            params = [shown[s][col] for s in members]
            vals = values[members, col]
            parameter_runs += len(params)
            if sc.fit_columns:
                model = name[len("inferred_") : -len(".csv")]
                params = [*params, f"R2_score-{model}-bench", f"RMSE_score-{model}-bench"]
                fit = [rng.uniform(0.5, 1.0), rng.uniform(1, 100)]
                tvals = [f"T-value-{p}" for p in params[:2]]
                params += tvals
                fit += list(rng.uniform(0, 50, len(tvals)))
                vals = np.concatenate([vals, fit])
            rows_run.append(np.full(len(params), col))
            rows_file.append(np.full(len(params), f))
            rows_param.append(params)
            rows_value.append(vals)
    table = pd.DataFrame(
        {
            "run": pd.Categorical.from_codes(np.concatenate(rows_run), categories=runs),
            "file": pd.Categorical.from_codes(np.concatenate(rows_file), categories=files),
            "parameter": pd.Categorical([p for chunk in rows_param for p in chunk]),
            "value": np.concatenate(rows_value),
        }
    )
    notes = {
        "series": S,
        "files": len(files),
        "flappers": int(flapper.sum()),
        "noisy_runs": len(notes_noisy),
        "noisy_run_list": notes_noisy,
        "drifts": int(sum(1 for label in labels if label.kind == "drift")),
        "steps": int(sum(1 for label in labels if label.kind == "step")),
    }
    noise_of = {(files[sfile[s]], names[s]): float(sigma[s]) for s in range(S)}
    return SyntheticHistory(
        sc, seed, table, labels, renamings, runs, parameter_runs, notes, noise_of
    )


def _label(file: str, parameter: str, up: bool, run: str) -> Label:
    return Label(file, parameter, "regression" if up else "improvement", run)


def apply_renamings_to_table(table: pd.DataFrame, renamings: dict[str, str]) -> pd.DataFrame:
    """The table as the loader gives it with ``renamings`` (old -> new) applied."""
    from bench.analysis.history import _rename_long

    out = _rename_long(table.astype({"parameter": "str", "file": "str"}), renamings)
    return out.astype({"file": "category", "parameter": "category"})


def write_tree(history: pd.DataFrame, top: Path) -> Iterator[Path]:
    """Write a long table as run directories ``<top>/<run>/inference_results/*.csv`` in the
    snoop format; yields the files written."""
    from bench.snoop import format_snoop_number

    for (run, file), group in history.groupby(["run", "file"], observed=True, sort=True):
        directory = top / str(run) / "inference_results"
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / str(file)
        names = ",".join(str(p) for p in group["parameter"])
        values = ",".join(format_snoop_number(float(v)) for v in group["value"])
        path.write_text(f"{names}\n{values}\n", encoding="utf-8")
        yield path
