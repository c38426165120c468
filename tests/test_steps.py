"""Tests of bench.steps: supervised child processes, with real children and real signals."""

from __future__ import annotations

import os
import signal
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bench import interrupts
from bench.errors import InterruptedRun, StepError
from bench.steps import ProcessResult, run_supervised, tail

PY = sys.executable
#: Bounds on how long something may take before the test calls it broken. Only ever used as
#: generous upper limits (the children involved would otherwise live for 300 s), never as a
#: measure of speed.
PATIENCE = 60.0


# --- helpers -----------------------------------------------------------------------------------


@dataclass
class Outcome:
    """A finished supervised run: its result, the pgid seen by on_start, the four files."""

    result: ProcessResult
    pgid: int
    out: bytes
    err: bytes
    tee_out: bytes
    tee_err: bytes
    elapsed: float


def supervise(
    command: str | Sequence[str],
    cwd: Path,
    *,
    timeout: float = PATIENCE,
    grace: float = 5.0,
    env: dict[str, str] | None = None,
    on_start: Callable[[int], None] | None = None,
    tee_prefix: bytes = b"",
) -> Outcome:
    """Run ``command`` under run_supervised with step files and tee files in ``cwd``."""
    files = {name: cwd / name for name in ("step.out", "step.err", "cron_res", "cron_res_errors")}
    files["cron_res"].write_bytes(tee_prefix)
    files["cron_res_errors"].write_bytes(tee_prefix)
    seen: list[int] = []

    def started(pgid: int) -> None:
        seen.append(pgid)
        if on_start is not None:
            on_start(pgid)

    t0 = time.monotonic()
    with (
        files["step.out"].open("wb") as out,
        files["step.err"].open("wb") as err,
        files["cron_res"].open("ab") as tee_out,
        files["cron_res_errors"].open("ab") as tee_err,
    ):
        result = run_supervised(
            command,
            cwd=cwd,
            env=os.environ.copy() if env is None else env,
            timeout=timeout,
            grace=grace,
            stdout=out,
            stderr=err,
            tee_stdout=tee_out,
            tee_stderr=tee_err,
            on_start=started,
        )
    elapsed = time.monotonic() - t0
    assert len(seen) == 1, "on_start must be called exactly once"
    return Outcome(
        result,
        seen[0],
        files["step.out"].read_bytes(),
        files["step.err"].read_bytes(),
        files["cron_res"].read_bytes(),
        files["cron_res_errors"].read_bytes(),
        elapsed,
    )


def wait_for_file(path: Path, limit: float = PATIENCE) -> str:
    """The content of ``path`` once it exists (written with tmp + rename by the children)."""
    end = time.monotonic() + limit
    while not path.exists():
        if time.monotonic() > end:
            raise AssertionError(f"{path} never appeared")
        time.sleep(0.02)
    return path.read_text()


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, pgrp) of ``pid`` from /proc, None if it does not exist."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return fields[0], int(fields[2])


def pid_alive(pid: int) -> bool:
    """True if ``pid`` is a process that still runs (a zombie waiting for init is dead)."""
    stat = _proc_stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def live_members(pgid: int) -> list[int]:
    """Processes of group ``pgid`` that are not zombies."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _proc_stat(int(entry.name))
            if stat is not None and stat[1] == pgid and stat[0] not in ("Z", "X"):
                members.append(int(entry.name))
    return members


def group_gone(pgid: int, limit: float = PATIENCE) -> bool:
    """True once ``os.killpg(pgid, 0)`` raises ProcessLookupError (within a generous bound).

    A SIGKILLed process stays a zombie until init reaps it, and init on a busy machine may
    take its time: the kill itself is checked, without waiting, by :func:`assert_group_dead`.
    """
    end = time.monotonic() + limit
    while True:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        if time.monotonic() > end:
            return False
        time.sleep(0.05)


def assert_group_dead(pgid: int, *pids: int) -> None:
    """No process of group ``pgid`` (nor any of ``pids``) runs now, and the group disappears."""
    deadline = time.monotonic() + PATIENCE
    # SIGKILL is delivered asynchronously: allow the kernel a moment to finish the kill.
    while (live_members(pgid) or any(pid_alive(p) for p in pids)) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert live_members(pgid) == []
    for pid in pids:
        assert not pid_alive(pid), f"grandchild {pid} survived its step"
    assert group_gone(pgid), f"process group {pgid} still exists"


@pytest.fixture
def reaper() -> Iterator[list[int]]:
    """Pids a test started indirectly; any still alive at teardown are SIGKILLed."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)


