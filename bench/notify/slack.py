"""Slack delivery through slack-sdk's ``WebClient``: the token, the client, the notifier.

Errors of slack-sdk (``SlackApiError``, ``SlackClientError``) and of the connection are turned
into :class:`bench.errors.NotifyError` here, in one line that names the Web API method and
Slack's error code. The token never appears in a message or a log line.

Exactly once. slack-sdk's retry handlers would re-send a ``chat.postMessage`` after an HTTP 5xx
or a connection lost while waiting for the answer, although Slack may have posted the message:
a duplicate. :func:`make_client` therefore installs them so that they do not retry those
ambiguous failures of ``chat.postMessage`` (rate limits, and connections that could not be made,
are retried: nothing was posted). :meth:`SlackNotifier.post` handles them itself: every message
carries a delivery marker in its metadata (``event_payload.delivery``), and after an ambiguous
failure the notifier looks for the marker in the channel's history before posting again.

This module imports slack-sdk (a few tenths of a second): import it only when Slack is used
(:func:`bench.notify.make_channel` does so on the first delivery; the token is read by
:mod:`bench.notify.slack_token`, without slack-sdk).
"""

from __future__ import annotations

import http.client
import logging
import os
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.error import URLError
from urllib.parse import urlsplit

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState

from bench.errors import NotifyError
from bench.notify.slack_token import load_token as load_token  # where it used to be

if TYPE_CHECKING:
    from bench.notify import Message

log = logging.getLogger(__name__)

#: The metadata ``event_type`` of the messages this project posts.
EVENT_TYPE = "bench_notification"
#: Seconds of client timeout per HTTP request.
TIMEOUT = 30
#: How far back (seconds) to look for a message whose post failed ambiguously.
RECONCILE_WINDOW = 600.0
#: Web API methods that must not be re-sent blindly after an ambiguous failure.
NOT_IDEMPOTENT = frozenset({"chat.postMessage"})


# --- the client ----------


def make_client(
    token: str,
    *,
    base_url: str | None = None,
    max_retries: int = 2,
    timeout: int = TIMEOUT,
    environ: Mapping[str, str] | None = None,
) -> WebClient:
    """A ``WebClient`` with slack-sdk's retry handlers (rate limits, connections, 5xx).

    ``base_url``: the argument, else ``$SLACK_API_URL``, else Slack's. Each handler retries at
    most ``max_retries`` times (they share one attempt counter: ``max_retries`` retries in
    all). 5xx answers and lost connections of ``chat.postMessage`` are left to
    :meth:`SlackNotifier.post` (see the module's docstring).
    """
    environ = os.environ if environ is None else environ
    url = base_url or environ.get("SLACK_API_URL") or WebClient.BASE_URL
    return WebClient(
        token=token,
        base_url=url,
        timeout=timeout,
        retry_handlers=[
            RateLimitErrorRetryHandler(max_retry_count=max_retries),
            SafeConnectionErrorRetryHandler(max_retry_count=max_retries),
            SafeServerErrorRetryHandler(max_retry_count=max_retries),
        ],
    )


