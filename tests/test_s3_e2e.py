"""End to end with S3: `cronjob` (a subprocess) uploads to moto's server over HTTP.

What arrived is checked through a separate boto3 client; the server's request log counts
requests and bytes, and its middleware injects faults (HTTP 500, slow answers).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from bench.errors import ExitCode
from bench.testing.s3server import Fault, Request, S3Server
from tests.conftest import Host, clean_env

pytestmark = pytest.mark.slow

PREFIX = "mclaren"

#: A benchmark step writing a run of the size of issue 3's benchmark: 300 inference CSVs and
#: 200 raw CSVs of about 200 KB (about 40 MB).
BIG_RUN = """
import os, random
out = "_snoop"
os.makedirs(f"{out}/inference_results"); os.makedirs(f"{out}/benchmark_results")
rng = random.Random(42)
for i in range(300):
    with open(f"{out}/inference_results/inferred_model{i:03d}.csv", "w") as fh:
        fh.write("m/p_const,m/p_coeff\\n%d.,%.6f\\n" % (rng.randint(1, 900), rng.random()))
for i in range(200):
    with open(f"{out}/benchmark_results/bench{i:03d}_raw.csv", "w") as fh:
        fh.write("size,timings\\n")
        while fh.tell() < 200_000:
            fh.write(",".join(str(rng.randint(100, 99999)) for _ in range(40)) + "\\n")
