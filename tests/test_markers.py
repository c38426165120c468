"""Tests of the work-directory protocol: marker files, the lock held across processes, states."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import pytest

from bench.errors import ExitCode, GuardError, WorkDirError
from bench.markers import State, WorkDir, atomic_write, create_exclusive
from bench.runs import RunId, parse_run_name

RUN = parse_run_name("_snoop_20230321_2000_v16.0-rc1-1801-g2a3b4c5d6e")
OLDER = parse_run_name("_snoop_20230316_1052_v16.0-rc1-1722-g1f07d32f94-dirty")

#: A child that takes the lock, says so, and keeps it until it is killed.
HOLD_LOCK = """
import sys, time
from filelock import FileLock
lock = FileLock(sys.argv[1])
lock.acquire()
print("locked", flush=True)
time.sleep(120)
"""

#: A child that tries the lock once and says whether it got it.
TRY_LOCK = """
import sys
from filelock import FileLock, Timeout
lock = FileLock(sys.argv[1], timeout=0)
try:
    lock.acquire()
except Timeout:
    print("busy")
else:
    lock.release()
    print("free")
"""

LockHolder = Callable[[Path], "subprocess.Popen[str]"]


@pytest.fixture
def wd(tmp_path: Path) -> WorkDir:
    """An empty work directory with its snoop_results/."""
    workdir = WorkDir(tmp_path / "root")
    workdir.ensure()
    return workdir


@pytest.fixture
def hold_lock() -> Iterator[LockHolder]:
    """Start a real child process holding a lock file; every child is killed at teardown."""
    children: list[subprocess.Popen[str]] = []

    def start(path: Path) -> subprocess.Popen[str]:
        child = subprocess.Popen(
            [sys.executable, "-c", HOLD_LOCK, str(path)], stdout=subprocess.PIPE, text=True
        )
        children.append(child)
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "locked"
        return child

    yield start
    for child in children:
        if child.poll() is None:
            child.kill()
        child.wait(timeout=10)
        if child.stdout is not None:
            child.stdout.close()


def try_lock_elsewhere(path: Path) -> str:
    """Whether another process can take the lock at ``path`` right now: "free" or "busy"."""
    done = subprocess.run(
        [sys.executable, "-c", TRY_LOCK, str(path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return done.stdout.strip()


def make_run_dir(wd: WorkDir, run: RunId, *files: str) -> Path:
    """Create the run's directory with the given (empty) files in it."""
    run_dir = wd.run_dir(run)
    run_dir.mkdir(parents=True)
    for name in files:
        (run_dir / name).write_text("", encoding="utf-8")
    return run_dir


def clues_text(clues: list[str]) -> str:
    return "\n".join(clues)


# --- the states of DESIGN.md's table ----------


def test_idle_when_nothing_is_there(wd: WorkDir) -> None:
    """No cron_res, no current_run_dir and a free lock: idle, with no clues."""
    state = wd.inspect()
    assert state.state is State.IDLE
    assert state.current_run is None
    assert state.last_run is None
    assert state.clues == []


def test_idle_after_a_success_reports_last_run(wd: WorkDir) -> None:
    """After a successful run (only last_run_dir, old ``snoop_results/`` form): idle, last known."""
    make_run_dir(wd, RUN, "SUCCESS", "cron_res")
    wd.last_run_dir.write_text(f"snoop_results/{RUN.name}\n", encoding="utf-8")
    state = wd.inspect()
    assert state.state is State.IDLE
    assert state.last_run == RUN


def test_garbage_last_run_dir_does_not_change_the_state(wd: WorkDir) -> None:
    """An unreadable last_run_dir is ignored by inspect (still idle, no last run)."""
    wd.last_run_dir.write_text("../../etc\n", encoding="utf-8")
    state = wd.inspect()
    assert state.state is State.IDLE
    assert state.last_run is None


def test_running_while_another_process_holds_the_lock_then_crashed_when_it_dies(
    wd: WorkDir, hold_lock: LockHolder
) -> None:
    """cron_res + lock held by a live process is running; once it is killed, crashed."""
    holder = hold_lock(wd.lock_path)
    wd.cron_res.write_text("step 1\n", encoding="utf-8")
    wd.write_marker(wd.current_run_dir, RUN)
    make_run_dir(wd, RUN)

    running = wd.inspect()
    assert running.state is State.RUNNING
    assert running.current_run == RUN
    assert "cron_res present" in clues_text(running.clues)

    holder.kill()
    holder.wait(timeout=10)
    crashed = wd.inspect()
    assert crashed.state is State.CRASHED
    assert crashed.current_run == RUN
    assert "cron_res present" in clues_text(crashed.clues)
    assert RUN.name in clues_text(crashed.clues)