class SafeConnectionErrorRetryHandler(ConnectionErrorRetryHandler):
    """slack-sdk's handler, except for lost connections of non-idempotent methods."""

    def _can_retry(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        if _method_of(request.url) in NOT_IDEMPOTENT and not _never_sent(error):
            return False
        return super()._can_retry(state=state, request=request, response=response, error=error)


class SafeServerErrorRetryHandler(ServerErrorRetryHandler):
    """slack-sdk's handler, except for non-idempotent methods (the request may have worked)."""

    def _can_retry(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        if _method_of(request.url) in NOT_IDEMPOTENT:
            return False
        return super()._can_retry(state=state, request=request, response=response, error=error)


def _method_of(url: str) -> str:
    return urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1]


def _never_sent(error: BaseException | None) -> bool:
    """A connection error raised before the request went out (urllib wraps those in URLError)."""
    return isinstance(error, URLError) and not hasattr(error, "code")


# --- the notifier ----------


class SlackNotifier:
    """Posts messages and uploads files to one channel through a ``WebClient`` handed in.

    ``retries``: further attempts of a ``chat.postMessage`` that failed ambiguously (HTTP 5xx,
    connection lost), each made only after the history showed the message is not there.
    """

    def __init__(
        self, client: WebClient, channel: str, *, retries: int = 2, backoff: float = 1.0
    ) -> None:
        self.client = client
        self.channel = channel
        self.retries = retries
        self.backoff = backoff

    def send(self, message: Message) -> str:
        """Post ``message.text`` (and ``context["blocks"]``); return the message's ``ts``.

        ``context["delivery"]``, when present, is the delivery marker (see :meth:`post`).
        """
        payload = {"event": message.event, "severity": message.severity}
        delivery = message.context.get("delivery")
        if delivery:
            payload["delivery"] = str(delivery)
        metadata = {"event_type": EVENT_TYPE, "event_payload": payload}
        blocks = message.context.get("blocks")
        if blocks is not None and not isinstance(blocks, list):
            raise NotifyError(f"message {message.event!r}: context['blocks'] is not a list")
        ts = self.post(message.text, blocks=blocks, metadata=metadata)
        log.info("slack: posted %r to %s (ts %s)", message.title, self.channel, ts)
        return ts

    def post(
        self, text: str, *, blocks: list[Any] | None = None, metadata: dict[str, Any] | None = None
    ) -> str:
        """Post once; return the message's ``ts``.

        ``metadata`` is ``{"event_type": ..., "event_payload": {...}}``; its
        ``event_payload["delivery"]`` is the delivery marker that :meth:`find_posted` looks for.
        Without one (or without metadata), a random marker is added. After an HTTP 5xx or a
        lost connection the history is searched for the marker: found, its ``ts`` is returned;
        not found, the post is retried (``retries`` times). If the history cannot be read, a
        :class:`NotifyError` says the message may or may not have been posted.
        """
        metadata, marker = _with_marker(metadata)
        oldest = self.mark()
        failure: BaseException | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                pause = self.backoff * 2 ** (attempt - 1)
                log.warning(
                    "slack: chat.postMessage failed (%s); not posted; retrying in %.1fs",
                    self._describe(failure),
                    pause,
                )
                time.sleep(pause)
            try:
                response = self.client.chat_postMessage(
                    channel=self.channel, text=text, blocks=blocks, metadata=metadata
                )
                return str(response["ts"])
            except _ERRORS as err:
                if not _ambiguous(err):
                    raise self._error("chat.postMessage", err) from err
                failure = err
            try:
                ts = self.find_posted(marker, oldest=oldest)
            except NotifyError as check:
                raise NotifyError(
                    f"Slack chat.postMessage failed ({self._describe(failure)}) and checking "
                    f"whether it was posted failed too ({check.message})",
                    hint=f"the message (delivery {marker}) may or may not be in {self.channel}",
                ) from failure
            if ts is not None:
                log.info(
                    "slack: chat.postMessage failed (%s) but the message was posted (ts %s)",
                    self._describe(failure),
                    ts,
                )
                return ts
        assert failure is not None
        raise self._error("chat.postMessage", failure) from failure

    def upload(self, path: Path, *, title: str, comment: str | None = None) -> str:
        """Upload ``path`` to the channel (``files_upload_v2``); return the file id."""
        try:
            data = path.read_bytes()
        except OSError as err:
            raise NotifyError(f"cannot read {path} for the Slack upload: {err.strerror}") from err
        try:
            response = self.client.files_upload_v2(
                channel=self.channel,
                file=data,
                filename=path.name,
                title=title,
                initial_comment=comment,
            )
        except _ERRORS as err:
            raise self._error("files_upload_v2", err) from err
        file = response.get("file") or (response.get("files") or [{}])[0]
        file_id = str(file.get("id") or "")
        if not file_id:
            raise NotifyError("Slack files_upload_v2 answered without a file id")
        log.info("slack: uploaded %s to %s (file %s)", path.name, self.channel, file_id)
        return file_id

    def find_posted(self, marker: str, *, oldest: str = "") -> str | None:
        """The ``ts`` of the newest message after ``oldest`` carrying delivery ``marker``.

        (``metadata.event_payload.delivery``; read with ``include_all_metadata``.)
        """
        for message in self._history(oldest):
            payload = (message.get("metadata") or {}).get("event_payload") or {}
            if payload.get("delivery") == marker:
                return str(message["ts"])
        return None

    def find_uploaded(self, title: str, *, oldest: str = "") -> str | None:
        """The id of the newest file shared after ``oldest`` with ``title``."""
        for message in self._history(oldest):
            for file in message.get("files") or []:
                if file.get("title") == title and file.get("id"):
                    return str(file["id"])
        return None

    def mark(self) -> str:
        """A bound for ``oldest``: what is posted from now on comes after it.

        ``RECONCILE_WINDOW`` seconds early, for the skew between this host's clock and Slack's.
        """
        return f"{time.time() - RECONCILE_WINDOW:.6f}"

    def _history(self, oldest: str) -> Iterator[dict[str, Any]]:
        """The channel's messages after ``oldest``, newest first, page by page."""
        cursor: str | None = None
        while True:
            try:
                response = self.client.conversations_history(
                    channel=self.channel,
                    oldest=oldest or None,
                    limit=200,
                    include_all_metadata=True,
                    cursor=cursor,
                )
            except _ERRORS as err:
                raise self._error("conversations.history", err) from err
            yield from response.get("messages") or []
            cursor = (response.get("response_metadata") or {}).get("next_cursor") or None
            if not response.get("has_more") or not cursor:
                return

    # --- errors ----------

    def _describe(self, err: BaseException | None) -> str:
        """One line: Slack's error code (and HTTP status), or the connection error."""
        if isinstance(err, SlackApiError):
            data = err.response.data if isinstance(err.response.data, dict) else {}
            text = str(data.get("error") or "unexpected answer")
            if data.get("needed"):
                text += f", needs scope {data['needed']}"
            status = err.response.status_code
            if status != 200:
                text += f", HTTP {status}"
            detail = text
        elif err is None:
            detail = "unknown error"
        else:
            detail = f"{type(err).__name__}: {err}"
        return self._scrub(" ".join(detail.split()))

    def _error(self, method: str, err: BaseException) -> NotifyError:
        describe = self._describe(err)
        if isinstance(err, SlackApiError):
            called = _method_of(err.response.api_url)
            data = err.response.data if isinstance(err.response.data, dict) else {}
            where = method if called == method else f"{method} ({called})"
            hint = _HINTS.get(str(data.get("error")))
        elif isinstance(err, SlackClientError):
            where, hint = method, None
        else:
            where, hint = method, "check the network and the Slack API URL"
        return NotifyError(f"Slack {where} failed: {describe}", hint=hint)

    def _scrub(self, text: str) -> str:
        token = getattr(self.client, "token", None)
        return text.replace(token, "<token>") if token else text


#: The name the watcher's wiring uses.
SlackChannel = SlackNotifier

_HINTS = {
    "invalid_auth": "check the bot token (SLACK_BOT_TOKEN or [slack] token_file)",
    "not_authed": "check the bot token (SLACK_BOT_TOKEN or [slack] token_file)",
    "token_revoked": "the bot token was revoked: install the app again",
    "account_inactive": "the bot token was revoked: install the app again",
    "channel_not_found": "check [slack] channel, and invite the bot to that channel",
    "not_in_channel": "invite the bot to the channel",
    "is_archived": "the channel is archived: configure another [slack] channel",
    "ratelimited": "Slack rate-limited the bot: try again later",
    "missing_scope": "add the scope to the Slack app and reinstall it",
}


def _with_marker(metadata: dict[str, Any] | None) -> tuple[dict[str, Any], str]:
    """``metadata`` with a delivery marker (a random one unless given), and the marker."""
    metadata = dict(metadata or {"event_type": EVENT_TYPE})
    payload = dict(metadata.get("event_payload") or {})
    marker = str(payload.get("delivery") or uuid.uuid4().hex)
    payload["delivery"] = marker
    metadata["event_payload"] = payload
    metadata.setdefault("event_type", EVENT_TYPE)
    return metadata, marker


def _ambiguous(err: BaseException) -> bool:
    """True when the request may have taken effect although it failed: 5xx, connection lost."""
    if isinstance(err, SlackApiError):
        return int(err.response.status_code) >= 500
    return not _never_sent(err)


#: What a ``WebClient`` call raises: Slack's answers, and the connection's errors.
_ERRORS = (SlackClientError, OSError, http.client.HTTPException)
