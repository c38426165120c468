"""Tests of the local results store and the upload algorithm it shares with every backend."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bench.errors import StoreError
from bench.runs import RunId, parse_run_name
from bench.store import LocalStore, open_store
from bench.store.base import (
    COMPLETE,
    INFERENCE,
    UploadIncomplete,
    UploadTimedOut,
    complete_key,
    inference_key,
    plan_upload,
)

RUN = "_snoop_20260101_2000_v1.0-0-gabc1234"
CPREFIX = f"complete_results/snoop_results/{RUN}/"
IPREFIX = f"inference_csvs/snoop_results/{RUN}/"

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
    "cron_res": "log\n",
}
INFERENCE_CSVS = ["inferred_cache.csv", "inferred_interpreter__N_IAdd.csv"]


def make_run_dir(parent: Path, files: dict[str, str] = RUN_FILES) -> Path:
    """A run directory as the reference host leaves it, before SUCCESS."""
    run_dir = parent / "snoop_results" / RUN
    for relative, content in files.items():
        path = run_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    return run_dir


class RecordingStore(LocalStore):
    """A LocalStore that records every write, in order: ("file" | "bytes", key)."""

    def __init__(self, base: Path) -> None:
        super().__init__(base)
        self.writes: list[tuple[str, str]] = []

    def put_file(self, key: str, path: Path) -> None:
        self.writes.append(("file", key))
        super().put_file(key, path)

    def put_bytes(self, key: str, data: bytes) -> None:
        self.writes.append(("bytes", key))
        super().put_bytes(key, data)

    def file_keys(self) -> list[str]:
        return [key for kind, key in self.writes if kind == "file"]


class LosingStore(RecordingStore):
    """A store that acknowledges one object and silently never stores it."""

    def __init__(self, base: Path, lost: str) -> None:
        super().__init__(base)
        self.lost = lost

    def put_file(self, key: str, path: Path) -> None:
        if key == self.lost:
            self.writes.append(("file", key))
            return
        super().put_file(key, path)


def stored_keys(base: Path) -> set[str]:
    """Every object key in a local store directory (temporary files included, on purpose)."""
    return {p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file()}


@pytest.fixture
def run() -> RunId:
    return parse_run_name(RUN)


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return make_run_dir(tmp_path / "host")


@pytest.fixture
def store(tmp_path: Path) -> RecordingStore:
    return RecordingStore(tmp_path / "bucket")


def expected_keys() -> set[str]:
    keys = {CPREFIX + relative for relative in RUN_FILES}
    keys |= {IPREFIX + name for name in INFERENCE_CSVS}
    return keys | {CPREFIX + "SUCCESS"}


# --- keys and layout ---------------------------------------------------------------------------


def test_keys_follow_the_bucket_layout(run: RunId) -> None:
    """complete_key/inference_key put a run under the two historical prefixes."""
    assert complete_key(run, "run.json") == f"{CPREFIX}run.json"
    assert inference_key(run, "a.csv") == f"{IPREFIX}a.csv"
    assert CPREFIX.startswith(COMPLETE + "/")
    assert IPREFIX.startswith(INFERENCE + "/")


def test_upload_puts_every_file_and_the_inference_csvs_again(
    store: RecordingStore, run_dir: Path, run: RunId, tmp_path: Path
) -> None:
    """upload_run stores exactly: the whole run dir, the inference CSVs again, and SUCCESS."""
    report = store.upload_run(run_dir, run, success_text="123\n")
    assert stored_keys(tmp_path / "bucket") == expected_keys()
    assert report.complete
    assert report.missing == []
    assert report.objects == len(RUN_FILES) + len(INFERENCE_CSVS)
    assert report.sent == report.objects
    assert report.skipped == 0
    assert report.bytes_sent == sum(len(c) for c in RUN_FILES.values()) + sum(
        len(RUN_FILES[f"inference_results/{n}"]) for n in INFERENCE_CSVS
    )
    assert report.run == RUN


def test_uploaded_objects_have_the_files_content(
    store: RecordingStore, run_dir: Path, run: RunId, tmp_path: Path
) -> None:
    """Each stored object is byte for byte the file it came from, under both prefixes."""
    store.upload_run(run_dir, run, success_text="123\n")
    bucket = tmp_path / "bucket"
    for relative, content in RUN_FILES.items():
        assert (bucket / CPREFIX / relative).read_text() == content
    for name in INFERENCE_CSVS:
        assert (bucket / IPREFIX / name).read_text() == RUN_FILES[f"inference_results/{name}"]


def test_success_is_written_last_with_the_given_text(
    store: RecordingStore, run_dir: Path, run: RunId, tmp_path: Path
) -> None:
    """SUCCESS is the last write, once, as bytes of exactly the text given."""
    store.upload_run(run_dir, run, success_text="123\n")
    assert store.writes[-1] == ("bytes", CPREFIX + "SUCCESS")
    assert [key for _, key in store.writes].count(CPREFIX + "SUCCESS") == 1
    assert len(store.writes) == len(RUN_FILES) + len(INFERENCE_CSVS) + 1
    assert (tmp_path / "bucket" / CPREFIX / "SUCCESS").read_bytes() == b"123\n"


def test_a_local_success_file_is_not_uploaded_as_is(
    store: RecordingStore, tmp_path: Path, run: RunId
) -> None:
    """A SUCCESS already in the run directory is not sent early: the store's is the text given."""
    run_dir = make_run_dir(tmp_path / "host", {**RUN_FILES, "SUCCESS": "stale\n"})
    store.upload_run(run_dir, run, success_text="999\n")
    assert CPREFIX + "SUCCESS" not in store.file_keys()
    assert store.writes[-1] == ("bytes", CPREFIX + "SUCCESS")
    assert (tmp_path / "bucket" / CPREFIX / "SUCCESS").read_text() == "999\n"


