"""``bench-detect``: run a detector over a results tree, to backtest settings and to evaluate.

The contract (scripts depend on it)::

    bench-detect --history PATH [--online] [--format json|csv|text]
                 [--detector default|legacy] [--config FILE] [--first-dir RUN]
                 [--ref-dir RUN] [--renamings FILE]

The alerts go to stdout (``--format json``: one JSON list), everything else to stderr.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.errors import ConfigError, ExitCode

log = logging.getLogger("bench.detect")

DESCRIPTION = """\
Replay a detector over the history of the inference CSVs and print its alerts: to backtest
detector settings before the watcher uses them, and to evaluate detectors.

PATH is one of:
  a directory of run directories     <PATH>/<run>/inference_results/*.csv (or <run>/*.csv)
  a work directory                   <PATH>/snoop_results/<run>/inference_results/*.csv
  a store root                       <PATH>/inference_csvs/snoop_results/<run>/*.csv
  a long CSV file                    columns run,file,parameter,value
Runs sort by name (= by time). A CSV that cannot be read is reported on stderr (file, line,
reason) and the rest is analysed.

Without --online, the alerts raised at the newest run (the default detector having watched
the whole history before it). With --online, every alert at the run where the watcher would
have raised it, each run judged only on the runs up to it.
"""

EPILOG = """\
detectors:
  default  each parameter against its own history: robust noise (median/MAD), relative and
           absolute floors, a change must last (confirmation), direction-aware, noisy runs
           and run-wide shifts as single events, slow drifts, each change reported once
  legacy   gas_parameter_diff's rule: more than 20% against the previous or reference run

output fields (json, csv): run, file (the CSV's base name), parameter, direction
(regression|improvement), kind (step, drift, run_shift, noisy_run, new_parameter,
removed_parameter, new_file, removed_file), magnitude_pct, baseline, value, score (times the
parameter's usual noise), since (first run at the new level), reason. "*" stands for a whole
run (file and parameter) or a whole file (parameter).

--config FILE: TOML; its [detect] table sets the default detector (relative_floor,
absolute_floor, noise_multiplier, confirm_runs, window, min_history, run_fraction,
run_min_parameters, drift, ignore, overrides = { "<pattern>" = { relative_floor = ... } });
[watch] detector, first_dir, ref_dir and renamings are used when the flags are not given.

exit status:
  0    the history was analysed (whether or not there are alerts)
  2    usage error: bad flags, a path that cannot be read, an unknown run, a bad config
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench-detect",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--history", metavar="PATH", required=True, help="the results tree or long CSV"
    )
    parser.add_argument(
        "--online", action="store_true", help="every alert at the run where it is raised"
    )
    parser.add_argument(
        "--format",
        choices=("json", "csv", "text"),
        default="text",
        help="output format (default: text)",
    )
    parser.add_argument(
        "--detector",
        choices=("default", "legacy"),
        default=None,
        help="which detector (default: the config's [watch] detector, else default)",
    )
    parser.add_argument("--config", metavar="FILE", help="TOML file with a [detect] table")
    parser.add_argument(
        "--first-dir", metavar="RUN", help="oldest run of the history (default: the oldest)"
    )
    parser.add_argument(
        "--ref-dir", metavar="RUN", help="the reference run (default: the first run)"
    )
    parser.add_argument(
        "--renamings",
        metavar="FILE",
        help="`new_name,old_name` lines: renamed parameters keep their history",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more detail on stderr")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from bench.cli.common import run_main

    try:
        return run_main(build_parser(), _run, argv)
    except SystemExit as exit_:  # argparse: --help (0) or a usage error (2)
        return exit_.code if isinstance(exit_.code, int) else int(ExitCode.USAGE)


def _run(args: argparse.Namespace) -> int:
    from bench.analysis.detect import backtest, format_alerts

    config = _read_config(Path(args.config)) if args.config else {}
    watch = config.get("watch", {})
    detector = args.detector or watch.get("detector") or "default"
    if detector not in ("default", "legacy"):
        raise ConfigError(
            f"{args.config}: [watch] detector = {detector!r}: expected default or legacy"
        )
    settings = _settings(config.get("detect", {}), args.config)
    renamings_path = args.renamings or watch.get("renamings") or None
    table = _load(
        Path(args.history),
        first=args.first_dir or watch.get("first_dir") or None,
        reference=args.ref_dir or watch.get("ref_dir") or None,
        renamings=Path(renamings_path).expanduser() if renamings_path else None,
    )
    reference = args.ref_dir or watch.get("ref_dir") or None
    alerts = backtest(
        table,
        detector=detector,
        online=args.online,
        settings=settings,
        reference=reference,
    )
    sys.stdout.write(format_alerts(alerts, args.format))
    sys.stdout.flush()
    changes = [a for a in alerts if a.kind not in ("new_parameter", "removed_parameter")]
    regressions = sum(1 for a in changes if a.direction == "regression")
    log.info(
        "%s detector: %d alert(s), %d regression(s)%s",
        detector,
        len(alerts),
        regressions,
        " (every run)" if args.online else " at the newest run",
    )
    return int(ExitCode.OK)


def _read_config(path: Path) -> dict[str, Any]:
    import tomllib

    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except OSError as err:
        raise ConfigError(f"--config {path}: {err.strerror or err}") from err
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"--config {path}: not valid TOML: {err}") from err
    for section in ("detect", "watch"):
        if section in data and not isinstance(data[section], dict):
            raise ConfigError(f"--config {path}: [{section}] must be a table")
    return data


def _settings(table: Mapping[str, Any], source: str | None) -> Any:
    from bench.analysis.detect import DetectorSettings, SettingsError

    try:
        return DetectorSettings.from_mapping(table, source=f"{source} [detect]")
    except SettingsError as err:
        raise ConfigError(str(err)) from None


def _load(path: Path, *, first: str | None, reference: str | None, renamings: Path | None) -> Any:
    from bench.analysis.history import load_history, load_renamings

    table, problems = load_history(path, renamings=load_renamings(renamings))
    if problems:
        log.warning("%d file(s) could not be read and were left out", len(problems))
    runs = sorted({str(r) for r in table["run"].unique()})
    if not runs:
        raise ConfigError(f"--history {path}: no values in the history")
    for flag, run in (("--first-dir", first), ("--ref-dir", reference)):
        if run and run not in runs:
            raise ConfigError(
                f"{flag} {run}: not a run of the history at {path}",
                hint=f"its runs go from {runs[0]} to {runs[-1]}",
            )
    if first:
        table = table[table["run"].astype(str) >= first].reset_index(drop=True)
    return table


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
