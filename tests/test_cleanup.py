"""bench-cleanup against a dead run whose step is still running (the orphan writes meanwhile)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import bench.cleanup
from bench.config import load_settings
from bench.notify import NullNotifier
from bench.steps import is_step_group, live_members
from tests.conftest import Host, clean_env, wait_for


@pytest.fixture
def orphans() -> Iterator[list[tuple[int, str]]]:
    """Steps' process groups (pgid, token) a failing test would leave: killed at teardown."""
    groups: list[tuple[int, str]] = []
    yield groups
    for pgid, token in groups:
        if is_step_group(pgid, token):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)


def crash_in_a_held_benchmark(host: Host, orphans: list[tuple[int, str]]) -> tuple[int, str]:
    """cronjob SIGKILLed in its benchmark, which goes on (held at its gate): (pgid, token).

    Quiet: an orphan that prints dies of SIGPIPE, its reader (cronjob) being gone."""
    host.configure(benchmark_command=host.gated_benchmark() + " >/dev/null 2>&1")
    crashed = host.run("cronjob", env=clean_env(BENCH_FAILPOINT="step:benchmark:running"))
    assert crashed.returncode == -9, crashed.stderr
    step = host.run_json(host.only_run_dir())["steps"][2]
    assert step["name"] == "benchmark" and step["status"] == "running"
    orphans.append((int(step["pgid"]), step["token"]))
    return int(step["pgid"]), step["token"]


@pytest.mark.slow
def test_what_a_dead_runs_step_writes_until_it_is_killed_is_archived_too(
    host: Host, monkeypatch: pytest.MonkeyPatch, orphans: list[tuple[int, str]]
) -> None:
    """cronjob killed in its benchmark: the orphaned benchmark may write its results between
    the moment bench-cleanup looks and the moment it kills the group. Those are not left in
    the checkout, where the next run would refuse them: they go into the archived run."""
    crash_in_a_held_benchmark(host, orphans)
    results = host.root / "demo-checkout" / "_snoop" / "inference_results"
    assert not results.exists()

    real_kill = bench.cleanup._kill_group
    killed: list[int] = []

    def results_written_just_before_the_kill(pgid: int) -> None:
        host.open_gate()
        wait_for(lambda: any(results.glob("*.csv")), what="the orphaned benchmark's results")
        real_kill(pgid)
        killed.append(pgid)

    monkeypatch.setattr(bench.cleanup, "_kill_group", results_written_just_before_the_kill)
    lines: list[str] = []
    plan = bench.cleanup.cleanup(
        load_settings(config_path=host.config), notifier=NullNotifier(), echo=lines.append
    )

    assert killed and not live_members(killed[0])
    assert plan.outcome == "archive"
    assert not results.exists(), "left in the checkout: the next cronjob would refuse to run"
    run_dir = host.only_run_dir()
    archived = list(Path(run_dir).glob("*inference_results"))
    assert archived and any(archived[0].glob("*.csv")), sorted(p.name for p in run_dir.iterdir())
    assert "the killed processes had written more; the rest of the plan is now:" in lines
    assert host.run("cronjob").returncode == 0


@pytest.mark.slow
def test_the_dead_steps_group_is_recognised_by_its_token(
    host: Host, orphans: list[tuple[int, str]]
) -> None:
    pgid, token = crash_in_a_held_benchmark(host, orphans)
    assert is_step_group(pgid, token)
    assert not is_step_group(pgid, "0" * 16)

    cleaned = host.run("bench-cleanup")
    assert cleaned.returncode == 0, cleaned.stderr
    assert f"kill process group {pgid} left by the dead step benchmark" in cleaned.stdout
    assert not live_members(pgid)


