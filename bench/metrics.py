"""Prometheus metrics of both hosts: textfiles for node_exporter, and ``bench-metrics serve``.

The values come from the files (:mod:`bench.status` reads them): the reference host's work
directory (``bench_reference.prom``) and the watcher's state (``bench_watcher.prom``). A
registry returned here is *live*: its collector reads the files again each time it is
collected, so ``/metrics`` is fresh on every scrape.

``after_run`` and ``after_tick`` are the hooks of ``cronjob`` and ``watch_regressions``: when
``metrics.textfile_dir`` names a directory they write the textfile there, atomically (a
temporary file in the same directory, then a rename: node_exporter reads only ``*.prom``
files, and sees the old file or the new one, never half of one). A metrics failure is logged,
never raised: it must not change a run's outcome. prometheus_client is imported only when a
registry is built, so a watcher tick with metrics disabled does not pay for it.

Run names carry their start time to the minute, in the reference host's local time; they are
read here in this host's local time zone (give both hosts the same one).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Iterable
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.status import one_line, parse_time, reference_status, run_time, watcher_status

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric

log = logging.getLogger(__name__)

REFERENCE_FILE = "bench_reference.prom"
WATCHER_FILE = "bench_watcher.prom"
DEFAULT_PORT = 9108
STATES = ("idle", "running", "crashed", "failed", "unknown")
RUN_STATUSES = ("success", "failed", "interrupted", "partial")
DIRECTIONS = ("regression", "improvement")


class _Live:
    """A collector that builds its metric families again at each collection."""

    def __init__(self, families: Callable[[], Iterable[Metric]]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return list(self._families())


def _timestamp(iso: str | None) -> float | None:
    when = parse_time(iso)
    return None if when is None else when.timestamp()


# --- the reference host ----------


def reference_families(settings: Any) -> list[Metric]:
    """The reference host's metric families, from its work directory as it is now."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    ref = reference_status(settings)
    state = GaugeMetricFamily(
        "bench_reference_state",
        "State of the reference host's work directory: 1 for the current state "
        "(unknown: the work directory is missing or unreadable).",
        labels=["state"],
    )
    for name in STATES:
        state.add_metric([name], 1.0 if ref["state"] == name else 0.0)
    families: list[Metric] = [state]

    current_start = _timestamp(ref["current_run_started_at"])
    if ref["state"] == "running" and current_start is not None:
        families.append(
            GaugeMetricFamily(
                "bench_current_run_start_timestamp_seconds",
                "Start of the run in progress (Unix time); absent when no run is in progress.",
                value=current_start,
            )
        )

    last = ref["last_run"]
    status = GaugeMetricFamily(
        "bench_last_run_status",
        "Outcome of the last finished run: 1 for its status (absent before the first run).",
        labels=["status"],
    )
    steps = GaugeMetricFamily(
        "bench_last_run_step_duration_seconds",
        "Wall-clock duration of each step of the last finished run (steps not run: absent).",
        labels=["step"],
    )
    families += [status, steps]
    if last is not None:
        for name in RUN_STATUSES:
            status.add_metric([name], 1.0 if last["status"] == name else 0.0)
        for key, metric, text in (
            ("started_at", "bench_last_run_start_timestamp_seconds", "Start"),
            ("ended_at", "bench_last_run_end_timestamp_seconds", "End"),
        ):
            value = _timestamp(last[key])
            if value is not None:
                families.append(
                    GaugeMetricFamily(
                        metric, f"{text} of the last finished run (Unix time).", value
                    )
                )
        for step in last["steps"]:
            if step["duration_s"] is not None and step["status"] not in {"pending", "skipped"}:
                steps.add_metric([str(step["name"])], float(step["duration_s"]))

    success = ref["last_success"]
    success_end = _timestamp(success["ended_at"]) if success else None
    if success_end is not None:
        families.append(
            GaugeMetricFamily(
                "bench_last_success_timestamp_seconds",
                "End of the last successful run, the one last_run_dir names (Unix time).",
                value=success_end,
            )
        )
    anomalies = CounterMetricFamily(
        "bench_anomalies",
        "Refused runs logged in the work directory's anomalies file (its lines).",
    )
    anomalies.add_metric([], float(ref["anomalies"]))
    families.append(anomalies)
    return families


