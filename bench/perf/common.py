"""What every benchmark of the suite shares: processes measured, servers, tables, targets.

A measured process is waited for with ``os.wait4``, which gives that process's own resource
usage (its peak RSS, including the children it waited for), not a maximum over every child
the benchmark ever started. Servers (moto's S3, the local Slack Web API) run in their own
processes, so that their CPU time is not counted in the measured process and a measured
process talks to them over HTTP as it would in production.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

#: The project's virtual environment (its console scripts are measured from there).
VENV_BIN = Path(sys.executable).parent
#: Credentials of the moto server (any value works; these are the tests').
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
SLACK_TOKEN = "xoxb-bench-perf"
SLACK_CHANNEL = "C0BENCHPERF"
#: GNU time, for the peak RSS of a measured process.
TIME = Path("/usr/bin/time")


def log(text: str) -> None:
    """Progress, on stderr (stdout is for the tables)."""
    print(text, file=sys.stderr, flush=True)


# --- processes ----------


@dataclass(frozen=True)
class Proc:
    """A finished process: wall time (s), peak RSS (MB), exit status and output."""

    wall: float
    rss_mb: float
    code: int
    stdout: str
    stderr: str


def run_measured(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path | None = None,
    timeout: float = 900.0,
) -> Proc:
    """Run ``argv`` to its end; its wall time and peak RSS.

    The peak RSS comes from ``/usr/bin/time -f %M`` when it exists: a child forked straight
    from this (large) process would report this process's RSS as its own peak (Linux keeps
    the high-water mark across ``vfork`` and ``exec``). Without it, from ``wait4``.
    """
    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        tempfile.NamedTemporaryFile("r") as rss,
    ):
        command = list(argv)
        if TIME.exists():
            command = [str(TIME), "-f", "%M", "-o", rss.name, *command]
        start = time.perf_counter()
        process = subprocess.Popen(command, stdout=out, stderr=err, env=dict(env), cwd=cwd)
        timer = threading.Timer(timeout, process.kill)
        timer.start()
        try:
            _pid, status, usage = os.wait4(process.pid, 0)
        finally:
            timer.cancel()
        wall = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        peak_kb = usage.ru_maxrss
        if TIME.exists():
            lines = [line for line in rss.read().split() if line.isdigit()]
            peak_kb = int(lines[-1]) if lines else 0
        return Proc(
            wall=wall,
            rss_mb=peak_kb / 1024,
            code=process.returncode,
            stdout=_read(out),
            stderr=_read(err),
        )


def _read(fh: IO[bytes]) -> str:
    fh.seek(0)
    return fh.read().decode("utf-8", "replace")


def check(proc: Proc, what: str, *, codes: Iterable[int] = (0,)) -> Proc:
    """``proc`` if it exited with one of ``codes``; else stop the benchmark with its stderr."""
    if proc.code not in set(codes):
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise SystemExit(f"{what} failed (exit status {proc.code}):\n{tail}")
    return proc


class ServerProcess:
    """``python -m <module>`` serving until stopped; its first line of output is its URL."""

    def __init__(self, module: str, *, env: Mapping[str, str] | None = None) -> None:
        self.module = module
        self.process = subprocess.Popen(
            [sys.executable, "-m", module],
            stdout=subprocess.PIPE,
            text=True,
            env=dict(env) if env is not None else None,
        )
        assert self.process.stdout is not None
        self.url = self.process.stdout.readline().strip()
        if not self.url:
            self.stop()
            raise SystemExit(f"{module} did not start")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


_OLD_TOOL = {"enabled": True}


def use_old_tool(enabled: bool) -> None:
    """``--no-old``: measure without the old tool (issue 8's figures stand in)."""
    _OLD_TOOL["enabled"] = enabled


def aws_cli() -> str | None:
    """The old tool, ``aws`` (awscli), if it is on PATH (and not disabled)."""
    return shutil.which("aws") if _OLD_TOOL["enabled"] else None


# --- statistics and tables ----------


@dataclass(frozen=True)
class Stats:
    samples: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def low(self) -> float:
        return min(self.samples)

    @property
    def high(self) -> float:
        return max(self.samples)

    def cells(self, digits: int = 2) -> list[str]:
        return [f"{v:.{digits}f}" for v in (self.median, self.low, self.high)]


def stats(samples: Iterable[float]) -> Stats:
    values = tuple(samples)
    if not values:
        raise ValueError("no samples")
    return Stats(values)


def verdict(value: float, limit: float) -> str:
    """Whether ``value`` meets the target ``<= limit``."""
    return "met" if value <= limit else "NOT MET"


@dataclass
class Section:
    """One table of results: printed as markdown, and written into docs/performance.md."""

    key: str  # e.g. "idle-medium": the section's identity in the document
    title: str
    header: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, *cells: object) -> None:
        self.rows.append([str(c) for c in cells])

    def markdown(self) -> str:
        lines = [f"### {self.title}", ""]
        lines.append("| " + " | ".join(self.header) + " |")
        lines.append("|" + "|".join("---" for _ in self.header) + "|")
        for row in self.rows:
            cells = [c.replace("|", "\\|") for c in row] + [""] * (len(self.header) - len(row))
            lines.append("| " + " | ".join(cells) + " |")
        if self.notes:
            lines.append("")
            lines += [f"- {note}" for note in self.notes]
        return "\n".join(lines) + "\n"


def ratio(ours: float, old: float | None) -> str:
    return f"{ours / old:.2f}x" if old else "-"
