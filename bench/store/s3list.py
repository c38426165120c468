"""S3 listings (ListObjectsV2) with the standard library alone: the watcher's idle tick.

Why this exists: an idle tick is one listing request, yet through botocore it cost about 0.6 s
(measured, issue 8): 0.19 s importing ``botocore.session`` and 0.145 s loading the S3 service
model to create the client, against 0.03 s for the request itself. The tick must take at most
half the time of the old ``aws s3 ls | grep PRE | tail -n 1``. This module makes that request
over ``http.client``, signed with AWS Signature Version 4 (``hmac``/``hashlib``), so that a tick
with nothing new never imports botocore.

It is a performance path only, taken when it gives exactly what botocore would:
:func:`lister_from_environment` returns a lister only for static credentials that are cheap to
read (the ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` environment variables, or the keys of
the profile in the shared credentials or config file) and the plain endpoint botocore would
use (``store.endpoint_url``/``AWS_ENDPOINT_URL`` with path-style addressing, or the AWS
regional endpoint with the bucket as a virtual host; the region is botocore's:
``AWS_DEFAULT_REGION``, else the profile's, else us-east-1; certificates checked against
``AWS_CA_BUNDLE``, a file, or certifi's bundle). Anything else (SSO, roles, web identity,
``credential_process``, instance or container credentials, proxies, FIPS/dual-stack, other
profile settings) is left to botocore: :func:`bench.store.s3.open_s3` logs which path it took,
and why, at DEBUG level. The requests are the ones botocore sends (same URL, same signature:
the tests compare them byte for byte); retries (connection errors, 5xx, throttling) follow
botocore's standard mode with the same ``max_attempts``, and a "wrong region" answer of AWS is
followed once, as botocore does; errors are raised as :class:`ResponseError` (botocore's
``ClientError``) and :class:`S3ConnectionError` subclasses named like botocore's, which
:func:`bench.store.s3.translate_error` words the same way.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import logging
import os
import random
import re
import ssl
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, unquote_plus, urlsplit

log = logging.getLogger(__name__)

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
#: Headers SigV4 leaves out of the signature (botocore's ``SIGNED_HEADERS_BLACKLIST``).
UNSIGNED_HEADERS = frozenset(
    {
        "baggage",
        "connection",
        "expect",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "traceparent",
        "tracestate",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "user-agent",
        "x-amzn-trace-id",
    }
)
#: botocore's Config of :func:`bench.store.s3.make_client`.
CONNECT_TIMEOUT = 10
READ_TIMEOUT = 120
#: botocore's standard retry mode: what is retried, and the backoff.
TRANSIENT_STATUS = frozenset({500, 502, 503, 504})
TRANSIENT_CODES = frozenset(
    {"RequestTimeout", "RequestTimeoutException", "PriorRequestNotComplete"}
)
THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "TransactionInProgressException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "LimitExceededException",
        "RequestThrottled",
        "SlowDown",
        "PriorRequestNotComplete",
        "EC2ThrottledException",
    }
)
MAX_BACKOFF = 20.0

#: Environment variables that change what botocore does in ways this module does not follow.
BOTOCORE_ONLY_ENV = (
    "AWS_ENDPOINT_URL_S3",
    "AWS_USE_FIPS_ENDPOINT",
    "AWS_USE_DUALSTACK_ENDPOINT",
    "AWS_S3_US_EAST_1_REGIONAL_ENDPOINT",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "http_proxy",
    "https_proxy",
)
#: Profile settings that do not change a listing; any other one leaves the listings to botocore.
PLAIN_PROFILE_KEYS = frozenset(
    {
        "aws_access_key_id",
        "aws_secret_access_key",
        "aws_session_token",
        "aws_security_token",
        "region",
        "output",
        "max_attempts",
        "retry_mode",
    }
)
#: Regions of the standard partition (``*.amazonaws.com``), as in botocore's endpoints data.
AWS_REGION = re.compile(r"(us|eu|ap|sa|ca|me|af|il|mx)-\w+-\d+")
#: Bucket names botocore addresses as a virtual host on AWS (no dots).
VIRTUAL_HOST_BUCKET = re.compile(r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]")


# --- errors ----------


class ResponseError(Exception):
    """An error answer of S3 (botocore's ``ClientError``): its code, message and HTTP status."""

    def __init__(self, code: str, message: str, status: int, region: str = "") -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message
        self.status = status
        #: The bucket's region when S3 says the request went to the wrong one.
        self.region = region


class S3TransportError(Exception):
    """No complete answer (retried); subclasses carry the names of botocore's exceptions."""


class S3ConnectionError(S3TransportError):
    """The endpoint could not be reached (botocore's ``ConnectionError``): the store says
    "cannot reach" with the class's name."""


class EndpointConnectionError(S3ConnectionError):
    pass


class ConnectTimeoutError(S3ConnectionError):
    pass


class S3HTTPClientError(S3TransportError):
    """The connection failed during a request (botocore's ``HTTPClientError``): the store
    shows its message, botocore's words."""


class ReadTimeoutError(S3HTTPClientError):
    pass


class ConnectionClosedError(S3HTTPClientError):
    pass


class SSLError(S3ConnectionError):
    pass


# --- signature ----------


@dataclass(frozen=True, repr=False)
class Credentials:
    access_key: str
    secret_key: str
    token: str | None = None

    def __repr__(self) -> str:  # never the secret, nor the token
        return "Credentials(<static>)"


def host_of(url: str) -> str:
    """The ``Host`` header of ``url`` (lowercase, default port left out), as botocore signs it."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    default = {"http": 80, "https": 443}.get(parts.scheme)
    if parts.port is not None and parts.port != default:
        host = f"{host}:{parts.port}"
    return host


def sign_v4(
    method: str,
    url: str,
    *,
    credentials: Credentials,
    region: str,
    when: datetime,
    headers: Mapping[str, str] | None = None,
    payload_hash: str = EMPTY_SHA256,
    service: str = "s3",
) -> dict[str, str]:
    """``headers`` plus the ones that sign the request (``X-Amz-Date``,
    ``X-Amz-Content-SHA256``, ``X-Amz-Security-Token`` with a session token, ``Authorization``):
    what botocore's ``S3SigV4Auth`` adds. ``url`` is sent as is: its path and query already
    percent-encoded (the path is not normalised, as for S3)."""
    stamp = when.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = dict(headers or {})
    out["X-Amz-Date"] = stamp
    if credentials.token:
        out["X-Amz-Security-Token"] = credentials.token
    out["X-Amz-Content-SHA256"] = payload_hash
    signed = {
        name.lower(): " ".join(value.split())
        for name, value in out.items()
        if name.lower() not in UNSIGNED_HEADERS
    }
    signed.setdefault("host", host_of(url))
    names = sorted(signed)
    parts = urlsplit(url)
    canonical = "\n".join(
        [
            method.upper(),
            parts.path,
            _canonical_query(parts.query),
            "".join(f"{name}:{signed[name]}\n" for name in names),
            ";".join(names),
            payload_hash,
        ]
    )
    scope = f"{stamp[:8]}/{region}/{service}/aws4_request"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = f"AWS4{credentials.secret_key}".encode()
    for part in (stamp[:8], region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    out["Authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={credentials.access_key}/{scope}, "
        f"SignedHeaders={';'.join(names)}, Signature={signature}"
    )
    return out


def _canonical_query(query: str) -> str:
    """The query's ``key=value`` pairs sorted, as they are in the URL (already encoded)."""
    pairs = []
    for pair in query.split("&") if query else ():
        key, _, value = pair.partition("=")
        pairs.append((key, value))
    return "&".join(f"{key}={value}" for key, value in sorted(pairs))


def _encode(value: str) -> str:
    """Percent-encoding of a query key or value, as botocore does it."""
    return quote(value, safe="-_.~")


# --- the lister ----------


class S3Lister:
    """ListObjectsV2 on one endpoint, signed with static credentials (see the module docstring).

    ``endpoint_url`` empty: AWS's regional endpoint for ``region``. ``endpoint`` is the URL the
    store's messages name: botocore's ``client.meta.endpoint_url`` for the same settings.
    ``max_attempts`` means what it means in botocore's ``Config(retries=...)`` (the setting
    ``store.max_attempts``): the retries after the first request, ``max_attempts + 1``
    requests in all.
    """

    def __init__(
        self,
        *,
        credentials: Credentials,
        region: str,
        endpoint_url: str = "",
        max_attempts: int = 8,
        ca_bundle: str = "",
    ) -> None:
        self.credentials = credentials
        self.ca_bundle = ca_bundle
        self.region = region
        self.custom_endpoint = endpoint_url
        self.attempts = max(1, max_attempts + 1)
        self._ssl: ssl.SSLContext | None = None

    @property
    def endpoint(self) -> str:
        if self.custom_endpoint:
            return self.custom_endpoint
        if self.region == "us-east-1":
            return "https://s3.amazonaws.com"
        return f"https://s3.{self.region}.amazonaws.com"

    def bucket_url(self, bucket: str) -> str:
        """Path style on a custom endpoint, a virtual host on AWS when the name allows it (what
        botocore does by default)."""
        if not self.custom_endpoint and VIRTUAL_HOST_BUCKET.fullmatch(bucket):
            scheme, host = self.endpoint.split("://", 1)
            return f"{scheme}://{bucket}.{host}/"
        return f"{self.endpoint.rstrip('/')}/{quote(bucket, safe='-_.~')}"

    def list_url(
        self,
        bucket: str,
        *,
        prefix: str,
        delimiter: str = "",
        start_after: str = "",
        token: str = "",
        max_keys: int | None = None,
    ) -> str:
        params = [("list-type", "2"), ("prefix", prefix)]
        if delimiter:
            params.append(("delimiter", delimiter))
        if start_after:
            params.append(("start-after", start_after))
        if token:
            params.append(("continuation-token", token))
        if max_keys is not None:
            params.append(("max-keys", str(max_keys)))
        params.append(("encoding-type", "url"))
        query = "&".join(f"{_encode(key)}={_encode(value)}" for key, value in params)
        return f"{self.bucket_url(bucket)}?{query}"

    def pages(
        self,
        bucket: str,
        *,
        prefix: str,
        delimiter: str = "",
        start_after: str = "",
        max_keys: int | None = None,
    ) -> Iterator[dict[str, Any]]:
        """The pages of the listing, each shaped like botocore's answer (``Contents`` with
        ``Key``, ``Size``, ``ETag``; ``CommonPrefixes`` with ``Prefix``; keys URL-decoded),
        over one connection."""
        token = ""
        connection = _Connection(self._context)
        try:
            while True:
                url = self.list_url(
                    bucket,
                    prefix=prefix,
                    delimiter=delimiter,
                    start_after=start_after,
                    token=token,
                    max_keys=max_keys,
                )
                page = parse_page(self._get(connection, bucket, url))
                yield page
                following = page.get("NextContinuationToken") or ""
                if not page.get("IsTruncated") or not following:
                    return
                if following == token:
                    raise ResponseError("PaginationError", "the same next token twice", 200)
                token = following
        finally:
            connection.close()

    def signed(self, url: str, when: datetime | None = None) -> dict[str, str]:
        """The headers of a GET of ``url``, signed at ``when`` (an aware datetime; now)."""
        return sign_v4(
            "GET",
            url,
            credentials=self.credentials,
            region=self.region,
            when=when or datetime.now(UTC),
            headers={"Host": host_of(url), "User-Agent": "bench-s3list"},
        )

    def _context(self) -> ssl.SSLContext:
        """Certificates verified against the bundle botocore uses: ``AWS_CA_BUNDLE``, else
        certifi's, else botocore's own; :class:`SSLError` when it cannot be loaded."""
        if self._ssl is None:
            bundle = self.ca_bundle or _ca_bundle()
            try:
                self._ssl = ssl.create_default_context(cafile=bundle)
            except (OSError, ssl.SSLError) as err:
                raise SSLError(f"cannot load the CA bundle {bundle}: {err}") from err
        return self._ssl

    def _get(self, connection: _Connection, bucket: str, url: str) -> bytes:
        """One GET, retried like botocore's standard mode; a wrong-region answer of AWS is
        followed once to the bucket's region (botocore's S3RegionRedirector)."""
        attempt = 0
        redirected = False
        while True:
            attempt += 1
            try:
                status, region_header, body = connection.get(url, self.signed(url))
            except S3TransportError as err:
                if attempt >= self.attempts:
                    raise
                self._pause(attempt, throttled=False, why=type(err).__name__)
                continue
            if status == 200:
                return body
            error = parse_error(status, body)
            region = region_header or error.region
            if not redirected and region and region != self.region and _wrong_region(error):
                log.debug("S3: bucket %s is in %s, not %s: following", bucket, region, self.region)
                self.region = region
                url = self.bucket_url(bucket) + url[url.index("?") :]
                redirected = True
                attempt -= 1
                continue
            throttled = error.code in THROTTLING_CODES
            transient = status in TRANSIENT_STATUS or error.code in TRANSIENT_CODES
            if not (throttled or transient) or attempt >= self.attempts:
                raise error
            self._pause(attempt, throttled=throttled, why=f"HTTP {status} {error.code}")

    @staticmethod
    def _pause(attempt: int, *, throttled: bool, why: str) -> None:
        """botocore's backoff: random(0, 1) x min(base x 2^(attempt-1), 20 s), the base 1 s
        for throttling and 50 ms otherwise."""
        base = 1.0 if throttled else 0.05
        delay = random.random() * min(base * 2 ** (attempt - 1), MAX_BACKOFF)
        log.debug("S3 listing: %s; retrying in %.2f s (attempt %d)", why, delay, attempt + 1)
        time.sleep(delay)


def _wrong_region(error: ResponseError) -> bool:
    """An answer botocore's S3RegionRedirector follows to the bucket's region."""
    return (
        error.status in (301, 302, 307)
        or error.code in ("PermanentRedirect", "IllegalLocationConstraintException")
        or (error.code == "AuthorizationHeaderMalformed" and bool(error.region))
    )


class _Connection:
    """A keep-alive HTTP(S) connection, (re)opened for the host of each request as needed, its
    errors turned into the :class:`S3TransportError` classes botocore would raise."""

    def __init__(self, context: Any) -> None:
        self._context = context
        self._http: http.client.HTTPConnection | None = None
        self.netloc = ""

    def get(self, url: str, headers: dict[str, str]) -> tuple[int, str, bytes]:
        """Status, ``x-amz-bucket-region`` header and body of a GET of ``url``."""
        parts = urlsplit(url)
        if self._http is None or parts.netloc != self.netloc:
            self.close()
            self.netloc = parts.netloc
            self._http = self._connect(parts.scheme, parts.hostname or "", parts.port)
        try:
            self._http.request("GET", f"{parts.path or '/'}?{parts.query}", headers=headers)
            response = self._http.getresponse()
            body = response.read()
        except TimeoutError as err:
            self.close()
            raise ReadTimeoutError(f'Read timeout on endpoint URL: "{url}"') from err
        except ssl.SSLError as err:
            self.close()
            raise SSLError(str(err)) from err
        except (OSError, http.client.HTTPException) as err:
            self.close()
            raise ConnectionClosedError(
                "Connection was closed before we received a valid response from endpoint "
                f'URL: "{url}".'
            ) from err
        if response.will_close:
            self.close()
        return response.status, response.getheader("x-amz-bucket-region") or "", body

    def _connect(self, scheme: str, host: str, port: int | None) -> http.client.HTTPConnection:
        connection: http.client.HTTPConnection
        try:
            if scheme == "https":
                connection = http.client.HTTPSConnection(
                    host, port, timeout=CONNECT_TIMEOUT, context=self._context()
                )
            else:
                connection = http.client.HTTPConnection(host, port, timeout=CONNECT_TIMEOUT)
            connection.connect()
        except TimeoutError as err:
            raise ConnectTimeoutError(f"connect timeout on {self.netloc}") from err
        except ssl.SSLError as err:
            raise SSLError(str(err)) from err
        except OSError as err:
            raise EndpointConnectionError(f"could not connect to {self.netloc}: {err}") from err
        if connection.sock is not None:
            connection.sock.settimeout(READ_TIMEOUT)
        return connection

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None


def _ca_bundle() -> str | None:
    try:
        import certifi

        return str(certifi.where())
    except ImportError:
        import importlib.util

        spec = importlib.util.find_spec("botocore")
        if spec is None or spec.origin is None:
            return None
        return os.path.join(os.path.dirname(spec.origin), "cacert.pem")


# --- answers ----------


def _children(element: Any) -> Iterator[tuple[str, Any]]:
    for child in element:
        yield child.tag.rpartition("}")[2], child


def parse_page(body: bytes) -> dict[str, Any]:
    """A ListObjectsV2 answer as botocore returns it (the fields the store reads)."""
    import xml.etree.ElementTree as ET

    try:
        root = ET.fromstring(body)
    except ET.ParseError as err:
        raise ResponseError("InvalidResponse", f"unreadable listing: {err}", 200) from err
    page: dict[str, Any] = {"Contents": [], "CommonPrefixes": [], "IsTruncated": False}
    encoded = any(tag == "EncodingType" and (e.text or "") == "url" for tag, e in _children(root))

    def decode(text: str) -> str:
        return unquote_plus(text) if encoded else text

    for tag, element in _children(root):
        if tag == "Contents":
            fields = {name: child.text or "" for name, child in _children(element)}
            page["Contents"].append(
                {
                    "Key": decode(fields.get("Key", "")),
                    "Size": int(fields.get("Size") or 0),
                    "ETag": fields.get("ETag"),
                }
            )
        elif tag == "CommonPrefixes":
            fields = {name: child.text or "" for name, child in _children(element)}
            page["CommonPrefixes"].append({"Prefix": decode(fields.get("Prefix", ""))})
        elif tag == "IsTruncated":
            page["IsTruncated"] = (element.text or "").strip() == "true"
        elif tag == "NextContinuationToken":
            page["NextContinuationToken"] = element.text or ""
    return page


def parse_error(status: int, body: bytes) -> ResponseError:
    """The error of an answer: S3's ``<Error><Code>``, or as botocore names a bodiless one (the
    status as code, its reason phrase as message)."""
    import xml.etree.ElementTree as ET

    fields: dict[str, str] = {}
    if body.strip():
        try:
            root = ET.fromstring(body)
        except ET.ParseError:
            root = None
        if root is not None:
            fields = {tag: element.text or "" for tag, element in _children(root)}
    code = fields.get("Code") or str(status)
    message = fields.get("Message") or http.client.responses.get(status, "")
    return ResponseError(code, message, status, fields.get("Region", ""))


# --- when to use it ----------


def lister_from_environment(
    *, endpoint_url: str = "", max_attempts: int = 8, environ: Mapping[str, str] | None = None
) -> tuple[S3Lister | None, str]:
    """A lister when the settings are simple enough (see the module docstring), else None; and
    why, in words for a DEBUG line (no secret in them)."""
    env = os.environ if environ is None else environ
    special = [name for name in BOTOCORE_ONLY_ENV if env.get(name)]
    if special:
        return None, f"{', '.join(special)} set"
    endpoint = endpoint_url or env.get("AWS_ENDPOINT_URL", "")
    if endpoint and urlsplit(endpoint).scheme not in ("http", "https"):
        return None, f"endpoint {endpoint} is not an http(s) URL"
    profile_name = env.get("AWS_DEFAULT_PROFILE") or env.get("AWS_PROFILE") or ""
    try:
        config = _read_profile(_path(env, "AWS_CONFIG_FILE", "~/.aws/config"), profile_name, True)
        shared = _read_profile(
            _path(env, "AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials"), profile_name, False
        )
    except (OSError, ValueError) as err:  # unreadable, or not in the INI format
        return None, f"the AWS configuration files could not be read ({type(err).__name__})"
    profile = {**(config or {}), **(shared or {})}  # botocore's merge: credentials file wins
    if profile_name and config is None and shared is None:
        return None, f"profile {profile_name} not found"
    others = sorted(k for k in profile if k not in PLAIN_PROFILE_KEYS and not k.startswith("cli_"))
    if others:
        return None, f"the profile sets {', '.join(others)}"
    if env.get("AWS_DEFAULT_REGION") == "":
        return None, "AWS_DEFAULT_REGION is set but empty"
    region = env.get("AWS_DEFAULT_REGION") or profile.get("region") or "us-east-1"
    if not endpoint and not AWS_REGION.fullmatch(region):
        return None, f"region {region} is outside the standard AWS partition"
    ca_bundle = env.get("AWS_CA_BUNDLE", "")
    if ca_bundle and os.path.isdir(ca_bundle):
        return None, f"AWS_CA_BUNDLE {ca_bundle} is a directory"
    credentials, source = _static_credentials(env, shared or {}, config or {})
    if credentials is None:
        return None, source
    lister = S3Lister(
        credentials=credentials,
        region=region,
        endpoint_url=endpoint,
        max_attempts=max_attempts,
        ca_bundle=ca_bundle,
    )
    return lister, f"static credentials from {source}, endpoint {lister.endpoint}"


def _static_credentials(
    env: Mapping[str, str], shared: dict[str, str], config: dict[str, str]
) -> tuple[Credentials | None, str]:
    """botocore's first sources, in its order: the environment, then the shared credentials
    file, then the config file. Partial keys are left to botocore (it reports them)."""
    key, secret = env.get("AWS_ACCESS_KEY_ID", ""), env.get("AWS_SECRET_ACCESS_KEY", "")
    if key and secret:
        token = env.get("AWS_SECURITY_TOKEN") or env.get("AWS_SESSION_TOKEN") or None
        return Credentials(key, secret, token), "the environment"
    if key or secret or env.get("AWS_CREDENTIAL_EXPIRATION"):
        return None, "partial credentials in the environment"
    for keys, source in ((shared, "the shared credentials file"), (config, "the config file")):
        key, secret = keys.get("aws_access_key_id", ""), keys.get("aws_secret_access_key", "")
        if key and secret:
            names = [name for name in ("aws_security_token", "aws_session_token") if name in keys]
            token = keys[names[0]] if names else None
            return Credentials(key, secret, token or None), source
        if "aws_access_key_id" in keys or "aws_secret_access_key" in keys:
            return None, f"partial credentials in {source}"
    return None, "no static credentials (botocore's chain looks further)"


def _path(env: Mapping[str, str], name: str, default: str) -> str:
    return os.path.expandvars(os.path.expanduser(env.get(name) or default))


def _read_profile(path: str, name: str, is_config: bool) -> dict[str, str] | None:
    """The settings of profile ``name`` (empty: ``default``) in an AWS configuration file;
    None when the file or the profile is not there."""
    if not os.path.isfile(path):
        return None
    import configparser  # only when there is a file: most watcher hosts have none

    parser = configparser.RawConfigParser()
    try:
        with open(path, encoding="utf-8") as fh:
            parser.read_file(fh)
    except configparser.Error as err:
        raise ValueError(f"{path}: {type(err).__name__}") from err
    profile = name or "default"
    sections = [profile]
    if is_config:
        sections = (
            [f"profile {profile}", profile] if profile == "default" else [f"profile {profile}"]
        )
    found: dict[str, str] | None = None
    for section in sections:
        if parser.has_section(section):
            found = {**(found or {}), **dict(parser.items(section))}
    return found
