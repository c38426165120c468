"""`bench-status`: where both hosts stand, on one screen, for the person on call.

:func:`collect` reads the reference host's work directory, the watcher's state and (optionally)
the store, and returns a plain dict (``format`` versioned, every key always present, None when
it does not apply); :func:`render_text` and :func:`render_json` turn that same dict into the
screen and the ``--json`` output. The Prometheus metrics (:mod:`bench.metrics`) are built from
the same facts.

Nothing here writes or locks anything. In particular, whether a run holds the work directory's
lock is read from ``/proc/locks`` rather than by trying the lock: a monitoring probe that takes
the lock, even for a microsecond, could make the scheduled ``cronjob`` starting at that instant
refuse its run as "previous run not over". Only where ``/proc/locks`` is unavailable (not
Linux) is the lock tried, as :meth:`WorkDir.inspect` does.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.errors import BenchError
from bench.markers import State, WorkDir
from bench.runs import InvalidRunName, RunId, is_run_name, parse_run_name

log = logging.getLogger(__name__)

STATUS_FORMAT = 1
#: The run.json statuses of a run that is over.
FINISHED = ("success", "failed", "interrupted", "partial")
#: Run directories (newest names first) looked at for the last finished run, besides the
#: runs named by the markers.
RECENT_RUNS = 5
_FAILED_STEP = ("failed", "timed_out", "interrupted")


# --- the lock, without taking it ----------


def lock_holder(path: Path) -> tuple[bool | None, int | None]:
    """Whether an ``flock`` is held on ``path``, and by which PID, read from ``/proc/locks``.

    ``(None, None)`` when that cannot be known this way (no ``/proc/locks``). The lock is
    matched by inode number only: on overlay file systems the device in ``/proc/locks`` is the
    underlying one, not the one ``stat`` reports.
    """
    try:
        inode = path.stat().st_ino
    except FileNotFoundError:
        return False, None  # cronjob creates the file when it takes the lock
    except OSError:
        return None, None
    try:
        text = Path("/proc/locks").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None, None
    for line in text.splitlines():
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 1234 fe:00:5308638 0 EOF"; a waiter has "->" in field 1.
        if len(fields) < 6 or fields[1] not in {"FLOCK", "POSIX", "OFDLCK"}:
            continue
        with contextlib.suppress(ValueError, IndexError):
            if int(fields[5].rsplit(":", 1)[1]) == inode:
                pid = int(fields[4])  # -1 for open file description locks
                return True, pid if pid > 0 else None
    return False, None


def _lock_free(workdir: WorkDir) -> tuple[bool, int | None]:
    held, pid = lock_holder(workdir.lock_path)
    if held is None:
        return workdir.lock_is_free(), None
    if held and pid == os.getpid():
        # Called by the run itself before it let go of the lock (a hook): it is over.
        return True, None
    return not held, pid


# --- small readers ----------


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def parse_time(text: Any) -> datetime | None:
    """An ISO time from run.json or a journal; naive times are taken as local time."""
    if not isinstance(text, str) or not text:
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    return when if when.tzinfo else when.astimezone()


def run_time(run: RunId) -> datetime:
    """When a run started, from its name (minute resolution, the reference host's local time,
    taken as this host's local time zone)."""
    return run.timestamp.astimezone()


def _age(when: datetime | None, now: datetime) -> float | None:
    return None if when is None else round((now - when).total_seconds(), 1)


def _iso(when: datetime | None) -> str | None:
    return None if when is None else when.isoformat(timespec="seconds")


def _count_lines(path: Path) -> tuple[int, str | None]:
    try:
        data = path.read_bytes()
    except OSError:
        return 0, None
    lines = data.decode("utf-8", errors="replace").splitlines()
    lines = [line for line in lines if line.strip()]
    return len(lines), (lines[-1] if lines else None)


def _run_summary(name: str, record: dict[str, Any] | None, now: datetime) -> dict[str, Any]:
    """What status and metrics say about one run, from its run.json (None: unreadable)."""
    record = record or {}
    steps = []
    for step in record.get("steps") or []:
        if not isinstance(step, dict):
            continue
        wall = step.get("wall_s")
        if wall is None:
            start, end = parse_time(step.get("started_at")), parse_time(step.get("ended_at"))
            wall = (end - start).total_seconds() if start and end else None
        steps.append(
            {
                "name": step.get("name"),
                "status": step.get("status"),
                "started_at": step.get("started_at"),
                "ended_at": step.get("ended_at"),
                "duration_s": wall,
                "exit_code": step.get("exit_code"),
                "message": step.get("message"),
                "stderr": step.get("stderr"),
            }
        )
    started = parse_time(record.get("started_at"))
    ended = parse_time(record.get("ended_at"))
    return {
        "run": name,
        "status": record.get("status"),
        "pid": record.get("pid"),
        "started_at": _iso(started),
        "ended_at": _iso(ended),
        "age_s": _age(ended or started, now),
        "failed_step": record.get("failed_step"),
        "commit": record.get("commit"),
        "steps": steps,
    }


# --- the reference host ----------


def reference_status(settings: Any, *, now: datetime | None = None) -> dict[str, Any]:
    """The work directory's state and runs (see the README's table of states)."""
    now = now or datetime.now().astimezone()
    root = Path(settings.reference.root)
    out: dict[str, Any] = {
        "root": str(root),
        "state": "unknown",
        "error": None,
        "clues": [],
        "hint": None,
        "current_run": None,
        "current_run_started_at": None,
        "pid": None,
        "current_step": None,
        "current_step_started_at": None,
        "failed_step": None,
        "failure": None,
        "last_step_ok": None,
        "last_run": None,
        "last_success": None,
        "anomalies": 0,
        "last_anomaly": None,
    }
    if not root.is_dir():
        out["error"] = f"the work directory {root} does not exist (not a reference host?)"
        return out
    workdir = WorkDir(root)
    try:
        lock_free, holder = _lock_free(workdir)
        work = workdir.inspect(lock_free=lock_free)
    except (BenchError, OSError) as err:
        out["error"] = f"cannot read the work directory: {err}"
        return out
    out["state"] = work.state.value
    out["clues"] = list(work.clues)
    out["anomalies"], out["last_anomaly"] = _count_lines(workdir.anomalies)

    current = None
    if work.current_run is not None:
        record = _read_json(workdir.run_dir(work.current_run) / "run.json")
        current = _run_summary(work.current_run.name, record, now)
    if work.state is State.RUNNING:
        _describe_running(out, current, holder)
    elif work.state is State.FAILED and current is not None:
        _describe_failed(out, current, workdir)
    elif work.state is State.CRASHED:
        _describe_crashed(out, current)
        if getattr(settings.reference, "recover_crashed", False):
            out["hint"] = (
                "the next cronjob recovers it first (reference.recover_crashed); "
                "`bench-cleanup` does it now"
            )

    out["last_run"] = _last_finished_run(workdir, work.current_run, work.last_run, now)
    if work.last_run is not None:
        record = _read_json(workdir.run_dir(work.last_run) / "run.json")
        success = _run_summary(work.last_run.name, record, now)
        if success["ended_at"] is None:  # an old run without run.json: SUCCESS's time
            with contextlib.suppress(OSError):
                mtime = (workdir.run_dir(work.last_run) / "SUCCESS").stat().st_mtime
                ended = datetime.fromtimestamp(mtime).astimezone()
                success["ended_at"], success["age_s"] = _iso(ended), _age(ended, now)
        out["last_success"] = {k: success[k] for k in ("run", "started_at", "ended_at", "age_s")}
    return out


def _running_step(run: dict[str, Any] | None) -> dict[str, Any] | None:
    steps = run["steps"] if run else []
    return next((s for s in steps if s["status"] == "running"), None)


def _last_ok_step(run: dict[str, Any] | None) -> str | None:
    done = [s["name"] for s in (run["steps"] if run else []) if s["status"] == "ok"]
    return done[-1] if done else None


def _describe_running(
    out: dict[str, Any], current: dict[str, Any] | None, holder: int | None
) -> None:
    if current is not None and current["status"] not in FINISHED:
        out["current_run"] = current["run"]
        out["current_run_started_at"] = current["started_at"]
        out["pid"] = current["pid"] if holder is None else holder
        step = _running_step(current)
        if step is not None:
            out["current_step"] = step["name"]
            out["current_step_started_at"] = step["started_at"]
        out["last_step_ok"] = _last_ok_step(current)
    else:
        # current_run_dir still names the previous run: the new one is updating the
        # checkout, which comes before it has a name.
        out["pid"] = holder
        out["current_step"] = "update-checkout"
    out["hint"] = "wait for it to finish; a run started meanwhile is refused (exit 3)"


def _describe_failed(out: dict[str, Any], current: dict[str, Any], workdir: WorkDir) -> None:
    out["current_run"] = current["run"]
    out["current_run_started_at"] = current["started_at"]
    out["failed_step"] = current["failed_step"]
    step = next(
        (s for s in current["steps"] if s["name"] == current["failed_step"]),
        next((s for s in current["steps"] if s["status"] in _FAILED_STEP), None),
    )
    if step is not None:
        out["failed_step"] = step["name"]
        outcome = "timed out" if step["status"] == "timed_out" else step["status"]
        out["failure"] = step["message"] or outcome
        if step["stderr"]:
            out["clues"].append(f"its stderr: {workdir.results / current['run'] / step['stderr']}")
    out["last_step_ok"] = _last_ok_step(current)
    out["hint"] = (
        "fix the cause, then `bench-run --resume` (the next cronjob starts a new run instead)"
    )


def _describe_crashed(out: dict[str, Any], current: dict[str, Any] | None) -> None:
    if current is not None:
        out["current_run"] = current["run"]
        out["current_run_started_at"] = current["started_at"]
        out["pid"] = current["pid"]
        step = _running_step(current)
        if step is not None:
            out["current_step"] = step["name"]
            out["current_step_started_at"] = step["started_at"]
        out["last_step_ok"] = _last_ok_step(current)
    out["hint"] = (
        "`bench-cleanup` (it prints its plan first; `--dry-run` shows only the plan); "
        "cronjob refuses to run until then (exit 4)"
    )


def _last_finished_run(
    workdir: WorkDir, current: RunId | None, last: RunId | None, now: datetime
) -> dict[str, Any] | None:
    """The run that ended last: among the runs the markers name and the newest run
    directories (a failed run is no longer named once a new run has started)."""
    names = {run.name for run in (current, last) if run is not None}
    with contextlib.suppress(OSError):
        found = sorted(
            (p.name for p in workdir.results.iterdir() if is_run_name(p.name)), reverse=True
        )
        names.update(found[:RECENT_RUNS])
    best: dict[str, Any] | None = None
    best_end: datetime | None = None
    for name in sorted(names):
        run = _run_summary(name, _read_json(workdir.results / name / "run.json"), now)
        ended = parse_time(run["ended_at"])
        if run["status"] not in FINISHED or ended is None:
            continue
        if best_end is None or ended >= best_end:
            best, best_end = run, ended
    return best


# --- the watcher host ----------


def watcher_status(settings: Any, *, now: datetime | None = None) -> dict[str, Any]:
    """The watcher's last reported run, its report's counts and the unfinished deliveries."""
    from bench.watch import JOURNAL, SUMMARY, Journal, WatchState

    now = now or datetime.now().astimezone()
    root = Path(settings.watch.root)
    out: dict[str, Any] = {
        "root": str(root),
        "present": root.is_dir(),
        "error": None,
        "tick_running": None,
        "last_reported_run": None,
        "last_reported_run_started_at": None,
        "last_reported_run_age_s": None,
        "reported_at": None,
        "reported_age_s": None,
        "counts": None,
        "pending_deliveries": [],
        "newest_unreported_run": None,  # filled in by collect(), which reads the store
    }
    if not out["present"]:
        return out
    state = WatchState(root)
    held, _pid = lock_holder(state.lock_path)
    out["tick_running"] = held
    last: RunId | None = None
    try:
        last = state.last_known()
    except BenchError as err:
        out["error"] = err.message
    if last is not None:
        started = run_time(last)
        out["last_reported_run"] = last.name
        out["last_reported_run_started_at"] = _iso(started)
        out["last_reported_run_age_s"] = _age(started, now)
        report = state.reports / last.name
        reported = Journal(report / JOURNAL).state().get("_report", {})
        when = parse_time(reported.get("at"))
        out["reported_at"], out["reported_age_s"] = _iso(when), _age(when, now)
        summary = _read_json(report / SUMMARY)
        counts = summary.get("counts") if summary else None
        if isinstance(counts, dict):
            out["counts"] = {
                key: int(counts.get(key, 0) or 0)
                for key in ("parameters", "regressions", "improvements", "unreadable_files")
            }
    out["pending_deliveries"] = _pending(state, last)
    return out


def _pending(state: Any, last: RunId | None) -> list[dict[str, Any]]:
    """Every report whose journal lacks the final ``_report`` entry, newest first."""
    from bench.watch import JOURNAL, SUMMARY, Journal

    try:
        reports = sorted((p for p in state.reports.iterdir() if p.is_dir()), reverse=True)
    except OSError:
        return []
    pending = []
    for path in reports:
        base, rerun, _n = path.name.partition(".rerun-")
        try:
            run = parse_run_name(base)
        except InvalidRunName:
            continue
        journal = Journal(path / JOURNAL)
        if journal.complete():
            continue
        states = journal.state()
        resumable = not rerun and (last is None or run > last)
        if rerun:
            note = f"a re-run: no tick resumes it; `watch_regressions --rerun {run}` posts it anew"
        elif resumable:
            note = "the next tick resumes it (nothing is posted twice)"
        else:
            note = (
                f"older than the last reported run: no tick resumes it; "
                f"`watch_regressions --rerun {run}` posts it"
            )
        pending.append(
            {
                "report": path.name,
                "run": run.name,
                "analysed": (path / SUMMARY).exists(),
                "sent": sorted(k for k, v in states.items() if v.get("state") == "sent"),
                "in_flight": sorted(k for k, v in states.items() if v.get("state") == "sending"),
                "resumable": resumable,
                "note": note,
            }
        )
    return pending


# --- the store ----------


def store_status(
    store: Any, *, url: str = "", error: str | None = None, now: datetime | None = None
) -> dict[str, Any]:
    """The newest run in the store and whether it has SUCCESS. ``store`` None: not checked
    (``error`` says why, if it is a failure). A store failure is one line, never an exception."""
    now = now or datetime.now().astimezone()
    out: dict[str, Any] = {
        "url": getattr(store, "url", "") or url,
        "checked": False,
        "error": error,
        "runs": None,
        "newest_run": None,
        "newest_run_age_s": None,
        "newest_has_success": None,
        "newest_successful_run": None,
        "newest_successful_run_age_s": None,
    }
    if store is None:
        return out
    try:
        runs = store.list_runs()
        out["checked"], out["runs"] = True, len(runs)
        if runs:
            newest = runs[-1]
            out["newest_run"] = newest.name
            out["newest_run_age_s"] = _age(run_time(newest), now)
            for run in list(reversed(runs))[:RECENT_RUNS]:
                has = bool(store.has_success(run))
                if run == newest:
                    out["newest_has_success"] = has
                if has:
                    out["newest_successful_run"] = run.name
                    out["newest_successful_run_age_s"] = _age(run_time(run), now)
                    break
    except Exception as err:  # a status screen reports the store's failure, it does not die
        log.debug("store failure:", exc_info=True)
        out["checked"] = False
        out["error"] = one_line(err)
    return out


def one_line(err: BaseException) -> str:
    text = err.message if isinstance(err, BenchError) else f"{type(err).__name__}: {err}"
    return " ".join(str(text).split())


# --- the whole screen ----------


def collect(
    settings: Any,
    *,
    store: Any = None,
    store_error: str | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Everything ``bench-status`` shows, as plain data (rendered by render_text/render_json)."""
    now = now or datetime.now().astimezone()
    stored = store_status(store, url=settings.store.url, error=store_error or None, now=now)
    watch = watcher_status(settings, now=now)
    # What the watcher has still to report (known only when the store was read).
    newest_ok = stored["newest_successful_run"]
    last = watch["last_reported_run"]
    behind = watch["present"] and newest_ok and (last is None or newest_ok > last)
    watch["newest_unreported_run"] = newest_ok if behind else None
    return {
        "format": STATUS_FORMAT,
        "generated_at": _iso(now),
        "reference": reference_status(settings, now=now),
        "store": stored,
        "watcher": watch,
    }


def render_json(status: dict[str, Any]) -> str:
    return json.dumps(status, indent=2, sort_keys=True) + "\n"


def ago(seconds: float | None) -> str:
    """``45 s``, ``12 min``, ``3.2 h``, ``2.1 days`` (``?`` if unknown)."""
    if seconds is None:
        return "?"
    if seconds < 0:
        return "in the future"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _clock(iso: str | None) -> str:
    when = parse_time(iso)
    return when.strftime("%Y-%m-%d %H:%M:%S") if when else "?"


def render_text(status: dict[str, Any]) -> str:
    """The screen for a person: the reference host, the store, the watcher."""
    lines = [f"bench-status at {_clock(status['generated_at'])}", ""]
    lines += _reference_lines(status["reference"], status["generated_at"])
    lines.append("")
    lines += _store_lines(status["store"])
    lines.append("")
    lines += _watcher_lines(status["watcher"])
    return "\n".join(lines) + "\n"


def _row(label: str, text: str) -> str:
    return f"  {label:<15}{text}"


def _reference_lines(ref: dict[str, Any], now_iso: str) -> list[str]:
    lines = [f"reference host   {ref['root']}"]
    if ref["error"]:
        return [*lines, _row("unavailable", ref["error"])]
    state = ref["state"]
    now = parse_time(now_iso)
    if state == "running":
        what = f"RUNNING, PID {ref['pid'] if ref['pid'] is not None else '?'}"
        if ref["current_step"]:
            what += f", step {ref['current_step']}"
            started = parse_time(ref["current_step_started_at"])
            if started and now:
                what += f" for {ago((now - started).total_seconds())}"
        lines.append(_row("state", what))
    elif state == "failed":
        lines.append(_row("state", f"FAILED at step {ref['failed_step'] or '?'}"))
        if ref["failure"]:
            lines.append(_row("why", ref["failure"]))
    elif state == "crashed":
        if ref["current_step"]:
            where = f"during step {ref['current_step']}"
        elif ref["last_step_ok"]:
            where = f"after step {ref['last_step_ok']}"
        else:
            where = "before its first step ended"
        pid = f" (PID {ref['pid']})" if ref["pid"] else ""
        lines.append(_row("state", f"CRASHED {where}{pid}: markers left, lock free"))
    else:
        lines.append(_row("state", state))
    if ref["current_run"]:
        lines.append(_row("run", ref["current_run"]))
    for i, clue in enumerate(ref["clues"] if state in {"crashed", "failed"} else []):
        lines.append(_row("clues" if i == 0 else "", clue))
    if ref["hint"] and state != "idle":
        lines.append(_row("what to do", ref["hint"]))
    success = ref["last_success"]
    if success:
        lines.append(
            _row(
                "last success",
                f"{success['run']}, ended {_clock(success['ended_at'])} "
                f"({ago(success['age_s'])} ago)",
            )
        )
    else:
        lines.append(_row("last success", "none"))
    last = ref["last_run"]
    if last and (not success or last["run"] != success["run"]):
        step = f" at step {last['failed_step']}" if last["failed_step"] else ""
        lines.append(
            _row(
                "last run",
                f"{last['run']}: {last['status']}{step}, ended {_clock(last['ended_at'])}",
            )
        )
    if ref["anomalies"]:
        lines.append(_row("anomalies", f"{ref['anomalies']}, the last: {ref['last_anomaly']}"))
    return lines


def _store_lines(store: dict[str, Any]) -> list[str]:
    lines = [f"store            {store['url']}"]
    if store["error"]:
        return [*lines, _row("unavailable", store["error"])]
    if not store["checked"]:
        return [*lines, _row("not checked", "(--no-store)")]
    if not store["newest_run"]:
        return [*lines, _row("newest run", "none: the store holds no run")]
    success = "SUCCESS" if store["newest_has_success"] else "no SUCCESS yet (uploading, or failed)"
    age = ago(store["newest_run_age_s"])
    lines.append(_row("newest run", f"{store['newest_run']} ({success}), {age} old"))
    if not store["newest_has_success"]:
        newest_ok = store["newest_successful_run"]
        lines.append(
            _row(
                "newest success",
                f"{newest_ok}, {ago(store['newest_successful_run_age_s'])} old"
                if newest_ok
                else f"none among the {RECENT_RUNS} newest runs",
            )
        )
    return lines


def _watcher_lines(watch: dict[str, Any]) -> list[str]:
    lines = [f"watcher          {watch['root']}"]
    if not watch["present"]:
        return [*lines, _row("state", "no watcher state here (not a watcher host, or no tick yet)")]
    if watch["error"]:
        lines.append(_row("error", watch["error"]))
    if watch["tick_running"]:
        lines.append(_row("tick", "a tick is running now"))
    if watch["last_reported_run"]:
        text = f"{watch['last_reported_run']} (run {ago(watch['last_reported_run_age_s'])} old)"
        if watch["reported_at"]:
            text += (
                f", delivered {_clock(watch['reported_at'])} ({ago(watch['reported_age_s'])} ago)"
            )
        lines.append(_row("last reported", text))
        counts = watch["counts"]
        if counts:
            lines.append(
                _row(
                    "its report",
                    f"{counts['regressions']} regression(s), {counts['improvements']} "
                    f"improvement(s), {counts['parameters']} parameters, "
                    f"{counts['unreadable_files']} unreadable file(s)",
                )
            )
    else:
        lines.append(_row("last reported", "none yet"))
    if watch.get("newest_unreported_run"):
        lines.append(
            _row("not reported", f"{watch['newest_unreported_run']} (in the store with SUCCESS)")
        )
    pending = watch["pending_deliveries"]
    if not pending:
        lines.append(_row("pending", "none"))
    for i, item in enumerate(pending):
        flight = f"; in flight: {', '.join(item['in_flight'])}" if item["in_flight"] else ""
        analysed = "" if item["analysed"] else "; not analysed yet"
        lines.append(
            _row(
                "pending" if i == 0 else "",
                f"{item['report']}: {len(item['sent'])} item(s) sent{flight}{analysed}",
            )
        )
        lines.append(_row("", f"  {item['note']}"))
    return lines
