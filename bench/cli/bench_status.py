"""``bench-status``: where both hosts stand, on one screen, for the person on call."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from bench.cli.common import add_config_arguments, overrides_from, run_main

EPILOG = """what it shows:
  the reference host: its state (idle; running, with the PID and the current step; crashed,
  with the clues; failed, with the failed step), what to do, the last successful run and its
  age; the store: its newest run and whether it has SUCCESS; the watcher: the last reported
  run and its age, and the reports whose delivery is unfinished.
  Nothing is changed, nothing is locked. `--json` prints the same facts for scripts (a
  versioned object, every key always present; null where it does not apply).

exit status:
  0    shown (whatever the state; a store that cannot be read is shown, not an error)
  2    usage or configuration error
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench-status",
        description="Show where the reference host, the store and the watcher stand.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print a JSON object for scripts")
    parser.add_argument("--no-store", action="store_true", help="do not ask the store")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(build_parser(), _run, argv)


def _run(args: argparse.Namespace) -> int:
    from bench.config import load_settings
    from bench.status import collect, render_json, render_text

    settings = load_settings(config_path=args.config, overrides=overrides_from(args))
    store, store_error = (None, None) if args.no_store else _open_store(settings)
    status = collect(settings, store=store, store_error=store_error)
    print(render_json(status) if args.json else render_text(status), end="")
    return 0


def _open_store(settings: Any) -> tuple[Any, str | None]:
    from bench.status import one_line
    from bench.store import open_store

    try:
        store = open_store(
            settings.store.url,
            endpoint_url=settings.store.endpoint_url,
            max_attempts=min(settings.store.max_attempts, 2),
        )
    except Exception as err:  # shown as one line, like a store that fails to answer
        return None, one_line(err)
    return store, None


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