def test_exclude_keeps_files_out(store: RecordingStore, run_dir: Path, run: RunId) -> None:
    """Files named in ``exclude`` (still being written) are not uploaded."""
    report = store.upload_run(
        run_dir, run, success_text="1\n", exclude=["cron_res", "steps/01-build.err"]
    )
    assert CPREFIX + "cron_res" not in store.file_keys()
    assert CPREFIX + "steps/01-build.err" not in store.file_keys()
    assert CPREFIX + "steps/01-build.out" in store.file_keys()
    assert report.objects == len(RUN_FILES) + len(INFERENCE_CSVS) - 2


def test_exclude_applies_to_the_inference_copy_too(
    store: RecordingStore, run_dir: Path, run: RunId, tmp_path: Path
) -> None:
    """An excluded inference CSV is kept out of both prefixes, not only the complete copy."""
    store.upload_run(
        run_dir, run, success_text="1\n", exclude=["inference_results/inferred_cache.csv"]
    )
    keys = stored_keys(tmp_path / "bucket")
    assert CPREFIX + "inference_results/inferred_cache.csv" not in keys
    assert IPREFIX + "inferred_cache.csv" not in keys
    assert IPREFIX + "inferred_interpreter__N_IAdd.csv" in keys


def test_inference_subdir_is_configurable(
    store: RecordingStore, tmp_path: Path, run: RunId
) -> None:
    """``inference_subdir`` names where the inference CSVs are taken from."""
    run_dir = make_run_dir(tmp_path / "host", {"results/inferred_x.csv": "a\n1.\n", "STARTED": "1"})
    store.upload_run(run_dir, run, success_text="1\n", inference_subdir="results")
    assert stored_keys(tmp_path / "bucket") == {
        CPREFIX + "results/inferred_x.csv",
        CPREFIX + "STARTED",
        IPREFIX + "inferred_x.csv",
        CPREFIX + "SUCCESS",
    }


