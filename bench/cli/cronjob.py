"""``cronjob``: the scheduled run on the reference host (called by ``jobs/cronjob.sh``)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from bench.cli.common import EXIT_CODES_HELP, add_config_arguments, run_main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cronjob",
        description=(
            "Run the benchmarks once, as cron does: take the lock, check the markers, update "
            "the checkout, build, benchmark, collect the CSVs into "
            "<root>/snoop_results/<run>/, upload them to the store (SUCCESS last) and report. "
            "With no configuration it runs the embedded demo in the current directory."
        ),
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(build_parser(), _run, argv)


def _run(args: argparse.Namespace) -> int:
    from bench.cli.bench_run import execute

    return execute(args, options=None, notify=True)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
