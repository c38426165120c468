"""Tests of the legacy comparison: the old ``gas_parameter_diff`` and watcher, text for text."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.analysis.gpd import (
    Column,
    Diff,
    assemble,
    compare_file,
    compare_two,
    gas_parameter_diff,
    legacy_alert_lines,
)

#: Real outputs of the old tool and watcher (outside the project, next to DESIGN.md).
REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "gas_parameter_diff"
#: Hand-written expected outputs of a 4-run x 2-file history (see its README.md).
HISTORY4 = Path(__file__).resolve().parent / "golden" / "gpd" / "history4"

OLDEST = "_snoop_20230316_1052_v16.0-rc1-1722-g1f07d32f94"
PREVIOUS = "_snoop_20230321_2000_v16.0-rc1-1801-g2a3b4c5d6e"
NEWEST = "_snoop_20230324_2000_v16.0-rc1-1850-g3b4c5d6e7f"
INTERPRETER = "inferred_interpreter.csv"


def read_column(root: Path, run: str, name: str) -> Column:
    """The tool's reading of ``<root>/input_csvs/<run>/<name>``: two lines split on commas."""
    names_line, values_line = (root / "input_csvs" / run / name).read_text().splitlines()
    return Column(
        label=f"input_csvs/{run}/{name}",
        names=tuple(names_line.split(",")),
        texts=tuple(values_line.split(",")),
    )


def reference_file(name: str) -> str:
    """A file of the real outputs; fails (never skips) when the folder is not there."""
    if not REFERENCE.is_dir():
        pytest.fail(
            f"the real outputs of the old tool are missing: {REFERENCE} does not exist "
            "(it ships next to DESIGN.md, in shared/reference/gas_parameter_diff/)"
        )
    return (REFERENCE / name).read_text()


def stderr_text(diff: Diff) -> str:
    return "".join(f"{line}\n" for line in diff.stderr)


def col(label: str, **values: str) -> Column:
    """A column from keyword arguments (names may not need quoting here)."""
    return Column(label=label, names=tuple(values), texts=tuple(values.values()))


def two(label_old: str, label_new: str, name: str, old: str, new: str) -> Diff:
    return gas_parameter_diff(
        [Column(label_old, (name,), (old,)), Column(label_new, (name,), (new,))]
    )


# --- (1) golden: the real outputs of the old tool and watcher ---------------------------------


@pytest.fixture
def real_columns() -> dict[str, Column]:
    reference_file("README.md")  # fail clearly if the folder is absent
    return {run: read_column(REFERENCE, run, INTERPRETER) for run in (OLDEST, PREVIOUS, NEWEST)}


def test_real_all_table(real_columns: dict[str, Column]) -> None:
    """The tool on the three runs, oldest first, prints all_inferred_interpreter.csv exactly."""
    diff = gas_parameter_diff([real_columns[OLDEST], real_columns[PREVIOUS], real_columns[NEWEST]])
    assert diff.csv == reference_file("all_inferred_interpreter.csv")


@pytest.mark.parametrize(("kind", "older"), [("reference", OLDEST), ("previous", PREVIOUS)])
def test_real_pairwise_tables_and_stderr(
    real_columns: dict[str, Column], kind: str, older: str
) -> None:
    """The tool on (older, newest) prints the real <kind>_*.csv and <kind>_*.stderr exactly."""
    diff = gas_parameter_diff([real_columns[older], real_columns[NEWEST]])
    assert diff.csv == reference_file(f"{kind}_inferred_interpreter.csv")
    assert stderr_text(diff) == reference_file(f"{kind}_inferred_interpreter.stderr")


def test_real_watcher_outputs(real_columns: dict[str, Column]) -> None:
    """compare_file + assemble rebuild the real alerts, selected.csv and the three tables."""
    report = compare_file(
        INTERPRETER,
        history=[real_columns[OLDEST], real_columns[PREVIOUS], real_columns[NEWEST]],
        newest=real_columns[NEWEST],
        reference=real_columns[OLDEST],
        previous=real_columns[PREVIOUS],
        ref_explicit=False,
        newest_run=NEWEST,
        reference_run=OLDEST,
        previous_run=PREVIOUS,
    )
    out = assemble([report])
    assert out["alerts"] == reference_file("alerts")
    assert out["selected.csv"] == reference_file("selected.csv")
    assert out["all.csv"] == reference_file("all_inferred_interpreter.csv")
    assert out["reference.csv"] == reference_file("reference_inferred_interpreter.csv")
    assert out["previous.csv"] == reference_file("previous_inferred_interpreter.csv")


# --- (2) golden: hand-written expected outputs of a 4-run x 2-file history --------------------


