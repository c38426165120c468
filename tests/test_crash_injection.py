"""Crash injection: `cronjob` killed at every point of a run, then `bench-cleanup` and a new run.

The demo pipeline uploads to moto's S3 over HTTP. At each failpoint (the start and middle of
every step, between the marker writes, inside the upload, between the remote SUCCESS and the
local markers) the run dies by SIGKILL or SIGTERM. After each: bench-cleanup, then a new
cronjob, must succeed; every CSV of a completed benchmark is in the store; no run has a
remote SUCCESS with objects missing; the markers are consistent; no process is left; the
watcher's view of the store never offers a half-uploaded run as successful.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from bench.errors import ExitCode
from bench.runs import parse_run_name
from bench.steps import live_members
from bench.store.s3 import S3Store, make_client
from bench.testing.s3server import S3Server
from tests.conftest import Host
from tests.test_s3_e2e import PREFIX, configure_s3, expected_keys, s3_env, stored

pytestmark = pytest.mark.slow

POINTS = [
    "run:locked",
    "step:update-checkout:start",
    "step:update-checkout:running",
    "run:named",
    "run:dir-created",
    "run:started",
    "step:build:start",
    "step:build:running",
    "step:benchmark:start",
    "step:benchmark:running",
    "step:collect:start",
    "collect:moved:benchmark_results",
    "step:upload:start",
    "upload:after-first-put",
    "upload:half",
    "upload:before-verify",
    "upload:before-success",
    "upload:after-success",
    "step:finish:start",
    "finish:after-local-success",
    "finish:after-promote",
    "run:logs-moved",
]


def pgids_recorded(host: Host) -> set[int]:
    found = set()
    for run_dir in host.run_dirs():
        try:
            record = json.loads((run_dir / "run.json").read_text())
        except (OSError, ValueError):
            continue
        found |= {int(s["pgid"]) for s in record.get("steps", []) if s.get("pgid")}
    return found


def check_store(s3: S3Server, bucket: str, host: Host) -> None:
    """No remote SUCCESS without every object, and the watcher's newest is complete."""
    keys = stored(s3, bucket)
    success_runs = {
        k.split("/")[3]
        for k in keys
        if k.startswith(f"{PREFIX}/complete_results/") and k.endswith("/SUCCESS")
    }
    for run in success_runs:
        run_dir = host.root / "snoop_results" / run
        assert run_dir.is_dir(), run
        missing = expected_keys(run_dir) - set(keys)
        missing = {k for k in missing if "/steps/" not in k and not k.endswith("/run.json")}
        assert not missing, (run, sorted(missing)[:5])
    store = S3Store(make_client(endpoint_url=s3.endpoint, max_attempts=2), bucket, PREFIX)
    newest = store.newest_successful_run()
    if newest is not None:
        assert newest.name in success_runs


def check_markers(host: Host) -> None:
    for name in ("cron_res", "cron_res_errors", "current_run_dir"):
        assert not (host.root / name).exists(), name
    last = host.marker("last_run_dir")
    assert last is not None
    run_dir = host.root / "snoop_results" / last
    assert (run_dir / "SUCCESS").exists() and (run_dir / "cron_res").exists()
    assert not (host.root / "demo-checkout" / "_snoop" / "inference_results").exists()


@pytest.mark.parametrize("sig", ["KILL", "TERM"])
@pytest.mark.parametrize("point", POINTS)
def test_a_run_killed_at_any_point_is_recovered_by_one_command(
    host: Host, s3: S3Server, bucket: str, point: str, sig: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Kill at `point`; bench-cleanup then cronjob succeed; nothing lost, nothing half-done."""
    configure_s3(host, s3, bucket, kill_grace=2)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    env = s3_env()
    crashed = host.run(
        "cronjob", env={**env, "BENCH_FAILPOINT": point, "BENCH_FAILPOINT_SIGNAL": sig}
    )
    expected = -signal.SIGKILL if sig == "KILL" else ExitCode.INTERRUPTED
    assert crashed.returncode == expected, (crashed.returncode, crashed.stderr[-2000:])
    pgids = pgids_recorded(host)
    check_store(s3, bucket, host)

    cleaned = host.run("bench-cleanup", env=env)
    assert cleaned.returncode == 0, cleaned.stdout + cleaned.stderr
    for pgid in pgids:
        assert not live_members(pgid), f"process group {pgid} left behind"
    check_store(s3, bucket, host)
    again = host.run("bench-cleanup", env=env)
    assert again.returncode == 0 and "nothing to clean up" in again.stdout, again.stdout

    # Every run whose benchmark completed is now complete in the store.
    for run_dir in host.run_dirs():
        record = json.loads((run_dir / "run.json").read_text())
        benchmark = next(
            (s for s in record["steps"] if s["name"] == "benchmark"), {"status": "never ran"}
        )
        if benchmark["status"] == "ok":
            keys = set(stored(s3, bucket))
            for csv in (run_dir / "inference_results").glob("*.csv"):
                key = f"{PREFIX}/inference_csvs/snoop_results/{run_dir.name}/{csv.name}"
                assert key in keys, key
            assert f"{PREFIX}/complete_results/snoop_results/{run_dir.name}/SUCCESS" in keys
        else:
            assert (run_dir / "FAILED").exists() or record["status"] in {"failed", "interrupted"}

    fresh = host.run("cronjob", env=env)
    assert fresh.returncode == 0, fresh.stderr[-2000:]
    check_markers(host)
    check_store(s3, bucket, host)
    newest = parse_run_name(str(host.marker("last_run_dir")))
    assert newest == max(
        parse_run_name(d.name) for d in host.run_dirs() if (d / "SUCCESS").exists()
    )


def test_crashed_run_is_refused_with_the_recovery_command_and_reported_once(
    host: Host, tmp_path: Path
) -> None:
    """A crash left behind: cronjob refuses (exit 4) naming bench-cleanup; the same cause is
    reported once however many times cron tries, while anomalies keeps every line."""
    crashed = host.run("cronjob", env={**s3_env(), "BENCH_FAILPOINT": "step:benchmark:start"})
    assert crashed.returncode == -signal.SIGKILL
    for _ in range(3):
        refused = host.run("cronjob")
        assert refused.returncode == ExitCode.GUARDED_CRASHED
        assert "bench-cleanup" in refused.stderr
    assert len(host.outbox("run_refused")) == 1
    lines = (host.root / "anomalies").read_text().splitlines()
    assert len(lines) == 3 and all("crashed" in line for line in lines)


def test_recover_crashed_lets_cronjob_recover_then_run(host: Host) -> None:
    """With reference.recover_crashed, cronjob completes the crashed run, then runs anew."""
    crashed = host.run("cronjob", env={**s3_env(), "BENCH_FAILPOINT": "upload:half"})
    assert crashed.returncode == -signal.SIGKILL
    host.configure(recover_crashed=True)
    done = host.run("cronjob")
    assert done.returncode == 0, done.stderr
    runs = [d for d in host.run_dirs() if (d / "SUCCESS").exists()]
    assert len(runs) == 2
    assert len(host.outbox("run_recovered")) == 1
    check_markers(host)