def py(code: str) -> list[str]:
    """An argv running ``code`` (dedented) in this Python."""
    return [PY, "-c", textwrap.dedent(code)]


# A grandchild that writes its pid to gc.pid (tmp + rename), then sleeps.
SH_GRANDCHILD = "sleep 300 & echo $! > gc.tmp && mv gc.tmp gc.pid"
PY_GRANDCHILD = py(
    """
    import os, time
    pid = os.fork()
    if pid == 0:
        with open("gc.tmp", "w") as fh:
            fh.write(str(os.getpid()))
        os.rename("gc.tmp", "gc.pid")
        time.sleep(300)
        os._exit(0)
    time.sleep(300)
    """
)


# --- exit statuses and how commands are run ----------------------------------------------------


def test_exit_zero_is_ok(tmp_path: Path) -> None:
    """A command exiting 0 gives ok, exit_code 0, no signal, no timeout, no leftovers."""
    r = supervise(["true"], tmp_path).result
    assert r.ok
    assert (r.exit_code, r.signal, r.timed_out, r.leftovers_killed) == (0, None, False, False)
    assert r.describe() == "exit status 0"


def test_nonzero_exit_is_reported(tmp_path: Path) -> None:
    """Exit status 3 gives exit_code 3, not ok, and describe() says "exit status 3"."""
    r = supervise("exit 3", tmp_path).result
    assert not r.ok
    assert r.exit_code == 3
    assert r.signal is None
    assert not r.timed_out
    assert r.describe() == "exit status 3"


def test_shell_string_runs_through_sh(tmp_path: Path) -> None:
    """A string command is interpreted by /bin/sh: expansions, redirections, ``;`` all work."""
    o = supervise('echo $((1 + 2)); echo "to err" >&2; exit 4', tmp_path)
    assert o.out == b"3\n"
    assert o.err == b"to err\n"
    assert o.result.exit_code == 4


def test_argv_list_runs_without_shell(tmp_path: Path) -> None:
    """A list command is an argv: no word splitting, no expansion of ``$`` or ``*``."""
    o = supervise(["printf", "%s|", "a b", "$HOME", "*"], tmp_path)
    assert o.result.ok
    assert o.out == b"a b|$HOME|*|"


def test_cwd_and_env_are_exactly_those_given(tmp_path: Path) -> None:
    """The child runs in ``cwd`` with exactly ``env``: nothing inherited from ours."""
    work = tmp_path / "work dir"
    work.mkdir()
    os.environ["BENCH_TEST_LEAK"] = "leaked"
    try:
        o = supervise(
            py(
                """
                import os
                print(os.getcwd())
                print(os.environ.get("STEP_VAR"), os.environ.get("BENCH_TEST_LEAK"))
                """
            ),
            work,
            env={"STEP_VAR": "given"},
        )
    finally:
        del os.environ["BENCH_TEST_LEAK"]
    assert o.result.ok, o.err
    assert o.out.decode().splitlines() == [str(work.resolve()), "given None"]


