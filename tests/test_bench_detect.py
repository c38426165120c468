"""``bench-detect`` end to end, in a subprocess, on each form of results tree."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench.evaluation.synthetic import run_names
from bench.snoop import format_snoop_number
from tests.conftest import clean_env

BENCH_DETECT = Path(sys.executable).parent / "bench-detect"
RUNS = run_names(25)
STEP_FILE = "inferred_interpreter.csv"
STEP_PARAMETER = "interpreter/N_IAdd_int_coeff"
CONTRACT = {
    "run",
    "file",
    "parameter",
    "direction",
    "kind",
    "magnitude_pct",
    "baseline",
    "value",
    "score",
    "reason",
}


def history() -> dict[str, dict[str, dict[str, float]]]:
    """{run: {file: {parameter: value}}}: 3 files of 4 parameters over 25 runs, 1% noise;
    interpreter/N_IAdd_int_coeff up 50% from run 15; a renamed parameter in cache.csv."""
    rng = np.random.default_rng(42)
    out: dict[str, dict[str, dict[str, float]]] = {}
    for i, run in enumerate(RUNS):
        files: dict[str, dict[str, float]] = {}
        for name, model in ((STEP_FILE, "interpreter"), ("inferred_cache.csv", "cache")):
            values = {}
            for j, op in enumerate(("N_IAdd_int", "N_ISub_int", "N_IMul_int", "N_IDiv_int")):
                parameter = f"{model}/{op}_coeff"
                if model == "cache" and op == "N_IDiv_int" and i < 10:
                    parameter = f"{model}/N_IOld_int_coeff"
                level = 10.0 * (j + 1)
                if parameter == STEP_PARAMETER and i >= 15:
                    level *= 1.5
                values[parameter] = level * (1 + 0.01 * rng.standard_normal())
            values[f"{model}/intercept"] = 300 + rng.standard_normal()
            values[f"R2_score-{model}-bench"] = rng.random()
            files[name] = values
        out[run] = files
    return out


def write_csv(path: Path, values: dict[str, float]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    names = ",".join(values)
    numbers = ",".join(format_snoop_number(v) for v in values.values())
    path.write_text(f"{names}\n{numbers}\n", encoding="utf-8")


def write_runs(top: Path, *, inference_subdir: bool, success: bool = False) -> Path:
    for run, files in history().items():
        directory = top / run / "inference_results" if inference_subdir else top / run
        for name, values in files.items():
            write_csv(directory / name, values)
        if success:
            (top / run / "SUCCESS").write_text("1234\n")
    return top


def write_long(path: Path) -> Path:
    lines = ["run,file,parameter,value"]
    for run, files in history().items():
        for name, values in files.items():
            lines += [f"{run},{name},{p},{format_snoop_number(v)}" for p, v in values.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def bench_detect(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BENCH_DETECT), *map(str, args)],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def renamings(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("renamings") / "renamings.csv"
    path.write_text("# new_name,old_name\ncache/N_IDiv_int_coeff,cache/N_IOld_int_coeff\n")
    return path


@pytest.fixture(scope="module")
def expected(tmp_path_factory: pytest.TempPathFactory, renamings: Path) -> list[dict[str, object]]:
    top = write_runs(tmp_path_factory.mktemp("runs"), inference_subdir=True)
    result = bench_detect(
        "--history", top, "--online", "--format", "json", "--renamings", renamings
    )
    assert result.returncode == 0, result.stderr
    data: list[dict[str, object]] = json.loads(result.stdout)
    return data


def test_json_lists_the_step_with_the_contract_fields(expected: list[dict[str, object]]) -> None:
    """--online --format json prints one JSON list; the +50% step is one regression at the
    run after it appears, with every contract field and the CSV's base name as file."""
    steps = [a for a in expected if a["kind"] == "step"]
    assert [(a["run"], a["file"], a["parameter"], a["direction"]) for a in steps] == [
        (RUNS[16], STEP_FILE, STEP_PARAMETER, "regression")
    ]
    assert set(steps[0]) >= CONTRACT
    assert steps[0]["magnitude_pct"] == pytest.approx(50, abs=4)
    assert isinstance(steps[0]["reason"], str) and steps[0]["reason"].startswith("up ")
    assert all(a["kind"] not in ("new_parameter", "removed_parameter") for a in expected)


