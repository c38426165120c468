"""Slack delivery through the real ``slack_sdk.WebClient`` against a local Web API server.

The server (``bench.testing.slackserver``) records what arrived and injects faults: rate
limits, 5xx answers, slow answers, dropped connections, and errors after the effect (the
message is posted but the client sees an error: the case that makes exactly-once hard).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import ServerErrorRetryHandler

from bench.errors import NotifyError
from bench.notify import Message
from bench.notify.slack import SlackNotifier, load_token, make_client
from bench.testing.slackserver import UPLOAD, Fault, SlackServer

TOKEN = "xoxb-SECRET-123"
CHANNEL = "C088AUBEB6Y"
PAYLOAD = {"delivery": "run-42/report"}
METADATA = {"event_type": "bench_report", "event_payload": PAYLOAD}


@pytest.fixture
def slack(monkeypatch: pytest.MonkeyPatch) -> Iterator[SlackServer]:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "SLACK_API_URL"):
        monkeypatch.delenv(name, raising=False)  # the client must talk to 127.0.0.1 directly
    with SlackServer(token=TOKEN) as server:
        yield server


@pytest.fixture
def client(slack: SlackServer) -> WebClient:
    return make_client(TOKEN, base_url=slack.base_url, max_retries=2, timeout=5)


@pytest.fixture
def notifier(client: WebClient) -> SlackNotifier:
    return SlackNotifier(client, CHANNEL, retries=2, backoff=0.05)


def methods(slack: SlackServer) -> list[str]:
    return [call.method for call in slack.calls]


# --- delivery ----------


def test_post_delivers_text_blocks_and_metadata(
    slack: SlackServer, notifier: SlackNotifier
) -> None:
    """post() puts the text, the blocks and the metadata in the channel and returns the ts."""
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*slower*"}}]
    ts = notifier.post("2 regressions", blocks=blocks, metadata=METADATA)
    [message] = slack.messages
    assert (message.channel, message.ts, message.text) == (CHANNEL, ts, "2 regressions")
    assert message.blocks == blocks
    assert message.metadata == METADATA
    assert methods(slack) == ["chat.postMessage"]
    assert "Authorization" not in slack.calls[0].headers


def test_post_without_metadata_adds_a_delivery_marker(
    slack: SlackServer, notifier: SlackNotifier
) -> None:
    """A post without metadata still carries a delivery marker (for the reconciliation)."""
    notifier.post("hello")
    [message] = slack.messages
    assert message.metadata is not None
    assert message.metadata["event_type"] == "bench_notification"
    assert len(message.metadata["event_payload"]["delivery"]) == 32


def test_send_posts_the_message_text_and_its_blocks(
    slack: SlackServer, notifier: SlackNotifier
) -> None:
    """send(Message) posts message.text with context["blocks"] and its context["delivery"]."""
    blocks = [{"type": "divider"}]
    message = Message(
        "run_failed",
        "error",
        "Run failed",
        "Run failed\nstep 2",
        {"blocks": blocks, "delivery": "d1"},
    )
    ts = notifier.send(message)
    [posted] = slack.messages
    assert (posted.ts, posted.text, posted.blocks) == (ts, "Run failed\nstep 2", blocks)
    assert posted.metadata == {
        "event_type": "bench_notification",
        "event_payload": {"event": "run_failed", "severity": "error", "delivery": "d1"},
    }


def test_upload_shares_the_file_with_title_comment_and_bytes(
    slack: SlackServer, notifier: SlackNotifier, tmp_path: Path
) -> None:
    """upload() runs files_upload_v2's three steps; the bytes, title and comment arrive."""
    report = tmp_path / "report.html"
    report.write_bytes(b"<html>\x00\xff regressions</html>")
    file_id = notifier.upload(report, title="Report run 42", comment="see attached")
    [shared] = slack.messages
    assert shared.file_id == file_id
    assert (shared.channel, shared.filename, shared.title) == (
        CHANNEL,
        "report.html",
        "Report run 42",
    )
    assert shared.bytes == report.read_bytes()
    assert shared.initial_comment == "see attached"
    assert methods(slack) == ["files.getUploadURLExternal", UPLOAD, "files.completeUploadExternal"]
    assert notifier.find_uploaded("Report run 42", oldest=notifier.mark()) == file_id


def test_find_posted_pages_through_the_history(slack: SlackServer, notifier: SlackNotifier) -> None:
    """find_posted() follows the history's cursor pages and respects ``oldest``."""
    start = notifier.mark()
    wanted = notifier.post(
        "old one", metadata={"event_type": "x", "event_payload": {"delivery": "m"}}
    )
    for i in range(450):  # more than two pages of 200 after it
        notifier.post(f"filler {i}")
    assert notifier.find_posted("m", oldest=start) == wanted
    assert notifier.find_posted("m", oldest=wanted) is None  # oldest is exclusive
    assert methods(slack).count("conversations.history") == 3 + 3  # pages of 200, 200, 51


