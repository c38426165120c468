"""``python -m bench.perf upload``: the project's upload against ``aws s3 cp --recursive``.

Both upload the same run directory (300 inference CSVs and 200 raw benchmark CSVs of about
200 KB, as on the Tezos reference host) to a moto S3 server running in its own process on
127.0.0.1, alternately, into fresh buckets; then the project re-uploads the unchanged run.
The old way is what run_all_benchmarks_on_latest_master.sh did: two ``aws s3 cp
--recursive`` (the whole run, then the inference CSVs) and one ``aws s3 cp`` of SUCCESS.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

OLD_UPLOAD_REFERENCE_S = 5.4  # issue 8's table, measured on this kind of machine
RUN = "_snoop_20260101_2000_v1.0-0-gabcdef0"


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


def _row(name: str, samples: list[float], reference: float | None = None) -> str:
    med = statistics.median(samples)
    ratio = f"{med / reference:6.2f}x" if reference else "     -"
    return f"| {name:<44} | {med:8.2f} | {min(samples):8.2f} | {max(samples):8.2f} | {ratio} |"


def bench_upload(repeat: int) -> int:
    from bench.runs import parse_run_name
    from bench.store.s3 import S3Store, make_client
    from bench.testing.s3server import S3Server

    env = {**os.environ, **S3Server.credentials_env()}
    os.environ.update(S3Server.credentials_env())
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.testing.s3server"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        endpoint = server.stdout.readline().strip()
        admin = make_client(endpoint_url=endpoint)
        aws = shutil.which("aws")
        with tempfile.TemporaryDirectory() as tmp:
            run_dir = make_run(Path(tmp))
            files = sum(1 for p in run_dir.rglob("*") if p.is_file())
            size = sum(p.stat().st_size for p in run_dir.rglob("*") if p.is_file())
            print(f"run directory: {files} files, {size / 1e6:.1f} MB; S3: moto at {endpoint}")
            run = parse_run_name(RUN)
            ours: list[float] = []
            again: list[float] = []
            old: list[float] = []
            for i in range(repeat):
                bucket = f"ours-{i}"
                admin.create_bucket(Bucket=bucket)
                store = S3Store(make_client(endpoint_url=endpoint), bucket, "mclaren")

                def upload(store: S3Store = store) -> None:
                    store.upload_run(run_dir, run, success_text="1\n")

                ours.append(_timed(upload))
                again.append(_timed(upload))
                if aws:
                    bucket = f"aws-{i}"
                    admin.create_bucket(Bucket=bucket)

                    def old_way(bucket: str = bucket, aws: str = aws) -> None:
                        _aws_upload(aws, endpoint, bucket, run_dir, env)

                    old.append(_timed(old_way))
                print(
                    f"  round {i + 1}/{repeat}: ours {ours[-1]:.2f} s, re-upload "
                    f"{again[-1]:.2f} s" + (f", aws {old[-1]:.2f} s" if old else ""),
                    file=sys.stderr,
                )
    finally:
        server.terminate()
        server.wait(timeout=30)

    reference = statistics.median(old) if old else OLD_UPLOAD_REFERENCE_S
    print()
    print(f"| upload of one run ({repeat} rounds, seconds) | median | min | max | vs old |")
    print("|---|---|---|---|---|")
    if old:
        print(_row("old: aws s3 cp --recursive x2 + SUCCESS", old, reference))
    else:
        print(
            f"| old: aws s3 cp (not on PATH: `pip install awscli`; issue 8's figure) "
            f"| {reference:.2f} | | | 1.00x |"
        )
    print(_row("ours: upload_run (verified, SUCCESS last)", ours, reference))
    print(_row("ours: re-upload of the unchanged run", again, reference))
    print(
        f"\nratio upload ours/old = {statistics.median(ours) / reference:.2f} (target <= 1.0); "
        f"re-upload/first upload = {statistics.median(again) / statistics.median(ours):.2f} "
        "(target < 0.10)"
    )
    return 0


def _aws_upload(aws: str, endpoint: str, bucket: str, run_dir: Path, env: dict[str, str]) -> None:
    base = f"s3://{bucket}/mclaren"
    common = ["--endpoint-url", endpoint, "--only-show-errors"]
    commands = [
        [
            aws,
            "s3",
            "cp",
            str(run_dir),
            f"{base}/complete_results/snoop_results/{RUN}/",
            "--recursive",
            *common,
        ],
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
        [
            aws,
            "s3",
            "cp",
            str(run_dir / "STARTED"),
            f"{base}/complete_results/snoop_results/{RUN}/SUCCESS",
            *common,
        ],
    ]
    for command in commands:
        subprocess.run(command, check=True, env=env)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.perf",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="what", required=True)
    upload = sub.add_parser("upload", help="upload of one run vs aws s3 cp --recursive")
    upload.add_argument("--repeat", type=int, default=5, help="rounds (default 5)")
    args = parser.parse_args(argv)
    return bench_upload(args.repeat)


if __name__ == "__main__":
    raise SystemExit(main())
