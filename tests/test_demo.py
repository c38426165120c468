"""Tests of the embedded demo: the benchmark program, its build step and its git repository."""

from __future__ import annotations

import importlib.util
import math
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import ModuleType

import pytest

from bench.demo import (
    PROJECT_DIR,
    PROJECT_FILES,
    SLOWDOWN_ENV,
    SLOWED_FILE,
    SLOWED_PARAMETER,
    DemoError,
    demo_commands,
    ensure_demo_origin,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
SNOOP = PROJECT_DIR / "snoop_demo.py"
MODELS = ("interpreter", "encoding", "cache")
BENCHMARKS = (  # (model, benchmark), in run order
    ("interpreter", "N_IAdd_int"),
    ("interpreter", "N_IConcat_string"),
    ("interpreter", "N_ISort_list"),
    ("encoding", "ENCODING_bytes"),
    ("encoding", "DECODING_bytes"),
    ("cache", "CACHE_UPDATE"),
)
# `%.12g` with a trailing dot on whole numbers: 600. 0. -3. 0.0752 1.5e-07 1e+20 nan inf -inf
SNOOP_VALUE = re.compile(r"-?(\d+\.|\d+\.\d+|\d+(\.\d+)?e[+-]\d\d+)|nan|-?inf")
DESCRIBE = re.compile(r"v1\.0-0-g[0-9a-f]+")
MINIMAL_ENV = {"PATH": os.environ["PATH"]}


def run_snoop(
    cwd: Path, *args: str, slowdown: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the demo benchmark program in ``cwd`` with the knob set to ``slowdown`` (or unset)."""
    env = {key: value for key, value in os.environ.items() if key != SLOWDOWN_ENV}
    if slowdown is not None:
        env[SLOWDOWN_ENV] = slowdown
    return subprocess.run(
        [sys.executable, str(SNOOP), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def read_inference(path: Path) -> dict[str, str]:
    """The name -> value mapping of a two-line inference CSV."""
    header, values = path.read_text(encoding="utf-8").splitlines()
    return dict(zip(header.split(","), values.split(","), strict=True))


def git(*args: str, cwd: Path, env: Mapping[str, str] = MINIMAL_ENV) -> str:
    """Run git, fail the test on error, return its stripped stdout."""
    result = subprocess.run(
        ["git", *args], cwd=cwd, env=dict(env), capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def copy_project(destination: Path) -> Path:
    """A copy of the demo sources, as a checkout would have them."""
    destination.mkdir(parents=True)
    for name in PROJECT_FILES:
        shutil.copyfile(PROJECT_DIR / name, destination / name)
    return destination


@pytest.fixture(scope="module")
def snoop_module() -> Iterator[ModuleType]:
    """``snoop_demo.py`` imported as a module (without writing bytecode into the package)."""
    spec = importlib.util.spec_from_file_location("snoop_demo", SNOOP)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    dont_write, sys.dont_write_bytecode = sys.dont_write_bytecode, True
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.dont_write_bytecode = dont_write
        del sys.modules[spec.name]


@pytest.fixture(scope="module")
def normal_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One knob-less run of the program: its output directory and its stdout."""
    cwd = tmp_path_factory.mktemp("normal")
    result = run_snoop(cwd)
    assert result.returncode == 0, result.stderr
    return cwd / "_snoop", result.stdout


@pytest.fixture(scope="module")
def demo_origin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A demo origin created from a process whose environment is only PATH (like cron)."""
    origin = tmp_path_factory.mktemp("origin-parent") / "demo-origin"
    code = "import sys; from pathlib import Path; from bench.demo import ensure_demo_origin as e; "
    code += "e(Path(sys.argv[1]))"
    result = subprocess.run(
        [sys.executable, "-c", code, str(origin)],
        cwd=REPO_ROOT,
        env=MINIMAL_ENV,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return origin


# --------------------------------------------------------------------------- the program


def test_run_prints_one_progress_line_per_benchmark(normal_run: tuple[Path, str]) -> None:
    """A run prints `[i/6] model/bench: ...` for each benchmark, then where the results are."""
    _, stdout = normal_run
    lines = stdout.splitlines()
    assert [line.split(":")[0] for line in lines[:-1]] == [
        f"[{i}/6] {model}/{bench}" for i, (model, bench) in enumerate(BENCHMARKS, start=1)
    ]
    assert all(line.endswith(" workloads x 12 samples") for line in lines[:-1])
    assert str(Path("_snoop", "inference_results")) in lines[-1]


def test_inference_csvs_are_two_lines_of_snoop_values(normal_run: tuple[Path, str]) -> None:
    """Each model's inference CSV is header + values of equal width, in the snoop number format."""
    output, _ = normal_run
    files = sorted((output / "inference_results").iterdir())
    assert [f.name for f in files] == sorted(f"inferred_{model}.csv" for model in MODELS)
    for path in files:
        text = path.read_text(encoding="utf-8")
        assert text.endswith("\n") and '"' not in text
        header, values = text.splitlines()
        names, cells = header.split(","), values.split(",")
        assert len(names) == len(cells)
        assert [c for c in cells if not SNOOP_VALUE.fullmatch(c)] == []
        model = path.stem.removeprefix("inferred_")
        for prefix in ("R2_score-", "RMSE_score-", "T-value-"):
            assert any(
                n.startswith(prefix + ("" if prefix == "T-value-" else model)) for n in names
            )
        assert any(n.endswith("_const") for n in names)
        assert any(n.endswith("_coeff") for n in names)


def test_slowed_parameter_is_in_slowed_file(normal_run: tuple[Path, str]) -> None:
    """SLOWED_PARAMETER is a positive coefficient of SLOWED_FILE, with its T-value."""
    output, _ = normal_run
    inferred = read_inference(output / "inference_results" / SLOWED_FILE)
    assert float(inferred[SLOWED_PARAMETER]) > 0
    assert f"T-value-{SLOWED_PARAMETER}" in inferred


def test_raw_csvs_have_timings_header_and_wider_rows(normal_run: tuple[Path, str]) -> None:
    """Raw CSVs: sorted features then `timings`; rows hold features then all integer samples."""
    output, _ = normal_run
    files = sorted((output / "benchmark_results").iterdir())
    assert [f.name for f in files] == sorted(f"{bench}_raw.csv" for _, bench in BENCHMARKS)
    for path in files:
        header, *rows = path.read_text(encoding="utf-8").splitlines()
        names = header.split(",")
        assert names[-1] == "timings" and names[:-1] == sorted(names[:-1])
        assert len(rows) >= 6
        for row in rows:
            cells = row.split(",")
            assert len(cells) > len(names) + 5
            assert all(cell.isdigit() for cell in cells)


def test_the_slowdown_knob_is_wired_into_the_slowed_benchmark_only(
    snoop_module: ModuleType,
) -> None:
    """benchmarks(6) gives N_IConcat_string the factor 6 and no other benchmark a factor."""
    import functools

    for bench in snoop_module.benchmarks(6.0):
        run = bench.run
        factor = run.keywords.get("slowdown") if isinstance(run, functools.partial) else None
        assert factor == (6.0 if bench.name == "N_IConcat_string" else None), bench.name


def test_the_slowed_function_really_does_the_work_factor_times(snoop_module: ModuleType) -> None:
    """concat_strings(parts, 6) takes several times as long as with 1: the minimum of repeated
    timings (load only ever slows a measurement down) differs by far more than noise."""
    import time

    parts = [f"{i:08d}" for i in range(20_000)]

    def fastest(slowdown: float) -> float:
        best = math.inf
        for _ in range(15):
            start = time.perf_counter()
            snoop_module.concat_strings(parts, slowdown)
            best = min(best, time.perf_counter() - start)
        return best

    assert snoop_module.concat_strings(parts, 6.0) == "".join(parts)
    assert fastest(6.0) >= 3 * fastest(1.0)


@pytest.mark.parametrize("value", ["abc", "0.5", "-2", "inf", "nan", "1000"])
def test_invalid_slowdown_exits_2_naming_the_variable(tmp_path: Path, value: str) -> None:
    """An invalid knob value exits 2 with one stderr line naming the variable and the value."""
    result = run_snoop(tmp_path, slowdown=value)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert SLOWDOWN_ENV in result.stderr and repr(value) in result.stderr
    assert not (tmp_path / "_snoop").exists()


def test_leftover_raw_csv_is_skipped_and_reused(tmp_path: Path) -> None:
    """A raw CSV already in the output is not re-measured, and its content feeds the inference."""
    raw_dir = tmp_path / "out" / "benchmark_results"
    raw_dir.mkdir(parents=True)
    leftover = raw_dir / "N_IConcat_string_raw.csv"
    leftover.write_text("size,timings\n100,1000,1000\n200,2000,2000\n", encoding="utf-8")

    result = run_snoop(tmp_path, "--output", "out")

    assert result.returncode == 0, result.stderr
    shown = Path("out", "benchmark_results", leftover.name)
    assert f"skipping interpreter/N_IConcat_string: {shown} exists" in result.stdout
    assert leftover.read_text(encoding="utf-8").count("\n") == 3
    inferred = read_inference(tmp_path / "out" / "inference_results" / SLOWED_FILE)
    assert inferred["interpreter/N_IConcat_string_const"] == "0."
    assert inferred[SLOWED_PARAMETER] == "10."
    assert inferred["R2_score-interpreter-N_IConcat_string"] == "1."
    assert inferred["RMSE_score-interpreter-N_IConcat_string"] == "0."
    assert inferred["T-value-interpreter/N_IConcat_string_const"] == "nan"
    assert inferred[f"T-value-{SLOWED_PARAMETER}"] == "inf"
    assert inferred["interpreter/N_IAdd_int_coeff"] != "nan"


def test_unwritable_output_exits_nonzero_with_message(tmp_path: Path) -> None:
    """An output path that cannot be created fails fast with a message naming it."""
    (tmp_path / "a-file").write_text("", encoding="utf-8")
    result = run_snoop(tmp_path, "--output", "a-file/out")
    assert result.returncode == 1
    assert "a-file/out" in result.stderr and result.stdout == ""


# --------------------------------------------------------------------------- formatting, fitting


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (600.0, "600."),
        (0.0, "0."),
        (-3.0, "-3."),
        (0.0752, "0.0752"),
        (1.5e-7, "1.5e-07"),
        (1e-7, "1e-07"),
        (1e20, "1e+20"),
        (123456789012.0, "123456789012."),
        (2.0 / 3.0, "0.666666666667"),
        (math.nan, "nan"),
        (math.inf, "inf"),
        (-math.inf, "-inf"),
    ],
)
def test_format_value_matches_snoop(snoop_module: ModuleType, value: float, text: str) -> None:
    """Values print as `%.12g`, whole numbers with a trailing dot, nan/inf spelled out."""
    assert snoop_module.format_value(value) == text
    assert SNOOP_VALUE.fullmatch(text)


