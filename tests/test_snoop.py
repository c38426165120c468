"""Tests of bench.snoop: the robust reader of snoop's ``inferred_<model>.csv`` files."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.snoop import (
    InferenceFile,
    SnoopFormatError,
    format_snoop_number,
    parse_inference_text,
    read_inference_csv,
)

P = Path("some/run/inferred_interpreter.csv")

REFERENCE_CSVS = (
    Path(__file__).resolve().parents[2]
    / "shared"
    / "reference"
    / "gas_parameter_diff"
    / "input_csvs"
)


def parse(data: bytes) -> InferenceFile:
    """Parse ``data`` as if read from ``P``."""
    return parse_inference_text(data, P)


def error(data: bytes) -> SnoopFormatError:
    """The SnoopFormatError that parsing ``data`` raises (fails the test if none is raised)."""
    with pytest.raises(SnoopFormatError) as info:
        parse(data)
    assert info.type is SnoopFormatError
    return info.value


def same_floats(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    """Equal element by element, nan equal to nan."""
    return len(a) == len(b) and all(
        (math.isnan(x) and math.isnan(y)) or x == y for x, y in zip(a, b, strict=True)
    )


# --- format_snoop_number -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (600.0, "600."),
        (600, "600."),
        (0.0, "0."),
        (-0.0, "-0."),
        (-3.0, "-3."),
        (20.0, "20."),
        (0.0752, "0.0752"),
        (1.5e-07, "1.5e-07"),
        (1e20, "1e+20"),
        (123456789012345.0, "1.23456789012e+14"),
        (15.8233333333, "15.8233333333"),
        (1 / 3, "0.333333333333"),
        (float("nan"), "nan"),
        (float("inf"), "inf"),
        (float("-inf"), "-inf"),
    ],
)
def test_format_snoop_number(value: float, text: str) -> None:
    """Numbers print as '%.12g' with a trailing dot only on plain [-]digits results."""
    assert format_snoop_number(value) == text


# --- Good files ----------------------------------------------------------------------------


def test_clean_file_has_no_warnings() -> None:
    """A clean two-line file parses to names, texts and values, with no warning."""
    got = parse(b"a/x,b/y,c\n600.,0.0752,1.5e-07\n")
    assert got == InferenceFile(
        path=P,
        names=("a/x", "b/y", "c"),
        texts=("600.", "0.0752", "1.5e-07"),
        values=(600.0, 0.0752, 1.5e-07),
        warnings=(),
    )


def test_path_is_kept() -> None:
    """The path given is the one on the result."""
    assert parse_inference_text(b"a\n1\n", Path("x/y.csv")).path == Path("x/y.csv")


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("600.", 600.0),
        ("0.", 0.0),
        ("-0.", -0.0),
        ("+1", 1.0),
        ("1e-07", 1e-07),
        (".5", 0.5),
        ("inf", math.inf),
        ("-inf", -math.inf),
        ("Infinity", math.inf),
        ("1e999", math.inf),
    ],
)
def test_accepted_numbers(text: str, value: float) -> None:
    """Anything Python's float() reads in ASCII is a value, kept verbatim in texts."""
    got = parse(f"p\n{text}\n".encode())
    assert got.texts == (text,)
    assert got.values == (value,)
    assert math.copysign(1, got.values[0]) == math.copysign(1, value)


@pytest.mark.parametrize("text", ["nan", "NaN", "-nan"])
def test_nan_values(text: str) -> None:
    """nan in any spelling float() accepts is a nan value."""
    got = parse(f"p,q\n{text},1\n".encode())
    assert math.isnan(got.values[0])
    assert got.texts == (text, "1")


def test_utf8_names() -> None:
    """Non-ASCII names are decoded as UTF-8."""
    assert parse("é/ü,b\n1,2\n".encode()).names == ("é/ü", "b")


def test_bom_is_stripped_with_warning() -> None:
    """A leading UTF-8 BOM is not part of the first name, and is reported."""
    got = parse(b"\xef\xbb\xbfa,b\n1,2\n")
    assert got.names == ("a", "b")
    assert got.warnings == ("UTF-8 BOM",)


