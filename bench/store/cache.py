"""The watcher's local cache of inference CSVs: each successful run downloaded once.

A run with SUCCESS is immutable, so once its CSVs are in ``<cache>/<run>/`` (with a
``.complete`` manifest) it is never fetched again. A download goes to
``<cache>/.partial/<run>/`` first and is renamed into place only when every file arrived, so a
half-downloaded run is never used; an interrupted download is completed by the next sync,
without fetching again the files that already arrived. A store whose ``download_workers``
attribute is above 1 (S3) has a run's files fetched that many at a time.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from bench.errors import StoreError
from bench.markers import atomic_write, fsync_dir
from bench.runs import InvalidRunName, RunId, parse_run_name
from bench.store.base import INFERENCE, Store

log = logging.getLogger(__name__)

MANIFEST = ".complete"
MANIFEST_FORMAT = 1


@dataclass
class SyncReport:
    downloaded: list[str] = field(default_factory=list)  # runs fetched by this sync
    files: int = 0
    bytes: int = 0
    rejected: list[str] = field(default_factory=list)  # keys refused (hostile names)


class RunCache:
    """``<root>/<run>/*.csv`` for every run fully downloaded."""

    def __init__(self, store: Store, root: Path) -> None:
        self.store = store
        self.root = root
        self.partial = root / ".partial"

    def path(self, run: RunId) -> Path:
        return self.root / run.name

    def has(self, run: RunId) -> bool:
        return (self.path(run) / MANIFEST).is_file()

    def runs(self) -> list[RunId]:
        """The runs completely in the cache, in name order."""
        found: list[RunId] = []
        if not self.root.is_dir():
            return found
        for entry in self.root.iterdir():
            try:
                run = parse_run_name(entry.name)
            except InvalidRunName:
                continue
            if (entry / MANIFEST).is_file():
                found.append(run)
        return sorted(found)

    def sync(self, runs: list[RunId]) -> SyncReport:
        """Make sure each of ``runs`` (runs with SUCCESS) is in the cache."""
        report = SyncReport()
        for run in runs:
            if not self.has(run):
                self._fetch(run, report)
        return report

    def _fetch(self, run: RunId, report: SyncReport) -> None:
        prefix = f"{INFERENCE}/{run.name}"
        objects = self.store.list_objects(prefix)
        staging = self.partial / run.name
        staging.mkdir(parents=True, exist_ok=True)
        manifest: dict[str, int] = {}
        resumed = 0
        todo: list[tuple[str, Path, int]] = []
        for key, info in sorted(objects.items()):
            relative = key[len(prefix) + 1 :]
            if relative == "":
                continue  # a "folder" marker some S3 tools create: not a file
            name = _safe_relative(relative)
            if name is None:
                log.error("store %s: refusing key %r (not a plain file name)", self.store.url, key)
                report.rejected.append(key)
                continue
            dest = staging / name
            manifest[name] = info.size
            if dest.is_file() and dest.stat().st_size == info.size:
                resumed += 1
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            todo.append((key, dest, info.size))
        self._download(todo, report)
        for leftover in staging.rglob(".*.partial*"):  # from a download killed half-way
            leftover.unlink()
        atomic_write(
            staging / MANIFEST,
            json.dumps({"format": MANIFEST_FORMAT, "run": run.name, "files": manifest}) + "\n",
        )
        target = self.path(run)
        if target.exists():  # an unfinished earlier attempt without manifest
            shutil.rmtree(target)
        os.replace(staging, target)
        fsync_dir(self.root)
        report.downloaded.append(run.name)
        log.info(
            "cached %s: %d files%s",
            run.name,
            len(manifest),
            f" ({resumed} already there from an interrupted sync)" if resumed else "",
        )

    def _download(self, todo: list[tuple[str, Path, int]], report: SyncReport) -> None:
        """Fetch each ``(key, dest, size)``, ``download_workers`` at a time (a store attribute,
        1 if absent: one by one, stopping at the first failure)."""
        workers = min(int(getattr(self.store, "download_workers", 1)), len(todo))
        if workers <= 1:
            for key, dest, size in todo:
                self._get(key, dest, size)
                report.files += 1
                report.bytes += size
            return
        with ThreadPoolExecutor(workers, thread_name_prefix="download") as pool:
            futures = [pool.submit(self._get, key, dest, size) for key, dest, size in todo]
            try:
                for future, (_key, _dest, size) in zip(futures, todo, strict=True):
                    future.result()  # the first failure (in key order) is raised
                    report.files += 1
                    report.bytes += size
            finally:
                for future in futures:
                    future.cancel()

    def _get(self, key: str, dest: Path, size: int) -> None:
        self.store.get_file(key, dest)
        if dest.stat().st_size != size:
            raise StoreError(
                f"download of {key} is {dest.stat().st_size} bytes, the store says {size}",
                hint="the next sync downloads it again",
            )


def _safe_relative(relative: str) -> str | None:
    """``relative`` if it is a harmless relative path of plain names, else None."""
    if not relative or "\\" in relative or "\x00" in relative:
        return None
    parts = PurePosixPath(relative).parts
    if relative.startswith("/") or any(p in {"..", "."} or p.startswith(".") for p in parts):
        return None
    return relative
