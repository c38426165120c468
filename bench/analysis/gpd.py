"""The old comparison, text for text: the OCaml tool ``gas_parameter_diff`` and the old watcher.

Pure functions (no I/O, stdlib only) that reproduce byte for byte what the team used to read:

- :func:`gas_parameter_diff` is the tool (2023 version, ``devtools/gas_parameter_diff``): given
  the inference CSVs of one file name in *argument order* (oldest first), its stdout table and
  its stderr lines;
- :func:`compare_file` is what ``watch_regressions.sh`` did for one file name of the newest run
  (the ``all``, ``reference`` and ``previous`` comparisons, the ``alerts`` blocks and the
  ``selected.csv`` section); :func:`assemble` concatenates those into ``all.csv``,
  ``reference.csv``, ``previous.csv``, ``selected.csv`` and ``alerts``.

Ground truth: ``shared/reference/gas_parameter_diff/`` (real outputs of the old tool and watcher)
and the tool's public source. The tool's behaviour, including its accidents, is kept:

- table: ``,,MIN,MAX,DIFF,CHANGE (%),,`` then one column per input, *newest first* (reverse of
  argument order), labelled as given; rows are the first input's parameters in its order, then
  the names appearing only in later inputs (in order of first appearance); a parameter missing
  from an input has an empty cell there; value cells repeat the input text unchanged;
- statistics over the values that ``float()`` accepts (the others are printed but ignored, and a
  row with no number at all has four empty statistic cells), folded in argument order with
  OCaml's ``min``/``max`` (``min a b = if a <= b then a else b``): a ``nan`` makes MIN and MAX
  ``nan`` only when no number follows it in argument order;
- DIFF = MAX - MIN, CHANGE = 100 * DIFF / max(|MIN|, |MAX|), except that when that divisor is 0
  (every value is 0) CHANGE is 0 (the tool's explicit rule: "if all inferred values for the
  parameter are null, this ratio is also defined to be null"); statistics are printed ``%f``
  (``nan``, ``inf``, ``-inf`` as such);
- stderr: ``<CHANGE %f>% regression for <name>.`` in row order when CHANGE > 20 and, for names
  ending in ``const`` or ``intercept``, DIFF > 2 (exactly 20% and ``nan`` never alert); then, only
  with two inputs or more, one pass over the rows comparing the *last two* inputs:
  ``<name> is removed.`` / ``<name> is new.`` (for a two-input comparison every removed name
  comes before every new one, since the rows list the first input's names first).

Deliberate choices where the old watcher had no sane behaviour (documented on the functions):
a file absent from the reference or previous run, parameter names containing ``.`` or spaces
in ``selected.csv``, and file order (byte order instead of the shell's locale collation).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

#: The statistic columns that open every header line (the first cell is the names column).
HEADER_CELLS = ("", "", "MIN", "MAX", "DIFF", "CHANGE (%)", "")
#: A CHANGE (in %) strictly above this alerts.
CHANGE_THRESHOLD = 20.0
#: Names ending like this alert only when, in addition, DIFF > :data:`CONST_MIN_DIFF`.
CONST_SUFFIXES = ("const", "intercept")
CONST_MIN_DIFF = 2.0
#: Stderr lines containing one of these (fit-quality columns) never reached the alerts.
IGNORED_IN_ALERTS = ("score", "T-value")
ALERT_SEPARATOR = "-" * 32
REGRESSION_MARKER = "% regression for "


@dataclass(frozen=True)
class Column:
    """One input file of one run: the tool's view of a two-line (names, values) CSV."""

    label: str  # the header cell, e.g. "input_csvs/<run>/inferred_interpreter.csv"
    names: tuple[str, ...]  # parameters in file order
    texts: tuple[str, ...]  # the values as written ("600.", "nan", ...)
    #: ``float(text)`` of each text, when the caller has them already (an
    #: :class:`~bench.snoop.InferenceFile`'s ``values``): they are not parsed again.
    values: tuple[float, ...] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        # The tool refused (exit 1) two lines of different lengths; duplicate names made it
        # print the same row twice. Both are unreadable files: reject them with the reason.
        if len(self.names) != len(self.texts):
            raise ValueError(f"{self.label}: {len(self.names)} names but {len(self.texts)} values")
        if self.values is not None and len(self.values) != len(self.texts):
            raise ValueError(f"{self.label}: {len(self.texts)} texts but {len(self.values)} values")
        if len(set(self.names)) == len(self.names):
            return
        seen: set[str] = set()
        for name in self.names:
            if name in seen:
                raise ValueError(f"{self.label}: parameter {name!r} appears twice")
            seen.add(name)


