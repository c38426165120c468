"""The watcher's tick on a local store with the outbox: history, reports, exactly once."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.config import load_settings
from bench.errors import ExitCode
from bench.notify import OutboxNotifier
from bench.runs import parse_run_name
from bench.store import LocalStore
from bench.store.base import complete_key, inference_key
from bench.watch import JOURNAL, WatchOptions, tick
from tests.conftest import BIN, clean_env

SHARED = Path(__file__).resolve().parents[2] / "shared" / "reference" / "gas_parameter_diff"
RUNS = [
    "_snoop_20230316_1052_v16.0-rc1-1722-g1f07d32f94",
    "_snoop_20230321_2000_v16.0-rc1-1801-g2a3b4c5d6e",
    "_snoop_20230324_2000_v16.0-rc1-1850-g3b4c5d6e7f",
]
#: What a report of the reference history delivers, in order (3 alerted parameters: 3 plots).
ITEMS = [
    "analysing",
    "summary",
    "plot:1",
    "plot:2",
    "plot:3",
    "file:alerts",
    "file:selected.csv",
    "file:all.csv",
    "file:reference.csv",
    "file:previous.csv",
]


def shared_input(run: str) -> bytes:
    path = SHARED / "input_csvs" / run / "inferred_interpreter.csv"
    assert path.exists(), f"{path} is missing: the tests need ../shared beside the project"
    return path.read_bytes()


def publish(store: LocalStore, run: str, files: dict[str, bytes], *, success: bool = True) -> None:
    """What the reference host's upload leaves in the store."""
    run_id = parse_run_name(run)
    for name, data in files.items():
        store.put_bytes(complete_key(run_id, f"inference_results/{name}"), data)
        store.put_bytes(inference_key(run_id, name), data)
    if success:
        store.put_bytes(complete_key(run_id, "SUCCESS"), b"1\n")


class Watcher:
    """A watcher host on a local store, ticking in-process."""

    def __init__(self, tmp: Path, *, detector: str = "legacy") -> None:
        self.store = LocalStore(tmp / "store")
        self.root = tmp / "watch"
        self.settings = load_settings(
            environ={},
            cwd=tmp,
            overrides=[
                f"store.url={(tmp / 'store').as_uri()}",
                f"watch.root={self.root}",
                f"watch.detector={detector}",
            ],
        )
        self.outbox = OutboxNotifier(self.root / "outbox")

    def tick(self, **options: Any) -> Any:
        return tick(
            self.settings, store=self.store, channel=self.outbox, options=WatchOptions(**options)
        )

    def delivered(self) -> list[dict[str, Any]]:
        box = self.root / "outbox"
        return [json.loads(p.read_text()) for p in sorted(box.glob("*.json"))]

    def report(self, run: str) -> Path:
        return self.root / "reports" / run


@pytest.fixture
def watcher(tmp_path: Path) -> Watcher:
    return Watcher(tmp_path)


def test_reports_of_the_reference_history_equal_the_old_tools_outputs(watcher: Watcher) -> None:
    """On the three real runs, the report files equal gas_parameter_diff's, byte for byte."""
    for run in RUNS:
        publish(watcher.store, run, {"inferred_interpreter.csv": shared_input(run)})
    outcome = watcher.tick()
    assert outcome.exit_code == ExitCode.REGRESSIONS
    report = watcher.report(RUNS[-1])
    assert (report / "all.csv").read_bytes() == (
        SHARED / "all_inferred_interpreter.csv"
    ).read_bytes()
    for kind in ("reference", "previous"):
        assert (report / f"{kind}.csv").read_bytes() == (
            SHARED / f"{kind}_inferred_interpreter.csv"
        ).read_bytes()
    assert (report / "alerts").read_bytes() == (SHARED / "alerts").read_bytes()
    assert (report / "selected.csv").read_bytes() == (SHARED / "selected.csv").read_bytes()


