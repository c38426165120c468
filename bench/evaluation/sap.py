"""The SAP HANA performance-regression data set (small, 2021) as detector histories.

``../shared/datasets/sap-hana-small`` (relative to the project root; read in place, never
copied): 25 series ``data/NNNN.csv`` (Index, GHC = build, Measurement) and
``metadata/dataset_details.csv`` (``;``-separated: Type, Dataset, Change Point). Each series is
one history: one run per build, in the order the builds first appear, whose value is the
median of that build's measurements. Only the five ``regression`` series have a true change:
the build of the first measurement after the change point (the last Index before the
regression). The other twenty (stable, spikes, high deviation, build-dependent) are hard
negatives.
"""

from __future__ import annotations

import csv
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bench.evaluation.scoring import Label

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["SapSeries", "default_path", "load_sap"]

FILE = "measurements.csv"
PARAMETER = "duration"


@dataclass
class SapSeries:
    name: str  # e.g. "0002.csv"
    kind: str  # Stable, regression, Spike, High deviation, Build-dependent
    table: pd.DataFrame
    runs: list[str]
    labels: list[Label]

    @property
    def parameter_runs(self) -> int:
        return len(self.runs)


def default_path() -> Path:
    """``../shared/datasets/sap-hana-small`` from the project root."""
    return Path(__file__).resolve().parents[2].parent / "shared/datasets/sap-hana-small"


def load_sap(path: Path | None = None) -> list[SapSeries]:
    """Every series of the data set, in file order."""
    import pandas as pd

    root = Path(path) if path is not None else default_path()
    details = root / "metadata" / "dataset_details.csv"
    try:
        with details.open(newline="", encoding="utf-8") as handle:
            meta = [
                {key.strip(): (value or "").strip() for key, value in row.items()}
                for row in csv.DictReader(handle, delimiter=";")
            ]
    except OSError as err:
        raise FileNotFoundError(f"the SAP data set is not at {root}: {err}") from err
    out = []
    for row in sorted(meta, key=lambda r: r["Dataset"]):
        name = row["Dataset"]
        with (root / "data" / name).open(newline="", encoding="utf-8") as handle:
            records = [
                (int(r["Index"]), r["GHC"].strip(), float(r["Measurement"]))
                for r in csv.DictReader(handle)
            ]
        records.sort()
        builds: dict[str, list[float]] = {}
        build_of: dict[int, str] = {}
        for index, build, value in records:
            builds.setdefault(build, []).append(value)
            build_of[index] = build
        order = list(builds)  # first appearance
        runs = [f"b{i:05d}-{build}" for i, build in enumerate(order)]
        run_of = dict(zip(order, runs, strict=True))
        table = pd.DataFrame(
            {
                "run": runs,
                "file": name,
                "parameter": PARAMETER,
                "value": [statistics.median(builds[b]) for b in order],
            }
        )
        labels = []
        kind = row["Type"]
        change = int(row["Change Point"] or 0)
        if kind.lower() == "regression" and change:
            first_regressed = build_of[change + 1]
            labels.append(Label(name, PARAMETER, "regression", run_of[first_regressed]))
        out.append(SapSeries(name, kind, table, runs, labels))
    return out