# --- the watcher host ----------


def watcher_families(settings: Any, *, store: Any = None) -> list[Metric]:
    """The watcher's metric families; with a store, the lag (one listing request)."""
    from prometheus_client.core import GaugeMetricFamily

    from bench.runs import InvalidRunName, parse_run_name

    now = datetime.now().astimezone()
    watch = watcher_status(settings, now=now)
    families: list[Metric] = []
    last = None
    if watch["last_reported_run"]:
        try:
            last = parse_run_name(watch["last_reported_run"])
        except InvalidRunName:
            last = None
    if last is not None:
        families.append(
            GaugeMetricFamily(
                "bench_watch_last_reported_run_timestamp_seconds",
                "Start of the newest run fully reported (Unix time, from its name).",
                value=run_time(last).timestamp(),
            )
        )
    counts = watch["counts"]
    if counts is not None:
        families.append(
            GaugeMetricFamily(
                "bench_watch_parameters_tracked",
                "Parameters compared in the last report.",
                value=float(counts["parameters"]),
            )
        )
        alerts = GaugeMetricFamily(
            "bench_watch_alerts",
            "Parameters with an alert in the last report, by direction.",
            labels=["direction"],
        )
        alerts.add_metric(["regression"], float(counts["regressions"]))
        alerts.add_metric(["improvement"], float(counts["improvements"]))
        families.append(alerts)
        families.append(
            GaugeMetricFamily(
                "bench_watch_unreadable_files",
                "Inference CSV files that could not be read in the last report.",
                value=float(counts["unreadable_files"]),
            )
        )
    families.append(
        GaugeMetricFamily(
            "bench_watch_pending_deliveries",
            "Reports whose delivery is not finished (journal without its final entry).",
            value=float(len(watch["pending_deliveries"])),
        )
    )
    if store is not None:
        families += _lag_families(store, last, now)
    return families


def _lag_families(store: Any, last: Any, now: datetime) -> list[Metric]:
    from prometheus_client.core import GaugeMetricFamily

    up = GaugeMetricFamily(
        "bench_watch_store_up", "1 if the store answered the last listing, else 0."
    )
    try:
        newest = store.newest_successful_run(after=last)
    except Exception as err:
        log.warning("metrics: the store did not answer: %s", one_line(err))
        up.add_metric([], 0.0)
        return [up]
    up.add_metric([], 1.0)
    if newest is None:
        lag = 0.0
    elif last is None:
        lag = (now - run_time(newest)).total_seconds()
    else:
        lag = (run_time(newest) - run_time(last)).total_seconds()
    lag_family = GaugeMetricFamily(
        "bench_watch_lag_seconds",
        "Start of the newest successful run in the store minus that of the last reported run "
        "(0: nothing left to report; nothing reported yet: the newest run's age).",
        value=max(lag, 0.0),
    )
    return [up, lag_family]


# --- registries ----------


def reference_metrics(settings: Any) -> CollectorRegistry:
    """A registry of the reference host's metrics (read again at each collection)."""
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Live(lambda: reference_families(settings)))
    return registry


def watcher_metrics(settings: Any, *, store: Any = None) -> CollectorRegistry:
    """A registry of the watcher's metrics; ``store`` adds the lag and ``bench_watch_store_up``
    (one ``store.newest_successful_run(after=last reported)`` per collection)."""
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Live(lambda: watcher_families(settings, store=store)))
    return registry


def all_metrics(settings: Any, *, store: Any = None) -> CollectorRegistry:
    """Both hosts' metrics in one registry (what ``bench-metrics serve`` exposes)."""
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Live(lambda: reference_families(settings)))
    registry.register(_Live(lambda: watcher_families(settings, store=store)))
    return registry


def write_textfile(registry: CollectorRegistry, path: str | os.PathLike[str]) -> None:
    """Write ``registry`` in the text format node_exporter's textfile collector reads, atomically.

    prometheus_client's ``write_to_textfile`` writes ``<path>.<pid>.<thread>`` in the same
    directory, then renames it over ``path`` (and removes it if the collection or the write
    fails): a reader sees the old file or the new one, never a partial one.
    """
    from prometheus_client import write_to_textfile

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(target), registry)