def test_lock_held_wins_over_failed_markers(wd: WorkDir, hold_lock: LockHolder) -> None:
    """A held lock means running even if the markers alone would say failed."""
    hold_lock(wd.lock_path)
    wd.write_marker(wd.current_run_dir, RUN)
    make_run_dir(wd, RUN, "cron_res")
    assert wd.inspect().state is State.RUNNING


@pytest.mark.parametrize("log", ["cron_res", "cron_res_errors"])
def test_crashed_when_logs_remain_and_lock_is_free(wd: WorkDir, log: str) -> None:
    """cron_res or cron_res_errors at the root with a free lock is a crash; the clue names it."""
    (wd.root / log).write_text("partial output\n", encoding="utf-8")
    state = wd.inspect()
    assert state.state is State.CRASHED
    assert re.search(rf"\b{log} present \(modified \d+ s ago\)", clues_text(state.clues))


def test_crashed_when_current_run_has_no_directory(wd: WorkDir) -> None:
    """current_run_dir naming a run whose directory does not exist: crashed, clue says so."""
    wd.write_marker(wd.current_run_dir, RUN)
    state = wd.inspect()
    assert state.state is State.CRASHED
    assert state.current_run == RUN
    text = clues_text(state.clues)
    assert f"current_run_dir names {RUN.name}" in text
    assert f"{wd.run_dir(RUN)} does not exist" in text


def test_crashed_when_current_run_directory_has_no_logs(wd: WorkDir) -> None:
    """current_run_dir naming a run directory without logs moved in: crashed, PID clue given."""
    run_dir = make_run_dir(wd, RUN)
    (run_dir / "STARTED").write_text("4242\n", encoding="utf-8")
    wd.write_marker(wd.current_run_dir, RUN)
    state = wd.inspect()
    assert state.state is State.CRASHED
    text = clues_text(state.clues)
    assert f"current_run_dir names {RUN.name}" in text
    assert "STARTED holds PID 4242" in text


def test_crashed_when_finish_was_cut_short_after_success(wd: WorkDir) -> None:
    """Logs and SUCCESS in the run dir but current_run_dir not promoted: crashed, not failed."""
    make_run_dir(wd, RUN, "cron_res", "SUCCESS")
    wd.write_marker(wd.current_run_dir, RUN)
    assert wd.inspect().state is State.CRASHED


def test_root_logs_make_it_crashed_even_if_failure_was_recorded(wd: WorkDir) -> None:
    """cron_res at the root wins over a recorded failure: the last run did not finish."""
    make_run_dir(wd, RUN, "cron_res")
    wd.write_marker(wd.current_run_dir, RUN)
    wd.cron_res.write_text("", encoding="utf-8")
    assert wd.inspect().state is State.CRASHED


@pytest.mark.parametrize(
    "content",
    [b"not a run name\n", b"../../etc/passwd\n", b"", b"\xff\xfe\x00garbage", b"_snoop_x"],
    ids=["words", "traversal", "empty", "binary", "truncated"],
)
def test_crashed_when_current_run_dir_holds_garbage(wd: WorkDir, content: bytes) -> None:
    """A current_run_dir that names no run (text or binary) is a crash with a clue naming it."""
    wd.current_run_dir.write_bytes(content)
    state = wd.inspect()
    assert state.state is State.CRASHED
    assert state.current_run is None
    assert str(wd.current_run_dir) in clues_text(state.clues)


def test_failed_when_run_has_logs_and_no_success(wd: WorkDir) -> None:
    """current_run_dir naming a run with its logs moved in and no SUCCESS: failed."""
    make_run_dir(wd, RUN, "cron_res", "cron_res_errors", "STARTED")
    wd.write_marker(wd.current_run_dir, RUN)
    wd.last_run_dir.write_text(OLDER.name + "\n", encoding="utf-8")
    state = wd.inspect()
    assert state.state is State.FAILED
    assert state.current_run == RUN
    assert state.last_run == OLDER
    assert f"current_run_dir names {RUN.name}" in clues_text(state.clues)


# --- the lock ----------