def test_crlf_is_accepted_with_warning() -> None:
    """CRLF line ends parse like LF, with a warning."""
    got = parse(b"a,b\r\n1.,nan\r\n")
    assert got.names == ("a", "b")
    assert got.texts == ("1.", "nan")
    assert got.warnings == ("CRLF line ends",)


def test_mixed_line_ends() -> None:
    """One CRLF line among LF lines is still just the CRLF warning."""
    got = parse(b"a,b\r\n1,2\n")
    assert (got.names, got.texts, got.warnings) == (("a", "b"), ("1", "2"), ("CRLF line ends",))


def test_trailing_blank_lines_are_ignored() -> None:
    """Blank (or whitespace-only) lines after the values are ignored, with a warning."""
    got = parse(b"a,b\n1,2\n\n  \n\t\n")
    assert got.texts == ("1", "2")
    assert got.warnings == ("trailing blank lines",)


def test_trailing_blank_crlf_lines() -> None:
    """Blank CRLF lines at the end are ignored too."""
    got = parse(b"a,b\r\n1,2\r\n\r\n\r\n")
    assert got.texts == ("1", "2")
    assert got.warnings == ("CRLF line ends", "trailing blank lines")


def test_missing_final_newline_is_a_warning() -> None:
    """A values line without its final newline parses, with a warning (may be truncated)."""
    got = parse(b"a,b\n1,2")
    assert got.values == (1.0, 2.0)
    assert got.warnings == ("no newline at end of file",)


@pytest.mark.parametrize("commas", [1, 3])
def test_trailing_commas_on_both_lines(commas: int) -> None:
    """The same number of trailing empty fields on both lines is dropped, with a warning."""
    got = parse(b"a,b" + b"," * commas + b"\n1,2" + b"," * commas + b"\n")
    assert got.names == ("a", "b")
    assert got.values == (1.0, 2.0)
    assert got.warnings == ("trailing comma",)


def test_spaces_around_fields() -> None:
    """Spaces and tabs around fields are stripped, with a warning; inner spaces are kept."""
    got = parse(b" a , b c\t,c\n 1.\t, nan ,2\n")
    assert got.names == ("a", "b c", "c")
    assert got.texts == ("1.", "nan", "2")
    assert got.warnings == ("spaces around fields",)


def test_all_oddities_at_once() -> None:
    """BOM, CRLF, spaces, trailing commas and blank lines together, each warned once."""
    got = parse(b"\xef\xbb\xbf a ,b,\r\n1 , 2,\r\n\r\n")
    assert got.names == ("a", "b")
    assert got.values == (1.0, 2.0)
    assert got.warnings == (
        "UTF-8 BOM",
        "CRLF line ends",
        "trailing blank lines",
        "spaces around fields",
        "trailing comma",
    )


def test_result_is_frozen() -> None:
    """InferenceFile is immutable."""
    got = parse(b"a\n1\n")
    with pytest.raises(AttributeError):
        got.names = ("b",)  # type: ignore[misc]


# --- Bad files: the error, its line and its reason ------------------------------------------


@pytest.mark.parametrize("data", [b"", b"\n", b"\n\n  \n", b"\r\n", b"\xef\xbb\xbf"])
def test_empty_file(data: bytes) -> None:
    """A file with nothing but blank lines is 'empty file' on line 1."""
    err = error(data)
    assert (err.line, err.reason) == (1, "empty file")
    assert str(err) == f"{P}:1: empty file"


@pytest.mark.parametrize("data", [b"a,b\n", b"a,b", b"a,b\r\n", b"a,b\n\n\n", b"a,b,\n"])
def test_header_only(data: bytes) -> None:
    """A header with no values line is line 2 'no values line (truncated file?)'."""
    err = error(data)
    assert (err.line, err.reason) == (2, "no values line (truncated file?)")
    assert str(err) == f"{P}:2: no values line (truncated file?)"


