"""Tests of the layered configuration: defaults < file < ``BENCH_*`` environment < flags."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from bench.config import EMBEDDED_DEMO, SCHEMA, Settings, env_name, load_settings
from bench.errors import ConfigError, ExitCode

ALL_KEYS = [(section, key) for section in SCHEMA for key in SCHEMA[section]]

#: Per kind: (value written in the file, environment text, flag text) and what each one yields.
#: Every layer differs from the default and from the layer below it, so a lost layer shows.
LAYERS: dict[str, tuple[tuple[Any, str, str], tuple[Any, Any, Any]]] = {
    "str": (("from-file", "from-env", "from-flag"), ("from-file", "from-env", "from-flag")),
    "bool": ((False, "yes", "off"), (False, True, False)),
    "int": ((7, "8", "9"), (7, 8, 9)),
    "seconds": ((11.5, "12", "1e2"), (11.5, 12.0, 100.0)),
    "path": (("from-file", "from-env", "from-flag"), (None, None, None)),  # resolved in the test
    "command": (
        (["file-cmd", "--x"], "env-cmd --y", '["flag-cmd", "--z"]'),
        (["file-cmd", "--x"], "env-cmd --y", ["flag-cmd", "--z"]),
    ),
    "list": ((["file-a"], '["env-a", "env-b"]', "[]"), (["file-a"], ["env-a", "env-b"], [])),
    "table": (
        ({"F": "1"}, '{ E = "2" }', '{ G = "3", H = "4" }'),
        ({"F": "1"}, {"E": "2"}, {"G": "3", "H": "4"}),
    ),
    "choice": (("legacy", "default", "legacy"), ("legacy", "default", "legacy")),
}

#: Keys whose values are constrained beyond their kind.
SPECIAL_LAYERS: dict[str, tuple[tuple[Any, str, str], tuple[Any, Any, Any]]] = {
    "store.url": (
        ("file:///srv/file-store", "s3://env-bucket/prefix", "file:///srv/flag-store"),
        ("file:///srv/file-store", "s3://env-bucket/prefix", "file:///srv/flag-store"),
    ),
}


def toml_literal(value: Any) -> str:
    """``value`` written as a TOML literal (strings, booleans, numbers, arrays, inline tables)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_literal(v)}" for k, v in value.items()) + " }"
    raise TypeError(value)


def write_config(path: Path, sections: dict[str, dict[str, Any]]) -> Path:
    """Write ``sections`` as a TOML file at ``path`` (parents created) and return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for section, keys in sections.items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {toml_literal(value)}" for key, value in keys.items())
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def effective(settings: Settings, section: str, key: str) -> Any:
    return getattr(getattr(settings, section), key)


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    """A directory for the configuration file and a different current directory."""
    conf_dir = tmp_path / "conf"
    cwd = tmp_path / "cwd"
    conf_dir.mkdir()
    cwd.mkdir()
    return conf_dir, cwd


# --- precedence, for every key of the schema ----------


def test_layers_cover_every_kind_of_the_schema() -> None:
    """Every kind used by SCHEMA has layer values here (a new kind must get its own)."""
    kinds = {spec.kind for keys in SCHEMA.values() for spec in keys.values()}
    assert kinds <= set(LAYERS)


@pytest.mark.parametrize(("section", "key"), ALL_KEYS, ids=[f"{s}.{k}" for s, k in ALL_KEYS])
def test_precedence_file_then_environment_then_flag(
    section: str, key: str, dirs: tuple[Path, Path]
) -> None:
    """Each key takes the file's value over the default, the environment's over the file's, and
    the flag's over both, and ``sources`` names the layer that won."""
    conf_dir, cwd = dirs
    name = f"{section}.{key}"
    spec = SCHEMA[section][key]
    (file_value, env_text, flag_text), expected = SPECIAL_LAYERS.get(name, LAYERS[spec.kind])
    if spec.kind == "bool" and spec.default is False:  # each layer must differ from the last
        (file_value, env_text, flag_text), expected = (True, "no", "on"), (True, False, True)
    if spec.kind == "path":
        expected = (
            (conf_dir / file_value).resolve(),
            (cwd / env_text).resolve(),
            (cwd / flag_text).resolve(),
        )
    content: dict[str, dict[str, Any]] = {section: {key: file_value}}
    if name == "reference.repository":  # a real repository needs its commands
        content["reference"].update(build_command="make", benchmark_command="make bench")
    config = write_config(conf_dir / "bench.toml", content)
    variable = env_name(section, key)
    flag = f"{name}={flag_text}"

    defaults = load_settings(environ={}, cwd=cwd)
    assert defaults.sources[name] == "default"

    from_file = load_settings(config_path=config, environ={}, cwd=cwd)
    assert effective(from_file, section, key) == expected[0]
    assert effective(from_file, section, key) != effective(defaults, section, key)
    assert from_file.sources[name] == str(config)

    from_env = load_settings(config_path=config, environ={variable: env_text}, cwd=cwd)
    assert effective(from_env, section, key) == expected[1]
    assert from_env.sources[name] == f"environment variable {variable}"

    from_flag = load_settings(
        config_path=config, environ={variable: env_text}, overrides=[flag], cwd=cwd
    )
    assert effective(from_flag, section, key) == expected[2]
    assert flag in from_flag.sources[name]
    assert from_flag.sources[name].startswith("flag")


