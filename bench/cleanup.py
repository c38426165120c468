"""``bench-cleanup``: the documented clean-up after a failure, done by the program itself.

Seed 001's "Cleaning up after a failure", automated: what a dead step left running is
killed first (its process group, while one of its processes still has the step's
``BENCH_STEP_TOKEN``: a group number reused by another program is left alone), then the logs
(``cron_res*``) and the checkout's leftover ``*_results``, looked for again after the kill,
go into the run directory (created if needed), and ``current_run_dir`` is resolved:

- a run whose benchmark step had completed is *recovered*: its remaining steps (collect,
  upload, finish) run again through the pipeline's own resume path, which uploads only what
  is missing, SUCCESS last, and makes it ``last_run_dir``;
- a run that died earlier is *archived as failed*: a ``FAILED`` marker with the reason, the
  reason in ``run.json``, ``current_run_dir`` removed, ``last_run_dir`` untouched.

The plan is printed first; ``--dry-run`` stops there. Nothing is deleted: everything is moved
into the run directory. Running it twice changes nothing the second time. It refuses to act
while a run holds the lock.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.errors import BenchError
from bench.markers import State, WorkDir, atomic_write, create_exclusive
from bench.notify import Notifier, render
from bench.pipeline import adopt_staging, append_or_move, free_name
from bench.runs import RunId, make_run_name

log = logging.getLogger(__name__)


@dataclass
class Plan:
    """What bench-cleanup will do, as lines for people and actions for the program."""

    run: RunId | None
    outcome: str  # nothing, recover, archive, logs-only
    reason: str = ""
    steps: list[tuple[str, Callable[[], None]]] = field(default_factory=list)
    #: Process groups a dead run left running: killed before anything else is looked at again.
    kills: list[tuple[str, Callable[[], None]]] = field(default_factory=list)

    def add(self, text: str, action: Callable[[], None]) -> None:
        self.steps.append((text, action))

    def actions(self) -> list[str]:
        """The texts of the steps that change something."""
        return [text for text, action in self.steps if action is not _nothing]

    def lines(self) -> list[str]:
        if self.outcome == "nothing":
            return ["nothing to clean up: the work directory is idle"]
        head = {
            "recover": f"run {self.run}: its benchmark completed; it will be completed and "
            "become last_run_dir (recovered)",
            "archive": f"run {self.run}: archived as failed ({self.reason}); last_run_dir "
            "stays as it is",
            "logs-only": f"run {self.run}: succeeded; only its logs are moved in",
        }[self.outcome]
        numbered = self.kills + self.steps
        return [head] + [f"  {i}. {text}" for i, (text, _) in enumerate(numbered, 1)]


def make_plan(settings: Any) -> Plan:
    """Look at the work directory (read only) and decide what to do."""
    ref = settings.reference
    wd = WorkDir(ref.root)
    state = wd.inspect(lock_free=True)
    leftovers = [
        ref.results_path / s for s in ref.results_subdirs if (ref.results_path / s).exists()
    ]
    has_logs = wd.cron_res.exists() or wd.cron_res_errors.exists() or wd.staging.exists()
    if state.state is State.IDLE and not leftovers and not has_logs:
        return Plan(None, "nothing")

    run, how = _owner(wd, ref, state.current_run, leftovers)
    run_dir = wd.run_dir(run)
    record = _load_record(run_dir)
    steps = {s["name"]: s for s in record.get("steps", [])} if record else {}
    status = {name: s.get("status") for name, s in steps.items()}

    if how == "succeeded":
        plan = Plan(run, "logs-only")
    elif status.get("benchmark") == "ok":
        plan = Plan(run, "recover")
    else:
        failed = next(
            (n for n, st in status.items() if st not in {"ok", "skipped", "pending"}),
            next((n for n, st in status.items() if st == "pending"), "update-checkout"),
        )
        plan = Plan(
            run,
            "archive",
            reason=f"died during step {failed}"
            if status.get(failed) in {"running", None}
            else f"step {failed} {status.get(failed)}",
        )

    for name, step in steps.items():
        _plan_kill(plan, name, step)
    if not run_dir.exists():
        plan.add(f"create {run_dir}", functools.partial(_mkdir, run_dir / "steps"))
    if wd.staging.exists():
        plan.add(
            f"move {wd.staging}/* -> {run_dir}/steps/",
            functools.partial(adopt_staging, wd, run_dir),
        )
    for source in (wd.cron_res, wd.cron_res_errors):
        if source.exists():
            plan.add(
                f"move {source} -> {run_dir}/{source.name}",
                functools.partial(append_or_move, source, run_dir / source.name),
            )
    collectable = plan.outcome == "recover" and status.get("collect") != "ok"
    for path in leftovers:
        if collectable:
            plan.add(
                f"collect {path} -> {run_dir}/{path.name} (the collect step it missed)",
                _by_the_resumed_steps,
            )
        else:
            target = free_name(
                run_dir
                / (path.name if not (run_dir / path.name).exists() else f"partial-{path.name}")
            )
            plan.add(
                f"move {path} -> {target} (never reused by the next run)",
                functools.partial(_move_path, path, target),
            )
    if plan.outcome == "recover":
        remaining = [n for n in ("collect", "upload", "finish") if status.get(n) != "ok"]
        plan.add(
            f"run the remaining steps ({', '.join(remaining)}): upload to "
            f"{settings.store.url} only what is missing, SUCCESS last; last_run_dir <- {run}",
            _by_the_resumed_steps,
        )
    elif plan.outcome == "archive":
        plan.add(
            f"write {run_dir}/FAILED and the reason in run.json",
            lambda: _mark_failed(run_dir, plan.reason),
        )
        if wd.read_marker(wd.current_run_dir) == run:
            plan.add(
                f"remove {wd.current_run_dir} (the run is archived)",
                lambda: wd.current_run_dir.unlink(),
            )
    return plan


def _plan_kill(plan: Plan, name: str, step: dict[str, Any]) -> None:
    """Kill the process group the dead step ``name`` left running, if it is still that step's."""
    from bench.steps import STEP_TOKEN_ENV, is_step_group, live_members

    pgid, token = step.get("pgid"), step.get("token")
    if not pgid or not (members := live_members(int(pgid))):
        return
    # Without a token (recorded before steps carried one) the group is all there is to go by.
    if token is None or is_step_group(int(pgid), token):
        text = f"kill process group {pgid} left by the dead step {name}"
        plan.kills.append((text, functools.partial(_kill_group, int(pgid))))
    else:
        plan.add(
            f"leave process group {pgid} alone (pids {', '.join(map(str, members))}): none "
            f"of them has the dead step {name}'s {STEP_TOKEN_ENV}, so the number probably "
            "belongs to another program's group now (unless the step's processes replaced "
            f"their environment: see `ps -o pid,args -g {pgid}`)",
            _nothing,
        )