def test_cut_in_the_values_line() -> None:
    """A values line cut short is a width mismatch on line 2."""
    err = error(b"a,b,c\n1.,2")
    assert (err.line, err.reason) == (2, "3 names but 2 values")


def test_cut_in_a_value() -> None:
    """A value cut in its middle (here '1e-0' of '1e-07' cut to '1e-') is an error on line 2."""
    err = error(b"a,b\n1.,1e-")
    assert err.line == 2
    assert "'1e-'" in err.reason


@pytest.mark.parametrize(
    ("data", "names", "values"),
    [
        (b"a,b\n1,2,3\n", 2, 3),
        (b"a,b,c\n1,2\n", 3, 2),
        (b"a,b,\n1,2\n", 3, 2),  # trailing comma on the header only
        (b"a,b\n1,2,\n", 2, 3),  # trailing comma on the values only
        (b"a,b,\n1,2,,\n", 3, 4),  # different numbers of trailing commas
        (b"a\n1,5\n", 1, 2),  # a decimal comma
    ],
)
def test_width_mismatch(data: bytes, names: int, values: int) -> None:
    """Different numbers of names and values is line 2 'N names but M values'."""
    err = error(data)
    assert (err.line, err.reason) == (2, f"{names} names but {values} values")


def test_more_than_two_lines() -> None:
    """A third non-blank line is an error on line 3."""
    err = error(b"a,b\n1,2\n3,4\n")
    assert err.line == 3
    assert str(err).startswith(f"{P}:3: ")


def test_more_than_two_lines_crlf_and_blank_end() -> None:
    """The third line is found with CRLF ends and trailing blank lines too."""
    assert error(b"a,b\r\n1,2\r\na,b\r\n\r\n").line == 3


def test_blank_line_between_header_and_values() -> None:
    """A blank line where the values should be is an error on line 2."""
    err = error(b"a,b\n\n1,2\n")
    assert err.line == 2
    assert "blank" in err.reason


def test_blank_header_line() -> None:
    """A blank first line before the values is an error on line 1."""
    err = error(b"  \n1,2\n")
    assert err.line == 1
    assert "blank header" in err.reason


@pytest.mark.parametrize(
    ("data", "column"),
    [(b",b\n1,2\n", 1), (b"a,,c\n1,2,3\n", 2), (b"a, ,c\n1,2,3\n", 2), (b"a,b,\n1,2,3\n", 3)],
)
def test_empty_name(data: bytes, column: int) -> None:
    """An empty parameter name is an error on line 1 naming its column."""
    err = error(data)
    assert (err.line, err.reason) == (1, f"empty parameter name in column {column}")


def test_only_empty_fields() -> None:
    """Lines of commas only are not dropped as trailing commas: empty name in column 1."""
    err = error(b",,\n,,\n")
    assert (err.line, err.reason) == (1, "empty parameter name in column 1")


@pytest.mark.parametrize("data", [b"a,b,a\n1,2,3\n", b"a, b,a \n1,2,3\n"])
def test_duplicate_name(data: bytes) -> None:
    """A name given twice (after stripping) is an error on line 1 naming it and its columns."""
    err = error(data)
    assert err.line == 1
    assert err.reason == "duplicate parameter name 'a' (columns 1 and 3)"


@pytest.mark.parametrize(
    "text", ["", "abc", "0x10", "1_000", "１２", "٣", "1e", "--1", "1..", "nan(1)", "1.2.3", "10%"]
)
def test_bad_value(text: str) -> None:
    """A value float() cannot read (or with '_' / non-ASCII digits) is an error on line 2."""
    err = error(f"p/x,q/y\n1,{text}\n".encode())
    assert err.line == 2
    assert err.reason == f"value {text!r} of parameter 'q/y' (column 2) is not a number"


def test_empty_value_in_the_middle() -> None:
    """An empty value not at the end is an error on line 2 naming the parameter."""
    err = error(b"a,b,c\n1,,3\n")
    assert (err.line, err.reason) == (2, "value '' of parameter 'b' (column 2) is not a number")


