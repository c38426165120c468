"""Scoring alerts against labelled changes.

A label is a true change of one series (or of a whole run: ``file = parameter = "*"``) in one
direction, starting at a run (``start``) and, for a slow drift, lasting until ``end``. An alert
is a true positive when it names the same series and direction and is raised at the change's
run or in the next ``tolerance`` runs (for a drift: any run from its start to ``tolerance``
runs after its end). The first such alert of a label is its true positive; later ones are
*repeats*; an alert that matches no label is a *false alarm*. Presence alerts (new or removed
files and parameters) are not counted: they are never regressions, and they are reported
separately (``info``).

Precision = TP / (TP + false alarms + repeats); recall = TP / labels; false alarms are also
given per 1,000 parameter-runs (values the detector looked at); delay = runs between the
change and its true positive.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.analysis.detect import INFO_KINDS, Alert

__all__ = ["Label", "Score", "score_alerts"]


@dataclass(frozen=True)
class Label:
    """A true change: ``file``/``parameter`` (``"*"`` for a whole run), its direction and the
    run it starts at; ``end`` is the last run of a slow drift (``start`` for a step)."""

    file: str
    parameter: str
    direction: str
    start: str
    end: str = ""
    kind: str = "step"

    @property
    def last(self) -> str:
        return self.end or self.start


@dataclass
class Score:
    labels: int = 0
    tp: int = 0
    false_alarms: int = 0
    repeats: int = 0
    info: int = 0
    parameter_runs: int = 0
    delays: list[int] = field(default_factory=list)
    missed: list[Label] = field(default_factory=list)
    false: list[Alert] = field(default_factory=list)

    @property
    def alerts(self) -> int:
        return self.tp + self.false_alarms + self.repeats

    @property
    def precision(self) -> float:
        return self.tp / self.alerts if self.alerts else 1.0

    @property
    def recall(self) -> float:
        return self.tp / self.labels if self.labels else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    @property
    def fa_per_1000(self) -> float:
        return 1000.0 * self.false_alarms / self.parameter_runs if self.parameter_runs else 0.0

    @property
    def mean_delay(self) -> float:
        return sum(self.delays) / len(self.delays) if self.delays else float("nan")

    def __add__(self, other: Score) -> Score:
        return Score(
            labels=self.labels + other.labels,
            tp=self.tp + other.tp,
            false_alarms=self.false_alarms + other.false_alarms,
            repeats=self.repeats + other.repeats,
            info=self.info + other.info,
            parameter_runs=self.parameter_runs + other.parameter_runs,
            delays=self.delays + other.delays,
            missed=self.missed + other.missed,
            false=self.false + other.false,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "labels": self.labels,
            "tp": self.tp,
            "false_alarms": self.false_alarms,
            "repeats": self.repeats,
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "fa_per_1000": self.fa_per_1000,
            "mean_delay": self.mean_delay,
            "parameter_runs": self.parameter_runs,
            "info": self.info,
        }


def score_alerts(
    alerts: Iterable[Alert | Mapping[str, Any]],
    labels: Iterable[Label],
    *,
    runs: Sequence[str],
    parameter_runs: int,
    tolerance: int = 2,
) -> Score:
    """Score ``alerts`` (objects or their JSON dicts) against ``labels`` over the ordered
    ``runs`` (see the module docstring)."""
    position = {name: i for i, name in enumerate(runs)}
    by_series: dict[tuple[str, str, str], list[tuple[int, int, int]]] = defaultdict(list)
    label_list = list(labels)
    for number, label in enumerate(label_list):
        start, last = position[label.start], position[label.last]
        by_series[(label.file, label.parameter, label.direction)].append((start, last, number))
    for candidates in by_series.values():
        candidates.sort()
    matched: set[int] = set()
    score = Score(labels=len(label_list), parameter_runs=parameter_runs)
    normalised = [a if isinstance(a, Alert) else _from_dict(a) for a in alerts]
    normalised.sort(key=lambda a: position.get(a.run, -1))
    for alert in normalised:
        if alert.kind in INFO_KINDS:
            score.info += 1
            continue
        at = position[alert.run]
        hits = [
            (start, number)
            for start, last, number in by_series.get(
                (alert.file, alert.parameter, alert.direction), []
            )
            if start <= at <= last + tolerance
        ]
        fresh = [(start, number) for start, number in hits if number not in matched]
        if fresh:
            start, number = fresh[0]
            matched.add(number)
            score.tp += 1
            score.delays.append(at - start)
        elif hits:
            score.repeats += 1
        else:
            score.false_alarms += 1
            score.false.append(alert)
    score.missed = [label for n, label in enumerate(label_list) if n not in matched]
    return score


def _from_dict(data: Mapping[str, Any]) -> Alert:
    def number(key: str) -> float:
        value = data.get(key)
        return float(value) if value is not None else float("nan")

    return Alert(
        run=str(data["run"]),
        file=str(data["file"]),
        parameter=str(data["parameter"]),
        direction=str(data["direction"]),
        kind=str(data.get("kind", "step")),
        magnitude_pct=number("magnitude_pct"),
        baseline=number("baseline"),
        value=number("value"),
        score=number("score"),
        reason=str(data.get("reason", "")),
        since=str(data.get("since", "")),
    )
