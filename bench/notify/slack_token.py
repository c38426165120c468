"""The Slack bot token, read without importing slack-sdk.

:func:`bench.notify.make_channel` reads the token (and refuses a token file others can read)
when a tick starts, as it always did, but a tick with nothing new delivers nothing and must not
pay for slack-sdk's import (about 50 ms of the watcher's idle tick): the client is made on the
first delivery. Log lines keep the name of :mod:`bench.notify.slack`, where this lived.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Mapping
from pathlib import Path

from bench.errors import NotifyError

log = logging.getLogger("bench.notify.slack")


def load_token(*, environ: Mapping[str, str], token_file: str) -> str | None:
    """The bot token: ``SLACK_BOT_TOKEN``, else the content of ``token_file`` (if configured).

    The file must not be readable by group or others, and must exist when configured.
    ``None``: no token configured (deliver to the outbox).
    """
    token = environ.get("SLACK_BOT_TOKEN", "").strip()
    if token:
        return token
    if not token_file:
        return None
    path = Path(token_file).expanduser()
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise NotifyError(
            f"the Slack token file {path} does not exist",
            hint="write the bot token to it with mode 0600, or unset [slack] token_file",
        ) from None
    except OSError as err:
        raise NotifyError(f"cannot read the Slack token file {path}: {err.strerror}") from None
    with os.fdopen(fd, "rb") as fh:
        mode = os.fstat(fh.fileno()).st_mode
        if not stat.S_ISREG(mode):
            raise NotifyError(f"the Slack token file {path} is not a regular file")
        if mode & 0o077:
            raise NotifyError(
                f"the Slack token file {path} is readable by group or others "
                f"(mode {stat.S_IMODE(mode):04o}); refusing to use it",
                hint=f"chmod 600 {path}",
            )
        content = fh.read()
    try:
        token = content.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise NotifyError(f"the Slack token file {path} is not UTF-8 text") from None
    if not token:
        # The installer's placeholder: no token yet. Runs must not stop for it; say so loudly.
        log.warning(
            "the Slack token file %s is empty: reports go to the outbox until the bot token "
            "is written into it",
            path,
        )
        return None
    return token
