"""Histories in the real snoop formats, at the scales of issue 8, on disk and in a moto bucket.

A history is written once per scale under ``<workdir>/<scale>/store/`` with the keys of the
team's bucket (``complete_results/snoop_results/<run>/SUCCESS`` and
``inference_csvs/snoop_results/<run>/*.csv``), and reused by later invocations (``history.json``,
written last, says it is complete). It is then put into a bucket of a moto server over HTTP
(``put_object`` from a thread pool: the server is the bottleneck, about 250 objects a second
on two cores), and copied into watcher caches (hard links) where a measurement starts from a
warm cache.

The content imitates the Tezos inference CSVs: two lines, ``%.12g`` numbers with a trailing
dot on whole numbers, ``nan`` in some T-values; per file, for each benchmarked function
``<ns>/N_I<Name>_coeff``, ``<ns>/N_I<Name>_const`` (or ``_intercept``), their ``T-value-``
columns and an ``R2_score-`` or ``RMSE_score-`` column. Each parameter has its own level and
multiplicative noise (0.5% to 6% for the fitted variables, more for fit-quality columns), some
coefficients are LASSO zeros, and one file in seven has a real regression (x1.5 to x5) in the
newest run or from the run before (then confirmed by the newest); the newest run also has one
parameter more in one file and one less in another, and one new file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from bench.perf.common import AWS_ENV, log

GENERATOR_VERSION = 2
COMPLETE = "complete_results/snoop_results"
INFERENCE = "inference_csvs/snoop_results"
BUCKET = "bench-perf"
PREFIX = "mclaren"


@dataclass(frozen=True)
class Scale:
    name: str
    runs: int
    files: int
    parameters: int

    def describe(self) -> str:
        return f"{self.runs} runs x {self.files} files x {self.parameters} parameters"


SCALES = {
    "toy": Scale("toy", 4, 3, 10),  # for the smoke test only
    "small": Scale("small", 20, 50, 30),
    "medium": Scale("medium", 100, 200, 40),
    "large": Scale("large", 300, 300, 60),
}

_NAMESPACES = ("interpreter", "translator", "encoding", "cache", "carbonated_map", "storage")
# fmt: off
_INSTRUCTIONS = (
    "Add_int", "Mul_int", "Sub_int", "Ediv_int", "Abs_int", "Neg_int", "Lsl_nat", "Lsr_nat",
    "Or_nat", "And_nat", "Xor_nat", "Not_int", "Compare", "Concat_string", "Concat_bytes",
    "Slice_string", "Slice_bytes", "Pack", "Unpack", "Sha256", "Blake2b", "Keccak",
    "Check_signature_ed25519", "Check_signature_secp256k1", "Check_signature_p256", "Dup",
    "Dupn", "Swap", "Push", "Drop", "Dropn", "Dig", "Dug", "Dipn", "Pair", "Unpair", "Car",
    "Cdr", "Cons_some", "Cons_none", "If_none", "If_left", "If_cons", "Map_map", "Map_iter",
    "Map_get", "Map_mem", "Map_update", "Big_map_get", "Big_map_mem", "Big_map_update",
    "Set_mem", "Set_update", "Set_iter", "List_map", "List_iter", "List_size", "Exec", "Apply",
    "Lambda", "Loop", "Loop_left", "Failwith", "Address", "Contract", "Transfer_tokens",
    "Implicit_account", "Now", "Level", "Balance", "Amount", "Chain_id", "Ticket", "Read_ticket",
    "Split_ticket", "Join_tickets", "Open_chest", "Sapling_verify_update", "Emit", "View",
    "Voting_power", "Total_voting_power",
)
# fmt: on


def run_names(count: int) -> list[str]:
    """``count`` run names, twice a week (Tuesday and Friday 20:00) from January 2023."""
    names = []
    when = datetime(2023, 1, 3, 20, 0)
    for i in range(count):
        commit = hashlib.sha1(f"commit {i}".encode()).hexdigest()[:10]
        names.append(f"_snoop_{when:%Y%m%d_%H%M}_v17.0-{120 + 37 * i}-g{commit}")
        when += timedelta(days=3 if when.weekday() == 1 else 4)
    return names


def file_names(count: int) -> list[str]:
    names = []
    for i in range(count):
        ns = _NAMESPACES[i % len(_NAMESPACES)]
        instruction = _INSTRUCTIONS[i % len(_INSTRUCTIONS)]
        names.append(f"inferred_{ns}__N_I{instruction}_{i // len(_INSTRUCTIONS)}.csv")
    return sorted(names)


def parameter_names(file: str, count: int) -> list[str]:
    """``count`` parameter names of ``file``, five per benchmarked function."""
    model = file.removeprefix("inferred_").removesuffix(".csv")
    ns, _, bench = model.partition("__")
    names: list[str] = []
    k = 0
    while len(names) < count:
        function = f"{bench}_{k}" if k else bench
        const = "intercept" if k % 4 == 3 else "const"
        names += [
            f"{ns}/{function}_coeff",
            f"{ns}/{function}_{const}",
            f"T-value-{ns}/{function}_coeff",
            f"T-value-{ns}/{function}_{const}",
            f"{'R2' if k % 2 == 0 else 'RMSE'}_score-{ns}-{function}",
        ]
        k += 1
    return names[:count]


def _series(names: list[str], runs: int, rng: Any) -> Any:
    """A ``runs x len(names)`` matrix of values: a level and a noise per parameter."""
    import numpy as np

    count = len(names)
    level = np.empty(count)
    sigma = np.empty(count)
    for j, name in enumerate(names):
        if name.startswith("T-value-"):
            level[j], sigma[j] = math.exp(rng.uniform(1.5, 6.5)), 0.12
        elif name.startswith("R2_score-"):
            level[j], sigma[j] = 1 - math.exp(rng.uniform(-9, -1.6)), 0.002
        elif name.startswith("RMSE_score-"):
            level[j], sigma[j] = math.exp(rng.uniform(0, 7)), 0.1
        elif name.endswith("_coeff"):
            level[j], sigma[j] = math.exp(rng.uniform(-7, 4)), math.exp(rng.uniform(-5.3, -2.8))
        else:  # const, intercept: a few hundred ns
            level[j], sigma[j] = rng.uniform(20, 2500), math.exp(rng.uniform(-5.3, -2.8))
    values = level * np.exp(sigma * rng.standard_normal((runs, count)))
    for j, name in enumerate(names):
        if name.startswith("R2_score-"):
            values[:, j] = np.minimum(values[:, j], 1.0)
        elif name.endswith("_coeff") and not name.startswith("T-value-") and rng.random() < 0.03:
            values[:, j] = 0.0  # a LASSO zero
        elif name.startswith("T-value-") and rng.random() < 0.02:
            values[:, j] = math.nan
    return values


def generate(scale: Scale, workdir: Path) -> Path:
    """The history of ``scale`` under ``workdir/<scale>/store`` (generated once); its root."""
    import numpy as np

    from bench.snoop import format_snoop_number

    top = workdir / scale.name
    root = top / "store"
    done = top / "history.json"
    expected = {"format": GENERATOR_VERSION, "scale": scale.__dict__}
    if done.is_file() and json.loads(done.read_text())["generator"] == expected:
        return root
    log(f"generating the {scale.name} history ({scale.describe()}) in {root}")
    if top.exists():
        shutil.rmtree(top)
    rng = np.random.default_rng(8)
    runs = run_names(scale.runs)
    files = file_names(scale.files)
    newest = len(runs) - 1
    for run in runs:
        (root / INFERENCE / run).mkdir(parents=True)
    regressions = 0
    for f, file in enumerate(files):
        names = parameter_names(file, scale.parameters)
        values = _series(names, len(runs), rng)
        if f % 7 == 3:  # a real regression of a coeff or a const, in the newest run or
            # (confirmed by the newest run) from the run before
            j = min(5 * int(rng.integers(0, max(1, len(names) // 5))) + f % 2, len(names) - 1)
            start = max(0, newest - (f // 7) % 2)
            values[start:, j] *= rng.uniform(1.5, 5.0)
            regressions += 1
        for i, run in enumerate(runs):
            row = names
            texts = [format_snoop_number(float(v)) for v in values[i]]
            if i == newest and f == 0:  # a parameter appears in the newest run
                row, texts = [*names, f"{names[0].split('/')[0]}/N_INew_coeff"], [*texts, "0.5"]
            if i == newest and f == 1:  # one disappears
                row, texts = names[:-1], texts[:-1]
            (root / INFERENCE / run / file).write_text(
                ",".join(row) + "\n" + ",".join(texts) + "\n"
            )
    new_file = "inferred_interpreter__N_INew_model.csv"  # a model new in the newest run
    names = parameter_names(new_file, min(10, scale.parameters))
    texts = [format_snoop_number(float(v)) for v in _series(names, 1, rng)[0]]
    (root / INFERENCE / runs[newest] / new_file).write_text(
        ",".join(names) + "\n" + ",".join(texts) + "\n"
    )
    for i, run in enumerate(runs):
        (root / COMPLETE / run).mkdir(parents=True)
        (root / COMPLETE / run / "SUCCESS").write_text(f"{4000 + i}\n")
    info = {"generator": expected, "runs": runs, "files": files, "regressions": regressions}
    done.write_text(json.dumps(info, indent=1) + "\n")
    return root


def runs_of(root: Path) -> list[str]:
    return sorted(p.name for p in (root / INFERENCE).iterdir())


def count_files(root: Path) -> int:
    return sum(len(os.listdir(root / INFERENCE / run)) for run in runs_of(root))


# --- the bucket ----------


def s3_client(endpoint: str, *, pool: int = 32) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        region_name=AWS_ENV["AWS_DEFAULT_REGION"],
        aws_access_key_id=AWS_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=AWS_ENV["AWS_SECRET_ACCESS_KEY"],
        config=Config(max_pool_connections=pool, retries={"mode": "standard", "max_attempts": 5}),
    )


def seed_bucket(endpoint: str, root: Path, *, csvs: bool = True, bucket: str = BUCKET) -> int:
    """Put the history under ``root`` into ``bucket``: every CSV (``csvs``) then every SUCCESS;
    returns the number of objects sent."""
    client = s3_client(endpoint)
    with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
        client.create_bucket(Bucket=bucket)
    runs = runs_of(root)
    keys = [
        f"{INFERENCE}/{run}/{name}"
        for run in runs
        for name in (sorted(os.listdir(root / INFERENCE / run)) if csvs else ())
    ]
    successes = [f"{COMPLETE}/{run}/SUCCESS" for run in runs]

    def put(key: str) -> None:
        client.put_object(Bucket=bucket, Key=f"{PREFIX}/{key}", Body=(root / key).read_bytes())

    log(f"putting {len(keys) + len(successes)} objects into s3://{bucket}/{PREFIX}")
    with ThreadPoolExecutor(16) as pool:
        for done, _ in enumerate(pool.map(put, keys), 1):
            if done % 10000 == 0:
                log(f"  {done}/{len(keys)}")
        list(pool.map(put, successes))  # each run's SUCCESS after all the CSVs
    return len(keys) + len(successes)


def store_url(bucket: str = BUCKET) -> str:
    return f"s3://{bucket}/{PREFIX}"


# --- watcher caches ----------


def fill_cache(root: Path, cache: Path, runs: list[str]) -> None:
    """``cache/<run>/`` as :class:`bench.store.cache.RunCache` leaves it, for each of ``runs``
    (hard links to the history's files: a warm cache without downloading)."""
    from bench.store.cache import MANIFEST, MANIFEST_FORMAT

    for run in runs:
        target = cache / run
        if (target / MANIFEST).is_file():
            continue
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        sizes = {}
        for name in sorted(os.listdir(root / INFERENCE / run)):
            source = root / INFERENCE / run / name
            try:
                os.link(source, target / name)
            except OSError:
                shutil.copyfile(source, target / name)
            sizes[name] = source.stat().st_size
        manifest = {"format": MANIFEST_FORMAT, "run": run, "files": sizes}
        (target / MANIFEST).write_text(json.dumps(manifest) + "\n")