def test_symlinks_in_the_run_dir_are_not_followed(
    store: RecordingStore, run_dir: Path, run: RunId, tmp_path: Path
) -> None:
    """A symlink in the run directory (to a secret, say) is not uploaded."""
    secret = tmp_path / "secret"
    secret.write_text("token")
    (run_dir / "steps" / "link").symlink_to(secret)
    store.upload_run(run_dir, run, success_text="1\n")
    assert CPREFIX + "steps/link" not in stored_keys(tmp_path / "bucket")


def test_plan_upload_does_not_need_an_inference_dir(tmp_path: Path, run: RunId) -> None:
    """A run without inference results plans its files and nothing under inference_csvs."""
    run_dir = make_run_dir(tmp_path, {"STARTED": "1", "steps/01-build.err": "boom"})
    keys = [obj.key for obj in plan_upload(run_dir, run)]
    assert keys == [CPREFIX + "STARTED", CPREFIX + "steps/01-build.err"]


# --- idempotence -------------------------------------------------------------------------------


def test_second_upload_sends_nothing(store: RecordingStore, run_dir: Path, run: RunId) -> None:
    """Uploading the same run again sends no object; everything is verified as already there."""
    first = store.upload_run(run_dir, run, success_text="1\n")
    store.writes.clear()
    second = store.upload_run(run_dir, run, success_text="1\n")
    assert second.sent == 0
    assert second.bytes_sent == 0
    assert second.skipped == second.objects == first.objects
    assert store.file_keys() == []
    assert store.writes == [("bytes", CPREFIX + "SUCCESS")]


def test_reupload_sends_only_a_changed_file(
    store: RecordingStore, run_dir: Path, run: RunId, tmp_path: Path
) -> None:
    """After a file changed (same size, other bytes), a re-upload sends exactly that file."""
    store.upload_run(run_dir, run, success_text="1\n")
    store.writes.clear()
    (run_dir / "steps/01-build.out").write_text("BUILDING\n")  # same length: checksum decides
    report = store.upload_run(run_dir, run, success_text="1\n")
    assert store.file_keys() == [CPREFIX + "steps/01-build.out"]
    assert report.sent == 1
    assert report.skipped == report.objects - 1
    assert (tmp_path / "bucket" / CPREFIX / "steps/01-build.out").read_text() == "BUILDING\n"


def test_reupload_of_a_changed_inference_csv_sends_both_copies(
    store: RecordingStore, run_dir: Path, run: RunId
) -> None:
    """A changed inference CSV is sent again under both prefixes, and nothing else."""
    store.upload_run(run_dir, run, success_text="1\n")
    store.writes.clear()
    (run_dir / "inference_results/inferred_cache.csv").write_text("a\n2.\n")
    report = store.upload_run(run_dir, run, success_text="1\n")
    assert sorted(store.file_keys()) == [
        CPREFIX + "inference_results/inferred_cache.csv",
        IPREFIX + "inferred_cache.csv",
    ]
    assert report.sent == 2


def test_reupload_sends_only_a_lost_object(
    store: RecordingStore, run_dir: Path, run: RunId, tmp_path: Path
) -> None:
    """After one stored object disappeared, a re-upload (an interrupted one resumed) sends it."""
    store.upload_run(run_dir, run, success_text="1\n")
    store.writes.clear()
    (tmp_path / "bucket" / IPREFIX / "inferred_cache.csv").unlink()
    report = store.upload_run(run_dir, run, success_text="1\n")
    assert store.file_keys() == [IPREFIX + "inferred_cache.csv"]
    assert report.sent == 1
    assert stored_keys(tmp_path / "bucket") == expected_keys()


