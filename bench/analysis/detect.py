"""Regression detectors over the history of the inference CSVs.

The input is the long table ``(run, file, parameter, value)`` (see
:mod:`bench.analysis.history`); runs sort by name, which is their time order. Two detectors:

- ``legacy``: gas_parameter_diff's rule, as the old watcher applied it
  (:func:`legacy_alerts`): a change of more than 20% (its symmetric CHANGE) between the newest
  run and the previous or the reference run, and for names ending in ``const``/``intercept``
  an absolute difference of more than 2; fit-quality columns never alert.
- ``default`` (:func:`detect_online`, :func:`detect_latest`): each (file, parameter) series is
  judged against its own recent history.

The default detector, at each run ``t``, for each series:

1. baseline: the median ``m`` of the last ``window`` runs of the series' current segment
   (since the start of the history, or since its last reported change), noisy runs left out;
   noise ``s``: the larger of 1.4826 x MAD and the spread of the upper (for a rise) or lower
   (for a fall) decile over the last ``2 x window`` runs, so that a series with frequent
   one-sided excursions is judged by them, slightly inflated when there are few values; a
   segment younger than ``min_history`` borrows the relative noise of the one before it;
2. a step: the last values all moved the same way past both floors (``relative_floor x |m|``
   and ``absolute_floor``, per-parameter overrides by name pattern) and well outside the
   noise; clearly (each at least ``noise_multiplier x s``, forming a level) after
   ``confirm_runs + 1`` values, or borderline (each at least 0.625 x that, their median 0.8 x
   that) after one more, so at most 2 runs after the change; one missing or noisy run among
   them is skipped; up is a regression, down an improvement;
3. series that were exactly 0 in the last ``2 x window`` runs (positive LASSO) are judged on
   their non-zero values only, and a 0 is never a change; with too few non-zero values, only
   a rise to ten times the largest earlier value counts;
4. a reported step starts a new segment (a new baseline): each change is reported once;
5. drift: the median of the last 10 values is compared with the median of the first 10 of
   the segment (from the reference run on); past both floors, well outside the run-to-run
   noise, every recent value on the same side, and better explained by a ramp than by a step,
   it is reported once as ``drift`` (not again in that direction until the level comes back);
6. run level: when at least ``run_fraction`` of the series (at least ``run_min_parameters``)
   move the same way at once, the run is held back (no per-parameter alert); if most of them
   came back at the next run, it is one ``noisy_run`` alert and that run is left out of every
   baseline from then on; if they stayed there for two more runs (two noisy runs in a row
   look like a shift for one run), one ``run_shift`` alert and every baseline restarts there;
7. new and removed files and parameters are reported as such (a removal once it lasted 3
   runs of its file), never as regressions.

What was reported lives in :class:`DetectorState` (JSON), so that the watcher, calling
:func:`detect_latest` once per run, raises exactly the alerts that :func:`detect_online`
(the replay used by ``bench-detect --online``) raises at that run.

pandas and numpy are imported inside the functions (the watcher's idle tick must not pay for
them).
"""

from __future__ import annotations

import bisect
import fnmatch
import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

__all__ = [
    "CHANGE_KINDS",
    "INFO_KINDS",
    "KINDS",
    "Alert",
    "DetectorSettings",
    "DetectorState",
    "SettingsError",
    "backtest",
    "detect_latest",
    "detect_online",
    "format_alerts",
    "legacy_alerts",
    "legacy_online",
    "sort_alerts",
]

log = logging.getLogger(__name__)

#: Kinds of alert: a change of a series, a run-level event, or a presence change.
CHANGE_KINDS = ("step", "drift")
RUN_KINDS = ("run_shift", "noisy_run")
INFO_KINDS = ("new_parameter", "removed_parameter", "new_file", "removed_file")
KINDS = CHANGE_KINDS + RUN_KINDS + INFO_KINDS
#: ``file``/``parameter`` of an alert about a whole run or a whole file.
ALL = "*"
REGRESSION = "regression"
IMPROVEMENT = "improvement"
STATE_FORMAT = 1

#: Internal constants (documented in docs/detection.md), not settings: changing them changes
#: what "noise" means rather than how sensitive the detector is.
_MAD_TO_SIGMA = 1.4826
_DECILE_TO_SIGMA = 1.2816  # (q90 - median) of a normal distribution, in sigmas
_MIN_SEGMENT = 3  # values a young segment needs, with a borrowed noise, to be judged
_MIN_NOISE_REL = 0.001  # no series is trusted to be quieter than 0.1%
_DRIFT_POINTS = 10  # values in the drift's reference and current levels
_RUN_Z = 1.5  # a series moved in a run-level jump: 1.5 x its noise and half the floors
_PERSIST_SHARE = 0.5  # share of the jumped series that must stay for a run-wide shift
_REMOVED_AFTER = 3  # runs a file or parameter must be missing from to be reported removed
_LEVEL_RATIO = 2.0  # a clear step: the farthest value at most twice as far as the nearest
_EACH_SHARE = 0.625  # a borderline step: each value past 0.625 x noise_multiplier x noise,
_LEVEL_SHARE = 0.8  # ... and the median of its values past 0.8 x noise_multiplier x noise


# --- alerts ----------


