"""`bench-status` in each state of the reference host and with a pending watcher delivery,
as text and as JSON, produced by real runs of the demo (subprocesses)."""

from __future__ import annotations

import json
import os
import socket
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from bench.config import load_settings
from bench.errors import ExitCode, StoreError
from bench.runs import parse_run_name
from bench.status import collect, render_json, render_text
from bench.store import LocalStore
from bench.store.base import complete_key
from tests.conftest import Host
from tests.test_metrics import cron, start_slow_run, tool, write_report

#: Every key of the JSON object, in every state (null where it does not apply).
KEYS = {
    "format",
    "generated_at",
    "reference",
    "reference.root",
    "reference.state",
    "reference.error",
    "reference.clues",
    "reference.hint",
    "reference.current_run",
    "reference.current_run_started_at",
    "reference.pid",
    "reference.current_step",
    "reference.current_step_started_at",
    "reference.failed_step",
    "reference.failure",
    "reference.last_step_ok",
    "reference.last_run",
    "reference.last_success",
    "reference.anomalies",
    "reference.last_anomaly",
    "store",
    "store.url",
    "store.checked",
    "store.error",
    "store.runs",
    "store.newest_run",
    "store.newest_run_age_s",
    "store.newest_has_success",
    "store.newest_successful_run",
    "store.newest_successful_run_age_s",
    "watcher",
    "watcher.root",
    "watcher.present",
    "watcher.error",
    "watcher.tick_running",
    "watcher.last_reported_run",
    "watcher.last_reported_run_started_at",
    "watcher.last_reported_run_age_s",
    "watcher.reported_at",
    "watcher.reported_age_s",
    "watcher.counts",
    "watcher.pending_deliveries",
    "watcher.newest_unreported_run",
}


def status(host: Host, *args: str) -> tuple[str, dict[str, Any]]:
    """The text screen and the JSON object, from two runs of `bench-status`."""
    text = tool(host, "bench-status", *args)
    assert text.returncode == 0, text.stderr
    as_json = tool(host, "bench-status", "--json", *args)
    assert as_json.returncode == 0, as_json.stderr
    data = json.loads(as_json.stdout)
    assert top_keys(data) == KEYS
    assert data["format"] == 1
    return text.stdout, data


def top_keys(data: dict[str, Any]) -> set[str]:
    keys = set(data)
    for section in ("reference", "store", "watcher"):
        keys |= {f"{section}.{key}" for key in data[section]}
    return keys


def row(text: str, label: str) -> str:
    """The value of the screen's row ``label`` (the first one)."""
    for line in text.splitlines():
        if line.startswith(f"  {label} ") and line[2:17].strip() == label:
            return line[17:]
    raise AssertionError(f"no row {label!r} in:\n{text}")


def test_idle_before_any_run(host: Host) -> None:
    """A fresh host: idle, no success, an empty store, no watcher state."""
    text, data = status(host)

    assert row(text, "state") == "idle"
    assert row(text, "last success") == "none"
    assert row(text, "newest run") == "none: the store holds no run"
    assert "no watcher state here" in text
    ref = data["reference"]
    assert ref["state"] == "idle" and ref["last_success"] is None and ref["pid"] is None
    assert data["store"]["checked"] is True and data["store"]["runs"] == 0
    assert data["watcher"]["present"] is False


def test_idle_after_a_successful_run(host: Host) -> None:
    """After a success: idle, the last success with its age, the store's newest run with
    SUCCESS."""
    assert cron(host).returncode == 0
    run = host.only_run_dir().name

    text, data = status(host)

    assert row(text, "state") == "idle"
    assert row(text, "last success").startswith(f"{run}, ended ")
    assert row(text, "last success").endswith(" ago)")
    assert row(text, "newest run").startswith(f"{run} (SUCCESS), ")
    ref = data["reference"]
    assert ref["last_success"]["run"] == run
    assert ref["last_success"]["ended_at"] == datetime.fromisoformat(
        host.run_json(host.only_run_dir())["ended_at"]
    ).isoformat(timespec="seconds")
    assert ref["last_success"]["age_s"] >= 0
    assert ref["last_run"]["status"] == "success"
    assert data["store"]["newest_run"] == run and data["store"]["newest_has_success"] is True
    assert data["watcher"]["newest_unreported_run"] is None  # no watcher on this host


