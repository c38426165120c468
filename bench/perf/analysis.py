"""The analysis alone, from a warm cache: ``analyse_run`` in a fresh child process.

The watch root holds every run in its cache; the child (``python -m bench.perf.analysis``)
loads the settings, opens the store (the analysis lists the runs: one request, nothing to
download) and times :func:`bench.analysis.report.analyse_run` on the newest run, which writes
every report file (the comparison CSVs, the HTML page and its plots, summary.json). The parent
takes the child's peak RSS from ``wait4``. ``--profile`` runs one more round under cProfile
(or pyinstrument, when installed) and prints where the time goes.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from bench.perf.common import Proc, Section, check, log, run_measured, stats, verdict
from bench.perf.history import fill_cache, store_url
from bench.perf.lab import Lab

#: Issue 8's targets for the analysis alone: seconds per scale, and peak RSS at large.
TARGET_SECONDS = {"medium": 2.0, "large": 8.0}
TARGET_RSS_MB = {"large": 400.0}


def _prepare(lab: Lab) -> Path:
    root = lab.top / "watch-analysis"
    fill_cache(lab.root, root / "cache", lab.runs)
    reports = root / "reports"
    if reports.exists():
        shutil.rmtree(reports)
    reports.mkdir(parents=True)
    return root


def _child(lab: Lab, root: Path, *, profile: str = "") -> Proc:
    argv = [sys.executable, "-m", "bench.perf.analysis", "--watch-root", str(root)]
    argv += ["--run", lab.runs[-1], "--store-url", store_url(), "--endpoint", lab.endpoint]
    if profile:
        argv += ["--profile", profile]
    return check(run_measured(argv, env=lab.base_env(), cwd=root), "analyse_run")


def analysis(lab: Lab, *, profile: bool = False) -> Section:
    lab.seed(full=False)
    root = _prepare(lab)
    procs: list[Proc] = []
    inner: list[float] = []
    result: dict[str, object] = {}
    for i in range(lab.rounds):
        proc = _child(lab, root)
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        procs.append(proc)
        inner.append(float(str(result["seconds"])))
        log(
            f"  analysis {i + 1}/{lab.rounds}: analyse_run {inner[-1]:.2f} s, process "
            f"{proc.wall:.2f} s, {proc.rss_mb:.0f} MB"
        )
    name = lab.scale.name
    seconds = stats(inner)
    rss = stats(p.rss_mb for p in procs)
    target_s = TARGET_SECONDS.get(name)
    target_rss = TARGET_RSS_MB.get(name)
    section = Section(
        f"analysis-{name}",
        f"Analysis alone from a warm cache, {name} ({lab.scale.describe()}), {lab.rounds} rounds",
        ["what", "median", "min", "max", "target", "verdict"],
    )
    section.add(
        "analyse_run, in a fresh process (s)",
        *seconds.cells(),
        f"<= {target_s:g} s" if target_s else "-",
        verdict(seconds.median, target_s) if target_s else "-",
    )
    section.add(
        "the whole child process: start, imports, analyse_run (s)",
        *stats(p.wall for p in procs).cells(),
        "-",
        "-",
    )
    section.add(
        "peak RSS of the child process (MB)",
        *rss.cells(0),
        f"<= {target_rss:g} MB" if target_rss else "-",
        verdict(rss.median, target_rss) if target_rss else "-",
    )
    section.notes.append(
        f"the report: {result.get('files')} files compared, {result.get('alerts')} alerts, "
        f"{result.get('plots')} plots drawn, {result.get('history_values')} values in the history"
    )
    if profile:
        log("  profiling one more round")
        section.notes.append("profile: see the output above the table")
        print(_child(lab, root, profile=str(root / "profile.out")).stderr)
    return section


# --- the child ----------


def child(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.perf.analysis")
    parser.add_argument("--watch-root", type=Path, required=True)
    parser.add_argument("--run", required=True)
    parser.add_argument("--store-url", required=True)
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--profile", default="", help="profile into this file; report on stderr")
    args = parser.parse_args(argv)

    from bench.config import load_settings
    from bench.runs import parse_run_name
    from bench.store import open_store
    from bench.watch import WatchOptions

    settings = load_settings(
        overrides=[
            f"store.url={args.store_url}",
            f"store.endpoint_url={args.endpoint}",
            f"watch.root={args.watch_root}",
        ]
    )
    store = open_store(settings.store.url, endpoint_url=settings.store.endpoint_url)
    run = parse_run_name(args.run)
    n = 1
    while (args.watch_root / "reports" / f"{run.name}.rerun-{n}").exists():
        n += 1
    report_dir = args.watch_root / "reports" / f"{run.name}.rerun-{n}"
    report_dir.mkdir(parents=True)

    def analyse() -> dict[str, object]:
        from bench.analysis.report import analyse_run

        return analyse_run(
            settings,
            store=store,
            cache_dir=args.watch_root / "cache",
            run=run,
            report_dir=report_dir,
            options=WatchOptions(),
        )

    started = time.perf_counter()
    summary = _profiled(analyse, args.profile) if args.profile else analyse()
    seconds = time.perf_counter() - started
    counts = summary.get("counts", {})
    assert isinstance(counts, dict)
    plots = summary.get("plots", [])
    assert isinstance(plots, list)
    print(
        json.dumps(
            {
                "seconds": seconds,
                "files": counts.get("files"),
                "alerts": len(summary.get("changes", []) or []),  # type: ignore[arg-type]
                "plots": len(plots),
                "history_values": summary.get("history_values"),
            }
        )
    )
    return 0


def _profiled(action: Callable[[], dict[str, object]], path: str) -> dict[str, object]:
    """Run ``action`` under pyinstrument if installed (wall clock), else cProfile; the report
    goes to stderr."""
    try:
        from pyinstrument import Profiler
    except ImportError:
        import cProfile
        import pstats

        profile = cProfile.Profile()
        result = profile.runcall(action)
        profile.dump_stats(path)
        report = pstats.Stats(path, stream=sys.stderr)
        report.sort_stats("cumulative").print_stats(30)
        report.sort_stats("tottime").print_stats(20)
        return result
    with Profiler(interval=0.002) as profiler:
        result = action()
    print(profiler.output_text(unicode=False, color=False, show_all=False), file=sys.stderr)
    return result


if __name__ == "__main__":
    raise SystemExit(child())
