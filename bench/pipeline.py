"""The reference run: the ordered steps and their bookkeeping (DESIGN.md, "work directory").

``cronjob`` and ``bench-run`` both call :func:`run`. The order of the marker writes is the
crash-safety contract: at every instant the files say which state the work directory is in
(idle, running, crashed, failed), and nothing produced by a completed step is ever deleted.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

from bench import interrupts, logs
from bench.config import Settings, expand_placeholders
from bench.errors import (
    BenchError,
    ExitCode,
    GuardError,
    InterruptedRun,
    StepError,
    describe_os_error,
)
from bench.failpoints import failpoint
from bench.markers import State, WorkDir, atomic_write, create_exclusive
from bench.notify import Notifier, render
from bench.runs import RunId, make_run_name
from bench.steps import STEP_TOKEN_ENV, ProcessResult, run_supervised, tail, to_argv
from bench.store.base import UploadReport, UploadTimedOut

log = logging.getLogger(__name__)

STEPS = ("update-checkout", "build", "benchmark", "collect", "upload", "finish")
RUN_JSON_FORMAT = 1
#: Environment variables never passed to the benchmarked project's processes.
SECRET_ENV = ("SLACK_BOT_TOKEN", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
_GIT_TIMEOUT = 120.0


@dataclass(frozen=True)
class RunOptions:
    """How ``bench-run`` deviates from a plain scheduled run (``cronjob`` uses the defaults)."""

    skip_update: bool = False
    skip_build: bool = False
    steps: frozenset[str] | None = None  # None: all steps
    resume: str | None = None  # "" = the run named by current_run_dir
    now: datetime | None = None

    def wants(self, step: str) -> bool:
        if self.steps is not None and step not in self.steps:
            return False
        if step == "update-checkout" and self.skip_update:
            return False
        return not (step == "build" and self.skip_build)


@dataclass
class StepRecord:
    """One step's entry in run.json."""

    index: int
    name: str
    status: str = "pending"  # pending, running, ok, failed, timed_out, interrupted, skipped
    command: Any = None
    cwd: str | None = None
    started_at: str | None = None
    ended_at: str | None = None
    exit_code: int | None = None
    signal: int | None = None
    wall_s: float | None = None
    user_s: float | None = None
    sys_s: float | None = None
    max_rss_kb: int | None = None
    pgid: int | None = None
    #: In the environment of the step's processes (STEP_TOKEN_ENV): tells them from whatever
    #: reuses the pgid once they are gone.
    token: str | None = None
    message: str | None = None
    stdout: str | None = None
    stderr: str | None = None

    @property
    def stem(self) -> str:
        return f"{self.index:02d}-{self.name}"


@dataclass
class RunRecord:
    """run.json: a versioned record of one run."""

    run: str | None
    host: str
    pid: int
    started_at: str
    status: str = "running"  # running, success, failed, interrupted, partial
    ended_at: str | None = None
    failed_step: str | None = None
    repository: str = ""
    branch: str = ""
    commit: str | None = None
    describe: str | None = None
    config_file: str | None = None
    config_digest: str = ""
    store_url: str = ""
    steps: list[StepRecord] = field(default_factory=list)
    attempts: list[dict[str, Any]] = field(default_factory=list)
    #: Set by bench-cleanup when it archives the run as failed (also in its FAILED file).
    failure_reason: str | None = None
    archived_by: str | None = None
    format: int = RUN_JSON_FORMAT

    def step(self, name: str) -> StepRecord:
        return next(s for s in self.steps if s.name == name)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def load(cls, path: Path) -> RunRecord:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format") != RUN_JSON_FORMAT:
            raise BenchError(f"{path}: unsupported run.json format {data.get('format')!r}")
        try:
            data["steps"] = [StepRecord(**_known(StepRecord, s, path)) for s in data["steps"]]
            return cls(**_known(cls, data, path))
        except (TypeError, KeyError) as err:  # a required field missing, or not an object
            raise BenchError(f"{path}: not a valid run record ({err})") from err


def _known(kind: type, data: dict[str, Any], path: Path) -> dict[str, Any]:
    """``data`` if it has only fields of ``kind``; else a clear error naming them and the file."""
    unknown = set(data) - {f.name for f in fields(kind)}
    if unknown:
        raise BenchError(
            f"{path}: unknown {kind.__name__} fields {', '.join(sorted(unknown))}",
            hint="written by a newer version of this program? use that version for this run",
        )
    return data


@dataclass
class RunOutcome:
    """What ``run`` returns to the command line."""

    exit_code: ExitCode
    status: str
    run: RunId | None = None
    run_dir: Path | None = None
    failed_step: str | None = None
    message: str = ""


class StepFailed(Exception):
    """Internal: a step did not succeed; the record says how."""


def now_iso() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


# --- the entry point ----------


