"""The benchmark suite's entry points run on a toy history and print their tables.

Not a benchmark: nothing here is timed. Each command runs `python -m bench.perf <what>` at the
toy scale (4 runs x 3 files x 10 parameters), one round, without the old tool, and checks that
its markdown table comes out with a figure in it.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import clean_env

#: Entry point -> the start of its table's title.
TABLES = {
    "idle": "### Idle tick (nothing new), toy",
    "tick": "### Tick with one new run, toy",
    "analysis": "### Analysis alone from a warm cache, toy",
    "upload": "### Upload of one run",
    "detect": "### bench-detect --online over the toy history",
    "startup": "### Start-up of each console script",
}


#: One round, no old tool, and the --workdir flag (its value follows).
ONE_ROUND = ("--rounds", "1", "--no-old", "--workdir")


def perf(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bench.perf", *args, *ONE_ROUND, str(tmp_path / "work")],
        capture_output=True,
        text=True,
        env=clean_env(),
        cwd=tmp_path,
        timeout=300,
        check=False,
    )


@pytest.mark.parametrize("what", sorted(TABLES))
def test_each_entry_point_prints_its_table(tmp_path: Path, what: str) -> None:
    """`python -m bench.perf <what>` on the toy scale exits 0 with a markdown table of figures."""
    done = perf(tmp_path, what, "--scale", "toy")
    assert done.returncode == 0, done.stderr
    title = TABLES[what]
    assert title in done.stdout, done.stdout
    table = done.stdout[done.stdout.index(title) :]
    assert re.search(r"^\|---\|", table, re.M), table
    assert re.search(r"^\| [^|]+ \| (\d+\.\d+|not available yet) \|", table, re.M), table


def test_results_are_written_into_their_blocks_and_prose_is_kept(tmp_path: Path) -> None:
    """--output replaces the measured blocks of the markdown file and keeps the text around."""
    doc = tmp_path / "performance.md"
    doc.write_text("# Performance\n\nHand-written notes.\n\n<!-- perf:end -->\n\nMore notes.\n")
    for _ in range(2):
        done = perf(tmp_path, "startup", "--scale", "toy", "--output", str(doc))
        assert done.returncode == 0, done.stderr
    text = doc.read_text()
    assert text.startswith("# Performance\n\nHand-written notes.\n")
    assert text.rstrip().endswith("More notes.")
    assert text.count("<!-- perf:startup -->") == 1
    assert text.count("<!-- perf:machine -->") == 1
    assert "| cronjob |" in text and "CPU" in text
