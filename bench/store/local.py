"""The local backend: ``file:///path``, the same keys as S3 as paths below a directory."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat as stat_
from pathlib import Path

from bench.errors import StoreError
from bench.markers import fsync_dir
from bench.store.base import ObjectInfo, Store, md5_file


class LocalStore(Store):
    """A directory that holds the bucket's keys as files. Writes are atomic (tmp + rename)."""

    max_workers = 4

    def __init__(self, base: Path) -> None:
        self.base = base
        self.url = base.as_uri()

    def checksum_of(self, path: Path) -> str | None:
        return md5_file(path)

    def list_objects(self, prefix: str) -> dict[str, ObjectInfo]:
        top = self._path(prefix)
        found: dict[str, ObjectInfo] = {}
        if not top.is_dir():
            return found
        base = self.base.resolve()
        for dirpath, _dirs, files in os.walk(top):
            for name in files:
                if ".partial" in name and name.startswith("."):
                    continue  # a write in progress (or interrupted): not an object
                path = Path(dirpath) / name
                try:
                    size = path.stat().st_size
                except FileNotFoundError:
                    continue
                found[path.relative_to(base).as_posix()] = ObjectInfo(size, md5_file(path))
        return found

    def get_file(self, key: str, dest: Path) -> None:
        source = self._path(key)
        tmp = dest.with_name(f".{dest.name}.partial{os.getpid()}")
        try:
            shutil.copyfile(source, tmp)
            os.replace(tmp, dest)
        except OSError as err:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise StoreError(f"cannot copy {source} to {dest}: {err.strerror or err}") from err

    def _path(self, key: str) -> Path:
        path = (self.base / key).resolve()
        if self.base.resolve() not in path.parents:
            raise StoreError(f"key {key!r} escapes the store {self.base}")
        return path

    def stat(self, key: str) -> ObjectInfo | None:
        path = self._path(key)
        try:
            st = path.stat()
            if not stat_.S_ISREG(st.st_mode):  # a "directory" of keys is not an object
                return None
            return ObjectInfo(size=st.st_size, checksum=md5_file(path))
        except (FileNotFoundError, NotADirectoryError):  # absent, or below an object
            return None
        except OSError as err:
            raise StoreError(
                f"cannot read {path} in the local store: {err.strerror or err}"
            ) from err

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
            with contextlib.suppress(OSError):  # its directory may be what failed
                tmp.unlink(missing_ok=True)
            from bench.errors import describe_os_error

            raise StoreError(
                "cannot write to the local store: " + describe_os_error(err, target)
            ) from err

    def list_dirs(self, prefix: str, *, start_after: str = "") -> list[str]:
        path = self._path(prefix)
        try:
            with os.scandir(path) as it:
                entries = sorted(it, key=lambda e: e.name)
            names = []
            for entry in entries:
                if start_after and entry.name <= start_after:
                    continue
                with contextlib.suppress(FileNotFoundError):  # removed while we list
                    if entry.is_dir() and any(Path(entry.path).iterdir()):
                        names.append(entry.name)
            return names
        except FileNotFoundError:  # nothing was ever stored under the prefix
            return []
        except OSError as err:
            raise StoreError(
                f"cannot list {path} in the local store: {err.strerror or err}"
            ) from err
