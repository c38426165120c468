"""The standard-library S3 listing (bench.store.s3list) against botocore, and downloads.

The signature is compared byte for byte with botocore's ``S3SigV4Auth`` and with what a botocore
client sends; the listings, their pagination and their errors with the botocore path, both
talking to moto's S3 over HTTP (``bench.testing.s3server``), whose request log counts requests.
moto also checks signatures when IAM authentication is on: a wrongly signed request is refused.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock
from urllib.parse import parse_qsl, urlsplit

import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials
from botocore.exceptions import PartialCredentialsError

from bench.errors import StoreError
from bench.runs import make_run_name
from bench.store.base import COMPLETE, INFERENCE
from bench.store.s3 import S3Store, make_client, open_s3
from bench.store.s3list import (
    Credentials,
    ResponseError,
    S3Lister,
    host_of,
    lister_from_environment,
    sign_v4,
)
from bench.testing.s3server import Fault, S3Server

PREFIX = "team/ref-host"
WHEN = datetime(2026, 3, 14, 15, 9, 26, tzinfo=UTC)
#: Keys whose names need encoding in a URL, in a listing, or both.
ODD = ["a b", "c+d", "e%20f", "é~ü", "g=h&i", "j/k", "l;m,n", "o'p(q)", "r*s!t"]


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Static credentials in the environment, and nothing from the runner's AWS setup."""
    for name in list(os.environ):
        if name.startswith("AWS_") or name.lower() in {"http_proxy", "https_proxy"}:
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))


def lister(endpoint: str, *, max_attempts: int = 3, secret: str = "testing") -> S3Lister:
    return S3Lister(
        credentials=Credentials("testing", secret),
        region="us-east-1",
        endpoint_url=endpoint,
        max_attempts=max_attempts,
    )


def both_stores(endpoint: str, bucket: str, *, max_attempts: int = 3) -> tuple[S3Store, S3Store]:
    """The same bucket prefix through the stdlib listing and through botocore."""
    lite = S3Store(
        None,
        bucket,
        PREFIX,
        connect=lambda: make_client(endpoint_url=endpoint, max_attempts=max_attempts),
        lister=lister(endpoint, max_attempts=max_attempts),
    )
    boto = S3Store(make_client(endpoint_url=endpoint, max_attempts=max_attempts), bucket, PREFIX)
    return lite, boto


# --- the signature --------------------------------------------------------------------------------


def botocore_signed(url: str, credentials: Credentials, region: str) -> dict[str, str]:
    request = AWSRequest(method="GET", url=url, headers={"User-Agent": "someone"})
    auth = S3SigV4Auth(
        BotoCredentials(credentials.access_key, credentials.secret_key, credentials.token),
        "s3",
        region,
    )
    with mock.patch("botocore.auth.get_current_datetime", return_value=WHEN.replace(tzinfo=None)):
        auth.add_auth(request)
    return {name: str(value) for name, value in request.headers.items()}


SIGNED = [
    ("http://127.0.0.1:9000", "bench-results", Credentials("AKIDEXAMPLE", "wJalr/K7+MDENG"), ""),
    ("https://s3.amazonaws.com", "bucket", Credentials("AKID", "secret", "FwoG/token+="), ""),
    ("https://minio.example.com:9443/base", "b.dotted", Credentials("A", "s", "t"), "x"),
    ("https://s3.eu-west-3.amazonaws.com", "bench-results", Credentials("K", "S"), "tok=/+"),
    ("http://[::1]:9000", "bench-results", Credentials("K", "S", "T"), ""),
]


@pytest.mark.parametrize("prefix", ["", "team/ref host/", "équipe+1/a=b&c/", "x%2Fy~z/"])
@pytest.mark.parametrize(("endpoint", "bucket", "credentials", "token"), SIGNED)
def test_the_signature_is_botocores_byte_for_byte(
    endpoint: str, bucket: str, credentials: Credentials, token: str, prefix: str
) -> None:
    """Same request, credentials and time: the same Authorization (and signed headers) as
    botocore's S3SigV4Auth, with and without a session token, odd prefixes and start-after."""
    aws = "amazonaws.com" in endpoint
    region = "eu-west-3" if "eu-west-3" in endpoint else "us-east-1"
    listing = S3Lister(credentials=credentials, region=region, endpoint_url="" if aws else endpoint)
    url = listing.list_url(
        bucket,
        prefix=prefix,
        delimiter="/",
        start_after=prefix + "_snoop_2026 +é",
        token=token,
        max_keys=7 if token else None,
    )
    ours = sign_v4(
        "GET",
        url,
        credentials=credentials,
        region=region,
        when=WHEN,
        headers={"Host": host_of(url), "User-Agent": "someone"},
    )
    theirs = botocore_signed(url, credentials, region)
    assert ours["Authorization"].encode() == theirs["Authorization"].encode()
    for name in ("X-Amz-Date", "X-Amz-Content-SHA256", "X-Amz-Security-Token"):
        assert ours.get(name) == theirs.get(name), name
    assert ("X-Amz-Security-Token" in ours) == bool(credentials.token)
    assert listing.signed(url, WHEN)["Authorization"] == ours["Authorization"]