# --- the hooks ----------


def textfile_dir(settings: Any) -> Path | None:
    """``metrics.textfile_dir``, or None when unset or empty (metrics disabled)."""
    value = getattr(getattr(settings, "metrics", None), "textfile_dir", None)
    if value is None or str(value) == "":
        return None
    return Path(value).expanduser()


def after_run(settings: Any) -> Path | None:
    """Hook of ``cronjob``/``bench-run``, after a run or a refusal: write
    ``<metrics.textfile_dir>/bench_reference.prom``. Returns the file written, or None
    (disabled, or failed: logged as a warning, never raised)."""
    directory = textfile_dir(settings)
    if directory is None:
        return None
    return _write_safely(lambda: reference_metrics(settings), directory / REFERENCE_FILE)


def after_tick(settings: Any, *, store: Any) -> Path | None:
    """Hook of ``watch_regressions``, after every tick: write
    ``<metrics.textfile_dir>/bench_watcher.prom`` (with ``store``: one more listing request
    for the lag). Returns the file written, or None (disabled, or failed: logged)."""
    directory = textfile_dir(settings)
    if directory is None:
        return None
    return _write_safely(lambda: watcher_metrics(settings, store=store), directory / WATCHER_FILE)


def _write_safely(registry: Callable[[], CollectorRegistry], path: Path) -> Path | None:
    try:
        write_textfile(registry(), path)
    except Exception as err:  # metrics must never change the outcome of a run or a tick
        log.warning("could not write the metrics file %s: %s", path, err)
        log.debug("traceback:", exc_info=True)
        return None
    log.debug("metrics written to %s", path)
    return path


# --- bench-metrics serve ----------


def health(settings: Any) -> dict[str, Any]:
    """The body of ``/health``: the exporter works, and the two hosts' headline state."""
    ref = reference_status(settings)
    watch = watcher_status(settings)
    success = ref["last_success"]
    return {
        "status": "ok",
        "reference": {
            "state": ref["state"],
            "current_run": ref["current_run"],
            "current_step": ref["current_step"],
            "last_success": success["run"] if success else None,
            "error": ref["error"],
        },
        "watcher": {
            "last_reported_run": watch["last_reported_run"],
            "pending_deliveries": len(watch["pending_deliveries"]),
            "error": watch["error"],
        },
    }


class MetricsServer(ThreadingHTTPServer):
    """``/metrics`` (both registries, collected at each scrape) and ``/health``."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], settings: Any, registry: CollectorRegistry):
        import socket

        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.settings = settings
        self.registry = registry
        super().__init__(address, _Handler)

    @property
    def url(self) -> str:
        address, port = self.server_address[:2]
        host = address.decode() if isinstance(address, bytes) else str(address)
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}"


class _Handler(BaseHTTPRequestHandler):
    server: MetricsServer
    server_version = "bench-metrics"

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            from prometheus_client.exposition import choose_encoder

            encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
            try:
                body = encoder(self.server.registry)
            except Exception as err:
                log.error("collecting the metrics failed: %s", err, exc_info=True)
                self._send(500, f"collecting the metrics failed: {err}\n".encode(), "text/plain")
                return
            self._send(200, body, content_type)
        elif path == "/health":
            body = json.dumps(health(self.server.settings), sort_keys=True).encode()
            self._send(200, body + b"\n", "application/json")
        elif path == "/":
            page = b'<html><body><a href="/metrics">/metrics</a> <a href="/health">/health</a>'
            self._send(200, page + b"</body></html>\n", "text/html")
        else:
            self._send(404, b"not found: try /metrics or /health\n", "text/plain")

    def _send(self, code: int, body: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)


def make_server(settings: Any, *, bind: str, port: int, store: Any = None) -> MetricsServer:
    """A server on ``bind:port`` (0: a free port; see ``.url``), not yet serving."""
    return MetricsServer((bind, port), settings, all_metrics(settings, store=store))


def serve_until_stopped(server: MetricsServer) -> None:
    """Serve until SIGTERM or SIGINT, then close the socket (from the main thread: signal
    handlers run there)."""
    import signal

    def request_stop(_signum: int, _frame: object) -> None:
        # shutdown() waits for serve_forever() to return: never call it from its own thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        server.server_close()