def test_fit_linear_matches_hand_computed_ols(snoop_module: ModuleType) -> None:
    """OLS on (1,1) (2,3) (3,2): const 1, coeff 0.5, R2 0.25, RMSE sqrt(.5), T-values by hand."""
    fit = snoop_module.fit_linear([1.0, 2.0, 3.0], [1.0, 3.0, 2.0])
    expected = (1.0, 0.5, 0.25, math.sqrt(0.5), 1 / math.sqrt(3.5), 0.5 / math.sqrt(0.75))
    actual = (fit.const, fit.coeff, fit.r2, fit.rmse, fit.t_const, fit.t_coeff)
    assert actual == pytest.approx(expected)


def test_fit_linear_without_spread_is_undefined(snoop_module: ModuleType) -> None:
    """A single input size (or no data) leaves every fitted value undefined (nan)."""
    for xs, ys in (([5.0, 5.0], [1.0, 2.0]), ([], [])):
        fit = snoop_module.fit_linear(xs, ys)
        assert all(math.isnan(v) for v in (fit.const, fit.coeff, fit.r2, fit.t_coeff))


# --------------------------------------------------------------------------- the build step


def test_build_compiles_the_project(tmp_path: Path) -> None:
    """build.py exits 0 on the shipped sources."""
    project = copy_project(tmp_path / "project")
    result = subprocess.run(
        [sys.executable, "build.py"], cwd=project, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_build_fails_on_a_syntax_error(tmp_path: Path) -> None:
    """build.py exits non-zero, naming the file, when snoop_demo.py does not compile."""
    project = copy_project(tmp_path / "project")
    with (project / "snoop_demo.py").open("a", encoding="utf-8") as source:
        source.write("\ndef broken(:\n")
    result = subprocess.run(
        [sys.executable, "build.py"], cwd=project, capture_output=True, text=True, check=False
    )
    assert result.returncode != 0
    assert "snoop_demo.py" in result.stderr


# --------------------------------------------------------------------------- the git repository


def test_demo_commands_run_build_then_snoop() -> None:
    """demo_commands gives the build argv and the benchmark argv writing to _snoop."""
    assert demo_commands("py") == (
        ["py", "build.py"],
        ["py", "snoop_demo.py", "--output", "_snoop"],
    )


def test_origin_clone_describes_as_v1_0(demo_origin: Path, tmp_path: Path) -> None:
    """A clone of the origin (made under a PATH-only environment) describes as v1.0-0-g<hash>."""
    git("clone", "--quiet", str(demo_origin), "clone", cwd=tmp_path)
    clone = tmp_path / "clone"
    assert DESCRIBE.fullmatch(git("describe", "--always", "--dirty", "--long", cwd=clone))
    assert git("rev-parse", "--abbrev-ref", "HEAD", cwd=clone) == "master"
    assert sorted(p.name for p in clone.iterdir() if p.name != ".git") == sorted(PROJECT_FILES)


def test_origin_creation_is_idempotent(demo_origin: Path) -> None:
    """A second ensure_demo_origin returns the same repository untouched (same HEAD, clean)."""
    head = git("rev-parse", "HEAD", cwd=demo_origin)
    assert ensure_demo_origin(demo_origin) == demo_origin
    assert git("rev-parse", "HEAD", cwd=demo_origin) == head
    assert git("status", "--porcelain", cwd=demo_origin) == ""


def test_origin_refuses_a_non_repository_directory(tmp_path: Path) -> None:
    """An existing non-empty directory that is not a repository is left alone: DemoError."""
    (tmp_path / "origin").mkdir()
    (tmp_path / "origin" / "precious.txt").write_text("keep me", encoding="utf-8")
    with pytest.raises(DemoError, match="not a git repository"):
        ensure_demo_origin(tmp_path / "origin")
    assert [p.name for p in (tmp_path / "origin").iterdir()] == ["precious.txt"]


def test_missing_git_raises_demo_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without git on PATH, DemoError says so and no half-made origin is left behind."""
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.raises(DemoError, match="git"):
        ensure_demo_origin(tmp_path / "origin")
    assert list(tmp_path.iterdir()) == []
