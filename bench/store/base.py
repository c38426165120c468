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
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from bench.errors import StoreError
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
    size: int
    sha256: str | None = None  # None when the backend cannot tell


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

    @property
    def complete(self) -> bool:
        return not self.missing


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
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

    # --- primitives, per backend ----------

    @abc.abstractmethod
    def stat(self, key: str) -> ObjectInfo | None:
        """Size (and checksum if known) of ``key``, None if absent."""

    @abc.abstractmethod
    def put_file(self, key: str, path: Path) -> None:
        """Store the file at ``path`` under ``key`` (atomically: all or nothing)."""

    @abc.abstractmethod
    def put_bytes(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key``."""

    @abc.abstractmethod
    def list_dirs(self, prefix: str) -> list[str]:
        """The names directly below ``prefix`` that have objects under them."""

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
    ) -> UploadReport:
        """Upload a run directory; SUCCESS last, only once every object is verified.

        Idempotent: an object already stored with the same size and checksum is skipped, so
        running it again after an interruption sends only what is missing.
        """
        planned = plan_upload(run_dir, run, inference_subdir=inference_subdir, exclude=exclude)
        report = UploadReport(run.name, self.location(complete_key(run, "")), len(planned))
        for obj in planned:
            if self._matches(obj):
                report.skipped += 1
                continue
            log.info("uploading %s (%d bytes)", obj.key, obj.size)
            self.put_file(obj.key, obj.path)
            report.sent += 1
            report.bytes_sent += obj.size
        report.missing = [obj.key for obj in planned if not self._matches(obj)]
        if report.missing:
            raise UploadIncomplete(report)
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

    def _matches(self, obj: PlannedObject) -> bool:
        info = self.stat(obj.key)
        if info is None or info.size != obj.size:
            return False
        return info.sha256 is None or info.sha256 == sha256_file(obj.path)

    def list_runs(self) -> list[RunId]:
        """The runs under the prefix, in name (= time) order; odd names are reported, skipped."""
        runs = []
        for name in self.list_dirs(COMPLETE):
            if is_run_name(name):
                runs.append(RunId(name))
            else:
                log.warning("store %s: ignoring %r, not a run name", self.url, name)
        return sorted(runs)

    def has_success(self, run: RunId) -> bool:
        return self.stat(complete_key(run, SUCCESS)) is not None

    def newest_successful_run(self) -> RunId | None:
        for run in reversed(self.list_runs()):
            if self.has_success(run):
                return run
        return None


class UploadIncomplete(StoreError):
    """Some objects could not be verified after the upload; SUCCESS was not written."""

    def __init__(self, report: UploadReport) -> None:
        shown = ", ".join(report.missing[:5]) + (" ..." if len(report.missing) > 5 else "")
        super().__init__(
            f"upload of {report.run} incomplete: {len(report.missing)} object(s) missing "
            f"or different in the store: {shown}",
            hint="run `bench-run --resume` to send only what is missing",
        )
        self.report = report
