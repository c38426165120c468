"""The watcher host's tick: find a new successful run, analyse it, report it exactly once.

State in ``<watch.root>/``::

    last_known_dir        the newest run fully reported (advanced only when its whole report
                          was delivered)
    cache/<run>/*.csv     the inference CSVs of every successful run (downloaded once)
    cache/<run>/.digest.* the same CSVs parsed once (bench.analysis.digest)
    reports/<run>/        the report of a run: the comparison CSVs, alerts, summary.json,
                          and journal.jsonl, the delivery journal
    .lock                 one tick at a time

Exactly once: before each item of a report (message or file) is delivered, the journal records
that it is being sent; once the channel acknowledges it, that it was sent. A tick that died or
met an outage in between resumes the report on the next tick: items marked sent are skipped,
and for an item caught in flight the channel is asked whether it arrived (by the delivery
marker carried in the message's metadata, or by the file's title) before sending it again.

A tick that finds nothing new makes at most two store requests and imports neither pandas nor
matplotlib: the heavy modules are imported inside the functions that analyse.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from bench.errors import BenchError, ExitCode, NotifyError
from bench.failpoints import failpoint
from bench.markers import atomic_write, fsync_dir
from bench.runs import InvalidRunName, RunId, parse_run_name

log = logging.getLogger(__name__)

JOURNAL = "journal.jsonl"
#: The top plots of a report are attached to its Slack message as images.
PLOTS_ATTACHED = 3
SUMMARY = "summary.json"


class Channel(Protocol):
    """Where reports go: Slack, or the local outbox."""

    def post(
        self,
        text: str,
        *,
        blocks: list[Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> str: ...

    def upload(self, path: Path, *, title: str, comment: str | None = None) -> str: ...

    def find_posted(self, marker: str, *, oldest: str = "") -> str | None: ...

    def find_uploaded(self, title: str, *, oldest: str = "") -> str | None: ...

    def mark(self) -> str: ...


@dataclass(frozen=True)
class WatchOptions:
    first_dir: str = ""
    ref_dir: str = ""
    renamings: Path | None = None
    rerun: str | None = None


@dataclass
class TickOutcome:
    exit_code: ExitCode
    status: str  # idle, busy, reported, resumed
    run: RunId | None = None
    report_dir: Path | None = None
    regressions: int = 0


# --- state ----------


class WatchState:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.last_known_path = root / "last_known_dir"
        self.cache_dir = root / "cache"
        self.reports = root / "reports"
        self.lock_path = root / ".lock"

    def ensure(self) -> None:
        try:
            self.reports.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise BenchError(
                f"cannot create the watcher's directory {self.reports}: {err.strerror}",
                hint="check watch.root and its permissions",
            ) from err

    def last_known(self) -> RunId | None:
        try:
            text = self.last_known_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        try:
            return parse_run_name(text)
        except InvalidRunName as err:
            raise BenchError(
                f"{self.last_known_path} does not hold a run name: {err}",
                hint="write the name of the last reported run into it, or remove it to "
                "report the newest run",
            ) from None

    def set_last_known(self, run: RunId) -> None:
        atomic_write(self.last_known_path, run.name + "\n")

    def pending(self, after: RunId | None) -> Path | None:
        """The newest report newer than ``after`` whose delivery is unfinished."""
        if not self.reports.is_dir():
            return None
        for path in sorted(self.reports.iterdir(), reverse=True):
            name = path.name.split(".rerun-")[0]
            try:
                run = parse_run_name(name)
            except InvalidRunName:
                continue
            if ".rerun-" in path.name:
                continue
            if after is not None and run <= after:
                return None
            if not Journal(path / JOURNAL).complete():
                return path
        return None


class Journal:
    """Append-only record of a report's delivery: each item ``sending`` then ``sent``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def entries(self) -> list[dict[str, Any]]:
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        out = []
        for line in lines:
            with contextlib.suppress(ValueError):  # a line cut by a crash
                out.append(json.loads(line))
        return out

    def state(self) -> dict[str, dict[str, Any]]:
        last: dict[str, dict[str, Any]] = {}
        for entry in self.entries():
            last[entry["item"]] = entry
        return last

    def complete(self) -> bool:
        states = self.state()
        return states.get("_report", {}).get("state") == "sent"

    def append(self, **entry: Any) -> None:
        entry.setdefault("at", datetime.now().astimezone().isoformat(timespec="seconds"))
        line = json.dumps(entry, sort_keys=True) + "\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)