# --- retries ----------


def test_rate_limit_is_retried_after_retry_after_and_posts_once(
    slack: SlackServer, notifier: SlackNotifier
) -> None:
    """HTTP 429 with Retry-After: 1 is retried after at least 1 s; the message arrives once."""
    fault = slack.inject(Fault.rate_limited("chat.postMessage", retry_after=1))
    started = time.monotonic()
    notifier.post("once", metadata=METADATA)
    assert time.monotonic() - started >= 1.0
    assert fault.fired == 1
    assert [m.text for m in slack.messages] == ["once"]
    assert [c.status for c in slack.calls_to("chat.postMessage")] == [429, 200]


def test_server_error_on_post_is_checked_then_retried(
    slack: SlackServer, notifier: SlackNotifier
) -> None:
    """A 500 on chat.postMessage: the history shows it absent, so it is posted again, once."""
    slack.inject(Fault.server_error("chat.postMessage"))
    ts = notifier.post("once", metadata=METADATA)
    assert [m.ts for m in slack.messages] == [ts]
    assert methods(slack) == ["chat.postMessage", "conversations.history", "chat.postMessage"]


def test_server_error_on_idempotent_calls_is_retried_by_the_client(
    slack: SlackServer, notifier: SlackNotifier, tmp_path: Path
) -> None:
    """A 500 on the upload's URL request is retried by slack-sdk's ServerErrorRetryHandler."""
    slack.inject(Fault.server_error("files.getUploadURLExternal"))
    (tmp_path / "a.txt").write_text("a")
    notifier.upload(tmp_path / "a.txt", title="a")
    assert [c.status for c in slack.calls_to("files.getUploadURLExternal")] == [500, 200]
    assert len(slack.messages) == 1


@pytest.mark.parametrize("method", ["chat.postMessage", "files.completeUploadExternal"])
def test_dropped_connection_is_retried(
    slack: SlackServer, notifier: SlackNotifier, tmp_path: Path, method: str
) -> None:
    """A connection closed without an answer (before the effect) is retried; one delivery."""
    slack.inject(Fault.dropped(method))
    if method == "chat.postMessage":
        notifier.post("once", metadata=METADATA)
    else:
        (tmp_path / "a.txt").write_text("a")
        notifier.upload(tmp_path / "a.txt", title="a")
    assert [c.status for c in slack.calls_to(method)] == [0, 200]
    assert len(slack.messages) == 1


def test_slow_answer_is_waited_for(slack: SlackServer, notifier: SlackNotifier) -> None:
    """An answer 1 s late (within the client's timeout) is a success, posted once."""
    slack.inject(Fault.slow("chat.postMessage", 1.0))
    started = time.monotonic()
    ts = notifier.post("slow", metadata=METADATA)
    assert time.monotonic() - started >= 1.0
    assert [m.ts for m in slack.messages] == [ts]
    assert methods(slack) == ["chat.postMessage"]


def test_permanent_server_error_raises_notify_error(
    slack: SlackServer, notifier: SlackNotifier
) -> None:
    """A 500 that never ends: NotifyError naming the method and the error, after the retries."""
    slack.inject(Fault.server_error("chat.postMessage", times=None))
    with pytest.raises(NotifyError) as caught:
        notifier.post("never", metadata=METADATA)
    message = str(caught.value)
    assert "chat.postMessage" in message and "internal_error" in message and "HTTP 500" in message
    assert "\n" not in message and TOKEN not in message
    assert len(slack.calls_to("chat.postMessage")) == 3  # 1 + retries
    assert slack.messages == []


def test_definitive_error_is_not_retried(slack: SlackServer, client: WebClient) -> None:
    """channel_not_found is Slack's final answer: one call, a NotifyError with a hint."""
    slack.channels = {CHANNEL}
    with pytest.raises(NotifyError, match=r"chat.postMessage failed: channel_not_found") as caught:
        SlackNotifier(client, "C_NOWHERE", backoff=0.05).post("x")
    assert caught.value.hint and "invite the bot" in caught.value.hint
    assert methods(slack) == ["chat.postMessage"]


# --- exactly once ----------


def test_error_after_effect_is_not_retried_by_the_client(
    slack: SlackServer, client: WebClient, notifier: SlackNotifier
) -> None:
    """A 500 after posting: the client gets an error, the message exists, find_posted finds it."""
    slack.inject(Fault.server_error("chat.postMessage", after_effect=True))
    oldest = notifier.mark()
    with pytest.raises(SlackApiError) as caught:
        client.chat_postMessage(channel=CHANNEL, text="posted?", metadata=METADATA)
    assert caught.value.response.status_code == 500
    [message] = slack.messages
    assert len(slack.calls_to("chat.postMessage")) == 1  # make_client does not re-send it
    assert notifier.find_posted(PAYLOAD["delivery"], oldest=oldest) == message.ts