@pytest.mark.parametrize(
    ("data", "line"),
    [
        (b"\xffa,b\n1,2\n", 1),
        (b"a,b\n1,\xff\n", 2),
        (b"a,b\n1,2\n\xfe\n", 3),
        (b"\xef\xbb\xbfa,\xc3\n1,2\n", 1),  # cut in the middle of a character, after a BOM
        (b"\xff\xfea\x00,\x00b\x00\n\x00", 1),  # UTF-16
    ],
)
def test_not_utf8(data: bytes, line: int) -> None:
    """Bytes that are not UTF-8 are an error naming the line of the first bad byte."""
    err = error(data)
    assert err.line == line
    assert err.reason.startswith("not valid UTF-8")


def test_not_utf8_names_the_offset() -> None:
    """The UTF-8 error names the offset of the bad byte in the file (BOM included)."""
    err = error(b"\xef\xbb\xbfa\n\xff\n")
    assert "0xff at offset 5" in err.reason


@pytest.mark.parametrize(("data", "line"), [(b"a,b\r1,2\r", 1), (b"a,b\n1\r,2\n", 2)])
def test_bare_carriage_return(data: bytes, line: int) -> None:
    """A CR that does not end a line (old Mac line ends) is an error on its line."""
    err = error(data)
    assert err.line == line
    assert "carriage return" in err.reason


@pytest.mark.parametrize(("data", "line"), [(b"\x00" * 16, 1), (b"a,b\n1,2\x00\x00\n", 2)])
def test_nul_bytes(data: bytes, line: int) -> None:
    """NUL bytes (a zero-filled file after a crash) are an error on their line."""
    err = error(data)
    assert err.line == line
    assert "NUL" in err.reason


def test_second_bom() -> None:
    """A BOM anywhere but at the very start is an error, not part of a name."""
    err = error(b"\xef\xbb\xbf\xef\xbb\xbfa\n1\n")
    assert err.line == 1
    assert "byte order mark" in err.reason


# --- The exception ----------------------------------------------------------------------------


def test_error_fields_and_str() -> None:
    """SnoopFormatError carries path, line and reason; str is 'path:line: reason'."""
    err = SnoopFormatError(Path("d/f.csv"), 7, "bad thing")
    assert (err.path, err.line, err.reason) == (Path("d/f.csv"), 7, "bad thing")
    assert str(err) == "d/f.csv:7: bad thing"
    assert isinstance(err, ValueError)


def test_error_str_without_line() -> None:
    """Without a line, str is 'path: reason'."""
    assert str(SnoopFormatError(Path("d/f.csv"), None, "gone")) == "d/f.csv: gone"


def test_error_pickles() -> None:
    """The error survives pickling (e.g. from a worker process) with its fields."""
    err = pickle.loads(pickle.dumps(error(b"a\n")))
    assert isinstance(err, SnoopFormatError)
    assert (err.path, err.line, err.reason, str(err)) == (
        P,
        2,
        "no values line (truncated file?)",
        f"{P}:2: no values line (truncated file?)",
    )


# --- read_inference_csv -------------------------------------------------------------------------


def test_read_file(tmp_path: Path) -> None:
    """read_inference_csv reads the bytes of the file and names it in the result."""
    path = tmp_path / "inferred_x.csv"
    path.write_bytes(b"\xef\xbb\xbfa,b\r\n600.,nan\r\n")
    got = read_inference_csv(path)
    assert got.path == path
    assert got.names == ("a", "b")
    assert got.texts == ("600.", "nan")
    assert got.warnings == ("UTF-8 BOM", "CRLF line ends")


def test_read_bad_file_names_it(tmp_path: Path) -> None:
    """A bad file on disk raises SnoopFormatError naming that file and the line."""
    path = tmp_path / "inferred_x.csv"
    path.write_bytes(b"a,b\n1\n")
    with pytest.raises(SnoopFormatError) as info:
        read_inference_csv(path)
    assert str(info.value) == f"{path}:2: 2 names but 1 values"


