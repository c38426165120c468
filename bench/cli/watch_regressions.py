"""``watch_regressions``: one tick of the watcher host (cron, every 10 minutes)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

from bench.cli.common import add_config_arguments, overrides_from, run_main

EXIT_CODES = """exit status:
  0    nothing new, or a report without regression delivered (or another tick is running)
  1    the tick failed (store unreachable, delivery interrupted: the next tick resumes it)
  2    usage or configuration error
  5    a report with regressions was delivered
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="watch_regressions",
        description=(
            "Look for a new successful run in the store. Nothing new: exit at once (at most two "
            "store requests). A new run: download its inference CSVs into the cache, compare "
            "them with the history (gas_parameter_diff's tables: all.csv, reference.csv, "
            "previous.csv, selected.csv, alerts) and deliver the report to Slack, or to the "
            "outbox without a token, exactly once: a tick cut short resumes the report."
        ),
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_arguments(parser)
    parser.add_argument("--watch-root", metavar="DIR", help="same as --set watch.root=DIR")
    parser.add_argument(
        "--first-dir",
        metavar="RUN",
        help="oldest run of the history (default: $FIRST_DIR, else the oldest)",
    )
    parser.add_argument(
        "--ref-dir", metavar="RUN", help="the reference run (default: $REF_DIR, else the first run)"
    )
    parser.add_argument(
        "--renamings",
        metavar="FILE",
        help="`new_name,old_name` lines joining renamed parameters' histories",
    )
    parser.add_argument(
        "--rerun", metavar="RUN", help="re-analyse RUN and post its report again, on purpose"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(build_parser(), _run, argv)


def _run(args: argparse.Namespace) -> int:
    from bench.config import load_settings
    from bench.store import open_store
    from bench.watch import WatchOptions, tick

    overrides = overrides_from(args)
    if args.watch_root:
        overrides.append(f"watch.root={args.watch_root}")
    settings = load_settings(config_path=args.config, overrides=overrides)
    renamings = args.renamings or settings.watch.renamings
    options = WatchOptions(
        first_dir=args.first_dir or os.environ.get("FIRST_DIR") or settings.watch.first_dir,
        ref_dir=args.ref_dir or os.environ.get("REF_DIR") or settings.watch.ref_dir,
        renamings=Path(renamings).expanduser() if renamings else None,
        rerun=args.rerun,
    )
    store = open_store(
        settings.store.url,
        endpoint_url=settings.store.endpoint_url,
        max_attempts=settings.store.max_attempts,
    )
    from bench.notify import make_channel

    try:
        outcome = tick(settings, store=store, channel=make_channel(settings), options=options)
    finally:
        from bench.metrics import after_tick

        after_tick(settings, store=store)
    if outcome.status == "reported" and outcome.report_dir is not None:
        print(f"reported {outcome.run}: {outcome.regressions} regression(s)")
        print(f"report: {outcome.report_dir}")
    return int(outcome.exit_code)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