def test_summary_words_direction_and_counts(watcher: Watcher) -> None:
    """The summary separates costs that went up from those that went down, new and removed."""
    for run in RUNS:
        publish(watcher.store, run, {"inferred_interpreter.csv": shared_input(run)})
    watcher.tick()
    summary = json.loads((watcher.report(RUNS[-1]) / "summary.json").read_text())
    changes = {c["parameter"]: c for c in summary["changes"]}
    assert changes["interpreter/N_IMul_int_coeff"]["direction"] == "regression"
    assert changes["interpreter/N_IAdd_int_coeff"]["direction"] == "improvement"
    assert summary["counts"]["new_parameters"] == 1
    assert summary["counts"]["removed_parameters"] == 1
    assert "R2_score-interpreter-interpreter/N_IAdd_int" not in changes
    [_, message] = [d for d in watcher.delivered() if d["kind"] == "message"]
    text = message["text"]
    assert "Regressions found" in text
    assert "interpreter/N_IMul_int_coeff (inferred_interpreter.csv) up" in text
    assert "interpreter/N_IAdd_int_coeff (inferred_interpreter.csv) down 100.0%" in text
    assert len(message["blocks"]) <= 50
    assert all(len(b.get("text", {}).get("text", "")) <= 3000 for b in message["blocks"])


def test_a_report_is_delivered_once_in_order_and_later_ticks_post_nothing(
    watcher: Watcher,
) -> None:
    """Analysing message, summary, the top plots, then the five files; later ticks: nothing."""
    for run in RUNS:
        publish(watcher.store, run, {"inferred_interpreter.csv": shared_input(run)})
    watcher.tick()
    delivered = watcher.delivered()
    assert [d["kind"] for d in delivered] == ["message", "message"] + ["file"] * 8
    assert "I will look for regressions" in delivered[0]["text"]
    assert all(d["filename"].endswith(".png") for d in delivered[2:5])
    report = watcher.report(RUNS[-1])
    plots = json.loads((report / "summary.json").read_text())["plots"]
    html = (report / "index.html").read_text()
    assert plots and all(f'src="{plot}"' in html for plot in plots)
    assert RUNS[-1] in (watcher.root / "reports" / "index.html").read_text()
    assert [d["filename"] for d in delivered[5:]] == [
        "alerts",
        "selected.csv",
        "all.csv",
        "reference.csv",
        "previous.csv",
    ]
    assert (watcher.root / "last_known_dir").read_text().strip() == RUNS[-1]
    for _ in range(2):
        again = watcher.tick()
        assert again.status == "idle" and again.exit_code == ExitCode.OK
    assert len(watcher.delivered()) == len(delivered)


def test_a_run_without_success_is_not_analysed(watcher: Watcher) -> None:
    """A newer run still uploading (no SUCCESS) is ignored: the newest successful one counts."""
    publish(watcher.store, RUNS[0], {"inferred_interpreter.csv": shared_input(RUNS[0])})
    publish(
        watcher.store, RUNS[1], {"inferred_interpreter.csv": shared_input(RUNS[1])}, success=False
    )
    outcome = watcher.tick()
    assert outcome.run == parse_run_name(RUNS[0])
    assert not watcher.report(RUNS[1]).exists()


def test_first_dir_and_ref_dir_choose_the_history_and_the_reference(watcher: Watcher) -> None:
    """FIRST_DIR drops older runs; an explicit REF_DIR becomes the first column of all.csv."""
    for run in RUNS:
        publish(watcher.store, run, {"inferred_interpreter.csv": shared_input(run)})
    watcher.tick(first_dir=RUNS[1], ref_dir=RUNS[0])
    report = watcher.report(RUNS[-1])
    header = (report / "all.csv").read_text().splitlines()[0].split(",")
    assert header[7:] == [
        f"input_csvs/{r}/inferred_interpreter.csv" for r in (RUNS[0], RUNS[2], RUNS[1])
    ]
    summary = json.loads((report / "summary.json").read_text())
    assert summary["first"] == RUNS[1] and summary["reference"] == RUNS[0]


