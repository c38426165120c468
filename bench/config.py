"""The typed settings object and its layered loading.

Precedence, lowest first: built-in defaults < the TOML file (``--config`` or ``BENCH_CONFIG``)
< ``BENCH_<SECTION>_<KEY>`` environment variables < ``--set section.key=value`` flags (and the
convenience flags that map onto them). Every error names the key, where the value came from
(file, variable or flag) and what is allowed.

The section and key names are a public contract (see DESIGN.md); add keys freely, never rename.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.errors import ConfigError

#: ``reference.repository`` value meaning "the demo project shipped in this package".
EMBEDDED_DEMO = "embedded:demo"

DAY = 86400.0


# --- the settings object ----------


@dataclass(frozen=True)
class ReferenceSettings:
    """The reference host: where runs happen and what they run."""

    root: Path
    checkout: str
    repository: str
    branch: str
    update_checkout: bool
    build_command: str | list[str]
    benchmark_command: str | list[str]
    results_dir: str
    results_subdirs: list[str]
    kept_paths: list[str]
    build_env: dict[str, str]
    benchmark_env: dict[str, str]
    update_timeout: float
    build_timeout: float
    benchmark_timeout: float
    upload_timeout: float
    kill_grace: float
    tail_lines: int
    recover_crashed: bool

    @property
    def checkout_path(self) -> Path:
        return self.root / self.checkout

    @property
    def results_path(self) -> Path:
        return self.checkout_path / self.results_dir

    @property
    def is_demo(self) -> bool:
        return self.repository == EMBEDDED_DEMO


@dataclass(frozen=True)
class StoreSettings:
    """Where runs are uploaded: ``s3://bucket/prefix`` or ``file:///path``."""

    url: str
    endpoint_url: str
    max_attempts: int
    max_workers: int


@dataclass(frozen=True)
class WatchSettings:
    """The watcher host."""

    root: Path
    first_dir: str
    ref_dir: str
    detector: str
    renamings: str


@dataclass(frozen=True)
class SlackSettings:
    """Slack delivery; without a token, messages go to the local outbox."""

    channel: str
    token_file: str


@dataclass(frozen=True)
class MetricsSettings:
    """Prometheus: a textfile for node_exporter's collector, and `bench-metrics serve`."""

    textfile_dir: Path | str
    port: int