@pytest.mark.parametrize(
    "fault",
    [
        Fault.server_error("chat.postMessage", after_effect=True),
        Fault.dropped("chat.postMessage", after_effect=True),
    ],
    ids=["500", "dropped"],
)
def test_post_after_an_ambiguous_failure_delivers_exactly_once(
    slack: SlackServer, notifier: SlackNotifier, fault: Fault
) -> None:
    """Posted but answered with an error: post() finds it in the history and does not repost."""
    slack.inject(fault)
    ts = notifier.post("exactly once", metadata=METADATA)
    assert [m.ts for m in slack.messages] == [ts]
    assert methods(slack) == ["chat.postMessage", "conversations.history"]


def test_unverifiable_failure_is_reported_not_reposted(
    slack: SlackServer, notifier: SlackNotifier
) -> None:
    """When the history cannot be read after an ambiguous failure, no second post is made."""
    slack.inject(Fault.server_error("chat.postMessage", after_effect=True))
    slack.inject(Fault.server_error("conversations.history", times=None))
    with pytest.raises(NotifyError, match="may or may not"):
        notifier.post("?", metadata=METADATA)
    assert len(slack.messages) == 1
    assert len(slack.calls_to("chat.postMessage")) == 1


def test_plain_sdk_server_retry_duplicates_posts(slack: SlackServer) -> None:
    """Why make_client restricts retries: slack-sdk's own 5xx retry re-sends a posted message."""
    plain = WebClient(
        token=TOKEN, base_url=slack.base_url, retry_handlers=[ServerErrorRetryHandler()]
    )
    slack.inject(Fault.server_error("chat.postMessage", after_effect=True))
    plain.chat_postMessage(channel=CHANNEL, text="twice")
    assert [m.text for m in slack.messages] == ["twice", "twice"]


# --- the token ----------


def test_token_from_environment_wins_over_file(tmp_path: Path) -> None:
    """SLACK_BOT_TOKEN is used before the token file."""
    path = tmp_path / "slack_token"
    path.write_text("xoxb-from-file\n")
    path.chmod(0o600)
    assert load_token(environ={"SLACK_BOT_TOKEN": " xoxb-env "}, token_file=str(path)) == "xoxb-env"
    assert load_token(environ={}, token_file=str(path)) == "xoxb-from-file"
    assert load_token(environ={}, token_file="") is None


def test_token_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    """A 0644 token file is refused with the file's name and the chmod fix."""
    path = tmp_path / "slack_token"
    path.write_text(TOKEN)
    path.chmod(0o644)
    with pytest.raises(NotifyError) as caught:
        load_token(environ={}, token_file=str(path))
    assert str(path) in str(caught.value)
    assert f"chmod 600 {path}" in str(caught.value)
    assert TOKEN not in str(caught.value)


