"""The watcher end to end: runs uploaded to moto's S3 over HTTP, reports to a local Slack API.

`watch_regressions` runs as a subprocess with a real slack_sdk WebClient pointed at
``bench.testing.slackserver`` (SLACK_API_URL), and the store requests are counted at the S3
server.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.analysis.report import WORST_SHOWN
from bench.config import load_settings
from bench.demo import SLOWED_FILE, SLOWED_PARAMETER
from bench.errors import ExitCode
from bench.store import LocalStore
from bench.testing.s3server import S3Server
from bench.testing.slackserver import Fault, SlackServer
from bench.watch import SUMMARY
from tests.conftest import BIN, Host, clean_env
from tests.test_s3_e2e import configure_s3, s3_env
from tests.test_watch import ITEMS, RUNS, publish, shared_input, tick_importing

pytestmark = pytest.mark.slow

TOKEN = "xoxb-test-token-123"
CHANNEL = "C088AUBEB6Y"
FILES = ["alerts", "selected.csv", "all.csv", "reference.csv", "previous.csv"]


@pytest.fixture
def slack() -> Iterator[SlackServer]:
    with SlackServer(token=TOKEN) as server:
        yield server


def slack_env(slack: SlackServer, **extra: str) -> dict[str, str]:
    return {
        "SLACK_BOT_TOKEN": TOKEN,
        "SLACK_API_URL": slack.base_url,
        "BENCH_SLACK_CHANNEL": CHANNEL,
        # The legacy rule: its alerts show on the 2- and 3-run histories of these tests.
        "BENCH_WATCH_DETECTOR": "legacy",
        **extra,
    }


def watch(host: Host, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "watch_regressions"), "--config", str(host.config)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )


def test_the_demo_regression_travels_from_the_reference_host_to_slack(
    host: Host, s3: S3Server, bucket: str, slack: SlackServer
) -> None:
    """Two demo runs (the second slowed) on S3; one tick posts the report naming the slowed
    parameter with its five files; the next two ticks post nothing with <= 2 store requests."""
    configure_s3(host, s3, bucket)
    assert host.run("cronjob", env=s3_env()).returncode == 0
    slowed = host.run("cronjob", env=s3_env(BENCH_DEMO_SLOWDOWN="5"))
    assert slowed.returncode == 0, slowed.stderr
    newest = host.run_dirs()[-1].name

    env = {**s3_env(), **slack_env(slack)}
    done = watch(host, env)
    assert done.returncode == ExitCode.REGRESSIONS, done.stderr
    assert TOKEN not in done.stdout + done.stderr

    posted = slack.messages_in(CHANNEL)
    texts = [m.text for m in posted if m.file_id is None]
    assert len(texts) == 2
    assert "I will look for regressions" in texts[0] and newest in texts[0]
    assert "Regressions found" in texts[1]
    # The demo's timings are real: its near-zero _const terms may swing more than the slowed
    # coefficient and push it out of the five shown. It is among the changes found, and the
    # message shows the five worst of them.
    summary = json.loads(
        (
            load_settings(config_path=host.config).watch.root / "reports" / newest / SUMMARY
        ).read_text(encoding="utf-8")
    )
    regressions = [c for c in summary["changes"] if c["direction"] == "regression"]
    assert (SLOWED_PARAMETER, SLOWED_FILE) in {(c["parameter"], c["file"]) for c in regressions}
    for change in regressions[:WORST_SHOWN]:
        assert f"{change['parameter']} ({change['file']}) up" in texts[1]
    shared = [m for m in posted if m.file_id is not None]
    assert [m.filename for m in shared][-5:] == FILES
    plots = [m.filename or "" for m in shared[:-5]]
    assert 1 <= len(plots) <= 3 and all(name.endswith(".png") for name in plots), plots
    assert all(m.bytes for m in shared)
    all_csv = next(m for m in shared if m.filename == "all.csv")
    assert SLOWED_PARAMETER.encode() in (all_csv.bytes or b"")

    for _ in range(2):
        s3.reset_log()
        again = watch(host, env)
        assert again.returncode == 0, again.stderr
        assert s3.count() <= 2, [(r.method, r.path, r.query) for r in s3.requests]
    # The idle tick with static keys and Slack configured: the standard library's listing,
    # Slack's client never made.
    s3.reset_log()
    _, imported = tick_importing(env, "--config", str(host.config))
    assert s3.count() <= 2
    assert not imported & {"botocore", "boto3", "slack_sdk", "pandas", "matplotlib"}
    assert len(slack.messages_in(CHANNEL)) == len(posted)


@pytest.fixture
def published(tmp_path: Path) -> Path:
    """A local store holding the three real runs of the reference outputs."""
    store = LocalStore(tmp_path / "store")
    for run in RUNS:
        publish(store, run, {"inferred_interpreter.csv": shared_input(run)})
    return tmp_path


def local_env(root: Path, slack: SlackServer, **extra: str) -> dict[str, str]:
    return clean_env(
        BENCH_STORE_URL=(root / "store").as_uri(),
        BENCH_WATCH_ROOT=str(root / "watch"),
        BENCH_REFERENCE_ROOT=str(root),
        **slack_env(slack),
        **extra,
    )


def tick(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "watch_regressions"), "-q"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def assert_complete_once(slack: SlackServer) -> None:
    posted = slack.messages_in(CHANNEL)
    messages = [m.text.splitlines()[0] for m in posted if m.file_id is None]
    files = [m.filename for m in posted if m.file_id is not None]
    assert len(messages) == 2 and len(set(messages)) == 2, messages
    assert files[-5:] == FILES, files
    plots = files[:-5]
    assert len(plots) == 3 and len(set(plots)) == 3, plots


@pytest.mark.parametrize(
    "point",
    [f"deliver:{item}:{when}" for item in ITEMS for when in ("sending", "delivered")],
)
def test_a_tick_killed_during_the_slack_report_resumes_without_duplicates(
    published: Path, slack: SlackServer, point: str
) -> None:
    """SIGKILL at each point of the Slack delivery; the next tick completes it exactly once."""
    env = local_env(published, slack)
    killed = tick({**env, "BENCH_FAILPOINT": point})
    assert killed.returncode == -9, killed.stderr
    resumed = tick(env)
    assert resumed.returncode == ExitCode.REGRESSIONS, resumed.stderr
    assert_complete_once(slack)
    assert tick(env).returncode == 0
    assert_complete_once(slack)


def test_rate_limits_and_server_errors_do_not_duplicate_or_lose_anything(
    published: Path, slack: SlackServer
) -> None:
    """429 with Retry-After, 500s and a 500 after the message was posted: complete, once."""
    slack.inject(Fault.rate_limited("chat.postMessage", retry_after=1, times=2))
    slack.inject(Fault.server_error("files.completeUploadExternal", times=1))
    slack.inject(Fault.server_error("chat.postMessage", after=1, times=1, after_effect=True))
    done = tick(local_env(published, slack))
    assert done.returncode == ExitCode.REGRESSIONS, done.stderr
    assert_complete_once(slack)


def test_a_slack_outage_leaves_the_report_pending_and_the_next_tick_finishes_it(
    published: Path, slack: SlackServer
) -> None:
    """Slack down for the whole tick: exit 1, last_known_dir not advanced; back up: completed."""
    outage = slack.inject(Fault.server_error("*", times=None))
    env = local_env(published, slack)
    failed = tick(env)
    assert failed.returncode == ExitCode.FAILED
    assert "the next tick resumes it" in failed.stderr
    assert not (published / "watch" / "last_known_dir").exists()
    slack.faults.remove(outage)
    resumed = tick(env)
    assert resumed.returncode == ExitCode.REGRESSIONS, resumed.stderr
    assert_complete_once(slack)
    assert (published / "watch" / "last_known_dir").read_text().strip() == RUNS[-1]


def test_a_group_readable_token_file_is_refused(
    published: Path, slack: SlackServer, tmp_path: Path
) -> None:
    """A token file readable by others is refused with the chmod fix; nothing is posted."""
    token_file = tmp_path / "slack_token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o644)
    env = local_env(published, slack, BENCH_SLACK_TOKEN_FILE=str(token_file))
    del env["SLACK_BOT_TOKEN"]
    done = tick(env)
    assert done.returncode != 0
    assert "chmod 600" in done.stderr and str(token_file) in done.stderr
    assert TOKEN not in done.stderr
    assert slack.messages_in(CHANNEL) == []
    token_file.chmod(0o600)
    assert tick(env).returncode == ExitCode.REGRESSIONS
    assert_complete_once(slack)
