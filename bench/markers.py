"""The reference host's work-directory protocol: marker files, the lock and the states.

Compatible with the old shell scripts (seed 001): ``cron_res``/``cron_res_errors`` exist only
during a run or after a crash, ``current_run_dir`` names the run in progress (or the one that
failed), ``last_run_dir`` the last successful one, ``anomalies`` is an append-only log. The
lock (``<root>/.lock``, an ``flock`` held by the running process) is released by the kernel
when the process dies, which is what tells "running" from "crashed".
"""

from __future__ import annotations

import contextlib
import enum
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from bench.errors import ExitCode, GuardError, WorkDirError
from bench.runs import InvalidRunName, RunId, parse_run_name

SNOOP_RESULTS = "snoop_results"


def atomic_write(path: Path, text: str | bytes) -> None:
    """Write ``text`` (UTF-8, or bytes as they are) to ``path`` so that readers see the old or
    the new content, never half."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with tmp.open("wb") as fh:
            fh.write(text.encode("utf-8") if isinstance(text, str) else text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        # A failed write (unencodable text, full disk, ...) must not leave the temp file behind.
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def create_exclusive(path: Path, text: str) -> None:
    """Create ``path`` with ``text``; fail with FileExistsError if it exists (never overwrite)."""
    with path.open("x", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    """Make a rename or a creation in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class State(enum.Enum):
    IDLE = "idle"
    RUNNING = "running"
    CRASHED = "crashed"
    FAILED = "failed"


@dataclass
class WorkState:
    """What the files and the lock say about the work directory."""

    state: State
    current_run: RunId | None = None
    last_run: RunId | None = None
    clues: list[str] = field(default_factory=list)


class WorkDir:
    """The files of one reference host's work directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.cron_res = root / "cron_res"
        self.cron_res_errors = root / "cron_res_errors"
        self.current_run_dir = root / "current_run_dir"
        self.last_run_dir = root / "last_run_dir"
        self.anomalies = root / "anomalies"
        self.lock_path = root / ".lock"
        self.results = root / SNOOP_RESULTS
        self.staging = root / ".staging"

    def run_dir(self, run: RunId) -> Path:
        return self.results / run.name

    # --- set-up -------------------------------------------------------------------------------

    def ensure(self) -> None:
        """Create the work directory and ``snoop_results/``; fail clearly if it is unusable."""
        try:
            self.results.mkdir(parents=True, exist_ok=True)
            probe = self.root / f".write-probe{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as err:
            from bench.errors import describe_os_error

            raise WorkDirError(
                "cannot use the work directory: " + describe_os_error(err, self.root)
            ) from err
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise WorkDirError(
                f"the work directory {self.root} is not writable by this user",
                hint="fix its permissions or point reference.root elsewhere",
            )

    # --- the lock ----------

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the run lock, or raise :class:`GuardError` (running) if another process has it."""
        from filelock import FileLock, Timeout

        lock = FileLock(str(self.lock_path), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            state = self.inspect(lock_free=False)
            raise GuardError(
                f"previous run not over: another process holds the lock {self.lock_path}",
                exit_code=ExitCode.GUARDED_RUNNING,
                clues=state.clues,
                hint="wait for it to finish; `bench-status` shows what it is doing",
            ) from None
        try:
            yield
        finally:
            lock.release()

    def lock_is_free(self) -> bool:
        from filelock import FileLock, Timeout

        lock = FileLock(str(self.lock_path), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            return False
        lock.release()
        return True

    # --- markers ----------

    def read_marker(self, path: Path) -> RunId | None:
        """The run named by a marker file, None if absent; a bad content is an error."""
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as err:
            # Binary garbage or an unreadable marker is a clue for inspect(), not a traceback.
            raise WorkDirError(
                f"{path} cannot be read as a run name: {err}",
                hint="inspect it by hand; `bench-cleanup` can archive the state",
            ) from None
        try:
            return parse_run_name(text)
        except InvalidRunName as err:
            raise WorkDirError(
                f"{path} does not hold a run name: {err}",
                hint="inspect it by hand; `bench-cleanup` can archive the state",
            ) from None

    def write_marker(self, path: Path, run: RunId) -> None:
        atomic_write(path, run.name + "\n")

    def promote_current_to_last(self) -> None:
        """``mv current_run_dir last_run_dir``, atomically."""
        os.replace(self.current_run_dir, self.last_run_dir)
        fsync_dir(self.root)

    def append_anomaly(self, message: str, *, now: datetime | None = None) -> str:
        """Append ``[YYYY-MM-DD HH:MM:SS] message.`` to ``anomalies``; return the line."""
        stamp = (now or datetime.now()).strftime("%Y-%m-%d %H:%M:%S")
        # One entry per line: a multi-line message would leave lines without a timestamp.
        text = " ".join(part.strip() for part in message.splitlines() if part.strip())
        line = f"[{stamp}] {text}{'' if text.endswith('.') else '.'}\n"
        fd = os.open(self.anomalies, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        return line.rstrip("\n")

    # --- states ----------

    def inspect(self, *, lock_free: bool | None = None) -> WorkState:
        """Derive the state from the files and the lock (see DESIGN.md's table)."""
        if lock_free is None:
            lock_free = self.lock_is_free()
        clues: list[str] = []
        current = last = None
        current_error = None
        try:
            current = self.read_marker(self.current_run_dir)
        except WorkDirError as err:
            current_error = err.message
        with contextlib.suppress(WorkDirError):
            last = self.read_marker(self.last_run_dir)
        has_logs = self.cron_res.exists() or self.cron_res_errors.exists()

        if current_error:
            clues.append(current_error)
        if current is not None:
            clues.append(f"current_run_dir names {current.name}")
            run_dir = self.run_dir(current)
            started = _read_pid(run_dir / "STARTED")
            if started is not None:
                clues.append(f"STARTED holds PID {started}")
            if not run_dir.exists():
                clues.append(f"the run directory {run_dir} does not exist")
        if has_logs:
            for path in (self.cron_res, self.cron_res_errors):
                if path.exists():
                    clues.append(f"{path.name} present ({_age(path)})")

        if not lock_free:
            return WorkState(State.RUNNING, current, last, clues)
        if has_logs or current_error:
            return WorkState(State.CRASHED, current, last, clues)
        if current is not None:
            if self._failure_recorded(current):
                return WorkState(State.FAILED, current, last, clues)
            return WorkState(State.CRASHED, current, last, clues)
        return WorkState(State.IDLE, None, last, clues)

    def _failure_recorded(self, run: RunId) -> bool:
        """A failed run whose logs were moved in; a SUCCESS here means finish was cut short."""
        run_dir = self.run_dir(run)
        return (run_dir / "cron_res").exists() and not (run_dir / "SUCCESS").exists()


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _age(path: Path) -> str:
    try:
        seconds = time.time() - path.stat().st_mtime
    except OSError:
        return "unknown age"
    if seconds < 120:
        return f"modified {seconds:.0f} s ago"
    if seconds < 7200:
        return f"modified {seconds / 60:.0f} min ago"
    return f"modified {seconds / 3600:.1f} h ago"
