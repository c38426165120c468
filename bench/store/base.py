"""The store interface and the upload algorithm shared by every backend.

A backend provides four primitives on keys relative to its prefix (``stat``, ``put_file``,
``put_bytes``, ``list_dirs``); this module turns them into a verified, idempotent upload:
objects already present with the right size and checksum are not sent again, every object
is verified after the transfers, and ``SUCCESS`` is written last, only if all are there.
"""

from __future__ import annotations

import abc
import hashlib
import logging
import os
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from bench.errors import StoreError
from bench.failpoints import failpoint
from bench.runs import RunId, is_run_name

log = logging.getLogger(__name__)

COMPLETE = "complete_results/snoop_results"
INFERENCE = "inference_csvs/snoop_results"
SUCCESS = "SUCCESS"


def complete_key(run: RunId, relative: str) -> str:
    return f"{COMPLETE}/{run.name}/{relative}"


def inference_key(run: RunId, relative: str) -> str:
    return f"{INFERENCE}/{run.name}/{relative}"


@dataclass(frozen=True)
class ObjectInfo:
    """What the store says of an object: its size, and a checksum when it has one.

    ``checksum`` is backend-specific (S3: the ETag; local: the MD5 of the content): it is only
    ever compared with :meth:`Store.checksum_of` of the same backend.
    """

    size: int
    checksum: str | None = None


@dataclass(frozen=True)
class PlannedObject:
    key: str
    path: Path
    size: int


@dataclass
class UploadReport:
    """What an upload did; ``missing`` lists the keys that could not be verified."""

    run: str
    location: str
    objects: int = 0
    sent: int = 0
    skipped: int = 0
    bytes_sent: int = 0
    missing: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return not self.missing


