"""The embedded demo: a small real benchmark project, turned into a local git repository.

``PROJECT_DIR`` holds the sources (``snoop_demo.py``, ``build.py``, ``README.md``).
``ensure_demo_origin`` makes them a git repository (branch ``master``, one commit tagged ``v1.0``)
that the pipeline clones and benchmarks exactly like the Tezos repository. The environment
variable ``SLOWDOWN_ENV`` slows one benchmark down, moving ``SLOWED_PARAMETER`` in
``SLOWED_FILE`` by about the factor given.

Git is run isolated from the user's and the system's configuration, with a fixed identity and
fixed dates, so creation works under cron's empty environment and always yields the same commit.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

__all__ = [
    "DEMO_BRANCH",
    "DEMO_TAG",
    "PROJECT_DIR",
    "PROJECT_FILES",
    "SLOWDOWN_ENV",
    "SLOWED_FILE",
    "SLOWED_PARAMETER",
    "SNOOP_OUTPUT",
    "DemoError",
    "demo_commands",
    "ensure_demo_origin",
]

PROJECT_DIR: Path = Path(__file__).resolve().parent / "project"
PROJECT_FILES: tuple[str, ...] = ("README.md", "build.py", "snoop_demo.py")

DEMO_BRANCH = "master"
DEMO_TAG = "v1.0"
SNOOP_OUTPUT = "_snoop"

SLOWDOWN_ENV = "BENCH_DEMO_SLOWDOWN"
SLOWED_PARAMETER = "interpreter/N_IConcat_string_coeff"
SLOWED_FILE = "inferred_interpreter.csv"

_IDENTITY = {
    "GIT_AUTHOR_NAME": "Benchmark Demo",
    "GIT_AUTHOR_EMAIL": "bench-demo@localhost",
    "GIT_AUTHOR_DATE": "2024-01-01T00:00:00+0000",
    "GIT_COMMITTER_NAME": "Benchmark Demo",
    "GIT_COMMITTER_EMAIL": "bench-demo@localhost",
    "GIT_COMMITTER_DATE": "2024-01-01T00:00:00+0000",
}


class DemoError(RuntimeError):
    """The demo repository could not be created (git missing or failing, unusable path)."""


def demo_commands(python: str) -> tuple[list[str], list[str]]:
    """The (build argv, benchmark argv) to run inside a checkout of the demo repository."""
    return [python, "build.py"], [python, "snoop_demo.py", "--output", SNOOP_OUTPUT]


def _git_env() -> dict[str, str]:
    """The caller's environment without git overrides, isolated from any git configuration."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("GIT_")}
    env.update(_IDENTITY)
    env.update(
        GIT_CONFIG_NOSYSTEM="1",
        GIT_CONFIG_GLOBAL=os.devnull,
        GIT_TERMINAL_PROMPT="0",
        LC_ALL="C",
    )
    return env


def _git(repo: Path, *args: str) -> None:
    command = ["git", "-C", str(repo), *args]
    try:
        result = subprocess.run(
            command, env=_git_env(), capture_output=True, text=True, check=False
        )
    except FileNotFoundError:
        raise DemoError(f"git is not installed or not on PATH (needed for {command})") from None
    if result.returncode != 0:
        raise DemoError(
            f"{' '.join(command)} failed with exit status {result.returncode}: "
            f"{result.stderr.strip()}"
        )


def _is_repository(path: Path) -> bool:
    return (path / ".git").exists()


def _build(work: Path) -> None:
    """Make ``work`` (an empty directory) the demo repository."""
    _git(work, "-c", f"init.defaultBranch={DEMO_BRANCH}", "init", "--quiet")
    _git(work, "symbolic-ref", "HEAD", f"refs/heads/{DEMO_BRANCH}")
    for name in PROJECT_FILES:
        shutil.copyfile(PROJECT_DIR / name, work / name)
    _git(work, "add", "--", *PROJECT_FILES)
    _git(work, "commit", "--quiet", "--no-verify", "-m", "Demo benchmark project")
    _git(work, "tag", "-a", DEMO_TAG, "-m", f"Demo benchmark project {DEMO_TAG}")


def ensure_demo_origin(origin: Path) -> Path:
    """Create the demo repository at ``origin`` unless it is already a git repository.

    The repository is built in a temporary sibling directory and renamed into place, so a failed
    or concurrent creation never leaves a half-made repository at ``origin``.
    """
    if _is_repository(origin):
        return origin
    if origin.exists() and (not origin.is_dir() or any(origin.iterdir())):
        raise DemoError(f"{origin} exists and is not a git repository; remove it or pick another")
    try:
        origin.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{origin.name}.", dir=origin.parent))
        work.chmod(0o755)  # mkdtemp's 0700 would hide the repository from other users
    except OSError as error:
        raise DemoError(f"cannot create the demo repository at {origin}: {error}") from None
    try:
        _build(work)
        os.replace(work, origin)
    except OSError as error:
        if _is_repository(origin):  # another process made it first
            return origin
        raise DemoError(f"cannot create the demo repository at {origin}: {error}") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return origin