@pytest.mark.parametrize(("section", "key"), ALL_KEYS, ids=[f"{s}.{k}" for s, k in ALL_KEYS])
def test_environment_alone_overrides_default(
    section: str, key: str, dirs: tuple[Path, Path]
) -> None:
    """Without a file, ``BENCH_<SECTION>_<KEY>`` alone sets the key (not only over a file)."""
    _, cwd = dirs
    name = f"{section}.{key}"
    (_, env_text, _), expected = SPECIAL_LAYERS.get(name, LAYERS[SCHEMA[section][key].kind])
    environ = {env_name(section, key): env_text}
    if name == "reference.repository":
        environ |= {
            "BENCH_REFERENCE_BUILD_COMMAND": "make",
            "BENCH_REFERENCE_BENCHMARK_COMMAND": "make bench",
        }
    settings = load_settings(environ=environ, cwd=cwd)
    want = (cwd / env_text).resolve() if SCHEMA[section][key].kind == "path" else expected[1]
    assert effective(settings, section, key) == want
    assert settings.sources[name] == f"environment variable {env_name(section, key)}"


def test_later_flag_wins_over_earlier_flag(dirs: tuple[Path, Path]) -> None:
    """Two ``--set`` of the same key: the last one wins."""
    _, cwd = dirs
    settings = load_settings(
        environ={}, overrides=["reference.branch=first", "reference.branch=second"], cwd=cwd
    )
    assert settings.reference.branch == "second"
    assert "reference.branch=second" in settings.sources["reference.branch"]


def test_flag_value_may_contain_equals_sign(dirs: tuple[Path, Path]) -> None:
    """``--set`` splits at the first ``=`` only: the value keeps the others."""
    _, cwd = dirs
    settings = load_settings(
        environ={}, overrides=["reference.build_command=make X=1 Y=2"], cwd=cwd
    )
    assert settings.reference.build_command == "make X=1 Y=2"


# --- which file ----------


def test_bench_config_is_read_when_no_config_path(dirs: tuple[Path, Path]) -> None:
    """With no ``config_path``, the file named by ``BENCH_CONFIG`` is loaded."""
    conf_dir, cwd = dirs
    config = write_config(conf_dir / "env.toml", {"reference": {"branch": "from-bench-config"}})
    settings = load_settings(environ={"BENCH_CONFIG": str(config)}, cwd=cwd)
    assert settings.reference.branch == "from-bench-config"
    assert settings.config_file == config.resolve()
    assert settings.sources["reference.branch"] == str(config.resolve())


def test_relative_bench_config_resolves_against_cwd(dirs: tuple[Path, Path]) -> None:
    """A relative ``BENCH_CONFIG`` is found relative to the current directory."""
    _, cwd = dirs
    write_config(cwd / "sub" / "c.toml", {"reference": {"branch": "relative"}})
    settings = load_settings(environ={"BENCH_CONFIG": "sub/c.toml"}, cwd=cwd)
    assert settings.reference.branch == "relative"
    assert settings.config_file == (cwd / "sub" / "c.toml").resolve()


