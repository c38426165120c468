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
from typing import Any, Protocol

from bench.errors import NotifyError

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
    def send(self, message: Message) -> None: ...


@functools.cache
def _environment() -> Any:
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader("bench.notify", "templates"),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
        autoescape=False,
    )


SEVERITY = {
    "run_started": "info",
    "run_succeeded": "success",
    "run_failed": "error",
    "run_refused": "warning",
}


def render(event: str, **context: Any) -> Message:
    """Render ``templates/<event>.txt.j2``: the first line is the title."""
    text = _environment().get_template(f"{event}.txt.j2").render(**context).strip()
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


def make_notifier(settings: Any) -> Notifier:
    """The outbox under the reference root. (Slack delivery arrives with the watcher.)"""
    if os.environ.get("SLACK_BOT_TOKEN") or settings.slack.token_file:
        log.warning(
            "a Slack token is configured but this version delivers reports to the outbox only: %s",
            settings.reference.root / "outbox",
        )
    return OutboxNotifier(settings.reference.root / "outbox")