def run(
    settings: Settings,
    *,
    notifier: Notifier,
    options: RunOptions | None = None,
    lock_held: bool = False,
) -> RunOutcome:
    """Run the pipeline once under the lock; refusals are logged, reported and raised.

    ``lock_held``: the caller (bench-cleanup) already holds the work directory's lock.
    """
    options = options or RunOptions()
    workdir = WorkDir(settings.reference.root)
    workdir.ensure()
    try:
        with (
            contextlib.nullcontext() if lock_held else workdir.lock(),
            interrupts.raised_on_signals(),
        ):
            return _Run(settings, workdir, notifier, options).execute()
    except GuardError as err:
        _report_refusal(settings, workdir, notifier, err)
        raise


REFUSAL_KEY = ".last_refusal"


def _report_refusal(
    settings: Settings, workdir: WorkDir, notifier: Notifier, err: GuardError
) -> None:
    """Every refusal goes to ``anomalies``; a report only once per distinct cause."""
    line = workdir.append_anomaly(err.message)
    log.error("%s", line)
    for clue in err.clues:
        log.error("  clue: %s", clue)
    if err.hint:
        log.error("  what to do: %s", err.hint)
    try:
        current = workdir.current_run_dir.read_text(encoding="utf-8").strip()
    except OSError:
        current = ""
    key = f"{int(err.exit_code)}|{err.message}|{current}"
    key_path = workdir.root / REFUSAL_KEY
    try:
        already = key_path.read_text(encoding="utf-8").strip() == key
    except OSError:
        already = False
    if already:
        log.info("this cause was already reported; not reporting it again (see anomalies)")
        return
    notifier.send(
        render(
            "run_refused",
            host=socket.gethostname(),
            reason=err.message,
            clues=err.clues,
            hint=err.hint,
            root=str(settings.reference.root),
        )
    )
    with contextlib.suppress(OSError):
        atomic_write(key_path, key + "\n")


# --- one run ----------


