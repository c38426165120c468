"""What every console script shares: the configuration flags, logging, exit-code mapping."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from bench.errors import BenchError, ExitCode, GuardError

log = logging.getLogger("bench")

EXIT_CODES_HELP = """exit status:
  0    success
  1    the run failed (a step failed or timed out, the upload failed)
  2    usage or configuration error: nothing was done
  3    guarded: a previous run is still in progress (its lock is held)
  4    guarded: a previous run crashed or left results behind; see the clues
  130  interrupted by SIGINT/SIGTERM; the state left is recoverable
"""


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("configuration (file < BENCH_* environment < flags)")
    group.add_argument(
        "--config",
        metavar="FILE",
        help="TOML configuration file (default: $BENCH_CONFIG; none: the embedded demo)",
    )
    group.add_argument(
        "--set",
        dest="overrides",
        metavar="SECTION.KEY=VALUE",
        action="append",
        default=[],
        help="override one key, e.g. --set reference.branch=main (repeatable)",
    )
    group.add_argument("--root", metavar="DIR", help="same as --set reference.root=DIR")
    group.add_argument("--store-url", metavar="URL", help="same as --set store.url=URL")
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="more detail in the logs (tracebacks on errors)",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")


def overrides_from(args: argparse.Namespace) -> list[str]:
    items = list(args.overrides)
    if args.root:
        items.append(f"reference.root={args.root}")
    if args.store_url:
        items.append(f"store.url={args.store_url}")
    return items


def run_main(
    parser: argparse.ArgumentParser,
    body: Callable[[argparse.Namespace], int],
    argv: Sequence[str] | None,
) -> int:
    """Parse, set up logging, run ``body``; map exceptions to exit codes. Only here we exit."""
    from bench.logs import setup_console

    args = parser.parse_args(argv)
    setup_console(-1 if args.quiet else args.verbose)
    try:
        return body(args)
    except GuardError as err:
        log.error("refused: %s", err.message)
        return int(err.exit_code)
    except BenchError as err:
        log.error("%s", err)
        log.debug("traceback:", exc_info=True)
        return int(err.exit_code)
    except KeyboardInterrupt:
        log.error("interrupted")
        return int(ExitCode.INTERRUPTED)
    except Exception:
        log.critical(
            "unexpected error (a bug; please report it with this traceback)", exc_info=True
        )
        return int(ExitCode.FAILED)


def entry(main: Callable[[Sequence[str] | None], int]) -> None:
    sys.exit(main(None))