class Captured(Exception):
    """Raised by the test's hook to keep botocore's request from being sent."""


@pytest.mark.parametrize(
    ("endpoint", "region", "bucket"),
    [
        ("http://127.0.0.1:9000", "us-east-1", "bench-results"),
        ("https://minio.example.com", "eu-west-3", "bench-results"),
        ("", "us-east-1", "bench-results"),
        ("", "eu-west-3", "bench-results"),
        ("", "eu-west-3", "my.dotted.bucket"),
    ],
    ids=["ip-endpoint", "custom-endpoint", "aws-us-east-1", "aws-eu-west-3", "aws-dotted-bucket"],
)
def test_the_request_is_the_one_a_botocore_client_sends(
    aws_env: None, endpoint: str, region: str, bucket: str
) -> None:
    """Host, path, query and Authorization of a listing page are botocore's (path style on a
    custom endpoint, a virtual host on AWS), and so is the endpoint the errors name."""
    import botocore.session

    sent: dict[str, Any] = {}

    def capture(request: Any, **_: Any) -> None:
        sent["url"] = request.url
        sent["headers"] = {
            k: v.decode() if isinstance(v, bytes) else v for k, v in request.headers.items()
        }
        raise Captured

    client = botocore.session.get_session().create_client(
        "s3",
        endpoint_url=endpoint or None,
        region_name=region,
        aws_access_key_id="AKID",
        aws_secret_access_key="secret",
        aws_session_token="token/+=",
    )
    client.meta.events.register("before-send.s3.ListObjectsV2", capture)
    params = {"Prefix": "p q/é+/", "Delimiter": "/", "StartAfter": "p q/é+/x=y&z"}
    with (
        mock.patch("botocore.auth.get_current_datetime", return_value=WHEN.replace(tzinfo=None)),
        pytest.raises(Captured),
    ):
        client.list_objects_v2(Bucket=bucket, ContinuationToken="1/2+3=", **params)

    ours = S3Lister(
        credentials=Credentials("AKID", "secret", "token/+="), region=region, endpoint_url=endpoint
    )
    url = ours.list_url(
        bucket,
        prefix=params["Prefix"],
        delimiter="/",
        start_after=params["StartAfter"],
        token="1/2+3=",
    )
    theirs = urlsplit(sent["url"])
    mine = urlsplit(url)
    assert (mine.scheme, mine.netloc, mine.path) == (theirs.scheme, theirs.netloc, theirs.path)
    assert sorted(parse_qsl(mine.query)) == sorted(parse_qsl(theirs.query))
    assert ours.signed(url, WHEN)["Authorization"] == sent["headers"]["Authorization"]
    assert ours.endpoint == client.meta.endpoint_url


# --- listings over HTTP ---------------------------------------------------------------------------