def test_stdin_is_dev_null(tmp_path: Path) -> None:
    """The child's stdin is /dev/null (not ours): a command reading it ends at once."""
    code = """
        import os, sys
        print(os.path.samestat(os.fstat(0), os.stat("/dev/null")), repr(sys.stdin.read()))
        """
    # Give this process a stdin with content, so that inheriting it would show.
    ours = tmp_path / "our-stdin"
    ours.write_text("typed into the supervisor\n")
    saved = os.dup(0)
    fd = os.open(ours, os.O_RDONLY)
    os.dup2(fd, 0)
    os.close(fd)
    try:
        o = supervise(py(code), tmp_path)
    finally:
        os.dup2(saved, 0)
        os.close(saved)
    assert o.result.ok, o.err
    assert o.out == b"True ''\n"


def test_child_leads_its_own_session_and_group(tmp_path: Path) -> None:
    """The child gets a new session and process group (its pid), which on_start receives."""
    o = supervise(py("import os; print(os.getpid(), os.getpgid(0), os.getsid(0))"), tmp_path)
    pid, pgid, sid = map(int, o.out.split())
    assert pid == pgid == sid == o.pgid
    assert o.pgid != os.getpgrp()


def test_leader_killed_by_signal(tmp_path: Path) -> None:
    """A leader killed by a signal: signal set, exit_code None, not ok, described by name."""
    r = supervise(py("import os, signal; os.kill(os.getpid(), signal.SIGUSR1)"), tmp_path).result
    assert r.signal == signal.SIGUSR1
    assert r.exit_code is None
    assert not r.ok
    assert not r.timed_out
    assert r.describe() == "killed by signal SIGUSR1"


def test_describe_survives_unnamed_signal_numbers() -> None:
    """describe() names a signal the enum does not know (a real-time one) by its number."""
    r = ProcessResult(
        exit_code=None,
        signal=signal.SIGRTMIN + 3,
        timed_out=False,
        wall_s=0.0,
        user_s=0.0,
        sys_s=0.0,
        max_rss_kb=0,
        leftovers_killed=False,
    )
    assert r.describe() == f"killed by signal {int(signal.SIGRTMIN) + 3}"


# --- output capture ----------------------------------------------------------------------------


def test_large_interleaved_output_is_complete_in_step_and_tee_files(tmp_path: Path) -> None:
    """2 MB on each stream, written interleaved, land whole in the step files and the tees."""
    code = """
        import sys
        out, err = sys.stdout.buffer, sys.stderr.buffer
        for i in range(40_000):
            out.write(b"out %07d %s\\n" % (i, b"o" * 40))
            err.write(b"err %07d %s\\n" % (i, b"e" * 40))
            if i % 100 == 0:
                out.flush()
                err.flush()
        """
    expected_out = b"".join(b"out %07d %s\n" % (i, b"o" * 40) for i in range(40_000))
    expected_err = b"".join(b"err %07d %s\n" % (i, b"e" * 40) for i in range(40_000))
    assert len(expected_out) > 2_000_000
    o = supervise(py(code), tmp_path, tee_prefix=b"earlier step\n")
    assert o.result.ok, o.err[-500:]
    assert o.out == expected_out
    assert o.err == expected_err
    # The tees are the run's logs: appended to, never truncated.
    assert o.tee_out == b"earlier step\n" + expected_out
    assert o.tee_err == b"earlier step\n" + expected_err


def test_output_reaches_the_tee_while_the_child_runs(tmp_path: Path) -> None:
    """Output is copied as it arrives: the child only finishes once its line is in cron_res."""
    tee = tmp_path / "cron_res"

    def watch_tee() -> None:
        end = time.monotonic() + PATIENCE
        while time.monotonic() < end:
            if b"hello\n" in tee.read_bytes():
                (tmp_path / "go.tmp").write_text("go")
                os.rename(tmp_path / "go.tmp", tmp_path / "go")
                return
            time.sleep(0.02)

    watcher = threading.Thread(target=watch_tee)
    code = f"""
        import os, sys, time
        print("hello", flush=True)
        end = time.monotonic() + {PATIENCE}
        while not os.path.exists("go"):
            if time.monotonic() > end:
                sys.exit(7)
            time.sleep(0.02)
        print("bye")
        """
    try:
        o = supervise(py(code), tmp_path, on_start=lambda _pgid: watcher.start())
    finally:
        watcher.join()
    assert o.result.exit_code == 0
    assert o.tee_out == b"hello\nbye\n"


