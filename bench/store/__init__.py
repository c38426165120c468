"""The results store: where runs go, and the only link between the two hosts.

Layout (compatible with the team's existing bucket)::

    <prefix>/complete_results/snoop_results/<run>/...      the whole run directory
    <prefix>/complete_results/snoop_results/<run>/SUCCESS  written last
    <prefix>/inference_csvs/snoop_results/<run>/*.csv      the inference CSVs alone

``open_store(url)`` returns the backend: :class:`LocalStore` for ``file:///path``,
:class:`~bench.store.s3.S3Store` for ``s3://bucket/prefix``.
"""

from __future__ import annotations

from bench.store.base import Store, UploadReport, complete_key, inference_key
from bench.store.local import LocalStore

__all__ = ["LocalStore", "Store", "UploadReport", "complete_key", "inference_key", "open_store"]


def open_store(
    url: str, *, endpoint_url: str = "", max_attempts: int = 8, max_workers: int | None = None
) -> Store:
    """The store behind ``url``: ``file:///absolute/path`` or ``s3://bucket/prefix``."""
    from urllib.parse import unquote, urlparse

    from bench.errors import StoreError

    parsed = urlparse(url)
    if parsed.scheme == "file":
        from pathlib import Path

        if parsed.netloc not in {"", "localhost"}:
            raise StoreError(
                f"store URL {url!r} names a host ({parsed.netloc})",
                hint="use file:///absolute/path (three slashes)",
            )
        local = LocalStore(Path(unquote(parsed.path)))
        if max_workers:
            local.max_workers = max_workers
        return local
    if parsed.scheme == "s3" and parsed.netloc:
        from bench.store.s3 import open_s3

        return open_s3(
            parsed.netloc,
            parsed.path,
            endpoint_url=endpoint_url,
            max_attempts=max_attempts,
            max_workers=max_workers or 16,
        )
    raise StoreError(
        f"store URL {url!r} is not supported",
        hint="use s3://bucket/prefix or file:///absolute/path",
    )