def put_many(s3: S3Server, bucket: str, keys: list[str]) -> None:
    """Objects put straight into the server's moto backend (it runs in this process): 2,500
    PUTs over HTTP would take most of a minute."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
    for key in keys:
        backend.put_object(bucket, key, b"1\n")


def test_listings_are_the_same_as_botocores(aws_env: None, s3: S3Server, bucket: str) -> None:
    """list_dirs (with odd start-after values), list_objects, list_runs: the same answers as the
    botocore path, keys with characters that need encoding included; no botocore client made."""
    base = f"{PREFIX}/{COMPLETE}"
    runs = [
        make_run_name(datetime(2026, 1, 1) + timedelta(hours=i), "v1-0-g1").name for i in range(4)
    ]
    keys = [f"{base}/{run}/SUCCESS" for run in runs[:3]] + [f"{base}/{runs[3]}/run.json"]
    keys += [f"{base}/{name}/x" for name in ODD]
    keys += [f"{PREFIX}/{INFERENCE}/{runs[0]}/{name}.csv" for name in ODD]
    put_many(s3, bucket, keys)
    lite, boto = both_stores(s3.endpoint, bucket)

    for start_after in ["", runs[1], "a", "c+", "é", "g=h&i", "zzz"]:
        assert lite.list_dirs(COMPLETE, start_after=start_after) == boto.list_dirs(
            COMPLETE, start_after=start_after
        ), start_after
    assert "é~ü" in lite.list_dirs(COMPLETE) and "a b" in lite.list_dirs(COMPLETE)
    objects = lite.list_objects(f"{INFERENCE}/{runs[0]}")
    assert objects == boto.list_objects(f"{INFERENCE}/{runs[0]}")
    assert len(objects) == len(ODD) and f"{INFERENCE}/{runs[0]}/c+d.csv" in objects
    assert lite.list_runs() == boto.list_runs()
    assert lite.newest_successful_run() == boto.newest_successful_run()
    assert [r.name for r in lite.list_runs()] == runs
    assert lite._client is not None  # has_success is a HEAD: the botocore client, made lazily


def test_an_idle_listing_makes_no_botocore_client(aws_env: None, s3: S3Server, bucket: str) -> None:
    """The watcher's idle question (runs after the last one) is one request, without botocore."""
    run = make_run_name(datetime(2026, 1, 1), "v1-0-g1")
    put_many(s3, bucket, [f"{PREFIX}/{COMPLETE}/{run.name}/SUCCESS"])
    lite, _ = both_stores(s3.endpoint, bucket)
    s3.reset_log()
    assert lite.newest_successful_run(after=run) is None
    assert s3.count() == 1
    assert lite._client is None


def test_the_listing_paginates(aws_env: None, s3: S3Server, bucket: str) -> None:
    """2,500 run prefixes: 25 pages of 100 (continuation tokens) give what botocore's paginator
    gives; S3Store.list_runs gets them in 3 requests of 1,000."""
    start = datetime(2024, 1, 1)
    names = [
        make_run_name(start + timedelta(minutes=i), "v1.0-0-gabc1234").name for i in range(2500)
    ]
    put_many(s3, bucket, [f"{PREFIX}/{COMPLETE}/{name}/SUCCESS" for name in names])
    base = f"{PREFIX}/{COMPLETE}/"
    lite, boto = both_stores(s3.endpoint, bucket)

    s3.reset_log()
    assert lite.lister is not None
    pages = list(lite.lister.pages(bucket, prefix=base, delimiter="/", max_keys=100))
    assert len(pages) == s3.count() == 25
    ours = [p["Prefix"] for page in pages for p in page["CommonPrefixes"]]
    paginator = boto.client.get_paginator("list_objects_v2")
    theirs = [
        p["Prefix"]
        for page in paginator.paginate(
            Bucket=bucket, Prefix=base, Delimiter="/", PaginationConfig={"PageSize": 100}
        )
        for p in page.get("CommonPrefixes", ())
    ]
    assert ours == theirs == [f"{base}{name}/" for name in names]

    s3.reset_log()
    assert [run.name for run in lite.list_runs()] == names
    assert s3.count() == 3


# --- errors ---------------------------------------------------------------------------------------


def errors_of(*stores: S3Store) -> list[str]:
    messages = []
    for store in stores:
        with pytest.raises(StoreError) as caught:
            store.list_runs()
        assert caught.value.fatal or "failed" in caught.value.message
        messages.append(str(caught.value))
    return messages


def test_a_missing_bucket_reads_as_with_botocore(aws_env: None, s3: S3Server) -> None:
    """The same one-line fatal error, naming the bucket, on both paths."""
    lite, boto = both_stores(s3.endpoint, "no-such-bucket-here")
    ours, theirs = errors_of(lite, boto)
    assert ours == theirs
    assert "the bucket no-such-bucket-here does not exist" in ours and "\n" not in ours


