"""deploy/: the installer run into a temporary root, the schedules, the units, the manifests."""

from __future__ import annotations

import configparser
import itertools
import json
import os
import secrets
import shutil
import stat
import subprocess
import sys
import tomllib
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tests.conftest import PROJECT, clean_env

DEPLOY = PROJECT / "deploy"
PARIS = ZoneInfo("Europe/Paris")

# What the installer needs from a project; copied once so that edits made to the working tree
# while the tests run cannot change what two consecutive installs see.
SOURCE_PARTS = ("pyproject.toml", "README.md", "bench", "jobs", "crontab", "deploy")

# Tuesdays and Fridays at 20:00 Paris time around the 2026 spring DST change (29 March).
REFERENCE_FIRES = [
    datetime(2026, 3, 20, 20, 0, tzinfo=PARIS),
    datetime(2026, 3, 24, 20, 0, tzinfo=PARIS),
    datetime(2026, 3, 27, 20, 0, tzinfo=PARIS),
    datetime(2026, 3, 31, 20, 0, tzinfo=PARIS),
    datetime(2026, 4, 3, 20, 0, tzinfo=PARIS),
    datetime(2026, 4, 7, 20, 0, tzinfo=PARIS),
]
REFERENCE_START = datetime(2026, 3, 19, 12, 0, tzinfo=PARIS)


# --- fixtures and helpers ----------


