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
from typing import Any

from bench.analysis.digest import DIGEST
from bench.perf.common import Proc, Section, check, log, run_measured, stats, verdict
from bench.perf.history import fill_cache, store_url
from bench.perf.lab import Lab

#: Issue 8's targets for the analysis alone: seconds per scale, and peak RSS at large.
TARGET_SECONDS = {"medium": 2.0, "large": 8.0}
TARGET_RSS_MB = {"large": 400.0}


def _prepare(lab: Lab) -> Path:
    root = lab.top / "watch-analysis"
    fill_cache(lab.root, root / "cache", lab.runs)
    for digest in (root / "cache").glob(f"*/{DIGEST}"):
        digest.unlink()  # the cold round builds them
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
    log("  a first round on a cold cache (every run's CSVs parsed into its digest)")
    cold = _child(lab, root)
    procs: list[Proc] = []
    results: list[dict[str, Any]] = []
    for i in range(lab.rounds):
        proc = _child(lab, root)
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        procs.append(proc)
        phases = results[-1]["phases"]
        log(
            f"  analysis {i + 1}/{lab.rounds}: analysis {phases['analysis']:.2f} s, page and "
            f"plots {phases['render']:.2f} s, process {proc.wall:.2f} s, {proc.rss_mb:.0f} MB"
        )
    name = lab.scale.name
    rss = stats(p.rss_mb for p in procs)
    target_s = TARGET_SECONDS.get(name)
    target_rss = TARGET_RSS_MB.get(name)
    section = Section(
        f"analysis-{name}",
        f"Analysis alone from a warm cache, {name} ({lab.scale.describe()}), {lab.rounds} rounds",
        ["what", "median", "min", "max", "target", "verdict"],
    )
    analysis_s = stats(float(r["phases"]["analysis"]) for r in results)
    section.add(
        "analysis: history, comparisons, detector, comparison files, summary (s)",
        *analysis_s.cells(),
        f"<= {target_s:g} s" if target_s else "-",
        verdict(analysis_s.median, target_s) if target_s else "-",
    )
    section.add(
        f"rendering: the HTML page and its {results[-1]['plots']} plots (s)",
        *stats(float(r["phases"]["render"]) for r in results).cells(),
        "-",
        "-",
    )
    section.add(
        "analyse_run, both of the above (s)",
        *stats(float(r["seconds"]) for r in results).cells(),
        "-",
        "-",
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
    result = results[-1]
    section.notes += [
        f"the report: {result.get('files')} files compared, {result.get('alerts')} alerts, "
        f"{result.get('plots')} plots drawn, {result.get('history_values')} values in the "
        "history",
        "warm cache: every earlier run downloaded and parsed once into its digest, as a "
        "watcher that has been running has them; the first analysis on a cold cache (each "
        f"run's CSVs parsed) took {cold.wall:.1f} s, peak RSS {cold.rss_mb:.0f} MB",
    ]
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
                "phases": summary.get("seconds", {}),
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