def test_a_refused_connection_reads_as_with_botocore(aws_env: None) -> None:
    """Nobody listening: "cannot reach the S3 endpoint <url> (EndpointConnectionError)", after
    the same number of attempts, on both paths."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    lite, boto = both_stores(endpoint, "bench-results", max_attempts=2)
    ours, theirs = errors_of(lite, boto)
    assert ours == theirs
    assert f"cannot reach the S3 endpoint {endpoint} (EndpointConnectionError)" in ours


def test_server_errors_are_retried_then_reported_as_with_botocore(
    aws_env: None, s3: S3Server, bucket: str
) -> None:
    """One HTTP 500: retried, the answer is right. Always 503: as many requests as botocore
    makes (max_attempts retries), then the same one-line error as botocore's."""
    run = make_run_name(datetime(2026, 1, 1), "v1-0-g1")
    put_many(s3, bucket, [f"{PREFIX}/{COMPLETE}/{run.name}/SUCCESS"])
    lite, boto = both_stores(s3.endpoint, bucket, max_attempts=3)
    listing = Fault(lambda r: r.method == "GET" and "list-type" in r.query, status=500, times=1)
    s3.faults.append(listing)
    s3.reset_log()
    assert lite.list_dirs(COMPLETE) == [run.name]
    assert [r.status for r in s3.requests] == [500, 200]

    s3.faults[:] = [Fault(lambda r: "list-type" in r.query, status=503, times=10**6)]
    counts = []
    messages = []
    for store in (lite, boto):
        s3.reset_log()
        messages += errors_of(store)
        counts.append(s3.count())
    assert messages[0] == messages[1]
    assert "InternalError: injected fault" in messages[0]
    assert f"LIST s3://{bucket}/{PREFIX}/{COMPLETE}/ failed" in messages[0]  # the prefix once
    assert counts == [4, 4]


class Scripted:
    """A connection answering from a script: (status, x-amz-bucket-region, body) per request."""

    def __init__(self, *answers: tuple[int, str, bytes]) -> None:
        self.answers = list(answers)
        self.sent: list[tuple[str, dict[str, str]]] = []

    def get(self, url: str, headers: dict[str, str]) -> tuple[int, str, bytes]:
        self.sent.append((url, headers))
        return self.answers.pop(0)


EMPTY_PAGE = b"<ListBucketResult><IsTruncated>false</IsTruncated></ListBucketResult>"


def test_throttling_is_retried_and_a_wrong_region_followed_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A throttle (code SlowDown, any status) is retried after a pause; AWS's "wrong region"
    answer is followed once to the bucket's region, as botocore's redirector does, and
    the requests after it go there directly."""
    pauses: list[float] = []
    monkeypatch.setattr("bench.store.s3list.time.sleep", pauses.append)
    listing = S3Lister(credentials=Credentials("K", "S"), region="us-east-1", max_attempts=2)
    moved = b"<Error><Code>PermanentRedirect</Code><Message>elsewhere</Message></Error>"
    slow = (
        b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"
    )
    connection = Scripted((400, "", slow), (301, "eu-west-3", moved), (200, "", EMPTY_PAGE))
    url = listing.list_url("bench-results", prefix="p/", delimiter="/")
    assert url.startswith("https://bench-results.s3.amazonaws.com/?")

    assert listing._get(connection, "bench-results", url) == EMPTY_PAGE
    assert len(pauses) == 1 and 0 <= pauses[0] <= 1.0  # a throttle: base 1 s
    urls = [sent for sent, _ in connection.sent]
    assert urls[2].startswith("https://bench-results.s3.eu-west-3.amazonaws.com/?list-type=2")
    assert "/eu-west-3/s3/aws4_request" in connection.sent[2][1]["Authorization"]
    assert listing.endpoint == "https://s3.eu-west-3.amazonaws.com"

    again = Scripted((301, "us-west-2", moved), (301, "us-east-2", moved))
    with pytest.raises(ResponseError) as caught:  # followed once only
        listing._get(again, "bench-results", url)
    assert caught.value.code == "PermanentRedirect" and len(again.sent) == 2


def test_moto_checks_the_signature_a_wrong_one_is_refused(s3: S3Server, bucket: str) -> None:
    """With moto's IAM authentication on, our signed listing is accepted (an IAM user's key, and
    a role session's key with its token); a wrong secret is refused (SignatureDoesNotMatch), as
    is a session key without its token."""
    import boto3

    run = make_run_name(datetime(2026, 1, 1), "v1-0-g1")
    put_many(s3, bucket, [f"{PREFIX}/{COMPLETE}/{run.name}/SUCCESS"])
    admin = {
        "endpoint_url": s3.endpoint,
        "region_name": "us-east-1",
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
    }
    iam = boto3.client("iam", **admin)
    allow = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
    }
    trust = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}],
    }
    iam.create_user(UserName="watcher")
    iam.put_user_policy(UserName="watcher", PolicyName="s3", PolicyDocument=json.dumps(allow))
    key = iam.create_access_key(UserName="watcher")["AccessKey"]
    role = iam.create_role(RoleName="reader", AssumeRolePolicyDocument=json.dumps(trust))["Role"]
    iam.put_role_policy(RoleName="reader", PolicyName="s3", PolicyDocument=json.dumps(allow))
    session = boto3.client("sts", **admin).assume_role(
        RoleArn=role["Arn"], RoleSessionName="watcher-session"
    )["Credentials"]

    def store(credentials: Credentials) -> S3Store:
        listing = S3Lister(credentials=credentials, region="us-east-1", endpoint_url=s3.endpoint)
        return S3Store(None, bucket, PREFIX, connect=lambda: None, lister=listing)

    user = Credentials(key["AccessKeyId"], key["SecretAccessKey"])
    role_session = Credentials(
        session["AccessKeyId"], session["SecretAccessKey"], session["SessionToken"]
    )
    with moto_authentication(s3.endpoint):
        assert store(user).list_dirs(COMPLETE) == [run.name]
        assert store(role_session).list_dirs(COMPLETE) == [run.name]
        with pytest.raises(StoreError) as wrong:
            store(Credentials(key["AccessKeyId"], "not-the-secret")).list_dirs(COMPLETE)
        assert "(SignatureDoesNotMatch)" in str(wrong.value) and wrong.value.fatal
        with pytest.raises(StoreError) as tokenless:
            store(Credentials(session["AccessKeyId"], session["SecretAccessKey"])).list_dirs(
                COMPLETE
            )
        assert "(InvalidAccessKeyId)" in str(tokenless.value)


class moto_authentication:
    """moto's IAM authentication on (every request's signature checked), then off again."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = urlsplit(endpoint)

    def _set(self, value: str) -> None:
        connection = http.client.HTTPConnection(self.endpoint.hostname, self.endpoint.port)
        try:
            connection.request("POST", "/moto-api/reset-auth", body=value.encode())
            response = connection.getresponse()
            response.read()
            assert response.status == 200
        finally:
            connection.close()

    def __enter__(self) -> None:
        self._set("0")

    def __exit__(self, *exc: object) -> None:
        self._set("inf")


