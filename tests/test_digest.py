"""The digest of a cached run: the CSVs parsed once, read back identically, rebuilt when bad."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest

from bench.analysis.digest import DIGEST, FORMAT, VALUES, load_digest, parse_run
from bench.snoop import read_inference_csv


def make_run(directory: Path) -> Path:
    directory.mkdir(parents=True)
    (directory / "inferred_a.csv").write_text("a/x,a/y_const,a/z\n600.,0.0752,nan\n")
    (directory / "inferred_b.csv").write_text(" b/x , b/y \r\n1.5e-07,-inf\r\n")  # tolerated
    (directory / "inferred_bad.csv").write_text("p,q\n1.,oops\n")
    (directory / "inferred_empty.csv").write_text("")
    (directory / "notes.txt").write_text("not a CSV\n")
    return directory


def same_as_parser(digest: object, directory: Path) -> None:
    for name, _lines in digest.files.items():  # type: ignore[attr-defined]
        parsed = read_inference_csv(directory / name)
        assert digest.names(name) == parsed.names  # type: ignore[attr-defined]
        assert digest.texts(name) == parsed.texts  # type: ignore[attr-defined]
        numbers = digest.numbers(name).tolist()  # type: ignore[attr-defined]
        assert len(numbers) == len(parsed.values)
        for got, want in zip(numbers, parsed.values, strict=True):
            assert got == want or (math.isnan(got) and math.isnan(want))


def test_saved_digest_reads_back_what_the_parser_read(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    first = load_digest(run)
    assert (run / DIGEST).is_file() and (run / VALUES).is_file()
    assert sorted(first.files) == ["inferred_a.csv", "inferred_b.csv"]
    assert first.problems["inferred_bad.csv"][0] == 2
    assert "inferred_empty.csv" in first.problems
    same_as_parser(first, run)

    again = load_digest(run)  # from the saved files this time
    assert again.files == first.files
    assert again.problems == first.problems
    assert again.spans == first.spans
    same_as_parser(again, run)


def test_digest_is_used_instead_of_the_csvs_once_saved(tmp_path: Path) -> None:
    """Once saved, the CSVs are not read again (they are immutable in the cache)."""
    run = make_run(tmp_path / "run")
    load_digest(run)
    (run / "inferred_a.csv").write_text("changed,names\n1.,2.\n")
    assert load_digest(run).names("inferred_a.csv") == ("a/x", "a/y_const", "a/z")


@pytest.mark.parametrize(
    "damage",
    [
        lambda run: (run / DIGEST).write_text("{not json"),
        lambda run: (run / DIGEST).write_text('{"format": 1, "files": 3}'),
        lambda run: (run / VALUES).write_bytes(b"\0" * 8),  # not as many values as names
        lambda run: (run / VALUES).unlink(),
    ],
    ids=["not-json", "wrong-shape", "values-short", "values-missing"],
)
def test_damaged_digest_is_rebuilt_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: object
) -> None:
    run = make_run(tmp_path / "run")
    load_digest(run)
    damage(run)  # type: ignore[operator]
    with caplog.at_level(logging.WARNING, logger="bench.analysis.digest"):
        digest = load_digest(run)
    assert str(run / DIGEST) in caplog.text and "parsing the CSVs again" in caplog.text
    same_as_parser(digest, run)
    assert json.loads((run / DIGEST).read_text())["format"] == FORMAT  # saved again
    assert load_digest(run).files == digest.files


def test_digest_of_another_format_is_rebuilt(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run = make_run(tmp_path / "run")
    load_digest(run)
    data = json.loads((run / DIGEST).read_text())
    data["format"] = FORMAT + 1
    data["files"] = {}
    (run / DIGEST).write_text(json.dumps(data))
    with caplog.at_level(logging.INFO, logger="bench.analysis.digest"):
        digest = load_digest(run)
    assert f"format {FORMAT + 1}" in caplog.text
    assert sorted(digest.files) == ["inferred_a.csv", "inferred_b.csv"]


def test_digest_that_cannot_be_saved_is_still_given(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A digest that cannot be written (here its path is a directory) is logged; the
    analysis gets its digest all the same, and no temporary file is left behind."""
    run = make_run(tmp_path / "run")
    (run / DIGEST).mkdir()
    with caplog.at_level(logging.WARNING, logger="bench.analysis.digest"):
        digest = load_digest(run)
    assert "could not save" in caplog.text
    assert digest.files == parse_run(run).files
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".")) == sorted(
        [DIGEST, VALUES]
    )
