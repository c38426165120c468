"""End to end on the reference host: the real console scripts, in subprocesses, on the demo."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bench.errors import ExitCode
from tests.conftest import BIN, PROJECT, Host, clean_env, group_gone, pid_alive, wait_for

NUMBER = re.compile(r"^(-?\d+\.|-?\d+\.\d+(e[+-]\d+)?|-?\d+(\.\d+)?e[+-]\d+|nan|-?inf)$")
RUN_NAME = re.compile(r"^_snoop_\d{8}_\d{4}_v1\.0-0-g[0-9a-f]+$")
STEP_NAMES = ["update-checkout", "build", "benchmark", "collect", "upload", "finish"]


def test_cronjob_runs_the_demo_and_leaves_the_documented_layout(host: Host) -> None:
    """A scheduled run on the demo produces the run directory, store objects, markers, report."""
    done = host.run("cronjob")
    assert done.returncode == 0, done.stderr

    run_dir = host.only_run_dir()
    run = run_dir.name
    assert RUN_NAME.match(run), run
    assert f"results: {run_dir}" in done.stdout

    # Markers: last_run_dir names the run, nothing of a run in progress is left.
    assert host.marker("last_run_dir") == run
    for leftover in ("cron_res", "cron_res_errors", "current_run_dir"):
        assert not (host.root / leftover).exists(), leftover
    for name in ("STARTED", "SUCCESS"):
        assert (run_dir / name).read_text().strip().isdigit(), name
    assert "step benchmark: ok" in (run_dir / "cron_res").read_text()
    assert (run_dir / "cron_res_errors").exists()

    # run.json: versioned, every step with its command, times, status and resources.
    record = host.run_json(run_dir)
    assert record["format"] == 1
    assert record["status"] == "success"
    assert record["run"] == run
    assert re.fullmatch(r"[0-9a-f]{40}", record["commit"])
    assert record["host"]
    assert [s["name"] for s in record["steps"]] == STEP_NAMES
    for step in record["steps"]:
        assert step["status"] == "ok", step
        assert step["command"], step
        assert step["started_at"] and step["ended_at"], step
        assert step["exit_code"] == 0, step
        assert step["wall_s"] is not None and step["user_s"] is not None, step
        assert step["max_rss_kb"] > 0, step
        assert (run_dir / step["stdout"]).exists() and (run_dir / step["stderr"]).exists()
    assert "snoop_demo.py" in " ".join(record["steps"][2]["command"])

    # The inference CSVs in the exact snoop format.
    csvs = sorted((run_dir / "inference_results").glob("inferred_*.csv"))
    assert [p.name for p in csvs] == [
        "inferred_cache.csv",
        "inferred_encoding.csv",
        "inferred_interpreter.csv",
    ]
    for path in csvs:
        text = path.read_text()
        lines = text.split("\n")
        assert len(lines) == 3 and lines[2] == "", f"{path}: exactly two lines"
        header, values = lines[0].split(","), lines[1].split(",")
        assert len(header) == len(values)
        assert all(NUMBER.match(v) for v in values), values
        assert any(h.startswith("R2_score-") for h in header)
        assert any(h.startswith("T-value-") for h in header)
    raws = list((run_dir / "benchmark_results").glob("*_raw.csv"))
    assert raws and all(p.read_text().splitlines()[0].endswith(",timings") for p in raws)

    # The store: both prefixes, SUCCESS present.
    store = host.root / "store"
    complete = store / "complete_results" / "snoop_results" / run
    inference = store / "inference_csvs" / "snoop_results" / run
    assert (complete / "SUCCESS").exists()
    for path in csvs:
        assert (complete / "inference_results" / path.name).read_bytes() == path.read_bytes()
        assert (inference / path.name).read_bytes() == path.read_bytes()
    assert (complete / "benchmark_results" / raws[0].name).exists()
    assert sorted(p.name for p in inference.iterdir()) == [p.name for p in csvs]

    # The report.
    [started] = host.outbox("run_started")
    [succeeded] = host.outbox("run_succeeded")
    assert "started" in started
    assert f"{run} succeeded" in succeeded
    assert str(run_dir) in succeeded and store.as_uri() in succeeded


@pytest.mark.slow
def test_second_cronjob_is_guarded_while_the_first_runs(host: Host, reap: list) -> None:
    """A run started while another holds the lock exits 3, logs an anomaly, leaves it alone."""
    host.configure(benchmark_command=host.gated_benchmark())
    first = host.popen("cronjob")
    reap.append(first)
    wait_for(
        lambda: list((host.root / "snoop_results").glob("*/steps/03-benchmark.out")),
        what="the first run to reach its benchmark step",
    )

    second = host.run("cronjob")
    assert second.returncode == ExitCode.GUARDED_RUNNING, second.stderr
    assert "previous run not over" in second.stderr
    anomalies = (host.root / "anomalies").read_text().splitlines()
    assert len(anomalies) == 1
    assert re.match(r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\] previous run not over", anomalies[0])
    [refused] = host.outbox("run_refused")
    assert "previous run not over" in refused

    host.open_gate()
    _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    run_dir = host.only_run_dir()
    assert (run_dir / "SUCCESS").exists()
    assert host.marker("last_run_dir") == run_dir.name


def test_failing_build_is_reported_and_the_next_run_starts_normally(host: Host) -> None:
    """A failed build: failed state, logs in the run dir, report with step and stderr tail."""
    host.configure(build_command="echo compiling; echo 'fatal: libfoo.so not found' >&2; exit 7")
    done = host.run("cronjob")
    assert done.returncode == ExitCode.FAILED
    run_dir = host.only_run_dir()
    record = host.run_json(run_dir)
    assert record["status"] == "failed" and record["failed_step"] == "build"
    build = record["steps"][1]
    assert build["status"] == "failed" and build["exit_code"] == 7
    assert [s["status"] for s in record["steps"][2:]] == ["pending"] * 4

    assert (run_dir / "cron_res").exists() and (run_dir / "cron_res_errors").exists()
    assert "libfoo.so" in (run_dir / "cron_res_errors").read_text()
    assert "libfoo.so" in (run_dir / "steps" / "02-build.err").read_text()
    assert not (host.root / "cron_res").exists()
    assert host.marker("current_run_dir") == run_dir.name
    assert host.marker("last_run_dir") is None

    [failed] = host.outbox("run_failed")
    assert "FAILED" in failed and "step build" in failed and "exit status 7" in failed
    assert "fatal: libfoo.so not found" in failed
    assert str(run_dir) in failed

    # The next run (build fixed) starts normally.
    host.configure()
    again = host.run("cronjob")
    assert again.returncode == 0, again.stderr
    new_run = host.marker("last_run_dir")
    assert (new_run and new_run != run_dir.name) or (host.root / "snoop_results").exists()
    assert (host.root / "snoop_results" / str(new_run) / "SUCCESS").exists()
    assert host.marker("current_run_dir") is None


@pytest.mark.slow
def test_a_step_past_its_timeout_is_killed_with_its_whole_group(host: Host) -> None:
    """Timeout: TERM then KILL to the group, grandchild included; reported as timed out."""
    leader = host.root / "leader.pid"
    grandchild = host.root / "grandchild.pid"
    host.configure(
        benchmark_command=(
            f"echo $$ > {leader}; sh -c 'trap \"\" TERM; sleep 300' & echo $! > {grandchild};"
            " sleep 300"
        ),
        benchmark_timeout=5,  # time enough to write both pid files on a loaded machine
        kill_grace=1,
    )
    done = host.run("cronjob", timeout=60)
    assert done.returncode == ExitCode.FAILED
    assert group_gone(int(leader.read_text()))
    assert not pid_alive(int(grandchild.read_text()))

    run_dir = host.only_run_dir()
    step = host.run_json(run_dir)["steps"][2]
    assert step["status"] == "timed_out"
    [failed] = host.outbox("run_failed")
    assert "step benchmark (timed out after 5 s)" in failed


@pytest.mark.slow
def test_sigterm_to_cronjob_stops_the_step_group_and_leaves_a_failed_state(
    host: Host, reap: list
) -> None:
    """SIGTERM during the benchmark: the group dies, exit 130, the state is 'failed'."""
    leader = host.root / "leader.pid"
    host.configure(benchmark_command=f"echo $$ > {leader}; sleep 300 & sleep 300", kill_grace=2)
    proc = host.popen("cronjob")
    reap.append(proc)
    wait_for(lambda: leader.exists() and leader.read_text().strip(), what="the benchmark")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == ExitCode.INTERRUPTED, err
    assert group_gone(int(leader.read_text()))

    run_dir = host.only_run_dir()
    record = host.run_json(run_dir)
    assert record["status"] == "interrupted"
    assert record["steps"][2]["status"] == "interrupted"
    assert host.marker("current_run_dir") == run_dir.name
    assert (run_dir / "cron_res").exists() and not (host.root / "cron_res").exists()
    assert "interrupted" in host.outbox("run_failed")[0]


def test_leftover_results_in_the_checkout_are_never_reused(host: Host) -> None:
    """Leftover *_results: refused when no failed run owns them, archived into a failed one."""
    assert host.run("cronjob").returncode == 0
    leftover = host.root / "demo-checkout" / "_snoop" / "inference_results"
    leftover.mkdir(parents=True)
    (leftover / "inferred_interpreter.csv").write_text("a,b\n1.,2.\n")

    refused = host.run("cronjob")
    assert refused.returncode == ExitCode.GUARDED_CRASHED
    assert str(leftover) in refused.stderr
    assert leftover.exists(), "the leftover is left for a person to look at"
    assert "leftover" in (host.root / "anomalies").read_text()
    assert str(leftover) in host.outbox("run_refused")[0]


def test_results_of_a_failed_benchmark_are_archived_into_its_run(host: Host) -> None:
    """A benchmark that wrote results then failed: they move into the failed run, not reused."""
    host.configure(benchmark_command="{python} snoop_demo.py --output _snoop && exit 3")
    assert host.run("cronjob").returncode == ExitCode.FAILED
    failed_run = host.only_run_dir()
    assert (failed_run / "inference_results" / "inferred_interpreter.csv").exists()
    assert not (host.root / "demo-checkout" / "_snoop" / "inference_results").exists()

    host.configure()
    assert host.run("cronjob").returncode == 0
    new_run = host.root / "snoop_results" / str(host.marker("last_run_dir"))
    assert new_run != failed_run
    bench_out = (new_run / "steps" / "03-benchmark.out").read_text()
    assert "skipping" not in bench_out, "the new run measured everything itself"


def test_secrets_never_reach_the_benchmark_logs_or_reports(host: Host) -> None:
    """SLACK_BOT_TOKEN and AWS keys are not passed to steps, nor written anywhere; the run's
    reports go to Slack (a local Web API server) without the token in any payload."""
    from bench.testing.slackserver import SlackServer

    host.configure(benchmark_command="env; {python} snoop_demo.py --output _snoop")
    secret = "xoxb-0000-very-secret-token"
    with SlackServer(token=secret) as slack:
        env = clean_env(
            SLACK_BOT_TOKEN=secret,
            AWS_SECRET_ACCESS_KEY=secret + "aws",
            SLACK_API_URL=slack.base_url,
            BENCH_SLACK_CHANNEL="C123",
        )
        done = host.run("cronjob", env=env)
        assert done.returncode == 0, done.stderr
        posted = [m.text for m in slack.messages_in("C123")]
        assert any("succeeded" in text for text in posted), posted
        assert secret not in repr(slack.calls)
    assert secret not in done.stdout + done.stderr
    for path in host.root.rglob("*"):
        if path.is_file() and ".git" not in path.parts:
            assert secret.encode() not in path.read_bytes(), path


def test_bench_run_partial_then_resume_completes_the_same_run(host: Host) -> None:
    """bench-run --steps stops a run early (resumable); --resume finishes it, same directory."""
    done = host.run("bench-run", "--steps", "update-checkout,build,benchmark")
    assert done.returncode == 0, done.stderr
    run_dir = host.only_run_dir()
    record = host.run_json(run_dir)
    assert record["status"] == "partial"
    assert [s["status"] for s in record["steps"]] == ["ok"] * 3 + ["skipped"] * 3
    assert not (run_dir / "SUCCESS").exists()

    resumed = host.run("bench-run", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert host.only_run_dir() == run_dir
    record = host.run_json(run_dir)
    assert record["status"] == "success"
    assert len(record["attempts"]) == 1
    assert (run_dir / "SUCCESS").exists()
    assert host.marker("last_run_dir") == run_dir.name
    assert "step benchmark: already done" in (run_dir / "cron_res").read_text()


def test_failed_upload_is_resumed_without_rerunning_the_benchmark(
    host: Host, tmp_path: Path
) -> None:
    """Upload fails (store unwritable): everything stays on disk; --resume only uploads."""
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the store should be\n")
    host.configure(store_url=(blocker / "store").as_uri())
    done = host.run("cronjob")
    assert done.returncode == ExitCode.FAILED
    run_dir = host.only_run_dir()
    record = host.run_json(run_dir)
    assert record["failed_step"] == "upload"
    assert (run_dir / "inference_results" / "inferred_interpreter.csv").exists()
    [failed] = host.outbox("run_failed")
    assert "step upload" in failed and str(blocker) in failed
    benchmark_started = record["steps"][2]["started_at"]

    host.configure()
    resumed = host.run("bench-run", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    record = host.run_json(run_dir)
    assert record["status"] == "success"
    assert record["steps"][2]["started_at"] == benchmark_started
    assert (host.root / "store/complete_results/snoop_results" / run_dir.name / "SUCCESS").exists()


@pytest.mark.slow
def test_cronjob_sh_works_under_crons_empty_environment(host: Host) -> None:
    """jobs/cronjob.sh under `env -i` with only cron's variables runs the demo to SUCCESS."""
    cron_env = {
        "HOME": str(host.root),
        "LOGNAME": "bench",
        "SHELL": "/bin/sh",
        "PATH": "/usr/bin:/bin",
        "BENCH_CONFIG": str(host.config),
    }
    if Path(sys.prefix) != PROJECT / ".venv":
        cron_env["BENCH_VENV"] = sys.prefix  # as a crontab line would set it
    argv = ["env", "-i", *(f"{k}={v}" for k, v in cron_env.items())]
    done = subprocess.run(
        [*argv, "/bin/sh", str(PROJECT / "jobs" / "cronjob.sh")],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    run_dir = host.only_run_dir()
    assert (run_dir / "SUCCESS").exists()
    assert host.marker("last_run_dir") == run_dir.name


def test_cronjob_sh_without_an_installation_says_how_to_fix_it(tmp_path: Path) -> None:
    """The wrapper with no virtual environment exits 2 and names the fix."""
    done = subprocess.run(
        [
            "env",
            "-i",
            "PATH=/usr/bin:/bin",
            f"BENCH_VENV={tmp_path}/none",
            "/bin/sh",
            str(PROJECT / "jobs" / "cronjob.sh"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert f"{tmp_path}/none/bin/cronjob is missing" in done.stderr
    assert "dev setup" in done.stderr


def test_dry_run_of_the_tezos_profile_prints_the_exact_plan(tmp_path: Path) -> None:
    """bench-run --dry-run on the shipped Tezos profile prints the seed's commands, runs none."""
    profile = PROJECT / "bench" / "profiles" / "tezos.toml"
    done = subprocess.run(
        [
            str(BIN / "bench-run"),
            "--config",
            str(profile),
            "--dry-run",
            "--set",
            f"reference.root={tmp_path}/tezos-benchmarks",
        ],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    plan = done.stdout
    for expected in (
        "git clone --branch master https://gitlab.com/tezos/tezos.git "
        f"{tmp_path}/tezos-benchmarks/tezos.partial-clone",
        f"mv -T {tmp_path}/tezos-benchmarks/tezos.partial-clone {tmp_path}/tezos-benchmarks/tezos",
        "make OPAMSOLVERTIMEOUT=0 build-dev-deps",
        "BLST_PORTABLE=y make",
        "dune exec tezt/snoop/main.exe -- --verbose",
        "export IO_BENCH=",
        f"export IO_DATA_DIR={tmp_path}/tezos-benchmarks/",
        f"export IO_CACHE_DIR={tmp_path}/tezos-benchmarks/",
        "_snoop/michelson_data",
        "_snoop/sapling_data",
        "s3://snoop-playground/mclaren/complete_results/snoop_results/<run>/",
        "s3://snoop-playground/mclaren/inference_csvs/snoop_results/<run>/",
        "mv current_run_dir last_run_dir",
    ):
        assert expected in plan, expected
    assert not (tmp_path / "tezos-benchmarks").exists(), "a dry run changes nothing"


def test_bad_configuration_exits_2_naming_the_key_and_source(host: Host) -> None:
    """A bad value from a flag: exit 2, one line naming the key, the flag and what is allowed."""
    done = host.run("cronjob", "--set", "reference.build_timeout=soon")
    assert done.returncode == ExitCode.USAGE
    assert "reference.build_timeout" in done.stderr and "flag" in done.stderr
    assert "positive number of seconds" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (host.root / "snoop_results").exists()


def test_help_documents_the_exit_codes() -> None:
    """--help of both commands explains them and lists the exit codes."""
    for script in ("cronjob", "bench-run"):
        done = subprocess.run(
            [str(BIN / script), "--help"], capture_output=True, text=True, check=False
        )
        assert done.returncode == 0
        for code in ("0 ", "1 ", "2 ", "3 ", "4 ", "130"):
            assert f"\n  {code}" in done.stdout, (script, code)


def test_runs_of_the_same_minute_and_commit_keep_sorting_in_time_order(host: Host) -> None:
    """A dozen quick runs on one commit get names that sort in the order they ran."""
    for _ in range(11):
        assert host.run("cronjob", "-q").returncode == 0
    by_time = sorted(host.run_dirs(), key=lambda d: (d / "STARTED").stat().st_mtime_ns)
    assert [d.name for d in by_time] == sorted(d.name for d in by_time)
    assert host.marker("last_run_dir") == by_time[-1].name