def test_lock_refused_while_another_process_holds_it(wd: WorkDir, hold_lock: LockHolder) -> None:
    """lock() raises GuardError(GUARDED_RUNNING) with clues, and never runs the body."""
    hold_lock(wd.lock_path)
    wd.cron_res.write_text("", encoding="utf-8")
    entered = []
    with pytest.raises(GuardError) as info, wd.lock():
        entered.append(True)
    assert entered == []
    err = info.value
    assert err.exit_code == ExitCode.GUARDED_RUNNING
    assert int(err.exit_code) == 3
    assert str(wd.lock_path) in str(err)
    assert "previous run not over" in str(err)
    assert "cron_res present" in clues_text(err.clues)


def test_lock_refused_with_garbage_marker_still_a_guard_error(
    wd: WorkDir, hold_lock: LockHolder
) -> None:
    """A garbage current_run_dir does not turn the refusal into another exception."""
    hold_lock(wd.lock_path)
    wd.current_run_dir.write_bytes(b"\xff\xfe")
    with pytest.raises(GuardError) as info, wd.lock():
        pass
    assert str(wd.current_run_dir) in clues_text(info.value.clues)


def test_lock_excludes_other_processes_and_is_released(wd: WorkDir) -> None:
    """Inside lock() another process cannot take it; after it, another process can."""
    assert try_lock_elsewhere(wd.lock_path) == "free"
    with wd.lock():
        assert try_lock_elsewhere(wd.lock_path) == "busy"
        assert wd.inspect().state is State.RUNNING
    assert try_lock_elsewhere(wd.lock_path) == "free"
    assert wd.lock_is_free()


def test_lock_is_released_when_the_body_raises(wd: WorkDir) -> None:
    """An exception inside lock() releases the lock on the way out."""
    with pytest.raises(RuntimeError), wd.lock():
        raise RuntimeError("boom")
    assert try_lock_elsewhere(wd.lock_path) == "free"


def test_lock_is_free_reports_a_held_lock(wd: WorkDir, hold_lock: LockHolder) -> None:
    """lock_is_free() is False while another process holds the lock, True after it dies."""
    holder = hold_lock(wd.lock_path)
    assert not wd.lock_is_free()
    holder.kill()
    holder.wait(timeout=10)
    assert wd.lock_is_free()


# --- anomalies ----------

STAMP_LINE = re.compile(r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\] .*\.")


def test_append_anomaly_line_format(wd: WorkDir) -> None:
    """An anomaly is written as ``[YYYY-MM-DD HH:MM:SS] message.`` and the line is returned."""
    line = wd.append_anomaly("previous run not over", now=datetime(2023, 3, 21, 20, 0, 5))
    assert line == "[2023-03-21 20:00:05] previous run not over."
    assert wd.anomalies.read_text(encoding="utf-8") == line + "\n"


def test_append_anomaly_does_not_double_the_final_dot(wd: WorkDir) -> None:
    """A message already ending with a dot (and trailing spaces) gets no second dot."""
    line = wd.append_anomaly("run refused.  \n", now=datetime(2023, 1, 2, 3, 4, 5))
    assert line == "[2023-01-02 03:04:05] run refused."


def test_append_anomaly_appends_and_never_truncates(wd: WorkDir) -> None:
    """Existing content is kept and each call adds one line at the end, in order."""
    wd.anomalies.write_text("[2020-01-01 00:00:00] written by the old scripts.\n")
    wd.append_anomaly("first", now=datetime(2023, 3, 21, 20, 0, 0))
    wd.append_anomaly("second", now=datetime(2023, 3, 21, 20, 1, 0))
    assert wd.anomalies.read_text(encoding="utf-8").splitlines() == [
        "[2020-01-01 00:00:00] written by the old scripts.",
        "[2023-03-21 20:00:00] first.",
        "[2023-03-21 20:01:00] second.",
    ]


def test_append_anomaly_keeps_one_entry_per_line(wd: WorkDir) -> None:
    """A multi-line message is folded into one stamped line (no unstamped lines in the log)."""
    wd.append_anomaly("step failed:\n  stderr tail\r\nlast line", now=datetime(2023, 3, 21))
    lines = wd.anomalies.read_text(encoding="utf-8").splitlines()
    assert lines == ["[2023-03-21 00:00:00] step failed: stderr tail last line."]


