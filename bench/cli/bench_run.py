"""``bench-run``: the same pipeline as ``cronjob``, by hand, with what someone on call needs."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

from bench.cli.common import EXIT_CODES_HELP, add_config_arguments, overrides_from, run_main
from bench.errors import ConfigError

log = logging.getLogger("bench")


def build_parser() -> argparse.ArgumentParser:
    from bench.pipeline import STEPS

    parser = argparse.ArgumentParser(
        prog="bench-run",
        description=(
            "Run the reference pipeline by hand. Same code path as `cronjob`; the flags below "
            "skip, select or resume steps. Steps: " + ", ".join(STEPS) + "."
        ),
        epilog=EXIT_CODES_HELP
        + """
examples:
  bench-run --config tezos.toml --dry-run     print the exact commands, run nothing
  bench-run --skip-update --skip-build        benchmark the checkout as it is
  bench-run --resume                          retry the failed run from the step that failed
  bench-run --resume --steps upload,finish    only finish the upload of the failed run
""",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_arguments(parser)
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print the plan of commands and moves, change nothing",
    )
    parser.add_argument(
        "--show-config",
        action="store_true",
        help="print the effective configuration and where each value comes from",
    )
    parser.add_argument(
        "--skip-update",
        action="store_true",
        help="do not fetch/pull the checkout: benchmark it as it is",
    )
    parser.add_argument("--skip-build", action="store_true", help="do not run the build step")
    parser.add_argument(
        "--steps",
        metavar="LIST",
        help="comma-separated steps to run; the others are skipped and the run "
        "stays unfinished (resumable)",
    )
    parser.add_argument(
        "--resume",
        metavar="RUN",
        nargs="?",
        const="",
        help="continue a failed or partial run (default: the one named by "
        "current_run_dir) from its first step that did not succeed",
    )
    parser.add_argument("--no-notify", action="store_true", help="send no report")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(build_parser(), _run, argv)


def _run(args: argparse.Namespace) -> int:
    from bench.pipeline import STEPS, RunOptions

    steps = None
    if args.steps:
        steps = frozenset(s.strip() for s in args.steps.split(",") if s.strip())
        unknown = sorted(steps - set(STEPS))
        if unknown:
            raise ConfigError(
                f"--steps: unknown step(s) {', '.join(unknown)}",
                hint=f"steps are: {', '.join(STEPS)}",
            )
    options = RunOptions(
        skip_update=args.skip_update, skip_build=args.skip_build, steps=steps, resume=args.resume
    )
    return execute(args, options=options, notify=not args.no_notify)


def execute(args: argparse.Namespace, *, options: object, notify: bool) -> int:
    """Load the configuration and run (or plan) the pipeline; print where the results are."""
    from bench import pipeline
    from bench.config import describe_settings, load_settings
    from bench.notify import NullNotifier, make_notifier

    settings = load_settings(config_path=args.config, overrides=overrides_from(args))
    if getattr(args, "show_config", False):
        print(describe_settings(settings))
        return 0
    opts = options if isinstance(options, pipeline.RunOptions) else pipeline.RunOptions()
    if getattr(args, "dry_run", False):
        print("\n".join(pipeline.plan(settings, opts)))
        return 0
    notifier = make_notifier(settings) if notify else NullNotifier()
    try:
        outcome = pipeline.run(settings, notifier=notifier, options=opts)
    finally:  # after success, failure and refusal alike; the lock is released by now
        from bench.metrics import after_run

        after_run(settings)
    if outcome.status == "success":
        print(f"run {outcome.run} succeeded")
        print(f"results: {outcome.run_dir}")
        print(
            f"store:   {settings.store.url.rstrip('/')}/complete_results/snoop_results/"
            f"{outcome.run}/"
        )
    elif outcome.status == "partial":
        print(f"run {outcome.run} stopped after the requested steps: {outcome.run_dir}")
    else:
        print(f"run {outcome.run or '(unnamed)'} {outcome.status}: {outcome.message}")
        print(f"logs: {outcome.run_dir or settings.reference.root}")
    return int(outcome.exit_code)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