# --- timeouts, leftovers, interruptions ---------------------------------------------------------


@pytest.mark.parametrize(
    "command", [SH_GRANDCHILD + "; sleep 300", PY_GRANDCHILD], ids=["sh", "fork"]
)
def test_timeout_kills_the_whole_group(
    tmp_path: Path, command: str | list[str], reaper: list[int]
) -> None:
    """A command over its timeout is stopped with its grandchild; nothing of the group remains."""

    def started(_pgid: int) -> None:
        reaper.append(int(wait_for_file(tmp_path / "gc.pid")))

    o = supervise(command, tmp_path, timeout=1.0, grace=5.0, on_start=started)
    r = o.result
    assert r.timed_out
    assert not r.ok
    assert r.describe() == "timed out"
    assert o.elapsed < 30, "the children sleep 300 s: the timeout of 1 s did not fire"
    assert_group_dead(o.pgid, reaper[0])


def test_child_ignoring_sigterm_is_killed_after_grace(tmp_path: Path) -> None:
    """A leader that survives SIGTERM gets it first, then SIGKILL once the grace period is over."""
    code = """
        import os, signal, time
        signal.signal(signal.SIGTERM, lambda *_: print("got TERM", flush=True))
        open("ready", "w").close()
        for _ in range(300):
            time.sleep(1)
        """
    o = supervise(
        py(code),
        tmp_path,
        timeout=1.0,
        grace=4.0,  # the child's handler must get to run before SIGKILL, even under load
        on_start=lambda _: wait_for_file(tmp_path / "ready"),
    )
    r = o.result
    assert r.timed_out
    assert r.signal == signal.SIGKILL
    assert r.exit_code is None
    assert b"got TERM" in o.out
    assert o.elapsed < 30, "the child sleeps 300 s: it was not killed after the grace period"
    assert_group_dead(o.pgid)


def test_shell_trapping_term_is_killed_with_its_children(tmp_path: Path, reaper: list[int]) -> None:
    """``trap "" TERM`` (inherited by its children) does not save the group from SIGKILL."""

    def started(_pgid: int) -> None:
        reaper.append(int(wait_for_file(tmp_path / "gc.pid")))

    command = f'trap "" TERM; {SH_GRANDCHILD}; sleep 300'
    o = supervise(command, tmp_path, timeout=1.0, grace=1.0, on_start=started)
    assert o.result.timed_out
    assert o.result.signal == signal.SIGKILL
    assert o.elapsed < 30, "the children sleep 300 s: they were not killed"
    assert_group_dead(o.pgid, reaper[0])


@pytest.mark.parametrize(
    "background",
    ["sleep 300 &", "sleep 300 >/dev/null 2>&1 &"],
    ids=["holding-pipes", "detached-output"],
)
def test_leftover_of_a_successful_step_is_killed(
    tmp_path: Path, background: str, reaper: list[int]
) -> None:
    """A step that exits 0 but leaves a grandchild behind: the leftover is killed and reported."""
    command = f"{background} echo $! > gc.tmp && mv gc.tmp gc.pid; echo done"

    def started(_pgid: int) -> None:
        reaper.append(int(wait_for_file(tmp_path / "gc.pid")))

    o = supervise(command, tmp_path, on_start=started)
    assert o.result.ok
    assert o.result.leftovers_killed
    assert o.out == b"done\n"
    assert o.elapsed < 30, "the grandchild sleeps 300 s: it was waited for, not killed"
    assert_group_dead(o.pgid, reaper[0])


class Terminated(Exception):
    """What the test's SIGTERM handler raises, like the pipeline's InterruptedRun."""


