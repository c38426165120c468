"""bench-cleanup against a dead run whose step is still running (the orphan writes meanwhile)."""

from __future__ import annotations

from pathlib import Path

import pytest

import bench.cleanup
from bench.config import load_settings
from bench.notify import NullNotifier
from bench.steps import live_members
from tests.conftest import Host, clean_env, wait_for


@pytest.mark.slow
def test_what_a_dead_runs_step_writes_until_it_is_killed_is_archived_too(
    host: Host, monkeypatch: pytest.MonkeyPatch
) -> None:
    """cronjob killed in its benchmark: the orphaned benchmark may write its results between
    the moment bench-cleanup looks and the moment it kills the group. Those are not left in
    the checkout, where the next run would refuse them: they go into the archived run."""
    # Quiet: an orphan that prints dies of SIGPIPE, its reader (cronjob) being gone.
    host.configure(benchmark_command=host.gated_benchmark() + " >/dev/null 2>&1")
    crashed = host.run("cronjob", env=clean_env(BENCH_FAILPOINT="step:benchmark:running"))
    assert crashed.returncode == -9, crashed.stderr
    results = host.root / "demo-checkout" / "_snoop" / "inference_results"
    assert not results.exists()

    real_kill = bench.cleanup._kill
    killed: list[int] = []

    def results_written_just_before_the_kill(pgid: int) -> None:
        host.open_gate()
        wait_for(lambda: any(results.glob("*.csv")), what="the orphaned benchmark's results")
        real_kill(pgid)
        killed.append(pgid)

    monkeypatch.setattr(bench.cleanup, "_kill", results_written_just_before_the_kill)
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