def test_explicit_config_path_wins_over_bench_config(dirs: tuple[Path, Path]) -> None:
    """An explicit ``config_path`` is used and ``BENCH_CONFIG`` is then not even opened."""
    conf_dir, cwd = dirs
    explicit = write_config(conf_dir / "explicit.toml", {"reference": {"branch": "explicit"}})
    settings = load_settings(
        config_path=explicit,
        environ={"BENCH_CONFIG": str(conf_dir / "missing.toml")},
        cwd=cwd,
    )
    assert settings.reference.branch == "explicit"
    assert settings.config_file == explicit.resolve()


def test_empty_bench_config_means_no_file(dirs: tuple[Path, Path]) -> None:
    """``BENCH_CONFIG=""`` loads no file (built-in defaults), rather than failing."""
    _, cwd = dirs
    settings = load_settings(environ={"BENCH_CONFIG": ""}, cwd=cwd)
    assert settings.config_file is None
    assert set(settings.sources.values()) == {"default"}


# --- defaults ----------


def test_defaults_without_any_configuration(tmp_path: Path) -> None:
    """No file, environment or flag: the demo, root = cwd, a local store and watch dir under it."""
    settings = load_settings(environ={}, cwd=tmp_path)
    root = tmp_path.resolve()
    assert settings.reference.repository == EMBEDDED_DEMO
    assert settings.reference.is_demo
    assert settings.reference.root == root
    assert settings.store.url == f"file://{root}/store"
    assert settings.watch.root == root / "watch"
    assert settings.watch.detector == "default"
    assert settings.config_file is None
    assert settings.reference.checkout_path == root / "demo-checkout"


def test_defaults_equal_the_schema(tmp_path: Path) -> None:
    """Every key not derived from another takes the default written in SCHEMA."""
    settings = load_settings(environ={}, cwd=tmp_path)
    derived = {"reference.root", "store.url", "watch.root"}
    for section, key in ALL_KEYS:
        if f"{section}.{key}" not in derived:
            assert effective(settings, section, key) == SCHEMA[section][key].default, key
        assert settings.sources[f"{section}.{key}"] == "default"


def test_unrelated_bench_variables_are_ignored(tmp_path: Path) -> None:
    """``BENCH_DEMO_SLOWDOWN``, ``BENCH_HOME`` and variables of no section are not settings."""
    environ = {
        "BENCH_DEMO_SLOWDOWN": "3",
        "BENCH_HOME": "/x",
        "BENCH_VENV": "/y",
        "BENCH_SOMETHING_ELSE": "z",
        "NOT_BENCH_REFERENCE_ROOT": "/nope",
    }
    settings = load_settings(environ=environ, cwd=tmp_path)
    assert set(settings.sources.values()) == {"default"}
    assert settings.reference.root == tmp_path.resolve()


# --- relative paths ----------


def test_relative_paths_in_file_resolve_against_its_directory(dirs: tuple[Path, Path]) -> None:
    """``root`` and ``watch.root`` from a file are relative to the file, not to cwd."""
    conf_dir, cwd = dirs
    config = write_config(
        conf_dir / "bench.toml",
        {"reference": {"root": "work"}, "watch": {"root": "../watch-here"}},
    )
    settings = load_settings(config_path=config, environ={}, cwd=cwd)
    assert settings.reference.root == conf_dir.resolve() / "work"
    assert settings.watch.root == conf_dir.resolve().parent / "watch-here"


def test_derived_locations_follow_root_from_file(dirs: tuple[Path, Path]) -> None:
    """With ``root`` set in a file, the default store and watch root are under that root."""
    conf_dir, cwd = dirs
    config = write_config(conf_dir / "bench.toml", {"reference": {"root": "work"}})
    settings = load_settings(config_path=config, environ={}, cwd=cwd)
    root = conf_dir.resolve() / "work"
    assert settings.store.url == (root / "store").as_uri()
    assert settings.watch.root == root / "watch"