def test_renamings_join_a_renamed_parameters_history(watcher: Watcher, tmp_path: Path) -> None:
    """With `new,old` in the renamings file, the renamed parameter keeps one row, no new/removed."""
    publish(watcher.store, RUNS[0], {"inferred_a.csv": b"m/old_coeff,m/x_coeff\n1.,2.\n"})
    publish(watcher.store, RUNS[1], {"inferred_a.csv": b"m/new_coeff,m/x_coeff\n1.05,2.\n"})
    renamings = tmp_path / "renamings"
    renamings.write_text("# new,old\nm/new_coeff,m/old_coeff\n")
    watcher.tick(renamings=renamings)
    report = watcher.report(RUNS[1])
    rows = [line.split(",")[0] for line in (report / "all.csv").read_text().splitlines()[1:]]
    assert rows == ["m/new_coeff", "m/x_coeff"]
    summary = json.loads((report / "summary.json").read_text())
    assert summary["counts"]["new_parameters"] == summary["counts"]["removed_parameters"] == 0


def test_new_and_missing_files_are_reported_as_such(watcher: Watcher) -> None:
    """A new model file and a file missing from the newest run are named, not regressions."""
    publish(
        watcher.store,
        RUNS[0],
        {"inferred_a.csv": b"p_coeff\n1.\n", "inferred_gone.csv": b"q_coeff\n1.\n"},
    )
    publish(
        watcher.store,
        RUNS[1],
        {"inferred_a.csv": b"p_coeff\n1.\n", "inferred_new.csv": b"r_coeff\n5.\n"},
    )
    outcome = watcher.tick()
    assert outcome.exit_code == ExitCode.OK
    summary = json.loads((watcher.report(RUNS[1]) / "summary.json").read_text())
    assert summary["new_files"] == ["inferred_new.csv"]
    assert summary["removed_files"] == ["inferred_gone.csv"]
    assert summary["counts"]["regressions"] == 0