@dataclass(frozen=True)
class Alert:
    """One thing to tell people about, raised at ``run``.

    ``file``/``parameter`` are ``"*"`` for run-level alerts (``parameter`` alone for a whole
    file). ``direction`` is ``"regression"`` (a cost went up) or ``"improvement"``; kinds that
    are not changes of a value (new/removed files and parameters) are never regressions.
    ``magnitude_pct`` is the size of the change in % of the baseline (always >= 0, ``inf`` from
    0); ``score`` how many times the series' usual noise the change is; ``nan`` where a field
    does not apply. ``since`` is the first run at the new level (or the run concerned).
    """

    run: str
    file: str
    parameter: str
    direction: str
    kind: str
    magnitude_pct: float
    baseline: float
    value: float
    score: float
    reason: str
    since: str = ""

    @property
    def is_change(self) -> bool:
        """A change of a parameter's value (step or drift), as opposed to an event."""
        return self.kind in CHANGE_KINDS

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: non-finite numbers become ``None``."""
        return {
            "run": self.run,
            "file": self.file,
            "parameter": self.parameter,
            "direction": self.direction,
            "kind": self.kind,
            "magnitude_pct": _finite(self.magnitude_pct),
            "baseline": _finite(self.baseline),
            "value": _finite(self.value),
            "score": _finite(self.score),
            "reason": self.reason,
            "since": self.since,
        }


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def sort_alerts(alerts: Iterable[Alert], runs: Sequence[str] | None = None) -> list[Alert]:
    """Alerts by run, then regressions first: run-level events, changes by score, then
    improvements, then presence changes."""
    position = {name: i for i, name in enumerate(runs)} if runs is not None else None

    def key(alert: Alert) -> tuple[Any, ...]:
        when: Any = position.get(alert.run, -1) if position is not None else alert.run
        if alert.kind in INFO_KINDS:
            group = 3
        elif alert.direction == REGRESSION:
            group = 0
        else:
            group = 1 if alert.kind in RUN_KINDS else 2
        run_level = 0 if alert.kind in RUN_KINDS else 1
        score = alert.score if math.isfinite(alert.score) else math.inf
        return (when, group, run_level, -score, alert.file, alert.parameter)

    return sorted(alerts, key=key)


# --- settings ----------


class SettingsError(ValueError):
    """An invalid ``[detect]`` setting; the message names the key."""


def _default_overrides() -> dict[str, dict[str, float]]:
    return {"*const": {"absolute_floor": 2.0}, "*intercept": {"absolute_floor": 2.0}}


_OVERRIDE_KEYS = ("relative_floor", "absolute_floor", "noise_multiplier")


@dataclass
class DetectorSettings:
    """How sensitive the default detector is (the ``[detect]`` table of the configuration).

    Floors: a change must be at least ``relative_floor`` (a fraction: 0.05 = 5%) of the
    baseline and at least ``absolute_floor`` (in the parameter's unit), *and* at least
    ``noise_multiplier`` times the series' own noise (a robust standard deviation).
    ``overrides`` maps fnmatch patterns of parameter names to other values of those three keys
    (all matching patterns apply, in order; the defaults give names ending in ``const`` or
    ``intercept`` an absolute floor of 2, the old rule's). ``confirm_runs`` (0-2) is how many
    runs after the first one a change must last before it is reported. ``ignore``: patterns of
    names that never alert (the fit-quality columns).
    """

    relative_floor: float = 0.05
    absolute_floor: float = 0.0
    noise_multiplier: float = 4.0
    confirm_runs: int = 1
    window: int = 20
    min_history: int = 8
    run_fraction: float = 0.5
    run_min_parameters: int = 20
    drift: bool = True
    overrides: dict[str, dict[str, float]] = field(default_factory=_default_overrides)
    ignore: list[str] = field(default_factory=lambda: ["*score*", "*T-value*"])

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        def check(name: str, ok: bool, what: str) -> None:
            if not ok:
                raise SettingsError(f"detect.{name} = {getattr(self, name)!r}: {what}")

        check("relative_floor", 0 <= self.relative_floor < 100, "expected a fraction >= 0")
        check("absolute_floor", self.absolute_floor >= 0, "expected a number >= 0")
        check("noise_multiplier", self.noise_multiplier > 0, "expected a number > 0")
        check("confirm_runs", self.confirm_runs in (0, 1, 2), "expected 0, 1 or 2")
        check("window", 3 <= self.window <= 1000, "expected an integer in 3..1000")
        check("min_history", 3 <= self.min_history <= self.window, "expected 3..window")
        check("run_fraction", 0 < self.run_fraction <= 1, "expected a fraction in (0, 1]")
        check("run_min_parameters", self.run_min_parameters >= 1, "expected an integer >= 1")
        for pattern, values in self.overrides.items():
            if not isinstance(values, Mapping):
                raise SettingsError(f"detect.overrides.{pattern!r}: expected a table")
            for key, value in values.items():
                if key not in _OVERRIDE_KEYS:
                    raise SettingsError(
                        f"detect.overrides.{pattern!r}.{key}: unknown key "
                        f"(allowed: {', '.join(_OVERRIDE_KEYS)})"
                    )
                if (
                    isinstance(value, bool)
                    or not isinstance(value, int | float)
                    or value < 0
                    or (key == "noise_multiplier" and value <= 0)
                ):
                    raise SettingsError(
                        f"detect.overrides.{pattern!r}.{key} = {value!r}: expected a number >= 0"
                    )

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, source: str = "[detect]") -> DetectorSettings:
        """Settings from a ``[detect]`` TOML table; unknown keys and bad values are errors
        naming the key. ``overrides`` are added after the default ones (later wins)."""
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SettingsError(
                f"{source}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})"
            )
        kwargs: dict[str, Any] = {}
        types: dict[str, tuple[type, ...]] = {
            "relative_floor": (int, float),
            "absolute_floor": (int, float),
            "noise_multiplier": (int, float),
            "run_fraction": (int, float),
            "confirm_runs": (int,),
            "window": (int,),
            "min_history": (int,),
            "run_min_parameters": (int,),
            "drift": (bool,),
        }
        for key, value in data.items():
            if key in types:
                wanted = types[key]
                if (isinstance(value, bool) and bool not in wanted) or not isinstance(
                    value, wanted
                ):
                    names = " or ".join(t.__name__ for t in wanted)
                    raise SettingsError(f"{source} {key} = {value!r}: expected {names}")
                kwargs[key] = float(cast("float", value)) if float in wanted else value
            elif key == "overrides":
                if not isinstance(value, Mapping):
                    raise SettingsError(f"{source} overrides: expected a table of patterns")
                merged = _default_overrides()
                for pattern, values in value.items():
                    if not isinstance(values, Mapping):
                        raise SettingsError(
                            f"{source} overrides.{pattern!r}: expected a table such as "
                            "{ relative_floor = 0.1 }"
                        )
                    merged.pop(pattern, None)
                    merged[pattern] = dict(values)
                kwargs["overrides"] = merged
            elif key == "ignore":
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    raise SettingsError(f"{source} ignore: expected a list of patterns")
                kwargs["ignore"] = list(value)
        try:
            return cls(**kwargs)
        except SettingsError as err:
            raise SettingsError(f"{source}: {err}") from None

    def thresholds(self, parameter: str) -> tuple[float, float, float]:
        """``(relative_floor, absolute_floor, noise_multiplier)`` for ``parameter``."""
        values = {
            "relative_floor": self.relative_floor,
            "absolute_floor": self.absolute_floor,
            "noise_multiplier": self.noise_multiplier,
        }
        for pattern, override in self.overrides.items():
            if fnmatch.fnmatchcase(parameter, pattern):
                values.update({k: float(v) for k, v in override.items()})
        return values["relative_floor"], values["absolute_floor"], values["noise_multiplier"]

    def ignored(self, parameter: str) -> bool:
        return any(fnmatch.fnmatchcase(parameter, pattern) for pattern in self.ignore)


# --- state ----------


@dataclass
class DetectorState:
    """What the default detector has already reported, kept with the watcher's state.

    ``last_run``: the newest run processed. ``series``: ``{file: {parameter: {"start": run,
    "drift": "up"|"down"}}}``, for the series whose baseline restarted after a reported step
    (``start``: the run it restarts at) or whose drift was reported (``drift``). ``rebase``:
    the run where every baseline restarts (a run-wide shift). ``noisy_runs``: runs left out of
    every baseline. ``pending``: the latest runs where most parameters jumped, held back until
    the next runs tell a noisy run from a run-wide shift.
    """

    last_run: str | None = None
    series: dict[str, dict[str, dict[str, str]]] = field(default_factory=dict)
    rebase: str | None = None
    noisy_runs: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": STATE_FORMAT,
                "last_run": self.last_run,
                "rebase": self.rebase,
                "noisy_runs": sorted(self.noisy_runs),
                "pending": self.pending,
                "series": {f: dict(sorted(p.items())) for f, p in sorted(self.series.items())},
            },
            indent=1,
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> DetectorState:
        try:
            data = json.loads(text)
        except ValueError as err:
            raise ValueError(f"detector state: not JSON: {err}") from None
        if not isinstance(data, dict) or data.get("format") != STATE_FORMAT:
            raise ValueError(
                f"detector state: unsupported format {data.get('format')!r} "
                f"(expected {STATE_FORMAT})"
                if isinstance(data, dict)
                else "detector state: expected a JSON object"
            )
        series = data.get("series") or {}
        return cls(
            last_run=data.get("last_run"),
            series={
                str(f): {str(p): {str(k): str(v) for k, v in e.items()} for p, e in ps.items()}
                for f, ps in series.items()
            },
            rebase=data.get("rebase"),
            noisy_runs=[str(r) for r in data.get("noisy_runs") or []],
            pending=[str(r) for r in data.get("pending") or []],
        )


# --- formatting ----------


def _num(value: float) -> str:
    if not math.isfinite(value):
        return str(value)
    return f"{value:.6g}"


def _pct_text(baseline: float, value: float) -> str:
    if baseline == 0:
        return "from 0"
    pct = abs(value - baseline) / abs(baseline) * 100.0
    return f"{pct:.1f}%" if pct < 10 else f"{pct:.0f}%"


def _magnitude(baseline: float, value: float) -> float:
    if not (math.isfinite(baseline) and math.isfinite(value)):
        return math.nan
    if baseline == 0:
        return 0.0 if value == 0 else math.inf
    return abs(value - baseline) / abs(baseline) * 100.0


def _times(score: float) -> str:
    if not math.isfinite(score) or score >= 1000:
        return "far beyond its usual noise"
    return f"{score:.1f}x its usual noise"


def _info(
    run: str,
    file: str,
    parameter: str,
    kind: str,
    reason: str,
    *,
    baseline: float = math.nan,
    value: float = math.nan,
    since: str = "",
) -> Alert:
    """A presence alert (new or removed file or parameter): never a regression."""
    return Alert(
        run=run,
        file=file,
        parameter=parameter,
        direction=IMPROVEMENT,
        kind=kind,
        magnitude_pct=math.nan,
        baseline=baseline,
        value=value,
        score=math.nan,
        reason=reason,
        since=since or run,
    )


def _masked_median(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Median of each row's values where ``mask`` (``nan`` for an empty row), warning-free."""
    import numpy as np

    data = np.where(mask, values, np.nan)
    data.sort(axis=1)
    return _order_stat(data, mask.sum(axis=1), 0.5)


# --- the history as a matrix ----------


def _factorize(column: pd.Series) -> tuple[np.ndarray, list[str]]:
    """Codes (``-1`` for missing) and the names in sorted order.

    A categorical column (the loaders' tables) keeps its codes' width (int8 or int16 for the
    names of a history, which has millions of rows): no wider copy is made."""
    import numpy as np
    import pandas as pd

    if isinstance(column.dtype, pd.CategoricalDtype):
        codes = column.cat.codes.to_numpy()
        categories = [str(c) for c in column.cat.categories]
        seen = np.zeros(len(categories) + 1, dtype=bool)
        seen[codes] = True  # codes == -1 mark the last slot
        used = seen[:-1].nonzero()[0]
        names = [categories[i] for i in used]
        order = sorted(range(len(names)), key=names.__getitem__)
        remap = np.full(len(categories) + 1, -1, dtype=codes.dtype)
        remap[used[order]] = np.arange(len(order))
        return remap[codes], [names[i] for i in order]  # codes == -1 index the last slot
    codes, uniques = pd.factorize(column.astype("str"), sort=True, use_na_sentinel=True)
    return codes.astype(np.int32), [str(u) for u in uniques]


def _series_codes(key: np.ndarray, n_keys: int) -> tuple[np.ndarray, np.ndarray]:
    """For ``key`` (integers in ``[0, n_keys)``): codes numbering its distinct values in
    sorted order, and those values; ``pd.factorize(key, sort=True)``.

    When there are not more possible keys than rows, a table of them replaces factorize's
    hash table and its int64 codes (a large history: tens of MB instead of hundreds)."""
    import numpy as np
    import pandas as pd

    if n_keys > max(len(key), 1 << 20) or n_keys >= 2**31:
        codes, uniques = pd.factorize(key, sort=True)
        return codes, np.asarray(uniques, dtype=np.int64)
    seen = np.zeros(n_keys, dtype=bool)
    seen[key] = True
    number = np.cumsum(seen, dtype=np.int32)
    number -= 1
    return number[key], seen.nonzero()[0].astype(np.int64)


class _Matrix:
    """The long table as arrays: series x runs values and presence."""

    def __init__(self, table: pd.DataFrame, ignore: Any) -> None:
        import numpy as np
        import pandas as pd

        missing = [c for c in ("run", "file", "parameter", "value") if c not in table.columns]
        if missing:
            raise ValueError(f"the history table lacks the column(s) {', '.join(missing)}")
        run_codes, self.runs = _factorize(table["run"])
        file_codes, self.files = _factorize(table["file"])
        param_codes, param_names = _factorize(table["parameter"])
        values = pd.to_numeric(table["value"], errors="coerce").to_numpy(dtype=np.float64)
        keep = (run_codes >= 0) & (file_codes >= 0) & (param_codes >= 0)
        T, F = len(self.runs), len(self.files)
        self.run_index = {name: i for i, name in enumerate(self.runs)}
        self.file_present = np.zeros((F, T), dtype=bool)
        self.file_present[file_codes[keep], run_codes[keep]] = True
        ignored = np.array([bool(ignore(name)) for name in param_names] + [True], dtype=bool)
        keep &= ~ignored[param_codes]
        if not keep.all():  # (the copies cost hundreds of MB on a large history: only if needed)
            run_codes, file_codes = run_codes[keep], file_codes[keep]
            param_codes, values = param_codes[keep], values[keep]
        del keep
        width = max(len(param_names), 1)  # a series' key: file code x width + parameter code
        n_keys = len(self.files) * width
        key_type = np.int32 if n_keys < 2**31 else np.int64
        key = file_codes.astype(key_type) * width + param_codes
        del file_codes, param_codes
        series_codes, unique_keys = _series_codes(key, n_keys)
        del key
        S = len(unique_keys)
        self.series_file = (unique_keys // width).astype(np.int64)
        series_param = (unique_keys % width).astype(np.int64)
        self.params = [param_names[i] for i in series_param]
        self.values = np.full((S, T), np.nan)
        finite = np.isfinite(values)
        if finite.all():
            self.values[series_codes, run_codes] = values
        else:
            self.values[series_codes[finite], run_codes[finite]] = values[finite]
        del values, finite
        self.present = np.zeros((S, T), dtype=bool)
        self.present[series_codes, run_codes] = True
        self.file_cum = np.zeros((F, T + 1), dtype=np.int64)
        np.cumsum(self.file_present, axis=1, out=self.file_cum[:, 1:])

    @property
    def n_series(self) -> int:
        return len(self.params)

    def series_index(self) -> dict[tuple[str, str], int]:
        return {
            (self.files[f], p): s
            for s, (f, p) in enumerate(zip(self.series_file, self.params, strict=True))
        }

    def last_before(self, present: np.ndarray, t: int) -> np.ndarray:
        """Per row of ``present`` (rows x runs), the last column < ``t`` that is True, or -1."""
        import numpy as np

        if t <= 0:
            return np.full(present.shape[0], -1, dtype=np.int64)
        block = present[:, :t]
        seen = block.any(axis=1)
        last = t - 1 - np.argmax(block[:, ::-1], axis=1)
        return np.where(seen, last, -1).astype(np.int64)

    def index_of(self, run: str) -> int:
        if run not in self.run_index:
            raise ValueError(f"run {run!r} is not in the history")
        return self.run_index[run]

    def position(self, run: str) -> int:
        """Index of the first run >= ``run`` (runs sort by name)."""
        return bisect.bisect_left(self.runs, run)


def _order_stat(sorted_values: np.ndarray, count: np.ndarray, q: float) -> np.ndarray:
    """Linear-interpolated ``q`` quantile of each row's first ``count`` (sorted) values."""
    import numpy as np

    rows = np.arange(sorted_values.shape[0])
    pos = np.maximum(count - 1, 0) * q
    lo = np.floor(pos).astype(np.int64)
    hi = np.ceil(pos).astype(np.int64)
    frac = pos - lo
    width = sorted_values.shape[1]
    if width == 0:
        return np.full(len(rows), np.nan)
    low = sorted_values[rows, np.minimum(lo, width - 1)]
    high = sorted_values[rows, np.minimum(hi, width - 1)]
    with np.errstate(invalid="ignore"):
        out = low + (high - low) * frac
    return np.where(count > 0, out, np.nan)


@dataclass
class _Stats:
    median: np.ndarray
    up: np.ndarray  # noise (sigma-equivalent) for a rise
    down: np.ndarray  # noise for a fall
    count: np.ndarray
    mad: np.ndarray


# --- the default detector ----------


class _Engine:
    """The default detector's state as arrays, advanced one run at a time."""

    def __init__(
        self, table: pd.DataFrame, settings: DetectorSettings, reference: str | None
    ) -> None:
        import numpy as np

        self.settings = settings
        self.m = _Matrix(table, settings.ignored)
        m = self.m
        S, T = m.values.shape
        self.ref_index = m.position(reference) if reference else 0
        thresholds = {name: settings.thresholds(name) for name in set(m.params)}
        self.rel = np.array([thresholds[p][0] for p in m.params], dtype=np.float64)
        self.abs = np.array([thresholds[p][1] for p in m.params], dtype=np.float64)
        self.k = np.array([thresholds[p][2] for p in m.params], dtype=np.float64)
        self.n_post = settings.confirm_runs + 1
        self.n_gone = max(self.n_post, _REMOVED_AFTER)
        self.seg_start = np.zeros(S, dtype=np.int64)
        self.drift_flag = np.zeros(S, dtype=np.int8)  # direction of a drift already reported
        self.clean = np.ones(T, dtype=bool)
        self.pending: list[int] = []  # held-back runs (most parameters moved), oldest first
        self.rebase = 0
        self.extra_noisy: list[str] = []  # noisy runs of the state that are not in the table
        self.extra_series: dict[str, dict[str, dict[str, str]]] = {}
        self.next_t = -1
        self.last_obs = np.full(S, -1, dtype=np.int64)
        self.file_last = np.full(len(m.files), -1, dtype=np.int64)
        self.last_processed: int | None = None

    # -- state in and out --

    def load(self, state: DetectorState | None) -> None:
        if state is None:
            return
        m = self.m
        if state.rebase:
            self.rebase = m.position(state.rebase)
            self.seg_start[:] = self.rebase
        index = m.series_index()
        for file, parameters in state.series.items():
            for parameter, entry in parameters.items():
                s = index.get((file, parameter))
                if s is None:
                    self.extra_series.setdefault(file, {})[parameter] = dict(entry)
                    continue
                if entry.get("start"):
                    self.seg_start[s] = max(self.seg_start[s], m.position(entry["start"]))
                self.drift_flag[s] = {"up": 1, "down": -1}.get(entry.get("drift", ""), 0)
        for name in state.noisy_runs:
            if name in m.run_index:
                self.clean[m.run_index[name]] = False
            else:
                self.extra_noisy.append(name)
        for name in state.pending:
            if name in m.run_index:
                self.pending.append(m.run_index[name])
                self.clean[m.run_index[name]] = False

    def dump(self) -> DetectorState:
        m = self.m
        series: dict[str, dict[str, dict[str, str]]] = {
            f: {p: dict(e) for p, e in ps.items()} for f, ps in self.extra_series.items()
        }
        for s in ((self.seg_start > self.rebase) | (self.drift_flag != 0)).nonzero()[0]:
            entry: dict[str, str] = {}
            if self.seg_start[s] > self.rebase:
                entry["start"] = m.runs[self.seg_start[s]]
            if self.drift_flag[s]:
                entry["drift"] = "up" if self.drift_flag[s] > 0 else "down"
            series.setdefault(m.files[m.series_file[s]], {})[m.params[s]] = entry
        noisy = [m.runs[i] for i in (~self.clean).nonzero()[0] if i not in self.pending]
        return DetectorState(
            last_run=m.runs[self.last_processed] if self.last_processed is not None else None,
            series=series,
            rebase=m.runs[self.rebase] if self.rebase > 0 else None,
            noisy_runs=sorted(set(noisy + self.extra_noisy)),
            pending=[m.runs[i] for i in self.pending],
        )

    # -- windows --

    def _gather(self, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Values at ``(rows[:, None], cols)`` and whether each is usable (in range, observed,
        finite, not a noisy run). Each row of ``cols`` is consecutive columns (``lo + 0, 1,
        ...``), possibly out of range; rows sharing a ``lo`` are read as one block."""
        import numpy as np

        values = self.m.values
        T = values.shape[1]
        count, width = cols.shape
        if count == 0:
            return np.empty((0, width)), np.zeros((0, width), dtype=bool)
        lo = cols[:, 0]
        vals = np.full((count, width), np.nan)
        starts, groups = np.unique(lo, return_inverse=True)
        for g, first in enumerate(starts):
            members = (groups == g).nonzero()[0] if len(starts) > 1 else slice(None)
            a, b = max(int(first), 0), min(int(first) + width, T)
            if a < b:
                vals[members, a - first : b - first] = values[rows[members], a:b]
        padded = np.concatenate([[False], self.clean, [False]])  # out of range: unusable
        ok = np.isfinite(vals) & padded[np.clip(cols, -1, T) + 1]
        return vals, ok

    def _stats(
        self, rows: np.ndarray, end: np.ndarray, start: np.ndarray, flapping: np.ndarray
    ) -> _Stats:
        """Baseline over the runs before ``end`` (exclusive), not before ``start``, zeros left
        out for ``flapping`` rows: the median of the last ``window`` runs, and the noise
        (MAD and deciles) of the last ``2 x window`` (a parameter's noise changes less often
        than its level, and more values make a steadier estimate)."""
        import numpy as np

        W = self.settings.window
        L = 2 * W
        cols = end[:, None] - L + np.arange(L)[None, :]
        vals, ok = self._gather(rows, cols)
        ok &= cols >= start[:, None]
        ok &= ~(flapping[:, None] & (vals == 0))
        recent = ok.copy()
        recent[:, :-W] = False
        count = recent.sum(axis=1)
        median = _masked_median(vals, recent)
        vals = np.where(ok, vals, np.nan)
        vals.sort(axis=1)
        n_all = ok.sum(axis=1)
        center = _order_stat(vals, n_all, 0.5)
        q_lo = _order_stat(vals, n_all, 0.1)
        q_hi = _order_stat(vals, n_all, 0.9)
        dev = np.abs(vals - center[:, None])
        dev.sort(axis=1)
        mad = _order_stat(dev, n_all, 0.5)
        # Fewer values, a less certain noise: up to +20% for 8 values, nothing for 2 x window.
        with np.errstate(divide="ignore"):
            scale = 1.0 + np.fmax(1.0 / np.sqrt(n_all) - 1.0 / math.sqrt(L), 0.0)
        base = _MAD_TO_SIGMA * mad * scale
        floor = _MIN_NOISE_REL * np.abs(median)
        up = np.fmax(np.fmax(base, scale * (q_hi - center) / _DECILE_TO_SIGMA), floor)
        down = np.fmax(np.fmax(base, scale * (center - q_lo) / _DECILE_TO_SIGMA), floor)
        return _Stats(median, up, down, count, mad)

    def _flapping(self, rows: np.ndarray, end: np.ndarray) -> np.ndarray:
        """Rows with an exact 0 in the ``2 x window`` runs before ``end``."""
        import numpy as np

        L = 2 * self.settings.window
        cols = end[:, None] - L + np.arange(L)[None, :]
        vals, ok = self._gather(rows, cols)
        result: np.ndarray = (ok & (vals == 0)).any(axis=1)
        return result

    def _largest(self, rows: np.ndarray, end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The largest |value| in the ``2 x window`` runs of the segment before ``end`` (0 if
        none), and how many values there are."""
        import numpy as np

        L = 2 * self.settings.window
        cols = end[:, None] - L + np.arange(L)[None, :]
        vals, ok = self._gather(rows, cols)
        ok &= cols >= self.seg_start[rows][:, None]
        largest: np.ndarray = np.where(ok, np.abs(vals), 0.0).max(axis=1)
        return largest, ok.sum(axis=1)

    def _noise(self, rows: np.ndarray, end: np.ndarray, flapping: np.ndarray) -> _Stats:
        """Baseline of the current segment; a young segment borrows its predecessor's noise."""
        import numpy as np

        st = self._stats(rows, end, self.seg_start[rows], flapping)
        young = (st.count < self.settings.min_history) & (st.count >= _MIN_SEGMENT)
        young &= self.seg_start[rows] > 0
        if young.any():
            idx = young.nonzero()[0]
            before = self._stats(
                rows[idx],
                self.seg_start[rows[idx]],
                np.zeros(len(idx), dtype=np.int64),
                flapping[idx],
            )
            usable = before.count >= self.settings.min_history
            scale = np.abs(st.median[idx]) / np.where(
                before.median != 0, np.abs(before.median), np.nan
            )
            up = np.fmax(st.up[idx], before.up * scale)
            down = np.fmax(st.down[idx], before.down * scale)
            st.up[idx] = np.where(usable, up, np.nan)
            st.down[idx] = np.where(usable, down, np.nan)
        judged = (st.count >= self.settings.min_history) | (young & np.isfinite(st.up))
        st.up = np.where(judged, st.up, np.nan)
        st.down = np.where(judged, st.down, np.nan)
        return st

    # -- one run --

    def start(self, t: int) -> None:
        """Make the running arrays describe the runs before ``t``."""
        if t != self.next_t:
            self.last_obs = self.m.last_before(self.m.present, t)
            self.file_last = self.m.last_before(self.m.file_present, t)

    def step(self, t: int) -> list[Alert]:
        self.start(t)
        alerts = self._presence(t)
        suppress = False
        if self.pending and self.pending[-1] < t:
            decided, suppress = self._decide_pending(t)
            alerts += decided
        if not suppress and self._run_level(t):
            suppress = True
        if not suppress:
            alerts += self._series(t)
        self._advance(t)
        return alerts

    def _advance(self, t: int) -> None:
        import numpy as np

        m = self.m
        self.last_obs = np.where(m.present[:, t], t, self.last_obs)
        self.file_last = np.where(m.file_present[:, t], t, self.file_last)
        self.next_t = t + 1
        self.last_processed = t

    def _presence(self, t: int) -> list[Alert]:
        import numpy as np

        m = self.m
        run = m.runs[t]
        alerts: list[Alert] = []
        if t == 0:
            return alerts
        seen_before = self.file_last >= 0
        if not seen_before.any():
            return alerts
        new_files = m.file_present[:, t] & ~seen_before
        counts = np.bincount(m.series_file[m.present[:, t]], minlength=len(m.files))
        for f in new_files.nonzero()[0]:
            alerts.append(
                _info(run, m.files[f], ALL, "new_file", f"new file, {counts[f]} parameter(s)")
            )
        new_series = m.present[:, t] & (self.last_obs < 0) & ~new_files[m.series_file]
        for s in new_series.nonzero()[0]:
            value = float(m.values[s, t])
            alerts.append(
                _info(
                    run,
                    m.files[m.series_file[s]],
                    m.params[s],
                    "new_parameter",
                    f"new parameter, first value {_num(value)}",
                    value=value,
                )
            )
        # A parameter missing from the last n_gone runs of its file (present in them).
        f_of = m.series_file
        here = m.file_present[f_of, t] & ~m.present[:, t] & (self.last_obs >= 0)
        rows = here.nonzero()[0]
        if len(rows):
            last = self.last_obs[rows]
            count = m.file_cum[f_of[rows], t + 1] - m.file_cum[f_of[rows], last + 1]
            gone_rows = count == self.n_gone
            for s, L in zip(rows[gone_rows], last[gone_rows], strict=True):
                value = float(m.values[s, L])
                alerts.append(
                    _info(
                        run,
                        m.files[f_of[s]],
                        m.params[s],
                        "removed_parameter",
                        f"removed: absent from the last {self.n_gone} runs of its file, "
                        f"last value {_num(value)} in {m.runs[L]}",
                        baseline=value,
                        since=m.runs[L + 1],
                    )
                )
        gone = ~m.file_present[:, t] & seen_before & (t - self.file_last == self.n_gone)
        for f in gone.nonzero()[0]:
            L = int(self.file_last[f])
            alerts.append(
                _info(
                    run,
                    m.files[f],
                    ALL,
                    "removed_file",
                    f"file missing from the last {self.n_gone} runs, last seen in {m.runs[L]}",
                    since=m.runs[L + 1],
                )
            )
        return alerts

    def _jumps(
        self, rows: np.ndarray, end: np.ndarray, cols: Sequence[int]
    ) -> tuple[np.ndarray, list[np.ndarray], _Stats]:
        """Run-level view: for each column in ``cols``, +1/-1/0 per row (jumped up, down,
        not), against the baseline before ``end``; rows without a baseline are not eligible."""
        import numpy as np

        flapping = self._flapping(rows, end)
        st = self._noise(rows, end, flapping)
        eligible = np.isfinite(st.up) & ~flapping
        floor = np.fmax(self.rel[rows] * np.abs(st.median), self.abs[rows]) / 2
        signs = []
        for c in cols:
            d = self.m.values[rows, c] - st.median
            with np.errstate(invalid="ignore"):
                up = (d >= np.fmax(_RUN_Z * st.up, floor)) & (d > 0)
                down = (-d >= np.fmax(_RUN_Z * st.down, floor)) & (d < 0)
            signs.append(np.where(up, 1, np.where(down, -1, 0)) * eligible)
        return eligible, signs, st

    def _run_level(self, t: int) -> bool:
        """Hold run ``t`` back when most series jumped in it."""
        import numpy as np

        s = self.settings
        rows = np.isfinite(self.m.values[:, t]).nonzero()[0]
        if len(rows) < s.run_min_parameters:
            return False
        end = np.full(len(rows), t, dtype=np.int64)
        eligible, (sign,), _ = self._jumps(rows, end, [t])
        n = int(eligible.sum())
        together = max(int((sign > 0).sum()), int((sign < 0).sum()))
        if n < s.run_min_parameters or together < s.run_fraction * n:
            return False
        log.debug("%s: %d of %d parameters jumped together: held back", self.m.runs[t], together, n)
        self.pending = [t]
        self.clean[t] = False
        return True

    def _decide_pending(self, t: int) -> tuple[list[Alert], bool]:
        """Run ``t`` judges the held-back run(s): when most of the series that moved stayed
        there, the run is held back too, and after two such runs it is a run-wide shift;
        otherwise the held-back runs were noisy. Returns the alert (if decided) and whether
        per-parameter tests are suspended at ``t``."""
        import numpy as np

        m, s = self.m, self.settings
        u = self.pending[0]
        rows = (np.isfinite(m.values[:, u]) & np.isfinite(m.values[:, t])).nonzero()[0]
        end = np.full(len(rows), u, dtype=np.int64)
        eligible, (at_u, at_t), st = self._jumps(rows, end, [u, t])
        n = max(int(eligible.sum()), 1)
        up = int((at_u > 0).sum()) >= int((at_u < 0).sum())
        direction = REGRESSION if up else IMPROVEMENT
        sign = 1 if up else -1
        sel = jumped = at_u == sign
        stayed = jumped & (at_t == sign)
        with np.errstate(divide="ignore", invalid="ignore"):
            rel_u = (m.values[rows, u] - st.median) / np.abs(st.median)
            noise = np.where(rel_u > 0, st.up, st.down)
            score_u = np.abs(m.values[rows, u] - st.median) / noise
        median_rel = float(np.median(rel_u[sel])) if sel.any() else math.nan
        score = float(np.median(score_u[sel])) if sel.any() else math.nan
        share = int(jumped.sum()) / n
        word = "up" if up else "down"
        stays = (
            jumped.any()
            and stayed.sum() >= _PERSIST_SHARE * jumped.sum()
            and (at_t == sign).sum() >= s.run_fraction * n
        )
        if stays and len(self.pending) < 2:
            # Two noisy runs in a row look like a shift: wait for a third run.
            self.pending.append(t)
            self.clean[t] = False
            return [], True
        held_back = self.pending
        held = [m.runs[i] for i in held_back]
        self.pending = []
        if stays:
            self.rebase = u
            self.seg_start = np.maximum(self.seg_start, u)
            self.drift_flag[:] = 0
            self.clean[held_back] = True
            reason = (
                f"run-wide shift: {share:.0%} of {n} parameters moved {word} together in "
                f"{m.runs[u]} (median {median_rel:+.0%}) and stayed there up to {m.runs[t]}; "
                f"every baseline restarts at {m.runs[u]}"
            )
            kind = "run_shift"
        else:
            runs_text = " and ".join(held)
            reason = (
                f"noisy run{'s' if len(held) > 1 else ''} {runs_text}: {share:.0%} of {n} "
                f"parameters jumped together (median {median_rel:+.0%}) and came back in "
                f"{m.runs[t]}; left out of the baselines"
            )
            kind = "noisy_run"
        alert = Alert(
            run=m.runs[t],
            file=ALL,
            parameter=ALL,
            direction=direction,
            kind=kind,
            magnitude_pct=abs(median_rel) * 100,
            baseline=math.nan,
            value=math.nan,
            score=score,
            reason=reason,
            since=m.runs[u],
        )
        return [alert], bool(stays)

    def _post(self, rows: np.ndarray, t: int, n: int) -> tuple[np.ndarray, ...]:
        """The last ``n`` usable values of each row up to run ``t`` (at most one missing or
        noisy run among them, none before the segment): ``(ok rows, first column, values,
        chosen mask)``, the values and mask over the columns ``t - n .. t``."""
        import numpy as np

        span = n + 1
        cols = np.arange(t - span + 1, t + 1)
        vals, ok = self._gather(rows, np.broadcast_to(cols, (len(rows), span)))
        ok &= cols[None, :] >= self.seg_start[rows][:, None]
        rank = np.cumsum(ok[:, ::-1], axis=1)[:, ::-1]
        chosen = ok & (rank <= n)
        full = chosen.sum(axis=1) == n
        first = cols[np.argmax(chosen, axis=1)]
        return full, first, vals, chosen

    def _judge(
        self,
        rows: np.ndarray,
        first: np.ndarray,
        vals: np.ndarray,
        chosen: np.ndarray,
        *,
        strong: bool,
    ) -> tuple[np.ndarray, np.ndarray, _Stats, np.ndarray]:
        """Which rows stepped up or down at ``first`` (see the module docstring): ``(up, down,
        baseline, flapping)``.

        strong: every value at least ``noise_multiplier`` x noise and the floors away, and
        together a level (the farthest at most twice as far as the nearest); otherwise
        (borderline, one more value): every value at least ``_EACH_SHARE`` x that and half the
        floors away, and their median ``_LEVEL_SHARE`` x that and the floors.
        """
        import numpy as np

        flapping = self._flapping(rows, first)
        st = self._noise(rows, first, flapping)
        rel, absf, k = self.rel[rows], self.abs[rows], self.k[rows]
        post = np.where(chosen, vals, np.nan)
        d = post - st.median[:, None]
        d = np.where(flapping[:, None] & (post == 0), 0.0, d)
        floor = np.fmax(rel * np.abs(st.median), absf)
        n = chosen.sum(axis=1)
        with np.errstate(invalid="ignore"):
            d_min = np.where(chosen, d, np.inf).min(axis=1)
            d_max = np.where(chosen, d, -np.inf).max(axis=1)
            if strong:
                up = d_min >= np.fmax(k * st.up, floor)
                up &= d_max <= _LEVEL_RATIO * d_min
                down = -d_max >= np.fmax(k * st.down, floor)
                down &= -d_min <= -_LEVEL_RATIO * d_max
                # A fall to exactly 0 may be the first flap of a LASSO coefficient: never clear.
                down &= ~(chosen & (post == 0)).any(axis=1)
            else:
                ordered = np.sort(np.where(chosen, d, np.nan), axis=1)
                middle = _order_stat(ordered, n, 0.5)
                up = d_min >= np.fmax(_EACH_SHARE * k * st.up, floor / 2)
                up &= middle >= np.fmax(_LEVEL_SHARE * k * st.up, floor)
                down = -d_max >= np.fmax(_EACH_SHARE * k * st.down, floor / 2)
                down &= -middle >= np.fmax(_LEVEL_SHARE * k * st.down, floor)
            up &= np.isfinite(st.up)
            down &= np.isfinite(st.down)
        # Flapping series with too few non-zero values to judge them: only a rise to ten times
        # the largest earlier value counts, or, after a whole window of zeros, a lasting
        # non-zero value past the absolute floor.
        sparse = flapping & ~np.isfinite(st.up)
        if sparse.any():
            idx = sparse.nonzero()[0]
            largest, seen = self._largest(rows[idx], first[idx])
            low = np.where(chosen[idx], post[idx], np.inf).min(axis=1)
            rise = (low > 0) & (low >= absf[idx]) & (seen >= self.settings.min_history)
            rise &= np.where(largest > 0, low >= 10 * largest, seen >= self.settings.window)
            up[idx] = rise
            st.median[idx] = np.where(np.isfinite(st.median[idx]), st.median[idx], 0.0)
            st.up[idx] = np.where(largest > 0, largest, np.nan)
        return up, down, st, flapping

    def _series(self, t: int) -> list[Alert]:
        """Steps and drifts of the series observed in run ``t``."""
        import numpy as np

        m, s = self.m, self.settings
        rows = np.isfinite(m.values[:, t]).nonzero()[0]
        if not len(rows):
            return []
        # A clear change is confirmed by confirm_runs more runs, a borderline one by one more
        # (at most 3 values: the change's run and the 2 after it).
        n_clear = self.n_post
        n_border = min(self.n_post + 1, 3)
        paths = [(n_clear, n_clear < n_border)]
        if n_border > n_clear or n_clear == 3:
            paths.append((n_border, False))
        found: dict[int, tuple[int, bool, float, float, float, int]] = {}
        for n, strong in paths:
            full, first, vals, chosen = self._post(rows, t, n)
            idx = full.nonzero()[0]
            if not len(idx):
                continue
            up, down, st, _ = self._judge(
                rows[idx], first[idx], vals[idx], chosen[idx], strong=strong
            )
            level = _masked_median(vals[idx], chosen[idx])
            for i in (up | down).nonzero()[0]:
                j = int(idx[i])
                if j in found and found[j][0] <= int(first[idx[i]]):
                    continue  # the other path saw the same change start earlier
                noise = float(st.up[i] if up[i] else st.down[i])
                found[j] = (
                    int(first[idx[i]]),
                    bool(up[i]),
                    float(st.median[i]),
                    float(level[i]),
                    noise,
                    n,
                )
        alerts: list[Alert] = []
        for j, (since, rising, baseline, value, noise, n) in sorted(found.items()):
            srow = rows[j]
            score = abs(value - baseline) / noise if noise > 0 else math.inf
            word = "up" if rising else "down"
            reason = (
                f"{word} {_pct_text(baseline, value)} ({_num(baseline)} -> {_num(value)}) "
                f"for {n} run{'s' if n > 1 else ''}, {_times(score)} (±{_num(noise)})"
            )
            alerts.append(
                self._alert(t, srow, "step", rising, baseline, value, score, reason, since)
            )
            self.seg_start[srow] = since
            self.drift_flag[srow] = 0
        if s.drift:
            rest = np.setdiff1d(rows, rows[list(found)]) if found else rows
            if len(rest):
                end = np.full(len(rest), t + 1, dtype=np.int64)
                keep = ~self._flapping(rest, end)
                drift_noise = self._diff_noise(rest[keep], end[keep])
                alerts += self._drift(t, rest[keep], drift_noise)
        return alerts

    def _diff_noise(self, rows: np.ndarray, end: np.ndarray) -> np.ndarray:
        """Noise that a slow trend does not inflate: 1.4826 x the MAD of the differences
        between consecutive runs over the last ``2 x window`` runs before ``end``, / sqrt(2);
        ``nan`` with fewer than ``min_history`` differences."""
        import numpy as np

        L = 2 * self.settings.window
        cols = end[:, None] - L + np.arange(L)[None, :]
        vals, ok = self._gather(rows, cols)
        ok &= cols >= self.seg_start[rows][:, None]
        diffs = vals[:, 1:] - vals[:, :-1]
        both = ok[:, 1:] & ok[:, :-1]
        diffs = np.where(both, diffs, np.nan)
        diffs.sort(axis=1)
        count = both.sum(axis=1)
        middle = _order_stat(diffs, count, 0.5)
        dev = np.abs(diffs - middle[:, None])
        dev.sort(axis=1)
        mad = _order_stat(dev, count, 0.5)
        level = _masked_median(vals, ok)
        noise = np.fmax(_MAD_TO_SIGMA * mad / math.sqrt(2.0), _MIN_NOISE_REL * np.abs(level))
        result: np.ndarray = np.where(count >= self.settings.min_history, noise, np.nan)
        return result

    def _alert(
        self,
        t: int,
        srow: int,
        kind: str,
        rising: bool,
        baseline: float,
        value: float,
        score: float,
        reason: str,
        since: int,
    ) -> Alert:
        """The alert of a change of series ``srow`` seen at run ``t`` (a rise is a regression,
        a fall an improvement, which its reason says), started at run ``since``."""
        m = self.m
        return Alert(
            run=m.runs[t],
            file=m.files[m.series_file[srow]],
            parameter=m.params[srow],
            direction=REGRESSION if rising else IMPROVEMENT,
            kind=kind,
            magnitude_pct=_magnitude(baseline, value),
            baseline=baseline,
            value=value,
            score=score,
            reason=reason if rising else f"{reason}: an improvement",
            since=m.runs[since],
        )

    def _drift(self, t: int, rows: np.ndarray, noise: np.ndarray) -> list[Alert]:
        import numpy as np

        m = self.m
        P = _DRIFT_POINTS
        if not len(rows):
            return []
        # Current level: the last P usable values of the segment, up to t.
        cols = np.arange(t - 2 * P + 1, t + 1)
        vals, ok = self._gather(rows, np.broadcast_to(cols, (len(rows), 2 * P)))
        ok &= cols[None, :] >= self.seg_start[rows][:, None]
        rank = np.cumsum(ok[:, ::-1], axis=1)[:, ::-1]
        cur = ok & (rank <= P)
        enough = cur.sum(axis=1) == P
        cur_first = cols[np.argmax(cur, axis=1)]
        current = _masked_median(vals, cur)
        # Reference level: the first P usable values of the segment, from the reference on.
        a = np.maximum(self.seg_start[rows], self.ref_index)
        rcols = a[:, None] + np.arange(2 * P)[None, :]
        rvals, rok = self._gather(rows, rcols)
        rok &= rcols <= t
        rrank = np.cumsum(rok, axis=1)
        ref = rok & (rrank <= P)
        enough &= ref.sum(axis=1) == P
        ref_last = np.where(ref, rcols, -1).max(axis=1)
        enough &= ref_last < cur_first
        if not enough.any():
            return []
        with np.errstate(invalid="ignore", all="ignore"):
            reference = _masked_median(rvals, ref)
            delta = current - reference
            floor = np.fmax(self.rel[rows] * np.abs(reference), self.abs[rows])
            # The two levels are medians of P values each: their difference has a standard
            # deviation of about 1.25 * noise * sqrt(2 / P).
            spread = 1.2533 * noise * math.sqrt(2.0 / P)
            hit = enough & (np.abs(delta) >= floor) & (np.abs(delta) >= self.k[rows] * spread)
            hit &= np.isfinite(noise)
            # Every current value past the reference on the same side: a level, not a spike.
            side = np.where(cur, (vals - reference[:, None]) * np.sign(delta)[:, None] > 0, True)
            hit &= side.all(axis=1)
            # Once per crossing: not again in the same direction until the level came back
            # within half the floors of the reference.
            flag = self.drift_flag[rows]
            hit &= np.sign(delta) != flag
            back = enough & (np.abs(delta) < floor / 2)
            self.drift_flag[rows[back]] = 0
        # A drift, not a step that went unnoticed: a ramp fits the segment better than a step.
        idx = hit.nonzero()[0]
        if len(idx):
            L = 3 * self.settings.window
            seg_cols = t - L + 1 + np.arange(L)[None, :] + np.zeros((len(idx), 1), dtype=np.int64)
            seg_vals, seg_ok = self._gather(rows[idx], seg_cols)
            seg_ok &= seg_cols >= a[idx][:, None]
            hit[idx] = _gradual(seg_cols.astype(np.float64), np.where(seg_ok, seg_vals, np.nan))
        alerts = []
        for i in hit.nonzero()[0]:
            srow = rows[i]
            baseline, value = float(reference[i]), float(current[i])
            score = abs(value - baseline) / float(noise[i]) if noise[i] > 0 else math.inf
            rising = value > baseline
            start_run = m.runs[int(np.where(ref[i], rcols[i], t).min())]
            reason = (
                f"drifted {'up' if rising else 'down'} {_pct_text(baseline, value)} "
                f"({_num(baseline)} -> {_num(value)}) since {start_run}, without a single step; "
                f"{_times(score)} (±{_num(float(noise[i]))})"
            )
            since = int(cur_first[i])
            alerts.append(
                self._alert(t, srow, "drift", rising, baseline, value, score, reason, since)
            )
            self.drift_flag[srow] = 1 if rising else -1
        return alerts


def _gradual(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """For each row of ``y`` (values at times ``x``; ``nan`` where missing), whether a ramp
    (flat, then a straight line from a change point on, or a straight line throughout)
    explains it better than a step (flat, then flat at another level), in least absolute
    deviations: a drift rather than a step that went unnoticed. Rows with fewer than 8 values
    are not drifts."""
    import numpy as np

    valid = np.isfinite(y)
    order = np.argsort(~valid, axis=1, kind="stable")  # the values first, in time order
    y = np.take_along_axis(y, order, axis=1)
    x = np.take_along_axis(x, order, axis=1)
    n = valid.sum(axis=1)
    rows, width = y.shape
    position = np.arange(width)[None, :]
    present = position < n[:, None]
    best_step = np.full(rows, np.inf)
    best_ramp = np.full(rows, np.inf)
    with np.errstate(invalid="ignore", divide="ignore"):
        for k in range(3, max(int(n.max()) - 2, 3)):
            usable = k <= n - 3
            left_mask = present[:, :k]
            left = _masked_median(y[:, :k], left_mask)
            left_cost = np.where(left_mask, np.abs(y[:, :k] - left[:, None]), 0.0).sum(axis=1)
            right_mask = present[:, k:]
            right = y[:, k:]
            level = _masked_median(right, right_mask)
            step_cost = np.where(right_mask, np.abs(right - level[:, None]), 0.0).sum(axis=1)
            span = x[:, k:] - x[:, k - 1 : k]
            slope = _masked_median((right - left[:, None]) / span, right_mask)
            ramp = np.abs(right - left[:, None] - slope[:, None] * span)
            ramp_cost = np.where(right_mask, ramp, 0.0).sum(axis=1)
            best_step = np.where(usable, np.fmin(best_step, left_cost + step_cost), best_step)
            best_ramp = np.where(usable, np.fmin(best_ramp, left_cost + ramp_cost), best_ramp)
        # A straight line throughout.
        pairs = present[:, 1:]
        slopes = np.diff(y, axis=1) / np.diff(x, axis=1)
        slope = _masked_median(slopes, pairs)
        span = x - x[:, :1]
        intercept = _masked_median(y - slope[:, None] * span, present)
        line = np.abs(y - intercept[:, None] - slope[:, None] * span)
        best_ramp = np.fmin(best_ramp, np.where(present, line, 0.0).sum(axis=1))
    result: np.ndarray = (n >= 8) & (best_ramp < best_step)
    return result


def _replay(
    engine: _Engine, indices: Iterable[int], *, collect: Iterable[int] | None = None
) -> list[Alert]:
    wanted = set(collect) if collect is not None else None
    alerts: list[Alert] = []
    for t in indices:
        found = engine.step(t)
        if wanted is None or t in wanted:
            alerts += found
    return sort_alerts(alerts, engine.m.runs)


def detect_online(
    table: pd.DataFrame,
    *,
    settings: DetectorSettings | None = None,
    state: DetectorState | None = None,
    runs: Sequence[str] | None = None,
    reference: str | None = None,
) -> tuple[list[Alert], DetectorState]:
    """Replay the history run by run as the watcher would have seen it.

    Returns every alert at the run where it is raised (each alert's ``run``), and the state
    after the last replayed run. ``runs``: the runs to replay (default: every run of the table
    after ``state.last_run``, or all of them); earlier runs are history. Each run is judged
    only on the runs up to it. ``reference``: the run the drift is measured from (default:
    the first run).
    """
    settings = settings or DetectorSettings()
    engine = _Engine(table, settings, reference)
    engine.load(state)
    names = engine.m.runs
    if runs is not None:
        indices = sorted({engine.m.index_of(r) for r in runs})
    elif state is not None and state.last_run is not None:
        indices = [i for i, name in enumerate(names) if name > state.last_run]
    else:
        indices = list(range(len(names)))
    alerts = _replay(engine, indices)
    out = engine.dump()
    if out.last_run is None and state is not None:
        out.last_run = state.last_run
    return alerts, out


def detect_latest(
    table: pd.DataFrame,
    *,
    settings: DetectorSettings | None = None,
    state: DetectorState | None,
    run: str,
    reference: str | None = None,
) -> tuple[list[Alert], DetectorState]:
    """The watcher's call: the alerts raised at ``run``, given the state saved after the
    previous run, and the state to save.

    Runs between ``state.last_run`` and ``run`` that the state has not seen are caught up
    first, and the alerts raised at them are returned too (their ``run`` says where). With no
    state (or an empty one), the history before ``run`` is taken as already reported.
    When most parameters moved together in ``run``, nothing is raised at it (it is held back
    in ``state.pending``): the next run raises one ``noisy_run`` alert if they came back,
    and a run-wide shift is raised as one ``run_shift`` alert once it lasted two more runs.
    Raises ValueError when ``run`` is not in the table or the state is already past it.
    """
    settings = settings or DetectorSettings()
    engine = _Engine(table, settings, reference)
    t = engine.m.index_of(run)
    if state is not None and state.last_run is not None and state.last_run >= run:
        raise ValueError(
            f"the detector state already covers {state.last_run}, at or after {run}: "
            "pass the state saved before that run"
        )
    engine.load(state)
    if state is not None and state.last_run is not None:
        first = engine.m.position(state.last_run)
        if first < len(engine.m.runs) and engine.m.runs[first] == state.last_run:
            first += 1
    else:
        first = t
    if first < t:
        log.info("catching up %d run(s) the detector state had not seen", t - first)
    alerts = _replay(engine, range(first, t + 1))
    return alerts, engine.dump()


# --- the legacy rule ----------


def _legacy_pairs(mat: _Matrix, t: int, others: Sequence[tuple[str, int | None]]) -> list[Alert]:
    """The old rule at run ``t`` against each ``(label, column)`` of ``others``."""
    import numpy as np

    from bench.analysis.gpd import CHANGE_THRESHOLD, CONST_MIN_DIFF, CONST_SUFFIXES

    run = mat.runs[t]
    const = np.array([p.endswith(CONST_SUFFIXES) for p in mat.params], dtype=bool)
    best: dict[int, Alert] = {}
    best_change: dict[int, float] = {}
    new_value = mat.values[:, t]
    for label, c in others:
        if c is None or c == t:
            continue
        old = mat.values[:, c]
        with np.errstate(invalid="ignore", divide="ignore"):
            low, high = np.fmin(old, new_value), np.fmax(old, new_value)
            diff = high - low
            divisor = np.fmax(np.abs(low), np.abs(high))
            change = np.where(divisor == 0, 0.0, 100.0 * diff / divisor)
            hit = (change > CHANGE_THRESHOLD) & (~const | (diff > CONST_MIN_DIFF))
        hit &= np.isfinite(old) & np.isfinite(new_value)
        for s in hit.nonzero()[0]:
            if s in best_change and best_change[s] >= change[s]:
                continue
            b, v = float(old[s]), float(new_value[s])
            word = "up" if v > b else "down"
            best_change[s] = float(change[s])
            best[s] = Alert(
                run=run,
                file=mat.files[mat.series_file[s]],
                parameter=mat.params[s],
                direction=REGRESSION if v > b else IMPROVEMENT,
                kind="step",
                magnitude_pct=_magnitude(b, v),
                baseline=b,
                value=v,
                score=float(change[s]) / CHANGE_THRESHOLD,
                reason=f"{word} {_pct_text(b, v)} vs the {label} run {mat.runs[c]} "
                f"({_num(b)} -> {_num(v)}): CHANGE {change[s]:.1f}% > 20% (the old rule)",
                since=run,
            )
    alerts = list(best.values())
    previous = next((c for label, c in others if label == "previous"), None)
    if previous is not None:
        here, before = mat.present[:, t], mat.present[:, previous]
        file_before = mat.file_present[mat.series_file, previous]
        file_here = mat.file_present[mat.series_file, t]
        for s in (here & ~before & file_before).nonzero()[0]:
            alerts.append(
                _info(
                    run,
                    mat.files[mat.series_file[s]],
                    mat.params[s],
                    "new_parameter",
                    f"{mat.params[s]} is new.",
                    value=float(mat.values[s, t]),
                )
            )
        for s in (~here & before & file_here).nonzero()[0]:
            alerts.append(
                _info(
                    run,
                    mat.files[mat.series_file[s]],
                    mat.params[s],
                    "removed_parameter",
                    f"{mat.params[s]} is removed.",
                    baseline=float(mat.values[s, previous]),
                )
            )
        for f in (mat.file_present[:, t] & ~mat.file_present[:, previous]).nonzero()[0]:
            alerts.append(
                _info(
                    run,
                    mat.files[f],
                    ALL,
                    "new_file",
                    f"not in the previous run {mat.runs[previous]}",
                )
            )
    return alerts


def _legacy_ignored(name: str) -> bool:
    from bench.analysis.gpd import IGNORED_IN_ALERTS

    return any(word in name for word in IGNORED_IN_ALERTS)


def legacy_alerts(
    table: pd.DataFrame, *, run: str, previous: str | None, reference: str | None
) -> list[Alert]:
    """gas_parameter_diff's rule at ``run`` against the ``previous`` and ``reference`` runs
    (either may be None), one alert per parameter (the larger change when both alert), plus
    the parameters new or removed since the previous run."""
    mat = _Matrix(table, _legacy_ignored)
    t = mat.index_of(run)
    others = [
        ("reference", mat.index_of(reference) if reference else None),
        ("previous", mat.index_of(previous) if previous else None),
    ]
    return sort_alerts(_legacy_pairs(mat, t, others), mat.runs)


def legacy_online(
    table: pd.DataFrame, *, runs: Sequence[str] | None = None, reference: str | None = None
) -> list[Alert]:
    """The old rule replayed: at each run, against the run before it and the reference run
    (default: the first run)."""
    mat = _Matrix(table, _legacy_ignored)
    ref = mat.index_of(reference) if reference else 0
    indices = sorted({mat.index_of(r) for r in runs}) if runs is not None else range(len(mat.runs))
    alerts: list[Alert] = []
    for t in indices:
        others = [("reference", ref if ref < t else None), ("previous", t - 1 if t else None)]
        alerts += _legacy_pairs(mat, t, others)
    return sort_alerts(alerts, mat.runs)


# --- backtesting (bench-detect) ----------

DETECTORS = ("default", "legacy")
FORMATS = ("json", "csv", "text")
CSV_FIELDS = (
    "run",
    "file",
    "parameter",
    "direction",
    "kind",
    "magnitude_pct",
    "baseline",
    "value",
    "score",
    "since",
    "reason",
)


def backtest(
    table: pd.DataFrame,
    *,
    detector: str = "default",
    online: bool = False,
    settings: DetectorSettings | None = None,
    reference: str | None = None,
) -> list[Alert]:
    """The alerts ``bench-detect`` reports on ``table``: with ``online``, every alert at the
    run where it is raised; otherwise those raised at the newest run (by the default detector
    having watched the whole history, or the legacy rule against the previous and reference
    runs). ``reference``: the reference run (default: the first)."""
    if detector not in DETECTORS:
        raise ValueError(f"unknown detector {detector!r} (expected one of {', '.join(DETECTORS)})")
    if table.empty:
        return []
    runs = sorted({str(r) for r in table["run"].unique()})
    if detector == "legacy":
        if online:
            return legacy_online(table, reference=reference)
        return legacy_alerts(
            table,
            run=runs[-1],
            previous=runs[-2] if len(runs) > 1 else None,
            reference=reference or runs[0],
        )
    alerts, _ = detect_online(table, settings=settings, reference=reference)
    if online:
        return alerts
    return [alert for alert in alerts if alert.run == runs[-1]]


def format_alerts(alerts: Sequence[Alert], fmt: str) -> str:
    """``alerts`` as ``bench-detect`` prints them: one JSON list, a CSV with a header, or one
    line of text per alert (``""`` for no alert in text)."""
    import csv
    import io

    if fmt == "json":
        return json.dumps([alert.to_dict() for alert in alerts], indent=1) + "\n"
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=CSV_FIELDS, lineterminator="\n")
        writer.writeheader()
        for alert in alerts:
            row = alert.to_dict()
            writer.writerow({key: "" if row[key] is None else row[key] for key in CSV_FIELDS})
        return out.getvalue()
    if fmt == "text":
        lines = []
        for alert in alerts:
            what = alert.kind.replace("_", " ")
            if alert.kind in INFO_KINDS:
                label = what
            else:
                shown = (
                    alert.direction.upper() if alert.direction == REGRESSION else alert.direction
                )
                label = f"{shown} ({what})"
            where = alert.file if alert.parameter == ALL else f"{alert.file} {alert.parameter}"
            if alert.file == ALL:
                where = "all parameters"
            lines.append(f"{alert.run}  {label}  {where}: {alert.reason}")
        return "".join(line + "\n" for line in lines)
    raise ValueError(f"unknown format {fmt!r} (expected one of {', '.join(FORMATS)})")
