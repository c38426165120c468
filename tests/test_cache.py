"""Tests of the watcher's run cache: each successful run's inference CSVs downloaded once."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from bench.errors import StoreError
from bench.runs import RunId, parse_run_name
from bench.store import LocalStore
from bench.store.base import INFERENCE, complete_key, inference_key
from bench.store.cache import MANIFEST, RunCache
from bench.store.s3 import S3Store

RUN_A = parse_run_name("_snoop_20260101_2000_v1.0-0-gabc1234")
RUN_B = parse_run_name("_snoop_20260102_2000_v1.0-1-gdef5678")

#: Inference CSVs of a run, relative to its inference prefix -> content.
CSVS_A = {
    "inferred_cache.csv": b"cache/CACHE_UPDATE/intercept,R2_score-m\n12.5,0.99\n",
    "inferred_interpreter__N_IAdd.csv": b"interpreter/N_IAdd_int_coeff\n600.\n",
    "sub/inferred_storage.csv": b"storage/SSTORE/intercept\n20000\n",
    "zz_last.csv": b"x\n" * 100,
}
CSVS_B = {
    "inferred_cache.csv": b"cache/CACHE_UPDATE/intercept,R2_score-m\n13.0,0.98\n",
    "inferred_memory.csv": b"memory/MLOAD/intercept\n3\n",
}


def publish(store: LocalStore, run: RunId, csvs: dict[str, bytes]) -> None:
    """What an upload leaves in the store: a complete run with SUCCESS and its inference CSVs."""
    store.put_bytes(complete_key(run, "run.json"), b'{"format": 1}\n')
    for name, content in csvs.items():
        store.put_bytes(complete_key(run, f"inference_results/{name}"), content)
        store.put_bytes(inference_key(run, name), content)
    store.put_bytes(complete_key(run, "SUCCESS"), b"42\n")


class CountingStore(LocalStore):
    """A LocalStore recording the keys it downloads; fails once ``fail_after`` are fetched."""

    def __init__(self, base: Path, *, fail_after: int | None = None) -> None:
        super().__init__(base)
        self.fetched: list[str] = []
        self.fail_after = fail_after

    def get_file(self, key: str, dest: Path) -> None:
        if self.fail_after is not None and len(self.fetched) >= self.fail_after:
            raise StoreError(f"GET {key}: connection reset")
        super().get_file(key, dest)
        self.fetched.append(key)


class TruncatingStore(LocalStore):
    """A LocalStore whose downloads of ``short`` arrive one byte short."""

    def __init__(self, base: Path, short: str) -> None:
        super().__init__(base)
        self.short = short

    def get_file(self, key: str, dest: Path) -> None:
        super().get_file(key, dest)
        if key == self.short:
            dest.write_bytes(dest.read_bytes()[:-1])


def cached_files(cache: RunCache, run: RunId) -> dict[str, bytes]:
    """The files of a cached run (manifest excluded), relative path -> content."""
    top = cache.path(run)
    return {
        p.relative_to(top).as_posix(): p.read_bytes()
        for p in sorted(top.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }


@pytest.fixture
def store(tmp_path: Path) -> CountingStore:
    local = CountingStore(tmp_path / "store")
    publish(local, RUN_A, CSVS_A)
    publish(local, RUN_B, CSVS_B)
    return local


def test_sync_downloads_each_runs_csvs_once_with_a_manifest(
    store: CountingStore, tmp_path: Path
) -> None:
    """sync fetches each run's inference CSVs into <root>/<run>/ with .complete, once only."""
    cache = RunCache(store, tmp_path / "cache")

    report = cache.sync([RUN_A, RUN_B])

    assert report.downloaded == [RUN_A.name, RUN_B.name]
    assert report.files == len(CSVS_A) + len(CSVS_B)
    assert report.bytes == sum(map(len, [*CSVS_A.values(), *CSVS_B.values()]))
    assert report.rejected == []
    assert cached_files(cache, RUN_A) == CSVS_A
    assert cached_files(cache, RUN_B) == CSVS_B
    manifest = json.loads((cache.path(RUN_A) / MANIFEST).read_text())
    assert manifest == {
        "format": 1,
        "run": RUN_A.name,
        "files": {name: len(content) for name, content in CSVS_A.items()},
    }
    assert cache.runs() == [RUN_A, RUN_B]
    assert sorted(p.name for p in (tmp_path / "cache").iterdir() if p.name != ".partial") == [
        RUN_A.name,
        RUN_B.name,
    ]
    assert not any((tmp_path / "cache" / ".partial").iterdir())

    store.fetched.clear()
    again = cache.sync([RUN_A, RUN_B])
    assert store.fetched == []
    assert again.downloaded == []
    assert again.files == 0