class _Run:
    def __init__(
        self, settings: Settings, workdir: WorkDir, notifier: Notifier, options: RunOptions
    ) -> None:
        self.settings = settings
        self.ref = settings.reference
        self.wd = workdir
        self.notifier = notifier
        self.options = options
        self.started = options.now or datetime.now()
        self.run_id: RunId | None = None
        self.run_dir: Path | None = None
        self.record = RunRecord(
            run=None,
            host=socket.gethostname(),
            pid=os.getpid(),
            started_at=self.started.astimezone().isoformat(timespec="seconds"),
            repository=self.ref.repository,
            branch=self.ref.branch,
            config_file=str(settings.config_file) if settings.config_file else None,
            config_digest=settings.digest(),
            store_url=settings.store.url,
            steps=[StepRecord(i + 1, name) for i, name in enumerate(STEPS)],
        )
        self._tee_out: BinaryIO | None = None
        self._tee_err: BinaryIO | None = None
        self._upload_report: UploadReport | None = None
        self._repository_url = self.ref.repository

    # --- orchestration ----------

    def execute(self) -> RunOutcome:
        state = self.wd.inspect(lock_free=True)
        failpoint("run:locked")
        if self.options.resume is not None:
            self._prepare_resume(state.current_run)
        elif state.state is State.CRASHED and not self.ref.recover_crashed:
            raise GuardError(
                "previous run crashed and was not cleaned up",
                exit_code=ExitCode.GUARDED_CRASHED,
                clues=state.clues,
                hint="run `bench-cleanup` (it prints its plan first; `--dry-run` shows only "
                "the plan); it archives or completes the crashed run",
            )
        else:
            if state.state is State.CRASHED:
                from bench.cleanup import cleanup

                log.warning("previous run crashed: recovering it first (recover_crashed)")
                log.warning("clues: %s", "; ".join(state.clues))
                cleanup(self.settings, notifier=self.notifier, lock_held=True)
                state = self.wd.inspect(lock_free=True)
            if state.state is State.FAILED and state.current_run is not None:
                log.info("previous run %s failed; starting a new run", state.current_run)
            self._handle_leftovers(state.current_run if state.state is State.FAILED else None)

        with contextlib.suppress(FileNotFoundError):
            (self.wd.root / REFUSAL_KEY).unlink()
        with self._run_logs():
            self._send("run_started")
            try:
                for step in STEPS:
                    self._step(step)
            except StepFailed:
                return self._failed()
            except InterruptedRun as err:
                log.error("%s", err.message)
                return self._failed(interrupted=err.message)
            return self._succeeded()

    def _step(self, name: str) -> None:
        record = self.record.step(name)
        if record.status == "ok":
            log.info("step %s: already done in an earlier attempt", name)
            return
        if not self.options.wants(name):
            record.status = "skipped"
            log.info("step %s: skipped", name)
            if name == "update-checkout":
                self._name_run()
            self._save()
            return
        if name == "finish" and any(
            s.status == "skipped" for s in self.record.steps if s.name != "finish"
        ):
            record.status = "skipped"
            log.info("step finish: skipped, some steps were not run (the run stays resumable)")
            self._save()
            return
        log.info("step %s: starting", name)
        failpoint(f"step:{name}:start")
        try:
            getattr(self, "_do_" + name.replace("-", "_"))(record)
        except (StepFailed, InterruptedRun):
            raise
        except (BenchError, OSError, RuntimeError) as exc:
            # Raised around the supervised commands: naming the run, preparing the checkout.
            message = describe_os_error(exc) if isinstance(exc, OSError) else str(exc)
            self._end(record, "failed", message=message)
            raise StepFailed from exc
        self._save()

    # --- the steps ----------

    def _do_update_checkout(self, record: StepRecord) -> None:
        commands = self._update_commands()
        self._run_commands(record, commands, cwd=self.ref.root, timeout=self.ref.update_timeout)
        self._name_run()

    def _do_build(self, record: StepRecord) -> None:
        command = self._command("build_command")
        self._run_commands(
            record,
            [command],
            cwd=self.ref.checkout_path,
            timeout=self.ref.build_timeout,
            extra_env=self.ref.build_env,
        )

    def _do_benchmark(self, record: StepRecord) -> None:
        command = self._command("benchmark_command")
        self._run_commands(
            record,
            [command],
            cwd=self.ref.checkout_path,
            timeout=self.ref.benchmark_timeout,
            extra_env=self.ref.benchmark_env,
        )

    def _do_collect(self, record: StepRecord) -> None:
        def collect() -> None:
            assert self.run_dir is not None
            missing = [
                sub
                for sub in self.ref.results_subdirs
                if not (self.ref.results_path / sub).is_dir() and not (self.run_dir / sub).is_dir()
            ]
            if missing:
                raise BenchError(
                    "the benchmark step produced no "
                    + ", ".join(str(self.ref.results_path / m) for m in missing),
                    hint="look at the benchmark step's output in the run directory",
                )
            for sub in self.ref.results_subdirs:
                source = self.ref.results_path / sub
                if source.is_dir():
                    target = self.run_dir / sub
                    log.info("moving %s -> %s", source, target)
                    _move(source, target)
                    failpoint(f"collect:moved:{sub}")
            for sub in self.ref.results_subdirs:
                count = sum(1 for p in (self.run_dir / sub).rglob("*") if p.is_file())
                log.info("%s: %d files", sub, count)

        self._in_process(record, ["move", *self.ref.results_subdirs], collect)

    def _do_upload(self, record: StepRecord) -> None:
        from bench.store import open_store

        def upload() -> None:
            assert self.run_dir is not None and self.run_id is not None
            store = open_store(
                self.settings.store.url,
                endpoint_url=self.settings.store.endpoint_url,
                max_attempts=self.settings.store.max_attempts,
                max_workers=self.settings.store.max_workers,
            )
            self._save()  # the run.json in the store says where the run stood before upload
            report = store.upload_run(
                self.run_dir,
                self.run_id,
                success_text=f"{os.getpid()}\n",
                inference_subdir=_inference_subdir(self.ref.results_subdirs),
                exclude=[  # still being written while the upload runs
                    f"steps/{self.record.step(name).stem}.{ext}"
                    for name in ("upload", "finish")
                    for ext in ("out", "err")
                ],
                timeout=self.ref.upload_timeout,
            )
            self._upload_report = report
            failpoint("upload:after-success")

        self._in_process(record, ["upload", self.settings.store.url], upload)

    def _do_finish(self, record: StepRecord) -> None:
        def finish() -> None:
            assert self.run_dir is not None and self.run_id is not None
            success = self.run_dir / "SUCCESS"
            if not success.exists():
                create_exclusive(success, f"{os.getpid()}\n")
            failpoint("finish:after-local-success")
            self.wd.promote_current_to_last()
            failpoint("finish:after-promote")
            log.info("last_run_dir now names %s", self.run_id)

        self._in_process(record, ["write SUCCESS", "mv current_run_dir last_run_dir"], finish)

    # --- naming the run and creating its directory ----------

    def _name_run(self) -> None:
        if self.run_id is not None:
            return
        describe, commit = self._describe()
        self.record.describe, self.record.commit = describe, commit
        self._create_run_dir(self._free_run_id(describe))

    def _free_run_id(self, describe: str) -> RunId:
        """The run name; ``<describe>.N`` if a run of the same minute and commit exists (a
        quick retry by hand): a run directory is never reused."""
        run_id, n = make_run_name(self.started, describe), 1
        while self.wd.run_dir(run_id).exists():
            n += 1
            run_id = make_run_name(self.started, f"{describe}.{n:03d}")
        if n > 1:
            log.warning("a run of the same minute and commit exists: this one is %s", run_id)
        return run_id

    def _describe(self) -> tuple[str, str | None]:
        checkout = self.ref.checkout_path
        if not (checkout / ".git").exists():
            return "no-checkout", None
        describe = _git(["describe", "--always", "--dirty", "--long"], checkout)
        commit = _git(["rev-parse", "HEAD"], checkout)
        return describe or "unknown", commit

    def _create_run_dir(self, run_id: RunId) -> None:
        run_dir = self.wd.run_dir(run_id)
        self.wd.write_marker(self.wd.current_run_dir, run_id)
        failpoint("run:named")
        run_dir.mkdir()  # exclusive: never an existing directory (we hold the lock)
        # From here on the run owns this directory: a failure is recorded in it.
        self.run_id, self.run_dir = run_id, run_dir
        self.record.run = run_id.name
        failpoint("run:dir-created")
        create_exclusive(run_dir / "STARTED", f"{os.getpid()}\n")
        failpoint("run:started")
        (run_dir / "steps").mkdir(exist_ok=True)
        log.info("run %s: directory %s", run_id, run_dir)
        adopt_staging(self.wd, run_dir)
        self._save()

    # --- running commands ----------

    def _update_commands(self) -> list[list[str]]:
        checkout = self.ref.checkout_path
        repository = self.ref.repository
        if self.ref.is_demo:
            from bench.demo import ensure_demo_origin

            repository = str(ensure_demo_origin(self.ref.root / "demo-origin"))
        self._repository_url = repository
        if not checkout.exists():
            # Clone beside, then rename: a clone killed half-way never looks like a checkout.
            partial = checkout.with_name(checkout.name + ".partial-clone")
            return [
                ["rm", "-rf", "--", str(partial)],
                ["git", "clone", "--branch", self.ref.branch, repository, str(partial)],
                ["mv", "-T", "--", str(partial), str(checkout)],
            ]
        if not (checkout / ".git").exists():
            raise StepError(
                f"the checkout {checkout} exists but is not a git repository",
                hint="move it away (the next run clones it again) or fix reference.checkout",
            )
        git = ["git", "-C", str(checkout)]
        return [
            [*git, "fetch", "--prune", "origin"],
            [*git, "checkout", self.ref.branch],
            [*git, "pull", "--ff-only", "origin", self.ref.branch],
        ]

    def _command(self, key: str) -> str | list[str]:
        if self.ref.is_demo and not getattr(self.ref, key):
            from bench.demo import demo_commands

            build, bench = demo_commands(os.environ.get("BENCH_DEMO_PYTHON") or _python())
            return build if key == "build_command" else bench
        command = getattr(self.ref, key)
        if isinstance(command, str):
            return expand_placeholders(command, self.settings)
        return [expand_placeholders(part, self.settings) for part in command]

    def _step_env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in SECRET_ENV}
        env.setdefault("PATH", os.defpath)
        env["GIT_TERMINAL_PROMPT"] = "0"
        for key, value in (extra or {}).items():
            env[key] = expand_placeholders(value, self.settings)
        return env

    def _step_files(self, record: StepRecord) -> tuple[Path, Path]:
        directory = self.run_dir / "steps" if self.run_dir is not None else self.wd.staging
        directory.mkdir(parents=True, exist_ok=True)
        return directory / f"{record.stem}.out", directory / f"{record.stem}.err"

    def _run_commands(
        self,
        record: StepRecord,
        commands: list[Any],
        *,
        cwd: Path,
        timeout: float,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        out_path, err_path = self._step_files(record)
        record.command = commands if len(commands) > 1 else commands[0]
        record.cwd = str(cwd)
        self._begin(record, out_path, err_path)
        env = self._step_env(extra_env)
        env[STEP_TOKEN_ENV] = token = secrets.token_hex(8)
        deadline = time.monotonic() + timeout
        totals = [0.0, 0.0, 0.0, 0]
        result: ProcessResult | None = None
        with out_path.open("ab") as out, err_path.open("ab") as err:
            for command in commands:
                _banner(out, command)
                log.info("running %s", _shell_quote(command))

                def started(pgid: int) -> None:
                    record.pgid, record.token = pgid, token
                    self._save()
                    failpoint(f"step:{record.name}:running")

                try:
                    result = run_supervised(
                        command,
                        cwd=cwd,
                        env=env,
                        timeout=max(1.0, deadline - time.monotonic()),
                        grace=self.ref.kill_grace,
                        stdout=out,
                        stderr=err,
                        tee_stdout=self._tee_out,
                        tee_stderr=self._tee_err,
                        on_start=started,
                        heartbeat=_heartbeat_interval(),
                        on_heartbeat=functools.partial(_log_heartbeat, record.name),
                    )
                except StepError as exc:
                    self._end(record, "failed", message=str(exc))
                    raise StepFailed from exc
                except InterruptedRun as exc:
                    self._end(record, "interrupted", message=exc.message)
                    raise
                totals[0] += result.wall_s
                totals[1] += result.user_s
                totals[2] += result.sys_s
                totals[3] = max(int(totals[3]), result.max_rss_kb)
                if not result.ok:
                    break
        assert result is not None
        record.wall_s, record.user_s, record.sys_s = (round(t, 3) for t in totals[:3])
        record.max_rss_kb = int(totals[3])
        record.exit_code, record.signal = result.exit_code, result.signal
        if result.timed_out:
            self._end(record, "timed_out", message=f"timed out after {timeout:.0f} s")
            raise StepFailed
        if not result.ok:
            last = _telling_line(tail(err_path, 20))
            self._end(record, "failed", message=self._failure_line(record, result, command, last))
            raise StepFailed
        self._end(record, "ok")

    def _failure_line(
        self, record: StepRecord, result: ProcessResult, command: Any, last: str
    ) -> str:
        """One line: what failed, why (from the exit status and stderr), and the fix."""
        said = f": {last}" if last else ""
        if record.name == "update-checkout":
            if "does not appear to be a git repository" in last or "No such remote" in last:
                return (
                    f"the checkout has no remote 'origin'{said}; fix: git -C "
                    f"{self.ref.checkout_path} remote add origin {self._repository_url}"
                )
            return (
                f"git failed ({result.describe()}){said}; check reference.repository "
                f"({self._repository_url}), the branch {self.ref.branch!r} and the network"
            )
        key = f"reference.{record.name}_command"
        if result.exit_code == 127:
            return (
                f"command not found (exit status 127){said}; install the tool on this host or "
                f"fix {key}"
            )
        if result.exit_code == 126:
            return f"command not executable (exit status 126){said}; fix its permissions or {key}"
        return f"{result.describe()}: {_shell_quote(command)}"

    def _in_process(
        self, record: StepRecord, command: list[str], action: Callable[[], None]
    ) -> None:
        """A step done by this process itself (collect, upload, finish), timed like the others."""
        out_path, err_path = self._step_files(record)
        record.command = command
        record.cwd = str(self.ref.root)
        self._begin(record, out_path, err_path)
        before = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.monotonic()
        status, message = "ok", None
        with logs.log_to_files(out_path, err_path):
            try:
                action()
            except InterruptedRun as exc:
                status, message = "interrupted", exc.message
            except UploadTimedOut as exc:
                status = "timed_out"
                message = (
                    f"timed out after {exc.timeout:.0f} s (reference.upload_timeout): "
                    f"{exc.progress}; `bench-run --resume` sends the rest"
                )
            except (BenchError, OSError) as exc:
                status = "failed"
                message = describe_os_error(exc) if isinstance(exc, OSError) else str(exc)
                log.error("step %s failed: %s", record.name, message)
                log.debug("traceback (shown with -v):", exc_info=True)
        after = resource.getrusage(resource.RUSAGE_SELF)
        record.wall_s = round(time.monotonic() - t0, 3)
        record.user_s = round(after.ru_utime - before.ru_utime, 3)
        record.sys_s = round(after.ru_stime - before.ru_stime, 3)
        record.max_rss_kb = int(after.ru_maxrss)
        record.exit_code = 0 if status == "ok" else 1
        self._end(record, status, message=message)
        if status == "interrupted":
            raise InterruptedRun(message or "interrupted")
        if status != "ok":
            raise StepFailed

    def _begin(self, record: StepRecord, out_path: Path, err_path: Path) -> None:
        record.status = "running"
        record.started_at = now_iso()
        record.ended_at = None
        record.stdout = _relative(out_path, self.run_dir)
        record.stderr = _relative(err_path, self.run_dir)
        self._save()

    def _end(self, record: StepRecord, status: str, *, message: str | None = None) -> None:
        record.status = status
        record.ended_at = now_iso()
        record.message = message
        record.pgid = record.token = None
        level = logging.INFO if status == "ok" else logging.ERROR
        log.log(level, "step %s: %s%s", record.name, status, f" ({message})" if message else "")
        self._save()

    # --- endings ----------

    def _succeeded(self) -> RunOutcome:
        partial = [s.name for s in self.record.steps if s.status == "skipped"]
        self.record.status = "partial" if self.record.step("finish").status != "ok" else "success"
        self.record.ended_at = now_iso()
        self._save()
        assert self.run_id is not None and self.run_dir is not None
        self._close_logs()
        failpoint("run:logs-moved")
        if self.record.status == "partial":
            log.warning(
                "run %s partial: steps not run: %s; `bench-run --resume` continues it",
                self.run_id,
                ", ".join(partial),
            )
            self._send("run_partial", skipped=partial)
            return RunOutcome(ExitCode.OK, "partial", self.run_id, self.run_dir)
        upload = self._upload_report
        self._send(
            "run_succeeded",
            commit=self.record.commit or "?",
            branch=self.ref.branch,
            duration=_duration(self.started),
            store_location=upload.location if upload else self.settings.store.url,
            upload=asdict(upload) if upload else None,
        )
        log.info("run %s succeeded: %s", self.run_id, self.run_dir)
        return RunOutcome(ExitCode.OK, "success", self.run_id, self.run_dir)

    def _failed(self, *, interrupted: str | None = None) -> RunOutcome:
        failed = next(
            (s for s in self.record.steps if s.status in {"failed", "timed_out", "interrupted"}),
            None,
        )
        step_name = failed.name if failed else "?"
        self.record.status = "interrupted" if interrupted else "failed"
        self.record.failed_step = step_name
        self.record.ended_at = now_iso()
        if self.run_id is None:
            self._name_failed_run()
        if self.run_dir is not None:
            adopt_staging(self.wd, self.run_dir)
        self._archive_results()
        self._save()
        self._close_logs()
        outcome_text = "interrupted" if interrupted else _outcome_text(failed)
        stderr_path = (
            self.run_dir / failed.stderr if failed and failed.stderr and self.run_dir else None
        )
        self._send(
            "run_failed",
            step=step_name,
            outcome=outcome_text,
            message=(failed.message if failed else None) or interrupted,
            stderr_tail=tail(stderr_path, self.ref.tail_lines) if stderr_path else [],
            stderr_path=str(stderr_path) if stderr_path else "",
            logs=str(self.run_dir or self.wd.root),
            resume_hint="bench-run --resume" if self.run_id else None,
        )
        code = ExitCode.INTERRUPTED if interrupted else ExitCode.FAILED
        return RunOutcome(
            code,
            self.record.status,
            self.run_id,
            self.run_dir,
            step_name,
            f"step {step_name}: {outcome_text}",
        )

    def _name_failed_run(self) -> None:
        """A run that failed before it had a name (update-checkout) still gets a directory, so
        that its logs have a home and the work directory a consistent "failed" state."""
        try:
            describe, commit = self._describe()
        except (BenchError, OSError):
            describe, commit = "no-checkout", None
        self.record.describe, self.record.commit = describe, commit
        try:
            self._create_run_dir(self._free_run_id(describe))
        except (BenchError, OSError) as err:
            log.error("cannot create a directory for the failed run: %s", err)

    def _archive_results(self) -> None:
        """Never leave results in the checkout for the next run to reuse silently."""
        if self.run_dir is None:
            return
        for sub in self.ref.results_subdirs:
            source = self.ref.results_path / sub
            if not source.exists():
                continue
            target = self.run_dir / sub
            if target.exists():
                target = free_name(self.run_dir / f"partial-{sub}")
            log.warning("archiving %s into the failed run: %s", source, target)
            with contextlib.suppress(OSError):
                _move(source, target)

    # --- leftovers and resume ----------

    def _handle_leftovers(self, failed_run: RunId | None) -> None:
        leftovers = [
            self.ref.results_path / sub
            for sub in self.ref.results_subdirs
            if (self.ref.results_path / sub).exists()
        ]
        if not leftovers:
            return
        if failed_run is not None and self.wd.run_dir(failed_run).is_dir():
            target_dir = self.wd.run_dir(failed_run)
            for path in leftovers:
                target = target_dir / path.name
                if target.exists():
                    target = free_name(target_dir / f"leftover-{path.name}")
                log.warning("archiving leftover %s into the failed run %s", path, failed_run)
                _move(path, target)
                self.wd.append_anomaly(f"leftover {path} archived into {target}")
            return
        raise GuardError(
            "leftover benchmark results in the checkout would be reused silently",
            exit_code=ExitCode.GUARDED_CRASHED,
            clues=[f"{p} exists" for p in leftovers],
            hint="move them into the run directory that produced them "
            f"({self.wd.results}/<run>/), or delete them, then run again",
        )

    def _prepare_resume(self, current: RunId | None) -> None:
        from bench.runs import parse_run_name

        name = self.options.resume
        run_id = parse_run_name(name) if name else current
        if run_id is None:
            raise GuardError(
                "nothing to resume: current_run_dir names no run",
                exit_code=ExitCode.USAGE,
                hint="name the run: bench-run --resume _snoop_...",
            )
        run_dir = self.wd.run_dir(run_id)
        record_path = run_dir / "run.json"
        if not record_path.exists():
            raise GuardError(
                f"cannot resume {run_id}: {record_path} does not exist",
                exit_code=ExitCode.USAGE,
            )
        if (run_dir / "SUCCESS").exists() and self.wd.read_marker(self.wd.last_run_dir) == run_id:
            raise GuardError(f"{run_id} already succeeded", exit_code=ExitCode.USAGE)
        previous = RunRecord.load(record_path)
        self.record.attempts = [
            *previous.attempts,
            {
                "started_at": previous.started_at,
                "ended_at": previous.ended_at,
                "status": previous.status,
                "failed_step": previous.failed_step,
                "pid": previous.pid,
                **(
                    {"failure_reason": previous.failure_reason, "archived_by": previous.archived_by}
                    if previous.archived_by
                    else {}
                ),
            },
        ]
        # Archived as failed, and resumed after all: the reason stays in the attempts.
        with contextlib.suppress(FileNotFoundError):
            (run_dir / "FAILED").unlink()
        self.record.steps = previous.steps
        self.record.describe, self.record.commit = previous.describe, previous.commit
        self.record.run = run_id.name
        self.started = datetime.fromisoformat(previous.started_at)
        self.record.started_at = previous.started_at
        for step in self.record.steps:
            if step.status != "ok":
                step.status = "pending"
                step.pgid = step.token = None
        # Partial results of an interrupted benchmark are set aside, never mixed with new ones.
        if self.record.step("benchmark").status != "ok":
            for sub in self.ref.results_subdirs:
                if (run_dir / sub).exists():
                    _move(run_dir / sub, free_name(run_dir / f"partial-{sub}"))
        self.wd.write_marker(self.wd.current_run_dir, run_id)
        self.run_id, self.run_dir = run_id, run_dir
        log.info("resuming %s from step %s", run_id, _first_pending(self.record))

    # --- files ----------

    @contextlib.contextmanager
    def _run_logs(self) -> Iterator[None]:
        self._tee_out = self.wd.cron_res.open("ab")
        self._tee_err = self.wd.cron_res_errors.open("ab")
        with logs.log_to_files(self.wd.cron_res, self.wd.cron_res_errors):
            log.info("starting benchmarks processes (PID %d)", os.getpid())
            try:
                yield
            finally:
                self._close_logs()

    def _close_logs(self) -> None:
        """Close and move ``cron_res*`` into the run directory (appending on a resume)."""
        if self._tee_out is None:
            return
        for fh in (self._tee_out, self._tee_err):
            if fh is not None:
                fh.close()
        self._tee_out = self._tee_err = None
        root_logger = logging.getLogger()
        for handler in list(root_logger.handlers):
            if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).parent == (
                self.wd.root
            ):
                root_logger.removeHandler(handler)
                handler.close()
        if self.run_dir is None:
            return
        for source in (self.wd.cron_res, self.wd.cron_res_errors):
            append_or_move(source, self.run_dir / source.name)

    def _save(self) -> None:
        if self.run_dir is not None:
            atomic_write(self.run_dir / "run.json", self.record.to_json())

    def _send(self, event: str, **context: Any) -> None:
        base = {
            "host": self.record.host,
            "run": self.run_id.name if self.run_id else None,
            "run_dir": str(self.run_dir) if self.run_dir else "",
            "root": str(self.ref.root),
            "pid": os.getpid(),
            "started_at": self.record.started_at,
        }
        try:
            self.notifier.send(render(event, **{**base, **context}))
        except BenchError as err:
            log.error("could not send the %s report: %s", event, err)


