"""A Slack Web API server on 127.0.0.1, recording every call and injecting faults.

Point the real client at it: ``slack_sdk.WebClient(token=..., base_url=server.base_url)``.
It speaks the methods the notifier uses, with Slack's request and response shapes (JSON or
form-encoded bodies, ``Authorization: Bearer`` tokens, ``{"ok": false, "error": ...}``):

- ``auth.test``;
- ``chat.postMessage`` (``channel``, ``text``, ``blocks``, ``metadata``; ``ts`` unique and
  increasing, from the wall clock, like ``"1700000000.000100"``);
- ``conversations.history`` (``channel``, ``oldest`` and ``latest`` exclusive unless
  ``inclusive``, ``limit``, ``cursor``, ``include_all_metadata``: newest first; a message carries
  its ``metadata`` only when ``include_all_metadata`` is set);
- the upload flow of ``WebClient.files_upload_v2``: ``files.getUploadURLExternal`` (``filename``,
  ``length``) returns an ``upload_url`` on this server, the bytes are POSTed there (no token: the
  URL is the credential, as on Slack), then ``files.completeUploadExternal`` (``files`` =
  ``[{"id", "title"}]``, ``channel_id``, ``initial_comment``) shares them; ``files.info`` too.

Errors of the upload flow that this server chose (Slack does not document them all):
``file_not_found`` (unknown id), ``file_not_uploaded`` (no bytes arrived at the upload URL),
``file_size_mismatch`` (not the announced ``length``), ``file_already_completed`` (the id was
completed before: a retried completion). A completion is checked as a whole before any effect.

Faults (:class:`Fault`) are matched by API method name (``UPLOAD`` for the byte POSTs to upload
URLs, ``"*"`` for any) and decided when the request arrives, before it takes effect: an injected
500 means nothing was posted. ``after_effect=True`` applies the fault after the effect instead:
the message is posted, but the client sees the error (the case that makes exactly-once hard).
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import socket
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

#: The pseudo method name of the byte POSTs to the URLs from ``files.getUploadURLExternal``.
UPLOAD = "upload"

#: Slack's limits that this server enforces like Slack does.
MAX_TEXT = 40_000
MAX_BLOCKS = 50

_TEAM = {"team": "bench-test", "team_id": "T0000000001", "url": "https://bench-test.slack.com/"}
_BOT = {"user": "bench", "user_id": "U0000000001", "bot_id": "B0000000001"}


@dataclass
class Fault:
    """Misbehave on calls of ``method``: the next ``times`` matching calls after ``after``.

    - ``status``: answer with this HTTP status (429 gets ``Retry-After: retry_after``, default
      1); ``0`` answers normally.
    - ``delay``: sleep this many seconds before answering (alone: a slow but correct answer).
    - ``drop``: close the socket without answering (the client sees the connection reset).
    - ``after_effect``: let the call take effect first (message posted, file shared), then
      misbehave; by default the fault replaces the call, which has no effect at all.
    - ``times=None``: every matching call from ``after`` on (a permanent fault).

    Every fault whose ``method`` matches counts the call in ``seen``; the first fault in the
    list whose window contains it fires (``fired`` counts those).
    """

    method: str
    status: int = 0
    retry_after: int | None = None
    delay: float = 0.0
    drop: bool = False
    times: int | None = 1
    after: int = 0
    after_effect: bool = False
    error: str | None = None  # Slack's error code in the body (default from the status)
    seen: int = field(default=0, init=False)
    fired: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if not (self.status or self.delay or self.drop):
            raise ValueError("a Fault needs a status, a delay or drop=True")
        if self.status == 429 and self.retry_after is None:
            self.retry_after = 1

    @classmethod
    def rate_limited(cls, method: str, *, retry_after: int = 1, **kwargs: Any) -> Fault:
        """HTTP 429 ``ratelimited`` with ``Retry-After: retry_after``."""
        return cls(method, status=429, retry_after=retry_after, **kwargs)

    @classmethod
    def server_error(cls, method: str, *, status: int = 500, **kwargs: Any) -> Fault:
        """HTTP 500 (or ``status``) ``internal_error``."""
        return cls(method, status=status, **kwargs)

    @classmethod
    def slow(cls, method: str, delay: float, **kwargs: Any) -> Fault:
        """A correct answer, ``delay`` seconds late."""
        return cls(method, delay=delay, **kwargs)

    @classmethod
    def dropped(cls, method: str, **kwargs: Any) -> Fault:
        """The connection closed without an answer."""
        return cls(method, drop=True, **kwargs)

    def _matches(self, method: str) -> bool:
        return self.method in ("*", method)

    def _count(self) -> bool:
        self.seen += 1
        return self.after < self.seen and (
            self.times is None or self.seen <= self.after + self.times
        )


@dataclass
class Call:
    """One request as received: ``params`` merges the query, form and JSON bodies."""

    method: str
    params: dict[str, Any]
    headers: dict[str, str]  # without Authorization
    time: float
    status: int = 0  # the HTTP status answered; 0 when the connection was dropped
    error: str | None = None  # Slack's error code when ``ok`` was false
    fault: Fault | None = None


@dataclass
class Posted:
    """A message in a channel: posted text, or a shared file (``file_id`` set)."""

    channel: str
    ts: str
    text: str
    blocks: list[dict[str, Any]] | None = None
    metadata: dict[str, Any] | None = None
    file_id: str | None = None
    filename: str | None = None
    title: str | None = None
    bytes: bytes | None = None
    initial_comment: str | None = None


@dataclass
class UploadedFile:
    """A file announced by ``files.getUploadURLExternal``."""

    id: str
    filename: str
    length: int
    secret: str
    data: bytes | None = None
    title: str | None = None
    completed: bool = False
    channels: list[str] = field(default_factory=list)


class SlackApiFailure(Exception):
    """Internal: answer ``{"ok": false, "error": code}``."""

    def __init__(self, code: str, **extra: Any) -> None:
        super().__init__(code)
        self.code = code
        self.extra = extra


class SlackServer:
    """``with SlackServer(token="xoxb-test") as slack:`` -> ``slack.base_url``, ``.calls``, ...

    ``channels`` restricts the known channels (others get ``channel_not_found``); by default
    every channel exists.
    """

    def __init__(self, *, token: str = "xoxb-test", channels: Iterable[str] | None = None) -> None:
        self.token = token
        self.channels = set(channels) if channels is not None else None
        self.calls: list[Call] = []
        self.messages: list[Posted] = []
        self.files: dict[str, UploadedFile] = {}
        self.faults: list[Fault] = []
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._last_ts = 0
        self._ids = itertools.count(1)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ----------

    def start(self) -> SlackServer:
        self._stopping.clear()
        self._server = _QuietServer(("127.0.0.1", 0), _handler_class(self))
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="slackserver", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes up the slow answers
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> SlackServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the Slack server is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def base_url(self) -> str:
        """The Web API base URL for ``WebClient(base_url=...)`` (ends with ``/api/``)."""
        return f"{self.url}/api/"

    def reset(self) -> None:
        """Forget calls, messages, files and faults (``ts`` keeps increasing)."""
        with self._lock:
            self.calls.clear()
            self.messages.clear()
            self.files.clear()
            self.faults.clear()

    # --- set-up and checks ----------

    def inject(self, fault: Fault) -> Fault:
        with self._lock:
            self.faults.append(fault)
        return fault

    def calls_to(self, method: str) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.method == method]

    def messages_in(self, channel: str) -> list[Posted]:
        with self._lock:
            return [m for m in self.messages if m.channel == channel]

    # --- the API ----------

    def _dispatch(self, method: str, params: dict[str, Any], token: str | None) -> dict[str, Any]:
        """Answer one API call (the payload of a 200); raises :class:`SlackApiFailure`."""
        handler = _METHODS.get(method)
        if handler is None:
            raise SlackApiFailure("unknown_method")
        if not token:
            raise SlackApiFailure("not_authed")
        if token != self.token:
            raise SlackApiFailure("invalid_auth")
        with self._lock:
            return {"ok": True, **handler(self, params)}

    def _next_ts(self) -> str:
        micros = max(int(time.time() * 1_000_000), self._last_ts + 1)
        self._last_ts = micros
        return f"{micros // 1_000_000}.{micros % 1_000_000:06d}"

    def _channel(self, params: Mapping[str, Any], key: str = "channel") -> str:
        channel = params.get(key)
        if not channel or not isinstance(channel, str):
            raise SlackApiFailure("channel_not_found")
        if self.channels is not None and channel not in self.channels:
            raise SlackApiFailure("channel_not_found")
        return channel

    def _auth_test(self, params: dict[str, Any]) -> dict[str, Any]:
        return {**_TEAM, **_BOT, "is_enterprise_install": False}

    def _post_message(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(params)
        text = params.get("text")
        if text is not None and not isinstance(text, str):
            text = str(text)
        blocks = _json_param(params.get("blocks"), "invalid_blocks_format")
        if blocks is not None and (
            not isinstance(blocks, list)
            or len(blocks) > MAX_BLOCKS
            or not all(isinstance(b, dict) and isinstance(b.get("type"), str) for b in blocks)
        ):
            raise SlackApiFailure("invalid_blocks")
        metadata = _json_param(params.get("metadata"), "invalid_metadata_format")
        if metadata is not None and not (
            isinstance(metadata, dict)
            and isinstance(metadata.get("event_type"), str)
            and isinstance(metadata.get("event_payload"), dict)
        ):
            raise SlackApiFailure("invalid_metadata_format")
        if not text and not blocks and not params.get("attachments"):
            raise SlackApiFailure("no_text")
        if text and len(text) > MAX_TEXT:
            raise SlackApiFailure("msg_too_long")
        posted = Posted(channel, self._next_ts(), text or "", blocks, metadata)
        self.messages.append(posted)
        return {"channel": channel, "ts": posted.ts, "message": _as_history(posted, True)}

    def _history(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(params)
        try:
            limit = min(max(int(params.get("limit") or 100), 1), 999)
        except (TypeError, ValueError):
            raise SlackApiFailure("invalid_limit") from None
        inclusive = _truthy(params.get("inclusive"))
        oldest = _ts_value(params.get("oldest")) or Decimal(0)
        latest = _ts_value(params.get("latest")) or Decimal("Infinity")
        cursor = params.get("cursor")
        if cursor:
            try:
                decoded = base64.b64decode(str(cursor), validate=True).decode("ascii")
                start_at = _ts_value(decoded.removeprefix("next_ts:"))
            except (ValueError, UnicodeDecodeError):
                raise SlackApiFailure("invalid_cursor") from None
        else:
            start_at = None

        def wanted(m: Posted) -> bool:
            ts = Decimal(m.ts)
            after_oldest = ts >= oldest if inclusive else ts > oldest
            before_latest = ts <= latest if inclusive else ts < latest
            in_page = start_at is None or ts <= start_at
            return m.channel == channel and after_oldest and before_latest and in_page

        found = sorted(
            (m for m in self.messages if wanted(m)), key=lambda m: Decimal(m.ts), reverse=True
        )
        page, rest = found[:limit], found[limit:]
        with_metadata = _truthy(params.get("include_all_metadata"))
        answer: dict[str, Any] = {
            "messages": [_as_history(m, with_metadata) for m in page],
            "has_more": bool(rest),
            "pin_count": 0,
        }
        if rest:
            next_cursor = base64.b64encode(f"next_ts:{rest[0].ts}".encode()).decode("ascii")
            answer["response_metadata"] = {"next_cursor": next_cursor}
        return answer

    def _get_upload_url(self, params: dict[str, Any]) -> dict[str, Any]:
        filename = params.get("filename")
        try:
            length = int(params.get("length"))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise SlackApiFailure("invalid_arguments") from None
        if not filename or length < 0:
            raise SlackApiFailure("invalid_arguments")
        file_id = f"F{next(self._ids):010d}"
        secret = base64.b32encode(f"{file_id}:{time.monotonic_ns()}".encode()).decode().strip("=")
        self.files[file_id] = UploadedFile(file_id, str(filename), length, secret)
        return {"upload_url": f"{self.url}/upload/v1/{secret}", "file_id": file_id}

    def _complete_upload(self, params: dict[str, Any]) -> dict[str, Any]:
        items = _json_param(params.get("files"), "invalid_arguments")
        if not isinstance(items, list) or not items:
            raise SlackApiFailure("invalid_arguments")
        channels: list[str] = []
        if params.get("channel_id"):
            channels.append(self._channel(params, "channel_id"))
        for extra in str(params.get("channels") or "").split(","):
            if extra.strip():
                channels.append(self._channel({"channel": extra.strip()}))
        files: list[tuple[UploadedFile, str | None]] = []
        for item in items:  # check everything first: a completion succeeds or fails as a whole
            if not isinstance(item, dict) or not item.get("id"):
                raise SlackApiFailure("invalid_arguments")
            uploaded = self.files.get(str(item["id"]))
            if uploaded is None:
                raise SlackApiFailure("file_not_found")
            if uploaded.completed:
                raise SlackApiFailure("file_already_completed")
            if uploaded.data is None:
                raise SlackApiFailure("file_not_uploaded")
            if len(uploaded.data) != uploaded.length:
                raise SlackApiFailure("file_size_mismatch")
            title = item.get("title")
            files.append((uploaded, None if title is None else str(title)))
        comment = params.get("initial_comment")
        for uploaded, title in files:
            uploaded.completed = True
            uploaded.title = title or uploaded.filename
            uploaded.channels = list(channels)
            for channel in channels:
                self.messages.append(
                    Posted(
                        channel,
                        self._next_ts(),
                        str(comment or ""),
                        file_id=uploaded.id,
                        filename=uploaded.filename,
                        title=uploaded.title,
                        bytes=uploaded.data,
                        initial_comment=None if comment is None else str(comment),
                    )
                )
        return {"files": [_file_info(f) for f, _ in files]}

    def _files_info(self, params: dict[str, Any]) -> dict[str, Any]:
        uploaded = self.files.get(str(params.get("file") or ""))
        if uploaded is None or not uploaded.completed:
            raise SlackApiFailure("file_not_found")
        return {"file": _file_info(uploaded)}

    def _receive_upload(self, secret: str, data: bytes) -> tuple[int, str]:
        with self._lock:
            uploaded = next((f for f in self.files.values() if f.secret == secret), None)
            if uploaded is None:
                return 404, "Not Found"
            if uploaded.completed:
                return 400, "upload already completed"
            uploaded.data = data
            return 200, f"OK - {len(data)}"

    # --- faults ----------

    def _decide(self, method: str) -> Fault | None:
        with self._lock:
            firing = None
            for fault in self.faults:
                if fault._matches(method) and fault._count() and firing is None:
                    firing = fault
            if firing is not None:
                firing.fired += 1
            return firing


_METHODS = {
    "auth.test": SlackServer._auth_test,
    "chat.postMessage": SlackServer._post_message,
    "conversations.history": SlackServer._history,
    "files.getUploadURLExternal": SlackServer._get_upload_url,
    "files.completeUploadExternal": SlackServer._complete_upload,
    "files.info": SlackServer._files_info,
}


def _json_param(value: Any, error: str) -> Any:
    """A structured parameter: already decoded (JSON body) or a JSON string (form body)."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            raise SlackApiFailure(error) from None
    return value


