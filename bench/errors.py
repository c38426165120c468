"""The exception hierarchy and the exit codes: one place, documented in the README.

Every console script maps exceptions to these codes in its ``main``; nothing else exits.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """Exit statuses of the console scripts (a contract with cron, scripts and people)."""

    OK = 0
    #: The run failed (a step failed or timed out, the upload failed, ...).
    FAILED = 1
    #: Bad command line or configuration: nothing was done.
    USAGE = 2
    #: Refused: a previous run is still in progress (its lock is held).
    GUARDED_RUNNING = 3
    #: Refused: a previous run crashed and was not cleaned up (markers left, lock free).
    GUARDED_CRASHED = 4
    #: The watcher delivered a report that found regressions.
    REGRESSIONS = 5
    #: Interrupted by SIGINT/SIGTERM; the state left behind is recoverable.
    INTERRUPTED = 130


class BenchError(Exception):
    """Base of every error this project raises on purpose.

    ``hint`` says what to do about it, in one line, for the person on call.
    """

    exit_code: ExitCode = ExitCode.FAILED

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"


class ConfigError(BenchError):
    """The configuration (file, environment or flags) is invalid."""

    exit_code = ExitCode.USAGE


class GuardError(BenchError):
    """A run was refused by the work-directory guard (lock or markers)."""

    def __init__(
        self,
        message: str,
        *,
        exit_code: ExitCode,
        clues: list[str] | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.exit_code = exit_code
        self.clues = clues or []


class WorkDirError(BenchError):
    """The work directory cannot be used (missing, read-only, inconsistent markers)."""


class StepError(BenchError):
    """A supervised step could not be started (not: it ran and failed)."""


class StoreError(BenchError):
    """The results store refused or failed an operation.

    ``fatal`` says the store itself is unusable (no bucket, no credentials, unreachable):
    there is no point trying the other objects.
    """

    def __init__(self, message: str, *, hint: str | None = None, fatal: bool = False) -> None:
        super().__init__(message, hint=hint)
        self.fatal = fatal


class NotifyError(BenchError):
    """A notification could not be delivered."""


class InterruptedRun(BenchError):
    """SIGINT or SIGTERM arrived during a run."""

    exit_code = ExitCode.INTERRUPTED


def describe_os_error(err: OSError, path: object = None) -> str:
    """One line naming the cause of a file-system error and the fix, for the person on call."""
    import errno

    where = path if path is not None else (err.filename or "a file")
    causes = {
        errno.ENOSPC: f"no space left on the device holding {where}: free some space "
        "(old runs in snoop_results/ can be archived elsewhere) and resume",
        errno.EDQUOT: f"disk quota exceeded for {where}: free some space or raise the quota",
        errno.EROFS: f"{where} is on a read-only file system: remount it read-write, or point "
        "the configuration at a writable directory",
        errno.EACCES: f"permission denied on {where}: give the service user write access "
        "(chown/chmod), or point the configuration elsewhere",
        errno.EPERM: f"operation not permitted on {where}: check its owner and permissions",
        errno.ENOENT: f"{where} does not exist: check the path in the configuration",
    }
    return causes.get(err.errno or 0, f"{where}: {err.strerror or err}")
