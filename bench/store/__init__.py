"""The results store: where runs go, and the only link between the two hosts.

Layout (compatible with the team's existing bucket)::

    <prefix>/complete_results/snoop_results/<run>/...      the whole run directory
    <prefix>/complete_results/snoop_results/<run>/SUCCESS  written last
    <prefix>/inference_csvs/snoop_results/<run>/*.csv      the inference CSVs alone

``open_store(url)`` returns the backend for ``file:///path`` (local) URLs; the S3 backend
plugs in behind the same interface.
"""

from __future__ import annotations

from bench.store.base import Store, UploadReport, complete_key, inference_key
from bench.store.local import LocalStore

__all__ = ["LocalStore", "Store", "UploadReport", "complete_key", "inference_key", "open_store"]


def open_store(url: str, *, endpoint_url: str = "") -> Store:
    """The store behind ``url``."""
    from urllib.parse import unquote, urlparse

    from bench.errors import StoreError

    parsed = urlparse(url)
    if parsed.scheme == "file":
        from pathlib import Path

        return LocalStore(Path(unquote(parsed.path)))
    raise StoreError(
        f"store URL {url!r}: the {parsed.scheme or 'empty'} scheme is not supported yet",
        hint="use file:///absolute/path",
    )