@dataclass(frozen=True)
class Diff:
    """What one run of the tool printed."""

    csv: str  # the table (stdout), every line ending in "\n"
    stderr: list[str]  # its stderr lines, without "\n", in the order printed
    rows: dict[str, str]  # parameter -> its table line (with "\n"), in row order
    header: str  # the table's first line (with "\n")


@dataclass(frozen=True)
class FileReport:
    """What the old watcher produced for one inference file name of the newest run."""

    name: str  # the file name, e.g. "inferred_interpreter.csv"
    all: Diff  # the tool on the history (REF_DIR appended last when explicit)
    reference: Diff | None  # (reference, newest); None when there is no reference run
    previous: Diff | None  # (previous, newest); None when there is no previous run
    alerts: str  # this file's blocks of the ``alerts`` file ("" when none)
    selected: str  # this file's section of ``selected.csv`` ("" when none)
    selected_names: tuple[str, ...]  # the parameters of that section, in byte order


def _ocaml_min(a: float, b: float) -> float:
    """OCaml's ``Stdlib.min`` on floats (``if a <= b then a else b``), nan included."""
    return a if a <= b else b


def _ocaml_max(a: float, b: float) -> float:
    """OCaml's ``Stdlib.max`` on floats (``if a >= b then a else b``), nan included."""
    return a if a >= b else b


def _number(text: str) -> float | None:
    """The value of a cell, or None when it is not a number (the tool then ignores it)."""
    try:
        return float(text)
    except ValueError:
        return None


def _f(x: float) -> str:
    """C's ``%f``: six decimals, ``nan``/``inf``/``-inf`` spelled out."""
    return f"{x:f}"


def _line(cells: Sequence[str]) -> str:
    return ",".join(cells) + "\n"


def gas_parameter_diff(columns: Sequence[Column]) -> Diff:
    """The old tool on ``columns``, given in argument order (oldest first).

    Returns its stdout table (``Diff.csv``, also split into ``header`` and ``rows``) and its
    stderr lines (regressions, then removed/new between the last two columns).
    """
    if not columns:
        raise ValueError("gas_parameter_diff needs at least one column")
    header = _line([*HEADER_CELLS, *(column.label for column in reversed(columns))])
    first = columns[0].names
    if all(column.names == first for column in columns):
        # The usual case, every run with the same parameters in the same order: one pass per
        # column to parse its values, then the rows read by position (same table, faster).
        rows, stderr = _aligned_rows(columns)
    else:
        rows, stderr = _rows(columns)
    return Diff(csv=header + "".join(rows.values()), stderr=stderr, rows=rows, header=header)


def _fold(values: Iterable[float | None]) -> tuple[float, float] | None:
    """MIN and MAX as the tool folds them (OCaml's ``min``/``max`` in argument order, the
    non-numbers skipped); None when there is no number."""
    low: float | None = None
    high: float | None = None
    for value in values:
        if value is None:
            continue
        low = value if low is None else _ocaml_min(low, value)
        high = value if high is None else _ocaml_max(high, value)
    return None if low is None or high is None else (low, high)


def _stats(name: str, bounds: tuple[float, float] | None, stderr: list[str]) -> list[str]:
    """The four statistic cells of a row (empty without numbers); appends its regression
    line to ``stderr`` when it alerts."""
    if bounds is None:
        return ["", "", "", ""]
    low, high = bounds
    diff = high - low
    divisor = _ocaml_max(abs(low), abs(high))
    change = 0.0 if divisor == 0.0 else 100.0 * diff / divisor
    if change > CHANGE_THRESHOLD and (not name.endswith(CONST_SUFFIXES) or diff > CONST_MIN_DIFF):
        stderr.append(f"{_f(change)}{REGRESSION_MARKER}{name}.")
    return [_f(low), _f(high), _f(diff), _f(change)]


