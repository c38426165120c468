"""Resource faults: each gives one clear line naming the cause and the fix."""

from __future__ import annotations

import errno
import subprocess
from pathlib import Path

import pytest

from bench.errors import ExitCode, StoreError, WorkDirError, describe_os_error
from bench.markers import WorkDir
from bench.runs import parse_run_name
from bench.store import LocalStore
from tests.conftest import Host


def test_a_full_disk_names_the_device_and_the_fix() -> None:
    """ENOSPC (a real one, from /dev/full) says no space is left and what to free."""
    with pytest.raises(OSError) as caught, open("/dev/full", "wb") as fh:
        fh.write(b"x" * 4096)
        fh.flush()
    message = describe_os_error(caught.value, "/data/tezos-benchmarks")
    assert "no space left on the device holding /data/tezos-benchmarks" in message
    assert "free some space" in message


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (errno.EROFS, ["read-only file system", "remount it read-write"]),
        (errno.EACCES, ["permission denied", "chown/chmod"]),
        (errno.EDQUOT, ["quota exceeded"]),
    ],
)
def test_file_system_errors_name_the_cause_and_the_fix(code: int, words: list[str]) -> None:
    """Each errno of a read-only, forbidden or over-quota directory has its own line."""
    message = describe_os_error(OSError(code, "x"), "/srv/root")
    assert "/srv/root" in message and "\n" not in message
    for word in words:
        assert word in message


def test_a_read_only_work_directory_is_refused_with_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A work directory on a read-only file system: one line, before anything is written."""

    def read_only(self: Path, data: bytes) -> int:
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    monkeypatch.setattr(Path, "write_bytes", read_only)
    with pytest.raises(WorkDirError) as caught:
        WorkDir(tmp_path).ensure()
    assert "read-only file system" in str(caught.value)
    assert str(tmp_path) in str(caught.value)


def test_a_full_store_fails_the_upload_with_the_cause(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The local store's disk full: StoreError saying so, with the object's path."""
    import shutil

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    run_dir = tmp_path / "run"
    (run_dir / "inference_results").mkdir(parents=True)
    (run_dir / "inference_results" / "inferred_a.csv").write_text("a\n1.\n")
    monkeypatch.setattr(shutil, "copyfile", full)
    store = LocalStore(tmp_path / "store")
    with pytest.raises(StoreError) as caught:
        store.upload_run(
            run_dir, parse_run_name("_snoop_20260101_2000_v1-0-gabc"), success_text="1\n"
        )
    assert "no space left" in str(caught.value)


def test_a_missing_repository_names_the_repository_to_check(host: Host, tmp_path: Path) -> None:
    """No checkout and a repository that does not exist: one line naming it."""
    missing = tmp_path / "nowhere" / "repo.git"
    host.configure(repository=str(missing), build_command="true", benchmark_command="true")
    done = host.run("cronjob")
    assert done.returncode == ExitCode.FAILED
    [failed] = host.outbox("run_failed")
    assert "step update-checkout" in failed
    assert f"check reference.repository ({missing})" in failed


def test_a_checkout_without_its_remote_says_how_to_add_it(host: Host) -> None:
    """The checkout lost its `origin`: the report gives the `git remote add` to run."""
    assert host.run("cronjob").returncode == 0
    checkout = host.root / "demo-checkout"
    subprocess.run(["git", "-C", str(checkout), "remote", "remove", "origin"], check=True)
    done = host.run("cronjob")
    assert done.returncode == ExitCode.FAILED
    failed = host.outbox("run_failed")[-1]
    assert f"git -C {checkout} remote add origin {host.root / 'demo-origin'}" in failed


def test_a_missing_build_tool_says_command_not_found_and_the_fix(host: Host) -> None:
    """A build tool that is not installed: exit 127 explained, with the key to fix."""
    host.configure(build_command="no-such-build-tool --all")
    done = host.run("cronjob")
    assert done.returncode == ExitCode.FAILED
    [failed] = host.outbox("run_failed")
    assert "command not found (exit status 127)" in failed
    assert "no-such-build-tool" in failed
    assert "install the tool on this host or fix reference.build_command" in failed