def test_an_interrupted_download_is_not_used_and_is_resumed(
    store: CountingStore, tmp_path: Path
) -> None:
    """A run whose download broke off is not cached; the next sync fetches only what is missing."""
    cache = RunCache(store, tmp_path / "cache")
    store.fail_after = 2

    with pytest.raises(StoreError, match="connection reset"):
        cache.sync([RUN_A])

    assert len(store.fetched) == 2
    assert cache.runs() == []
    assert not cache.has(RUN_A)
    assert not cache.path(RUN_A).exists()

    first = list(store.fetched)
    store.fail_after = None
    store.fetched.clear()
    report = cache.sync([RUN_A])

    every = sorted(inference_key(RUN_A, name) for name in CSVS_A)
    assert sorted(store.fetched) == sorted(set(every) - set(first))
    assert len(store.fetched) == len(CSVS_A) - 2
    assert report.files == len(CSVS_A) - 2
    assert report.downloaded == [RUN_A.name]
    assert cache.runs() == [RUN_A]
    assert cached_files(cache, RUN_A) == CSVS_A


def test_a_short_download_raises_and_is_fetched_again(store: CountingStore, tmp_path: Path) -> None:
    """A download of the wrong size is a StoreError; the next sync fetches that file again."""
    short = inference_key(RUN_B, "inferred_memory.csv")
    cache = RunCache(TruncatingStore(store.base, short), tmp_path / "cache")

    with pytest.raises(StoreError, match=r"is \d+ bytes, the store says \d+"):
        cache.sync([RUN_B])
    assert cache.runs() == []
    assert not cache.path(RUN_B).exists()

    healthy = RunCache(store, tmp_path / "cache")
    healthy.sync([RUN_B])
    assert store.fetched == [short]
    assert healthy.runs() == [RUN_B]
    assert cached_files(healthy, RUN_B) == CSVS_B


# --- S3: keys that are not plain names ------------------------------------------------------------


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Any]:
    """A moto S3 client (fake credentials, nothing from the runner's AWS setup) with a bucket."""
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="bench-results")
        yield client


def test_hostile_keys_in_a_run_are_refused_and_nothing_escapes(s3: Any, tmp_path: Path) -> None:
    """Keys with .. or dot-names in a run are rejected and reported; the plain CSVs are cached."""
    store = S3Store(s3, "bench-results", "team/ref-host")
    run_prefix = f"{INFERENCE}/{RUN_A.name}"
    for name, content in CSVS_B.items():
        store.put_bytes(inference_key(RUN_A, name), content)
    hostile = [
        f"{run_prefix}/../../evil.csv",
        f"{run_prefix}/../../../../evil.csv",
        f"{run_prefix}/sub/../../../../../evil.csv",
        f"{run_prefix}/..%2F..%2Fevil.csv",
        f"{run_prefix}/.complete",
    ]
    for key in hostile:
        store.put_bytes(key, b"pwned\n")
    assert set(store.list_objects(run_prefix)) >= set(hostile)  # the mock kept them verbatim

    cache = RunCache(store, tmp_path / "work" / "cache")
    report = cache.sync([RUN_A])

    assert sorted(report.rejected) == sorted(hostile)
    assert report.downloaded == [RUN_A.name]
    assert cache.runs() == [RUN_A]
    assert cached_files(cache, RUN_A) == CSVS_B
    manifest = json.loads((cache.path(RUN_A) / MANIFEST).read_text())
    assert manifest["files"] == {name: len(content) for name, content in CSVS_B.items()}
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert not [p for p in written if p.read_bytes() == b"pwned\n" or "evil" in p.name]
    assert written
    assert all(cache.path(RUN_A) in p.parents for p in written), written


def test_a_folder_marker_key_is_skipped_without_alarm(
    s3: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A `<run>/` "folder" object some S3 tools create is neither cached nor reported hostile."""
    store = S3Store(s3, "bench-results", "team/ref-host")
    for name, content in CSVS_B.items():
        store.put_bytes(inference_key(RUN_A, name), content)
    store.put_bytes(f"{INFERENCE}/{RUN_A.name}/", b"")

    report = RunCache(store, tmp_path / "cache").sync([RUN_A])

    assert report.rejected == []
    assert "refusing" not in caplog.text
    assert cached_files(RunCache(store, tmp_path / "cache"), RUN_A) == CSVS_B


def test_temp_files_of_a_killed_download_are_not_cached(
    store: CountingStore, tmp_path: Path
) -> None:
    """A `.x.partialPID` left in the staging directory by a kill never reaches the cached run."""
    cache = RunCache(store, tmp_path / "cache")
    staging = cache.partial / RUN_A.name
    staging.mkdir(parents=True)
    (staging / ".inferred_cache.csv.partial999").write_bytes(b"half a file")

    cache.sync([RUN_A])

    assert cached_files(cache, RUN_A) == CSVS_A
    assert not list(cache.path(RUN_A).rglob("*.partial*"))