def _rows(columns: Sequence[Column]) -> tuple[dict[str, str], list[str]]:
    """The table's rows and the stderr lines, for any columns."""
    lookups = [dict(zip(column.names, column.texts, strict=True)) for column in columns]
    names: list[str] = []
    seen: set[str] = set()
    for column in columns:
        for name in column.names:
            if name not in seen:
                seen.add(name)
                names.append(name)

    rows: dict[str, str] = {}
    stderr: list[str] = []
    for name in names:
        texts = [lookup.get(name) for lookup in lookups]
        bounds = _fold(None if text is None else _number(text) for text in texts)
        cells = ["" if text is None else text for text in reversed(texts)]
        rows[name] = _line([name, "", *_stats(name, bounds, stderr), "", *cells])

    if len(lookups) >= 2:
        before_last, last = lookups[-2], lookups[-1]
        for name in names:
            if name in before_last and name not in last:
                stderr.append(f"{name} is removed.")
            elif name not in before_last and name in last:
                stderr.append(f"{name} is new.")
    return rows, stderr


def _numbers(column: Column) -> tuple[list[float | None], list[int]]:
    """The values of a column's cells (None where not a number), and the positions of the
    cells that are not numbers, or nan."""
    try:
        values: list[float | None] = list(
            column.values if column.values is not None else map(float, column.texts)
        )
    except ValueError:
        values = [_number(text) for text in column.texts]
        return values, [i for i, v in enumerate(values) if v is None or math.isnan(v)]
    if any(map(math.isnan, values)):  # type: ignore[arg-type]
        return values, [i for i, v in enumerate(values) if math.isnan(v)]  # type: ignore[arg-type]
    return values, []


def _aligned_rows(columns: Sequence[Column]) -> tuple[dict[str, str], list[str]]:
    """:func:`_rows` when every column has the same names in the same order.

    In a row of numbers without nan, ``min``/``max`` give the OCaml fold's result (they differ
    only on nan); the other rows take the fold. Every name is in both of the last two
    columns: there is no removed or new line.
    """
    parsed = [_numbers(column) for column in columns]
    folded = {i for _values, odd in parsed for i in odd}
    by_row = zip(*(values for values, _odd in parsed), strict=True)
    # The cells newest first, as the tool prints them.
    cells_by_row = zip(*(column.texts for column in reversed(columns)), strict=True)
    rows: dict[str, str] = {}
    stderr: list[str] = []
    for i, (name, values, cells) in enumerate(
        zip(columns[0].names, by_row, cells_by_row, strict=True)
    ):
        bounds = _fold(values) if i in folded else (min(values), max(values))
        rows[name] = f"{name},,{','.join(_stats(name, bounds, stderr))},,{','.join(cells)}\n"
    return rows, stderr


def legacy_alert_lines(diff: Diff) -> list[str]:
    """The stderr lines the old watcher kept: those containing neither ``score`` nor ``T-value``."""
    return [line for line in diff.stderr if not any(word in line for word in IGNORED_IN_ALERTS)]


def regression_name(line: str) -> str | None:
    """The parameter named by a ``<change>% regression for <name>.`` line, else None.

    The old script took the fourth space-separated field after deleting every ``.`` of the
    line, which loses names containing ``.`` or spaces; the exact name is taken here (the same
    result for every other name).
    """
    start = line.find(REGRESSION_MARKER)
    if start < 0 or not line.endswith("."):
        return None
    return line[start + len(REGRESSION_MARKER) : -1]


def compare_two(older: Column | None, newest: Column) -> Diff:
    """The tool on (``older``, ``newest``), as for ``reference_b.csv`` and ``previous_b.csv``.

    When ``older`` is None (the file does not exist in that run) the old watcher fed the tool
    a missing path, which crashed it (empty table, an OCaml exception in ``alerts``). Here the
    table is the tool on the newest file alone (only the newest column) and every parameter is
    reported ``<name> is new.``: the file is new compared with that run.
    """
    if older is not None:
        return gas_parameter_diff([older, newest])
    alone = gas_parameter_diff([newest])
    return Diff(
        csv=alone.csv,
        stderr=[*alone.stderr, *(f"{name} is new." for name in alone.rows)],
        rows=alone.rows,
        header=alone.header,
    )