# --- the tick ----------


def tick(
    settings: Any,
    *,
    store: Any,
    channel: Channel,
    options: WatchOptions,
) -> TickOutcome:
    """One cron tick of the watcher (see the module docstring)."""
    from filelock import FileLock, Timeout

    state = WatchState(settings.watch.root)
    state.ensure()
    lock = FileLock(str(state.lock_path), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        log.info("another tick is still running (lock %s): nothing to do", state.lock_path)
        return TickOutcome(ExitCode.OK, "busy")
    try:
        return _tick_locked(settings, state, store, channel, options)
    finally:
        lock.release()


def _tick_locked(
    settings: Any, state: WatchState, store: Any, channel: Channel, options: WatchOptions
) -> TickOutcome:
    if options.rerun:
        run = parse_run_name(options.rerun)
        report_dir = _new_rerun_dir(state, run)
        log.info("re-analysing %s on purpose: %s", run, report_dir)
        return _report(settings, state, store, channel, options, run, report_dir, advance=False)

    last_known = state.last_known()
    pending = state.pending(last_known)
    if pending is not None:
        run = parse_run_name(pending.name)
        log.info("resuming the unfinished report of %s", run)
        return _report(settings, state, store, channel, options, run, pending, advance=True)

    newest = store.newest_successful_run(after=last_known)
    if newest is None:
        log.info("no new results since %s", last_known or "(none reported yet)")
        return TickOutcome(ExitCode.OK, "idle", last_known)
    report_dir = state.reports / newest.name
    report_dir.mkdir(exist_ok=True)
    return _report(settings, state, store, channel, options, newest, report_dir, advance=True)


def _new_rerun_dir(state: WatchState, run: RunId) -> Path:
    n = 1
    while (state.reports / f"{run.name}.rerun-{n}").exists():
        n += 1
    path = state.reports / f"{run.name}.rerun-{n}"
    path.mkdir(parents=True)
    return path


@dataclass
class Item:
    """One piece of a report, delivered once."""

    ident: str
    kind: str  # message, file
    text: str = ""
    blocks: list[Any] | None = None
    path: Path | None = None
    title: str = ""
    comment: str | None = None


@dataclass
class _Delivery:
    channel: Channel
    journal: Journal
    run: RunId
    attempt: str
    states: dict[str, dict[str, Any]] = field(default_factory=dict)

    def deliver(self, item: Item) -> None:
        current = self.states.get(item.ident, {})
        if current.get("state") == "sent":
            return
        marker = f"{self.run.name}/{self.attempt}/{item.ident}"
        if current.get("state") == "sending":
            found = (
                self.channel.find_posted(marker, oldest=current.get("mark", ""))
                if item.kind == "message"
                else self.channel.find_uploaded(item.title, oldest=current.get("mark", ""))
            )
            if found:
                log.info("%s had been delivered before the interruption (%s)", item.ident, found)
                self._sent(item, found)
                return
        self.journal.append(item=item.ident, state="sending", mark=self.channel.mark())
        failpoint(f"deliver:{item.ident}:sending")
        if item.kind == "message":
            ref = self.channel.post(
                item.text,
                blocks=item.blocks,
                metadata={"event_type": "bench_report", "event_payload": {"delivery": marker}},
            )
        else:
            assert item.path is not None
            ref = self.channel.upload(item.path, title=item.title, comment=item.comment)
        failpoint(f"deliver:{item.ident}:delivered")
        self._sent(item, ref)

    def _sent(self, item: Item, ref: str) -> None:
        self.journal.append(item=item.ident, state="sent", ref=ref)
        self.states[item.ident] = {"state": "sent", "ref": ref}


def _report(
    settings: Any,
    state: WatchState,
    store: Any,
    channel: Channel,
    options: WatchOptions,
    run: RunId,
    report_dir: Path,
    *,
    advance: bool,
) -> TickOutcome:
    journal = Journal(report_dir / JOURNAL)
    states = journal.state()
    attempt = report_dir.name[len(run.name) + 1 :] if ".rerun-" in report_dir.name else "first"
    delivery = _Delivery(channel, journal, run, attempt or "first", states)
    store_url = settings.store.url.rstrip("/")
    try:
        delivery.deliver(
            Item(
                "analysing",
                "message",
                text=f"New results have been uploaded to {store_url} in directory `{run.name}`. "
                "I will look for regressions.",
            )
        )
        summary = _load_summary(report_dir)
        if summary is None:
            from bench.analysis.report import analyse_run

            started = time.monotonic()
            summary = analyse_run(
                settings,
                store=store,
                cache_dir=state.cache_dir,
                run=run,
                report_dir=report_dir,
                options=options,
            )
            log.info("analysed %s in %.1f s", run, time.monotonic() - started)
            failpoint("report:analysed")
        for item in report_items(summary, report_dir):
            delivery.deliver(item)
        journal.append(item="_report", state="sent")
    except NotifyError as err:
        log.error("delivery of the report of %s stopped: %s", run, err.message)
        log.error("the next tick resumes it where it stopped (nothing is posted twice)")
        return TickOutcome(ExitCode.FAILED, "pending", run, report_dir)
    if advance:
        last = state.last_known()
        if last is None or run > last:
            # The detector's memory of what was reported moves with last_known_dir: only
            # once the report is delivered (a crash before re-analyses from the old state).
            detector_state = report_dir / "detector_state.json"
            if detector_state.exists():
                atomic_write(state.root / detector_state.name, detector_state.read_text())
            state.set_last_known(run)
    regressions = int(summary.get("counts", {}).get("regressions", 0))
    log.info("report of %s delivered: %d regression(s)", run, regressions)
    return TickOutcome(
        ExitCode.REGRESSIONS if regressions else ExitCode.OK,
        "reported",
        run,
        report_dir,
        regressions,
    )


def _load_summary(report_dir: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads((report_dir / SUMMARY).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    return data


def report_items(summary: dict[str, Any], report_dir: Path) -> Iterator[Item]:
    """The summary message, then the files, in the order the team is used to."""
    from bench.analysis.report import render_summary

    text, blocks = render_summary(summary)
    yield Item("summary", "message", text=text, blocks=blocks)
    run = summary["run"]
    for n, plot in enumerate(summary.get("plots", [])[:PLOTS_ATTACHED], 1):
        path = report_dir / plot
        if path.is_file():
            yield Item(f"plot:{n}", "file", path=path, title=f"{path.stem} ({run})")
    files = [
        ("alerts", "Alerts (gas_parameter_diff's rule)"),
        ("selected.csv", "CSV comparing all runs on parameters with an alert"),
        ("all.csv", "CSV comparing all runs"),
        ("reference.csv", "CSV comparing reference and last runs"),
        ("previous.csv", "CSV comparing previous and last runs"),
    ]
    for name, comment in files:
        path = report_dir / name
        if path.is_file() and path.stat().st_size > 0:
            yield Item(f"file:{name}", "file", path=path, title=f"{name} ({run})", comment=comment)


def write_summary(report_dir: Path, summary: dict[str, Any]) -> None:
    """Written last by the analysis: its presence means the report files are complete."""
    atomic_write(report_dir / SUMMARY, json.dumps(summary, indent=2, sort_keys=True) + "\n")
    fsync_dir(report_dir)
