"""Shared fixtures: a reference host's work directory driven through the real console scripts."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

PROJECT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def clean_env(**extra: str) -> dict[str, str]:
    """The test runner's environment without any BENCH_*/Slack/AWS settings leaking in."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("BENCH_", "SLACK_", "AWS_")) and k not in {"FIRST_DIR", "REF_DIR"}
    }
    env.update(extra)
    return env


def toml_value(value: Any) -> str:
    """A TOML literal for the simple values the tests use."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        return json.dumps(str(value))
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(value)


@dataclass
class Host:
    """A reference host's work directory in a temp dir, and ways to run the commands on it."""

    root: Path
    config: Path

    def configure(self, *, store: dict[str, Any] | None = None, **reference: Any) -> Path:
        """Write the configuration: [reference] keys given here; [store] (default: a local
        store next to the root) from ``store`` or ``store_url``."""
        store = dict(store or {})
        store.setdefault("url", reference.pop("store_url", (self.root / "store").as_uri()))
        lines = ["[reference]", f"root = {toml_value(self.root)}"]
        lines += [f"{k} = {toml_value(v)}" for k, v in reference.items()]
        lines += ["", "[store]", *(f"{k} = {toml_value(v)}" for k, v in store.items()), ""]
        self.config.write_text("\n".join(lines), encoding="utf-8")
        return self.config

    def command(self, script: str, *args: str) -> list[str]:
        return [str(BIN / script), "--config", str(self.config), *args]

    def run(
        self, script: str, *args: str, env: dict[str, str] | None = None, timeout: float = 180
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command(script, *args),
            capture_output=True,
            text=True,
            env=env or clean_env(),
            cwd=self.root,
            timeout=timeout,
            check=False,
        )

    def popen(self, script: str, *args: str, env: dict[str, str] | None = None) -> Any:
        return subprocess.Popen(
            self.command(script, *args),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env or clean_env(),
            cwd=self.root,
        )

    # --- a benchmark the test holds in place ---------------------------------------------------

    @property
    def gate(self) -> Path:
        return self.root / "benchmark-gate"

    def gated_benchmark(self) -> str:
        """A benchmark command that waits (at most 120 s) for :meth:`open_gate`, then runs the
        demo: a test can look at a run *during* its benchmark with no fixed delay for a loaded
        machine to overrun."""
        return (
            f"i=0; while [ ! -e {shlex.quote(str(self.gate))} ] && [ $i -lt 1200 ]; "
            "do sleep 0.1; i=$((i+1)); done; {python} snoop_demo.py --output _snoop"
        )

    def open_gate(self) -> None:
        self.gate.touch()

    # --- what a person would look at ----------------------------------------------------------

    def run_dirs(self) -> list[Path]:
        results = self.root / "snoop_results"
        return sorted(p for p in results.iterdir() if p.is_dir()) if results.exists() else []

    def only_run_dir(self) -> Path:
        dirs = self.run_dirs()
        assert len(dirs) == 1, dirs
        return dirs[0]

    def run_json(self, run_dir: Path) -> dict[str, Any]:
        return json.loads((run_dir / "run.json").read_text())

    def outbox(self, event: str | None = None) -> list[str]:
        box = self.root / "outbox"
        if not box.exists():
            return []
        pattern = f"*-{event}.txt" if event else "*.txt"
        return [p.read_text() for p in sorted(box.glob(pattern))]

    def marker(self, name: str) -> str | None:
        path = self.root / name
        return path.read_text().strip() if path.exists() else None


@pytest.fixture
def host(tmp_path: Path) -> Host:
    root = tmp_path / "work"
    root.mkdir()
    h = Host(root=root, config=tmp_path / "bench.toml")
    h.configure()
    return h


def wait_for(predicate: Callable[[], bool], *, timeout: float = 60, what: str = "") -> None:
    """Poll until ``predicate()``; fail the test with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what or predicate}")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0): look at its state.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def group_gone(pgid: int) -> bool:
    """True if no live (non-zombie) process is left in process group ``pgid``."""
    from bench.steps import live_members

    return not live_members(pgid)


@pytest.fixture
def s3() -> Iterator[Any]:
    """moto's S3 on 127.0.0.1 over HTTP, recording requests and able to inject faults."""
    from bench.testing.s3server import S3Server

    with S3Server() as server:
        yield server


_buckets = iter(range(10**6))


@pytest.fixture
def bucket(s3: Any) -> str:
    """A new empty bucket on the test server."""
    name = f"bench-test-{os.getpid()}-{next(_buckets)}"
    s3.client().create_bucket(Bucket=name)
    return name


@pytest.fixture
def reap() -> Iterator[list[Any]]:
    """Processes started by a test; killed at the end whatever happens."""
    procs: list[Any] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)