@dataclass(frozen=True)
class Settings:
    """Everything a command needs, validated. ``sources`` says where each key came from."""

    reference: ReferenceSettings
    store: StoreSettings
    watch: WatchSettings
    slack: SlackSettings
    metrics: MetricsSettings
    config_file: Path | None = None
    sources: Mapping[str, str] = field(default_factory=dict)
    #: The file's ``[detect]`` table, validated by the detector (bench.analysis.detect).
    detect: Mapping[str, Any] = field(default_factory=dict)

    def digest(self) -> str:
        """A short stable digest of the effective settings (recorded in run.json)."""
        payload = json.dumps(self.as_dict(), sort_keys=True, default=str).encode()
        return hashlib.sha256(payload).hexdigest()[:16]

    def as_dict(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for section in SCHEMA:
            obj = getattr(self, section)
            out[section] = {key: _plain(getattr(obj, key)) for key in SCHEMA[section]}
        return out


def _plain(value: Any) -> Any:
    return str(value) if isinstance(value, Path) else value


# --- the schema: types, defaults, help ----------


@dataclass(frozen=True)
class Key:
    """One configuration key: how to read it, its default and a line of help."""

    kind: str  # str, bool, int, seconds, path, command, list, table, choice
    default: Any
    help: str
    choices: tuple[str, ...] = ()


SCHEMA: dict[str, dict[str, Key]] = {
    "reference": {
        "root": Key("path", ".", "the work directory: markers, snoop_results/, the checkout"),
        "checkout": Key("str", "demo-checkout", "the benchmarked repository, relative to root"),
        "repository": Key("str", EMBEDDED_DEMO, "git URL to clone, or embedded:demo"),
        "branch": Key("str", "master", "branch to benchmark"),
        "update_checkout": Key("bool", True, "fetch, check out the branch and pull before a run"),
        "build_command": Key("command", "", "build command (a shell string or an argv list)"),
        "benchmark_command": Key("command", "", "benchmark command (shell string or argv list)"),
        "results_dir": Key("str", "_snoop", "where the benchmarks write, relative to checkout"),
        "results_subdirs": Key(
            "list", ["benchmark_results", "inference_results"], "result folders to collect"
        ),
        "kept_paths": Key("list", [], "data kept in the checkout between runs (never moved)"),
        "build_env": Key("table", {}, "extra environment for the build step"),
        "benchmark_env": Key("table", {}, "extra environment for the benchmark step"),
        "update_timeout": Key("seconds", 1800.0, "timeout of the update-checkout step (s)"),
        "build_timeout": Key("seconds", 6 * 3600.0, "timeout of the build step (s)"),
        "benchmark_timeout": Key("seconds", 3 * DAY, "timeout of the benchmark step (s)"),
        "upload_timeout": Key("seconds", 4 * 3600.0, "timeout of the upload step (s)"),
        "kill_grace": Key("seconds", 30.0, "SIGTERM-to-SIGKILL grace for a step's group (s)"),
        "tail_lines": Key("int", 20, "stderr lines quoted in a failure report"),
        "recover_crashed": Key(
            "bool", False, "recover a crashed run (bench-cleanup) before starting a new one"
        ),
    },
    "store": {
        "url": Key("str", "", "s3://bucket/prefix or file:///path; empty: <root>/store"),
        "endpoint_url": Key("str", "", "S3 endpoint (MinIO, Ceph, tests); AWS_ENDPOINT_URL too"),
        "max_attempts": Key("int", 8, "attempts per S3 request (boto3 adaptive retries)"),
        "max_workers": Key("int", 16, "concurrent transfers during an upload"),
    },
    "watch": {
        "root": Key("path", "", "the watcher's directory; empty: <reference.root>/watch"),
        "first_dir": Key("str", "", "oldest run of the history (FIRST_DIR)"),
        "ref_dir": Key("str", "", "the reference run (REF_DIR); empty: first_dir"),
        "detector": Key("choice", "default", "alert rule", choices=("default", "legacy")),
        "renamings": Key("str", "", "file of new_name,old_name lines joining renamed parameters"),
    },
    "metrics": {
        "textfile_dir": Key(
            "path", "", "write *.prom files here after every run and tick (node_exporter)"
        ),
        "port": Key("int", 9108, "port of `bench-metrics serve`"),
    },
    "slack": {
        "channel": Key("str", "", "Slack channel id"),
        "token_file": Key("str", "", "file holding the bot token (mode 0600); or SLACK_BOT_TOKEN"),
    },
}

#: Environment variables under ``BENCH_`` that are not settings.
NON_SETTING_ENV = {
    "BENCH_CONFIG",
    "BENCH_DEMO_SLOWDOWN",
    "BENCH_VENV",
    "BENCH_HOME",
    "BENCH_FAILPOINT",
    "BENCH_FAILPOINT_SIGNAL",
    "BENCH_STEP_TOKEN",  # set by the pipeline in each step's environment (bench.steps)
}


def env_name(section: str, key: str) -> str:
    return f"BENCH_{section.upper()}_{key.upper()}"


# --- loading ----------


@dataclass
class _Raw:
    value: Any
    source: str  # "default", a file path, "environment BENCH_X", "flag --set x.y"
    base: Path  # directory that relative paths are resolved against


def load_settings(
    *,
    config_path: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Sequence[str] = (),
    cwd: Path | None = None,
) -> Settings:
    """Build the settings from defaults, file, environment and ``section.key=value`` overrides.

    ``config_path`` falls back to ``BENCH_CONFIG``. Relative paths in the file are resolved
    against the file's directory; relative paths from the environment or flags against ``cwd``.
    """
    env = os.environ if environ is None else environ
    here = (cwd or Path.cwd()).resolve()
    raw: dict[str, dict[str, _Raw]] = {
        section: {key: _Raw(spec.default, "default", here) for key, spec in keys.items()}
        for section, keys in SCHEMA.items()
    }

    file_path: Path | None = None
    detect: dict[str, Any] = {}
    if config_path is None and env.get("BENCH_CONFIG"):
        config_path = env["BENCH_CONFIG"]
    if config_path is not None and str(config_path) != "":
        file_path = (here / Path(config_path).expanduser()).resolve()
        detect = _merge_file(raw, file_path)

    for name, value in sorted(env.items()):
        if not name.startswith("BENCH_") or name in NON_SETTING_ENV:
            continue
        section, key = _split_env_name(name)
        if section is None:
            continue
        if key not in SCHEMA[section]:
            raise ConfigError(
                f"environment variable {name}: unknown key {section}.{key!s}",
                hint=f"allowed in [{section}]: {', '.join(SCHEMA[section])}",
            )
        raw[section][key] = _Raw(
            _parse_text(value, SCHEMA[section][key]), f"environment variable {name}", here
        )

    for item in overrides:
        section, key, text = _split_override(item)
        raw[section][key] = _Raw(_parse_text(text, SCHEMA[section][key]), f"flag {item!r}", here)

    values: dict[str, dict[str, Any]] = {}
    sources: dict[str, str] = {}
    for section, keys in SCHEMA.items():
        values[section] = {}
        for key, spec in keys.items():
            entry = raw[section][key]
            values[section][key] = _coerce(entry, spec, f"{section}.{key}")
            sources[f"{section}.{key}"] = entry.source

    ref = values["reference"]
    if ref["root"] == "":
        raise ConfigError(
            f"reference.root = '' ({sources['reference.root']}) is invalid",
            hint="expected the path of the work directory (default: the current directory)",
        )
    _check_relative(ref["checkout"], "reference.checkout", sources)
    _check_relative(ref["results_dir"], "reference.results_dir", sources)
    if ref["repository"] != EMBEDDED_DEMO:
        for key in ("build_command", "benchmark_command"):
            if not ref[key]:
                raise ConfigError(
                    f"reference.{key} is empty ({sources['reference.' + key]})",
                    hint="a repository other than embedded:demo needs its build and "
                    "benchmark commands",
                )
    if not values["watch"]["root"]:
        values["watch"]["root"] = ref["root"] / "watch"
    store_url = values["store"]["url"] or (ref["root"] / "store").as_uri()
    values["store"]["url"] = store_url
    _check_store_url(store_url, sources["store.url"])

    return Settings(
        reference=ReferenceSettings(**ref),
        store=StoreSettings(**values["store"]),
        watch=WatchSettings(**values["watch"]),
        slack=SlackSettings(**values["slack"]),
        metrics=MetricsSettings(**values["metrics"]),
        config_file=file_path,
        sources=sources,
        detect=detect,
    )


def _merge_file(raw: dict[str, dict[str, _Raw]], path: Path) -> dict[str, Any]:
    """Merge the file into ``raw``; return its ``[detect]`` table (the detector's own keys)."""
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(
            f"configuration file {path} does not exist",
            hint="check --config or BENCH_CONFIG",
        ) from None
    except PermissionError:
        raise ConfigError(f"configuration file {path} is not readable by this user") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"configuration file {path} is not valid TOML: {err}") from None
    detect = data.pop("detect", {})
    if not isinstance(detect, dict):
        raise ConfigError(f"{path}: detect must be a table ([detect])")
    for section, table in data.items():
        if section not in SCHEMA:
            raise ConfigError(
                f"{path}: unknown section [{section}]",
                hint=f"allowed sections: {', '.join(SCHEMA)}, detect",
            )
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: {section} must be a table ([{section}])")
        for key, value in table.items():
            if key not in SCHEMA[section]:
                raise ConfigError(
                    f"{path}: unknown key {section}.{key}",
                    hint=f"allowed in [{section}]: {', '.join(SCHEMA[section])}",
                )
            raw[section][key] = _Raw(value, str(path), path.parent)
    return detect