def test_append_anomaly_uses_the_current_time_by_default(wd: WorkDir) -> None:
    """Without ``now``, the stamp is the local time of the call."""
    before = datetime.now().replace(microsecond=0)
    line = wd.append_anomaly("x")
    after = datetime.now()
    assert STAMP_LINE.fullmatch(line)
    stamp = datetime.strptime(line[1:20], "%Y-%m-%d %H:%M:%S")
    assert before <= stamp <= after


# --- files ----------


def test_atomic_write_creates_and_replaces_without_temp_files(tmp_path: Path) -> None:
    """atomic_write creates, then replaces the content, leaving only the target file."""
    target = tmp_path / "current_run_dir"
    atomic_write(target, "one\n")
    assert target.read_text(encoding="utf-8") == "one\n"
    atomic_write(target, "two\n")
    assert target.read_text(encoding="utf-8") == "two\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["current_run_dir"]


def test_atomic_write_failure_keeps_old_content_and_no_temp_file(tmp_path: Path) -> None:
    """A write that fails midway leaves the old content and no temporary file behind."""
    target = tmp_path / "last_run_dir"
    atomic_write(target, "old\n")
    with pytest.raises(UnicodeEncodeError):
        atomic_write(target, "bad \udc80 surrogate")
    assert target.read_text(encoding="utf-8") == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last_run_dir"]


def test_create_exclusive_refuses_to_overwrite(tmp_path: Path) -> None:
    """create_exclusive writes a new file, and raises FileExistsError rather than overwrite."""
    target = tmp_path / "STARTED"
    create_exclusive(target, "123\n")
    assert target.read_text(encoding="utf-8") == "123\n"
    with pytest.raises(FileExistsError):
        create_exclusive(target, "456\n")
    assert target.read_text(encoding="utf-8") == "123\n"


def test_write_and_read_marker_round_trip(wd: WorkDir) -> None:
    """write_marker stores the bare name and a newline; read_marker gives the RunId back."""
    wd.write_marker(wd.current_run_dir, RUN)
    assert wd.current_run_dir.read_text(encoding="utf-8") == RUN.name + "\n"
    assert wd.read_marker(wd.current_run_dir) == RUN


def test_read_marker_absent_is_none_and_garbage_is_an_error(wd: WorkDir) -> None:
    """A missing marker reads as None; hostile or binary content raises WorkDirError."""
    assert wd.read_marker(wd.last_run_dir) is None
    wd.last_run_dir.write_text("../../x\n", encoding="utf-8")
    with pytest.raises(WorkDirError, match="last_run_dir"):
        wd.read_marker(wd.last_run_dir)
    wd.last_run_dir.write_bytes(b"\x80\x81")
    with pytest.raises(WorkDirError, match="last_run_dir"):
        wd.read_marker(wd.last_run_dir)


def test_promote_current_to_last_moves_the_marker(wd: WorkDir) -> None:
    """promote_current_to_last replaces last_run_dir by current_run_dir, which disappears."""
    wd.write_marker(wd.last_run_dir, OLDER)
    wd.write_marker(wd.current_run_dir, RUN)
    wd.promote_current_to_last()
    assert not wd.current_run_dir.exists()
    assert wd.read_marker(wd.last_run_dir) == RUN
    assert wd.inspect().state is State.IDLE


def test_promote_without_current_marker_fails(wd: WorkDir) -> None:
    """Promoting when there is no current_run_dir raises and leaves last_run_dir alone."""
    wd.write_marker(wd.last_run_dir, OLDER)
    with pytest.raises(FileNotFoundError):
        wd.promote_current_to_last()
    assert wd.read_marker(wd.last_run_dir) == OLDER


def test_ensure_creates_snoop_results(tmp_path: Path) -> None:
    """ensure() creates the work directory and its snoop_results/ (parents included)."""
    workdir = WorkDir(tmp_path / "a" / "b")
    workdir.ensure()
    assert (tmp_path / "a" / "b" / "snoop_results").is_dir()


def test_ensure_on_a_file_is_a_workdir_error(tmp_path: Path) -> None:
    """A root that is a regular file gives a WorkDirError naming the path, not an OSError."""
    (tmp_path / "root").write_text("", encoding="utf-8")
    with pytest.raises(WorkDirError, match="cannot use the work directory") as caught:
        WorkDir(tmp_path / "root").ensure()
    assert str(tmp_path / "root") in str(caught.value)


def test_run_dir_is_under_snoop_results(wd: WorkDir) -> None:
    """A run's directory is ``<root>/snoop_results/<run>``."""
    assert wd.run_dir(RUN) == wd.root / "snoop_results" / RUN.name