@pytest.fixture
def sigterm_raises() -> Iterator[None]:
    """SIGTERM raises Terminated in the main thread; the previous handler is restored after."""

    def handler(signum: int, frame: Any) -> None:
        raise Terminated(signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_exception_while_waiting_stops_the_group_and_propagates(
    tmp_path: Path, sigterm_raises: None, reaper: list[int]
) -> None:
    """SIGTERM to the supervisor (its handler raising) stops the child's group, then re-raises."""
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGTERM))

    def started(pgid: int) -> None:
        reaper.append(int(wait_for_file(tmp_path / "gc.pid")))
        wait_for_file(tmp_path / "echoed")  # not a fixed delay: a loaded machine may lag
        seen.append(pgid)
        timer.start()

    seen: list[int] = []
    t0 = time.monotonic()
    command = SH_GRANDCHILD + "; echo started; : > echoed; sleep 300"
    try:
        with pytest.raises(Terminated):
            supervise(command, tmp_path, timeout=120, on_start=started)
    finally:
        timer.cancel()
        timer.join()
    assert time.monotonic() - t0 < 60, "the exception did not interrupt the wait"
    assert (tmp_path / "step.out").read_bytes() == b"started\n"
    assert_group_dead(seen[0], reaper[0])


def test_exception_in_on_start_stops_the_group_and_propagates(
    tmp_path: Path, reaper: list[int]
) -> None:
    """If on_start raises (e.g. cannot save run.json), the child is stopped, not orphaned."""
    seen: list[int] = []

    def started(pgid: int) -> None:
        reaper.append(int(wait_for_file(tmp_path / "gc.pid")))
        seen.append(pgid)
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        supervise(SH_GRANDCHILD + "; sleep 300", tmp_path, timeout=120, on_start=started)
    assert_group_dead(seen[0], reaper[0])


def test_an_interrupt_while_the_child_is_being_started_still_stops_its_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reaper: list[int]
) -> None:
    """SIGTERM between fork and supervision (inside Popen): kept until the group can be stopped.

    Raised from inside Popen, the interrupt used to leave the step's group running after the
    run ended (seen under load in CI: the benchmark wrote its pid, the test sent SIGTERM before
    the supervisor had left Popen).
    """
    import subprocess

    real_popen = subprocess.Popen
    children: list[int] = []

    def popen_then_sigterm(*args: Any, **kwargs: Any) -> Any:
        proc = real_popen(*args, **kwargs)
        children.append(proc.pid)
        reaper.append(proc.pid)
        os.kill(os.getpid(), signal.SIGTERM)  # the handler runs before os.kill returns
        return proc

    monkeypatch.setattr(subprocess, "Popen", popen_then_sigterm)
    with interrupts.raised_on_signals(), pytest.raises(InterruptedRun, match="SIGTERM"):
        supervise(SH_GRANDCHILD + "; sleep 300", tmp_path, timeout=120)
    assert_group_dead(children[0])


def test_an_interrupt_while_a_finished_step_is_cleaned_up_still_kills_its_leftovers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reaper: list[int]
) -> None:
    """The leader is done, its grandchild not: SIGTERM just then still kills the grandchild."""
    import bench.steps

    real_live_members = bench.steps.live_members
    calls: list[int] = []

    def sigterm_on_first_look(pgid: int) -> list[int]:
        calls.append(pgid)
        if len(calls) == 1:  # the look for leftovers once the leader has exited
            reaper.append(int(wait_for_file(tmp_path / "gc.pid")))
            os.kill(os.getpid(), signal.SIGTERM)
        return real_live_members(pgid)

    monkeypatch.setattr(bench.steps, "live_members", sigterm_on_first_look)
    with interrupts.raised_on_signals(), pytest.raises(InterruptedRun, match="SIGTERM"):
        supervise(SH_GRANDCHILD + "; echo done", tmp_path, timeout=120)
    assert_group_dead(calls[0], reaper[0])
    # The pipes were closed only once nobody read them: had a reader outlived its pipe, it
    # would have copied whatever file took the number next (/proc/*/stat, here) to step.out.
    assert (tmp_path / "step.out").read_bytes() == b"done\n"


