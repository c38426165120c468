"""``python -m bench.evaluation``: score the legacy rule and the default detector side by side
and write docs/detection.md (prints the main table)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.evaluation",
        description=(
            "Replay the legacy rule and the default detector over the SAP HANA data set and "
            "labelled synthetic histories, score them (precision, recall, F1, false alarms "
            "per 1,000 parameter-runs, repeats, mean delay) and write docs/detection.md."
        ),
    )
    parser.add_argument(
        "--output",
        metavar="FILE",
        default=str(PROJECT / "docs" / "detection.md"),
        help="where to write the report (default: docs/detection.md; '-' for stdout only)",
    )
    parser.add_argument(
        "--sap",
        metavar="DIR",
        default=None,
        help="the SAP HANA data set (default: ../shared/datasets/sap-hana-small)",
    )
    parser.add_argument(
        "--seeds", type=int, default=10, help="synthetic histories in the main table"
    )
    parser.add_argument(
        "--variant-seeds", type=int, default=4, help="synthetic histories per variant"
    )
    parser.add_argument("--config", metavar="FILE", help="TOML with a [detect] table to evaluate")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from bench.analysis.detect import DetectorSettings, SettingsError
    from bench.evaluation import MAIN_SEEDS, VARIANT_SEEDS, main_table, render_markdown, run_all

    args = build_parser().parse_args(argv)
    settings = DetectorSettings()
    if args.config:
        import tomllib

        try:
            with open(args.config, "rb") as handle:
                settings = DetectorSettings.from_mapping(
                    tomllib.load(handle).get("detect", {}), source=f"{args.config} [detect]"
                )
        except (OSError, tomllib.TOMLDecodeError, SettingsError) as err:
            print(f"python -m bench.evaluation: --config {args.config}: {err}", file=sys.stderr)
            return 2
    seeds = range(MAIN_SEEDS[0], MAIN_SEEDS[0] + args.seeds)
    variant_seeds = range(VARIANT_SEEDS[0], VARIANT_SEEDS[0] + args.variant_seeds)
    started = time.perf_counter()
    try:
        sap, synthetic, variants = run_all(
            sap_path=Path(args.sap) if args.sap else None,
            seeds=seeds,
            variant_seeds=variant_seeds,
            settings=settings,
            progress=lambda text: print(f"evaluating: {text}", file=sys.stderr),
        )
    except FileNotFoundError as err:
        print(f"python -m bench.evaluation: {err}", file=sys.stderr)
        return 2
    print(main_table([sap, synthetic]), end="")
    text = render_markdown(sap, synthetic, variants, settings=settings)
    if args.output != "-":
        output = Path(args.output)
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text, encoding="utf-8")
        print(f"wrote {output} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