@pytest.mark.parametrize("layer", ["environment", "flag"])
def test_relative_paths_from_env_or_flag_resolve_against_cwd(
    layer: str, dirs: tuple[Path, Path]
) -> None:
    """Relative paths given by a variable or a flag are relative to cwd, even over a file."""
    conf_dir, cwd = dirs
    config = write_config(conf_dir / "bench.toml", {"reference": {"root": "file-root"}})
    if layer == "environment":
        settings = load_settings(
            config_path=config,
            environ={"BENCH_REFERENCE_ROOT": "rel", "BENCH_WATCH_ROOT": "w"},
            cwd=cwd,
        )
    else:
        settings = load_settings(
            config_path=config,
            environ={},
            overrides=["reference.root=rel", "watch.root=w"],
            cwd=cwd,
        )
    assert settings.reference.root == cwd.resolve() / "rel"
    assert settings.watch.root == cwd.resolve() / "w"


def test_absolute_path_in_file_is_kept(dirs: tuple[Path, Path], tmp_path: Path) -> None:
    """An absolute ``root`` in the file is used as is."""
    conf_dir, cwd = dirs
    target = tmp_path / "absolute-root"
    config = write_config(conf_dir / "bench.toml", {"reference": {"root": str(target)}})
    settings = load_settings(config_path=config, environ={}, cwd=cwd)
    assert settings.reference.root == target.resolve()


# --- errors ----------


def config_error(**kwargs: Any) -> ConfigError:
    """Call load_settings expecting a ConfigError; return it."""
    with pytest.raises(ConfigError) as info:
        load_settings(**kwargs)
    assert info.value.exit_code == ExitCode.USAGE
    return info.value


def test_missing_file_is_a_clear_error(dirs: tuple[Path, Path]) -> None:
    """A missing configuration file is named, with where it came from."""
    conf_dir, cwd = dirs
    missing = conf_dir / "nope.toml"
    err = config_error(config_path=missing, environ={}, cwd=cwd)
    assert str(missing) in str(err)
    assert "does not exist" in str(err)
    assert "BENCH_CONFIG" in str(err)


def test_missing_bench_config_file_is_a_clear_error(dirs: tuple[Path, Path]) -> None:
    """A ``BENCH_CONFIG`` naming a missing file fails (never silently falls back to defaults)."""
    conf_dir, cwd = dirs
    err = config_error(environ={"BENCH_CONFIG": str(conf_dir / "gone.toml")}, cwd=cwd)
    assert str(conf_dir / "gone.toml") in str(err)


def test_invalid_toml_names_the_file(dirs: tuple[Path, Path]) -> None:
    """A file that is not TOML is reported with its path and the parser's complaint."""
    conf_dir, cwd = dirs
    config = conf_dir / "broken.toml"
    config.write_text("[reference\nroot = \n", encoding="utf-8")
    err = config_error(config_path=config, environ={}, cwd=cwd)
    assert str(config) in str(err)
    assert "TOML" in str(err)


def test_unknown_section_lists_allowed_sections(dirs: tuple[Path, Path]) -> None:
    """An unknown ``[section]`` is named along with the file and the allowed sections."""
    conf_dir, cwd = dirs
    config = write_config(conf_dir / "bench.toml", {"referense": {"root": "x"}})
    err = str(config_error(config_path=config, environ={}, cwd=cwd))
    assert "referense" in err
    assert str(config) in err
    for section in SCHEMA:
        assert section in err


def test_unknown_key_lists_allowed_keys(dirs: tuple[Path, Path]) -> None:
    """An unknown key names ``section.key``, the file, and every key allowed in that section."""
    conf_dir, cwd = dirs
    config = write_config(conf_dir / "bench.toml", {"reference": {"build_timout": 5}})
    err = str(config_error(config_path=config, environ={}, cwd=cwd))
    assert "reference.build_timout" in err
    assert str(config) in err
    for key in SCHEMA["reference"]:
        assert key in err


def test_section_that_is_not_a_table_is_rejected(dirs: tuple[Path, Path]) -> None:
    """``reference = 3`` at top level is an error naming the section and the file."""
    conf_dir, cwd = dirs
    config = conf_dir / "bench.toml"
    config.write_text("reference = 3\n", encoding="utf-8")
    err = str(config_error(config_path=config, environ={}, cwd=cwd))
    assert "reference" in err
    assert str(config) in err


