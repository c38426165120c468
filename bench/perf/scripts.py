"""The console scripts themselves: start-up time (``--help``) and ``bench-detect --online``."""

from __future__ import annotations

import json
import os
import shutil

from bench.perf.common import VENV_BIN, Proc, Section, check, log, run_measured, stats, verdict
from bench.perf.lab import Lab

SCRIPTS = (
    "cronjob",
    "bench-run",
    "bench-cleanup",
    "watch_regressions",
    "bench-status",
    "bench-metrics",
    "bench-detect",
)
HELP_TARGET_S = 0.3
DETECT_TARGET_S = 120.0


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("BENCH_", "SLACK_"))}


def startup(rounds: int) -> Section:
    section = Section(
        "startup",
        f"Start-up of each console script (`--help`), {rounds} rounds",
        ["script", "median s", "min s", "max s", "peak RSS MB", "target", "verdict"],
    )
    for name in SCRIPTS:
        path = VENV_BIN / name
        if not path.exists():
            section.add(name, "not available yet", "", "", "", f"<= {HELP_TARGET_S} s", "-")
            continue
        procs = [
            check(run_measured([str(path), "--help"], env=_clean_env()), f"{name} --help")
            for _ in range(rounds)
        ]
        wall = stats(p.wall for p in procs)
        section.add(
            name,
            *wall.cells(3),
            f"{stats(p.rss_mb for p in procs).median:.0f}",
            f"<= {HELP_TARGET_S} s",
            verdict(wall.median, HELP_TARGET_S),
        )
    return section


def bench_detect() -> str | None:
    """``bench-detect`` if installed (in the virtual environment, or on PATH)."""
    path = VENV_BIN / "bench-detect"
    return str(path) if path.exists() else shutil.which("bench-detect")


def detect(lab: Lab) -> Section:
    section = Section(
        f"detect-{lab.scale.name}",
        f"bench-detect --online over the {lab.scale.name} history ({lab.scale.describe()})",
        ["what", "median s", "min s", "max s", "peak RSS MB", "target", "verdict"],
    )
    tool = bench_detect()
    target = f"<= {DETECT_TARGET_S:g} s" if lab.scale.name == "large" else "-"
    if tool is None:
        section.add("bench-detect --online", "not available yet", "", "", "", target, "-")
        section.notes.append("bench-detect is not installed yet (issue 5 is in progress)")
        return section
    argv = [tool, "--history", str(lab.root), "--online", "--format", "json"]
    procs: list[Proc] = []
    alerts = 0
    for i in range(lab.rounds):
        proc = check(run_measured(argv, env=_clean_env()), "bench-detect --online")
        procs.append(proc)
        try:
            alerts = len(json.loads(proc.stdout))
        except ValueError:
            alerts = -1
        log(f"  bench-detect {i + 1}/{lab.rounds}: {proc.wall:.1f} s, {proc.rss_mb:.0f} MB")
    wall = stats(p.wall for p in procs)
    section.add(
        "bench-detect --online --format json",
        *wall.cells(1),
        f"{stats(p.rss_mb for p in procs).median:.0f}",
        target,
        verdict(wall.median, DETECT_TARGET_S) if target != "-" else "-",
    )
    section.notes.append(
        f"history given as the store root {lab.root} (inference_csvs/snoop_results/); "
        + (f"{alerts} alerts printed" if alerts >= 0 else "its output was not a JSON list")
    )
    return section
