"""The S3 backend (botocore): ``s3://bucket/prefix``, compatible with the team's existing bucket.

The client is built at the edge (:func:`make_client`) and handed in, so that tests can point
it at a moto server. Credentials come from botocore's standard chain only; retries use its
adaptive mode. Objects are compared by size and ETag: for a single-part upload the ETag is the
MD5 of the content, for a multipart one the MD5 of the parts' MD5s followed by ``-<parts>``,
which :meth:`S3Store.checksum_of` recomputes with the same part size.

Listings go through :mod:`bench.store.s3list` (the standard library) when the credentials are
static (:func:`open_s3`): the watcher's idle tick is one listing, and botocore's import and
client creation cost ten times the request. The botocore client is then made on first use,
by the transfers only.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench.errors import StoreError
from bench.store import s3list
from bench.store.base import ObjectInfo, Store

log = logging.getLogger(__name__)

MULTIPART_CHUNK = 8 * 1024 * 1024
#: Attempts at a download whose body is cut short (boto3's ``num_download_attempts``).
DOWNLOAD_ATTEMPTS = 5
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


def open_s3(
    bucket: str,
    prefix: str,
    *,
    endpoint_url: str = "",
    max_attempts: int = 8,
    max_workers: int = 16,
) -> S3Store:
    """The store of ``s3://bucket/prefix``; its listings without botocore when they can be.

    With static credentials (:func:`bench.store.s3list.lister_from_environment`) the listings
    use the standard library and the botocore client is made on first use (by a transfer, a
    stat); otherwise the client is made here and does everything, as it always did.
    """

    def connect() -> Any:
        return make_client(
            endpoint_url=endpoint_url, max_attempts=max_attempts, max_workers=max_workers
        )

    lister, why = s3list.lister_from_environment(
        endpoint_url=endpoint_url, max_attempts=max_attempts
    )
    if lister is None:
        log.debug("S3 listings through botocore: %s", why)
        return S3Store(connect(), bucket, prefix, max_workers=max_workers)
    log.debug("S3 listings through the standard library (%s); botocore for the rest", why)
    return S3Store(None, bucket, prefix, max_workers=max_workers, connect=connect, lister=lister)


class S3Store(Store):
    """A bucket prefix holding the runs (same keys as :class:`~bench.store.local.LocalStore`)."""

    def __init__(
        self,
        client: Any,
        bucket: str,
        prefix: str,
        *,
        max_workers: int = 16,
        connect: Callable[[], Any] | None = None,
        lister: s3list.S3Lister | None = None,
    ) -> None:
        """``client``: a botocore (or boto3) S3 client; or None and ``connect`` makes it on
        first use. ``lister``: the listings go through it instead of the client."""
        if client is None and connect is None:
            raise TypeError("S3Store needs a client or a way to connect one")
        self._client = client
        self._connect = connect
        self._client_lock = threading.Lock()
        self.lister = lister
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.url = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self.max_workers = max_workers
        #: Concurrent downloads when the watcher's cache fetches a run (RunCache).
        self.download_workers = max_workers

    @property
    def client(self) -> Any:
        """The botocore client, made on first use when it was not handed in."""
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    assert self._connect is not None
                    self._client = self._connect()
        return self._client

    @property
    def endpoint(self) -> str:
        """The endpoint the error messages name (botocore's ``meta.endpoint_url``)."""
        if self.lister is not None:
            return self.lister.endpoint
        return getattr(getattr(self.client, "meta", None), "endpoint_url", "") or "AWS"

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
        """One GET, streamed to a temporary file renamed over ``dest`` once complete.

        (boto3's managed download made a HEAD before each GET: twice the requests.) A body cut
        short or stalled is fetched again from the start, ``DOWNLOAD_ATTEMPTS`` times in all,
        as boto3's download does; botocore retries the request itself.
        """
        from botocore.exceptions import (
            IncompleteReadError,
            ReadTimeoutError,
            ResponseStreamingError,
        )

        tmp = dest.with_name(f".{dest.name}.partial{os.getpid()}")
        try:
            for attempt in range(1, DOWNLOAD_ATTEMPTS + 1):
                with self._errors("GET", key):
                    body = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
                    try:
                        with tmp.open("wb") as fh:
                            for chunk in body.iter_chunks(1 << 20):
                                fh.write(chunk)
                        break
                    except (
                        IncompleteReadError,
                        ReadTimeoutError,
                        ResponseStreamingError,
                        TimeoutError,
                        ConnectionError,
                    ) as err:
                        if attempt == DOWNLOAD_ATTEMPTS:
                            raise
                        log.debug("GET %s cut short (%s): again", key, type(err).__name__)
                    finally:
                        body.close()
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
        pages: Any
        if self.lister is not None:
            pages = self.lister.pages(
                self.bucket,
                prefix=params["Prefix"],
                delimiter=params.get("Delimiter", ""),
                start_after=params.get("StartAfter", ""),
            )
        else:
            paginator = self.client.get_paginator("list_objects_v2")
            pages = paginator.paginate(Bucket=self.bucket, **params)
        iterator = iter(pages)
        while True:
            with self._errors("LIST", self._unkey(params["Prefix"])):
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
    """A clear :class:`StoreError` for a botocore failure, or one of :mod:`~bench.store.s3list`
    (the same words for the same failure); None for "no such key"."""
    if isinstance(err, s3list.S3ConnectionError):
        return _unreachable(endpoint, err)
    if isinstance(err, s3list.S3HTTPClientError):
        return _coded_error("", str(err), op, url, bucket, endpoint)
    if isinstance(err, s3list.ResponseError):
        return _answer_error(
            err.code, err.status, err.message or str(err), op, url, bucket, endpoint
        )

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
        return _unreachable(endpoint, err)
    if isinstance(err, ClientError):
        error = err.response.get("Error", {})
        status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        message = error.get("Message", "") or str(err)
        return _answer_error(str(error.get("Code", "")), status, message, op, url, bucket, endpoint)
    code = ""
    if isinstance(err, S3UploadFailedError):
        match = re.search(r"\((\w+)\)", str(err))
        code = match.group(1) if match else ""
    return _coded_error(code, str(err), op, url, bucket, endpoint)


def _unreachable(endpoint: str, err: BaseException) -> StoreError:
    return StoreError(
        f"cannot reach the S3 endpoint {endpoint} ({type(err).__name__})",
        hint="check store.endpoint_url / AWS_ENDPOINT_URL and the network",
        fatal=True,
    )


def _answer_error(
    code: str, status: int | None, message: str, op: str, url: str, bucket: str, endpoint: str
) -> StoreError | None:
    """An error answer of S3 (its code and HTTP status)."""
    if code in {"404", "NoSuchKey", "NotFound"}:
        return None
    if code == "403" and status == 403:
        code = "AccessDenied"
    return _coded_error(code, message, op, url, bucket, endpoint)


def _coded_error(
    code: str, message: str, op: str, url: str, bucket: str, endpoint: str
) -> StoreError:
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
