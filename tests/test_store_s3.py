"""Tests of the S3 backend against moto's in-process mock: layout, checksums, errors, listing."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError
from moto import mock_aws

from bench.errors import StoreError
from bench.runs import RunId, make_run_name, parse_run_name
from bench.store import open_store
from bench.store.base import COMPLETE, ObjectInfo, UploadIncomplete, plan_upload
from bench.store.s3 import MULTIPART_CHUNK, S3Store, translate_error

BUCKET = "bench-results"
PREFIX = "team/ref-host"
RUN = parse_run_name("_snoop_20260101_2000_v1.0-0-gabc1234")
CFULL = f"{PREFIX}/complete_results/snoop_results/{RUN.name}/"
IFULL = f"{PREFIX}/inference_csvs/snoop_results/{RUN.name}/"

#: The fake run directory: relative path -> content.
RUN_FILES = {
    "inference_results/inferred_interpreter__N_IAdd.csv": "interpreter/N_IAdd_int_coeff\n600.\n",
    "inference_results/inferred_cache.csv": "cache/CACHE_UPDATE/intercept,R2_score-m\n12.5,0.99\n",
    "inference_results/notes.txt": "not a csv: complete copy only\n",
    "benchmark_results/N_IAdd_int_raw.csv": "size1,size2,timings\n1,2,30,31,29\n",
    "benchmark_results/sub/deep_raw.csv": "size,timings\n4,100,101\n",
    "steps/01-build.out": "building\n",
    "steps/01-build.err": "",
    "steps/02-benchmark.out": "x" * 5000,
    "run.json": '{"format": 1, "steps": []}\n',
    "STARTED": "4242\n",
}
INFERENCE_CSVS = ["inferred_cache.csv", "inferred_interpreter__N_IAdd.csv"]


def expected_keys(files: dict[str, Any] = RUN_FILES) -> set[str]:
    """Every full key an upload of ``files`` must leave in the bucket (SUCCESS included)."""
    keys = {CFULL + relative for relative in files} | {CFULL + "SUCCESS"}
    keys |= {IFULL + name for name in INFERENCE_CSVS}
    return keys


def make_run_dir(parent: Path, files: dict[str, str] = RUN_FILES) -> Path:
    run_dir = parent / "snoop_results" / RUN.name
    for relative, content in files.items():
        path = run_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    return run_dir


def bucket_keys(bucket: str = BUCKET) -> set[str]:
    """The keys in the bucket, listed by a client of its own (not the store under test)."""
    client = boto3.client("s3", region_name="us-east-1")
    keys: set[str] = set()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys.update(obj["Key"] for obj in page.get("Contents", ()))
    return keys


class RecordingS3Store(S3Store):
    """An S3Store that records every write, in order: ("file" | "bytes", key)."""

    def __init__(self, client: Any, bucket: str = BUCKET, prefix: str = PREFIX) -> None:
        super().__init__(client, bucket, prefix)
        self.writes: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def put_file(self, key: str, path: Path) -> None:
        with self._lock:
            self.writes.append(("file", key))
        super().put_file(key, path)

    def put_bytes(self, key: str, data: bytes) -> None:
        with self._lock:
            self.writes.append(("bytes", key))
        super().put_bytes(key, data)

    def file_keys(self) -> set[str]:
        return {key for kind, key in self.writes if kind == "file"}


class FailingS3Store(RecordingS3Store):
    """An S3Store whose put_file raises ``error`` for the key ``bad``."""

    def __init__(self, client: Any, bad: str, error: StoreError, delay: float = 0.0) -> None:
        super().__init__(client)
        self.bad = bad
        self.error = error
        self.delay = delay

    def put_file(self, key: str, path: Path) -> None:
        if key == self.bad:
            with self._lock:
                self.writes.append(("file", key))
            raise self.error
        time.sleep(self.delay)
        super().put_file(key, path)


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Fake credentials, and nothing from the runner's own AWS configuration."""
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))


@pytest.fixture
def s3(aws_env: None) -> Iterator[Any]:
    """A moto S3 client with the bucket created."""
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        yield client


@pytest.fixture
def store(s3: Any) -> RecordingS3Store:
    return RecordingS3Store(s3)


# --- layout ---------------------------------------------------------------------------------------


def test_upload_puts_every_file_and_the_inference_csvs_again(
    store: RecordingS3Store, tmp_path: Path
) -> None:
    """upload_run stores exactly the run's files under complete_results and its CSVs again."""
    report = store.upload_run(make_run_dir(tmp_path), RUN, success_text="42\n")

    assert bucket_keys() == expected_keys()
    assert report.complete
    assert report.objects == len(RUN_FILES) + len(INFERENCE_CSVS)
    assert report.sent == report.objects
    assert report.location == f"s3://{BUCKET}/{CFULL}"
    for name in INFERENCE_CSVS:
        body = store.client.get_object(Bucket=BUCKET, Key=IFULL + name)["Body"].read()
        assert body.decode() == RUN_FILES[f"inference_results/{name}"]


