"""The upload of one run: the project's ``upload_run`` against ``aws s3 cp --recursive``.

Both upload the same run directory (300 inference CSVs and 200 raw benchmark CSVs of about
200 KB, as on the Tezos reference host) to a moto S3 server running in its own process on
127.0.0.1, alternately, into fresh buckets; then the project re-uploads the unchanged run.
The old way is what run_all_benchmarks_on_latest_master.sh did: two ``aws s3 cp
--recursive`` (the whole run, then the inference CSVs) and one ``aws s3 cp`` of SUCCESS.
"""

from __future__ import annotations

import os
import random
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.perf.common import AWS_ENV, Section, ServerProcess, aws_cli, log, ratio, stats, verdict

OLD_UPLOAD_REFERENCE_S = 5.4  # issue 8's table, measured on this kind of machine
RUN = "_snoop_20260101_2000_v1.0-0-gabcdef0"
#: (inference CSVs, raw CSVs, bytes per raw CSV): the Tezos shape, and a toy one for tests.
SHAPES = {"toy": (6, 4, 2_000), "default": (300, 200, 200_000)}


def make_run(top: Path, *, inference: int = 300, raw: int = 200, raw_bytes: int = 200_000) -> Path:
    """A run directory of the Tezos shape, with deterministic content."""
    run_dir = top / RUN
    rng = random.Random(7)
    (run_dir / "inference_results").mkdir(parents=True)
    (run_dir / "benchmark_results").mkdir()
    for i in range(inference):
        (run_dir / "inference_results" / f"inferred_model{i:03d}.csv").write_text(
            f"m/N_I_const,m/N_I_coeff\n{rng.randint(1, 900)}.,{rng.random():.9g}\n"
        )
    for i in range(raw):
        line = ",".join(str(rng.randint(100, 99999)) for _ in range(40)) + "\n"
        count = raw_bytes // len(line) + 1
        (run_dir / "benchmark_results" / f"bench{i:03d}_raw.csv").write_text(
            "size,timings\n" + line * count
        )
    (run_dir / "STARTED").write_text("1\n")
    return run_dir


def _timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def upload(rounds: int, *, shape: str = "default") -> Section:
    from bench.runs import parse_run_name
    from bench.store.s3 import S3Store, make_client

    env = {**os.environ, **AWS_ENV}
    os.environ.update(AWS_ENV)
    inference, raw, raw_bytes = SHAPES[shape]
    aws = aws_cli()
    ours: list[float] = []
    again: list[float] = []
    old: list[float] = []
    with (
        ServerProcess("bench.testing.s3server", env=env) as server,
        tempfile.TemporaryDirectory() as tmp,
    ):
        endpoint = server.url
        admin = make_client(endpoint_url=endpoint)
        run_dir = make_run(Path(tmp), inference=inference, raw=raw, raw_bytes=raw_bytes)
        files = [p for p in run_dir.rglob("*") if p.is_file()]
        size = sum(p.stat().st_size for p in files)
        log(f"run directory: {len(files)} files, {size / 1e6:.1f} MB; S3: moto at {endpoint}")
        run = parse_run_name(RUN)
        for i in range(rounds):
            bucket = f"ours-{i}"
            admin.create_bucket(Bucket=bucket)
            store = S3Store(make_client(endpoint_url=endpoint), bucket, "mclaren")

            def upload_once(store: S3Store = store) -> None:
                store.upload_run(run_dir, run, success_text="1\n")

            ours.append(_timed(upload_once))
            again.append(_timed(upload_once))
            if aws:
                bucket = f"aws-{i}"
                admin.create_bucket(Bucket=bucket)

                def old_way(bucket: str = bucket, aws: str = aws) -> None:
                    _aws_upload(aws, endpoint, bucket, run_dir, env)

                old.append(_timed(old_way))
            log(
                f"  upload {i + 1}/{rounds}: ours {ours[-1]:.2f} s, re-upload {again[-1]:.2f} s"
                + (f", aws {old[-1]:.2f} s" if old else "")
            )

    reference = stats(old).median if old else OLD_UPLOAD_REFERENCE_S
    first = stats(ours)
    section = Section(
        "upload",
        f"Upload of one run ({len(files)} files, {size / 1e6:.0f} MB), {rounds} rounds",
        ["what", "median s", "min s", "max s", "vs old", "target", "verdict"],
    )
    if old:
        section.add("old: aws s3 cp --recursive x2 + SUCCESS", *stats(old).cells(), "1.00x")
    else:
        section.add(
            "old: aws s3 cp (not measured: issue 8's figure)", f"{reference:.2f}", "", "", "1.00x"
        )
    up = first.median / reference
    section.add(
        "ours: upload_run (verified, SUCCESS last)",
        *first.cells(),
        ratio(first.median, reference),
        "<= 1.0x old",
        verdict(up, 1.0),
    )
    re_up = stats(again).median / first.median
    section.add(
        "ours: re-upload of the unchanged run",
        *stats(again).cells(),
        ratio(stats(again).median, reference),
        "<= 0.1x the upload",
        f"{re_up:.2f}x: " + verdict(re_up, 0.1),
    )
    return section


def _aws_upload(aws: str, endpoint: str, bucket: str, run_dir: Path, env: dict[str, str]) -> None:
    base = f"s3://{bucket}/mclaren"
    common = ["--endpoint-url", endpoint, "--only-show-errors"]
    complete = f"{base}/complete_results/snoop_results/{RUN}/"
    commands = [
        [aws, "s3", "cp", str(run_dir), complete, "--recursive", *common],
        [
            aws,
            "s3",
            "cp",
            str(run_dir / "inference_results"),
            f"{base}/inference_csvs/snoop_results/{RUN}/",
            "--recursive",
            "--exclude",
            "*",
            "--include",
            "*.csv",
            *common,
        ],
        [aws, "s3", "cp", str(run_dir / "STARTED"), f"{complete}SUCCESS", *common],
    ]
    for command in commands:
        subprocess.run(command, check=True, env=env)