@pytest.mark.parametrize("form", ["runs-flat", "work-directory", "store-root", "long-csv"])
def test_every_form_of_history_gives_the_same_alerts(
    form: str, tmp_path: Path, renamings: Path, expected: list[dict[str, object]]
) -> None:
    """A directory of runs (<run>/*.csv), a work directory (snoop_results/, unfinished runs
    skipped), a store root (inference_csvs/snoop_results/) and a long CSV: same alerts."""
    if form == "runs-flat":
        path = write_runs(tmp_path, inference_subdir=False)
    elif form == "work-directory":
        write_runs(tmp_path / "snoop_results", inference_subdir=True, success=True)
        unfinished = tmp_path / "snoop_results" / "_snoop_29990101_2000_v9-9-gdeadbee"
        write_csv(unfinished / "inference_results" / STEP_FILE, {STEP_PARAMETER: 999.0})
        path = tmp_path
    elif form == "store-root":
        write_runs(tmp_path / "inference_csvs" / "snoop_results", inference_subdir=False)
        path = tmp_path
    else:
        path = write_long(tmp_path / "history.csv")
    result = bench_detect(
        "--history", path, "--online", "--format", "json", "--renamings", renamings
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == expected
    assert "history: 25 runs" in result.stderr
    if form == "work-directory":
        assert "_snoop_29990101_2000_v9-9-gdeadbee has no SUCCESS" in result.stderr


def test_without_online_only_the_newest_runs_alerts(tmp_path: Path) -> None:
    """Without --online, the alerts raised at the newest run only (here: none)."""
    top = write_runs(tmp_path, inference_subdir=True)
    result = bench_detect("--history", top, "--format", "json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []
    first = bench_detect("--history", top, "--format", "json", "--first-dir", RUNS[0])
    assert json.loads(first.stdout) == []


def test_an_unreadable_csv_is_reported_and_the_rest_analysed(tmp_path: Path) -> None:
    """A broken CSV: a warning naming the file, the line and the reason on stderr; exit 0;
    the step in another file is still found."""
    top = write_runs(tmp_path, inference_subdir=True)
    broken = top / RUNS[7] / "inference_results" / "inferred_cache.csv"
    broken.write_text("cache/N_IAdd_int_coeff,cache/intercept\n1.5,abc\n")
    result = bench_detect("--history", top, "--online", "--format", "json")
    assert result.returncode == 0, result.stderr
    assert f"{RUNS[7]}/inferred_cache.csv: line 2:" in result.stderr
    assert "'abc'" in result.stderr and "not a number" in result.stderr
    alerts = json.loads(result.stdout)
    assert any(a["kind"] == "step" and a["parameter"] == STEP_PARAMETER for a in alerts)


def test_text_csv_and_legacy_outputs(tmp_path: Path) -> None:
    """--format text and csv print the same alerts; --detector legacy uses the 20% rule."""
    path = write_long(tmp_path / "history.csv")
    text = bench_detect("--history", path, "--online", "--format", "text")
    assert text.returncode == 0, text.stderr
    assert f"{RUNS[16]}  REGRESSION (step)  {STEP_FILE} {STEP_PARAMETER}: up" in text.stdout
    csv = bench_detect("--history", path, "--online", "--format", "csv")
    assert csv.stdout.splitlines()[0].startswith("run,file,parameter,direction,kind")
    legacy = bench_detect("--history", path, "--online", "--format", "json", "--detector", "legacy")
    assert legacy.returncode == 0, legacy.stderr
    changes = [a for a in json.loads(legacy.stdout) if a["kind"] == "step"]
    assert {(a["run"], a["parameter"]) for a in changes} >= {(RUNS[15], STEP_PARAMETER)}
    assert all("20%" in a["reason"] for a in changes)


def test_config_file_sets_the_detector(tmp_path: Path) -> None:
    """--config [detect] settings apply (a relative floor above the step silences it); a bad
    key is a usage error naming it."""
    path = write_long(tmp_path / "history.csv")
    config = tmp_path / "detect.toml"
    config.write_text("[detect]\nrelative_floor = 0.6\n")
    result = bench_detect("--history", path, "--online", "--format", "json", "--config", config)
    assert result.returncode == 0, result.stderr
    assert [a for a in json.loads(result.stdout) if a["kind"] == "step"] == []
    config.write_text("[detect]\nrelative_flor = 0.6\n")
    bad = bench_detect("--history", path, "--config", config)
    assert bad.returncode == 2
    assert "relative_flor" in bad.stderr


def test_usage_errors_exit_2_naming_the_path(tmp_path: Path) -> None:
    """A missing path, an empty directory, an unknown --first-dir: exit 2 with a message that
    names the path or the run; stdout stays empty."""
    missing = tmp_path / "nowhere"
    result = bench_detect("--history", missing)
    assert result.returncode == 2
    assert str(missing) in result.stderr and result.stdout == ""
    empty = tmp_path / "empty"
    empty.mkdir()
    result = bench_detect("--history", empty)
    assert result.returncode == 2 and str(empty) in result.stderr
    path = write_long(tmp_path / "history.csv")
    result = bench_detect("--history", path, "--first-dir", "_snoop_20000101_0000_x")
    assert result.returncode == 2 and "_snoop_20000101_0000_x" in result.stderr
    assert bench_detect("--format", "yaml", "--history", path).returncode == 2


def test_help_explains_the_contract() -> None:
    """--help exits 0 and lists the PATH forms, the detectors and the exit status."""
    result = bench_detect("--help")
    assert result.returncode == 0
    for text in ("inference_csvs/snoop_results", "run,file,parameter,value", "--online", "legacy"):
        assert text in result.stdout


def test_main_is_callable_without_a_subprocess(capsys: pytest.CaptureFixture[str]) -> None:
    """main(argv) returns the exit code (2 for a usage error) instead of exiting."""
    from bench.cli.bench_detect import main

    assert main(["--history", "/nonexistent/path/xyz"]) == 2
    assert "/nonexistent/path/xyz" in capsys.readouterr().err