# --- helpers ----------


def _heartbeat_interval() -> float:
    """Progress of a long step: every 30 s on a terminal, every 10 minutes under cron."""
    import sys

    return 30.0 if sys.stderr.isatty() else 600.0


def _log_heartbeat(step: str, elapsed: float, quiet: float, output: int) -> None:
    log.info(
        "step %s still running: %s elapsed, %s of output, last output %s ago",
        step,
        _hms(elapsed),
        _size(output),
        _hms(quiet),
    )


def _hms(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def _size(count: int) -> str:
    value = float(count)
    for unit in ("B", "KB", "MB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"


def _telling_line(lines: list[str]) -> str:
    """The line of a stderr tail that says most: the first `fatal:`/`error:`, else the last."""
    stripped = [line.strip() for line in lines if line.strip()]
    for line in stripped:
        if line.lower().startswith(("fatal:", "error:", "error ")):
            return line
    return stripped[-1] if stripped else ""


def adopt_staging(wd: WorkDir, run_dir: Path) -> None:
    """Move the output of the steps that ran before the run had a name into its steps/."""
    if not wd.staging.exists():
        return
    steps = run_dir / "steps"
    steps.mkdir(parents=True, exist_ok=True)
    for path in sorted(wd.staging.iterdir()):
        append_or_move(path, steps / path.name)
    wd.staging.rmdir()


def append_or_move(source: Path, target: Path) -> None:
    """Move a log into place; if the target exists (a resumed run), append to it instead."""
    if target.exists():
        with target.open("ab") as dst, source.open("rb") as src:
            shutil.copyfileobj(src, dst)
        source.unlink()
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        _move(source, target)


def _git(args: list[str], cwd: Path) -> str:
    try:
        done = subprocess.run(
            ["git", *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=_GIT_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        raise BenchError(f"git {' '.join(args)} in {cwd} failed: {err}") from err
    if done.returncode != 0:
        raise BenchError(f"git {' '.join(args)} in {cwd} failed: {done.stderr.strip()}")
    return done.stdout.strip()


def _python() -> str:
    import sys

    return sys.executable


def _move(source: Path, target: Path) -> None:
    """Rename, or copy-then-delete across file systems; never overwrite."""
    if target.exists():
        raise FileExistsError(f"{target} exists; refusing to overwrite it with {source}")
    try:
        os.rename(source, target)
    except OSError as err:
        if err.errno != 18:  # EXDEV
            raise
        if source.is_dir():
            shutil.copytree(source, target)
            shutil.rmtree(source)
        else:
            shutil.copy2(source, target)
            source.unlink()


def free_name(base: Path) -> Path:
    """``base``, or ``base-2``, ``base-3``...: the first that does not exist."""
    candidate, n = base, 1
    while candidate.exists():
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate


def _inference_subdir(subdirs: list[str]) -> str:
    return next((s for s in subdirs if "inference" in s), "inference_results")


def _relative(path: Path, run_dir: Path | None) -> str:
    if run_dir is not None and run_dir in path.parents:
        return path.relative_to(run_dir).as_posix()
    return f"steps/{path.name}"


def _banner(out: BinaryIO, command: Any) -> None:
    out.write(f"### [{now_iso()}] {_shell_quote(command)}\n".encode())
    out.flush()


def _shell_quote(command: Any) -> str:
    import shlex

    if isinstance(command, str):
        return command
    return shlex.join(to_argv(command))


def _outcome_text(record: StepRecord | None) -> str:
    if record is None:
        return "failed"
    if record.status == "timed_out":
        return record.message or "timed out"
    if record.signal:
        return f"killed by signal {signal.Signals(record.signal).name}"
    if (
        record.exit_code is not None
        and record.command
        and record.name
        not in {
            "collect",
            "upload",
            "finish",
        }
    ):
        return f"exit status {record.exit_code}"
    return record.status


def _first_pending(record: RunRecord) -> str:
    return next((s.name for s in record.steps if s.status != "ok"), "finish")


def _duration(started: datetime) -> str:
    seconds = max(0.0, (datetime.now() - started.replace(tzinfo=None)).total_seconds())
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"


# --- the plan (dry run) ----------


def plan(settings: Settings, options: RunOptions | None = None) -> list[str]:
    """The exact commands and moves a run would make, without touching anything."""
    options = options or RunOptions()
    ref = settings.reference
    run_dir = "$RUN_DIR"
    checkout = ref.checkout_path
    lines = [
        f"# work directory {ref.root} (lock {ref.root}/.lock, logs cron_res, cron_res_errors)",
        f"# configuration: {settings.config_file or 'built-in defaults'}",
        f"# RUN_DIR={ref.root}/snoop_results/<run>, created exclusively, where <run> is",
        "#   _snoop_<YYYYMMDD>_<HHMM>_<git describe --always --dirty --long> (one timestamp)",
    ]

    def step(index: int, name: str, body: list[str]) -> None:
        state = "" if options.wants(name) else "   (skipped)"
        lines.append(f"{index:02d} {name}{state}")
        for line in body:
            lines.extend("     " + part for part in line.splitlines())

    repo = ref.repository if not ref.is_demo else f"{ref.root}/demo-origin (embedded demo)"
    if checkout.exists():
        update = [
            f"git -C {checkout} fetch --prune origin",
            f"git -C {checkout} checkout {ref.branch}",
            f"git -C {checkout} pull --ff-only origin {ref.branch}",
        ]
    else:
        partial = f"{checkout}.partial-clone"
        update = [
            f"git clone --branch {ref.branch} {repo} {partial}",
            f"mv -T {partial} {checkout}",
        ]
    update.append(f"git -C {checkout} describe --always --dirty --long  -> the run name")
    step(1, "update-checkout", update)

    def command_lines(key: str, env: dict[str, str], timeout: float) -> list[str]:
        if ref.is_demo and not getattr(ref, key):
            from bench.demo import demo_commands

            build, bench = demo_commands(_python())
            command: Any = build if key == "build_command" else bench
        else:
            command = getattr(ref, key)
        text = _shell_quote(
            expand_placeholders(command, settings)
            if isinstance(command, str)
            else [expand_placeholders(c, settings) for c in command]
        )
        out = [f"cd {checkout}"]
        out += [f"export {k}={expand_placeholders(v, settings)}" for k, v in env.items()]
        out.append(f"# timeout {timeout:.0f} s, in its own process group")
        if isinstance(command, str):
            out.append("/bin/sh -c '")
            out.extend("    " + line for line in text.strip().splitlines())
            out.append("'")
        else:
            out.append(text)
        return out

    step(2, "build", command_lines("build_command", ref.build_env, ref.build_timeout))
    step(
        3, "benchmark", command_lines("benchmark_command", ref.benchmark_env, ref.benchmark_timeout)
    )
    step(
        4,
        "collect",
        [f"mv {ref.results_path}/{sub} {run_dir}/{sub}" for sub in ref.results_subdirs]
        + [f"(kept between runs: {', '.join(ref.kept_paths)})"] * bool(ref.kept_paths),
    )
    store = settings.store.url.rstrip("/")
    inference = _inference_subdir(ref.results_subdirs)
    step(
        5,
        "upload",
        [
            f"{run_dir}/* -> {store}/complete_results/snoop_results/<run>/",
            f"{run_dir}/{inference}/*.csv -> {store}/inference_csvs/snoop_results/<run>/",
            "verify every object, then SUCCESS -> "
            f"{store}/complete_results/snoop_results/<run>/SUCCESS",
        ],
    )
    step(
        6,
        "finish",
        [
            f"write {run_dir}/SUCCESS",
            "mv current_run_dir last_run_dir",
            f"mv cron_res cron_res_errors {run_dir}/",
        ],
    )
    return lines
