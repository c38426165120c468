"""The watcher's ticks, as cron runs them: ``watch_regressions`` processes against the lab.

- the tick with a new run: the cache holds every run but the newest, ``last_known_dir`` names
  the one before it; the tick lists, downloads the newest run's CSVs, analyses, writes the
  report files and delivers the report to the local Slack server. Side by side, the old
  watcher's download: ``aws s3 sync`` of every run's CSVs into an empty directory (its three
  ``gas_parameter_diff`` calls per file are not available here: issue 8's figure stands in);
- the idle tick, once the newest run is reported: nothing new. Side by side, the old way:
  ``aws s3 ls .../inference_csvs/snoop_results/ | grep PRE | tail -n 1`` and a comparison with
  the last known run.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from bench.perf.common import (
    VENV_BIN,
    Proc,
    Section,
    aws_cli,
    check,
    log,
    ratio,
    run_measured,
    stats,
    verdict,
)
from bench.perf.history import BUCKET, INFERENCE, PREFIX, fill_cache
from bench.perf.lab import Lab
from bench.testing.s3server import Request

#: Issue 8's figures for the old tools on this kind of machine (100 runs x 200 files x 40).
OLD_IDLE_REFERENCE_S = 0.55
OLD_SYNC_REFERENCE_S = 119.0
OLD_DIFFS_REFERENCE_S = 5.6
#: Modules an idle tick must not import (issue 8), and heavy ones worth knowing about.
FORBIDDEN_ON_IDLE = ("pandas", "matplotlib")
WATCHED_IMPORTS = ("boto3", "botocore", "slack_sdk", "numpy", "jinja2", "filelock")
EXIT_OK, EXIT_REGRESSIONS = 0, 5
#: Rounds of the idle tick at least: a second each, and the machine is shared.
CHEAP_ROUNDS = 5

_OLD_IDLE = r"""
newest=$(aws s3 ls "$1" --endpoint-url "$2" | grep PRE | tail -n 1 | awk '{print $2}')
newest=${newest%/}
[ -n "$newest" ] || exit 2
[ "$newest" = "$(cat "$3")" ] && exit 0
echo "new results: $newest"
exit 1
"""


def watch_root(lab: Lab) -> Path:
    return lab.top / "watch"


def _reset_to_before_newest(lab: Lab) -> Path:
    """The watcher's state just before the newest run appeared: every other run cached and
    reported (``last_known_dir``), nothing of the newest run."""
    root = watch_root(lab)
    runs = lab.runs
    fill_cache(lab.root, root / "cache", runs[:-1])
    for stale in (
        root / "cache" / runs[-1],
        root / "cache" / ".partial",
        root / "reports" / runs[-1],
    ):
        if stale.exists():
            shutil.rmtree(stale)
    (root / "last_known_dir").write_text(runs[-2] + "\n")
    return root


def _tick(lab: Lab, root: Path) -> Proc:
    return run_measured([str(VENV_BIN / "watch_regressions")], env=lab.watcher_env(root), cwd=root)


def _inference_gets(requests: list[Request]) -> dict[str, int]:
    """Objects downloaded from the inference CSVs, counted per run."""
    base = f"/{BUCKET}/{PREFIX}/{INFERENCE}/"
    per_run: dict[str, int] = {}
    for request in requests:
        if request.method == "GET" and request.path.startswith(base):
            run = request.path[len(base) :].split("/", 1)[0]
            per_run[run] = per_run.get(run, 0) + 1
    return per_run


def new_run_tick(lab: Lab, *, target: bool) -> Section:
    """The tick that finds a new run, end to end; and the old watcher's sync side by side."""
    from bench.watch import JOURNAL, Journal

    lab.seed(full=True)
    runs = lab.runs
    newest = runs[-1]
    new_files = len(list((lab.root / INFERENCE / newest).iterdir()))
    aws = aws_cli()
    ours: list[Proc] = []
    requests: list[int] = []
    downloads: list[dict[str, int]] = []
    old: list[float] = []
    for i in range(lab.rounds):
        root = _reset_to_before_newest(lab)
        before, _ = lab.requests()
        proc = check(_tick(lab, root), "watch_regressions", codes=(EXIT_OK, EXIT_REGRESSIONS))
        _, seen = lab.requests(since=before)
        if not Journal(root / "reports" / newest / JOURNAL).complete():
            raise SystemExit(f"the report of {newest} was not delivered:\n{proc.stderr}")
        ours.append(proc)
        requests.append(len(seen))
        downloads.append(_inference_gets(seen))
        line = f"  tick {i + 1}/{lab.rounds}: {proc.wall:.2f} s, {len(seen)} requests"
        if aws and i < lab.old_rounds:
            old.append(_old_sync(lab, aws))
            line += f"; aws s3 sync {old[-1]:.2f} s"
        log(line)

    wall = stats(p.wall for p in ours)
    rss = stats(p.rss_mb for p in ours)
    only_new = all(d == {newest: new_files} for d in downloads)
    # Issue 8's figures are for the medium scale: elsewhere only a measured sync compares.
    medium = lab.scale.name == "medium"
    sync = stats(old).median if old else (OLD_SYNC_REFERENCE_S if medium else None)
    old_total = None if sync is None else sync + (OLD_DIFFS_REFERENCE_S if medium else 0.0)
    section = Section(
        f"tick-{lab.scale.name}",
        f"Tick with one new run, {lab.scale.name} ({lab.scale.describe()}), {lab.rounds} rounds",
        ["what", "median s", "min s", "max s", "vs old", "target", "verdict"],
    )
    section.add(
        "ours: watch_regressions, end to end (list, download, analyse, report files, Slack)",
        *wall.cells(),
        ratio(wall.median, old_total),
        "<= 10 s" if target else "-",
        verdict(wall.median, 10.0) if target else "-",
    )
    if old:
        section.add(
            f"old: aws s3 sync of every run's CSVs (measured, {len(old)} rounds)",
            *stats(old).cells(),
        )
    elif medium:
        section.add("old: aws s3 sync (not measured: issue 8's figure)", f"{sync:.2f}")
    if medium:
        section.add(
            "old: 3 gas_parameter_diff per file (not available here: issue 8's figure)",
            f"{OLD_DIFFS_REFERENCE_S:.2f}",
        )
    if old_total is not None:
        section.add(
            "old: total" + (" (sync + diffs)" if medium else " (sync only)"),
            f"{old_total:.2f}",
            "",
            "",
            "1.00x",
        )
    section.notes += [
        f"ours: peak RSS {rss.median:.0f} MB (min {rss.low:.0f}, max {rss.high:.0f}); "
        f"store requests per tick: median {stats(requests).median:.0f} "
        f"(min {min(requests)}, max {max(requests)})",
        f"objects downloaded per tick: {_describe_downloads(downloads)}; the newest run has "
        f"{new_files} files: only the new run's files downloaded: {'yes' if only_new else 'NO'}",
        "the cache held every earlier run (a watcher that has been running); the old watcher "
        "wiped its copy and synced the whole history at each new run",
    ]
    return section