def test_output_held_open_outside_the_group_is_let_go(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    reaper: list[int],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A daemon that called setsid keeps the step's stdout open after the group is gone: the
    supervisor stops reading it (says so) and returns, with no reader left on the pipe."""
    import bench.steps

    monkeypatch.setattr(bench.steps, "_PUMP_DRAIN", 0.5)
    daemon = py(
        """
        import os, time
        if os.fork() == 0:
            os.setsid()
            with open("daemon.tmp", "w") as fh:
                fh.write(str(os.getpid()))
            os.rename("daemon.tmp", "daemon.pid")
            time.sleep(300)
            os._exit(0)
        print("leader done", flush=True)
        """
    )
    before = {t.ident for t in threading.enumerate()}

    def started(_pgid: int) -> None:
        reaper.append(int(wait_for_file(tmp_path / "daemon.pid")))

    o = supervise(daemon, tmp_path, on_start=started)

    assert o.result.ok
    assert o.out == b"leader done\n"
    assert pid_alive(reaper[0]), "the daemon left the group: not the supervisor's to kill"
    assert "output is still open" in caplog.text
    deadline = time.monotonic() + 5  # the reaper thread may take a moment to return
    while (left := [t for t in threading.enumerate() if t.ident not in before]) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.02)
    assert left == [], "a thread still reads a pipe whose descriptor was closed"
    assert o.elapsed < 30


# --- resource usage ----------------------------------------------------------------------------


@pytest.mark.parametrize("via_shell", [False, True], ids=["argv", "shell"])
def test_max_rss_of_a_memory_hungry_child(tmp_path: Path, via_shell: bool) -> None:
    """A child touching ~100 MB reports max_rss_kb > 80 000, also behind a shell."""
    code = "b = bytearray(100 << 20)\nfor i in range(0, len(b), 4096): b[i] = 1"
    command: str | list[str] = f"'{PY}' -c '{code}'" if via_shell else [PY, "-c", code]
    r = supervise(command, tmp_path).result
    assert r.ok
    assert r.max_rss_kb > 80_000


def test_cpu_time_of_a_busy_child(tmp_path: Path) -> None:
    """A busy loop reports user time > 0 and a wall time covering it."""
    r = supervise(py("n = 0\nfor i in range(5_000_000):\n    n += i"), tmp_path).result
    assert r.ok
    assert r.user_s > 0
    assert r.sys_s >= 0
    assert r.wall_s >= r.user_s * 0.5  # single-threaded: wall clock at least comparable


# --- cannot start ------------------------------------------------------------------------------


def _run_plain(command: list[str], cwd: Path, out_dir: Path) -> ProcessResult:
    with (out_dir / "o").open("wb") as out, (out_dir / "e").open("wb") as err:
        return run_supervised(
            command, cwd=cwd, env=dict(os.environ), timeout=10, grace=1, stdout=out, stderr=err
        )


def test_missing_program_raises_step_error_naming_it(tmp_path: Path) -> None:
    """A program that does not exist raises StepError naming the program."""
    with pytest.raises(StepError, match="no-such-program-xyz"):
        _run_plain(["no-such-program-xyz", "--flag"], tmp_path, tmp_path)


def test_missing_cwd_raises_step_error_naming_it(tmp_path: Path) -> None:
    """A working directory that does not exist raises StepError naming the directory."""
    missing = tmp_path / "gone-dir"
    with pytest.raises(StepError, match="gone-dir"):
        _run_plain(["true"], missing, tmp_path)


def test_cwd_that_is_a_file_raises_step_error(tmp_path: Path) -> None:
    """A working directory that is a regular file raises StepError, not a bare OSError."""
    not_dir = tmp_path / "plain-file"
    not_dir.write_text("x")
    with pytest.raises(StepError, match="plain-file"):
        _run_plain(["true"], not_dir, tmp_path)


def test_program_that_is_not_executable_raises_step_error(tmp_path: Path) -> None:
    """A program without the execute bit (or not runnable at all) raises StepError."""
    script = tmp_path / "script.sh"
    script.write_text("echo hi\n")
    script.chmod(0o644)
    with pytest.raises(StepError, match=r"script\.sh"):
        _run_plain([str(script)], tmp_path, tmp_path)


# --- tail --------------------------------------------------------------------------------------


def test_tail_returns_the_last_lines(tmp_path: Path) -> None:
    """tail(path, n) gives the last n lines, without line ends."""
    path = tmp_path / "log"
    path.write_text("".join(f"line {i}\n" for i in range(10)))
    assert tail(path, 3) == ["line 7", "line 8", "line 9"]
    assert tail(path, 1) == ["line 9"]


def test_tail_of_a_short_file_returns_all_of_it(tmp_path: Path) -> None:
    """Asking for more lines than the file has returns them all; no final newline is fine."""
    path = tmp_path / "log"
    path.write_text("a\nb")
    assert tail(path, 20) == ["a", "b"]


def test_tail_of_zero_lines_is_empty(tmp_path: Path) -> None:
    """tail(path, 0) returns no line (not the whole file, as ``list[-0:]`` would)."""
    path = tmp_path / "log"
    path.write_text("a\nb\nc\n")
    assert tail(path, 0) == []


def test_tail_of_missing_or_empty_file(tmp_path: Path) -> None:
    """A missing file gives [], so does an empty one."""
    assert tail(tmp_path / "missing", 5) == []
    (tmp_path / "empty").write_bytes(b"")
    assert tail(tmp_path / "empty", 5) == []


def test_tail_of_a_large_file(tmp_path: Path) -> None:
    """A file far over 64 KB gives its true last lines."""
    path = tmp_path / "log"
    path.write_text("".join(f"line {i:06d}\n" for i in range(200_000)))
    assert path.stat().st_size > 1_000_000
    assert tail(path, 4) == [f"line {i:06d}" for i in range(199_996, 200_000)]


def test_tail_returns_whole_lines_when_lines_are_long(tmp_path: Path) -> None:
    """With lines so long that 64 KB holds few of them, no cut-off fragment is returned."""
    path = tmp_path / "log"
    lines = [f"{i}:" + chr(ord("a") + i) * 10_000 for i in range(12)]
    path.write_text("\n".join(lines) + "\n")
    got = tail(path, 10)
    assert got == lines[-len(got) :]
    assert len(got) >= 6  # at least what 64 KB holds


def test_tail_does_not_return_a_broken_utf8_character(tmp_path: Path) -> None:
    """A multi-byte character cut by the read window does not show up as a replacement char."""
    path = tmp_path / "log"
    path.write_text(("é" * 50_000) + "\n" + "last line\n", encoding="utf-8")
    assert tail(path, 5)[-1] == "last line"
    assert all("\ufffd" not in line for line in tail(path, 5))


def test_a_long_step_reports_its_progress_while_it_runs(tmp_path: Path) -> None:
    """on_heartbeat is called periodically with the elapsed time, quiet time and output size."""
    beats: list[tuple[float, float, int]] = []
    script = "import sys, time\nprint('x' * 100, flush=True)\ntime.sleep(3)\n"
    with (tmp_path / "out").open("wb") as out, (tmp_path / "err").open("wb") as err:
        result = run_supervised(
            [sys.executable, "-c", script],
            cwd=tmp_path,
            env=dict(os.environ),
            timeout=60,
            grace=1,
            stdout=out,
            stderr=err,
            heartbeat=0.3,
            on_heartbeat=lambda elapsed, quiet, size: beats.append((elapsed, quiet, size)),
        )
    assert result.ok
    assert len(beats) >= 2
    assert [b[0] for b in beats] == sorted(b[0] for b in beats)
    assert beats[-1][2] >= 101, "the output seen so far is counted"
    assert beats[-1][1] > 0.3, "the time since the last output grows while the child sleeps"