#: (section, key, TOML literal in a file, a phrase of what is allowed)
BAD_FILE_VALUES = [
    ("reference", "branch", "3", "expected a string"),
    ("slack", "channel", "true", "expected a string"),
    ("reference", "update_checkout", '"maybe"', "true or false"),
    ("reference", "update_checkout", "1", "true or false"),
    ("reference", "tail_lines", "2.5", "positive integer"),
    ("reference", "tail_lines", "0", "positive integer"),
    ("reference", "tail_lines", "true", "positive integer"),
    ("reference", "build_timeout", '"soon"', "positive number of seconds"),
    ("reference", "build_timeout", "-5", "positive number of seconds"),
    ("reference", "build_timeout", "0", "positive number of seconds"),
    ("reference", "build_timeout", "nan", "positive number of seconds"),
    ("reference", "kill_grace", "inf", "positive number of seconds"),
    ("reference", "root", "5", "path string"),
    ("reference", "build_command", "[]", "non-empty list of strings"),
    ("reference", "build_command", "[1, 2]", "non-empty list of strings"),
    ("reference", "benchmark_command", "7", "shell command string"),
    ("reference", "kept_paths", '"a"', "list of strings"),
    ("reference", "results_subdirs", "[1]", "list of strings"),
    ("reference", "build_env", "{ A = 1 }", "table of strings"),
    ("reference", "benchmark_env", '"A=1"', "table of strings"),
    ("watch", "detector", '"fancy"', "'default', 'legacy'"),
    ("watch", "detector", "1", "'default', 'legacy'"),
]


@pytest.mark.parametrize(
    ("section", "key", "literal", "allowed"),
    BAD_FILE_VALUES,
    ids=[f"{s}.{k}={v}" for s, k, v, _ in BAD_FILE_VALUES],
)
def test_wrong_type_in_file_names_key_file_and_allowed(
    section: str, key: str, literal: str, allowed: str, dirs: tuple[Path, Path]
) -> None:
    """A value of the wrong type in the file names the key, the file and what is allowed."""
    conf_dir, cwd = dirs
    config = conf_dir / "bench.toml"
    config.write_text(f"[{section}]\n{key} = {literal}\n", encoding="utf-8")
    err = str(config_error(config_path=config, environ={}, cwd=cwd))
    assert f"{section}.{key}" in err
    assert str(config) in err
    assert allowed in err


#: (variable, text, key, a phrase of what is allowed)
BAD_ENV_VALUES = [
    ("BENCH_REFERENCE_UPDATE_CHECKOUT", "maybe", "reference.update_checkout", "true or false"),
    ("BENCH_REFERENCE_TAIL_LINES", "twenty", "reference.tail_lines", "positive integer"),
    ("BENCH_REFERENCE_TAIL_LINES", "-3", "reference.tail_lines", "positive integer"),
    ("BENCH_REFERENCE_BUILD_TIMEOUT", "soon", "reference.build_timeout", "number of seconds"),
    ("BENCH_REFERENCE_BUILD_TIMEOUT", "-1", "reference.build_timeout", "number of seconds"),
    ("BENCH_REFERENCE_BUILD_TIMEOUT", "nan", "reference.build_timeout", "number of seconds"),
    ("BENCH_REFERENCE_UPLOAD_TIMEOUT", "inf", "reference.upload_timeout", "number of seconds"),
    ("BENCH_REFERENCE_BUILD_COMMAND", '["make", ', "reference.build_command", "list of strings"),
    ("BENCH_REFERENCE_BUILD_COMMAND", "[]", "reference.build_command", "non-empty list"),
    ("BENCH_REFERENCE_KEPT_PATHS", "a,b", "reference.kept_paths", "list of strings"),
    ("BENCH_REFERENCE_KEPT_PATHS", "", "reference.kept_paths", "list of strings"),
    ("BENCH_REFERENCE_BUILD_ENV", "A=1", "reference.build_env", "table of strings"),
    ("BENCH_REFERENCE_BUILD_ENV", "{ A = 1 }", "reference.build_env", "table of strings"),
    ("BENCH_WATCH_DETECTOR", "fancy", "watch.detector", "'default', 'legacy'"),
]