def _truthy(value: Any) -> bool:
    return value is True or str(value).lower() in ("1", "true")


def _ts_value(value: Any) -> Decimal | None:
    if value in (None, ""):
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        raise SlackApiFailure("invalid_ts_oldest") from None


def _as_history(posted: Posted, with_metadata: bool) -> dict[str, Any]:
    message: dict[str, Any] = {
        "type": "message",
        "ts": posted.ts,
        "text": posted.text,
        **_BOT,
        "team": _TEAM["team_id"],
    }
    if posted.blocks is not None:
        message["blocks"] = posted.blocks
    if posted.metadata is not None and with_metadata:
        message["metadata"] = posted.metadata
    if posted.file_id is not None:
        message["upload"] = True
        message["files"] = [{"id": posted.file_id, "name": posted.filename, "title": posted.title}]
    return message


def _file_info(uploaded: UploadedFile) -> dict[str, Any]:
    return {
        "id": uploaded.id,
        "name": uploaded.filename,
        "title": uploaded.title,
        "size": len(uploaded.data or b""),
        "channels": uploaded.channels,
    }


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that gave up (timeouts, dropped connections) are part of the tests


def _handler_class(server: SlackServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            self._handle()

        def do_POST(self) -> None:
            self._handle()

        def _handle(self) -> None:
            parts = urlsplit(self.path)
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = {k: v for k, v in self.headers.items() if k.lower() != "authorization"}
            if parts.path.startswith("/upload/v1/"):
                method = UPLOAD
                params: dict[str, Any] = {"length": len(body)}
            elif parts.path.startswith("/api/"):
                method = parts.path.removeprefix("/api/")
                try:
                    params = _params(parts.query, body, self.headers.get("Content-Type", ""))
                except ValueError:
                    params = {}
            else:
                self._answer(404, b"Not Found", "text/plain")
                return
            body_token = params.pop("token", None)  # a token in the body is not recorded either
            call = Call(method, params, headers, time.time())
            with server._lock:
                server.calls.append(call)
            fault = server._decide(method)
            call.fault = fault
            if fault is not None and not fault.after_effect and self._misbehave(call, fault):
                return
            if method == UPLOAD:
                status, text = server._receive_upload(parts.path.rsplit("/", 1)[-1], body)
                call.status = status
                answer = (status, text.encode(), "text/plain; charset=utf-8")
            else:
                try:
                    payload = server._dispatch(method, dict(params), self._token(body_token))
                except SlackApiFailure as failure:
                    call.error = failure.code
                    payload = {"ok": False, "error": failure.code, **failure.extra}
                call.status = 200
                answer = (200, json.dumps(payload).encode(), "application/json; charset=utf-8")
            if fault is not None and fault.after_effect and self._misbehave(call, fault):
                return
            self._answer(*answer)

        def _token(self, body_token: Any) -> str | None:
            auth = self.headers.get("Authorization", "")
            if auth.startswith("Bearer "):
                return auth.removeprefix("Bearer ").strip()
            return None if body_token is None else str(body_token)

        def _misbehave(self, call: Call, fault: Fault) -> bool:
            """Sleep, then drop or answer the error: True when the call was answered so."""
            if fault.delay and server._stopping.wait(fault.delay):
                self._drop()  # the server is stopping
                return True
            if fault.drop:
                call.status = 0
                self._drop()
                return True
            if fault.status:
                call.status = fault.status
                code = fault.error or ("ratelimited" if fault.status == 429 else "internal_error")
                call.error = code
                extra = {}
                if fault.retry_after is not None:
                    extra["Retry-After"] = str(fault.retry_after)
                payload = json.dumps({"ok": False, "error": code}).encode()
                self._answer(fault.status, payload, "application/json; charset=utf-8", extra)
                return True
            return False  # only slow: answer normally

        def _drop(self) -> None:
            self.close_connection = True
            with contextlib.suppress(OSError):  # the client may have gone already
                self.connection.shutdown(socket.SHUT_RDWR)

        def _answer(
            self,
            status: int,
            body: bytes,
            content_type: str,
            extra: Mapping[str, str] | None = None,
        ) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in (extra or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

    return Handler


def _params(query: str, body: bytes, content_type: str) -> dict[str, Any]:
    params: dict[str, Any] = dict(parse_qsl(query, keep_blank_values=True))
    kind = content_type.split(";")[0].strip().lower()
    if kind == "application/json" and body:
        decoded = json.loads(body)
        if isinstance(decoded, dict):
            params.update(decoded)
    elif kind == "application/x-www-form-urlencoded" and body:
        params.update(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
    return params


def main() -> None:
    """``python -m bench.testing.slackserver``: serve until killed; print the base URL first.

    The token is ``$SLACK_BOT_TOKEN`` (default ``xoxb-test``).
    """
    import os
    import signal
    import sys

    server = SlackServer(token=os.environ.get("SLACK_BOT_TOKEN", "xoxb-test")).start()
    print(server.base_url, flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    server.stop()
    sys.exit(0)


if __name__ == "__main__":
    main()