@pytest.fixture(scope="session")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A frozen copy of the parts of the project the installer installs."""
    root = tmp_path_factory.mktemp("source") / "gas-bench"
    root.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for part in SOURCE_PARTS:
        src = PROJECT / part
        if src.is_dir():
            shutil.copytree(src, root / part, ignore=ignore)
        else:
            shutil.copy2(src, root / part)
    return root


@pytest.fixture
def user() -> str:
    """A made-up service user that does not exist on this machine."""
    name = f"gbt{secrets.token_hex(4)}"
    assert not user_exists(name)
    return name


def user_exists(name: str) -> bool:
    return subprocess.run(["getent", "passwd", name], capture_output=True).returncode == 0


Installer = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def install(source: Path, tmp_path: Path, user: str) -> Installer:
    """Run the installer (from the frozen source) into ``tmp_path/root`` with the made-up user."""

    def run(
        *args: str, venv: bool = False, src: Path | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        src = src or source
        command = ["sh", str(src / "deploy" / "install.sh"), "--prefix", str(tmp_path / "root")]
        command += ["--user", user, "--python", sys.executable]
        if not venv:
            command.append("--no-venv")
        return subprocess.run(
            [*command, *args],
            capture_output=True,
            text=True,
            env=clean_env(),
            timeout=timeout,
            check=False,
        )

    return run


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def snapshot(root: Path) -> dict[str, tuple[int, bytes | None]]:
    """Every path under ``root`` with its mode and, for files, its content."""
    state: dict[str, tuple[int, bytes | None]] = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        content = path.read_bytes() if stat.S_ISREG(info.st_mode) else None
        state[str(path.relative_to(root))] = (info.st_mode, content)
    return state


def crontab_entries(text: str) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """(environment settings, [(5-field schedule, command)]) of a crontab's text."""
    env: dict[str, str] = {}
    entries: list[tuple[str, str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        first = line.split()[0]
        if "=" in first and not first[0].isdigit() and first[0] != "*":
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip()
            continue
        fields = line.split(None, 5)
        entries.append((" ".join(fields[:5]), fields[5]))
    return env, entries


def next_fires(schedule: str, start: datetime, count: int) -> list[datetime]:
    from croniter import croniter

    it = croniter(schedule, start)
    return [it.get_next(datetime) for _ in range(count)]


def reference_expected_crontab(user: str) -> str:
    return (
        "# BEGIN gas-bench-reference\n"
        "# Installed by /opt/gas-bench/deploy/install.sh --role reference: "
        "run it again rather than edit this block.\n"
        "CRON_TZ=Europe/Paris\n"
        "SHELL=/bin/sh\n"
        "BENCH_CONFIG=/etc/gas-bench/reference.toml\n"
        "0 20 * * tue,fri /opt/gas-bench/jobs/cronjob.sh\n"
        "# END gas-bench-reference\n"
    )


def watcher_expected_crontab(log: str = "/data/redbull/watch_regressions.log") -> str:
    return (
        "# BEGIN gas-bench-watcher\n"
        "# Installed by /opt/gas-bench/deploy/install.sh --role watcher: "
        "run it again rather than edit this block.\n"
        f"# Ticks append to {log}; a failed tick (exit status not 0 or 5) mails its tail.\n"
        "SHELL=/bin/sh\n"
        "BENCH_CONFIG=/etc/gas-bench/watcher.toml\n"
        f"*/10 * * * * /opt/gas-bench/jobs/watch_regressions.sh >>{log} 2>&1 "
        f"|| [ $? -eq 5 ] || tail -n 20 {log}\n"
        "# END gas-bench-watcher\n"
    )


# --- the installer ----------


def test_help_describes_every_option(source: Path) -> None:
    """--help exits 0 and documents each option, including what --prefix and --no-venv skip."""
    result = subprocess.run(
        ["sh", str(source / "deploy/install.sh"), "--help"], capture_output=True, text=True
    )
    out = ok(result)
    for option in (
        "--role",
        "--user",
        "--prefix",
        "--source",
        "--config-from",
        "--work-dir",
        "--store-url",
        "--slack-token-file",
        "--instance",
        "--systemd",
        "--no-venv",
        "--python",
    ):
        assert option in out, option
    assert "install.log" in out
    assert "never overwritten" in out


def test_usage_errors_change_nothing(install: Installer, tmp_path: Path) -> None:
    """An unknown role or option exits 2 before creating anything, even the prefix."""
    for args in (("--role", "nope"), ("--role", "reference", "--bogus"), ()):
        result = install(*args)
        assert result.returncode == 2, result
        assert result.stderr.startswith("install.sh: ")
    assert not (tmp_path / "root").exists()


def test_reference_install_creates_the_expected_files(
    install: Installer, tmp_path: Path, user: str, source: Path
) -> None:
    """Outside the project copy, a reference install creates exactly the expected files."""
    ok(install("--role", "reference"))
    root = tmp_path / "root"
    outside = {
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file() and not p.is_relative_to(root / "opt")
    }
    assert outside == {
        "etc/gas-bench/reference.toml",
        "etc/logrotate.d/gas-bench",
        f"home/{user}/slack_token",
        f"var/spool/cron/crontabs/{user}",
        "var/lib/gas-bench/install.log",
    }
    assert (root / "data/tezos-benchmarks").is_dir()  # the profile's reference.root
    app = root / "opt/gas-bench"
    assert (app / "jobs/cronjob.sh").read_bytes() == (source / "jobs/cronjob.sh").read_bytes()
    assert (app / "bench/profiles/tezos.toml").is_file()
    assert not (app / ".venv").exists()  # --no-venv


def test_reference_crontab_is_exactly_the_role_block(
    install: Installer, tmp_path: Path, user: str
) -> None:
    """The installed crontab is crontab/reference.crontab's entries with the installed paths."""
    ok(install("--role", "reference"))
    spool = tmp_path / "root/var/spool/cron/crontabs" / user
    assert spool.read_text() == reference_expected_crontab(user)
    assert mode(spool) == 0o600


def test_both_roles_share_the_crontab_and_logrotate_in_blocks(
    install: Installer, tmp_path: Path, user: str
) -> None:
    """Installing the watcher after the reference adds its block and keeps the reference's."""
    ok(install("--role", "reference"))
    ok(install("--role", "watcher"))
    root = tmp_path / "root"
    spool = root / "var/spool/cron/crontabs" / user
    assert spool.read_text() == reference_expected_crontab(user) + watcher_expected_crontab()
    rotate = (root / "etc/logrotate.d/gas-bench").read_text()
    assert rotate.count("# BEGIN gas-bench-") == 2
    assert "/data/tezos-benchmarks/anomalies {" in rotate
    assert "/data/redbull/watch_regressions.log {" in rotate


def test_modes_of_what_is_installed(install: Installer, tmp_path: Path, user: str) -> None:
    """Token 0600 and empty, configuration 0644 (the Tezos profile), directories 0755."""
    ok(install("--role", "reference"))
    root = tmp_path / "root"
    token = root / "home" / user / "slack_token"
    assert mode(token) == 0o600
    assert token.read_bytes() == b""
    config = root / "etc/gas-bench/reference.toml"
    assert mode(config) == 0o644
    assert config.read_bytes() == (PROJECT / "bench/profiles/tezos.toml").read_bytes()
    for directory in ("opt/gas-bench", "etc/gas-bench", "data/tezos-benchmarks"):
        assert mode(root / directory) == 0o755, directory
    assert mode(root / "home" / user) == 0o750
    assert mode(root / "opt/gas-bench/jobs/cronjob.sh") == 0o755
    assert mode(root / "opt/gas-bench/pyproject.toml") == 0o644
    assert mode(root / "etc/logrotate.d/gas-bench") == 0o644


def test_prefix_records_system_commands_instead_of_running_them(
    install: Installer, tmp_path: Path, user: str
) -> None:
    """With --prefix, useradd and chown go to install.log; the user is not created."""
    watched = [Path("/etc/gas-bench"), Path("/opt/gas-bench"), Path("/home") / user]
    watched += [Path("/etc/logrotate.d/gas-bench"), Path("/var/spool/cron/crontabs") / user]
    before = [p.exists() for p in watched]
    ok(install("--role", "reference"))
    log = (tmp_path / "root/var/lib/gas-bench/install.log").read_text().splitlines()
    assert log[1:] == [
        "useradd --system --user-group --create-home --home-dir "
        f"/home/{user} --shell /bin/sh --comment gas-bench {user}",
        f"chown {user}:{user} /data/tezos-benchmarks",
        f"chown {user}:{user} /home/{user}/slack_token",
    ]
    assert not user_exists(user)
    assert [p.exists() for p in watched] == before


def test_second_run_changes_nothing(install: Installer, tmp_path: Path) -> None:
    """Running the installer twice leaves the same paths, modes and contents, and says so."""
    for role in ("reference", "watcher"):
        ok(install("--role", role))
    before = snapshot(tmp_path / "root")
    for role in ("reference", "watcher"):
        out = ok(install("--role", role))
        assert snapshot(tmp_path / "root") == before
        statuses = {line.split()[0] for line in out.splitlines() if line.strip()}
        assert statuses <= {"mode", "unchanged", "kept", "skipped", "done"}, out
        assert out.splitlines()[-1] == "done       nothing changed"


def test_existing_configuration_is_never_overwritten(install: Installer, tmp_path: Path) -> None:
    """A configuration already there keeps its content and mode; the output says it was kept."""
    config = tmp_path / "root/etc/gas-bench/watcher.toml"
    config.parent.mkdir(parents=True)
    config.write_text('[watch]\nroot = "/srv/mine"\n# edited by hand\n')
    config.chmod(0o640)
    out = ok(install("--role", "watcher"))
    assert config.read_text() == '[watch]\nroot = "/srv/mine"\n# edited by hand\n'
    assert mode(config) == 0o640
    assert f"kept       {config}" in out
    assert (tmp_path / "root/srv/mine").is_dir()  # its work directory is the one it names
    assert (
        "/srv/mine/watch_regressions.log"
        in (tmp_path / "root/etc/logrotate.d/gas-bench").read_text()
    )


def test_option_contradicting_the_existing_configuration_is_refused(
    install: Installer, tmp_path: Path
) -> None:
    """--store-url differing from an existing configuration's: exit 2, nothing changed."""
    ok(install("--role", "watcher"))
    before = snapshot(tmp_path / "root")
    result = install("--role", "watcher", "--store-url", "s3://other/prefix")
    assert result.returncode == 2
    assert "store.url = s3://snoop-playground/mclaren, not s3://other/prefix" in result.stderr
    assert snapshot(tmp_path / "root") == before


def test_options_are_written_into_a_new_configuration(install: Installer, tmp_path: Path) -> None:
    """--work-dir, --store-url and --slack-token-file set those keys of a new configuration."""
    ok(
        install(
            "--role",
            "reference",
            "--work-dir",
            "/srv/bench",
            "--store-url",
            "s3://snoop-playground/hosta",
            "--slack-token-file",
            "/etc/gas-bench/slack_token",
        )
    )
    root = tmp_path / "root"
    config = tomllib.loads((root / "etc/gas-bench/reference.toml").read_text())
    profile = tomllib.loads((PROJECT / "bench/profiles/tezos.toml").read_text())
    assert config["reference"]["root"] == "/srv/bench"
    assert config["store"]["url"] == "s3://snoop-playground/hosta"
    assert config["slack"]["token_file"] == "/etc/gas-bench/slack_token"
    config["reference"]["root"] = profile["reference"]["root"]
    config["store"]["url"] = profile["store"]["url"]
    config["slack"]["token_file"] = profile["slack"]["token_file"]
    assert config == profile  # nothing else changed
    assert (root / "srv/bench").is_dir()
    assert mode(root / "etc/gas-bench/slack_token") == 0o600


def test_loose_token_file_mode_is_fixed_and_content_kept(
    install: Installer, tmp_path: Path, user: str
) -> None:
    """An existing token file readable by others becomes 0600, its token untouched."""
    token = tmp_path / "root/home" / user / "slack_token"
    token.parent.mkdir(parents=True)
    token.write_text("xoxb-secret\n")
    token.chmod(0o644)
    out = ok(install("--role", "watcher"))
    assert mode(token) == 0o600
    assert token.read_text() == "xoxb-secret\n"
    assert "fixed mode 600:" in out


def test_other_crontab_lines_are_kept(install: Installer, tmp_path: Path, user: str) -> None:
    """Lines of the user's crontab outside the installer's block survive installs."""
    spool = tmp_path / "root/var/spool/cron/crontabs" / user
    spool.parent.mkdir(parents=True)
    spool.write_text("MAILTO=ops@example.org\n15 3 * * * /usr/local/bin/backup\n")
    ok(install("--role", "reference"))
    ok(install("--role", "reference"))
    assert spool.read_text() == (
        "MAILTO=ops@example.org\n15 3 * * * /usr/local/bin/backup\n"
        + reference_expected_crontab(user)
    )


def test_project_copy_leaves_out_work_files_and_follows_the_source(
    install: Installer, tmp_path: Path, source: Path
) -> None:
    """No .venv, .git, caches or work files are copied; a file gone from the source goes."""
    src = tmp_path / "src"
    shutil.copytree(source, src)
    junk = [
        ".venv/bin/python",
        ".git/HEAD",
        "bench/__pycache__/x.cpython-311.pyc",
        ".pytest_cache/v",
        "cron_res",
        "current_run_dir",
        "anomalies",
        "snoop_results/_snoop_x/SUCCESS",
        "store/complete_results/x",
        "outbox/1.txt",
        "demo-checkout/x",
        "build/lib/x",
        "gas_bench_pipeline.egg-info/PKG-INFO",
    ]
    for rel in junk:
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text("junk")
    (src / "bench/obsolete.py").write_text("x = 1\n")
    ok(install("--role", "watcher", src=src))
    app = tmp_path / "root/opt/gas-bench"
    for rel in junk:
        assert not (app / rel).exists(), rel
    assert (app / "bench/obsolete.py").exists()
    (src / "bench/obsolete.py").unlink()
    out = ok(install("--role", "watcher", src=src))
    assert not (app / "bench/obsolete.py").exists()
    assert f"removed    {app}/bench/obsolete.py" in out


def test_systemd_replaces_the_crontab_and_back(
    install: Installer, tmp_path: Path, user: str
) -> None:
    """--systemd installs the units (User=, EnvironmentFile) and removes the crontab block."""
    root = tmp_path / "root"
    spool = root / "var/spool/cron/crontabs" / user
    ok(install("--role", "reference"))
    assert "cronjob.sh" in spool.read_text()
    ok(install("--role", "reference", "--systemd"))
    assert spool.read_text() == ""
    units = root / "etc/systemd/system"
    service = (units / "gas-bench-reference.service").read_text()
    assert f"\nUser={user}\n" in service
    assert f"\nGroup={user}\n" in service
    assert "\nEnvironmentFile=/etc/gas-bench/reference.env\n" in service
    env = (root / "etc/gas-bench/reference.env").read_text()
    assert "\nBENCH_CONFIG=/etc/gas-bench/reference.toml\n" in env
    assert (units / "gas-bench-reference.timer").read_bytes() == (
        DEPLOY / "systemd/gas-bench-reference.timer"
    ).read_bytes()
    log = (root / "var/lib/gas-bench/install.log").read_text().splitlines()
    assert "systemctl daemon-reload" in log
    assert "systemctl enable --now gas-bench-reference.timer" in log
    assert ok(install("--role", "reference", "--systemd")).endswith("nothing changed\n")
    ok(install("--role", "reference"))
    assert not (units / "gas-bench-reference.service").exists()
    assert not (units / "gas-bench-reference.timer").exists()
    assert spool.read_text() == reference_expected_crontab(user)
    log = (root / "var/lib/gas-bench/install.log").read_text().splitlines()
    assert "systemctl disable --now gas-bench-reference.timer" in log


def test_watcher_instance_per_store_prefix(install: Installer, tmp_path: Path, user: str) -> None:
    """--instance gives a second watcher its own configuration, work dir, crontab block."""
    ok(install("--role", "watcher"))
    ok(install("--role", "watcher", "--instance", "hostb", "--store-url", "s3://b/hostb"))
    root = tmp_path / "root"
    first = tomllib.loads((root / "etc/gas-bench/watcher.toml").read_text())
    second = tomllib.loads((root / "etc/gas-bench/watcher-hostb.toml").read_text())
    assert second["watch"]["root"] == "/data/redbull/hostb" != first["watch"]["root"]
    assert second["store"]["url"] == "s3://b/hostb" != first["store"]["url"]
    env, entries = crontab_entries((root / "var/spool/cron/crontabs" / user).read_text())
    assert env["BENCH_CONFIG"] == "/etc/gas-bench/watcher-hostb.toml"  # the last one wins
    assert [schedule for schedule, _ in entries] == ["*/10 * * * *", "*/10 * * * *"]
    assert ">>/data/redbull/hostb/watch_regressions.log" in entries[1][1]
    assert (
        "/data/redbull/hostb/watch_regressions.log {"
        in (root / "etc/logrotate.d/gas-bench").read_text()
    )


def test_logrotate_names_the_logs_and_never_cron_res(install: Installer, tmp_path: Path) -> None:
    """Log rotation lists anomalies and the watcher's log by name: no cron_res, no wildcard."""
    ok(install("--role", "reference"))
    ok(install("--role", "watcher"))
    text = (tmp_path / "root/etc/logrotate.d/gas-bench").read_text()
    patterns = [line[: -len(" {")] for line in text.splitlines() if line.endswith(" {")]
    assert patterns == ["/data/tezos-benchmarks/anomalies", "/data/redbull/watch_regressions.log"]
    assert not any(c in p for p in patterns for c in "*?[")
    body = [line for line in text.splitlines() if not line.startswith("#")]
    assert not any("cron_res" in line for line in body)


def test_logrotate_accepts_the_file(source: Path, tmp_path: Path) -> None:
    """logrotate -d parses the installed file (for an existing user) without an error."""
    logrotate = shutil.which("logrotate") or shutil.which("logrotate", path="/usr/sbin:/sbin")
    if logrotate is None:
        pytest.skip("logrotate is not installed")
    root = tmp_path / "root"
    command = ["sh", str(source / "deploy/install.sh"), "--prefix", str(root), "--no-venv"]
    ok(
        subprocess.run(
            [*command, "--role", "reference", "--user", "root"], capture_output=True, text=True
        )
    )
    conf = tmp_path / "logrotate.conf"
    conf.write_text(
        (root / "etc/logrotate.d/gas-bench").read_text().replace("/data/", f"{root}/data/")
    )
    result = subprocess.run(
        [logrotate, "-d", "-s", str(tmp_path / "state"), str(conf)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "error" not in result.stderr.lower()


# --- schedules ----------


@pytest.mark.parametrize("installed", [False, True], ids=["crontab/", "installed"])
def test_reference_crontab_fires_tuesday_and_friday_20h_paris(
    installed: bool, install: Installer, tmp_path: Path, user: str
) -> None:
    """The reference crontab fires on Tue and Fri at 20:00 Paris time, across a DST change."""
    if installed:
        ok(install("--role", "reference"))
        text = (tmp_path / "root/var/spool/cron/crontabs" / user).read_text()
    else:
        text = (PROJECT / "crontab/reference.crontab").read_text()
    env, entries = crontab_entries(text)
    assert env["CRON_TZ"] == "Europe/Paris"
    assert env["BENCH_CONFIG"] == "/etc/gas-bench/reference.toml"
    [(schedule, command)] = entries
    assert command == "/opt/gas-bench/jobs/cronjob.sh"
    start = REFERENCE_START.astimezone(ZoneInfo(env["CRON_TZ"]))
    assert next_fires(schedule, start, len(REFERENCE_FIRES)) == REFERENCE_FIRES


@pytest.mark.parametrize("installed", [False, True], ids=["crontab/", "installed"])
def test_watcher_crontab_fires_every_ten_minutes(
    installed: bool, install: Installer, tmp_path: Path, user: str
) -> None:
    """The watcher crontab fires at every minute multiple of 10, all day."""
    if installed:
        ok(install("--role", "watcher"))
        text = (tmp_path / "root/var/spool/cron/crontabs" / user).read_text()
    else:
        text = (PROJECT / "crontab/watcher.crontab").read_text()
    env, entries = crontab_entries(text)
    assert env["BENCH_CONFIG"] == "/etc/gas-bench/watcher.toml"
    [(schedule, command)] = entries
    assert command.startswith("/opt/gas-bench/jobs/watch_regressions.sh")
    start = datetime(2026, 11, 22, 23, 33, tzinfo=UTC)
    fires = next_fires(schedule, start, 6 * 24)
    assert fires[:3] == [
        datetime(2026, 11, 22, 23, 40, tzinfo=UTC),
        datetime(2026, 11, 22, 23, 50, tzinfo=UTC),
        datetime(2026, 11, 23, 0, 0, tzinfo=UTC),
    ]
    assert all((b - a).total_seconds() == 600 for a, b in itertools.pairwise(fires))


# --- systemd units ----------


def read_unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str
    parser.read_string(path.read_text())
    return parser


@pytest.mark.parametrize("role", ["reference", "watcher"])
def test_systemd_units_structure(role: str) -> None:
    """Both units: oneshot, a user, BENCH_CONFIG from an EnvironmentFile, the job's script."""
    service = read_unit(DEPLOY / f"systemd/gas-bench-{role}.service")
    timer = read_unit(DEPLOY / f"systemd/gas-bench-{role}.timer")
    job = "cronjob" if role == "reference" else "watch_regressions"
    assert service["Service"]["Type"] == "oneshot"
    assert service["Service"]["User"] == "gas-bench"
    assert service["Service"]["EnvironmentFile"] == f"/etc/gas-bench/{role}.env"
    assert service["Service"]["ExecStart"] == f"/opt/gas-bench/jobs/{job}.sh"
    assert timer["Timer"]["Unit"] == f"gas-bench-{role}.service"
    assert timer["Install"]["WantedBy"] == "timers.target"
    if role == "reference":
        assert timer["Timer"]["OnCalendar"] == "Tue,Fri *-*-* 20:00:00 Europe/Paris"
        assert timer["Timer"]["Persistent"] == "true"
        assert service["Service"]["TimeoutStartSec"] == "infinity"
    else:
        assert timer["Timer"]["OnCalendar"] == "*-*-* *:00/10:00"
        assert service["Service"]["SuccessExitStatus"] == "5"


@pytest.mark.parametrize("role", ["reference", "watcher"])
def test_installed_units_pass_systemd_analyze_verify(
    role: str, install: Installer, tmp_path: Path
) -> None:
    """The installed units pass `systemd-analyze verify` (paths pointed into the prefix)."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (test_systemd_units_structure still runs)")
    ok(install("--role", role, "--systemd"))
    root = tmp_path / "root"
    # verify checks that ExecStart= exists: point the absolute paths at the prefix, where the
    # installer put the project. (User= is not looked up by verify.)
    checked = tmp_path / "verify"
    checked.mkdir()
    for kind in ("service", "timer"):
        text = (root / f"etc/systemd/system/gas-bench-{role}.{kind}").read_text()
        text = text.replace("=/opt/gas-bench/", f"={root}/opt/gas-bench/")
        text = text.replace("=/etc/gas-bench/", f"={root}/etc/gas-bench/")
        (checked / f"gas-bench-{role}.{kind}").write_text(text)
    assert (
        f"ExecStart={root}/opt/gas-bench/jobs/"
        in (checked / f"gas-bench-{role}.service").read_text()
    )
    result = subprocess.run(
        [analyze, "verify", "--man=no", *sorted(str(p) for p in checked.iterdir())],
        capture_output=True,
        text=True,
        cwd=checked,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr  # unknown keys are only warnings: none allowed


def test_reference_timer_calendar_is_tuesday_friday_20h_paris() -> None:
    """systemd reads the reference timer's OnCalendar= as Tue and Fri 20:00 Paris time."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    spec = read_unit(DEPLOY / "systemd/gas-bench-reference.timer")["Timer"]["OnCalendar"]
    base = REFERENCE_START.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    result = subprocess.run(
        [analyze, "calendar", f"--iterations={len(REFERENCE_FIRES)}", f"--base-time={base}", spec],
        capture_output=True,
        text=True,
        env={**clean_env(), "TZ": "UTC", "LC_ALL": "C"},
    )
    assert result.returncode == 0, result.stderr
    elapses = [
        line.split(": ", 1)[1].strip()
        for line in result.stdout.splitlines()
        if line.strip().startswith(("Next elapse:", "Iter. #"))
    ]
    assert elapses == [
        d.astimezone(UTC).strftime("%a %Y-%m-%d %H:%M:%S UTC") for d in REFERENCE_FIRES
    ]


# --- Kubernetes ----------


def load_manifest(name: str) -> dict[str, dict[str, Any]]:
    import yaml

    docs = list(yaml.safe_load_all((DEPLOY / "k8s" / name).read_text()))
    by_kind = {doc["kind"]: doc for doc in docs}
    assert len(by_kind) == len(docs), "one object of each kind per file"
    return by_kind


def walk(value: Any) -> list[Any]:
    """Every scalar in a nested structure."""
    if isinstance(value, dict):
        return [x for v in value.values() for x in walk(v)]
    if isinstance(value, list):
        return [x for v in value for x in walk(v)]
    return [value]


@pytest.mark.parametrize(
    ("name", "job", "crontab"),
    [
        ("watcher-cronjob.yaml", "watch_regressions", "watcher.crontab"),
        ("reference-cronjob.yaml", "cronjob", "reference.crontab"),
    ],
)
def test_k8s_cronjob_manifest(name: str, job: str, crontab: str) -> None:
    """A CronJob with Forbid, the crontab's schedule, a PVC, and secrets only from Secrets."""
    objects = load_manifest(name)
    assert set(objects) == {"ConfigMap", "PersistentVolumeClaim", "CronJob"}
    cron = objects["CronJob"]
    assert cron["apiVersion"] == "batch/v1"
    spec = cron["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"
    env, [(schedule, _)] = crontab_entries((PROJECT / "crontab" / crontab).read_text())
    zone = ZoneInfo(spec.get("timeZone", "UTC"))
    assert spec.get("timeZone") == env.get("CRON_TZ")
    start = REFERENCE_START.astimezone(zone)
    assert next_fires(spec["schedule"], start, 50) == next_fires(schedule, start, 50)

    pod = spec["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["securityContext"]["runAsNonRoot"] is True
    [container] = pod["containers"]
    assert container["args"] == [job]
    assert "command" not in container  # the image's entry point
    claims = [
        v["persistentVolumeClaim"]["claimName"]
        for v in pod["volumes"]
        if "persistentVolumeClaim" in v
    ]
    assert claims == [objects["PersistentVolumeClaim"]["metadata"]["name"]]
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert "/var/lib/gas-bench" in mounts

    env_vars = {e["name"]: e for e in container["env"]}
    for secret in ("SLACK_BOT_TOKEN", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert "value" not in env_vars[secret], secret
        assert env_vars[secret]["valueFrom"]["secretKeyRef"]["name"], secret
    scalars = [str(s).lower() for s in walk(container.get("args", []))]
    assert not any(w in s for s in scalars for w in ("token", "secret", "aws", "xox", "akia"))


@pytest.mark.parametrize(
    ("name", "key"),
    [("watcher-cronjob.yaml", "watcher.toml"), ("reference-cronjob.yaml", "reference.toml")],
)
def test_k8s_configuration_loads_in_the_image(name: str, key: str, tmp_path: Path) -> None:
    """The ConfigMap's TOML is a valid configuration with the image's environment."""
    from bench.config import load_settings

    objects = load_manifest(name)
    path = tmp_path / key
    path.write_text(objects["ConfigMap"]["data"][key])
    settings = load_settings(
        config_path=path, environ={"BENCH_REFERENCE_ROOT": "/var/lib/gas-bench"}, cwd=tmp_path
    )
    assert settings.reference.root == Path("/var/lib/gas-bench")
    assert settings.watch.root == Path("/var/lib/gas-bench/watch")
    assert settings.store.url == "s3://snoop-playground/mclaren"
    assert settings.slack.channel  # a token from the Secret needs a channel
    mounted = objects["CronJob"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    [container] = mounted["containers"]
    config_env = next(e["value"] for e in container["env"] if e["name"] == "BENCH_CONFIG")
    assert config_env == f"/etc/gas-bench/{key}"


def test_k8s_reference_configuration_is_the_tezos_profile() -> None:
    """The reference ConfigMap is the Tezos profile but for the root and the token file."""
    objects = load_manifest("reference-cronjob.yaml")
    config = tomllib.loads(objects["ConfigMap"]["data"]["reference.toml"])
    profile = tomllib.loads((PROJECT / "bench/profiles/tezos.toml").read_text())
    del profile["reference"]["root"], profile["watch"], profile["slack"]["token_file"]
    assert config == profile


# --- the container image ----------


def containerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of deploy/Containerfile, continuation lines joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in (DEPLOY / "Containerfile").read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending += line.rstrip("\\").strip() + " "
        if not line.endswith("\\"):
            word, _, rest = pending.strip().partition(" ")
            instructions.append((word.upper(), rest.strip()))
            pending = ""
    return instructions


def test_containerfile_structure() -> None:
    """python:3.11-slim, the project copied and installed, a non-root user, an entry point."""
    instructions = containerfile()
    assert instructions[0] == ("FROM", "python:3.11-slim")
    users = [args for word, args in instructions if word == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    words = [word for word, _ in instructions]
    assert words.index("USER") > max(i for i, w in enumerate(words) if w == "RUN")
    [entrypoint] = [json.loads(args) for word, args in instructions if word == "ENTRYPOINT"]
    assert entrypoint[-1] == "/opt/gas-bench/deploy/entrypoint.sh"
    volumes = [json.loads(args) for word, args in instructions if word == "VOLUME"]
    assert volumes == [["/var/lib/gas-bench"]]
    copies = [args.split() for word, args in instructions if word == "COPY"]
    sources = [s for args in copies for s in args[:-1] if not s.startswith("--")]
    for src in sources:
        assert (PROJECT / src).exists(), src
        assert not src.startswith((".venv", ".git"))
    assert ["deploy/entrypoint.sh", "/opt/gas-bench/deploy/entrypoint.sh"] in copies
    run = " ".join(args for word, args in instructions if word == "RUN")
    assert "pip install /opt/gas-bench" in run


@pytest.mark.parametrize(
    ("args", "status", "expected"),
    [
        (["cronjob", "--help"], 0, "usage: cronjob"),
        (["watch_regressions", "--help"], 0, "usage: watch_regressions"),
        (["bench-run", "--help"], 0, "usage: bench-run"),
        (["rm", "-rf", "/"], 2, "unknown command 'rm'"),
        (["bench-../../bin/sh"], 2, "no command"),
        ([], 2, "which job?"),
    ],
)
def test_container_entrypoint_chooses_the_job(args: list[str], status: int, expected: str) -> None:
    """The entry point runs cronjob or watch_regressions (or a bench-* script), else exits 2."""
    venv = Path(sys.executable).parent.parent
    result = subprocess.run(
        ["sh", str(DEPLOY / "entrypoint.sh"), *args],
        capture_output=True,
        text=True,
        env=clean_env(BENCH_VENV=str(venv)),
        timeout=60,
    )
    assert result.returncode == status, result.stderr
    assert expected in result.stdout + result.stderr


# --- shell hygiene ----------


@pytest.mark.parametrize("script", ["install.sh", "entrypoint.sh"])
def test_shell_scripts_parse_and_are_executable(script: str) -> None:
    """The scripts parse with sh -n (and pass shellcheck when it is installed)."""
    path = DEPLOY / script
    assert os.access(path, os.X_OK)
    assert path.read_text().startswith("#!/bin/sh\n")
    result = subprocess.run(["sh", "-n", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    shellcheck = shutil.which("shellcheck")
    if shellcheck:
        result = subprocess.run([shellcheck, "-s", "sh", str(path)], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout


# --- a real virtual environment ----------


@pytest.mark.slow
def test_install_with_a_real_virtual_environment(
    install: Installer, tmp_path: Path, user: str
) -> None:
    """Without --no-venv the jobs' scripts find the installed console scripts; twice is a no-op."""
    ok(install("--role", "watcher", venv=True, timeout=900))
    app = tmp_path / "root/opt/gas-bench"
    assert (app / ".venv/bin/watch_regressions").is_file()
    assert not (app / "build").exists()  # pip built from a copy
    result = subprocess.run(
        ["env", "-i", str(app / "jobs/watch_regressions.sh"), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "usage: watch_regressions" in result.stdout
    before = snapshot(tmp_path / "root")
    out = ok(install("--role", "watcher", venv=True, timeout=900))
    assert f"unchanged  {app}/.venv/ (the project is installed)" in out
    assert out.splitlines()[-1] == "done       nothing changed"
    assert snapshot(tmp_path / "root") == before
