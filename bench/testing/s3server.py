"""An S3 server on 127.0.0.1 (moto's), recording every request and injecting faults.

moto's WSGI application runs behind a small middleware that records each request (method,
path, bytes received, status) and can answer some requests with an error or after a delay,
so that tests and benchmarks can count requests, measure bytes and exercise retries.

A server in another process (``python -m bench.testing.s3server``) tells what it recorded at
``GET /_requests?since=N``: ``{"count": <requests so far>, "requests": [[method, path, query,
status], ...]}`` for the requests from the N-th on (0-based). That path is outside the S3
namespace (a bucket name cannot start with ``_``) and is not itself recorded.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

Environ = dict[str, Any]


@dataclass
class Request:
    method: str
    path: str
    query: str
    bytes_in: int
    status: int = 0


@dataclass
class Fault:
    """Answer matching requests with ``status`` (after ``delay`` seconds), ``times`` times.

    ``status=0`` only delays. ``after`` lets that many matching requests through first.
    """

    match: Callable[[Request], bool]
    status: int = 500
    delay: float = 0.0
    times: int = 1
    after: int = 0
    seen: int = field(default=0, init=False)

    def applies(self, request: Request) -> bool:
        if not self.match(request):
            return False
        self.seen += 1
        return self.after < self.seen <= self.after + self.times


class S3Server:
    """``with S3Server() as s3:`` -> ``s3.endpoint``, ``s3.requests``, ``s3.faults``."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.faults: list[Fault] = []
        self.on_request: Callable[[Request], None] | None = None
        self._lock = threading.Lock()
        self._server: Any = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ----------

    def start(self) -> S3Server:
        from moto.server import DomainDispatcherApplication, create_backend_app
        from werkzeug.serving import WSGIRequestHandler, make_server

        class Quiet(WSGIRequestHandler):
            def log_request(self, *args: Any, **kwargs: Any) -> None:
                pass

        app = DomainDispatcherApplication(create_backend_app)
        self._server = make_server(
            "127.0.0.1", 0, self._middleware(app), threaded=True, request_handler=Quiet
        )
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def client(self) -> Any:
        """A separate boto3 client on this server (for set-up and checks)."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=Config(retries={"mode": "standard", "max_attempts": 3}),
        )

    @staticmethod
    def credentials_env() -> dict[str, str]:
        """Environment for a child process talking to this server."""
        return {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    # --- what happened ----------

    def reset_log(self) -> None:
        with self._lock:
            self.requests.clear()

    def bytes_received(self, method: str = "PUT") -> int:
        with self._lock:
            return sum(r.bytes_in for r in self.requests if r.method == method)

    def count(self, method: str | None = None) -> int:
        with self._lock:
            return sum(1 for r in self.requests if method is None or r.method == method)

    # --- the middleware ----------

    def _middleware(self, app: Any) -> Callable[[Environ, Any], Iterable[bytes]]:
        def handle(environ: Environ, start_response: Any) -> Iterable[bytes]:
            if environ.get("PATH_INFO") == REQUESTS_PATH:
                return self._report(environ, start_response)
            request = Request(
                method=environ["REQUEST_METHOD"],
                path=environ.get("PATH_INFO", ""),
                query=environ.get("QUERY_STRING", ""),
                bytes_in=int(environ.get("CONTENT_LENGTH") or 0),
            )
            with self._lock:
                self.requests.append(request)
                fault = next((f for f in self.faults if f.applies(request)), None)
            if self.on_request is not None:
                self.on_request(request)
            if fault is not None:
                if fault.delay:
                    time.sleep(fault.delay)
                if fault.status:
                    request.status = fault.status
                    body = (
                        b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>InternalError"
                        b"</Code><Message>injected fault</Message></Error>"
                    )
                    _drain(environ)
                    start_response(
                        f"{fault.status} Injected",
                        [("Content-Type", "application/xml"), ("Content-Length", str(len(body)))],
                    )
                    return [body]

            def recording_start(status: str, headers: Any, *args: Any) -> Any:
                request.status = int(status.split()[0])
                return start_response(status, headers, *args)

            return app(environ, recording_start)

        return handle

    def _report(self, environ: Environ, start_response: Any) -> Iterable[bytes]:
        """``GET /_requests?since=N``: the request count, and the requests from the N-th on."""
        from urllib.parse import parse_qs

        query = parse_qs(environ.get("QUERY_STRING", ""))
        try:
            since = max(0, int(query.get("since", ["0"])[0]))
        except ValueError:
            since = 0
        with self._lock:
            count = len(self.requests)
            rows = [[r.method, r.path, r.query, r.status] for r in self.requests[since:]]
        body = json.dumps({"count": count, "requests": rows}).encode()
        start_response(
            "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        )
        return [body]


#: Where a server in another process reports its requests (see the module docstring).
REQUESTS_PATH = "/_requests"


def _drain(environ: Environ) -> None:
    """Read the request body so the client does not see a reset connection."""
    stream = environ.get("wsgi.input")
    remaining = int(environ.get("CONTENT_LENGTH") or 0)
    while stream is not None and remaining > 0:
        chunk = stream.read(min(remaining, 1 << 16))
        if not chunk:
            break
        remaining -= len(chunk)


@dataclass
class Window:
    """Requests recorded between two points."""

    server: S3Server
    start: int = 0

    def __iter__(self) -> Iterator[Request]:
        return iter(self.server.requests[self.start :])


def remote_requests(endpoint: str, *, since: int = 0) -> tuple[int, list[Request]]:
    """What the server at ``endpoint`` (another process) recorded: the count of requests so
    far, and the requests from the ``since``-th on (bytes received are not reported: 0)."""
    import http.client
    from urllib.parse import urlsplit

    url = urlsplit(endpoint)
    connection = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=30)
    try:
        connection.request("GET", f"{REQUESTS_PATH}?since={since}")
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    if response.status != 200:
        raise RuntimeError(f"{endpoint}{REQUESTS_PATH}: HTTP {response.status}")
    data = json.loads(body)
    rows = [
        Request(method, path, query, 0, status) for method, path, query, status in data["requests"]
    ]
    return int(data["count"]), rows


def main() -> None:
    """``python -m bench.testing.s3server``: serve until killed; print the endpoint first."""
    import signal
    import sys

    server = S3Server().start()
    print(server.endpoint, flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    server.stop()
    sys.exit(0)


if __name__ == "__main__":
    main()