def alert_block(name: str, *, newest_run: str, kind: str, run: str, lines: Sequence[str]) -> str:
    """One block of the ``alerts`` file ("" when there are no lines); ``kind`` is
    ``"reference"`` or ``"previous"``."""
    if not lines:
        return ""
    return (
        f"\n{ALERT_SEPARATOR}\n"
        f"Warning while comparing {name} between {newest_run} and the {kind} version {run}\n"
        + "".join(f"{line}\n" for line in lines)
    )


def compare_file(
    name: str,
    *,
    history: Sequence[Column],
    newest: Column,
    reference: Column | None,
    previous: Column | None,
    ref_explicit: bool,
    newest_run: str,
    reference_run: str | None,
    previous_run: str | None,
) -> FileReport:
    """What the old watcher did for the file ``name`` of the newest run.

    ``history``: this file in every run from FIRST_DIR on that has it, oldest first (the newest
    run included); ``newest``/``reference``/``previous``: this file in those runs, None when the
    run lacks it. ``reference_run``/``previous_run``: None when there is no such run (then no
    comparison, no table section, no alert block).

    - ``all``: the tool on ``history``, plus ``reference`` appended last when REF_DIR was set
      explicitly (``ref_explicit``) and the reference run has the file; like the old script,
      no deduplication: a REF_DIR that is also in the history gives two columns;
    - ``reference``/``previous``: :func:`compare_two` (a file missing from that run: newest
      column only, every parameter new);
    - ``alerts``: for the reference then the previous comparison, a block of its
      :func:`legacy_alert_lines` when there are any;
    - ``selected``: when those lines name regressions (lines with ``%``), the header of the
      ``all`` table then its rows of those parameters, sorted in byte order, each once (a name
      missing from the ``all`` table is skipped, as the old ``grep`` found nothing).
    """
    arguments = list(history)
    if ref_explicit and reference is not None:
        arguments.append(reference)
    all_diff = gas_parameter_diff(arguments)

    comparisons: list[tuple[str, str, Diff]] = []
    reference_diff = previous_diff = None
    if reference_run is not None:
        reference_diff = compare_two(reference, newest)
        comparisons.append(("reference", reference_run, reference_diff))
    if previous_run is not None:
        previous_diff = compare_two(previous, newest)
        comparisons.append(("previous", previous_run, previous_diff))

    blocks: list[str] = []
    flagged: set[str] = set()
    for kind, run, diff in comparisons:
        lines = legacy_alert_lines(diff)
        blocks.append(alert_block(name, newest_run=newest_run, kind=kind, run=run, lines=lines))
        for line in lines:
            parameter = regression_name(line) if "%" in line else None
            if parameter is not None:
                flagged.add(parameter)

    selected_names = tuple(sorted(flagged))
    selected = ""
    if selected_names:
        selected = all_diff.header + "".join(
            all_diff.rows[p] for p in selected_names if p in all_diff.rows
        )
    return FileReport(
        name=name,
        all=all_diff,
        reference=reference_diff,
        previous=previous_diff,
        alerts="".join(blocks),
        selected=selected,
        selected_names=selected_names,
    )


def sections(report: FileReport) -> dict[str, str]:
    """One file's sections of the old watcher's output files (see :func:`assemble`)."""
    return {
        "all.csv": report.all.csv,
        "reference.csv": report.reference.csv if report.reference is not None else "",
        "previous.csv": report.previous.csv if report.previous is not None else "",
        "selected.csv": report.selected,
        "alerts": report.alerts,
    }


#: The old watcher's output files, as :func:`assemble` returns them.
OUTPUT_FILES = ("all.csv", "reference.csv", "previous.csv", "selected.csv", "alerts")


def assemble(reports: Sequence[FileReport]) -> dict[str, str]:
    """The old watcher's output files from the per-file reports, files in byte order of name.

    Returns ``{"all.csv", "reference.csv", "previous.csv", "selected.csv", "alerts"}``: each the
    concatenation of the per-file :func:`sections` (each table with its own header line), ""
    when empty. (The old script's shell globs sorted by locale collation; byte order is used
    here.)
    """
    ordered = sorted(reports, key=lambda report: report.name)
    names = [report.name for report in ordered]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"several reports for {', '.join(duplicates)}")
    parts = [sections(report) for report in ordered]
    return {filename: "".join(part[filename] for part in parts) for filename in OUTPUT_FILES}