@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_unreadable_file(tmp_path: Path, kind: str) -> None:
    """A missing or unreadable path is a SnoopFormatError without a line, not an OSError."""
    path = tmp_path / "inferred_x.csv"
    if kind == "directory":
        path.mkdir()
    with pytest.raises(SnoopFormatError) as info:
        read_inference_csv(path)
    assert info.value.line is None
    assert info.value.path == path
    assert str(info.value).startswith(f"{path}: cannot read: ")


# --- Golden: the real files of the reference runs ------------------------------------------------

NAMES = (
    "builtin/Timer_latency",
    "interpreter/N_IAdd_int_coeff",
    "interpreter/N_IAdd_int_const",
    "cache/CACHE_UPDATE/intercept",
    "interpreter/N_IMul_int_coeff",
    "R2_score-interpreter-interpreter/N_IAdd_int",
    "T-value-interpreter/N_IAdd_int_coeff",
)
GOLDEN = {
    "_snoop_20230316_1052_v16.0-rc1-1722-g1f07d32f94": (
        (*NAMES, "old/removed_coeff"),
        ("15.8233333333", "0.5", "20.", "600.", "0.0752", "0.987", "45.6", "3."),
    ),
    "_snoop_20230321_2000_v16.0-rc1-1801-g2a3b4c5d6e": (
        (*NAMES, "old/removed_coeff"),
        ("16.1", "0.45", "21.5", "640.", "0.0801", "0.95", "30.2", "3.1"),
    ),
    "_snoop_20230324_2000_v16.0-rc1-1850-g3b4c5d6e7f": (
        (*NAMES, "x/new_coeff"),
        ("15.9", "0.", "22.9", "800.", "0.11", "0.71", "nan", "0.2"),
    ),
}


def reference_file(run: str) -> Path:
    """The reference run's inferred_interpreter.csv; fails (never skips) when it is absent."""
    path = REFERENCE_CSVS / run / "inferred_interpreter.csv"
    if not path.is_file():
        pytest.fail(
            f"reference file {path} is missing: the golden tests need ../shared/reference "
            "beside the project (see DESIGN.md)"
        )
    return path


def test_reference_files_are_the_expected_ones() -> None:
    """The reference directory holds exactly the three runs the golden tests know."""
    if not REFERENCE_CSVS.is_dir():
        pytest.fail(
            f"reference directory {REFERENCE_CSVS} is missing (../shared beside the project)"
        )
    found = {p.parent.name for p in REFERENCE_CSVS.glob("*/inferred_interpreter.csv")}
    assert found == set(GOLDEN)


@pytest.mark.parametrize("run", sorted(GOLDEN))
def test_golden_reference_file(run: str) -> None:
    """Each real reference file parses to its names, texts and values, with no warning."""
    path = reference_file(run)
    got = read_inference_csv(path)
    names, texts = GOLDEN[run]
    assert got.path == path
    assert got.names == names
    assert got.texts == texts
    assert same_floats(got.values, tuple(float(t) for t in texts))
    assert got.warnings == ()


@pytest.mark.parametrize("run", sorted(GOLDEN))
def test_golden_reference_file_rewritten(run: str) -> None:
    """Rewriting a real file with format_snoop_number gives back the same bytes."""
    path = reference_file(run)
    got = read_inference_csv(path)
    rewritten = ",".join(got.names) + "\n" + ",".join(map(format_snoop_number, got.values)) + "\n"
    assert rewritten.encode() == path.read_bytes()


# --- Properties ---------------------------------------------------------------------------------

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

#: Bytes that make up snoop-like files, for generated inputs that reach the deeper checks.
PIECES = st.sampled_from(
    [b"a", b"b/c", b"-x", b",", b"\n", b"\r\n", b"\r", b" ", b"\t", b"600.", b"0.", b"nan",
     b"inf", b"-inf", b"1e-07", b"+1", b"0x10", b"1_0", b"\xef\xbb\xbf", b"\xff", b"\xc3",
     b"\xc3\xa9", b"\x00", b"", b"."]
)  # fmt: skip