"""


def configure_s3(host: Host, s3: S3Server, bucket: str, **reference: Any) -> None:
    host.configure(
        store={
            "url": f"s3://{bucket}/{PREFIX}",
            "endpoint_url": s3.endpoint,
            "max_attempts": 3,
        },
        **reference,
    )


def s3_env(**extra: str) -> dict[str, str]:
    return clean_env(**S3Server.credentials_env(), **extra)


def stored(s3: S3Server, bucket: str) -> dict[str, int]:
    """Every key of the bucket with its size, through a separate client."""
    client = s3.client()
    found: dict[str, int] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", ()):
            found[obj["Key"]] = obj["Size"]
    return found


def expected_keys(run_dir: Path) -> set[str]:
    run = run_dir.name
    keys = set()
    for path in run_dir.rglob("*"):
        rel = path.relative_to(run_dir).as_posix()
        if path.is_file() and not rel.startswith(("cron_res", "steps/05-", "steps/06-")):
            keys.add(f"{PREFIX}/complete_results/snoop_results/{run}/{rel}")
    for path in (run_dir / "inference_results").glob("*.csv"):
        keys.add(f"{PREFIX}/inference_csvs/snoop_results/{run}/{path.name}")
    return keys


def put_keys(requests: list[Request]) -> list[str]:
    """The object keys PUT, in the order the server received them (bucket creation aside)."""
    paths = [r.path.lstrip("/") for r in requests if r.method == "PUT"]
    return [p.split("/", 1)[1] for p in paths if "/" in p]


def test_cronjob_uploads_the_run_to_s3_under_both_prefixes_success_last(
    host: Host, s3: S3Server, bucket: str
) -> None:
    """The demo run lands in the bucket with the old layout; SUCCESS is the last PUT."""
    configure_s3(host, s3, bucket)
    done = host.run("cronjob", env=s3_env())
    assert done.returncode == 0, done.stderr
    run_dir = host.only_run_dir()
    keys = stored(s3, bucket)
    success = f"{PREFIX}/complete_results/snoop_results/{run_dir.name}/SUCCESS"
    assert set(keys) == expected_keys(run_dir) | {success}
    for csv in (run_dir / "inference_results").glob("*.csv"):
        key = f"{PREFIX}/inference_csvs/snoop_results/{run_dir.name}/{csv.name}"
        body = s3.client().get_object(Bucket=bucket, Key=key)["Body"].read()
        assert body == csv.read_bytes()
    assert put_keys(s3.requests)[-1] == success
    [report] = host.outbox("run_succeeded")
    assert f"s3://{bucket}/{PREFIX}/complete_results/snoop_results/{run_dir.name}/" in report


def test_upload_killed_half_way_is_resumed_without_resending(
    host: Host, s3: S3Server, bucket: str, tmp_path: Path, reap: list
) -> None:
    """SIGKILL mid-upload, then `bench-run --resume`: all there, SUCCESS last, <= 5% re-sent."""
    generator = tmp_path / "big_run.py"
    generator.write_text(BIG_RUN)
    configure_s3(host, s3, bucket, benchmark_command=f"{{python}} {generator}")
    half_way = threading.Event()
    puts = [0]

    def count(request: Request) -> None:
        if request.method == "PUT" and "/complete_results/" in request.path:
            puts[0] += 1
            if puts[0] == 200:
                half_way.set()

    s3.on_request = count
    proc = host.popen("cronjob", env=s3_env())
    reap.append(proc)
    deadline = time.monotonic() + 600
    while not half_way.wait(timeout=0.5):
        if proc.poll() is not None:
            pytest.fail(
                f"cronjob ended (exit {proc.returncode}) before the upload got half "
                f"way ({puts[0]} PUTs): {proc.stderr.read()[-3000:]}"
            )
        assert time.monotonic() < deadline, f"the upload never got half way ({puts[0]} PUTs)"
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    s3.on_request = None

    run_dir = host.only_run_dir()
    arrived = stored(s3, bucket)
    assert arrived, "some objects arrived before the kill"
    assert not any(key.endswith("/SUCCESS") for key in arrived)
    assert len(arrived) < len(expected_keys(run_dir))
    arrived_bytes = sum(arrived.values())

    s3.reset_log()
    resumed = host.run("bench-run", "--resume", env=s3_env())
    assert resumed.returncode == 0, resumed.stderr
    keys = stored(s3, bucket)
    success = f"{PREFIX}/complete_results/snoop_results/{run_dir.name}/SUCCESS"
    assert set(keys) == expected_keys(run_dir) | {success}
    sent_again = sum(
        r.bytes_in
        for r in s3.requests
        if r.method == "PUT" and r.path.lstrip("/").partition("/")[2] in arrived
    )
    print(
        f"\nresume: {sent_again} bytes sent again of {arrived_bytes} already arrived "
        f"({len(arrived)} objects); {s3.bytes_received()} bytes sent in all on resume"
    )
    assert sent_again <= 0.05 * arrived_bytes, (sent_again, arrived_bytes)
    assert put_keys(s3.requests)[-1] == success
    assert (run_dir / "SUCCESS").exists()
    assert host.marker("last_run_dir") == run_dir.name


def test_transient_server_faults_are_survived_by_retries(
    host: Host, s3: S3Server, bucket: str
) -> None:
    """HTTP 500 on some PUTs and slow answers on others: the run still succeeds, complete."""
    s3.faults += [
        Fault(lambda r: r.method == "PUT" and "_raw.csv" in r.path, status=500, times=3),
        Fault(lambda r: r.method == "PUT" and "inferred_" in r.path, status=0, delay=1.5, times=2),
        Fault(lambda r: r.method == "GET" and "list-type" in r.query, status=500, times=1),
    ]
    configure_s3(host, s3, bucket)
    done = host.run("cronjob", env=s3_env())
    assert done.returncode == 0, done.stderr
    run_dir = host.only_run_dir()
    assert set(stored(s3, bucket)) >= expected_keys(run_dir)
    assert sum(1 for r in s3.requests if r.status == 500) == 4


def test_a_permanent_fault_fails_the_upload_step_and_loses_nothing(
    host: Host, s3: S3Server, bucket: str
) -> None:
    """A key the server always refuses: failed at upload, report names it, no SUCCESS;
    once the fault is gone, --resume completes the run."""
    s3.faults.append(
        Fault(lambda r: r.method == "PUT" and "inferred_cache.csv" in r.path, times=10**6)
    )
    configure_s3(host, s3, bucket)
    done = host.run("cronjob", env=s3_env())
    assert done.returncode == ExitCode.FAILED
    run_dir = host.only_run_dir()
    record = host.run_json(run_dir)
    assert record["failed_step"] == "upload"
    assert (run_dir / "inference_results" / "inferred_cache.csv").exists()
    assert not any(k.endswith("/SUCCESS") for k in stored(s3, bucket))
    [failed] = host.outbox("run_failed")
    assert "step upload" in failed and "inferred_cache.csv" in failed and "missing" in failed

    s3.faults.clear()
    resumed = host.run("bench-run", "--resume", env=s3_env())
    assert resumed.returncode == 0, resumed.stderr
    assert set(stored(s3, bucket)) >= expected_keys(run_dir)


def test_an_upload_past_reference_upload_timeout_times_out_and_resumes(
    host: Host, s3: S3Server, bucket: str
) -> None:
    """A PUT the server answers only after 8 s, upload_timeout 2 s: the upload step is
    "timed_out" (run.json, the failure report), everything stays on disk, no SUCCESS; with
    the server healthy again, --resume completes the run."""
    s3.faults.append(
        Fault(lambda r: r.method == "PUT" and "inferred_cache.csv" in r.path, status=0, delay=8)
    )
    configure_s3(host, s3, bucket, upload_timeout=2)
    done = host.run("cronjob", env=s3_env())
    assert done.returncode == ExitCode.FAILED, done.stderr
    run_dir = host.only_run_dir()
    record = host.run_json(run_dir)
    [upload] = [step for step in record["steps"] if step["name"] == "upload"]
    assert upload["status"] == "timed_out"
    assert "timed out after 2 s (reference.upload_timeout)" in upload["message"]
    assert "--resume" in upload["message"]
    assert (run_dir / "inference_results" / "inferred_cache.csv").exists()
    assert not any(k.endswith("/SUCCESS") for k in stored(s3, bucket))
    [failed] = host.outbox("run_failed")
    assert "step upload" in failed and "reference.upload_timeout" in failed

    s3.faults.clear()
    resumed = host.run("bench-run", "--resume", env=s3_env())
    assert resumed.returncode == 0, resumed.stderr
    assert set(stored(s3, bucket)) >= expected_keys(run_dir)


def test_missing_bucket_is_one_clear_line(host: Host, s3: S3Server) -> None:
    """A bucket that does not exist: the upload fails with one line naming it."""
    configure_s3(host, s3, "no-such-bucket")
    done = host.run("cronjob", env=s3_env())
    assert done.returncode == ExitCode.FAILED
    [failed] = host.outbox("run_failed")
    assert "the bucket no-such-bucket does not exist" in failed
    assert "Traceback" not in done.stderr


def test_no_credentials_is_one_clear_line(host: Host, s3: S3Server, bucket: str) -> None:
    """No AWS credentials anywhere: one line saying where boto3 looks."""
    configure_s3(host, s3, bucket)
    env = clean_env(
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_CONFIG_FILE=os.devnull,
        AWS_EC2_METADATA_DISABLED="true",
        AWS_DEFAULT_REGION="us-east-1",
    )
    done = host.run("cronjob", env=env)
    assert done.returncode == ExitCode.FAILED
    [failed] = host.outbox("run_failed")
    assert "no AWS credentials found" in failed and "AWS_ACCESS_KEY_ID" in failed


def test_unreachable_endpoint_is_one_clear_line(host: Host, bucket: str, s3: S3Server) -> None:
    """An endpoint nobody listens on: one line naming it and what to check."""
    host.configure(
        store={
            "url": f"s3://{bucket}/{PREFIX}",
            "endpoint_url": "http://127.0.0.1:9",
            "max_attempts": 2,
        }
    )
    done = host.run("cronjob", env=s3_env())
    assert done.returncode == ExitCode.FAILED
    [failed] = host.outbox("run_failed")
    assert "cannot reach the S3 endpoint http://127.0.0.1:9" in failed
    assert "store.endpoint_url" in failed