@pytest.mark.parametrize(
    ("variable", "text", "key", "allowed"),
    BAD_ENV_VALUES,
    ids=[f"{v}={t}" for v, t, _, _ in BAD_ENV_VALUES],
)
def test_wrong_type_in_environment_names_key_variable_and_allowed(
    variable: str, text: str, key: str, allowed: str, tmp_path: Path
) -> None:
    """A bad ``BENCH_*`` value names the key, the variable and what is allowed."""
    err = str(config_error(environ={variable: text}, cwd=tmp_path))
    assert key in err
    assert f"environment variable {variable}" in err
    assert allowed in err


@pytest.mark.parametrize(
    ("flag", "key", "allowed"),
    [
        ("reference.build_timeout=soon", "reference.build_timeout", "number of seconds"),
        ("reference.update_checkout=maybe", "reference.update_checkout", "true or false"),
        ("watch.detector=fancy", "watch.detector", "'default', 'legacy'"),
        ("reference.results_subdirs=[1, 2]", "reference.results_subdirs", "list of strings"),
    ],
)
def test_wrong_type_in_flag_names_key_flag_and_allowed(
    flag: str, key: str, allowed: str, tmp_path: Path
) -> None:
    """A bad ``--set`` value names the key, the flag and what is allowed."""
    err = str(config_error(environ={}, overrides=[flag], cwd=tmp_path))
    assert key in err
    assert flag in err
    assert allowed in err


def test_flag_fixes_a_bad_environment_value(tmp_path: Path) -> None:
    """Values are checked after layering: a flag may replace a bad variable's value."""
    settings = load_settings(
        environ={"BENCH_REFERENCE_BUILD_TIMEOUT": "soon"},
        overrides=["reference.build_timeout=60"],
        cwd=tmp_path,
    )
    assert settings.reference.build_timeout == 60.0


def test_seconds_accept_integers_and_are_floats(tmp_path: Path) -> None:
    """A timeout written as an integer is accepted and read as float seconds."""
    settings = load_settings(environ={"BENCH_REFERENCE_KILL_GRACE": "5"}, cwd=tmp_path)
    assert settings.reference.kill_grace == 5.0
    assert isinstance(settings.reference.kill_grace, float)
    assert math.isfinite(settings.reference.kill_grace)


@pytest.mark.parametrize("text", ["1", "true", "YES", " on ", "0", "false", "No", "off"], ids=repr)
def test_bool_words_from_environment(text: str, tmp_path: Path) -> None:
    """Booleans from the environment accept 1/0, true/false, yes/no, on/off (any case)."""
    settings = load_settings(environ={"BENCH_REFERENCE_UPDATE_CHECKOUT": text}, cwd=tmp_path)
    want = text.strip().lower() in {"1", "true", "yes", "on"}
    assert settings.reference.update_checkout is want


def test_unknown_reference_variable_lists_allowed_keys(tmp_path: Path) -> None:
    """``BENCH_REFERENCE_ROOTS`` (a typo) fails, naming the variable and the allowed keys."""
    err = str(config_error(environ={"BENCH_REFERENCE_ROOTS": "/x"}, cwd=tmp_path))
    assert "BENCH_REFERENCE_ROOTS" in err
    assert "reference.roots" in err
    for key in SCHEMA["reference"]:
        assert key in err


@pytest.mark.parametrize(
    "flag",
    ["reference.root", "reference.nope=1", "nope.root=1", "root=1", "=1", "reference.=1"],
)
def test_malformed_set_flag_is_rejected(flag: str, tmp_path: Path) -> None:
    """A ``--set`` without ``=`` or with an unknown key is named, with the known keys."""
    err = str(config_error(environ={}, overrides=[flag], cwd=tmp_path))
    assert repr(flag) in err
    assert "SECTION.KEY=VALUE" in err
    assert "reference.build_timeout" in err
    assert "watch.detector" in err


