"""Prometheus metrics after real runs of the demo: textfiles and /metrics, parsed with
prometheus_client's parser, checked against the runs' own run.json and the watcher's report.

The runs are made by the console scripts in subprocesses (PYTHONPATH: this checkout); the
metrics are then built in-process from ``load_settings`` on the same configuration.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from bench.config import load_settings
from bench.errors import ExitCode, StoreError
from bench.metrics import (
    REFERENCE_FILE,
    WATCHER_FILE,
    after_run,
    after_tick,
    make_server,
    reference_metrics,
    watcher_metrics,
    write_textfile,
)
from bench.runs import make_run_name, parse_run_name
from bench.store import LocalStore
from bench.store.base import complete_key
from bench.watch import JOURNAL, SUMMARY
from tests.conftest import BIN, PROJECT, Host, clean_env, wait_for

STEPS = ["update-checkout", "build", "benchmark", "collect", "upload", "finish"]


# --- helpers shared with test_status ----------


def env(**extra: str) -> dict[str, str]:
    """A clean environment running this checkout's code (whatever the venv's install maps)."""
    return clean_env(PYTHONPATH=str(PROJECT), **extra)


def tool(
    host: Host, script: str, *args: str, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run one of this change's console scripts (``python -m`` until it is installed)."""
    return subprocess.run(
        [*script_command(script), "--config", str(host.config), *args],
        capture_output=True,
        text=True,
        env=env(**(extra_env or {})),
        cwd=host.root,
        timeout=120,
        check=False,
    )


def script_command(script: str) -> list[str]:
    if (BIN / script).exists():
        return [str(BIN / script)]
    return [sys.executable, "-m", "bench.cli." + script.replace("-", "_")]


def cron(host: Host, **extra: str) -> subprocess.CompletedProcess[str]:
    return host.run("cronjob", env=env(**extra))


def start_slow_run(host: Host, reap: list[Any]) -> Any:
    """A run that sits in its benchmark step until the test calls ``host.open_gate()``."""
    host.configure(benchmark_command=host.gated_benchmark())
    proc = host.popen("cronjob", env=env())
    reap.append(proc)

    def in_benchmark() -> bool:
        for path in (host.root / "snoop_results").glob("*/run.json"):
            try:
                record = json.loads(path.read_text())
            except ValueError:
                continue
            if record["status"] == "running" and record["steps"][2]["status"] == "running":
                return True
        return False

    wait_for(in_benchmark, what="the slow run to reach its benchmark step")
    return proc


def settings_of(host: Host) -> Any:
    return load_settings(config_path=host.config, environ={})


class WithMetrics:
    """A settings double: the real settings, with ``metrics.textfile_dir`` set."""

    def __init__(self, settings: Any, directory: Any) -> None:
        self._settings = settings
        self.metrics = SimpleNamespace(textfile_dir=directory, port=9108)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._settings, name)


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    from prometheus_client.parser import text_string_to_metric_families

    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def scrape(registry: Any) -> Samples:
    from prometheus_client import generate_latest

    return parse(generate_latest(registry).decode())


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def enum_of(samples: Samples, name: str, label: str) -> dict[str, float]:
    return {dict(k[1])[label]: v for k, v in samples.items() if k[0] == name}


