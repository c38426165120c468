"""``bench-metrics``: both hosts' Prometheus metrics, as node_exporter textfiles or over HTTP."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from bench.cli.common import add_config_arguments, overrides_from, run_main

EPILOG = """metrics (gauges unless said otherwise):
  reference host (bench_reference.prom)
    bench_reference_state{state}                  1 for idle|running|crashed|failed|unknown
    bench_current_run_start_timestamp_seconds     while a run is in progress
    bench_last_run_status{status}                 1 for success|failed|interrupted|partial
    bench_last_run_start_timestamp_seconds, bench_last_run_end_timestamp_seconds
    bench_last_run_step_duration_seconds{step}
    bench_last_success_timestamp_seconds
    bench_anomalies_total                         counter: refused runs (anomalies lines)
  watcher host (bench_watcher.prom)
    bench_watch_last_reported_run_timestamp_seconds
    bench_watch_parameters_tracked, bench_watch_alerts{direction}, bench_watch_unreadable_files
    bench_watch_pending_deliveries
    bench_watch_store_up, bench_watch_lag_seconds  with the store (not with --no-store)

exit status:
  0    written (serve: stopped by SIGTERM or SIGINT)
  1    failed: the directory cannot be written, the address cannot be used
  2    usage or configuration error (write: no directory given or configured)
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench-metrics",
        description="Prometheus metrics of the reference host (its work directory) and of the "
        "watcher (its reports), read from their files: `write` writes the textfiles that "
        "node_exporter's textfile collector reads, `serve` exposes /metrics and /health.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_arguments(parser)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    write = commands.add_parser(
        "write",
        help="write bench_reference.prom and bench_watcher.prom, atomically",
        description="Write bench_reference.prom and bench_watcher.prom into the directory, "
        "atomically (a temporary file, then a rename).",
    )
    write.add_argument(
        "--textfile-dir", metavar="DIR", help="where to write (default: metrics.textfile_dir)"
    )
    serve = commands.add_parser(
        "serve",
        help="serve /metrics and /health over HTTP until SIGTERM",
        description="Serve /metrics (both hosts' metrics, read at each scrape) and /health "
        "(200 and a JSON body) until SIGTERM or SIGINT.",
    )
    serve.add_argument(
        "--port", type=int, metavar="N", help="port (default: metrics.port, 9108; 0: any free)"
    )
    serve.add_argument(
        "--bind", default="127.0.0.1", metavar="ADDR", help="address (default: 127.0.0.1)"
    )
    for sub in (write, serve):
        sub.add_argument(
            "--no-store",
            action="store_true",
            help="do not ask the store (no bench_watch_lag_seconds, no bench_watch_store_up)",
        )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(build_parser(), _run, argv)


def _run(args: argparse.Namespace) -> int:
    from bench.config import load_settings

    settings = load_settings(config_path=args.config, overrides=overrides_from(args))
    store = None if args.no_store else _open_store(settings)
    if args.command == "write":
        return _write(settings, args, store)
    return _serve(settings, args, store)


def _open_store(settings: Any) -> Any:
    from bench.cli.common import log
    from bench.errors import BenchError
    from bench.store import open_store

    try:
        return open_store(
            settings.store.url,
            endpoint_url=settings.store.endpoint_url,
            max_attempts=min(settings.store.max_attempts, 2),
        )
    except BenchError as err:
        log.warning("the store cannot be used, metrics without it: %s", err)
        return None


def _write(settings: Any, args: argparse.Namespace, store: Any) -> int:
    from pathlib import Path

    from bench.errors import BenchError, ConfigError, describe_os_error
    from bench.metrics import (
        REFERENCE_FILE,
        WATCHER_FILE,
        reference_metrics,
        textfile_dir,
        watcher_metrics,
        write_textfile,
    )

    directory = Path(args.textfile_dir).expanduser() if args.textfile_dir else None
    directory = directory or textfile_dir(settings)
    if directory is None:
        raise ConfigError(
            "no directory to write the metrics into",
            hint="give --textfile-dir DIR or set metrics.textfile_dir",
        )
    for name, registry in (
        (REFERENCE_FILE, reference_metrics(settings)),
        (WATCHER_FILE, watcher_metrics(settings, store=store)),
    ):
        try:
            write_textfile(registry, directory / name)
        except OSError as err:
            raise BenchError(
                "cannot write the metrics: " + describe_os_error(err, directory / name)
            ) from err
        print(directory / name)
    return 0


def _serve(settings: Any, args: argparse.Namespace, store: Any) -> int:
    from bench.errors import BenchError
    from bench.metrics import DEFAULT_PORT, make_server, serve_until_stopped

    port = args.port
    if port is None:
        port = getattr(getattr(settings, "metrics", None), "port", DEFAULT_PORT)
    try:
        server = make_server(settings, bind=args.bind, port=port, store=store)
    except OSError as err:
        raise BenchError(
            f"cannot listen on {args.bind}:{port}: {err.strerror or err}",
            hint="choose another --port (metrics.port) or stop what uses it",
        ) from err
    print(f"serving {server.url}/metrics and {server.url}/health", flush=True)
    serve_until_stopped(server)
    print("stopped", flush=True)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