def _split_env_name(name: str) -> tuple[str | None, str]:
    rest = name[len("BENCH_") :].lower()
    section, _, key = rest.partition("_")
    if section not in SCHEMA:
        return None, ""
    return section, key


def _split_override(item: str) -> tuple[str, str, str]:
    dotted, sep, text = item.partition("=")
    section, _, key = dotted.strip().partition(".")
    if not sep or section not in SCHEMA or key not in SCHEMA[section]:
        known = ", ".join(f"{s}.{k}" for s in SCHEMA for k in SCHEMA[s])
        raise ConfigError(
            f"flag --set {item!r}: expected SECTION.KEY=VALUE with a known key",
            hint=f"known keys: {known}",
        )
    return section, key, text


def _parse_text(text: str, spec: Key) -> Any:
    """Environment variables and flags are text; lists and tables are written in TOML."""
    if spec.kind in {"list", "table"} or (spec.kind == "command" and text.lstrip().startswith("[")):
        try:
            return tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            return _Unparsed(text)
    return text


@dataclass(frozen=True)
class _Unparsed:
    text: str


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _coerce(entry: _Raw, spec: Key, name: str) -> Any:
    value = entry.value

    def bad(allowed: str) -> ConfigError:
        shown = value.text if isinstance(value, _Unparsed) else value
        return ConfigError(f"{name} = {shown!r} ({entry.source}) is invalid", hint=allowed)

    kind = spec.kind
    if kind == "str":
        if not isinstance(value, str):
            raise bad("expected a string")
        return value
    if kind == "choice":
        if value not in spec.choices:
            raise bad("allowed: " + ", ".join(repr(c) for c in spec.choices))
        return value
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise bad("expected true or false")
    if kind in {"int", "seconds"}:
        number = _number(value, integer=kind == "int")
        # nan and inf pass a bare ``<= 0`` test; a timeout must be a finite positive number.
        finite = not isinstance(number, float) or math.isfinite(number)
        if number is None or not finite or number <= 0:
            raise bad(
                "expected a positive " + ("integer" if kind == "int" else "number of seconds")
            )
        return number
    if kind == "path":
        if not isinstance(value, str):
            raise bad("expected a path string")
        if value == "":
            return ""
        return (entry.base / Path(value).expanduser()).resolve()
    if kind == "command":
        if isinstance(value, str):
            return value.strip()
        if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            return list(value)
        raise bad("expected a shell command string or a non-empty list of strings")
    if kind == "list":
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return list(value)
        raise bad('expected a list of strings, e.g. ["a", "b"]')
    if kind == "table":
        if isinstance(value, dict) and all(isinstance(v, str) for v in value.values()):
            return dict(value)
        raise bad('expected a table of strings, e.g. { NAME = "value" }')
    raise AssertionError(f"unknown kind {kind}")