def test_a_corrupted_stored_object_is_replaced(
    store: RecordingStore, run_dir: Path, run: RunId, tmp_path: Path
) -> None:
    """A stored object with the right size but other bytes is not trusted: it is sent again."""
    store.upload_run(run_dir, run, success_text="1\n")
    store.writes.clear()
    stored = tmp_path / "bucket" / CPREFIX / "run.json"
    stored.write_text(stored.read_text().upper())
    store.upload_run(run_dir, run, success_text="1\n")
    assert store.file_keys() == [CPREFIX + "run.json"]
    assert stored.read_text() == RUN_FILES["run.json"]


# --- verification ------------------------------------------------------------------------------


def test_silently_lost_object_fails_the_upload_without_success(
    tmp_path: Path, run_dir: Path, run: RunId
) -> None:
    """An object the store dropped makes UploadIncomplete naming its key; SUCCESS is not written."""
    lost = IPREFIX + "inferred_cache.csv"
    store = LosingStore(tmp_path / "bucket", lost)
    with pytest.raises(UploadIncomplete, match=lost) as info:
        store.upload_run(run_dir, run, success_text="1\n")
    assert info.value.report.missing == [lost]
    assert not info.value.report.complete
    assert isinstance(info.value, StoreError)
    assert all(kind == "file" for kind, _ in store.writes)
    assert not (tmp_path / "bucket" / CPREFIX / "SUCCESS").exists()
    assert not store.has_success(run)


def test_upload_incomplete_message_shows_at_most_five_keys(
    tmp_path: Path, run_dir: Path, run: RunId
) -> None:
    """With many objects missing the message lists five, says how many, and elides the rest."""

    class BlackHole(RecordingStore):
        def put_file(self, key: str, path: Path) -> None:
            self.writes.append(("file", key))

    store = BlackHole(tmp_path / "bucket")
    with pytest.raises(UploadIncomplete) as info:
        store.upload_run(run_dir, run, success_text="1\n")
    total = len(RUN_FILES) + len(INFERENCE_CSVS)
    message = str(info.value)
    assert f"{total} object(s) missing" in message
    assert message.count(CPREFIX) + message.count(IPREFIX) == 5
    assert "..." in message
    assert len(info.value.report.missing) == total
    assert store.list_runs() == []


def test_the_time_limit_stops_the_upload_without_waiting_for_a_stuck_transfer(
    tmp_path: Path, run_dir: Path, run: RunId
) -> None:
    """A transfer that hangs: at the time limit the upload stops with UploadTimedOut (saying
    how much was sent and that --resume sends the rest), while that transfer is still stuck:
    it was not waited for. No SUCCESS; a later upload completes the run."""
    import threading

    stuck = CPREFIX + "steps/02-benchmark.out"
    release, came_back = threading.Event(), threading.Event()

    class Stuck(RecordingStore):
        def put_file(self, key: str, path: Path) -> None:
            if key == stuck and not release.is_set():
                release.wait(60)
                came_back.set()
            super().put_file(key, path)

    store = Stuck(tmp_path / "bucket")
    store.max_workers = 2
    try:
        with pytest.raises(UploadTimedOut) as info:
            store.upload_run(run_dir, run, success_text="1\n", timeout=0.5)
        assert not came_back.is_set()  # the stuck transfer is still under way
    finally:
        release.set()
    report = info.value.report
    total = len(RUN_FILES) + len(INFERENCE_CSVS)
    assert report.sent < total
    assert f"{report.sent} of {total} object(s) sent" in str(info.value)
    assert "--resume" in (info.value.hint or "")
    assert CPREFIX + "SUCCESS" not in stored_keys(tmp_path / "bucket")

    again = store.upload_run(run_dir, run, success_text="1\n", timeout=60)
    assert again.complete and store.has_success(run)


