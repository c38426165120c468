"""A tiny stand-in for Tezos' `octez-snoop`: time a few functions, fit cost models, write CSVs.

Usage: ``python3 snoop_demo.py [--output DIR]`` (default ``_snoop``).

For every benchmark, each workload (one input size) is timed ``SAMPLES`` times; a sample times a
batch of calls (garbage collector off) and records nanoseconds per call. Results are written in the
snoop formats:

- ``DIR/benchmark_results/<bench>_raw.csv``: sorted feature names then ``timings`` as header, one
  row per workload with the feature values then all timing samples;
- ``DIR/inference_results/inferred_<model>.csv``: two lines, the free variables of the model's
  benchmarks (``<model>/<bench>_const`` and ``_coeff`` of ``time = const + coeff * size``, fitted
  by ordinary least squares over all samples), then ``R2_score-``, ``RMSE_score-`` and
  ``T-value-`` columns.

Like snoop, a benchmark whose raw CSV already exists is skipped, and the inference is recomputed
from the raw CSVs present. ``BENCH_DEMO_SLOWDOWN=<factor>`` makes ``interpreter/N_IConcat_string``
do its work ``factor`` times, which multiplies ``interpreter/N_IConcat_string_coeff``.

Standard library only; runs in about a second.
"""

from __future__ import annotations

import argparse
import base64
import functools
import gc
import math
import os
import random
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

SLOWDOWN_ENV = "BENCH_DEMO_SLOWDOWN"
MAX_SLOWDOWN = 100.0
SLOWED_BENCHMARK = "interpreter/N_IConcat_string"
SAMPLES = 12
BATCH_TARGET_NS = 1_000_000
SEED = "snoop-demo"

T = TypeVar("T")


class SnoopDemoError(Exception):
    """An error reported to the user as one stderr line."""


# --------------------------------------------------------------------------- the timed functions


def add_ints(operands: tuple[int, int]) -> int:
    """N_IAdd_int: add two integers."""
    return operands[0] + operands[1]


def concat_strings(parts: list[str], slowdown: float = 1.0) -> str:
    """N_IConcat_string: concatenate strings; ``slowdown`` > 1 does the work that many times."""
    result = "".join(parts)
    extra = slowdown - 1.0
    while extra >= 1.0:
        "".join(parts)
        extra -= 1.0
    if extra > 0.0:
        "".join(parts[: round(len(parts) * extra)])
    return result


def sort_list(items: list[float]) -> list[float]:
    """N_ISort_list: sort a list of floats (the input is left untouched)."""
    return sorted(items)


def encode_bytes(data: bytes) -> bytes:
    """ENCODING_bytes: base64-encode bytes."""
    return base64.b64encode(data)


def decode_bytes(text: bytes) -> bytes:
    """DECODING_bytes: base64-decode bytes."""
    return base64.b64decode(text, validate=True)


def update_cache(cache: dict[int, int]) -> dict[int, int]:
    """CACHE_UPDATE: persistent update of a cache (copy, then set one entry)."""
    updated = dict(cache)
    updated[-1] = len(cache)
    return updated


def _random_int(rng: random.Random, digits: int) -> int:
    return rng.randrange(10 ** (digits - 1), 10**digits)


# --------------------------------------------------------------------------- benchmarks


def _size_features(size: int) -> dict[str, int]:
    return {"size": size}


def _size_of(features: Mapping[str, float]) -> float:
    return features["size"]


@dataclass(frozen=True)
class Benchmark(Generic[T]):
    """A timed function, the input sizes it is timed on and how a workload is described."""

    model: str
    name: str
    sizes: tuple[int, ...]
    make_input: Callable[[random.Random, int], T]
    run: Callable[[T], object]
    features: Callable[[int], dict[str, int]] = field(default=_size_features)
    size_of: Callable[[Mapping[str, float]], float] = field(default=_size_of)

    @property
    def qualified(self) -> str:
        """``<model>/<name>``, the prefix of the benchmark's free variables."""
        return f"{self.model}/{self.name}"