def _describe_downloads(downloads: list[dict[str, int]]) -> str:
    shown = sorted(
        {", ".join(f"{n} of {r}" for r, n in sorted(d.items())) or "none" for d in downloads}
    )
    return "; ".join(shown)


def _old_sync(lab: Lab, aws: str) -> float:
    target = lab.top / "old-sync"
    if target.exists():
        shutil.rmtree(target)
    target.mkdir()
    proc = run_measured(
        [
            aws,
            "s3",
            "sync",
            lab.s3_uri(f"{INFERENCE}/"),
            str(target),
            "--endpoint-url",
            lab.endpoint,
            "--only-show-errors",
        ],
        env=lab.base_env(),
    )
    check(proc, "aws s3 sync")
    copied = sum(1 for p in target.rglob("*.csv"))
    if copied != lab.files():
        raise SystemExit(f"aws s3 sync copied {copied} files, expected {lab.files()}")
    shutil.rmtree(target)
    return proc.wall


def ensure_reported(lab: Lab) -> Path:
    """The watch root after a tick that reported the newest run (one real tick if needed)."""
    lab.seed(full=True)
    root = watch_root(lab)
    last = root / "last_known_dir"
    newest = lab.runs[-1]
    if not (last.is_file() and last.read_text().strip() == newest):
        log(f"  first tick: reporting {newest}")
        _reset_to_before_newest(lab)
        check(_tick(lab, root), "watch_regressions", codes=(EXIT_OK, EXIT_REGRESSIONS))
        if last.read_text().strip() != newest:
            raise SystemExit("the first tick did not report the newest run")
    return root


