"""A cached run's inference CSVs, parsed once and kept beside them.

A run in the watcher's cache is immutable (it had SUCCESS when it was downloaded), so its CSVs
are parsed once, the first time an analysis needs them, and the result is kept in
``<cache>/<run>/.digest.json``: per file, its parameter names and its values as written (each
one comma-joined line, as in the CSV), or why it could not be read; and the values as numbers,
every file's in that order, in ``.digest.f64`` (float64, native byte order). A tick then reads
two small files per run of the history instead of parsing every CSV again: at 300 runs x 300
files that is 600 reads instead of 90,000, and no text turned into numbers (5.4 million
``float()`` calls, 1.3 s). The lines stay joined until a comparison needs one file's cells,
which keeps a large history within a few hundred MB.

A digest that cannot be read, or was written by another version of the format (bump
:data:`FORMAT` whenever :mod:`bench.snoop` accepts or normalises differently), is rebuilt
from the CSVs; one that cannot be written (read-only cache) is only logged: the analysis goes
on with what it parsed.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bench.markers import atomic_write

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)

DIGEST = ".digest.json"
VALUES = ".digest.f64"
FORMAT = 1


@dataclass(frozen=True)
class Digest:
    """The parsed CSVs of one run."""

    #: File name -> (names line, values line): the stripped fields joined by commas.
    files: dict[str, tuple[str, str]]
    #: File name -> (line or None, reason) for the files that could not be read.
    problems: dict[str, tuple[int | None, str]]
    #: The values of every file of :attr:`files`, in that order.
    values: np.ndarray
    #: File name -> where its values are in :attr:`values` (start, stop).
    spans: dict[str, tuple[int, int]]

    def names(self, file: str) -> tuple[str, ...]:
        return _split(self.files[file][0])

    def texts(self, file: str) -> tuple[str, ...]:
        return _split(self.files[file][1])

    def numbers(self, file: str) -> np.ndarray:
        start, stop = self.spans[file]
        return self.values[start:stop]


def _make(
    files: dict[str, tuple[str, str]],
    problems: dict[str, tuple[int | None, str]],
    values: np.ndarray,
) -> Digest:
    """A digest, its headers interned (most runs repeat them: one string each) and the span
    of each file's values computed; ValueError when ``values`` does not fit the files."""
    interned: dict[str, tuple[str, str]] = {}
    spans: dict[str, tuple[int, int]] = {}
    start = 0
    for name, (names, texts) in files.items():
        names = sys.intern(names)
        count = _count(names)
        interned[name] = (names, texts)
        spans[name] = (start, start + count)
        start += count
    if start != len(values):
        raise ValueError(f"{len(values)} values for {start} names")
    return Digest(interned, problems, values, spans)


_counts: dict[str, int] = {}


def _count(names: str) -> int:
    """The number of names in a names line (cached: the same lines recur in every run)."""
    count = _counts.get(names)
    if count is None:
        count = _counts[names] = names.count(",") + 1 if names else 0
    return count


def _split(line: str) -> tuple[str, ...]:
    return tuple(line.split(",")) if line else ()


def parse_run(directory: Path) -> Digest:
    """Parse every ``*.csv`` of ``directory`` (a run of the cache)."""
    import numpy as np

    from bench.snoop import SnoopFormatError, read_inference_csv

    files: dict[str, tuple[str, str]] = {}
    problems: dict[str, tuple[int | None, str]] = {}
    values: list[float] = []
    for path in sorted(directory.glob("*.csv")):
        try:
            data = read_inference_csv(path)
        except SnoopFormatError as err:
            problems[path.name] = (err.line, err.reason)
            continue
        files[path.name] = (",".join(data.names), ",".join(data.texts))
        values += data.values
    return _make(files, problems, np.array(values, dtype=np.float64))


def load_digest(directory: Path) -> Digest:
    """The digest of the cached run ``directory``: read, or built and saved."""
    import numpy as np

    path = directory / DIGEST
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raw = None  # not parsed yet
    except OSError as err:
        log.warning("%s is unreadable (%s): parsing the CSVs again", path, err)
        raw = None
    if raw is not None:
        try:
            data = json.loads(raw)
            if data.get("format") == FORMAT:
                problems = {n: (line, reason) for n, (line, reason) in data["problems"].items()}
                files = {n: (names, texts) for n, (names, texts) in data["files"].items()}
                return _make(files, problems, np.fromfile(directory / VALUES, dtype=np.float64))
            log.info(
                "%s: format %r, not %d: parsing the CSVs again", path, data.get("format"), FORMAT
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            log.warning("%s is unreadable (%s): parsing the CSVs again", path, err)
    digest = parse_run(directory)
    try:
        save(directory, digest)
    except OSError as err:
        log.warning("could not save %s (%s): the next analysis parses the CSVs again", path, err)
    return digest


def save(directory: Path, digest: Digest) -> None:
    """Write the digest: the values first, then the JSON, whose presence says both are whole."""
    atomic_write(directory / VALUES, digest.values.tobytes())
    text = json.dumps(
        {
            "format": FORMAT,
            "files": {name: list(lines) for name, lines in digest.files.items()},
            "problems": {name: list(problem) for name, problem in digest.problems.items()},
        },
        separators=(",", ":"),
    )
    atomic_write(directory / DIGEST, text)