def _steps(step: int, count: int = 8) -> tuple[int, ...]:
    return tuple(step * k for k in range(1, count + 1))


def benchmarks(slowdown: float = 1.0) -> list[Benchmark[Any]]:
    """All benchmarks, in run order; ``slowdown`` applies to ``SLOWED_BENCHMARK``."""
    return [
        Benchmark(
            "interpreter",
            "N_IAdd_int",
            _steps(1000),
            lambda rng, n: (_random_int(rng, n), _random_int(rng, max(1, n // 2))),
            add_ints,
            features=lambda n: {"size1": n, "size2": max(1, n // 2)},
            size_of=lambda f: max(f["size1"], f["size2"]),
        ),
        Benchmark(
            "interpreter",
            "N_IConcat_string",
            _steps(256),
            lambda rng, n: [f"{rng.randrange(10**8):08d}" for _ in range(n)],
            functools.partial(concat_strings, slowdown=slowdown),
        ),
        Benchmark(
            "interpreter",
            "N_ISort_list",
            _steps(128),
            lambda rng, n: [rng.random() for _ in range(n)],
            sort_list,
        ),
        Benchmark(
            "encoding",
            "ENCODING_bytes",
            _steps(1024),
            lambda rng, n: rng.randbytes(n),
            encode_bytes,
        ),
        Benchmark(
            "encoding",
            "DECODING_bytes",
            _steps(1024),
            lambda rng, n: base64.b64encode(rng.randbytes(n)),
            decode_bytes,
        ),
        Benchmark(
            "cache",
            "CACHE_UPDATE",
            _steps(128),
            lambda rng, n: {rng.randrange(1 << 30): i for i in range(n)},
            update_cache,
        ),
    ]


# --------------------------------------------------------------------------- measuring


@dataclass(frozen=True)
class Workload:
    """One row of a raw CSV: the workload's features and its timing samples (ns per call)."""

    features: dict[str, float]
    timings: list[float]


def _time_batch(run: Callable[[T], object], arg: T, repetitions: int) -> int:
    loop = range(repetitions)
    start = time.perf_counter_ns()
    for _ in loop:
        run(arg)
    return round((time.perf_counter_ns() - start) / repetitions)


def _batch_size(run: Callable[[T], object], arg: T) -> int:
    run(arg)  # warm-up
    per_call = max(1, _time_batch(run, arg, 10))
    return max(1, BATCH_TARGET_NS // per_call)


def measure(bench: Benchmark[T], rng: random.Random) -> list[Workload]:
    """Time ``bench`` on each of its sizes, ``SAMPLES`` batches each, garbage collector off."""
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        workloads = []
        for size in bench.sizes:
            arg = bench.make_input(rng, size)
            repetitions = _batch_size(bench.run, arg)
            timings = [_time_batch(bench.run, arg, repetitions) for _ in range(SAMPLES)]
            features = {k: float(v) for k, v in bench.features(size).items()}
            workloads.append(Workload(features, [float(t) for t in timings]))
        return workloads
    finally:
        if gc_was_enabled:
            gc.enable()


# --------------------------------------------------------------------------- fitting


@dataclass(frozen=True)
class Fit:
    """``time = const + coeff * size`` fitted by ordinary least squares, with its scores."""

    const: float
    coeff: float
    r2: float
    rmse: float
    t_const: float
    t_coeff: float


_UNDEFINED_FIT = Fit(math.nan, math.nan, math.nan, math.nan, math.nan, math.nan)


def _t_value(estimate: float, std_error: float) -> float:
    if math.isnan(estimate) or math.isnan(std_error):
        return math.nan
    if std_error == 0.0:
        return math.nan if estimate == 0.0 else math.copysign(math.inf, estimate)
    return estimate / std_error


def fit_linear(xs: Sequence[float], ys: Sequence[float]) -> Fit:
    """Closed-form OLS of ``ys`` on ``xs``; undefined (nan) values when there is no spread."""
    n = len(xs)
    if n != len(ys):
        raise ValueError(f"{n} sizes but {len(ys)} timings")
    if n == 0:
        return _UNDEFINED_FIT
    x_mean = math.fsum(xs) / n
    y_mean = math.fsum(ys) / n
    sxx = math.fsum((x - x_mean) ** 2 for x in xs)
    if sxx == 0.0:
        return _UNDEFINED_FIT
    sxy = math.fsum((x - x_mean) * (y - y_mean) for x, y in zip(xs, ys, strict=True))
    coeff = sxy / sxx
    const = y_mean - coeff * x_mean
    sse = math.fsum((y - const - coeff * x) ** 2 for x, y in zip(xs, ys, strict=True))
    sst = math.fsum((y - y_mean) ** 2 for y in ys)
    r2 = 1.0 - sse / sst if sst > 0.0 else math.nan
    rmse = math.sqrt(sse / n)
    if n > 2:
        sigma2 = sse / (n - 2)
        se_coeff = math.sqrt(sigma2 / sxx)
        se_const = math.sqrt(sigma2 * (1.0 / n + x_mean**2 / sxx))
    else:
        se_coeff = se_const = math.nan
    return Fit(const, coeff, r2, rmse, _t_value(const, se_const), _t_value(coeff, se_coeff))


def fit_benchmark(bench: Benchmark[Any], workloads: Sequence[Workload]) -> Fit:
    """Fit ``bench``'s cost model over every timing sample of ``workloads``."""
    xs: list[float] = []
    ys: list[float] = []
    for workload in workloads:
        size = bench.size_of(workload.features)
        xs.extend(size for _ in workload.timings)
        ys.extend(workload.timings)
    return fit_linear(xs, ys)


# --------------------------------------------------------------------------- the CSV formats

_WHOLE = re.compile(r"-?\d+")


def format_value(value: float) -> str:
    """Print like snoop: ``%.12g``, a trailing dot on whole numbers (``600.``), ``nan``, ``inf``."""
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    text = f"{value:.12g}"
    return text + "." if _WHOLE.fullmatch(text) else text


def raw_file_name(bench_name: str) -> str:
    """``<bench, '/' replaced by '__'>_raw.csv``."""
    return bench_name.replace("/", "__") + "_raw.csv"


def inference_file_name(model: str) -> str:
    """``inferred_<model, '/' replaced by '__'>.csv``."""
    return "inferred_" + model.replace("/", "__") + ".csv"


def _write_atomically(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


def _feature_text(value: float) -> str:
    return str(int(value)) if value.is_integer() else repr(value)


def write_raw(path: Path, workloads: Sequence[Workload]) -> None:
    """Write a raw CSV: sorted feature names then ``timings``; rows wider than the header."""
    names = sorted(workloads[0].features) if workloads else []
    lines = [",".join([*names, "timings"])]
    for workload in workloads:
        values = [_feature_text(workload.features[name]) for name in names]
        values += [str(round(t)) for t in workload.timings]
        lines.append(",".join(values))
    _write_atomically(path, "\n".join(lines) + "\n")


def read_raw(path: Path) -> list[Workload]:
    """Read a raw CSV written by ``write_raw`` (or left over by an earlier run)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines or lines[0].split(",")[-1] != "timings":
        raise SnoopDemoError(f"{path}: not a raw benchmark CSV (header must end with 'timings')")
    names = lines[0].split(",")[:-1]
    workloads = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        cells = line.split(",")
        if len(cells) <= len(names):
            raise SnoopDemoError(f"{path}:{number}: no timing sample after {len(names)} feature(s)")
        try:
            values = [float(cell) for cell in cells]
        except ValueError as error:
            raise SnoopDemoError(f"{path}:{number}: {error}") from None
        features = dict(zip(names, values[: len(names)], strict=True))
        workloads.append(Workload(features, values[len(names) :]))
    return workloads


def inference_table(model: str, fits: Sequence[tuple[Benchmark[Any], Fit]]) -> tuple[str, str]:
    """The header line and the value line of ``inferred_<model>.csv``."""
    variables: list[tuple[str, float, float]] = []
    scores: list[tuple[str, float]] = []
    for bench, fit in fits:
        variables.append((f"{bench.qualified}_const", fit.const, fit.t_const))
        variables.append((f"{bench.qualified}_coeff", fit.coeff, fit.t_coeff))
        scores.append((f"R2_score-{model}-{bench.name}", fit.r2))
        scores.append((f"RMSE_score-{model}-{bench.name}", fit.rmse))
    columns = [(name, value) for name, value, _ in variables]
    columns += scores
    columns += [(f"T-value-{name}", t_value) for name, _, t_value in variables]
    header = ",".join(name for name, _ in columns)
    values = ",".join(format_value(value) for _, value in columns)
    return header, values


# --------------------------------------------------------------------------- the program


def parse_slowdown(raw: str | None) -> float:
    """The knob's factor: unset or empty means 1; otherwise a number in [1, MAX_SLOWDOWN]."""
    if raw is None or not raw.strip():
        return 1.0
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not 1.0 <= value <= MAX_SLOWDOWN:
        raise SnoopDemoError(
            f"invalid {SLOWDOWN_ENV}={raw!r}: expected a number between 1 and "
            f"{MAX_SLOWDOWN:g} (the factor by which {SLOWED_BENCHMARK} is slowed; default 1)"
        )
    return value


def snoop(output: Path, slowdown: float) -> None:
    """Measure the benchmarks missing from ``output``, then recompute every inference CSV."""
    raw_dir = output / "benchmark_results"
    inference_dir = output / "inference_results"
    try:
        raw_dir.mkdir(parents=True, exist_ok=True)
        inference_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise SnoopDemoError(f"cannot create the output directory {output}: {error}") from None

    benches = benchmarks(slowdown)
    if slowdown != 1.0:
        print(f"{SLOWDOWN_ENV}={slowdown:g}: {SLOWED_BENCHMARK} is slowed down", flush=True)
    for index, bench in enumerate(benches, start=1):
        path = raw_dir / raw_file_name(bench.name)
        prefix = f"[{index}/{len(benches)}]"
        if path.exists():
            print(f"{prefix} skipping {bench.qualified}: {path} exists", flush=True)
            continue
        print(
            f"{prefix} {bench.qualified}: {len(bench.sizes)} workloads x {SAMPLES} samples",
            flush=True,
        )
        workloads = measure(bench, random.Random(f"{SEED}:{bench.qualified}"))
        try:
            write_raw(path, workloads)
        except OSError as error:
            raise SnoopDemoError(f"cannot write {path}: {error}") from None

    models = list(dict.fromkeys(bench.model for bench in benches))
    for model in models:
        fits = []
        for bench in (b for b in benches if b.model == model):
            path = raw_dir / raw_file_name(bench.name)
            try:
                workloads = read_raw(path)
            except OSError as error:
                raise SnoopDemoError(f"cannot read {path}: {error}") from None
            try:
                fits.append((bench, fit_benchmark(bench, workloads)))
            except KeyError as error:
                raise SnoopDemoError(f"{path}: no feature {error} in the header") from None
        header, values = inference_table(model, fits)
        path = inference_dir / inference_file_name(model)
        try:
            _write_atomically(path, f"{header}\n{values}\n")
        except OSError as error:
            raise SnoopDemoError(f"cannot write {path}: {error}") from None
    print(
        f"done: {len(benches)} raw CSVs in {raw_dir}, {len(models)} inference CSVs in "
        f"{inference_dir}",
        flush=True,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (2: bad usage, 1: failure)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--output",
        type=Path,
        default=Path("_snoop"),
        metavar="DIR",
        help="where to write the results (default: _snoop)",
    )
    args = parser.parse_args(argv)
    try:
        slowdown = parse_slowdown(os.environ.get(SLOWDOWN_ENV))
    except SnoopDemoError as error:
        print(f"snoop_demo: {error}", file=sys.stderr)
        return 2
    try:
        snoop(args.output, slowdown)
    except SnoopDemoError as error:
        print(f"snoop_demo: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