def test_history4_assembled_outputs() -> None:
    """The hand-written history4 outputs (explicit REF_DIR, missing file, nan...) byte for byte."""
    runs = ["run1", "run2", "run3", "run4"]
    first, ref, prev, newest = "run2", "run1", "run3", "run4"

    def column(run: str, name: str) -> Column | None:
        if not (HISTORY4 / "input_csvs" / run / name).exists():
            return None
        return read_column(HISTORY4, run, name)

    reports = []
    for name in sorted(p.name for p in (HISTORY4 / "input_csvs" / newest).iterdir()):
        history = [c for run in runs if run >= first if (c := column(run, name)) is not None]
        newest_column = column(newest, name)
        assert newest_column is not None
        reports.append(
            compare_file(
                name,
                history=history,
                newest=newest_column,
                reference=column(ref, name),
                previous=column(prev, name),
                ref_explicit=True,
                newest_run=newest,
                reference_run=ref,
                previous_run=prev,
            )
        )
    out = assemble(reports)
    assert set(out) == {"all.csv", "reference.csv", "previous.csv", "selected.csv", "alerts"}
    for key, text in out.items():
        assert text == (HISTORY4 / key).read_text(), key


# --- (3) unit tests -------------------------------------------------------------------------


def test_exactly_twenty_percent_does_not_alert() -> None:
    """CHANGE exactly 20.000000 (80 -> 100) is not an alert: the rule is strictly above 20."""
    diff = two("a", "b", "x/coeff", "80.", "100.")
    assert diff.rows["x/coeff"] == "x/coeff,,80.000000,100.000000,20.000000,20.000000,,100.,80.\n"
    assert diff.stderr == []


def test_640_to_800_does_not_alert() -> None:
    """The documented 640 -> 800 case (an intercept moving by 20% and 160) does not alert."""
    assert two("a", "b", "cache/CACHE_UPDATE/intercept", "640.", "800.").stderr == []
    assert two("a", "b", "interp/N_coeff", "640.", "800.").stderr == []


def test_just_above_twenty_percent_alerts() -> None:
    """A CHANGE just above 20% alerts, with the CHANGE printed %f."""
    assert two("a", "b", "x/coeff", "79.", "100.").stderr == ["21.000000% regression for x/coeff."]


@pytest.mark.parametrize("suffix", ["const", "intercept"])
def test_const_and_intercept_need_an_absolute_difference_above_two(suffix: str) -> None:
    """Names ending in const/intercept alert only if DIFF > 2 as well (2 exactly is not enough)."""
    name = f"x/N_IFoo_{suffix}"
    assert two("a", "b", name, "6.", "8.").stderr == []  # 25%, DIFF 2
    assert two("a", "b", name, "1.5", "2.").stderr == []  # 25%, DIFF 0.5
    assert two("a", "b", name, "6.", "8.5").stderr == [f"29.411765% regression for {name}."]
    assert two("a", "b", "x/N_IFoo_coeff", "1.5", "2.").stderr == [
        "25.000000% regression for x/N_IFoo_coeff."
    ]


def test_nan_last_makes_statistics_nan_and_never_alerts() -> None:
    """A nan in the last argument makes MIN/MAX/DIFF/CHANGE nan, and nan never alerts."""
    diff = two("a", "b", "x/coeff", "1.", "nan")
    assert diff.rows["x/coeff"] == "x/coeff,,nan,nan,nan,nan,,nan,1.\n"
    assert diff.stderr == []


def test_nan_followed_by_a_number_is_forgotten_by_the_ocaml_fold() -> None:
    """OCaml's min/max fold drops a nan that a later number follows (argument order)."""
    diff = gas_parameter_diff([col("a", x="1."), col("b", x="nan"), col("c", x="3.")])
    assert diff.rows["x"] == "x,,3.000000,3.000000,0.000000,0.000000,,3.,nan,1.\n"


def test_all_zero_change_is_zero() -> None:
    """A parameter that is 0 everywhere has CHANGE 0.000000 (the tool's rule), not nan."""
    diff = two("a", "b", "x/coeff", "0.", "0")
    assert diff.rows["x/coeff"] == "x/coeff,,0.000000,0.000000,0.000000,0.000000,,0,0.\n"


def test_direction_blind_and_inf() -> None:
    """A drop to 0 is a 100% 'regression'; inf is printed 'inf' and alerts nothing (nan CHANGE)."""
    assert two("a", "b", "x", "0.5", "0.").stderr == ["100.000000% regression for x."]
    diff = two("a", "b", "x", "1.", "inf")
    assert diff.rows["x"] == "x,,1.000000,inf,inf,nan,,inf,1.\n"
    assert diff.stderr == []


def test_non_numeric_text_is_printed_but_not_counted() -> None:
    """A value float() rejects is copied into the table and left out of the statistics."""
    diff = gas_parameter_diff([col("a", x="n/a", y="n/a"), col("b", x="2.", y="")])
    assert diff.rows["x"] == "x,,2.000000,2.000000,0.000000,0.000000,,2.,n/a\n"
    assert diff.rows["y"] == "y,,,,,,,,n/a\n"