BAD_FILES = st.one_of(
    st.binary(max_size=200),
    st.sampled_from(
        [
            b"",
            b"a,b\n",
            b"a,b\n1.\n",
            b"a,b\n1.,x\n",
            b"\xff\xfe\n1.\n",
            b"a,a\n1.,2.\n",
            b"a\n1.\n2.\n3.\n",
        ]
    ),
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(bad=st.lists(BAD_FILES, min_size=1, max_size=3))
def test_malformed_csvs_never_crash_a_tick_and_are_each_reported(
    tmp_path_factory: pytest.TempPathFactory, bad: list[bytes]
) -> None:
    """Whatever the bad files hold, the tick reports each unreadable one and analyses the rest."""
    watcher = Watcher(tmp_path_factory.mktemp("w"))
    good = {"inferred_good.csv": b"g_coeff,g_const\n1.,20.\n"}
    publish(watcher.store, RUNS[0], good)
    newest = {**good, **{f"inferred_bad{i}.csv": data for i, data in enumerate(bad)}}
    publish(watcher.store, RUNS[1], newest)
    outcome = watcher.tick()
    assert outcome.status == "reported"
    summary = json.loads((watcher.report(RUNS[1]) / "summary.json").read_text())
    reported = {p["file"] for p in summary["problems"]}
    assert "inferred_good.csv" not in reported
    from bench.snoop import SnoopFormatError, parse_inference_text

    for i, data in enumerate(bad):
        try:
            parse_inference_text(data, Path("x"))
        except SnoopFormatError:
            assert f"inferred_bad{i}.csv" in reported
    assert "g_coeff" in (watcher.report(RUNS[1]) / "all.csv").read_text()


@pytest.mark.parametrize(
    "point",
    [f"deliver:{item}:{when}" for item in ITEMS for when in ("sending", "delivered")]
    + ["report:analysed"],
)
def test_a_tick_killed_at_any_point_is_completed_by_the_next_without_duplicates(
    tmp_path: Path, point: str
) -> None:
    """SIGKILL at each point of the report sequence; the next tick completes it exactly once."""
    store = LocalStore(tmp_path / "store")
    for run in RUNS:
        publish(store, run, {"inferred_interpreter.csv": shared_input(run)})
    env = clean_env(
        BENCH_STORE_URL=(tmp_path / "store").as_uri(),
        BENCH_WATCH_ROOT=str(tmp_path / "watch"),
        BENCH_REFERENCE_ROOT=str(tmp_path),
        BENCH_WATCH_DETECTOR="legacy",
    )
    command = [str(BIN / "watch_regressions"), "-q"]
    killed = subprocess.run(
        command,
        env={**env, "BENCH_FAILPOINT": point},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert killed.returncode == -9, killed.stderr
    assert not (tmp_path / "watch" / "last_known_dir").exists()

    resumed = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert resumed.returncode == ExitCode.REGRESSIONS, resumed.stderr
    box = tmp_path / "watch" / "outbox"
    delivered = [json.loads(p.read_text()) for p in sorted(box.glob("*.json"))]
    keys = [d.get("title") or d["text"].splitlines()[0] for d in delivered]
    assert len(keys) == len(set(keys)) == len(ITEMS), keys
    journal = (tmp_path / "watch" / "reports" / RUNS[-1] / JOURNAL).read_text()
    assert '"_report"' in journal
    idle = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert idle.returncode == 0
    assert len(list(box.glob("*.json"))) == len(ITEMS)


def test_rerun_posts_the_report_again_on_purpose(watcher: Watcher) -> None:
    """--rerun RUN re-analyses and re-delivers a report already delivered."""
    for run in RUNS:
        publish(watcher.store, run, {"inferred_interpreter.csv": shared_input(run)})
    watcher.tick()
    first = len(watcher.delivered())
    outcome = watcher.tick(rerun=RUNS[-1])
    assert outcome.status == "reported"
    assert len(watcher.delivered()) == 2 * first
    assert (watcher.root / "reports" / f"{RUNS[-1]}.rerun-1" / "all.csv").exists()


def test_an_idle_tick_imports_neither_pandas_nor_matplotlib(tmp_path: Path) -> None:
    """The nothing-new path stays light: no pandas, no matplotlib imported."""
    store = LocalStore(tmp_path / "store")
    publish(store, RUNS[0], {"inferred_a.csv": b"p_coeff\n1.\n"})
    env = clean_env(
        BENCH_STORE_URL=(tmp_path / "store").as_uri(),
        BENCH_WATCH_ROOT=str(tmp_path / "watch"),
        BENCH_REFERENCE_ROOT=str(tmp_path),
    )
    first = subprocess.run(
        [str(BIN / "watch_regressions"), "-q"],
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert first.returncode == 0, first.stderr
    _, imported = tick_importing(env)
    assert "pandas" not in imported and "matplotlib" not in imported


def tick_importing(
    env: dict[str, str], *args: str
) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """A successful watcher tick run under ``python -X importtime``, and the top-level
    packages it imported."""
    tick = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "bench.cli.watch_regressions", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert tick.returncode == 0, tick.stderr
    imported = {
        line.split("|")[-1].strip().split(".")[0]
        for line in tick.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert "bench" in imported, "importtime output was parsed"
    return tick, imported


def test_an_idle_tick_on_s3_with_static_keys_imports_neither_botocore_nor_slack_sdk(
    s3: Any, bucket: str, tmp_path: Path
) -> None:
    """Nothing new in an S3 bucket, static keys in the environment, Slack configured: at most
    two store requests, and none of botocore, boto3, slack_sdk, pandas, matplotlib imported
    (the listing goes through the standard library, Slack's client is made on first use)."""
    client = s3.client()
    for run in RUNS:
        key = f"team/{complete_key(parse_run_name(run), 'SUCCESS')}"
        client.put_object(Bucket=bucket, Key=key, Body=b"1\n")
    watch_root = tmp_path / "watch"
    watch_root.mkdir()
    (watch_root / "last_known_dir").write_text(RUNS[-1] + "\n")
    keys = {
        **s3.credentials_env(),
        "AWS_SECRET_ACCESS_KEY": "secret-never-logged",  # moto does not check it here
        "AWS_SESSION_TOKEN": "token-never-logged",
    }
    env = clean_env(
        **keys,
        AWS_CONFIG_FILE=str(tmp_path / "no-aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "no-aws-credentials"),
        BENCH_STORE_URL=f"s3://{bucket}/team",
        BENCH_STORE_ENDPOINT_URL=s3.endpoint,
        BENCH_WATCH_ROOT=str(watch_root),
        BENCH_REFERENCE_ROOT=str(tmp_path),
        SLACK_BOT_TOKEN="xoxb-never-used",
        SLACK_API_URL="http://127.0.0.1:9/api/",
        BENCH_SLACK_CHANNEL="C0000000000",
    )
    s3.reset_log()
    idle, imported = tick_importing(env, "-v")
    assert s3.count() <= 2, [(r.method, r.path, r.query) for r in s3.requests]
    for heavy in ("botocore", "boto3", "slack_sdk", "pandas", "matplotlib"):
        assert heavy not in imported, heavy
    assert "S3 listings through the standard library" in idle.stderr
    for secret in ("xoxb-never-used", "secret-never-logged", "token-never-logged"):
        assert secret not in idle.stdout + idle.stderr


def stable_history(runs: int, *, step_at: int | None = None) -> list[tuple[str, bytes]]:
    """Runs of one file with 12 parameters and ~2% noise; ``step_at``: p03 up 60% from there."""
    import random

    rng = random.Random(5)
    out = []
    for i in range(runs):
        name = f"_snoop_202601{1 + i // 2:02d}_{20 if i % 2 else 8:02d}00_v1.0-{i}-gabc{i:04d}"
        values = []
        for p in range(12):
            level = (
                100.0 * (p + 1) * (1.6 if step_at is not None and i >= step_at and p == 3 else 1.0)
            )
            values.append(level * (1 + rng.gauss(0, 0.02)))
        header = ",".join(f"m/p{p:02d}_coeff" for p in range(12))
        data = ",".join(f"{v:.6f}" for v in values)
        out.append((name, f"{header}\n{data}\n".encode()))
    return out


def test_the_default_detector_reports_a_lasting_step_once(tmp_path: Path) -> None:
    """One tick per new run, as under cron: a lasting 60% step in one parameter is reported
    once (at its run or within 2 runs), with a reason; the runs after it report nothing."""
    watcher = Watcher(tmp_path, detector="default")
    history = stable_history(16, step_at=12)
    for name, data in history[:12]:
        publish(watcher.store, name, {"inferred_m.csv": data})
    first = watcher.tick()
    assert first.exit_code == ExitCode.OK
    reported = []
    for name, data in history[12:]:
        publish(watcher.store, name, {"inferred_m.csv": data})
        outcome = watcher.tick()
        summary = json.loads((outcome.report_dir / "summary.json").read_text())
        assert summary["detector"] == "default"
        reported += [(name, c) for c in summary["changes"]]
    assert [c["parameter"] for _, c in reported] == ["m/p03_coeff"], reported
    at, change = reported[0]
    assert at in [name for name, _ in history[12:15]], "within 2 runs of the step"
    assert change["direction"] == "regression" and change["reason"] and change["score"] > 1
    assert (watcher.root / "detector_state.json").exists()


def test_the_default_detector_stays_quiet_on_noise(tmp_path: Path) -> None:
    """No step: a stable noisy history gives no alert at its newest run."""
    watcher = Watcher(tmp_path, detector="default")
    for name, data in stable_history(14):
        publish(watcher.store, name, {"inferred_m.csv": data})
    outcome = watcher.tick()
    assert outcome.exit_code == ExitCode.OK
    summary = json.loads((outcome.report_dir / "summary.json").read_text())
    assert summary["changes"] == []