def cleanup(
    settings: Any,
    *,
    notifier: Notifier,
    dry_run: bool = False,
    lock_held: bool = False,
    echo: Callable[[str], None] = print,
) -> Plan:
    """Print the plan; unless ``dry_run``, act on it (under the lock) and report."""
    wd = WorkDir(settings.reference.root)
    with contextlib.nullcontext() if lock_held else wd.lock():
        plan = make_plan(settings)
        for line in plan.lines():
            echo(line)
        if dry_run or plan.outcome == "nothing":
            return plan
        if plan.kills:
            for text, action in plan.kills:
                log.info("cleanup: %s", text)
                action()
            # Until killed, the dead run's step could still write results or logs: look again.
            before = plan.actions()
            plan = make_plan(settings)
            if plan.kills:
                raise BenchError(
                    f"{plan.kills[0][0]}: still alive after SIGKILL (stuck in the kernel, "
                    "state D?); nothing was moved",
                    hint="look at it with `ps -o pid,stat,wchan,args -g <pgid>`; run "
                    "bench-cleanup again once it is gone",
                )
            if plan.actions() != before:
                echo("the killed processes had written more; the rest of the plan is now:")
                for line in plan.lines():
                    echo(line)
        for text, action in plan.steps:
            log.info("cleanup: %s", text)
            action()
        if plan.outcome == "recover":
            _recover(settings, plan, notifier)
        elif plan.outcome == "logs-only":
            notifier.send(
                render(
                    "run_recovered",
                    host=os.uname().nodename,
                    run=str(plan.run),
                    run_dir=str(wd.run_dir(plan.run)) if plan.run else "",
                    store=settings.store.url,
                )
            )
        elif plan.outcome == "archive":
            notifier.send(
                render(
                    "run_archived",
                    host=os.uname().nodename,
                    run=str(plan.run),
                    reason=plan.reason,
                    run_dir=str(wd.run_dir(plan.run)) if plan.run else "",
                )
            )
        return plan