def _number(value: Any, *, integer: bool) -> float | int | None:
    if isinstance(value, bool):
        return None
    parse: Callable[[Any], float | int] = int if integer else float
    if isinstance(value, int | float):
        if integer and not isinstance(value, int):
            return None
        return parse(value)
    if isinstance(value, str):
        try:
            return parse(value.strip())
        except ValueError:
            return None
    return None


def _check_relative(value: str, name: str, sources: Mapping[str, str]) -> None:
    if not value or Path(value).is_absolute() or ".." in Path(value).parts:
        raise ConfigError(
            f"{name} = {value!r} ({sources[name]}) is invalid",
            hint="expected a non-empty path relative to its parent, without '..'",
        )


def _check_store_url(url: str, source: str) -> None:
    if url.startswith("file:///") or url.startswith("s3://"):
        if url.startswith("s3://") and not url[len("s3://") :].split("/")[0]:
            raise ConfigError(
                f"store.url = {url!r} ({source}) names no bucket",
                hint="expected s3://bucket/prefix or file:///absolute/path",
            )
        return
    raise ConfigError(
        f"store.url = {url!r} ({source}) is invalid",
        hint="expected s3://bucket/prefix or file:///absolute/path",
    )


# --- commands ----------


def expand_placeholders(text: str, settings: Settings) -> str:
    """Replace ``{python}``, ``{root}`` and ``{checkout}`` in a command or environment value."""
    ref = settings.reference
    return (
        text.replace("{python}", sys.executable)
        .replace("{root}", str(ref.root))
        .replace("{checkout}", str(ref.checkout_path))
    )


def describe_settings(settings: Settings) -> str:
    """The effective settings with the origin of each value, as TOML-like text."""
    lines = []
    for section, keys in settings.as_dict().items():
        lines.append(f"[{section}]")
        for key, value in keys.items():
            shown = json.dumps(value) if not isinstance(value, bool) else str(value).lower()
            lines.append(f"{key} = {shown}  # {settings.sources[f'{section}.{key}']}")
        lines.append("")
    return "\n".join(lines)
