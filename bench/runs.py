"""Run ids: ``_snoop_<YYYYMMDD>_<HHMM>_<git describe --always --dirty --long>``.

Names sort chronologically as plain strings (the timestamp comes first), which is the order
the store lists them in. A name read from anywhere outside this process (a marker file, a store
listing) is validated with :func:`parse_run_name` before it touches a local path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

PREFIX = "_snoop_"

#: What ``git describe`` may contribute once made path-safe (see :func:`sanitize_describe`).
_DESCRIBE = r"[A-Za-z0-9][A-Za-z0-9._+-]{0,199}"
#: ``re.ASCII``: a bare ``\d`` also matches non-ASCII digits (``２０２３``), which neither sort
#: chronologically nor belong in a path.
RUN_NAME_RE = re.compile(
    rf"^{PREFIX}(?P<date>\d{{8}})_(?P<time>\d{{4}})_(?P<describe>{_DESCRIBE})$", re.ASCII
)


class InvalidRunName(ValueError):
    """A string that is not a run name (possibly hostile: ``../../x``)."""


@dataclass(frozen=True, order=True)
class RunId:
    """A parsed run name; orders like the name itself."""

    name: str

    @property
    def timestamp(self) -> datetime:
        m = RUN_NAME_RE.match(self.name)
        assert m is not None
        return datetime.strptime(m["date"] + m["time"], "%Y%m%d%H%M")

    @property
    def describe(self) -> str:
        m = RUN_NAME_RE.match(self.name)
        assert m is not None
        return m["describe"]

    def __str__(self) -> str:
        return self.name


def sanitize_describe(describe: str) -> str:
    """Make ``git describe`` output safe as one path component (tags may contain ``/``)."""
    cleaned = re.sub(r"[^A-Za-z0-9._+-]", "_", describe.strip())
    cleaned = re.sub(r"\.{2,}", ".", cleaned)  # ``..`` is refused by parse_run_name
    cleaned = cleaned.lstrip("._-+") or "unknown"
    return cleaned[:200]


def make_run_name(when: datetime, describe: str) -> RunId:
    """The run name for a run started at ``when`` on a checkout described by ``describe``."""
    name = f"{PREFIX}{when:%Y%m%d}_{when:%H%M}_{sanitize_describe(describe)}"
    return parse_run_name(name)


def parse_run_name(text: str) -> RunId:
    """Validate ``text`` as a run name (a bare name, no path) or raise :class:`InvalidRunName`."""
    name = text.strip()
    if name.startswith("snoop_results/"):
        # The old scripts wrote ``snoop_results/<run>`` into current_run_dir/last_run_dir.
        name = name[len("snoop_results/") :]
    m = RUN_NAME_RE.match(name)
    if m is None or ".." in name or not _valid_timestamp(m["date"] + m["time"]):
        raise InvalidRunName(
            f"{text!r} is not a run name (expected _snoop_<YYYYMMDD>_<HHMM>_<git describe>)"
        )
    return RunId(name)


def _valid_timestamp(digits: str) -> bool:
    """True if ``YYYYMMDDHHMM`` is a real date and time (``20231399`` is not)."""
    try:
        datetime.strptime(digits, "%Y%m%d%H%M")
    except ValueError:
        return False
    return True


def is_run_name(text: str) -> bool:
    """True if ``text`` is a valid run name."""
    try:
        parse_run_name(text)
    except InvalidRunName:
        return False
    return True
