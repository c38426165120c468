"""``bench-cleanup``: recover the reference host after a failure, in one command."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from bench.cli.common import add_config_arguments, overrides_from, run_main

EPILOG = """what it does:
  It prints its plan first, then acts. What a dead step left running is killed first (its
  process group, if a process in it still has the step's BENCH_STEP_TOKEN; a group number
  reused by another program is left alone). Then the run's logs (cron_res,
  cron_res_errors) and the checkout's leftover *_results are moved into its run directory
  (created if needed), and current_run_dir is resolved. A run whose benchmark had
  completed is finished (upload of what is missing, SUCCESS last) and becomes last_run_dir
  ("recovered"); a run that died earlier is archived with a FAILED marker and its reason
  (`bench-run --resume <run>` can still complete it). Nothing is deleted. Running it again
  changes nothing.

exit status:
  0    done, or nothing to clean up
  1    the recovery failed, or a dead step's process survived SIGKILL (the run stays
       failed; fix the cause, run it again)
  2    usage or configuration error
  3    refused: a run is in progress (it holds the lock)
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench-cleanup",
        description="Clean up the reference host's work directory after a failed or crashed "
        "run: the manual clean-up of the old scripts, done by the program.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_arguments(parser)
    parser.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    parser.add_argument("--no-notify", action="store_true", help="send no report")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(build_parser(), _run, argv)


def _run(args: argparse.Namespace) -> int:
    from bench.cleanup import cleanup
    from bench.config import load_settings
    from bench.notify import NullNotifier, make_notifier

    settings = load_settings(config_path=args.config, overrides=overrides_from(args))
    notifier = NullNotifier() if args.no_notify else make_notifier(settings)
    plan = cleanup(settings, notifier=notifier, dry_run=args.dry_run)
    if args.dry_run and plan.outcome != "nothing":
        print("(dry run: nothing was changed)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