def idle_tick(lab: Lab) -> Section:
    """``watch_regressions`` with nothing new, alternating with the old way."""
    root = ensure_reported(lab)
    aws = aws_cli()
    old_last = lab.top / "old-last_known"
    old_last.write_text(lab.runs[-1] + "\n")
    ours: list[Proc] = []
    ours_requests: list[int] = []
    old: list[Proc] = []
    old_requests: list[int] = []
    rounds = max(lab.rounds, CHEAP_ROUNDS)
    for i in range(rounds):
        before, _ = lab.requests()
        proc = check(_tick(lab, root), "idle watch_regressions")
        ours_requests.append(lab.requests(since=before)[0] - before)
        ours.append(proc)
        line = f"  idle {i + 1}/{rounds}: ours {proc.wall:.3f} s, {ours_requests[-1]} requests"
        if aws:
            before, _ = lab.requests()
            argv = ["sh", "-c", _OLD_IDLE, "old-idle"]
            argv += [lab.s3_uri(f"{INFERENCE}/"), lab.endpoint, str(old_last)]
            old.append(check(run_measured(argv, env=lab.base_env()), "old idle tick"))
            old_requests.append(lab.requests(since=before)[0] - before)
            line += f"; old {old[-1].wall:.3f} s, {old_requests[-1]} requests"
        log(line)
    imported, slowest = _imports(lab, root)

    wall = stats(p.wall for p in ours)
    old_wall = stats(p.wall for p in old).median if old else None
    reference = old_wall if old_wall is not None else OLD_IDLE_REFERENCE_S
    section = Section(
        f"idle-{lab.scale.name}",
        f"Idle tick (nothing new), {lab.scale.name}: {lab.scale.runs} runs, "
        f"{lab.files()} CSV objects in the bucket, {rounds} rounds",
        [
            "what",
            "median s",
            "min s",
            "max s",
            "peak RSS MB",
            "requests",
            "vs old",
            "target",
            "verdict",
        ],
    )
    section.add(
        "ours: watch_regressions (process)",
        *wall.cells(3),
        f"{stats(p.rss_mb for p in ours).median:.0f}",
        f"{max(ours_requests)}",
        ratio(wall.median, reference),
        "<= 0.5x old (aim 0.3x), <= 2 requests",
        verdict(wall.median / reference, 0.5)
        + ("" if max(ours_requests) <= 2 else ", requests NOT MET"),
    )
    if old:
        section.add(
            "old: aws s3 ls | grep PRE | tail -n 1 + compare",
            *stats(p.wall for p in old).cells(3),
            f"{stats(p.rss_mb for p in old).median:.0f}",
            f"{max(old_requests)}",
            "1.00x",
        )
    else:
        section.add(
            "old: aws s3 ls ... (not measured: issue 8's figure)",
            f"{reference:.3f}",
            "",
            "",
            "",
            "",
            "1.00x",
        )
    forbidden = [m for m in FORBIDDEN_ON_IDLE if m in imported]
    section.notes += [
        "requests: what the S3 server received during the tick (its request log)",
        "modules imported by an idle tick: "
        + ", ".join(
            f"{m} {'yes' if m in imported else 'no'}"
            for m in (*FORBIDDEN_ON_IDLE, *WATCHED_IMPORTS)
        )
        + (f" (target: no {', '.join(FORBIDDEN_ON_IDLE)}: {'NOT MET' if forbidden else 'met'})"),
        "slowest imports of the idle tick (cumulative, `python -X importtime`): " + slowest,
    ]
    return section


def _imports(lab: Lab, root: Path) -> tuple[set[str], str]:
    """The top-level modules an idle tick imports, and the slowest of them."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "bench.cli.watch_regressions"],
        env=lab.watcher_env(root),
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    imported: set[str] = set()
    slow: list[tuple[int, str]] = []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _self, cumulative, name = line[len("import time:") :].split("|")
        if not cumulative.strip().isdigit():
            continue
        imported.add(name.strip().split(".")[0])
        if not name.startswith("   "):  # at top level (one space; two more per level)
            slow.append((int(cumulative), name.strip()))
    slow.sort(reverse=True)
    return imported, ", ".join(f"{n} {us / 1000:.0f} ms" for us, n in slow[:6])
