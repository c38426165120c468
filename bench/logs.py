"""Logging set-up: timestamped lines on stderr, and the run's ``cron_res`` files.

Per-module loggers with %-style arguments everywhere; stdout is kept for a command's real
output. Under cron the lines are plain and timestamped so that someone reading
``cron_res`` at 3 a.m. sees what happened when.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

FORMAT = "[%(asctime)s] %(levelname)s %(name)s: %(message)s"
DATEFMT = "%Y-%m-%d %H:%M:%S"


def setup_console(verbosity: int = 0) -> None:
    """Log to stderr: warnings with ``-q``, info by default, debug with ``-v``."""
    level = logging.INFO if verbosity == 0 else logging.DEBUG if verbosity > 0 else logging.WARNING
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_bench_console", False):
            root.removeHandler(handler)
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(logging.Formatter(FORMAT, DATEFMT))
    console._bench_console = True  # type: ignore[attr-defined]
    root.addHandler(console)
    root.setLevel(logging.DEBUG)
    console.setLevel(level)
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer", "filelock", "slack_sdk"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@contextlib.contextmanager
def log_to_files(out: Path, err: Path | None = None) -> Iterator[None]:
    """Copy log records to ``out`` (info and above) and ``err`` (warnings and above)."""
    root = logging.getLogger()
    handlers: list[logging.Handler] = []
    for path, level in ((out, logging.INFO), (err, logging.WARNING)):
        if path is None:
            continue
        handler = logging.FileHandler(path, mode="a", encoding="utf-8")
        handler.setFormatter(logging.Formatter(FORMAT, DATEFMT))
        handler.setLevel(level)
        root.addHandler(handler)
        handlers.append(handler)
    try:
        yield
    finally:
        for added in handlers:
            root.removeHandler(added)
            added.close()
