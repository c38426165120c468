"""Notifications: a message is built as pure data from a Jinja2 template, then delivered.

Two notifiers share the :class:`Notifier` interface: the local outbox (the default: files under
``<root>/outbox/`` plus a log line) and Slack (when a token is configured).
"""

from __future__ import annotations

import functools
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from bench.errors import NotifyError

if TYPE_CHECKING:
    from bench.notify.slack import SlackNotifier

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Message:
    """One report: ``event`` names the template, ``text`` is what people read."""

    event: str
    severity: str  # info, success, warning, error
    title: str
    text: str
    context: dict[str, Any] = field(default_factory=dict)


class Notifier(Protocol):
    """Delivers one report; what it returns (an id) is for logs only."""

    def send(self, message: Message) -> object: ...


@functools.cache
def template_environment() -> Any:
    """The Jinja2 environment of the message templates (``templates/*.j2``)."""
    import jinja2

    from bench.analysis.report import fmt_number, fmt_pct

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("bench.notify", "templates"),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
        autoescape=False,
    )
    env.filters["pct"] = fmt_pct
    env.filters["num"] = fmt_number
    env.filters["join_changes"] = _join_changes
    env.filters["join_problems"] = _join_problems
    return env


def _join_changes(changes: list[dict[str, Any]], word: str) -> str:
    from bench.analysis.report import fmt_number, fmt_pct

    return "\n".join(
        f"• `{c['parameter']}` ({c['file']}): {c['reason']}"
        if c.get("reason")
        else f"• `{c['parameter']}` ({c['file']}) {word} {fmt_pct(c['relative_pct'])} vs "
        f"{c['against']}: {fmt_number(c['baseline'])} → {fmt_number(c['value'])}"
        for c in changes
    )


def _join_problems(problems: list[dict[str, Any]]) -> str:
    return "\n".join(
        f"• {p['run']} `{p['file']}`"
        + (f":{p['line']}" if p.get("line") else "")
        + f": {p['reason']}"
        for p in problems
    )


SEVERITY = {
    "run_started": "info",
    "run_succeeded": "success",
    "run_failed": "error",
    "run_refused": "warning",
    "run_recovered": "success",
    "run_archived": "warning",
}


def render(event: str, **context: Any) -> Message:
    """Render ``templates/<event>.txt.j2``: the first line is the title."""
    text = template_environment().get_template(f"{event}.txt.j2").render(**context).strip()
    title = text.splitlines()[0] if text else event
    return Message(event, SEVERITY.get(event, "info"), title, text, _jsonable(context))


def _jsonable(context: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(context, default=str))


class NullNotifier:
    """``--no-notify``: log what would have been sent."""

    def send(self, message: Message) -> None:
        log.info("notification not sent (--no-notify): %s", message.title)


