"""Tests of run ids: ``_snoop_<YYYYMMDD>_<HHMM>_<git describe>``, made, parsed and ordered."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.runs import (
    InvalidRunName,
    RunId,
    is_run_name,
    make_run_name,
    parse_run_name,
    sanitize_describe,
)

REAL_NAMES = [
    "_snoop_20230321_2000_v16.0-rc1-1801-g2a3b4c5d6e",
    "_snoop_20230316_1052_v16.0-rc1-1722-g1f07d32f94-dirty",
    "_snoop_20240101_0000_2a3b4c5",
    "_snoop_20231231_2359_octez-v18.0+dev-12-gabcdef0",
]

BAD_NAMES = [
    "",
    "   ",
    "../../x",
    "snoop_results/../../x",
    "_snoop_2023_..",
    "_snoop_20230321_2000_..",
    "_snoop_20230321_2000_.",
    "_snoop_20230321_2000_",
    "_snoop_20230321_2000_v1..2",
    "_snoop_20230321_2000_a/b",
    "_snoop_20230321_2000_../../etc",
    "/abs/_snoop_20230321_2000_x",
    "snoop_results/_snoop_20230321_2000_x/y",
    "other/_snoop_20230321_2000_x",
    "snoop_20230321_2000_x",
    "_snoop_2023032_2000_x",
    "_snoop_20230321_200_x",
    "_snoop_20230321-2000_x",
    "_snoop_20230321_2000_-x",
    "_snoop_20230321_2000_.hidden",
    "_snoop_20230321_2000_x y",
    "_snoop_20230321_2000_x\n_snoop_20230321_2000_y",
    "_snoop_20230321_2000_x\x00",
    "_snoop_20231399_2000_x",  # no 99th day
    "_snoop_20230230_2000_x",  # no February 30th
    "_snoop_20230321_2460_x",  # no 24:60
    "_snoop_２０２３０３２１_2000_x",  # full-width digits
    "_snoop_20230321_2000_" + "a" * 201,
]


# --- making names ----------


def test_make_run_name_format() -> None:
    """A run started at 2023-03-21 20:00:59 is named _snoop_20230321_2000_<describe>."""
    run = make_run_name(datetime(2023, 3, 21, 20, 0, 59), "v16.0-rc1-1801-g2a3b4c5d6e")
    assert isinstance(run, RunId)
    assert run.name == "_snoop_20230321_2000_v16.0-rc1-1801-g2a3b4c5d6e"
    assert str(run) == run.name


def test_make_run_name_pads_with_zeros() -> None:
    """Month, day, hour and minute are zero-padded to two digits."""
    run = make_run_name(datetime(2024, 1, 2, 3, 4), "g1")
    assert run.name == "_snoop_20240102_0304_g1"


@pytest.mark.parametrize(
    ("describe", "expected"),
    [
        ("release/v1.0-3-gabc", "release_v1.0-3-gabc"),
        ("my tag-1-gabc", "my_tag-1-gabc"),
        ("  v1.0-0-gabc\n", "v1.0-0-gabc"),
        ("../../etc/passwd", "etc_passwd"),
        ("..hidden", "hidden"),
        ("-option", "option"),
        ("a..b", "a.b"),
        ("", "unknown"),
        ("///", "unknown"),
        ("é", "unknown"),
        ("v1+dirty", "v1+dirty"),
    ],
)
def test_sanitize_describe(describe: str, expected: str) -> None:
    """``/``, spaces and the like become ``_``; leading dots/dashes go; empty gives unknown."""
    assert sanitize_describe(describe) == expected


def test_sanitize_describe_truncates_to_200() -> None:
    """A very long describe is cut to 200 characters (one path component stays short)."""
    assert sanitize_describe("a" * 500) == "a" * 200


@pytest.mark.parametrize(
    "describe", ["feature/x y", "../../x", "a..b", "", "tag with\nnewline", "x" * 300, "/"]
)
def test_make_run_name_from_hostile_describe_is_a_valid_single_component(describe: str) -> None:
    """Whatever git describe says, the run name parses back and has no ``/`` nor ``..``."""
    run = make_run_name(datetime(2023, 3, 21, 20, 0), describe)
    assert "/" not in run.name
    assert ".." not in run.name
    assert parse_run_name(run.name) == run


@settings(database=None, max_examples=200)
@given(describe=st.text(max_size=300))
def test_any_describe_makes_a_parsable_name(describe: str) -> None:
    """For any text as describe, make_run_name succeeds and round-trips through parse_run_name."""
    run = make_run_name(datetime(2023, 3, 21, 20, 0), describe)
    assert parse_run_name(run.name) == run
    assert run.describe == sanitize_describe(describe)


# --- parsing ----------


@pytest.mark.parametrize("name", REAL_NAMES)
def test_parse_accepts_real_names(name: str) -> None:
    """Names the pipeline has produced parse to a RunId with the same name."""
    run = parse_run_name(name)
    assert run.name == name
    assert is_run_name(name)


def test_parse_strips_whitespace_of_marker_files() -> None:
    """A marker file's content (name plus newline) parses to the bare name."""
    assert parse_run_name(REAL_NAMES[0] + "\n").name == REAL_NAMES[0]
    assert parse_run_name("  " + REAL_NAMES[1] + " \n").name == REAL_NAMES[1]