def md5_file(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def plan_upload(
    run_dir: Path,
    run: RunId,
    *,
    inference_subdir: str = "inference_results",
    exclude: Iterable[str] = (),
) -> list[PlannedObject]:
    """Every file of the run directory, and the inference CSVs again under their prefix.

    ``SUCCESS`` is not in the plan: it is written last, by :meth:`Store.upload_run`.
    ``exclude`` names files (relative to the run directory) still being written: they are kept
    out of both copies. A directory that cannot be read fails the plan (:class:`StoreError`):
    skipping it would let SUCCESS vouch for an incomplete run.
    """
    skip = {SUCCESS, *exclude}
    planned: list[PlannedObject] = []
    for path in sorted(_walk_files(run_dir)):
        relative = path.relative_to(run_dir).as_posix()
        if relative in skip:
            continue
        size = path.stat().st_size
        planned.append(PlannedObject(complete_key(run, relative), path, size))
    inference = run_dir / inference_subdir
    if not inference.is_dir():  # a run that produced no inference results
        return planned
    for path in sorted(_walk_files(inference)):
        if path.suffix == ".csv" and path.relative_to(run_dir).as_posix() not in skip:
            relative = path.relative_to(inference).as_posix()
            planned.append(PlannedObject(inference_key(run, relative), path, path.stat().st_size))
    return planned


def _walk_files(top: Path) -> Iterable[Path]:
    def fail(err: OSError) -> None:
        raise StoreError(
            f"cannot read {err.filename or top} for the upload: {err.strerror or err}",
            hint="check the permissions of the run directory",
        ) from err

    for dirpath, _dirs, files in os.walk(top, onerror=fail):
        for name in files:
            path = Path(dirpath) / name
            if path.is_file() and not path.is_symlink():
                yield path


class Store(abc.ABC):
    """A results store: a bucket prefix, or a local directory with the same keys."""

    url: str
    #: Concurrent transfers during an upload.
    max_workers: int = 1

    # --- primitives, per backend ----------

    @abc.abstractmethod
    def stat(self, key: str) -> ObjectInfo | None:
        """Size (and checksum if known) of ``key``, None if absent."""

    @abc.abstractmethod
    def list_objects(self, prefix: str) -> dict[str, ObjectInfo]:
        """Every object whose key starts with ``prefix/``, by key (paginated as needed)."""

    @abc.abstractmethod
    def checksum_of(self, path: Path) -> str | None:
        """The checksum this backend will report for the content of ``path`` once stored."""

    @abc.abstractmethod
    def get_file(self, key: str, dest: Path) -> None:
        """Download ``key`` to ``dest`` (atomically: ``dest`` appears complete or not at all)."""

    @abc.abstractmethod
    def put_file(self, key: str, path: Path) -> None:
        """Store the file at ``path`` under ``key`` (atomically: all or nothing)."""

    @abc.abstractmethod
    def put_bytes(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key``."""

    @abc.abstractmethod
    def list_dirs(self, prefix: str, *, start_after: str = "") -> list[str]:
        """The names directly below ``prefix`` that have objects under them; with
        ``start_after``, only the names sorting after it (one request on S3)."""

    def location(self, key: str = "") -> str:
        """A URL for ``key`` (for people: reports and logs)."""
        return f"{self.url.rstrip('/')}/{key}" if key else self.url

    # --- the run-level operations ---------------------------------------------------------------

    def upload_run(
        self,
        run_dir: Path,
        run: RunId,
        *,
        success_text: str,
        inference_subdir: str = "inference_results",
        exclude: Iterable[str] = (),
        timeout: float | None = None,
    ) -> UploadReport:
        """Upload a run directory; SUCCESS last, only once every object is verified.

        Idempotent: an object already stored with the same size and checksum is skipped, so
        running it again after an interruption sends only what is missing. ``timeout``
        (seconds): no transfer is started after it, and :class:`UploadTimedOut` is raised
        without waiting for those under way (each is bounded by the client's own timeouts).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        planned = plan_upload(run_dir, run, inference_subdir=inference_subdir, exclude=exclude)
        report = UploadReport(run.name, self.location(complete_key(run, "")), len(planned))
        checksums: dict[Path, str | None] = {}

        def same(obj: PlannedObject, info: ObjectInfo | None) -> bool:
            if info is None or info.size != obj.size:
                return False
            if info.checksum is None:
                return True
            if obj.path not in checksums:
                checksums[obj.path] = self.checksum_of(obj.path)
            local = checksums[obj.path]
            return local is None or local == info.checksum

        present = self._run_objects(run)
        todo = [obj for obj in planned if not same(obj, present.get(obj.key))]
        report.skipped = len(planned) - len(todo)
        if report.skipped:
            log.info("%d of %d objects already in the store", report.skipped, len(planned))
        self._transfer(todo, report, deadline=deadline, timeout=timeout)
        failpoint("upload:before-verify")
        if todo:  # with nothing sent, the listing above already verified every object
            present = self._run_objects(run)
        report.missing = [obj.key for obj in planned if not same(obj, present.get(obj.key))]
        if report.missing:
            raise UploadIncomplete(report)
        failpoint("upload:before-success")
        self.put_bytes(complete_key(run, SUCCESS), success_text.encode())
        log.info(
            "uploaded %s: %d objects verified (%d sent, %d already there, %d bytes), SUCCESS last",
            run.name,
            report.objects,
            report.sent,
            report.skipped,
            report.bytes_sent,
        )
        return report

    def _run_objects(self, run: RunId) -> dict[str, ObjectInfo]:
        found = self.list_objects(f"{COMPLETE}/{run.name}")
        found.update(self.list_objects(f"{INFERENCE}/{run.name}"))
        return found

    def _transfer(
        self,
        todo: list[PlannedObject],
        report: UploadReport,
        *,
        deadline: float | None = None,
        timeout: float | None = None,
    ) -> None:
        """Send ``todo`` with ``max_workers`` transfers at once; a failed object is recorded
        and the others go on, unless the failure says the store itself is unusable.
        :class:`UploadTimedOut` at ``deadline`` (``time.monotonic()``, ``timeout`` seconds
        after the upload began): the transfers not started are cancelled, those under way
        are not waited for."""
        total = sum(obj.size for obj in todo)
        if not todo:
            return
        log.info("sending %d objects (%d bytes), %d at a time", len(todo), total, self.max_workers)
        started = time.monotonic()
        last_progress = started
        pool = ThreadPoolExecutor(self.max_workers, thread_name_prefix="upload")
        timed_out = False
        try:
            futures = {pool.submit(self.put_file, obj.key, obj.path): obj for obj in todo}
            remaining = None if deadline is None else max(0.0, deadline - started)
            try:
                for future in as_completed(futures, timeout=remaining):
                    obj = futures[future]
                    try:
                        future.result()
                    except StoreError as err:
                        report.errors[obj.key] = err.message
                        log.error("could not upload %s: %s", obj.key, err.message)
                        if err.fatal:
                            raise
                        continue
                    report.sent += 1
                    report.bytes_sent += obj.size
                    if report.sent == 1:
                        failpoint("upload:after-first-put")
                    if report.sent == len(todo) // 2:
                        failpoint("upload:half")
                    now = time.monotonic()
                    if now - last_progress >= 5 or report.sent == len(todo):
                        last_progress = now
                        log.info(
                            "upload progress: %d/%d objects, %.1f/%.1f MB, %.0f s",
                            report.sent,
                            len(todo),
                            report.bytes_sent / 1e6,
                            total / 1e6,
                            now - started,
                        )
            except TimeoutError:
                if deadline is None or time.monotonic() < deadline:
                    raise  # not the time limit: an error of a transfer
                timed_out = True
                under_way = sum(1 for future in futures if future.running())
                log.error(
                    "upload stopped at its time limit: %d/%d objects sent, %d under way "
                    "(not waited for), the rest not started",
                    report.sent,
                    len(todo),
                    under_way,
                )
                raise UploadTimedOut(report, timeout or 0.0) from None
        finally:
            pool.shutdown(wait=not timed_out, cancel_futures=True)

    def list_runs(self, *, after: RunId | None = None) -> list[RunId]:
        """The runs under the prefix (newer than ``after``), in name (= time) order; names
        that are not run names (``../../x``) are reported and skipped."""
        runs = []
        for name in self.list_dirs(COMPLETE, start_after=after.name if after else ""):
            if after is not None and name <= after.name:
                continue
            if is_run_name(name):
                runs.append(RunId(name))
            else:
                log.warning("store %s: ignoring %r, not a run name", self.url, name)
        return sorted(runs)

    def has_success(self, run: RunId) -> bool:
        return self.stat(complete_key(run, SUCCESS)) is not None

    def newest_successful_run(self, *, after: RunId | None = None) -> RunId | None:
        """The newest run with SUCCESS (only runs newer than ``after`` are looked at).

        With ``after`` set to the last run already seen, a store with nothing new answers in
        one listing request, and a new run costs one more (its SUCCESS).
        """
        for run in reversed(self.list_runs(after=after)):
            if self.has_success(run):
                return run
        return None


class UploadTimedOut(StoreError):
    """The upload did not finish within its time limit; SUCCESS was not written."""

    def __init__(self, report: UploadReport, timeout: float) -> None:
        self.report = report
        self.timeout = timeout
        super().__init__(
            f"upload of {report.run} stopped after {timeout:.0f} s, its time limit: "
            f"{self.progress}",
            hint="everything is still on disk; `bench-run --resume` sends only what is missing",
        )

    @property
    def progress(self) -> str:
        """How far it got: ``"<sent> of <to send> object(s) sent"``."""
        return f"{self.report.sent} of {self.report.objects - self.report.skipped} object(s) sent"


class UploadIncomplete(StoreError):
    """Some objects could not be verified after the upload; SUCCESS was not written."""

    def __init__(self, report: UploadReport) -> None:
        shown = ", ".join(report.missing[:5]) + (" ..." if len(report.missing) > 5 else "")
        reasons = sorted(set(report.errors.values()))
        because = f"; errors: {'; '.join(reasons[:3])}" if reasons else ""
        super().__init__(
            f"upload of {report.run} incomplete: {len(report.missing)} object(s) missing "
            f"or different in the store: {shown}{because}",
            hint="everything is still on disk; `bench-run --resume` sends only what is missing",
        )
        self.report = report