@pytest.mark.parametrize(
    "url", ["http://example.com/x", "file://relative/store", "/abs/store", "s3://", "s3:///p"]
)
@pytest.mark.parametrize("layer", ["file", "environment"])
def test_bad_store_url_is_rejected(url: str, layer: str, dirs: tuple[Path, Path]) -> None:
    """``store.url`` must be s3://bucket/... or file:///...; the error says so and where from."""
    conf_dir, cwd = dirs
    if layer == "file":
        config = write_config(conf_dir / "bench.toml", {"store": {"url": url}})
        err = str(config_error(config_path=config, environ={}, cwd=cwd))
        assert str(config) in err
    else:
        err = str(config_error(environ={"BENCH_STORE_URL": url}, cwd=cwd))
        assert "BENCH_STORE_URL" in err
    assert "store.url" in err
    assert "s3://bucket" in err
    assert "file:///" in err


@pytest.mark.parametrize("key", ["checkout", "results_dir"])
@pytest.mark.parametrize("value", ["../x", "a/../../b", "/abs/dir", ""])
def test_checkout_and_results_dir_must_stay_inside(
    key: str, value: str, dirs: tuple[Path, Path]
) -> None:
    """``reference.checkout``/``results_dir`` absolute, empty or with ``..`` are refused."""
    conf_dir, cwd = dirs
    config = write_config(conf_dir / "bench.toml", {"reference": {key: value}})
    err = str(config_error(config_path=config, environ={}, cwd=cwd))
    assert f"reference.{key}" in err
    assert str(config) in err
    assert "relative" in err
    assert "'..'" in err


def test_checkout_from_environment_with_dotdot_names_the_variable(tmp_path: Path) -> None:
    """A ``..`` checkout from the environment is refused, naming the variable."""
    err = str(config_error(environ={"BENCH_REFERENCE_CHECKOUT": "../elsewhere"}, cwd=tmp_path))
    assert "reference.checkout" in err
    assert "BENCH_REFERENCE_CHECKOUT" in err


@pytest.mark.parametrize("missing", ["build_command", "benchmark_command"])
def test_real_repository_requires_both_commands(missing: str, dirs: tuple[Path, Path]) -> None:
    """A repository other than the demo needs non-empty build and benchmark commands."""
    conf_dir, cwd = dirs
    reference = {
        "repository": "https://example.invalid/x.git",
        "build_command": "make",
        "benchmark_command": "make bench",
    }
    reference[missing] = "   "
    config = write_config(conf_dir / "bench.toml", {"reference": reference})
    err = str(config_error(config_path=config, environ={}, cwd=cwd))
    assert f"reference.{missing}" in err
    assert str(config) in err
    assert "embedded:demo" in err


def test_real_repository_with_commands_is_accepted(dirs: tuple[Path, Path]) -> None:
    """A real repository with both commands (string and argv list) loads and is not the demo."""
    conf_dir, cwd = dirs
    config = write_config(
        conf_dir / "bench.toml",
        {
            "reference": {
                "repository": "https://example.invalid/x.git",
                "build_command": "make",
                "benchmark_command": ["./bench", "--all"],
            }
        },
    )
    settings = load_settings(config_path=config, environ={}, cwd=cwd)
    assert not settings.reference.is_demo
    assert settings.reference.benchmark_command == ["./bench", "--all"]


@pytest.mark.parametrize("layer", ["environment", "flag"])
def test_empty_root_is_a_config_error(layer: str, tmp_path: Path) -> None:
    """An empty ``reference.root`` is a ConfigError naming the key, not a TypeError."""
    if layer == "environment":
        err = str(config_error(environ={"BENCH_REFERENCE_ROOT": ""}, cwd=tmp_path))
        assert "BENCH_REFERENCE_ROOT" in err
    else:
        err = str(config_error(environ={}, overrides=["reference.root="], cwd=tmp_path))
        assert "reference.root=" in err
    assert "reference.root" in err
    assert "work directory" in err


def test_digest_changes_with_a_setting(tmp_path: Path) -> None:
    """The settings digest is stable for equal settings and differs when a value changes."""
    one = load_settings(environ={}, cwd=tmp_path)
    again = load_settings(environ={}, cwd=tmp_path)
    other = load_settings(environ={"BENCH_REFERENCE_BRANCH": "main"}, cwd=tmp_path)
    assert one.digest() == again.digest()
    assert one.digest() != other.digest()