@pytest.mark.slow
def test_running_shows_the_pid_and_the_step(host: Host, reap: list[Any]) -> None:
    """During a run: running, the cronjob's PID, the current step; a refused run is counted."""
    proc = start_slow_run(host, reap)
    run = host.only_run_dir().name
    assert cron(host).returncode == ExitCode.GUARDED_RUNNING

    text, data = status(host)

    ref = data["reference"]
    assert ref["state"] == "running"
    assert ref["pid"] == proc.pid
    assert ref["current_step"] == "benchmark" and ref["current_run"] == run
    assert ref["last_step_ok"] == "build"
    assert ref["anomalies"] == 1 and "previous run not over" in ref["last_anomaly"]
    assert row(text, "state").startswith(f"RUNNING, PID {proc.pid}, step benchmark for ")
    assert row(text, "run") == run
    assert row(text, "anomalies").startswith("1, the last: [")
    # The newest run in the store is this one, not yet with SUCCESS.
    assert data["store"]["newest_run"] is None or data["store"]["newest_has_success"] is False

    host.open_gate()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert status(host)[1]["reference"]["state"] == "idle"


def test_crashed_shows_the_clues_and_the_command(host: Host) -> None:
    """A run killed (SIGKILL) before its benchmark: crashed, where, the clues, bench-cleanup."""
    killed = cron(host, BENCH_FAILPOINT="step:benchmark:start")
    assert killed.returncode == -9, killed.stderr
    run = host.only_run_dir().name

    text, data = status(host)

    ref = data["reference"]
    assert ref["state"] == "crashed"
    assert ref["current_run"] == run and ref["last_step_ok"] == "build"
    assert ref["current_step"] is None
    started = host.run_json(host.only_run_dir())["started_at"]
    assert ref["current_run_started_at"] == datetime.fromisoformat(started).isoformat()
    assert any(clue.startswith("cron_res present") for clue in ref["clues"])
    assert f"current_run_dir names {run}" in ref["clues"]
    assert "bench-cleanup" in ref["hint"]
    assert row(text, "state").startswith("CRASHED after step build (PID ")
    assert row(text, "state").endswith("): markers left, lock free")
    assert row(text, "clues") == f"current_run_dir names {run}"
    assert "cron_res present" in text
    assert row(text, "what to do").startswith("`bench-cleanup`")
    assert row(text, "last success") == "none"


@pytest.mark.slow
def test_failed_shows_the_failed_step(host: Host) -> None:
    """A failed build: failed at step build with its exit status, and `bench-run --resume`."""
    assert cron(host).returncode == 0
    host.configure(build_command="exit 3")
    assert cron(host).returncode == ExitCode.FAILED
    first, failed = (d.name for d in host.run_dirs())

    text, data = status(host)

    ref = data["reference"]
    assert ref["state"] == "failed"
    assert ref["current_run"] == failed and ref["failed_step"] == "build"
    assert ref["failure"].startswith("exit status 3")
    assert ref["last_success"]["run"] == first
    assert ref["last_run"]["run"] == failed and ref["last_run"]["status"] == "failed"
    assert row(text, "state") == "FAILED at step build"
    assert row(text, "why").startswith("exit status 3")
    assert "bench-run --resume" in row(text, "what to do")
    assert row(text, "last success").startswith(first)
    assert row(text, "last run").startswith(f"{failed}: failed at step build, ended ")


