"""The machine a measurement ran on, and the results written into docs/performance.md.

Each table is a block between ``<!-- perf:<key> -->`` and ``<!-- /perf:<key> -->``; writing
replaces the blocks measured by this invocation and leaves the others (and every line of prose
outside the blocks) alone, so that the scales can be measured by separate invocations. New
blocks go before ``<!-- perf:end -->``.
"""

from __future__ import annotations

import os
import platform
import re
import shlex
import subprocess
import sys
from collections.abc import Sequence
from datetime import datetime
from importlib import metadata
from pathlib import Path

from bench.perf.common import Section, aws_cli

END = "<!-- perf:end -->"
SKELETON = f"""# Performance

Measured by `python -m bench.perf` (see `python -m bench.perf --help`).

## Results

{END}
"""


def machine(argv: Sequence[str]) -> Section:
    section = Section("machine", "Machine and command", ["what", "value"])
    section.add("date", datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"))
    section.add("command", f"`python -m bench.perf {shlex.join(argv)}`")
    section.add("CPU", f"{os.cpu_count()} x {_cpu_model()}")
    section.add("memory", f"{_memory_gb():.1f} GB")
    section.add("load average at start", " ".join(f"{x:.2f}" for x in os.getloadavg()))
    section.add("OS", f"{platform.system()} {platform.release()}")
    section.add("Python", platform.python_version())
    versions = ", ".join(f"{p} {_version(p)}" for p in ("moto", "boto3", "pandas", "slack_sdk"))
    section.add("packages", versions)
    aws = aws_cli()
    section.add(
        "old tool", _aws_version(aws) if aws else "aws: not measured (not on PATH, or --no-old)"
    )
    return section


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _memory_gb() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return float("nan")


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "absent"


def _aws_version(aws: str) -> str:
    proc = subprocess.run([aws, "--version"], capture_output=True, text=True, check=False)
    return (proc.stdout or proc.stderr).strip().split(" ")[0] or "aws"


def write(path: Path, sections: Sequence[Section]) -> None:
    """Replace (or add) the blocks of ``sections`` in ``path``."""
    text = path.read_text(encoding="utf-8") if path.exists() else SKELETON
    if END not in text:
        text = text.rstrip("\n") + f"\n\n{END}\n"
    for section in sections:
        block = f"<!-- perf:{section.key} -->\n{section.markdown()}<!-- /perf:{section.key} -->"
        pattern = re.compile(
            rf"<!-- perf:{re.escape(section.key)} -->.*?<!-- /perf:{re.escape(section.key)} -->",
            re.S,
        )
        found = pattern.search(text)
        if found:
            text = text[: found.start()] + block + text[found.end() :]
        else:
            text = text.replace(END, f"{block}\n\n{END}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    print(f"written to {path}", file=sys.stderr)
