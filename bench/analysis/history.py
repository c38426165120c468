"""Loading a results tree into the long table ``(run, file, parameter, value)``.

The detectors (:mod:`bench.analysis.detect`) and ``bench-detect`` read the history of the
inference CSVs as one long table, one row per value, runs ordered by name (= by time). It can
be loaded from:

- a directory of run directories: ``<path>/<run>/inference_results/*.csv`` (a work directory's
  ``snoop_results/``) or ``<path>/<run>/*.csv`` (the store's ``inference_csvs/snoop_results/``,
  the watcher's cache);
- a directory containing ``snoop_results/`` (a reference host's work directory);
- a store root: ``<path>/inference_csvs/snoop_results/<run>/*.csv``;
- a long CSV file with the columns ``run,file,parameter,value``.

A file that cannot be read is a :class:`Problem` (run, file, line, reason) and the rest is
loaded. When some run directories carry a ``SUCCESS`` marker, those without one (failed or
unfinished runs) are skipped with a warning. Renamings (``{old: new}``) are applied while
loading so that a renamed parameter keeps its history; a renaming whose names end in ``.csv``
renames a file.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence, Sized
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bench.errors import BenchError, ExitCode

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

__all__ = [
    "COLUMNS",
    "HistoryError",
    "Problem",
    "TableBuilder",
    "apply_renamings",
    "find_runs",
    "load_history",
    "load_renamings",
]

log = logging.getLogger(__name__)

#: The columns of the long table, in order.
COLUMNS = ("run", "file", "parameter", "value")
#: Where the inference CSVs of a run are, relative to a run directory of a work directory.
INFERENCE_SUBDIR = "inference_results"
SUCCESS = "SUCCESS"


class HistoryError(BenchError):
    """The history cannot be loaded at all (no such path, no runs, not a long CSV)."""

    exit_code = ExitCode.USAGE


@dataclass(frozen=True)
class Problem:
    """A file of the history that could not be read (the rest was loaded)."""

    run: str
    file: str
    line: int | None
    reason: str

    def __str__(self) -> str:
        where = f"{self.run}/{self.file}" if self.run else self.file
        if self.line is not None:
            where += f":{self.line}"
        return f"{where}: {self.reason}"


def load_renamings(path: Path | None) -> dict[str, str]:
    """A renamings file (``new_name,old_name`` per line, ``#`` comments) -> ``{old: new}``."""
    if path is None:
        return {}
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        reason = getattr(err, "strerror", None) or str(err)
        raise HistoryError(f"cannot read the renamings file {path}: {reason}") from err
    mapping: dict[str, str] = {}
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        parts = [part.strip() for part in text.split(",")]
        if len(parts) != 2 or not all(parts):
            raise HistoryError(
                f"{path}:{number}: expected `new_name,old_name`, got {line!r}",
                hint="one renaming per line, the new name first",
            )
        new, old = parts
        mapping[old] = new
    return mapping


def apply_renamings(names: Iterable[str], renamings: Mapping[str, str]) -> list[str]:
    """``names`` with each old name replaced by its new one, unless the new name is also
    present (then both series are kept apart, as the watcher does)."""
    names = list(names)
    if not renamings:
        return names
    present = set(names)
    return [
        renamings[name] if name in renamings and renamings[name] not in present else name
        for name in names
    ]


# --- finding the runs ----------


def _run_dirs(top: Path) -> list[Path]:
    """The run directories below ``top``: those named like runs when there are any, else
    every non-hidden directory."""
    from bench.runs import is_run_name

    try:
        entries = [e for e in os.scandir(top) if e.is_dir() and not e.name.startswith(".")]
    except OSError as err:
        raise HistoryError(f"cannot list {top}: {err.strerror or err}") from err
    named = [e for e in entries if is_run_name(e.name)]
    chosen = named or entries
    if named and len(named) < len(entries):
        others = sorted(e.name for e in entries if not is_run_name(e.name))
        log.debug("ignoring directories that are not runs in %s: %s", top, ", ".join(others))
    return sorted((Path(e.path) for e in chosen), key=lambda p: p.name)


def _csvs(directory: Path) -> list[Path]:
    try:
        return sorted(
            Path(e.path)
            for e in os.scandir(directory)
            if e.name.endswith(".csv") and not e.name.startswith(".") and e.is_file()
        )
    except OSError:
        return []


def find_runs(path: Path) -> list[tuple[str, list[Path]]]:
    """The runs of the results tree at ``path``, in name order: ``(run, csv paths)``.

    Raises :class:`HistoryError` when ``path`` is not a results tree.
    """
    path = Path(path)
    if not path.exists():
        raise HistoryError(f"--history {path}: no such file or directory")
    if not path.is_dir():
        raise HistoryError(f"--history {path}: not a directory or a long CSV")
    success_dirs: Path | None = None
    top = path
    for candidate in ("inference_csvs/snoop_results", "snoop_results"):
        if (path / candidate).is_dir():
            top = path / candidate
            break
    if (
        top == path / "inference_csvs/snoop_results"
        and (path / "complete_results/snoop_results").is_dir()
    ):
        success_dirs = path / "complete_results/snoop_results"

    runs: list[tuple[str, list[Path]]] = []
    markers: dict[str, bool] = {}
    for run_dir in _run_dirs(top):
        inference = run_dir / INFERENCE_SUBDIR
        files = _csvs(inference) if inference.is_dir() else _csvs(run_dir)
        if not files:
            log.debug("no inference CSVs in %s: skipped", run_dir)
            continue
        marker_dir = success_dirs / run_dir.name if success_dirs is not None else run_dir
        markers[run_dir.name] = (marker_dir / SUCCESS).is_file()
        runs.append((run_dir.name, files))
    if not runs:
        raise HistoryError(
            f"--history {path}: no inference CSVs found",
            hint="expected <run>/inference_results/*.csv, <run>/*.csv, snoop_results/ or "
            "inference_csvs/snoop_results/ below it, or a long CSV (run,file,parameter,value)",
        )
    if any(markers.values()):
        unfinished = [name for name, ok in markers.items() if not ok]
        for name in unfinished:
            log.warning("%s has no %s marker (failed or unfinished run): skipped", name, SUCCESS)
        runs = [(name, files) for name, files in runs if markers[name]]
    return runs


# --- loading ----------


def load_history(
    path: Path, *, renamings: Mapping[str, str] | None = None
) -> tuple[pd.DataFrame, list[Problem]]:
    """The long table of the results tree or long CSV at ``path``, and the unreadable files.

    The table has the columns ``run, file, parameter, value`` (the names as categoricals,
    ``value`` as float, ``nan``/``inf`` kept), sorted by run. ``renamings`` maps old names to
    new ones (parameters, or files for names ending in ``.csv``).
    """
    path = Path(path)
    renamings = dict(renamings or {})
    if path.is_file():
        return _load_long_csv(path, renamings)
    return _load_tree(find_runs(path), renamings)


class TableBuilder:
    """The long table, built piece by piece: one ``add`` per file of a run.

    Names are interned as integer codes while adding (thousands of files, millions of values),
    and each distinct header is renamed and coded once (most files repeat their header). The
    pieces kept until :meth:`table` are the callers' value arrays and the shared header codes:
    the run and file columns are expanded once, at the end, at the width pandas keeps (the
    table of a large history is a hundred MB; the watcher builds it next to its digests).
    """

    def __init__(self, runs: Iterable[str], renamings: Mapping[str, str]) -> None:
        self.runs = list(runs)
        self.renamings = renamings
        self.file_codes: dict[str, int] = {}
        self.parameter_codes: dict[str, int] = {}
        self._headers: dict[tuple[str, ...], np.ndarray] = {}
        #: Per piece: its run code, its file codes and their value counts; its parameter
        #: codes (one shared array per distinct header); its values.
        self._runs: list[int] = []
        self._files: list[list[int]] = []
        self._counts: list[list[int]] = []
        self._parameters: list[np.ndarray] = []
        self._values: list[np.ndarray] = []

    def add(self, run_code: int, file: str, names: tuple[str, ...], values: np.ndarray) -> None:
        """The values of ``file`` in the run ``self.runs[run_code]``, ``names`` as read."""
        self.add_run(run_code, [(file, names)], values)

    def add_run(
        self, run_code: int, files: Sequence[tuple[str, tuple[str, ...]]], values: np.ndarray
    ) -> None:
        """Several files of the run ``self.runs[run_code]`` at once: ``files`` are ``(file,
        names)`` in the order of their values in ``values`` (kept, not copied, when it is an
        array of float64)."""
        import numpy as np

        codes = [self._codes(names) for _file, names in files]
        counts = [len(names) for _file, names in files]
        total = sum(counts)
        if total != len(values):
            raise ValueError(f"{len(values)} values for {total} names")
        if total == 0:
            return
        self._runs.append(run_code)
        self._files.append([self.file_codes.setdefault(f, len(self.file_codes)) for f, _ in files])
        self._counts.append(counts)
        self._parameters.extend(codes)
        self._values.append(np.asarray(values, dtype=np.float64))

    def _codes(self, names: tuple[str, ...]) -> np.ndarray:
        """The parameter codes of a header (renamed and coded once per distinct header)."""
        import numpy as np

        codes = self._headers.get(names)
        if codes is None:
            codes = np.fromiter(
                (
                    self.parameter_codes.setdefault(n, len(self.parameter_codes))
                    for n in apply_renamings(names, self.renamings)
                ),
                dtype=np.int32,
                count=len(names),
            )
            self._headers[names] = codes
        return codes

    def table(self) -> pd.DataFrame:
        """The long table of everything added (names as categoricals); the builder is empty
        afterwards."""
        import numpy as np
        import pandas as pd

        def categorical(codes: np.ndarray, categories: Iterable[str]) -> pd.Categorical:
            return pd.Categorical.from_codes(codes, categories=list(categories))

        def width(categories: Sized) -> type:
            """The dtype of the codes pandas keeps for that many categories (no copy)."""
            count = len(categories)
            return np.int8 if count < 2**7 else np.int16 if count < 2**15 else np.int32

        run_width, file_width = width(self.runs), width(self.file_codes)
        parameter_width = width(self.parameter_codes)
        values = np.concatenate(self._values) if self._values else np.empty(0, np.float64)
        self._values.clear()
        per_piece = np.array([sum(counts) for counts in self._counts], dtype=np.int64)
        runs: np.ndarray = np.repeat(np.array(self._runs, dtype=run_width), per_piece)
        files: np.ndarray = np.repeat(
            np.fromiter((c for piece in self._files for c in piece), dtype=file_width),
            np.fromiter((n for piece in self._counts for n in piece), dtype=np.int64),
        )
        parameters: np.ndarray
        if self._parameters:
            parameters = np.concatenate(self._parameters, dtype=parameter_width)
        else:
            parameters = np.empty(0, dtype=parameter_width)
        self._runs, self._files, self._counts, self._parameters = [], [], [], []
        return pd.DataFrame(
            {
                "run": categorical(runs, self.runs),
                "file": categorical(files, self.file_codes),
                "parameter": categorical(parameters, self.parameter_codes),
                "value": values,
            },
            copy=False,
        )


def _load_tree(
    runs: list[tuple[str, list[Path]]], renamings: Mapping[str, str]
) -> tuple[pd.DataFrame, list[Problem]]:
    import numpy as np

    from bench.snoop import SnoopFormatError, read_inference_csv

    file_renamings = {o: n for o, n in renamings.items() if o.endswith(".csv")}
    parameter_renamings = {o: n for o, n in renamings.items() if not o.endswith(".csv")}
    problems: list[Problem] = []
    builder = TableBuilder((run for run, _ in runs), parameter_renamings)
    for run_code, (run, files) in enumerate(runs):
        for csv_path in files:
            try:
                data = read_inference_csv(csv_path)
            except SnoopFormatError as err:
                problems.append(Problem(run, csv_path.name, err.line, err.reason))
                log.warning("unreadable, skipped: %s/%s: %s", run, csv_path.name, _where(err))
                continue
            name = file_renamings.get(csv_path.name, csv_path.name)
            builder.add(run_code, name, data.names, np.asarray(data.values, dtype=np.float64))
    table = builder.table()
    log.info(
        "history: %d runs, %d files, %d values%s",
        len(runs),
        len(builder.file_codes),
        len(table),
        f", {len(problems)} unreadable file(s)" if problems else "",
    )
    return table, problems


def _where(err: Exception) -> str:
    line = getattr(err, "line", None)
    reason = getattr(err, "reason", str(err))
    return f"line {line}: {reason}" if line is not None else str(reason)


def _load_long_csv(path: Path, renamings: Mapping[str, str]) -> tuple[pd.DataFrame, list[Problem]]:
    import pandas as pd

    problems: list[Problem] = []
    fast = _read_long_fast(path)
    if fast is not None:
        if renamings:
            names = {"run": "str", "file": "str", "parameter": "str"}
            renamed = _rename_long(fast.astype(names), renamings)
            fast = renamed.astype({column: "category" for column in names})
        return fast, problems
    try:
        table = pd.read_csv(
            path,
            dtype={"run": "str", "file": "str", "parameter": "str", "value": "str"},
            keep_default_na=False,
            skipinitialspace=True,
        )
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise HistoryError(f"--history {path}: not a readable long CSV: {err}") from err
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise HistoryError(
            f"--history {path}: a long CSV needs the columns run,file,parameter,value "
            f"(missing: {', '.join(missing)})"
        )
    table = table[list(COLUMNS)]
    text = table["value"].str.strip()
    value = pd.to_numeric(text, errors="coerce")
    bad = value.isna() & ~text.str.lower().isin(["nan", "-nan", "+nan"])
    for index in table.index[bad][:20]:
        problems.append(
            Problem(
                str(table.at[index, "run"]),
                str(table.at[index, "file"]),
                int(index) + 2,
                f"value {table.at[index, 'value']!r} is not a number",
            )
        )
    if bad.any():
        log.warning(
            "%s: %d value(s) that are not numbers, skipped (first: line %d)",
            path,
            int(bad.sum()),
            int(table.index[bad][0]) + 2,
        )
    table = table.assign(value=value.astype("float64"))[~bad]
    for column in ("run", "file", "parameter"):
        table[column] = table[column].str.strip()
    empty = (table["run"] == "") | (table["file"] == "") | (table["parameter"] == "")
    if empty.any():
        log.warning("%s: %d row(s) with an empty name, skipped", path, int(empty.sum()))
        table = table[~empty]
    if renamings:
        table = _rename_long(table, renamings)
    table = table.astype({"run": "category", "file": "category", "parameter": "category"})
    table = table.sort_values("run", kind="stable").reset_index(drop=True)
    log.info(
        "history: %d runs, %d files, %d values",
        table["run"].nunique(),
        table["file"].nunique(),
        len(table),
    )
    return table, problems


def _read_long_fast(path: Path) -> pd.DataFrame | None:
    """A clean long CSV (every value a number, no renamings), read in one pass with names as
    categoricals; None when it needs the careful path."""
    import pandas as pd

    try:
        table = pd.read_csv(
            path,
            usecols=list(COLUMNS),
            dtype={"run": "category", "file": "category", "parameter": "category"},
            skipinitialspace=True,
        )
    except (ValueError, OSError, UnicodeDecodeError, pd.errors.ParserError):
        return None
    if table["value"].dtype.kind != "f" or table[["run", "file", "parameter"]].isna().any().any():
        return None
    for column in ("run", "file", "parameter"):
        categories = table[column].cat.categories
        stripped = categories.str.strip()
        if (stripped == "").any() or not stripped.is_unique:
            return None
        table[column] = table[column].cat.rename_categories(stripped)
    table = table[list(COLUMNS)].sort_values("run", kind="stable").reset_index(drop=True)
    log.info(
        "history: %d runs, %d files, %d values",
        table["run"].nunique(),
        table["file"].nunique(),
        len(table),
    )
    return table


def _rename_long(table: pd.DataFrame, renamings: Mapping[str, str]) -> pd.DataFrame:
    """Apply ``renamings`` to a long table, per (run, file) like :func:`apply_renamings`."""
    files = {o: n for o, n in renamings.items() if o.endswith(".csv")}
    parameters = {o: n for o, n in renamings.items() if not o.endswith(".csv")}
    table = table.copy()
    if files:
        table["file"] = table["file"].map(lambda name: files.get(name, name))
    if parameters:
        renamed = table["parameter"].map(lambda name: parameters.get(name, name))
        # Keep the old name where the new one is also present in the same (run, file).
        changed = renamed != table["parameter"]
        if changed.any():
            keys = set(zip(table["run"], table["file"], table["parameter"], strict=True))
            clash = [
                (r, f, n) in keys
                for r, f, n in zip(
                    table["run"][changed], table["file"][changed], renamed[changed], strict=True
                )
            ]
            index = table.index[changed]
            keep = index[[not c for c in clash]]
            table.loc[keep, "parameter"] = renamed[keep]
    return table