def test_token_file_0600_is_accepted_with_tilde(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 0600 file named with ~ is read and stripped."""
    monkeypatch.setenv("HOME", str(tmp_path))
    path = tmp_path / "slack_token"
    path.write_text(f"  {TOKEN}\n")
    path.chmod(0o600)
    assert load_token(environ={}, token_file="~/slack_token") == TOKEN


def test_missing_token_file_is_an_error(tmp_path: Path) -> None:
    """A configured but missing token file is a NotifyError naming it."""
    path = tmp_path / "nope"
    with pytest.raises(NotifyError, match="does not exist") as caught:
        load_token(environ={}, token_file=str(path))
    assert str(path) in str(caught.value)


def test_api_url_from_environment(slack: SlackServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """make_client() takes the base URL from SLACK_API_URL when not given."""
    monkeypatch.setenv("SLACK_API_URL", slack.base_url)
    assert make_client(TOKEN).auth_test()["bot_id"]
    assert methods(slack) == ["auth.test"]


def test_token_never_logged_nor_in_errors(
    slack: SlackServer, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    """Through failures of every kind, at DEBUG level, the token appears in no log or error."""
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="slack_sdk")  # the CLI's setup quiets it otherwise
    client = make_client(TOKEN, base_url=slack.base_url, max_retries=1, timeout=5)
    notifier = SlackNotifier(client, CHANNEL, retries=1, backoff=0.01)
    errors: list[str] = []
    notifier.post("ok")
    slack.inject(Fault.server_error("chat.postMessage", times=None))
    slack.inject(Fault.dropped("conversations.history", times=None))
    slack.inject(Fault.dropped(UPLOAD))
    (tmp_path / "a.txt").write_text("a")
    for attempt in (
        lambda: notifier.post("x"),
        lambda: notifier.upload(tmp_path / "a.txt", title="a"),
    ):
        with pytest.raises(NotifyError) as caught:
            attempt()
        errors.append(str(caught.value))
    slack.token = "xoxb-another"  # the server no longer accepts ours: invalid_auth
    slack.faults.clear()
    with pytest.raises(NotifyError, match="invalid_auth") as caught:
        notifier.post("x")
    errors.append(str(caught.value))
    assert len(errors) == 3
    assert "Sending a request" in caplog.text  # slack-sdk's debug lines were captured
    assert "SECRET" not in caplog.text
    assert not [e for e in errors if "SECRET" in e]


# --- the server itself ----------


def test_server_checks_the_token(slack: SlackServer) -> None:
    """A wrong token gets invalid_auth, no token not_authed, and nothing is posted."""
    for token, code in (("xoxb-wrong", "invalid_auth"), (None, "not_authed")):
        with pytest.raises(SlackApiError) as caught:
            WebClient(token=token, base_url=slack.base_url).chat_postMessage(
                channel=CHANNEL, text="x"
            )
        assert caught.value.response["error"] == code
    assert slack.messages == []


def test_fault_before_effect_posts_nothing(slack: SlackServer) -> None:
    """An injected 500 (not after_effect) replaces the call: nothing is posted."""
    fault = slack.inject(Fault.server_error("chat.postMessage", after=1))
    bare = WebClient(token=TOKEN, base_url=slack.base_url, retry_handlers=[])
    bare.chat_postMessage(channel=CHANNEL, text="let through")
    with pytest.raises(SlackApiError):
        bare.chat_postMessage(channel=CHANNEL, text="faulted")
    bare.chat_postMessage(channel=CHANNEL, text="after")
    assert [m.text for m in slack.messages] == ["let through", "after"]
    assert (fault.seen, fault.fired) == (3, 1)
    assert [c.status for c in slack.calls] == [200, 500, 200]


def test_upload_completion_errors(slack: SlackServer) -> None:
    """Completing a file twice, or one whose bytes never came, is refused."""
    bare = WebClient(token=TOKEN, base_url=slack.base_url, retry_handlers=[])
    pending = bare.files_getUploadURLExternal(filename="a.txt", length=3)["file_id"]
    with pytest.raises(SlackApiError, match="file_not_uploaded"):
        bare.files_completeUploadExternal(files=[{"id": pending}], channel_id=CHANNEL)
    done = bare.files_upload_v2(channel=CHANNEL, content=b"abc", filename="b.txt")["file"]["id"]
    with pytest.raises(SlackApiError, match="file_already_completed"):
        bare.files_completeUploadExternal(files=[{"id": done}], channel_id=CHANNEL)
    assert [m.file_id for m in slack.messages] == [done]


def test_make_channel_checks_the_token_at_once_and_makes_the_client_on_first_use(
    slack: SlackServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """make_channel reads the token and checks the channel when called (the same errors as
    before); slack-sdk's client is made on the first delivery (an idle tick never pays for
    it), then reused."""
    from types import SimpleNamespace

    from bench.errors import ConfigError
    from bench.notify import LazySlackChannel, make_channel

    def settings(token_file: str = "", channel: str = CHANNEL) -> SimpleNamespace:
        return SimpleNamespace(
            slack=SimpleNamespace(token_file=token_file, channel=channel),
            watch=SimpleNamespace(root=tmp_path),
        )

    monkeypatch.setenv("SLACK_BOT_TOKEN", TOKEN)
    monkeypatch.setenv("SLACK_API_URL", slack.base_url)
    channel = make_channel(settings())
    assert isinstance(channel, LazySlackChannel) and channel._notifier is None
    assert TOKEN not in repr(channel)
    assert slack.calls == []
    ts = channel.post("hello", metadata=METADATA)
    notifier = channel._notifier
    assert channel.find_posted(PAYLOAD["delivery"]) == ts
    assert channel._notifier is notifier
    assert [m.text for m in slack.messages] == ["hello"]

    with pytest.raises(ConfigError, match=r"slack\.channel is empty"):
        make_channel(settings(channel=""))
    monkeypatch.delenv("SLACK_BOT_TOKEN")
    with pytest.raises(NotifyError, match="does not exist"):
        make_channel(settings(token_file=str(tmp_path / "no-token-file")))


def test_an_empty_token_file_means_no_token_yet_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The installer's empty placeholder: no token (the outbox is used), with a warning."""
    from bench.notify.slack import load_token

    placeholder = tmp_path / "slack_token"
    placeholder.write_text("\n")
    placeholder.chmod(0o600)
    assert load_token(environ={}, token_file=str(placeholder)) is None
    assert str(placeholder) in caplog.text and "empty" in caplog.text