def test_pending_delivery_is_shown(host: Host) -> None:
    """A report whose journal lacks its final entry is pending, with what is in flight."""
    watch = host.root / "watch"
    reported, pending = "_snoop_20260101_2000_v1.0-0-gabc", "_snoop_20260105_2000_v1.0-3-gdef"
    counts = {"parameters": 36, "regressions": 1, "improvements": 0, "unreadable_files": 0}
    write_report(watch, reported, complete=True, counts=counts)
    write_report(watch, pending, complete=False, counts=counts)
    (watch / "last_known_dir").write_text(reported + "\n")

    text, data = status(host, "--no-store")

    w = data["watcher"]
    assert w["last_reported_run"] == reported
    assert w["reported_at"] == "2026-01-02T03:04:05+00:00"
    assert w["last_reported_run_started_at"] == (
        parse_run_name(reported).timestamp.astimezone().isoformat(timespec="seconds")
    )
    assert w["counts"] == counts
    [item] = w["pending_deliveries"]
    assert item["report"] == pending and item["resumable"] is True
    assert item["sent"] == ["analysing"] and item["in_flight"] == ["summary"]
    assert row(text, "last reported").startswith(f"{reported} (run ")
    assert row(text, "its report") == (
        "1 regression(s), 0 improvement(s), 36 parameters, 0 unreadable file(s)"
    )
    assert row(text, "pending") == f"{pending}: 1 item(s) sent; in flight: summary"
    assert "the next tick resumes it" in text
    assert w["newest_unreported_run"] is None  # the store was not read

    store = LocalStore(host.root / "store")
    store.put_bytes(complete_key(parse_run_name(pending), "SUCCESS"), b"1\n")
    text, data = status(host)
    assert data["watcher"]["newest_unreported_run"] == pending
    assert row(text, "not reported") == f"{pending} (in the store with SUCCESS)"


def test_no_store_and_an_unreachable_store(host: Host) -> None:
    """--no-store says the store was not checked; an unreachable S3 endpoint is one line,
    the rest of the screen is still shown, the exit status is 0."""
    text, data = status(host, "--no-store")
    assert row(text, "not checked") == "(--no-store)"
    assert data["store"]["checked"] is False and data["store"]["error"] is None

    with socket.socket() as sock:  # a port where nothing listens
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    host.configure(
        store={"url": "s3://bench-nowhere/prefix", "endpoint_url": f"http://127.0.0.1:{port}"}
    )
    fake = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    done = tool(host, "bench-status", extra_env={**fake, "AWS_DEFAULT_REGION": "us-east-1"})
    assert done.returncode == 0, done.stderr
    store_lines = done.stdout.split("\nstore ")[1].split("\n\n")[0].splitlines()
    assert len(store_lines) == 2, store_lines  # the URL, then one line
    assert row(done.stdout, "unavailable").startswith("cannot reach the S3 endpoint")
    assert row(done.stdout, "state") == "idle"
    as_json = tool(host, "bench-status", "--json", extra_env={**fake, "AWS_DEFAULT_REGION": "x"})
    store = json.loads(as_json.stdout)["store"]
    assert store["checked"] is False and "cannot reach" in store["error"]


def test_text_and_json_come_from_the_same_data(tmp_path: Path) -> None:
    """render_text and render_json show the same facts: a store error and a missing work
    directory are data, and the JSON round-trips."""

    class Broken:
        url = "s3://bucket/prefix"

        def list_runs(self) -> Any:
            raise StoreError("access denied to s3://bucket/prefix\n(check the credentials)")

    settings = load_settings(
        environ={}, cwd=tmp_path, overrides=[f"reference.root={tmp_path / 'nowhere'}"]
    )
    data = collect(settings, store=Broken())

    assert json.loads(render_json(data)) == data
    assert top_keys(data) == KEYS
    assert data["store"]["error"] == "access denied to s3://bucket/prefix (check the credentials)"
    assert data["reference"]["state"] == "unknown"
    text = render_text(data)
    assert row(text, "unavailable") == (
        f"the work directory {tmp_path / 'nowhere'} does not exist (not a reference host?)"
    )
    assert "access denied to s3://bucket/prefix (check the credentials)" in text
    assert not os.path.exists(tmp_path / "nowhere")  # status never creates anything