def test_success_is_written_last_with_the_given_text(
    store: RecordingS3Store, tmp_path: Path
) -> None:
    """SUCCESS is the last write of an upload, written once, and holds success_text."""
    store.upload_run(make_run_dir(tmp_path), RUN, success_text="42\n")

    success = f"complete_results/snoop_results/{RUN.name}/SUCCESS"
    assert store.writes[-1] == ("bytes", success)
    assert [key for _, key in store.writes].count(success) == 1
    body = store.client.get_object(Bucket=BUCKET, Key=CFULL + "SUCCESS")["Body"].read()
    assert body == b"42\n"
    assert store.has_success(RUN)


# --- multipart and checksums ----------------------------------------------------------------------


def test_multipart_upload_is_skipped_when_present_and_resent_when_changed(
    store: RecordingS3Store, tmp_path: Path
) -> None:
    """A 9 MB file goes multipart, its ETag is predicted, and re-uploads send only what differs."""
    run_dir = make_run_dir(tmp_path)
    big = run_dir / "benchmark_results" / "big_raw.csv"
    big.write_bytes(bytes(range(256)) * (9 * 1024 * 1024 // 256))
    assert big.stat().st_size > MULTIPART_CHUNK
    big_key = f"complete_results/snoop_results/{RUN.name}/benchmark_results/big_raw.csv"

    store.upload_run(run_dir, RUN, success_text="42\n")
    info = store.stat(big_key)
    assert info is not None
    assert info.size == big.stat().st_size
    assert info.checksum is not None
    assert info.checksum.endswith("-2")  # two 8 MB parts: uploaded multipart
    assert info.checksum == store.checksum_of(big)

    store.writes.clear()
    again = store.upload_run(run_dir, RUN, success_text="42\n")
    assert again.sent == 0
    assert again.skipped == again.objects
    assert store.file_keys() == set()

    # One byte changed, same size: only the checksum tells, for the big file and a small one.
    with big.open("r+b") as fh:
        fh.seek(5 * 1024 * 1024)
        fh.write(b"\xff")
    run_json = run_dir / "run.json"
    run_json.write_text(RUN_FILES["run.json"].replace("1", "2"))
    store.writes.clear()
    changed = store.upload_run(run_dir, RUN, success_text="42\n")
    assert store.file_keys() == {big_key, f"complete_results/snoop_results/{RUN.name}/run.json"}
    assert changed.sent == 2
    assert store.stat(big_key) == ObjectInfo(big.stat().st_size, store.checksum_of(big))

    # One stored object deleted: exactly that one is sent again.
    store.client.delete_object(Bucket=BUCKET, Key=IFULL + "inferred_cache.csv")
    store.writes.clear()
    repaired = store.upload_run(run_dir, RUN, success_text="42\n")
    assert store.file_keys() == {f"inference_csvs/snoop_results/{RUN.name}/inferred_cache.csv"}
    assert repaired.sent == 1
    assert IFULL + "inferred_cache.csv" in bucket_keys()


def test_checksum_of_a_file_of_exactly_one_chunk_is_the_multipart_form(
    store: RecordingS3Store, tmp_path: Path
) -> None:
    """A file of exactly 8 MB is uploaded multipart (one part) and checksum_of predicts it."""
    path = tmp_path / "exact.bin"
    path.write_bytes(b"a" * MULTIPART_CHUNK)
    store.put_file("x/exact.bin", path)
    info = store.stat("x/exact.bin")
    assert info is not None
    assert info.checksum == store.checksum_of(path)
    assert info.checksum is not None and info.checksum.endswith("-1")


def test_objects_from_the_old_scripts_are_recognised(
    store: RecordingS3Store, tmp_path: Path
) -> None:
    """Objects put by the old aws-cli scripts (plain MD5 ETag, no metadata) are not sent again."""
    run_dir = make_run_dir(tmp_path)
    for relative, content in RUN_FILES.items():
        store.client.put_object(Bucket=BUCKET, Key=CFULL + relative, Body=content.encode())
    for name in INFERENCE_CSVS:
        content = RUN_FILES[f"inference_results/{name}"]
        store.client.put_object(Bucket=BUCKET, Key=IFULL + name, Body=content.encode())

    report = store.upload_run(run_dir, RUN, success_text="42\n")

    assert store.file_keys() == set()
    assert report.sent == 0
    assert report.skipped == report.objects == len(RUN_FILES) + len(INFERENCE_CSVS)
    assert store.writes == [("bytes", f"complete_results/snoop_results/{RUN.name}/SUCCESS")]


# --- failures -------------------------------------------------------------------------------------


def test_one_failed_object_makes_the_upload_incomplete(s3: Any, tmp_path: Path) -> None:
    """One object failing (non-fatal): UploadIncomplete naming it, others stored, no SUCCESS."""
    bad = f"complete_results/snoop_results/{RUN.name}/steps/01-build.out"
    store = FailingS3Store(s3, bad, StoreError("PUT refused: SlowDown for this one"))

    with pytest.raises(UploadIncomplete) as caught:
        store.upload_run(make_run_dir(tmp_path), RUN, success_text="42\n")

    report = caught.value.report
    assert report.missing == [bad]
    assert report.errors == {bad: "PUT refused: SlowDown for this one"}
    assert bad in str(caught.value)
    assert "PUT refused: SlowDown for this one" in str(caught.value)
    assert report.sent == report.objects - 1
    stored = bucket_keys()
    assert stored == expected_keys() - {f"{PREFIX}/{bad}", CFULL + "SUCCESS"}
    assert not store.has_success(RUN)


def test_a_fatal_error_stops_the_transfers_and_propagates(s3: Any, tmp_path: Path) -> None:
    """A fatal StoreError from one object is raised as is; the remaining transfers are not run."""
    run_dir = make_run_dir(tmp_path)
    bad = plan_upload(run_dir, RUN)[0].key  # the first transfer submitted
    fatal = StoreError("no AWS credentials found", fatal=True)
    # Each other transfer takes 2 s: time for the main thread to cancel the rest, even when
    # a loaded machine leaves it waiting.
    store = FailingS3Store(s3, bad, fatal, delay=2.0)
    store.max_workers = 1

    with pytest.raises(StoreError) as caught:
        store.upload_run(run_dir, RUN, success_text="42\n")

    assert caught.value is fatal
    assert not isinstance(caught.value, UploadIncomplete)
    assert store.writes[0] == ("file", bad)
    planned = len(RUN_FILES) + len(INFERENCE_CSVS)
    assert len(store.file_keys()) <= 2 < planned  # at most the one already started
    assert CFULL + "SUCCESS" not in bucket_keys()


def test_a_missing_bucket_is_a_fatal_error_naming_it(s3: Any, tmp_path: Path) -> None:
    """Uploading to a bucket that does not exist fails fatally, naming it and store.url."""
    store = S3Store(s3, "no-such-bucket-here", PREFIX)

    with pytest.raises(StoreError) as caught:
        store.upload_run(make_run_dir(tmp_path), RUN, success_text="42\n")

    assert caught.value.fatal
    assert "no-such-bucket-here" in str(caught.value)
    assert "store.url" in str(caught.value)
    assert "\n" not in str(caught.value)


# --- listing --------------------------------------------------------------------------------------


def test_list_runs_paginates_and_finds_the_newest_successful_run(store: RecordingS3Store) -> None:
    """2,500 runs are all listed in order (3 pages) and the newest with SUCCESS is found."""
    start = datetime(2024, 1, 1, 0, 0)
    names = [
        make_run_name(start + timedelta(minutes=i), "v1.0-0-gabc1234").name for i in range(2500)
    ]
    base = f"{PREFIX}/{COMPLETE}/"
    for name in names[:-3]:
        store.client.put_object(Bucket=BUCKET, Key=f"{base}{name}/SUCCESS", Body=b"1\n")
    for name in names[-3:]:  # still uploading: no SUCCESS yet
        store.client.put_object(Bucket=BUCKET, Key=f"{base}{name}/run.json", Body=b"{}")

    runs = store.list_runs()

    assert [run.name for run in runs] == names
    assert store.newest_successful_run() == RunId(names[-4])


def test_hostile_and_odd_names_are_skipped_and_reported(
    store: RecordingS3Store, caplog: pytest.LogCaptureFixture
) -> None:
    """Keys whose run part is ``..`` or not a run name are left out of list_runs, with a warning."""
    base = f"{PREFIX}/{COMPLETE}/"
    store.client.put_object(Bucket=BUCKET, Key=f"{base}{RUN.name}/SUCCESS", Body=b"1\n")
    store.client.put_object(Bucket=BUCKET, Key=f"{base}../../x/SUCCESS", Body=b"1\n")
    store.client.put_object(Bucket=BUCKET, Key=f"{base}not_a_run/SUCCESS", Body=b"1\n")
    assert f"{base}../../x/SUCCESS" in bucket_keys()  # the mock kept the key as written

    with caplog.at_level(logging.WARNING, logger="bench.store"):
        runs = store.list_runs()

    assert runs == [RUN]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("'..'" in message for message in warnings), warnings
    assert any("'not_a_run'" in message for message in warnings), warnings
    assert store.newest_successful_run() == RUN


def test_list_dirs_start_after_returns_only_later_names(store: RecordingS3Store) -> None:
    """list_dirs(prefix, start_after=run) returns the names after run, not run nor earlier ones."""
    names = [
        "_snoop_20260101_0000_a",
        "_snoop_20260101_0001_a",
        "_snoop_20260101_0001_a-dirty",
        "_snoop_20260101_0002_a",
        "_snoop_20260102_0000_b",
    ]
    for name in names:
        store.client.put_object(Bucket=BUCKET, Key=f"{PREFIX}/{COMPLETE}/{name}/SUCCESS", Body=b"")

    def later(start_after: str) -> list[str]:
        return sorted(store.list_dirs(COMPLETE, start_after=start_after))

    assert sorted(store.list_dirs(COMPLETE)) == names
    assert later(names[1]) == names[2:]
    # "…_a/" sorts after "…_a-dirty" as a key, but "…_a" is before it as a name.
    assert later(names[2]) == names[3:]
    assert later(names[-1]) == []
    assert later("_snoop_2025") == names


# --- errors ---------------------------------------------------------------------------------------


def _translate(err: BaseException) -> StoreError | None:
    return translate_error(
        err,
        op="PUT",
        url=f"s3://{BUCKET}/{PREFIX}/k",
        bucket=BUCKET,
        endpoint="http://localhost:1",
    )


def _client_error(code: str, status: int, message: str = "") -> ClientError:
    return ClientError(
        {
            "Error": {"Code": code, "Message": message},
            "ResponseMetadata": {"HTTPStatusCode": status},
        },
        "PutObject",
    )


@pytest.mark.parametrize(
    ("err", "said", "hint"),
    [
        (NoCredentialsError(), "no AWS credentials", "AWS_ACCESS_KEY_ID"),
        (
            EndpointConnectionError(endpoint_url="http://localhost:1"),
            "cannot reach the S3 endpoint http://localhost:1",
            "endpoint_url",
        ),
        (_client_error("AccessDenied", 403, "Access Denied"), "access denied", "bucket policy"),
        (_client_error("403", 403), "access denied", "bucket policy"),  # HEAD: no error body
    ],
    ids=["no-credentials", "no-endpoint", "access-denied", "head-403"],
)
def test_unusable_store_errors_are_fatal_one_liners_with_a_hint(
    err: BaseException, said: str, hint: str
) -> None:
    """Credentials, endpoint, permission failures: fatal one-line errors saying what to check."""
    error = _translate(err)
    assert error is not None
    assert error.fatal
    assert said in error.message
    assert error.hint is not None and hint in error.hint
    assert "\n" not in str(error)


@pytest.mark.parametrize("code", ["NoSuchKey", "404"])
def test_no_such_key_is_not_an_error(code: str) -> None:
    """A missing key translates to None (the caller decides), not to an error."""
    assert _translate(_client_error(code, 404, "The specified key does not exist.")) is None


def test_other_client_errors_are_not_fatal_and_name_the_code() -> None:
    """Another ClientError (a throttle) is a non-fatal error whose message has the code."""
    error = _translate(_client_error("SlowDown", 503, "Please reduce your request rate."))
    assert error is not None
    assert not error.fatal
    assert "SlowDown" in error.message
    assert f"s3://{BUCKET}/{PREFIX}/k" in error.message
    assert "\n" not in str(error)


# --- open_store -----------------------------------------------------------------------------------


def test_open_store_s3_url_gives_bucket_prefix_and_endpoint(aws_env: None) -> None:
    """open_store("s3://bucket/some/prefix", endpoint_url=...) builds an S3Store for them."""
    with mock_aws():
        store = open_store("s3://bucket/some/prefix", endpoint_url="http://127.0.0.1:9000")
    assert isinstance(store, S3Store)
    assert store.bucket == "bucket"
    assert store.prefix == "some/prefix"
    assert store.url == "s3://bucket/some/prefix"
    assert store.client.meta.endpoint_url == "http://127.0.0.1:9000"
    assert store.location("a/b") == "s3://bucket/some/prefix/a/b"


def test_open_store_rejects_a_file_url_with_a_host() -> None:
    """A file:// URL naming a host is refused with a StoreError."""
    with pytest.raises(StoreError, match="names a host"):
        open_store("file://host/x")