def stamp(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def write_report(
    watch_root: Path, run: str, *, complete: bool, counts: dict[str, int] | None = None
) -> Path:
    """A watcher report directory as a tick leaves it; ``complete=False``: the tick stopped
    after sending the summary's ``sending`` entry (a pending delivery)."""
    report = watch_root / "reports" / run
    report.mkdir(parents=True)
    if counts is not None:
        summary = {"format": 1, "run": run, "counts": counts, "changes": []}
        (report / SUMMARY).write_text(json.dumps(summary))
    entries = [
        {"item": "analysing", "state": "sending", "mark": "1"},
        {"item": "analysing", "state": "sent", "ref": "m1"},
        {"item": "summary", "state": "sending", "mark": "2"},
    ]
    if complete:
        entries += [
            {"item": "summary", "state": "sent", "ref": "m2"},
            {"item": "_report", "state": "sent", "at": "2026-01-02T03:04:05+00:00"},
        ]
    (report / JOURNAL).write_text("".join(json.dumps(e) + "\n" for e in entries))
    return report


def get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status, answer.headers["Content-Type"], answer.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.headers["Content-Type"], err.read().decode()


# --- the reference host, after real runs ----------


def test_textfile_after_a_successful_run(host: Host, tmp_path: Path) -> None:
    """After a successful run the hook's textfile says idle/success with run.json's times."""
    done = cron(host)
    assert done.returncode == 0, done.stderr
    record = host.run_json(host.only_run_dir())
    directory = tmp_path / "textfiles"

    written = after_run(WithMetrics(settings_of(host), directory))

    assert written == directory / REFERENCE_FILE
    assert sorted(p.name for p in directory.iterdir()) == [REFERENCE_FILE]  # no temp left
    samples = parse(written.read_text())
    assert enum_of(samples, "bench_reference_state", "state") == {
        "idle": 1,
        "running": 0,
        "crashed": 0,
        "failed": 0,
        "unknown": 0,
    }
    assert enum_of(samples, "bench_last_run_status", "status") == {
        "success": 1,
        "failed": 0,
        "interrupted": 0,
        "partial": 0,
    }
    assert value(samples, "bench_last_run_start_timestamp_seconds") == stamp(record["started_at"])
    assert value(samples, "bench_last_run_end_timestamp_seconds") == stamp(record["ended_at"])
    assert value(samples, "bench_last_success_timestamp_seconds") == stamp(record["ended_at"])
    durations = enum_of(samples, "bench_last_run_step_duration_seconds", "step")
    assert durations == {s["name"]: s["wall_s"] for s in record["steps"]}
    assert set(durations) == set(STEPS)
    assert value(samples, "bench_anomalies_total") == 0
    assert value(samples, "bench_current_run_start_timestamp_seconds") is None


@pytest.mark.slow
def test_metrics_after_a_failed_run_keep_the_last_success(host: Host) -> None:
    """A failed build: state failed, last run failed with its steps run; last success kept."""
    assert cron(host).returncode == 0
    first = host.run_json(host.only_run_dir())
    host.configure(build_command="exit 3")
    failed = cron(host)
    assert failed.returncode == ExitCode.FAILED, failed.stderr
    record = host.run_json(host.run_dirs()[-1])
    assert record["status"] == "failed"

    samples = scrape(reference_metrics(settings_of(host)))

    assert value(samples, "bench_reference_state", state="failed") == 1
    assert value(samples, "bench_reference_state", state="idle") == 0
    assert value(samples, "bench_last_run_status", status="failed") == 1
    assert value(samples, "bench_last_run_status", status="success") == 0
    assert value(samples, "bench_last_run_start_timestamp_seconds") == stamp(record["started_at"])
    assert value(samples, "bench_last_run_end_timestamp_seconds") == stamp(record["ended_at"])
    durations = enum_of(samples, "bench_last_run_step_duration_seconds", "step")
    assert set(durations) == {"update-checkout", "build"}
    assert durations["build"] == record["steps"][1]["wall_s"]
    assert value(samples, "bench_last_success_timestamp_seconds") == stamp(first["ended_at"])
    assert value(samples, "bench_current_run_start_timestamp_seconds") is None


@pytest.mark.slow
def test_metrics_during_and_after_a_guarded_run(host: Host, reap: list[Any]) -> None:
    """A run refused while another runs: running state and one anomaly, then idle/success."""
    first = start_slow_run(host, reap)
    guarded = cron(host)
    assert guarded.returncode == ExitCode.GUARDED_RUNNING, guarded.stderr
    record = host.run_json(host.only_run_dir())

    during = scrape(reference_metrics(settings_of(host)))

    assert value(during, "bench_reference_state", state="running") == 1
    assert value(during, "bench_anomalies_total") == 1
    assert value(during, "bench_current_run_start_timestamp_seconds") == stamp(record["started_at"])
    assert enum_of(during, "bench_last_run_status", "status") == {}  # no run has ended yet

    host.open_gate()
    _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    after = scrape(reference_metrics(settings_of(host)))
    assert value(after, "bench_reference_state", state="idle") == 1
    assert value(after, "bench_last_run_status", status="success") == 1
    assert value(after, "bench_anomalies_total") == 1
    assert value(after, "bench_current_run_start_timestamp_seconds") is None


# --- the watcher host ----------


@pytest.mark.slow
def test_watcher_metrics_after_a_real_report(host: Host) -> None:
    """After a real tick: the report's counts, no pending delivery, lag 0; then a newer run in
    the store shows as lag and a stopped delivery as pending."""
    assert cron(host).returncode == 0
    assert cron(host, BENCH_DEMO_SLOWDOWN="5").returncode == 0
    newest = host.run_dirs()[-1].name
    # The legacy rule: its alerts show on a two-run history (the default detector needs more).
    tick = host.run("watch_regressions", env=env(BENCH_WATCH_DETECTOR="legacy"))
    assert tick.returncode == ExitCode.REGRESSIONS, tick.stderr
    settings = settings_of(host)
    summary = json.loads((settings.watch.root / "reports" / newest / SUMMARY).read_text())
    store = LocalStore(host.root / "store")

    samples = scrape(watcher_metrics(settings, store=store))

    reported = parse_run_name(newest).timestamp.astimezone().timestamp()
    assert value(samples, "bench_watch_last_reported_run_timestamp_seconds") == reported
    counts = summary["counts"]
    assert counts["regressions"] >= 1
    assert value(samples, "bench_watch_parameters_tracked") == counts["parameters"]
    assert value(samples, "bench_watch_alerts", direction="regression") == counts["regressions"]
    assert value(samples, "bench_watch_alerts", direction="improvement") == counts["improvements"]
    assert value(samples, "bench_watch_unreadable_files") == 0
    assert value(samples, "bench_watch_pending_deliveries") == 0
    assert value(samples, "bench_watch_store_up") == 1
    assert value(samples, "bench_watch_lag_seconds") == 0

    later = make_run_name(parse_run_name(newest).timestamp + timedelta(hours=2), "v1.0-9-gabc")
    store.put_bytes(complete_key(later, "SUCCESS"), b"1\n")
    write_report(settings.watch.root, later.name, complete=False)
    samples = scrape(watcher_metrics(settings, store=store))
    assert value(samples, "bench_watch_lag_seconds") == 7200
    assert value(samples, "bench_watch_pending_deliveries") == 1


def test_after_tick_writes_the_watcher_textfile(tmp_path: Path) -> None:
    """after_tick writes bench_watcher.prom from the watcher's files and one store listing."""
    run = "_snoop_20260101_2000_v1.0-0-gabc"
    settings = load_settings(environ={}, cwd=tmp_path, overrides=[f"reference.root={tmp_path}"])
    (settings.watch.root).mkdir()
    (settings.watch.root / "last_known_dir").write_text(run + "\n")
    counts = {"parameters": 36, "regressions": 4, "improvements": 2, "unreadable_files": 1}
    write_report(settings.watch.root, run, complete=True, counts=counts)
    store = LocalStore(tmp_path / "store")
    store.put_bytes(complete_key(parse_run_name(run), "SUCCESS"), b"1\n")
    directory = tmp_path / "textfiles"

    written = after_tick(WithMetrics(settings, directory), store=store)

    assert written == directory / WATCHER_FILE
    samples = parse(written.read_text())
    assert value(samples, "bench_watch_last_reported_run_timestamp_seconds") == (
        datetime(2026, 1, 1, 20, 0).astimezone().timestamp()
    )
    assert value(samples, "bench_watch_parameters_tracked") == 36
    assert value(samples, "bench_watch_alerts", direction="regression") == 4
    assert value(samples, "bench_watch_alerts", direction="improvement") == 2
    assert value(samples, "bench_watch_unreadable_files") == 1
    assert value(samples, "bench_watch_pending_deliveries") == 0
    assert value(samples, "bench_watch_store_up") == 1
    assert value(samples, "bench_watch_lag_seconds") == 0


def test_watcher_metrics_survive_a_failing_store(tmp_path: Path) -> None:
    """A store that fails gives bench_watch_store_up 0 and no lag, not an exception."""

    class Broken:
        def newest_successful_run(self, *, after: Any = None) -> Any:
            raise StoreError("cannot reach the S3 endpoint http://127.0.0.1:9 (ConnectError)")

    settings = load_settings(environ={}, cwd=tmp_path, overrides=[f"reference.root={tmp_path}"])

    samples = scrape(watcher_metrics(settings, store=Broken()))

    assert value(samples, "bench_watch_store_up") == 0
    assert value(samples, "bench_watch_lag_seconds") is None
    assert value(samples, "bench_watch_pending_deliveries") == 0


# --- writing the textfile ----------


def test_write_textfile_renames_a_complete_temporary_file(
    host: Host, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file is replaced by a rename of a complete temporary file in the same directory:
    at the moment of the rename the target still holds the previous complete content."""
    path = tmp_path / "textfiles" / REFERENCE_FILE
    registry = reference_metrics(settings_of(host))
    write_textfile(registry, path)
    before = path.read_text()
    renames: list[tuple[str, str, str, str]] = []
    real_rename = os.rename

    def spy(src: Any, dst: Any) -> None:
        renames.append((str(src), str(dst), Path(src).read_text(), Path(dst).read_text()))
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", spy)
    (host.root / "anomalies").write_text("[2026-01-01 20:00:00] previous run not over.\n")
    write_textfile(registry, path)

    [(src, dst, new_content, old_content)] = renames
    assert dst == str(path) and Path(src).parent == path.parent and src != dst
    assert not src.endswith(".prom")  # node_exporter never reads the temporary file
    assert old_content == before
    assert new_content == path.read_text()
    assert value(parse(new_content), "bench_anomalies_total") == 1
    assert sorted(p.name for p in path.parent.iterdir()) == [REFERENCE_FILE]


def test_a_reader_never_sees_a_partial_textfile(host: Host, tmp_path: Path) -> None:
    """A reader polling the file while it is rewritten 300 times always reads it whole."""
    import threading

    path = tmp_path / REFERENCE_FILE
    registry = reference_metrics(settings_of(host))
    write_textfile(registry, path)
    whole = path.read_text()
    seen: list[str] = []
    done = threading.Event()

    def reader() -> None:
        while not done.is_set():
            seen.append(path.read_text())

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for _ in range(300):
            write_textfile(registry, path)
    finally:
        done.set()
        thread.join()

    assert len(seen) > 10
    assert {len(text) for text in seen} == {len(whole)}


def test_a_failed_write_leaves_the_previous_textfile(host: Host, tmp_path: Path) -> None:
    """A collection that fails midway leaves the old file whole and no temporary file."""
    from prometheus_client import CollectorRegistry

    path = tmp_path / REFERENCE_FILE
    write_textfile(reference_metrics(settings_of(host)), path)
    before = path.read_text()

    class Exploding:
        def collect(self) -> Any:
            raise OSError(28, "No space left on device")

    broken = CollectorRegistry()
    broken.register(Exploding())
    with pytest.raises(OSError):
        write_textfile(broken, path)

    assert path.read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "work") == [
        "bench.toml",
        REFERENCE_FILE,
    ]


def test_hooks_never_raise(host: Host, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A textfile directory that cannot be used is a warning, not a failure of the run."""
    not_a_dir = tmp_path / "a-file"
    not_a_dir.write_text("")

    assert after_run(WithMetrics(settings_of(host), not_a_dir)) is None
    assert after_tick(WithMetrics(settings_of(host), not_a_dir), store=None) is None
    assert "could not write the metrics file" in caplog.text


def test_disabled_hooks_do_nothing_and_import_no_prometheus_client(tmp_path: Path) -> None:
    """Without metrics.textfile_dir (or without a metrics section) the hooks write nothing and
    prometheus_client is not imported: an idle watcher tick stays cheap."""
    code = """
import sys
from types import SimpleNamespace
from bench.metrics import after_run, after_tick
bare = SimpleNamespace(reference=None, watch=None)
empty = SimpleNamespace(metrics=SimpleNamespace(textfile_dir="", port=9108))
assert after_run(bare) is None and after_tick(bare, store=None) is None
assert after_run(empty) is None and after_tick(empty, store=object()) is None
assert "prometheus_client" not in sys.modules, "imported"
print("ok")
"""
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env(),
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "ok\n"
    assert list(tmp_path.iterdir()) == []


def test_bench_metrics_write(host: Host, tmp_path: Path) -> None:
    """`bench-metrics write` writes both files, parseable; without a directory: exit 2."""
    directory = tmp_path / "textfiles"

    done = tool(host, "bench-metrics", "write", "--textfile-dir", str(directory))

    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        str(directory / REFERENCE_FILE),
        str(directory / WATCHER_FILE),
    ]
    reference = parse((directory / REFERENCE_FILE).read_text())
    assert value(reference, "bench_reference_state", state="idle") == 1
    watcher = parse((directory / WATCHER_FILE).read_text())
    assert value(watcher, "bench_watch_store_up") == 1
    assert value(watcher, "bench_watch_lag_seconds") == 0  # an empty store: nothing to report

    missing = tool(host, "bench-metrics", "write")
    assert missing.returncode == ExitCode.USAGE
    assert "--textfile-dir" in missing.stderr and "metrics.textfile_dir" in missing.stderr


# --- serving ----------


def test_metrics_and_health_over_http(host: Host) -> None:
    """/metrics serves both hosts' metrics read at each scrape; /health answers 200 and JSON."""
    import threading

    assert cron(host).returncode == 0
    run = host.only_run_dir().name
    server = make_server(settings_of(host), bind="127.0.0.1", port=0, store=None)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        code, content_type, text = get(server.url + "/metrics")
        assert code == 200 and content_type.startswith("text/plain")
        samples = parse(text)
        assert value(samples, "bench_reference_state", state="idle") == 1
        assert value(samples, "bench_last_run_status", status="success") == 1
        assert value(samples, "bench_anomalies_total") == 0
        assert value(samples, "bench_watch_pending_deliveries") == 0

        (host.root / "anomalies").write_text("[2026-01-01 20:00:00] previous run not over.\n")
        _, _, text = get(server.url + "/metrics")
        assert value(parse(text), "bench_anomalies_total") == 1  # read again at each scrape

        code, content_type, body = get(server.url + "/health")
        assert code == 200 and content_type == "application/json"
        health = json.loads(body)
        assert health["status"] == "ok"
        assert health["reference"]["state"] == "idle"
        assert health["reference"]["last_success"] == run
        assert health["watcher"]["last_reported_run"] is None

        assert get(server.url + "/nothing")[0] == 404
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_serve_stops_cleanly_on_sigterm(host: Host, reap: list[Any]) -> None:
    """`bench-metrics serve --port 0` prints its URL, answers /health, exits 0 on SIGTERM."""
    proc = subprocess.Popen(
        [
            *script_command("bench-metrics"),
            *("--config", str(host.config), "serve", "--port", "0"),
            *("--bind", "127.0.0.1", "--no-store"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env(),
        cwd=host.root,
    )
    reap.append(proc)
    assert proc.stdout is not None
    first = proc.stdout.readline()
    match = re.fullmatch(r"serving (http://127\.0\.0\.1:(\d+))/metrics and \1/health\n", first)
    assert match, first
    base, port = match[1], int(match[2])

    code, _, body = get(base + "/health")
    assert code == 200 and json.loads(body)["status"] == "ok"
    code, _, text = get(base + "/metrics")
    assert code == 200 and value(parse(text), "bench_watch_store_up") is None  # --no-store

    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert out == "stopped\n"
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_serve_on_a_port_in_use_fails_with_one_line(host: Host) -> None:
    """A port already taken: exit 1 and a line naming the address and the fix."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        done = tool(host, "bench-metrics", "serve", "--port", str(port), "--no-store")

    assert done.returncode == ExitCode.FAILED
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr
