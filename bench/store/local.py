"""The local backend: ``file:///path``, the same keys as S3 as paths below a directory."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from bench.errors import StoreError
from bench.markers import fsync_dir
from bench.store.base import ObjectInfo, Store, sha256_file


class LocalStore(Store):
    """A directory that holds the bucket's keys as files. Writes are atomic (tmp + rename)."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.url = base.as_uri()

    def _path(self, key: str) -> Path:
        path = (self.base / key).resolve()
        if self.base.resolve() not in path.parents:
            raise StoreError(f"key {key!r} escapes the store {self.base}")
        return path

    def stat(self, key: str) -> ObjectInfo | None:
        path = self._path(key)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return None
        return ObjectInfo(size=size, sha256=sha256_file(path))

    def put_file(self, key: str, path: Path) -> None:
        target = self._path(key)
        self._write(target, lambda tmp: shutil.copyfile(path, tmp))

    def put_bytes(self, key: str, data: bytes) -> None:
        target = self._path(key)
        self._write(target, lambda tmp: tmp.write_bytes(data))

    def _write(self, target: Path, fill: object) -> None:
        tmp = target.with_name(f".{target.name}.partial{os.getpid()}")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fill(tmp)  # type: ignore[operator]
            with tmp.open("rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, target)
            fsync_dir(target.parent)
        except OSError as err:
            tmp.unlink(missing_ok=True)
            raise StoreError(
                f"cannot write {target} in the local store: {err.strerror}",
                hint="check the free space and permissions of the store directory",
            ) from err

    def list_dirs(self, prefix: str) -> list[str]:
        try:
            entries = sorted(os.scandir(self._path(prefix)), key=lambda e: e.name)
        except FileNotFoundError:
            return []
        return [e.name for e in entries if e.is_dir() and any(Path(e.path).iterdir())]