def check_outcome(data: bytes) -> InferenceFile | SnoopFormatError:
    """Parse ``data``: only an InferenceFile or a well-formed SnoopFormatError may come out."""
    try:
        got = parse(data)
    except SnoopFormatError as err:
        assert err.path == P
        assert err.line is not None
        assert 1 <= err.line <= data.count(b"\n") + 2
        assert err.reason
        assert str(err) == f"{P}:{err.line}: {err.reason}"
        return err
    assert len(got.names) == len(got.texts) == len(got.values) >= 1
    assert all(got.names) and len(set(got.names)) == len(got.names)
    return got


@FAST
@given(st.one_of(st.binary(max_size=200), st.lists(PIECES, max_size=40).map(b"".join)))
def test_any_bytes_give_a_result_or_a_format_error(data: bytes) -> None:
    """Any bytes give an InferenceFile or a SnoopFormatError, never another exception."""
    check_outcome(data)


NAME_CHARS = st.characters(codec="utf-8", exclude_characters=",\n\r\ufeff\x00")
SNOOP_NAMES = st.text(NAME_CHARS, min_size=1, max_size=20).filter(
    lambda s: s == s.strip() and s != ""
)
FLOATS = st.floats(allow_nan=True, allow_infinity=True)
ROWS = st.lists(st.tuples(SNOOP_NAMES, FLOATS), min_size=1, max_size=12, unique_by=lambda r: r[0])
VARIANTS = st.sampled_from(["plain", "crlf", "bom", "bom+crlf"])


def snoop_file(rows: list[tuple[str, float]], variant: str) -> bytes:
    """The bytes snoop would write for ``rows``, in one of the tolerated variants."""
    eol = "\r\n" if "crlf" in variant else "\n"
    header = ",".join(name for name, _ in rows)
    values = ",".join(format_snoop_number(value) for _, value in rows)
    bom = b"\xef\xbb\xbf" if "bom" in variant else b""
    return bom + (header + eol + values + eol).encode()


@FAST
@given(ROWS, VARIANTS)
def test_round_trip(rows: list[tuple[str, float]], variant: str) -> None:
    """Names and floats written like snoop (also CRLF/BOM) read back equal, nan-aware."""
    got = parse(snoop_file(rows, variant))
    texts = tuple(format_snoop_number(value) for _, value in rows)
    assert got.names == tuple(name for name, _ in rows)
    assert got.texts == texts
    assert same_floats(got.values, tuple(float(t) for t in texts))
    for (_, value), back in zip(rows, got.values, strict=True):
        if math.isfinite(value):
            assert back == pytest.approx(value, rel=1e-11, abs=1e-300)
        else:
            assert same_floats((back,), (value,))
    expected = {"plain": (), "crlf": ("CRLF line ends",), "bom": ("UTF-8 BOM",)}
    assert got.warnings == expected.get(variant, ("UTF-8 BOM", "CRLF line ends"))


@FAST
@given(ROWS, VARIANTS, st.data())
def test_truncated_file_is_valid_or_an_error_on_line_1_or_2(
    rows: list[tuple[str, float]], variant: str, data: st.DataObject
) -> None:
    """A valid file cut at any byte parses, or fails with a SnoopFormatError on line 1 or 2."""
    full = snoop_file(rows, variant)
    cut = data.draw(st.integers(min_value=0, max_value=len(full)), label="cut")
    outcome = check_outcome(full[:cut])
    if isinstance(outcome, SnoopFormatError):
        assert outcome.line in (1, 2)
    else:
        # A file that still parses has its whole header and every value but the last intact.
        full_texts = tuple(format_snoop_number(value) for _, value in rows)
        assert outcome.names == tuple(name for name, _ in rows)
        assert outcome.texts[:-1] == full_texts[:-1]
        assert full_texts[-1].startswith(outcome.texts[-1])
