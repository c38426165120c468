"""``python -m bench.perf <what>``: the pipeline measured against the old tools (issue 8).

  idle      the watcher's tick with nothing new (process: wall, peak RSS, store requests),
            against ``aws s3 ls ... | grep PRE | tail -n 1`` + compare
  tick      the tick with one new run, end to end (list, download, analyse, report files,
            post to a local Slack API server), against ``aws s3 sync`` of every run's CSVs
  analysis  ``analyse_run`` alone from a warm cache (wall, peak RSS)
  upload    the upload of one run against ``aws s3 cp --recursive``, and an unchanged re-upload
  detect    ``bench-detect --online`` over the history (when installed)
  startup   ``--help`` of every console script
  all       all of the above; writes the tables into docs/performance.md

Histories in the real snoop formats are generated once per scale (small: 20 runs x 50 files x
30 parameters, medium: 100 x 200 x 40, large: 300 x 300 x 60) under ``--workdir`` and served
by a moto S3 server in its own process on 127.0.0.1. Each figure is the median of ``--rounds``
rounds, with min and max; the old tool (``aws``, ``pip install awscli``) runs alternately in
the same rounds when it is on PATH, else issue 8's figures stand in. Progress goes to stderr,
the tables (markdown) to stdout. Needs the ``test`` extras (moto); not part of the test run.
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from bench.perf.common import Section, log, use_old_tool
from bench.perf.history import SCALES

#: The scales each measurement runs at when ``--scale`` is not given.
DEFAULT_SCALES = {
    "idle": ("small", "medium", "large"),
    "tick": ("medium",),
    "analysis": ("medium", "large"),
    "detect": ("large",),
}
PER_SCALE = ("tick", "idle", "analysis", "detect")  # in the order they run on one lab
DOCS = Path(__file__).resolve().parents[2] / "docs" / "performance.md"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.perf",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--scale",
        action="append",
        choices=list(SCALES),
        help="scale (repeatable; default: per measurement, see above)",
    )
    common.add_argument("--rounds", type=int, default=3, help="rounds per figure (default 3)")
    common.add_argument(
        "--old-rounds",
        type=int,
        help="rounds of the old watcher's `aws s3 sync` (slow: default --rounds)",
    )
    common.add_argument(
        "--workdir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "bench-perf",
        help="where histories are generated and kept between invocations",
    )
    common.add_argument(
        "--output",
        type=Path,
        help="write the tables into this markdown file (`all`: docs/performance.md by default)",
    )
    common.add_argument("--no-output", action="store_true", help="`all`: print only")
    common.add_argument(
        "--no-old",
        action="store_true",
        help="do not run the old tool even if it is on PATH (issue 8's figures stand in)",
    )
    common.add_argument("--profile", action="store_true", help="analysis: profile one more round")
    sub = parser.add_subparsers(dest="what", required=True, metavar="what")
    for name, text in (
        ("idle", "the idle tick vs aws s3 ls | grep PRE | tail -n 1"),
        ("tick", "a tick with one new run, end to end, vs aws s3 sync"),
        ("analysis", "analyse_run alone from a warm cache"),
        ("upload", "upload of one run vs aws s3 cp --recursive; re-upload"),
        ("detect", "bench-detect --online over the history"),
        ("startup", "--help of every console script"),
        ("all", "everything, written into docs/performance.md"),
    ):
        sub.add_parser(name, parents=[common], help=text)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # SIGTERM unwinds like ^C, so that the servers started by the suite are stopped.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    args_list = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(args_list)
    if args.rounds < 1:
        raise SystemExit("--rounds must be at least 1")
    use_old_tool(not args.no_old)
    output: Path | None = args.output
    if args.what == "all" and output is None and not args.no_output:
        output = DOCS
    sections: list[Section] = []

    def emit(section: Section) -> None:
        print(section.markdown(), flush=True)
        sections.append(section)
        if output is not None:
            from bench.perf import docs

            docs.write(output, [docs.machine(args_list), *sections])

    wanted = PER_SCALE if args.what == "all" else (args.what,)
    per_scale = [w for w in wanted if w in PER_SCALE]
    if per_scale:
        _per_scale(args, per_scale, emit)
    if "upload" in wanted or args.what == "all":
        from bench.perf.upload import upload

        emit(upload(args.rounds, shape="toy" if args.scale == ["toy"] else "default"))
    if "startup" in wanted or args.what == "all":
        from bench.perf.scripts import startup

        emit(startup(max(args.rounds, 5)))
    return 0


def _per_scale(
    args: argparse.Namespace, measurements: list[str], emit: Callable[[Section], None]
) -> None:
    from bench.perf.lab import Lab

    order = list(SCALES)
    plan: dict[str, list[str]] = {}
    for what in measurements:
        for scale in args.scale or DEFAULT_SCALES[what]:
            plan.setdefault(scale, []).append(what)
    for scale in sorted(plan, key=order.index):
        old_rounds = args.rounds if args.old_rounds is None else args.old_rounds
        log(f"== {scale}: {', '.join(plan[scale])}")
        with Lab(SCALES[scale], args.workdir, args.rounds, old_rounds) as lab:
            for what in plan[scale]:
                emit(_measure(what, lab, args))


def _measure(what: str, lab: object, args: argparse.Namespace) -> Section:
    from bench.perf.lab import Lab

    assert isinstance(lab, Lab)
    if what == "tick":
        from bench.perf.watcher import new_run_tick

        return new_run_tick(lab, target=lab.scale.name == "medium")
    if what == "idle":
        from bench.perf.watcher import idle_tick

        return idle_tick(lab)
    if what == "analysis":
        from bench.perf.analysis import analysis

        return analysis(lab, profile=args.profile)
    from bench.perf.scripts import detect

    return detect(lab)


if __name__ == "__main__":
    raise SystemExit(main())
