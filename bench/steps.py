"""Supervised child processes: process groups, timeouts, captured output, resource usage.

Each command runs in a new session (so its own process group). Its stdout and stderr go to the
step's files and, line for line as they arrive, to the run's ``cron_res``/``cron_res_errors``.
On timeout the group gets SIGTERM, a grace period, then SIGKILL. On any exception in the
supervisor (SIGTERM/SIGINT to us included) the group is stopped the same way before the
exception goes on; an interrupt arriving while the child is being started is held back
(:mod:`bench.interrupts`) until the group can be stopped. When the leader exits, whatever is
left in its group is killed: no process outlives its step.
"""

from __future__ import annotations

import logging
import os
import resource
import select
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from bench import interrupts
from bench.errors import StepError

log = logging.getLogger(__name__)

#: Set in the environment of every step (a fresh value each time): see is_step_group.
STEP_TOKEN_ENV = "BENCH_STEP_TOKEN"

_POLL = 0.2
_PUMP_POLL_MS = 200
#: How long the output pipes may stay open once a step's group has ended (s).
_PUMP_DRAIN = 10.0
_TAIL_BLOCK = 64 * 1024
_TAIL_MAX = 1024 * 1024


@dataclass
class ProcessResult:
    """How one supervised command ended."""

    exit_code: int | None  # None when killed by a signal
    signal: int | None
    timed_out: bool
    wall_s: float
    user_s: float
    sys_s: float
    max_rss_kb: int
    leftovers_killed: bool

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out

    def describe(self) -> str:
        if self.timed_out:
            return "timed out"
        if self.signal is not None:
            try:
                name = signal.Signals(self.signal).name
            except ValueError:  # real-time signals other than SIGRTMIN/SIGRTMAX have no name
                name = str(self.signal)
            return f"killed by signal {name}"
        return f"exit status {self.exit_code}"


def to_argv(command: str | Sequence[str]) -> list[str]:
    """A shell string runs through ``/bin/sh -c``; a list is an argv."""
    if isinstance(command, str):
        return ["/bin/sh", "-c", command]
    return list(command)


def run_supervised(
    command: str | Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    timeout: float,
    grace: float,
    stdout: BinaryIO,
    stderr: BinaryIO,
    tee_stdout: BinaryIO | None = None,
    tee_stderr: BinaryIO | None = None,
    on_start: Callable[[int], None] | None = None,
    heartbeat: float = 0.0,
    on_heartbeat: Callable[[float, float, int], None] | None = None,
) -> ProcessResult:
    """Run ``command`` in its own process group and supervise it to the end.

    Raises :class:`StepError` if it cannot be started (missing program, bad cwd). Any exception
    raised while waiting (KeyboardInterrupt, our SIGTERM handler's exception) stops the group
    first and then propagates.
    """
    argv = to_argv(command)
    # An interrupt from here until the child is supervised would orphan its group: it waits
    # for hold.release(), or for the end of the block (after the group is stopped).
    with interrupts.Hold() as hold:
        proc = _spawn(argv, cwd, env)
        pgid = proc.pid
        started = time.monotonic()
        assert proc.stdout is not None and proc.stderr is not None
        pumps: list[_Pump] = []
        waiter: _Waiter | None = None
        timed_out = False
        # From here on the child exists: whatever goes wrong (on_start raising, a thread that
        # cannot start, a signal), its group is stopped before the exception goes on.
        try:
            pumps.append(_Pump(proc.stdout.fileno(), [stdout, tee_stdout]))
            pumps.append(_Pump(proc.stderr.fileno(), [stderr, tee_stderr]))
            waiter = _Waiter(proc.pid)
            hold.release()  # raises an interrupt that came while starting: stopped below
            if on_start is not None:
                on_start(pgid)
            deadline = started + timeout
            next_beat = started + heartbeat if heartbeat > 0 else float("inf")
            while not waiter.done.wait(min(_POLL, max(0.0, deadline - time.monotonic()))):
                now = time.monotonic()
                if on_heartbeat is not None and now >= next_beat:
                    next_beat = now + heartbeat
                    last = max(p.last_output for p in pumps)
                    on_heartbeat(
                        now - started,
                        now - last if last else now - started,
                        sum(p.bytes for p in pumps),
                    )
                if now >= deadline:
                    timed_out = True
                    log.warning("timeout after %.0f s: stopping process group %d", timeout, pgid)
                    _stop_group(pgid, waiter, grace)
                    break
            leftovers = _finish(proc, pumps, waiter, pgid)
        except BaseException as exc:
            try:
                log.warning("stopping process group %d: %s", pgid, exc or type(exc).__name__)
                if waiter is not None and _group_may_live(pgid, waiter):
                    _stop_group(pgid, waiter, grace)
            finally:
                # Also when the graceful stop was itself interrupted (a second signal).
                if _group_may_live(pgid, waiter):
                    kill_group(pgid, signal.SIGKILL)
                _finish(proc, pumps, waiter, pgid)
            raise
    wall = time.monotonic() - started
    status, usage = waiter.result()
    code = os.waitstatus_to_exitcode(status)
    return ProcessResult(
        exit_code=code if code >= 0 else None,
        signal=-code if code < 0 else None,
        timed_out=timed_out,
        wall_s=wall,
        user_s=usage.ru_utime if usage else 0.0,
        sys_s=usage.ru_stime if usage else 0.0,
        max_rss_kb=int(usage.ru_maxrss) if usage else 0,
        leftovers_killed=leftovers,
    )


