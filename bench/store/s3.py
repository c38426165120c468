"""The S3 backend (boto3): ``s3://bucket/prefix``, compatible with the team's existing bucket.

The client is built at the edge (:func:`make_client`) and handed in, so that tests can point
it at a moto server. Credentials come from boto3's standard chain only; retries use boto3's
adaptive mode. Objects are compared by size and ETag: for a single-part upload the ETag is the
MD5 of the content, for a multipart one the MD5 of the parts' MD5s followed by ``-<parts>``,
which :meth:`S3Store.checksum_of` recomputes with the same part size.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.errors import StoreError
from bench.store.base import ObjectInfo, Store

log = logging.getLogger(__name__)

MULTIPART_CHUNK = 8 * 1024 * 1024
_PLAIN_ETAG = re.compile(r"^[0-9a-f]{32}(-\d+)?$")


def make_client(*, endpoint_url: str = "", max_attempts: int = 8, max_workers: int = 16) -> Any:
    """An S3 client: standard credential chain, adaptive retries, our endpoint if any.

    It is botocore's client, the one boto3 wraps, made from a botocore session: boto3's own
    import (with s3transfer) costs more than the watcher's idle tick itself, and the
    transfers import it only when they run (:class:`S3Store`).
    """
    import botocore.session
    from botocore.config import Config

    endpoint = endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or None
    config = Config(
        retries={"mode": "adaptive", "max_attempts": max_attempts},
        max_pool_connections=max(10, 2 * max_workers),
        connect_timeout=10,
        read_timeout=120,
    )
    session = botocore.session.get_session()
    return session.create_client("s3", endpoint_url=endpoint, config=config)


class S3Store(Store):
    """A bucket prefix holding the runs (same keys as :class:`~bench.store.local.LocalStore`)."""

    def __init__(self, client: Any, bucket: str, prefix: str, *, max_workers: int = 16) -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.url = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self.max_workers = max_workers
        #: Concurrent downloads when the watcher's cache fetches a run (RunCache).
        self.download_workers = max_workers
        self.endpoint = getattr(getattr(client, "meta", None), "endpoint_url", "") or "AWS"

    @functools.cached_property
    def transfer(self) -> Any:
        """The managed transfers' settings (boto3's ``TransferConfig``, imported on first use)."""
        from boto3.s3.transfer import TransferConfig

        return TransferConfig(
            multipart_threshold=MULTIPART_CHUNK,
            multipart_chunksize=MULTIPART_CHUNK,
            max_concurrency=4,
            use_threads=True,
        )

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _unkey(self, full: str) -> str:
        return full[len(self.prefix) + 1 :] if self.prefix else full

    # --- primitives ----------

    def stat(self, key: str) -> ObjectInfo | None:
        with self._errors("HEAD", key, missing_ok=True) as missing:
            head = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        if missing:
            return None
        return ObjectInfo(int(head["ContentLength"]), _etag(head.get("ETag")))

    def list_objects(self, prefix: str) -> dict[str, ObjectInfo]:
        found = {}
        for page in self._pages(Prefix=self._key(prefix.rstrip("/") + "/")):
            for obj in page.get("Contents", ()):
                found[self._unkey(obj["Key"])] = ObjectInfo(
                    int(obj["Size"]), _etag(obj.get("ETag"))
                )
        return found

    def list_dirs(self, prefix: str, *, start_after: str = "") -> list[str]:
        """Names directly below ``prefix``; with ``start_after``, only those sorting after it."""
        base = self._key(prefix.rstrip("/") + "/")
        extra = {"StartAfter": base + start_after} if start_after else {}
        names = []
        for page in self._pages(Prefix=base, Delimiter="/", **extra):
            for common in page.get("CommonPrefixes", ()):
                name = common["Prefix"][len(base) :].rstrip("/")
                # StartAfter compares keys, not names: ``<start_after>/...`` sorts after it (and
                # so does ``<earlier name>/...`` when start_after goes on with a character below
                # "/", e.g. "-"), so those names come back and are dropped here.
                if not start_after or name > start_after:
                    names.append(name)
        return names

    def put_file(self, key: str, path: Path) -> None:
        from boto3.s3.transfer import S3Transfer

        with self._errors("PUT", key), S3Transfer(self.client, self.transfer) as transfer:
            # What boto3's ``client.upload_file`` does (a botocore client does not have it).
            transfer.upload_file(str(path), self.bucket, self._key(key))

    def put_bytes(self, key: str, data: bytes) -> None:
        with self._errors("PUT", key):
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def get_file(self, key: str, dest: Path) -> None:
        tmp = dest.with_name(f".{dest.name}.partial{os.getpid()}")
        try:
            from boto3.s3.transfer import S3Transfer

            with self._errors("GET", key), S3Transfer(self.client) as transfer:
                # What boto3's ``client.download_file`` does (with its default settings).
                transfer.download_file(self.bucket, self._key(key), str(tmp))
            os.replace(tmp, dest)
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)

    def checksum_of(self, path: Path) -> str | None:
        """The ETag S3 gives this file when uploaded with our transfer settings."""
        size = path.stat().st_size
        digests = []
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(MULTIPART_CHUNK), b""):
                digests.append(hashlib.md5(block, usedforsecurity=False))
        if size < MULTIPART_CHUNK:
            return digests[0].hexdigest() if digests else hashlib.md5(b"").hexdigest()
        combined = hashlib.md5(b"".join(d.digest() for d in digests), usedforsecurity=False)
        return f"{combined.hexdigest()}-{len(digests)}"

    # --- helpers ----------

    def _pages(self, **params: Any) -> Iterator[dict[str, Any]]:
        paginator = self.client.get_paginator("list_objects_v2")
        pages = paginator.paginate(Bucket=self.bucket, **params)
        iterator = iter(pages)
        while True:
            with self._errors("LIST", params.get("Prefix", "")):
                page = next(iterator, None)
            if page is None:
                return
            yield page

    @contextlib.contextmanager
    def _errors(self, op: str, key: str, *, missing_ok: bool = False) -> Iterator[list[bool]]:
        """Turn botocore's exceptions into one-line :class:`StoreError`s saying what to check."""
        missing: list[bool] = []
        try:
            yield missing
        except Exception as err:  # botocore raises many unrelated classes
            error = translate_error(
                err,
                op=op,
                url=f"s3://{self.bucket}/{self._key(key)}",
                bucket=self.bucket,
                endpoint=self.endpoint,
            )
            if error is None and missing_ok:
                missing.append(True)
                return
            if error is None:
                error = StoreError(f"{op} s3://{self.bucket}/{self._key(key)}: object not found")
            raise error from err