@pytest.fixture
def tls_endpoint(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """moto's S3 over HTTPS with a self-signed certificate: (endpoint, certificate file)."""
    from moto.server import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import WSGIRequestHandler, make_server, make_ssl_devcert

    class Quiet(WSGIRequestHandler):
        def log_request(self, *args: Any, **kwargs: Any) -> None:
            pass

    cert, key = make_ssl_devcert(str(tmp_path / "tls"), host="localhost")
    app = DomainDispatcherApplication(create_backend_app)
    server = make_server(
        "127.0.0.1", 0, app, threaded=True, ssl_context=(cert, key), request_handler=Quiet
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://localhost:{server.server_address[1]}", cert
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_https_verifies_against_aws_ca_bundle_as_botocore_does(
    aws_env: None, monkeypatch: pytest.MonkeyPatch, tls_endpoint: tuple[str, str]
) -> None:
    """Over HTTPS with AWS_CA_BUNDLE naming the server's certificate: the same listing as
    botocore's; without it the certificate is untrusted: the same one-line error (SSLError)."""
    endpoint, cert = tls_endpoint
    monkeypatch.setenv("AWS_CA_BUNDLE", cert)
    bucket = "bench-tls"
    make_client(endpoint_url=endpoint).create_bucket(Bucket=bucket)
    make_client(endpoint_url=endpoint).put_object(
        Bucket=bucket, Key=f"{PREFIX}/{COMPLETE}/run-a/SUCCESS", Body=b"1\n"
    )
    lite = open_s3(bucket, PREFIX, endpoint_url=endpoint, max_attempts=1)
    boto = S3Store(make_client(endpoint_url=endpoint, max_attempts=1), bucket, PREFIX)
    assert lite.lister is not None and lite.lister.ca_bundle == cert
    assert lite.list_dirs(COMPLETE) == boto.list_dirs(COMPLETE) == ["run-a"]

    monkeypatch.delenv("AWS_CA_BUNDLE")
    lite = open_s3(bucket, PREFIX, endpoint_url=endpoint, max_attempts=1)
    boto = S3Store(make_client(endpoint_url=endpoint, max_attempts=1), bucket, PREFIX)
    ours, theirs = errors_of(lite, boto)
    assert ours == theirs
    assert f"cannot reach the S3 endpoint {endpoint} (SSLError)" in ours


@pytest.fixture
def closing_endpoint() -> Iterator[str]:
    """An endpoint that reads each request and closes the connection without an answer."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = server.accept()
            except TimeoutError:
                continue
            with connection:
                connection.recv(65536)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join()
    server.close()


def test_a_connection_closed_mid_request_reads_as_with_botocore(
    aws_env: None, closing_endpoint: str
) -> None:
    """A connection the endpoint closes without answering is not "cannot reach" (the endpoint
    was reached): the same one-line error as botocore's, equally (not) fatal."""
    lite = open_s3("bench-results", PREFIX, endpoint_url=closing_endpoint, max_attempts=1)
    boto = S3Store(
        make_client(endpoint_url=closing_endpoint, max_attempts=1), "bench-results", PREFIX
    )
    assert lite.lister is not None
    caught = []
    for store in (lite, boto):
        with pytest.raises(StoreError) as error:
            store.list_runs()
        caught.append(error.value)
    assert str(caught[0]) == str(caught[1])
    assert caught[0].fatal == caught[1].fatal
    assert "Connection was closed before we received a valid response" in str(caught[0])


def test_an_unreadable_ca_bundle_is_an_ssl_error_as_with_botocore(
    aws_env: None, monkeypatch: pytest.MonkeyPatch, tls_endpoint: tuple[str, str], tmp_path: Path
) -> None:
    """AWS_CA_BUNDLE naming no file: the listing fails as botocore's does, "cannot reach the
    S3 endpoint ... (SSLError)", not with a bare file error."""
    endpoint, _cert = tls_endpoint
    monkeypatch.setenv("AWS_CA_BUNDLE", str(tmp_path / "no-such-bundle.pem"))
    lite = open_s3("bench-tls", PREFIX, endpoint_url=endpoint, max_attempts=1)
    boto = S3Store(make_client(endpoint_url=endpoint, max_attempts=1), "bench-tls", PREFIX)
    assert lite.lister is not None
    ours, theirs = errors_of(lite, boto)
    assert ours == theirs
    assert f"cannot reach the S3 endpoint {endpoint} (SSLError)" in ours


# --- when the stdlib path is taken ----------------------------------------------------------------


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_static_keys_of_the_environment_or_the_profile_are_used(
    aws_env: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Environment keys first (with a session token); else the profile's keys in the shared
    credentials file; the region from AWS_DEFAULT_REGION, else the profile, else us-east-1."""
    found, why = lister_from_environment(max_attempts=4)
    assert found is not None and "the environment" in why
    assert found.credentials == Credentials("testing", "testing")
    assert (found.region, found.endpoint, found.attempts) == (
        "us-east-1",
        "https://s3.amazonaws.com",
        5,  # as botocore counts: the first request and max_attempts retries
    )
    monkeypatch.setenv("AWS_SESSION_TOKEN", "tok")
    found, _ = lister_from_environment()
    assert found is not None and found.credentials.token == "tok"

    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_DEFAULT_REGION",
    ):
        monkeypatch.delenv(name)
    credentials = "[default]\naws_access_key_id = D\naws_secret_access_key = DS\n"
    credentials += (
        "[team]\naws_access_key_id = T\naws_secret_access_key = TS\naws_session_token = TT\n"
    )
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", write(tmp_path / "credentials", credentials))
    monkeypatch.setenv(
        "AWS_CONFIG_FILE", write(tmp_path / "config", "[profile team]\nregion = eu-west-3\n")
    )
    found, why = lister_from_environment(endpoint_url="http://127.0.0.1:9")
    assert found is not None and "shared credentials file" in why
    assert (found.credentials, found.region) == (Credentials("D", "DS"), "us-east-1")
    assert found.endpoint == "http://127.0.0.1:9"
    monkeypatch.setenv("AWS_PROFILE", "team")
    found, _ = lister_from_environment()
    assert found is not None
    assert (found.credentials, found.region) == (Credentials("T", "TS", "TT"), "eu-west-3")
    assert found.endpoint == "https://s3.eu-west-3.amazonaws.com"
    assert "TS" not in repr(found.credentials) and "TT" not in repr(found.credentials)


@pytest.mark.parametrize(
    ("config", "env", "why"),
    [
        ("[default]\nsso_session = corp\nsso_account_id = 1\n", {}, "sso_account_id"),
        ("[default]\nrole_arn = arn:aws:iam::1:role/r\nsource_profile = x\n", {}, "role_arn"),
        ("[default]\ncredential_process = /bin/creds\n", {}, "credential_process"),
        ("[default]\ns3 =\n  addressing_style = path\n", {}, "s3"),
        ("", {"AWS_PROFILE": "nowhere"}, "profile nowhere not found"),
        ("", {"HTTPS_PROXY": "http://proxy:3128"}, "HTTPS_PROXY"),
        ("", {"AWS_ENDPOINT_URL_S3": "http://elsewhere"}, "AWS_ENDPOINT_URL_S3"),
        ("", {"AWS_WEB_IDENTITY_TOKEN_FILE": "/token"}, "AWS_WEB_IDENTITY_TOKEN_FILE"),
        ("", {"AWS_DEFAULT_REGION": "cn-north-1"}, "outside the standard AWS partition"),
        ("[default\nbroken", {}, "could not be read"),
        ("", {"AWS_PROFILE": "default"}, "profile default not found"),
        ("", {"AWS_DEFAULT_REGION": ""}, "AWS_DEFAULT_REGION is set but empty"),
        ("", {"AWS_CA_BUNDLE": "/"}, "AWS_CA_BUNDLE / is a directory"),
    ],
    ids=[
        "sso",
        "assume-role",
        "credential-process",
        "s3-settings",
        "missing-profile",
        "proxy",
        "service-endpoint",
        "web-identity",
        "china",
        "unparsable",
        "missing-default-profile",
        "empty-region",
        "ca-directory",
    ],
)
def test_other_settings_leave_the_listings_to_botocore(
    aws_env: None,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    config: str,
    env: dict[str, str],
    why: str,
) -> None:
    """Anything but static keys and a plain endpoint: no lister, and the reason says why."""
    monkeypatch.setenv("AWS_CONFIG_FILE", write(tmp_path / "config", config))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    found, reason = lister_from_environment()
    assert found is None
    assert why in reason


def test_without_complete_static_keys_botocore_does_it_all(
    aws_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No static keys: open_s3 makes the botocore client at once, as before (its chain looks
    further: instance roles...); partial keys: botocore's own error, at once, as before."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    store = open_s3("bench-results", PREFIX, endpoint_url="http://127.0.0.1:9")
    assert store.lister is None and store._client is not None
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "only-the-key")
    with pytest.raises(PartialCredentialsError):
        open_s3("bench-results", PREFIX, endpoint_url="http://127.0.0.1:9")


def test_open_s3_with_static_keys_makes_botocore_lazily(aws_env: None) -> None:
    store = open_s3("bench-results", PREFIX, endpoint_url="http://127.0.0.1:9", max_attempts=5)
    assert store.lister is not None and store._client is None
    assert store.endpoint == "http://127.0.0.1:9"
    assert store.client.meta.endpoint_url == "http://127.0.0.1:9"


# --- downloads ------------------------------------------------------------------------------------


def test_a_download_is_one_get_also_for_a_multipart_object(
    aws_env: None, s3: S3Server, bucket: str, tmp_path: Path
) -> None:
    """get_file: one GET per object (no HEAD), the content exact for a 9 MB multipart upload;
    a missing key is "object not found" and leaves nothing behind."""
    lite, _ = both_stores(s3.endpoint, bucket)
    big = tmp_path / "big.csv"
    big.write_bytes(hashlib.sha256(b"seed").digest() * (9 * 1024 * 1024 // 32 + 5))
    lite.put_file("runs/big.csv", big)
    info = lite.stat("runs/big.csv")
    assert info is not None and info.checksum is not None and info.checksum.endswith("-2")

    s3.reset_log()
    dest = tmp_path / "out" / "big.csv"
    dest.parent.mkdir()
    lite.get_file("runs/big.csv", dest)
    assert [(r.method, r.status) for r in s3.requests] == [("GET", 200)]
    assert dest.read_bytes() == big.read_bytes()

    s3.reset_log()
    with pytest.raises(StoreError, match="object not found"):
        lite.get_file("runs/missing.csv", tmp_path / "out" / "missing.csv")
    assert s3.count() == 1
    assert sorted(p.name for p in dest.parent.iterdir()) == ["big.csv"]