def test_rows_columns_and_removed_new_order() -> None:
    """Rows: first argument's order then later-only names; columns newest first; removed/new
    compare the last two arguments only, in row order."""
    diff = gas_parameter_diff(
        [
            col("old", p="1", q="1", gone_early="1"),
            col("mid", q="1", p="1", r="1", gone="1"),
            col("new", s="1", q="1", p="1"),
        ]
    )
    assert diff.header == ",,MIN,MAX,DIFF,CHANGE (%),,new,mid,old\n"
    assert list(diff.rows) == ["p", "q", "gone_early", "r", "gone", "s"]
    assert diff.rows["gone_early"].endswith(",,,,1\n")
    assert diff.stderr == ["r is removed.", "gone is removed.", "s is new."]
    assert diff.csv == diff.header + "".join(diff.rows.values())


def test_score_and_t_value_lines_are_dropped_from_alerts() -> None:
    """legacy_alert_lines drops every stderr line containing 'score' or 'T-value', keeps others."""
    diff = gas_parameter_diff(
        [
            col("a", **{"R2_score-x": "1.", "T-value-x": "10.", "x": "1.", "T-value-y": "1."}),
            col("b", **{"R2_score-x": "0.5", "T-value-x": "1.", "x": "2."}),
        ]
    )
    assert diff.stderr == [
        "50.000000% regression for R2_score-x.",
        "90.000000% regression for T-value-x.",
        "50.000000% regression for x.",
        "T-value-y is removed.",
    ]
    assert legacy_alert_lines(diff) == ["50.000000% regression for x."]


def test_selected_rows_are_sorted_in_byte_order_and_unique() -> None:
    """selected.csv lists the flagged parameters once each, in byte order (uppercase first)."""
    history = [
        col("r1", zeta="1.", Beta="1.", alpha="1.", quiet="1."),
        col("r2", zeta="1.5", Beta="1.6", alpha="1.2", quiet="1."),
        col("r3", zeta="2.", Beta="2.", alpha="2.", quiet="1."),
    ]
    report = compare_file(
        "f.csv",
        history=history,
        newest=history[2],
        reference=history[0],
        previous=history[1],
        ref_explicit=False,
        newest_run="r3",
        reference_run="r1",
        previous_run="r2",
    )
    assert report.selected_names == ("Beta", "alpha", "zeta")
    assert report.selected == (
        report.all.header
        + report.all.rows["Beta"]
        + report.all.rows["alpha"]
        + report.all.rows["zeta"]
    )


def test_file_missing_from_the_previous_run() -> None:
    """A file absent from a compared run: newest column only, every parameter 'is new'."""
    newest = col("input_csvs/r2/f.csv", x="1.", y="0.")
    diff = compare_two(None, newest)
    assert diff.csv == (
        ",,MIN,MAX,DIFF,CHANGE (%),,input_csvs/r2/f.csv\n"
        "x,,1.000000,1.000000,0.000000,0.000000,,1.\n"
        "y,,0.000000,0.000000,0.000000,0.000000,,0.\n"
    )
    assert diff.stderr == ["x is new.", "y is new."]


def test_no_reference_or_previous_run_means_no_comparison() -> None:
    """reference_run/previous_run None: no table section, no alert block, no selection."""
    newest = col("n", x="1.")
    report = compare_file(
        "f.csv",
        history=[newest],
        newest=newest,
        reference=None,
        previous=None,
        ref_explicit=False,
        newest_run="r",
        reference_run=None,
        previous_run=None,
    )
    out = assemble([report])
    assert (report.reference, report.previous) == (None, None)
    assert out == {
        "all.csv": ",,MIN,MAX,DIFF,CHANGE (%),,n\nx,,1.000000,1.000000,0.000000,0.000000,,1.\n",
        "reference.csv": "",
        "previous.csv": "",
        "selected.csv": "",
        "alerts": "",
    }


def test_invalid_columns_are_rejected() -> None:
    """Columns with mismatched lengths or duplicate names, and an empty argument list, raise."""
    with pytest.raises(ValueError, match="2 names but 1 values"):
        Column("f", ("a", "b"), ("1",))
    with pytest.raises(ValueError, match="appears twice"):
        Column("f", ("a", "a"), ("1", "2"))
    with pytest.raises(ValueError, match="at least one column"):
        gas_parameter_diff([])


def test_assemble_orders_files_by_name_and_rejects_duplicates() -> None:
    """assemble concatenates the file sections in byte order of file name, each name once."""
    reports = [
        compare_file(
            name,
            history=[c],
            newest=c,
            reference=None,
            previous=None,
            ref_explicit=False,
            newest_run="r",
            reference_run=None,
            previous_run=None,
        )
        for name, c in [("b.csv", col("B", x="1")), ("a.csv", col("A", x="1"))]
    ]
    assert assemble(reports)["all.csv"] == reports[1].all.csv + reports[0].all.csv
    with pytest.raises(ValueError, match=r"several reports for a\.csv"):
        assemble([reports[1], reports[1]])