def _spawn(argv: list[str], cwd: Path, env: Mapping[str, str]) -> Any:
    """Start ``argv`` in a new session with piped output; start failures as StepError."""
    import subprocess

    try:
        return subprocess.Popen(
            argv,
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
    except FileNotFoundError as err:
        what = cwd if not cwd.is_dir() else argv[0]
        raise StepError(
            f"cannot start {argv[0]!r}: {what} not found",
            hint="check the command in the configuration and that the program is installed",
        ) from err
    except PermissionError as err:
        raise StepError(f"cannot start {argv[0]!r}: permission denied") from err
    except OSError as err:  # cwd is not a directory, exec format error, ...
        raise StepError(
            f"cannot start {argv[0]!r} in {cwd}: {err.strerror or err}",
            hint="check the command and the working directory in the configuration",
        ) from err


def _finish(proc: Any, pumps: list[_Pump], waiter: _Waiter | None, pgid: int) -> bool:
    """After the leader ended: kill what is left of its group, drain the pipes."""
    try:
        if waiter is None:  # the reaper thread never started: reap the leader here
            proc.wait()
        else:
            waiter.done.wait()
            # The leader was reaped by os.wait4: tell Popen so it never waits for it again.
            proc.returncode = os.waitstatus_to_exitcode(waiter.status)
        leftovers = bool(live_members(pgid))
        if leftovers:
            kill_group(pgid, signal.SIGKILL)
            _wait_group_gone(pgid)
            log.warning("process group %d outlived its leader: killed what was left", pgid)
        _drain(pumps)
    finally:
        # Even when interrupted above: no pipe is left open for the garbage collector. A pump
        # still reading is stopped first: closing a descriptor under a reader would hand it
        # whatever file is opened next with the same number.
        for pump in pumps:
            pump.stop()
        for stream in (proc.stdout, proc.stderr):
            stream.close()
    return leftovers


def _drain(pumps: list[_Pump]) -> None:
    """Wait for the end of the step's output, which may outlive its group, but not for long."""
    deadline = time.monotonic() + _PUMP_DRAIN
    if not all(pump.wait(deadline) for pump in pumps):
        log.warning(
            "the step's output is still open %.0f s after its process group ended (held by a "
            "process outside the group, one that called setsid?): the rest is not captured",
            _PUMP_DRAIN,
        )


def _group_may_live(pgid: int, waiter: _Waiter | None) -> bool:
    """False once the leader is reaped and no member is left: the group is gone, and its
    number free to become another group's, which must not be signalled."""
    return waiter is None or not waiter.done.is_set() or bool(live_members(pgid))


def _stop_group(pgid: int, waiter: _Waiter, grace: float) -> None:
    kill_group(pgid, signal.SIGTERM)
    if not waiter.done.wait(grace):
        log.warning("process group %d still alive %.0f s after SIGTERM: SIGKILL", pgid, grace)
        kill_group(pgid, signal.SIGKILL)


def kill_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to a process group; True if the group had members."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def live_members(pgid: int) -> list[int]:
    """Pids of the processes of group ``pgid`` that are not zombies (Linux ``/proc``)."""
    members = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", encoding="ascii", errors="replace") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] not in {"Z", "X"}:
            members.append(int(entry.name))
    return members


def is_step_group(pgid: int, token: str) -> bool:
    """True if a live member of group ``pgid`` has ``STEP_TOKEN_ENV=token`` in its environment.

    Then the group is still the one that step started: the number of a process group is not
    given to another while any of its members lives. When none has it, the step's processes
    are gone and the number may belong to someone else's group now. (A process whose
    environment cannot be read, another user's, does not count.)
    """
    entry = f"{STEP_TOKEN_ENV}={token}".encode()
    for pid in live_members(pgid):
        try:
            with open(f"/proc/{pid}/environ", "rb") as fh:
                if entry in fh.read().split(b"\0"):
                    return True
        except OSError:
            continue
    return False


def _wait_group_gone(pgid: int, timeout: float = 10.0) -> None:
    """SIGKILL is asynchronous: wait until no live member of the group is left."""
    deadline = time.monotonic() + timeout
    while live_members(pgid):
        if time.monotonic() > deadline:
            log.error("process group %d still has live members after SIGKILL", pgid)
            return
        time.sleep(0.02)


def group_alive(pgid: int) -> bool:
    """True if some process is still in group ``pgid``."""
    return kill_group(pgid, 0)


class _Waiter:
    """Reaps the leader with ``wait4`` (for its rusage) in a thread."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.done = threading.Event()
        self.status = 0
        self.usage: resource.struct_rusage | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            _, self.status, self.usage = os.wait4(self.pid, 0)
        except ChildProcessError:
            self.status = 0
        finally:
            self.done.set()

    def result(self) -> tuple[int, resource.struct_rusage | None]:
        return self.status, self.usage


class _Pump:
    """Copies a child's pipe to several files as data arrives.

    It reads only when ``poll`` says there is something to read, so that it can be stopped
    while the pipe stays open: a process outside the step's group (one that called setsid)
    may hold it open after the group is gone, and closing a descriptor a thread is blocked
    reading would let that thread read whatever file reuses its number next.
    """

    def __init__(self, fd: int, sinks: list[BinaryIO | None]) -> None:
        self.fd = fd
        self.sinks = [s for s in sinks if s is not None]
        self.last_output = 0.0  # monotonic time of the last chunk, 0 before any
        self.bytes = 0
        self._stop = threading.Event()
        self._stop_by = float("inf")
        self._thread = threading.Thread(target=self._run, name=f"pump-{fd}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        while True:
            stopping = self._stop.is_set()
            if not poller.poll(0 if stopping else _PUMP_POLL_MS):
                if stopping:
                    break  # what the pipe held when told to stop has been read
                continue
            if stopping and time.monotonic() > self._stop_by:
                break  # a writer outside the group that never pauses
            try:
                chunk = os.read(self.fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            self.last_output = time.monotonic()
            self.bytes += len(chunk)
            for sink in self.sinks:
                try:
                    sink.write(chunk)
                    sink.flush()
                except (OSError, ValueError) as err:  # a full disk must not kill the pump
                    log.error(
                        "cannot write step output to %s: %s", getattr(sink, "name", sink), err
                    )

    def wait(self, deadline: float) -> bool:
        """Wait for the end of the output until ``deadline`` (monotonic); True if it ended."""
        self._thread.join(max(0.0, deadline - time.monotonic()))
        return not self._thread.is_alive()

    def stop(self) -> None:
        """Read what the pipe holds now (for a second at most), then stop; return once the
        thread has ended, so that the descriptor can be closed."""
        self._stop_by = time.monotonic() + 1.0
        self._stop.set()
        self._thread.join()


def tail(path: Path, lines: int) -> list[str]:
    """The last ``lines`` lines of a text file (empty if it does not exist).

    Reads backwards from the end, 64 KiB at a time, up to 1 MiB; a line cut by that window is
    left out unless it is all there is.
    """
    if lines <= 0:
        return []
    try:
        with path.open("rb") as fh:
            start = fh.seek(0, os.SEEK_END)
            data = b""
            while start > 0 and data.count(b"\n") <= lines and len(data) < _TAIL_MAX:
                step = min(_TAIL_BLOCK, start)
                start -= step
                fh.seek(start)
                data = fh.read(step) + data
    except OSError:
        return []
    text = data.decode("utf-8", errors="replace").splitlines()
    if start > 0 and len(text) > 1:
        text = text[1:]  # the first line was cut by the window
    return text[-lines:]