def test_unreadable_directory_in_the_run_fails_the_upload(
    store: RecordingStore, run_dir: Path, run: RunId, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run subdirectory that cannot be listed fails the upload (naming it), never skips it."""
    real_scandir = os.scandir
    unreadable = run_dir / "benchmark_results"

    def scandir(path: Any = ".") -> Any:
        if Path(path) == unreadable:
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(StoreError, match="benchmark_results"):
        store.upload_run(run_dir, run, success_text="1\n")
    monkeypatch.undo()
    assert not store.has_success(run)


def test_upload_of_a_missing_run_dir_fails_without_success(
    store: RecordingStore, tmp_path: Path, run: RunId
) -> None:
    """A run directory that does not exist is an error, not an empty run vouched for by SUCCESS."""
    with pytest.raises(StoreError, match="no-such-run-dir"):
        store.upload_run(tmp_path / "no-such-run-dir", run, success_text="1\n")
    assert store.writes == []
    assert not store.has_success(run)


# --- listing -----------------------------------------------------------------------------------


def put_run(store: LocalStore, name: str, *, success: bool) -> None:
    """A run in the store with one object, and SUCCESS if asked."""
    store.put_bytes(f"{COMPLETE}/{name}/run.json", b"{}")
    if success:
        store.put_bytes(f"{COMPLETE}/{name}/SUCCESS", b"1\n")


def test_list_runs_in_name_order_ignoring_odd_names(
    store: RecordingStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """list_runs returns valid runs in name order; other names are logged and skipped."""
    names = [
        "_snoop_20260105_2000_v1.0-3-gccc",
        "_snoop_20251230_2000_v0.9-1-gaaa",
        "_snoop_20260101_2000_v1.0-0-gbbb",
    ]
    for name in [*names, "not_a_run", "_snoop_bad", "_snoop_20260101_2000_"]:
        put_run(store, name, success=True)
    (tmp_path / "bucket" / COMPLETE / "stray-file").write_text("x")
    with caplog.at_level(logging.WARNING, logger="bench.store.base"):
        runs = store.list_runs()
    assert [r.name for r in runs] == sorted(names)
    assert all(isinstance(r, RunId) for r in runs)
    assert "not_a_run" in caplog.text
    assert "_snoop_bad" in caplog.text


def test_list_runs_skips_empty_run_directories(store: RecordingStore, tmp_path: Path) -> None:
    """A run directory with no object in it (a dead upload's leftover) is not a run."""
    put_run(store, RUN, success=False)
    (tmp_path / "bucket" / COMPLETE / "_snoop_20260102_2000_v1.0-1-gdef").mkdir()
    assert [r.name for r in store.list_runs()] == [RUN]


def test_listing_failure_raises_store_error(tmp_path: Path) -> None:
    """A prefix that cannot be listed (here: an object where a directory belongs) is an error."""
    store = LocalStore(tmp_path / "bucket")
    store.put_bytes("complete_results/snoop_results", b"not a directory")
    with pytest.raises(StoreError, match="snoop_results"):
        store.list_runs()


def test_empty_or_missing_store_lists_no_run(tmp_path: Path) -> None:
    """A store directory that does not exist yet has no runs and no successful run."""
    store = LocalStore(tmp_path / "nothing-here")
    assert store.list_runs() == []
    assert store.newest_successful_run() is None


def test_newest_successful_run_skips_newer_runs_without_success(store: RecordingStore) -> None:
    """The newest run with SUCCESS is chosen; a newer one still uploading (no SUCCESS) is not."""
    put_run(store, "_snoop_20260101_2000_v1.0-0-gaaa", success=True)
    put_run(store, "_snoop_20260105_2000_v1.0-1-gbbb", success=True)
    put_run(store, "_snoop_20260108_2000_v1.0-2-gccc", success=False)
    newest = store.newest_successful_run()
    assert newest == parse_run_name("_snoop_20260105_2000_v1.0-1-gbbb")


def test_newest_successful_run_none_when_no_success(store: RecordingStore) -> None:
    """Runs without SUCCESS anywhere: no successful run."""
    put_run(store, "_snoop_20260101_2000_v1.0-0-gaaa", success=False)
    assert store.newest_successful_run() is None


def test_has_success(store: RecordingStore, run_dir: Path, run: RunId) -> None:
    """has_success is False before the upload and True after it."""
    assert not store.has_success(run)
    store.upload_run(run_dir, run, success_text="1\n")
    assert store.has_success(run)
    assert store.newest_successful_run() == run


# --- open_store, keys, failures ----------------------------------------------------------------


def test_open_store_file_url_gives_a_local_store(tmp_path: Path) -> None:
    """``file:///path`` (percent-encoded too) opens a LocalStore on that directory."""
    base = tmp_path / "my store"
    store = open_store(base.as_uri())
    assert isinstance(store, LocalStore)
    assert store.base == base
    assert store.url == base.as_uri()
    assert store.location("a/b") == base.as_uri() + "/a/b"


@pytest.mark.parametrize("url", ["ftp://x", "gopher://host/path", "just-a-path"])
def test_open_store_rejects_unknown_schemes(url: str) -> None:
    """An unsupported URL scheme raises StoreError naming the URL."""
    with pytest.raises(StoreError) as info:
        open_store(url)
    assert repr(url) in str(info.value)


def test_keys_cannot_escape_the_store(store: RecordingStore, tmp_path: Path) -> None:
    """A key climbing out with ``..`` is refused before anything is written."""
    with pytest.raises(StoreError, match="escapes"):
        store.put_bytes("../outside", b"x")
    assert not (tmp_path / "outside").exists()


def test_stat_of_a_missing_key_is_none(store: RecordingStore) -> None:
    """stat() of an absent key is None, also when a "parent" of the key is an object."""
    store.put_bytes("a/object", b"x")
    assert store.stat("a/missing") is None
    assert store.stat("a/object/below") is None
    info = store.stat("a/object")
    assert info is not None and info.size == 1


def test_writes_leave_no_temporary_files(
    store: RecordingStore, run_dir: Path, run: RunId, tmp_path: Path
) -> None:
    """Atomic writes clean up: after an upload the store holds only the objects."""
    store.upload_run(run_dir, run, success_text="1\n")
    assert not [k for k in stored_keys(tmp_path / "bucket") if ".partial" in k]


def _unwritable_base(tmp_path: Path) -> Path:
    """A store base that cannot be written: read-only if that works, else below a regular file."""
    readonly = tmp_path / "readonly"
    readonly.mkdir()
    readonly.chmod(0o555)
    if not os.access(readonly, os.W_OK):  # not root: permissions are enforced
        return readonly / "store"
    blocker = tmp_path / "a-regular-file"
    blocker.write_text("not a directory")
    return blocker / "store"


@pytest.mark.parametrize(
    "write",
    [
        lambda store, src: store.put_bytes("k/SUCCESS", b"1"),
        lambda store, src: store.put_file("k/data.csv", src),
    ],
    ids=["put_bytes", "put_file"],
)
def test_write_failure_raises_store_error_naming_the_path(
    tmp_path: Path, write: Callable[[LocalStore, Path], None]
) -> None:
    """A store directory that cannot be written raises StoreError naming the target path."""
    base = _unwritable_base(tmp_path)
    src = tmp_path / "src.csv"
    src.write_text("a\n")
    store = LocalStore(base)
    try:
        with pytest.raises(StoreError) as info:
            write(store, src)
    finally:
        (tmp_path / "readonly").chmod(0o755)
    assert str(base.resolve() / "k") in str(info.value)


def test_upload_to_an_unwritable_store_fails_without_success(
    tmp_path: Path, run_dir: Path, run: RunId
) -> None:
    """upload_run into a store it cannot write raises StoreError (not a bare OSError)."""
    store = RecordingStore(_unwritable_base(tmp_path))
    try:
        with pytest.raises(StoreError, match="cannot write"):
            store.upload_run(run_dir, run, success_text="1\n")
    finally:
        (tmp_path / "readonly").chmod(0o755)
    assert ("bytes", CPREFIX + "SUCCESS") not in store.writes