def translate_error(
    err: BaseException, *, op: str, url: str, bucket: str, endpoint: str
) -> StoreError | None:
    """A clear :class:`StoreError` for a boto3 failure; None for "no such key"."""
    from boto3.exceptions import S3UploadFailedError
    from botocore.exceptions import (
        ClientError,
        ConnectionError,
        NoCredentialsError,
        PartialCredentialsError,
    )

    if isinstance(err, NoCredentialsError | PartialCredentialsError):
        return StoreError(
            f"no AWS credentials found for {url}",
            hint="set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE, or use an "
            "instance role (boto3's standard chain)",
            fatal=True,
        )
    if isinstance(err, ConnectionError):
        return StoreError(
            f"cannot reach the S3 endpoint {endpoint} ({type(err).__name__})",
            hint="check store.endpoint_url / AWS_ENDPOINT_URL and the network",
            fatal=True,
        )
    code = ""
    message = str(err)
    if isinstance(err, ClientError):
        code = str(err.response.get("Error", {}).get("Code", ""))
        status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        message = err.response.get("Error", {}).get("Message", "") or message
        if code in {"404", "NoSuchKey", "NotFound"}:
            return None
        if code == "403" and status == 403:
            code = "AccessDenied"
    elif isinstance(err, S3UploadFailedError):
        match = re.search(r"\((\w+)\)", message)
        code = match.group(1) if match else ""
    if code == "NoSuchBucket":
        return StoreError(
            f"the bucket {bucket} does not exist (at {endpoint})",
            hint="check store.url and store.endpoint_url",
            fatal=True,
        )
    if code in {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AllAccessDisabled"}:
        return StoreError(
            f"access denied to {url} ({code})",
            hint="check the credentials and the bucket policy",
            fatal=True,
        )
    return StoreError(f"{op} {url} failed: {code + ': ' if code else ''}{message}")


def _etag(raw: str | None) -> str | None:
    """An ETag we can compare (plain MD5 or multipart form), else None (size only)."""
    if not raw:
        return None
    etag = raw.strip('"').lower()
    return etag if _PLAIN_ETAG.match(etag) else None