class OutboxNotifier:
    """Writes each message to ``<outbox>/<time>-<seq>-<event>.txt`` (and ``.json``)."""

    def __init__(self, outbox: Path) -> None:
        self.outbox = outbox

    def send(self, message: Message) -> None:
        try:
            self.outbox.mkdir(parents=True, exist_ok=True)
            stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
            seq = len(list(self.outbox.glob(f"{stamp}-*.txt")))
            while True:
                base = self.outbox / f"{stamp}-{seq:03d}-{message.event}"
                try:
                    fd = os.open(f"{base}.txt", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                    break
                except FileExistsError:
                    seq += 1
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(message.text + "\n")
            Path(f"{base}.json").write_text(
                json.dumps({"format": 1, **asdict(message)}, indent=2) + "\n", encoding="utf-8"
            )
        except OSError as err:
            raise NotifyError(f"cannot write to the outbox {self.outbox}: {err}") from err
        log.info("outbox: %s -> %s.txt", message.title, base)

    # --- the delivery interface the watcher uses (the same as SlackNotifier's) ----------

    def post(
        self, text: str, *, blocks: list[Any] | None = None, metadata: dict[str, Any] | None = None
    ) -> str:
        """Write a message; returns its id (the file's stem)."""
        return self._write("message", text, {"blocks": blocks, "metadata": metadata})

    def upload(self, path: Path, *, title: str, comment: str | None = None) -> str:
        """Copy a file into the outbox with its title; returns its id."""
        return self._write(
            "file", comment or "", {"title": title, "filename": path.name}, attachment=path
        )

    def find_posted(self, marker: str, *, oldest: str = "") -> str | None:
        """The id of a message delivered with ``metadata.event_payload.delivery == marker``."""
        for path in sorted(self.outbox.glob("*.json")):
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            meta = data.get("metadata") or {}
            if (meta.get("event_payload") or {}).get("delivery") == marker:
                return path.stem
        return None

    def find_uploaded(self, title: str, *, oldest: str = "") -> str | None:
        """The id of a file delivered with ``title`` at or after ``oldest`` (an id)."""
        for path in sorted(self.outbox.glob("*.json")):
            if path.stem < oldest:
                continue
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if data.get("kind") == "file" and data.get("title") == title:
                return path.stem
        return None

    def mark(self) -> str:
        """A bound for ``oldest``: ids sort after it from now on."""
        return datetime.now().strftime("%Y%m%d-%H%M%S")

    def _write(
        self, kind: str, text: str, extra: dict[str, Any], *, attachment: Path | None = None
    ) -> str:
        """The ``.json`` (renamed into place last) is the commit point of a delivery."""
        try:
            self.outbox.mkdir(parents=True, exist_ok=True)
            stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
            seq = 0
            while True:
                slot = f"{stamp}-{seq:03d}"  # one sequence for all kinds: names sort in order
                stem = f"{slot}-{kind}"
                seq += 1
                if any(self.outbox.glob(f"{slot}-*.json")):
                    continue
                try:  # reserve the slot
                    os.close(os.open(self.outbox / f".{slot}.lock", os.O_CREAT | os.O_EXCL))
                    break
                except FileExistsError:
                    continue
            text_tmp = self.outbox / f".{stem}.txt.tmp"
            json_tmp = self.outbox / f".{stem}.json.tmp"
            text_tmp.write_text(text + "\n", encoding="utf-8")
            if attachment is not None:
                import shutil

                shutil.copyfile(attachment, self.outbox / f"{stem}--{attachment.name}")
            payload = {"format": 1, "kind": kind, "text": text, **extra}
            json_tmp.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
            os.replace(json_tmp, self.outbox / f"{stem}.json")
            os.replace(text_tmp, self.outbox / f"{stem}.txt")
            (self.outbox / f".{slot}.lock").unlink()
        except OSError as err:
            raise NotifyError(f"cannot write to the outbox {self.outbox}: {err}") from err
        first = text.splitlines()[0] if text else extra.get("title", "")
        log.info("outbox: %s %s: %s", kind, stem, first)
        return stem


def make_notifier(settings: Any) -> Notifier:
    """The reference host's reports: Slack when a token is configured, else the outbox."""
    notifier: Notifier = make_channel(settings, outbox=settings.reference.root / "outbox")
    return notifier


def make_channel(settings: Any, *, outbox: Path | None = None) -> Any:
    """Slack when a token is configured (``SLACK_BOT_TOKEN`` or ``slack.token_file``), else
    the outbox (by default the watcher's, ``<watch.root>/outbox``).

    The token and the channel are checked here; slack-sdk is imported, and its client made,
    only when something is delivered (:class:`LazySlackChannel`)."""
    from bench.notify.slack_token import load_token

    token = load_token(environ=os.environ, token_file=settings.slack.token_file)
    if token:
        if not settings.slack.channel:
            from bench.errors import ConfigError

            raise ConfigError(
                "a Slack token is configured but slack.channel is empty",
                hint="set slack.channel (or BENCH_SLACK_CHANNEL) to the channel id",
            )
        return LazySlackChannel(token, settings.slack.channel)
    outbox = outbox or settings.watch.root / "outbox"
    log.info("no Slack token: reports go to the outbox %s", outbox)
    return OutboxNotifier(outbox)


class LazySlackChannel:
    """A :class:`~bench.notify.slack.SlackNotifier` made on first use.

    slack-sdk's import is about 50 ms of the watcher's idle tick (measured), which delivers
    nothing: it is paid only by a tick or a run that posts.
    """

    def __init__(self, token: str, channel: str) -> None:
        self._token = token
        self.channel = channel
        self._notifier: SlackNotifier | None = None

    def __repr__(self) -> str:  # never the token
        return f"LazySlackChannel({self.channel!r})"

    @property
    def notifier(self) -> SlackNotifier:
        """The notifier (slack-sdk imported and its ``WebClient`` made now, once)."""
        if self._notifier is None:
            from bench.notify.slack import SlackChannel, make_client

            self._notifier = SlackChannel(make_client(self._token), self.channel)
        return self._notifier

    def send(self, message: Message) -> str:
        return self.notifier.send(message)

    def post(
        self, text: str, *, blocks: list[Any] | None = None, metadata: dict[str, Any] | None = None
    ) -> str:
        return self.notifier.post(text, blocks=blocks, metadata=metadata)

    def upload(self, path: Path, *, title: str, comment: str | None = None) -> str:
        return self.notifier.upload(path, title=title, comment=comment)

    def find_posted(self, marker: str, *, oldest: str = "") -> str | None:
        return self.notifier.find_posted(marker, oldest=oldest)

    def find_uploaded(self, title: str, *, oldest: str = "") -> str | None:
        return self.notifier.find_uploaded(title, oldest=oldest)

    def mark(self) -> str:
        return self.notifier.mark()