@pytest.mark.slow
def test_a_group_number_reused_by_someone_else_is_left_alone(
    host: Host, orphans: list[tuple[int, str]]
) -> None:
    """The dead step's processes ended and their group's number went to another program's
    group: bench-cleanup must not kill that one. (The kernel cannot be made to reuse a number
    on demand: run.json is pointed at another live group, as it would read after a reuse.)"""
    pgid, _ = crash_in_a_held_benchmark(host, orphans)
    os.killpg(pgid, signal.SIGKILL)
    wait_for(lambda: not live_members(pgid), what="the dead step's processes to end")
    other = subprocess.Popen(["sleep", "300"], start_new_session=True, env=clean_env())
    try:
        record_path = host.only_run_dir() / "run.json"
        record = json.loads(record_path.read_text())
        record["steps"][2]["pgid"] = other.pid
        record_path.write_text(json.dumps(record))

        cleaned = host.run("bench-cleanup")
        assert cleaned.returncode == 0, cleaned.stderr
        assert f"leave process group {other.pid} alone (pids {other.pid})" in cleaned.stdout
        assert other.poll() is None, "bench-cleanup killed another program's processes"
        host.open_gate()
        assert host.run("cronjob").returncode == 0
    finally:
        other.kill()
        other.wait()


@pytest.mark.slow
def test_a_run_archived_as_failed_can_still_be_resumed_by_hand(host: Host) -> None:
    """bench-cleanup archives a crashed run (FAILED, the reason in run.json); a person who
    resumes it gets a complete run whose record keeps that reason among its attempts."""
    crashed = host.run("cronjob", env=clean_env(BENCH_FAILPOINT="step:build:running"))
    assert crashed.returncode == -9, crashed.stderr
    assert host.run("bench-cleanup").returncode == 0
    run_dir = host.only_run_dir()
    assert (run_dir / "FAILED").exists()
    assert host.run_json(run_dir)["archived_by"] == "bench-cleanup"

    resumed = host.run("bench-run", "--resume", run_dir.name)

    assert resumed.returncode == 0, resumed.stderr
    assert (run_dir / "SUCCESS").exists() and not (run_dir / "FAILED").exists()
    record = host.run_json(run_dir)
    assert record["status"] == "success" and record["archived_by"] is None
    [attempt] = record["attempts"]
    assert attempt["archived_by"] == "bench-cleanup"
    assert attempt["failure_reason"] == "died during step build"
    assert all(step["pgid"] is None and step["token"] is None for step in record["steps"])


def test_a_run_record_with_unknown_fields_is_refused_naming_the_file(tmp_path: Path) -> None:
    from bench.errors import BenchError
    from bench.pipeline import RunRecord

    path = tmp_path / "run.json"
    path.write_text(
        json.dumps(
            {
                "format": 1,
                "run": "r",
                "host": "h",
                "pid": 1,
                "started_at": "t",
                "steps": [{"index": 1, "name": "build", "colour": "blue"}],
            }
        )
    )
    with pytest.raises(BenchError, match=f"{path}: unknown StepRecord fields colour"):
        RunRecord.load(path)


@pytest.mark.slow
def test_a_group_that_survives_the_kill_stops_the_clean_up_before_anything_moves(
    host: Host, monkeypatch: pytest.MonkeyPatch, orphans: list[tuple[int, str]]
) -> None:
    """A process SIGKILL cannot end (stuck in the kernel) could still write: nothing is moved,
    the error says so and how to look. (Simulated: the kill does nothing.)"""
    from bench.errors import BenchError

    pgid, _ = crash_in_a_held_benchmark(host, orphans)
    run_dir = host.only_run_dir()
    monkeypatch.setattr(bench.cleanup, "_kill_group", lambda _pgid: None)

    with pytest.raises(BenchError, match=f"kill process group {pgid} .* still alive") as raised:
        bench.cleanup.cleanup(
            load_settings(config_path=host.config), notifier=NullNotifier(), echo=print
        )

    assert "ps -o pid,stat,wchan,args -g" in (raised.value.hint or "")
    assert host.marker("current_run_dir") == run_dir.name
    assert (host.root / "cron_res").exists() and not (run_dir / "FAILED").exists()