def _recover(settings: Any, plan: Plan, notifier: Notifier) -> None:
    from bench import pipeline
    from bench.notify import NullNotifier

    assert plan.run is not None
    outcome = pipeline.run(
        settings,
        notifier=NullNotifier(),
        options=pipeline.RunOptions(resume=plan.run.name),
        lock_held=True,
    )
    if outcome.status != "success":
        raise BenchError(
            f"recovery of {plan.run} failed at step {outcome.failed_step}: {outcome.message}",
            hint="the run stays failed; `bench-run --resume` retries it after the cause is fixed",
        )
    notifier.send(
        render(
            "run_recovered",
            host=os.uname().nodename,
            run=plan.run.name,
            run_dir=str(outcome.run_dir),
            store=settings.store.url,
        )
    )


def _owner(
    wd: WorkDir, ref: Any, current: RunId | None, leftovers: list[Path]
) -> tuple[RunId, str]:
    """The run the leftovers belong to, and how it was found."""
    if current is not None:
        return current, "current_run_dir"
    last = wd.read_marker(wd.last_run_dir)
    has_logs = wd.cron_res.exists() or wd.cron_res_errors.exists()
    if (
        last is not None
        and has_logs
        and (wd.run_dir(last) / "SUCCESS").exists()
        and not (wd.run_dir(last) / "cron_res").exists()
    ):
        return last, "succeeded"  # died after promoting, before moving its logs in
    # Died before the run had a name: name it after the logs' time and the checkout.
    stamp_of = next((p for p in (wd.cron_res, wd.cron_res_errors, *leftovers) if p.exists()), None)
    when = datetime.fromtimestamp(stamp_of.stat().st_mtime) if stamp_of else datetime.now()
    describe = "crashed"
    with contextlib.suppress(Exception):
        from bench.pipeline import _git

        describe = _git(["describe", "--always", "--dirty", "--long"], ref.checkout_path)
    run = make_run_name(when, describe)
    n = 1
    while wd.run_dir(run).exists():
        n += 1
        run = make_run_name(when, f"{describe}.{n:03d}")
    return run, "unnamed"


def _by_the_resumed_steps() -> None:
    """Done by :func:`_recover`, through the pipeline's resume, under the same lock."""


def _move_path(source: Path, target: Path) -> None:
    shutil.move(str(source), str(target))


def _mkdir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)


def _load_record(run_dir: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data


def _kill_group(pgid: int) -> None:
    import signal

    from bench.steps import _wait_group_gone, kill_group

    kill_group(pgid, signal.SIGKILL)
    _wait_group_gone(pgid)


def _nothing() -> None:
    """A line of the plan that says what is left alone, and why."""


def _mark_failed(run_dir: Path, reason: str) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    if not (run_dir / "FAILED").exists():
        create_exclusive(run_dir / "FAILED", reason + "\n")
    record = _load_record(run_dir) or {"format": 1, "run": run_dir.name, "steps": []}
    record["status"] = "failed"
    record["failure_reason"] = reason
    record["archived_by"] = "bench-cleanup"
    record.setdefault("ended_at", datetime.now().astimezone().isoformat(timespec="seconds"))
    for step in record.get("steps", []):
        if step.get("status") == "running":
            step["status"] = "interrupted"
            step["message"] = "the process died during this step"
            step["pgid"] = step["token"] = None
            record["failed_step"] = step["name"]
    atomic_write(run_dir / "run.json", json.dumps(record, indent=2) + "\n")