def test_parse_accepts_old_snoop_results_form() -> None:
    """The old scripts' ``snoop_results/<run>`` marker content gives the bare run name."""
    run = parse_run_name(f"snoop_results/{REAL_NAMES[1]}\n")
    assert run.name == REAL_NAMES[1]


@pytest.mark.parametrize("text", BAD_NAMES, ids=repr)
def test_parse_rejects_bad_or_hostile_names(text: str) -> None:
    """Paths, traversal, malformed or impossible timestamps and bad describes are refused."""
    with pytest.raises(InvalidRunName, match="is not a run name"):
        parse_run_name(text)
    assert not is_run_name(text)


def test_invalid_run_name_is_a_value_error() -> None:
    """InvalidRunName is a ValueError, so generic validation handlers catch it."""
    with pytest.raises(ValueError):
        parse_run_name("../../x")


# --- properties and order ----------


def test_timestamp_and_describe_properties() -> None:
    """``timestamp`` is the minute in the name and ``describe`` everything after it."""
    run = parse_run_name("_snoop_20230316_1052_v16.0-rc1-1722-g1f07d32f94-dirty")
    assert run.timestamp == datetime(2023, 3, 16, 10, 52)
    assert run.describe == "v16.0-rc1-1722-g1f07d32f94-dirty"


def test_describe_may_contain_underscores() -> None:
    """A sanitized describe with ``_`` (from ``/``) is kept whole, not split at an underscore."""
    run = make_run_name(datetime(2023, 3, 21, 20, 0), "release/v1_2")
    assert run.describe == "release_v1_2"
    assert run.timestamp == datetime(2023, 3, 21, 20, 0)


def test_order_is_chronological() -> None:
    """Sorting RunIds orders them by start time, whatever their describes."""
    start = datetime(2022, 12, 31, 23, 59)
    steps = [0, 1, 60, 24 * 60, 31 * 24 * 60, 400 * 24 * 60, 9000 * 24 * 60]
    times = [start + timedelta(minutes=m) for m in steps]
    describes = ["zzz", "aaa", "v9-0-g1", "v10-0-g1", "0000000", "Z", "v1-dirty"]
    runs = [make_run_name(t, d) for t, d in zip(times, describes, strict=True)]
    shuffled = runs[:]
    random.Random(4).shuffle(shuffled)
    assert sorted(shuffled) == runs
    assert [r.timestamp for r in sorted(shuffled)] == times


@settings(database=None, max_examples=200)
@given(
    first=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31)),
    gap=st.integers(min_value=1, max_value=10**6),
    describe_a=st.text(max_size=40),
    describe_b=st.text(max_size=40),
)
def test_earlier_minute_always_sorts_first(
    first: datetime, gap: int, describe_a: str, describe_b: str
) -> None:
    """A run of an earlier minute is smaller than one of a later minute, as RunId and as text."""
    later = first + timedelta(minutes=gap)
    a = make_run_name(first, describe_a)
    b = make_run_name(later, describe_b)
    assert a < b
    assert a.name < b.name
    assert a.timestamp < b.timestamp


def test_runid_equality_and_hash_follow_the_name() -> None:
    """Two RunIds of the same name are equal and hash alike (usable in sets and dicts)."""
    a = parse_run_name(REAL_NAMES[0])
    b = parse_run_name("snoop_results/" + REAL_NAMES[0])
    assert a == b
    assert len({a, b, parse_run_name(REAL_NAMES[1])}) == 2
