"""``harness.engine.config.load_settings`` on real TOML files, and the node allow-list."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.builtin import ATOMICS
from harness.core.errors import ConfigError, SafetyError
from harness.engine.config import Settings, load_settings
from harness.engine.safety import check_nodes_allowed

PYPROJECT = """\
[project]
name = "someone-elses-suite"

[tool.shadowtest]
scenarios = ["attacks"]
atomics = ["atomic", "more-atomics"]
allowed_nodes = ["local", "kvm-6-1"]
window = "500ms"
results = "out/results.jsonl"

[tool.shadowtest.nodes.local]
url = "local://"

[tool.shadowtest.nodes.kvm-6-1]
url = "ssh://root@127.0.0.1:10022"

[tool.shadowtest.sensors.auditd]
type = "auditd"

[tool.shadowtest.sensors.bpftrace]
type = "bpftrace"
enabled = false
perf_rb_pages = 256
"""


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_load_settings_reads_tool_shadowtest_from_pyproject(tmp_path: Path) -> None:
    source = _write(tmp_path, "pyproject.toml", PYPROJECT)
    settings = load_settings(tmp_path)
    assert (settings.source, settings.root) == (source, tmp_path)
    assert settings.scenarios == (tmp_path / "attacks",)
    assert settings.atomics == (tmp_path / "atomic", tmp_path / "more-atomics", ATOMICS)
    assert settings.allowed_nodes == ("local", "kvm-6-1")
    assert settings.nodes == {"local": "local://", "kvm-6-1": "ssh://root@127.0.0.1:10022"}
    assert settings.results == tmp_path / "out" / "results.jsonl"


def test_load_settings_disabled_sensor_is_not_in_sensors(tmp_path: Path) -> None:
    _write(tmp_path, "pyproject.toml", PYPROJECT)
    settings = load_settings(tmp_path)
    assert settings.sensors == ("auditd",)
    assert settings.sensor_options == {
        "auditd": {"type": "auditd"},
        "bpftrace": {"type": "bpftrace", "perf_rb_pages": 256},
    }


@pytest.mark.parametrize(
    ("window", "seconds"),
    [('"500ms"', 0.5), ('"5s"', 5.0), ('"1.5s"', 1.5), ('"2m"', 120.0)],
)
def test_load_settings_parses_window(tmp_path: Path, window: str, seconds: float) -> None:
    _write(tmp_path, "shadowtest.toml", f"window = {window}\n")
    assert load_settings(tmp_path).window == seconds


@pytest.mark.parametrize("window", ['"5 seconds"', '"5h"', '"-1s"', '""', "10"])
def test_load_settings_bad_window_names_file_line_and_key(tmp_path: Path, window: str) -> None:
    path = _write(tmp_path, "shadowtest.toml", f'scenarios = ["s"]\nwindow = {window}\n')
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path)
    assert str(info.value).startswith(f"{path}:2: window: expected a duration like 500ms")


def test_load_settings_shadowtest_toml_wins_over_pyproject(tmp_path: Path) -> None:
    _write(tmp_path, "pyproject.toml", PYPROJECT)
    source = _write(tmp_path, "shadowtest.toml", 'window = "2s"\nallowed_nodes = ["ci"]\n')
    settings = load_settings(tmp_path)
    assert (settings.source, settings.window, settings.allowed_nodes) == (source, 2.0, ("ci",))
    assert settings.sensors == ()


def test_load_settings_shadowtest_toml_may_use_a_tool_table(tmp_path: Path) -> None:
    _write(tmp_path, "shadowtest.toml", '[tool.shadowtest]\nwindow = "3s"\n')
    assert load_settings(tmp_path).window == 3.0


def test_load_settings_explicit_file_wins(tmp_path: Path) -> None:
    _write(tmp_path, "shadowtest.toml", 'window = "2s"\n')
    (tmp_path / "ci").mkdir()
    explicit = _write(tmp_path / "ci", "kernel-matrix.toml", 'window = "7s"\nscenarios = ["s"]\n')
    settings = load_settings(tmp_path, explicit)
    assert (settings.source, settings.window) == (explicit, 7.0)
    assert settings.scenarios == (tmp_path / "ci" / "s",)


def test_load_settings_explicit_missing_file_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(tmp_path, missing)


@pytest.mark.parametrize(
    "files",
    [
        pytest.param({}, id="no-config"),
        pytest.param({"pyproject.toml": '[project]\nname = "x"\n'}, id="pyproject-without-table"),
    ],
)
def test_load_settings_defaults(tmp_path: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        _write(tmp_path, name, text)
    assert load_settings(tmp_path) == Settings(
        source=None, root=tmp_path, scenarios=(tmp_path / "scenarios",),
        atomics=(tmp_path / "atomic", ATOMICS), sensors=(), sensor_options={},
        nodes={"local": "local://"}, allowed_nodes=(), window=5.0, results=None,
    )


def test_load_settings_nodes_default_to_local(tmp_path: Path) -> None:
    _write(tmp_path, "pyproject.toml", '[tool.shadowtest]\nallowed_nodes = ["local"]\n')
    assert load_settings(tmp_path).nodes == {"local": "local://"}


@pytest.mark.parametrize(
    ("name", "text", "line", "key"),
    [
        pytest.param("pyproject.toml", PYPROJECT.replace('window = "500ms"', 'windw = "5s"'),
                     8, "windw", id="pyproject"),
        pytest.param("shadowtest.toml", 'window = "5s"\nallow_nodes = ["local"]\n', 2,
                     "allow_nodes", id="shadowtest-toml"),
    ],
)
def test_load_settings_unknown_key_names_file_line_and_key(
    tmp_path: Path, name: str, text: str, line: int, key: str
) -> None:
    path = _write(tmp_path, name, text)
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path)
    assert str(info.value).startswith(f"{path}:{line}: [tool.shadowtest] unknown key {key!r}")
    assert ("expected one of allowed_nodes, allowed_not_executed, atomics, coverage, "
            "max_not_executed, nodes, parity, results, scenarios, sensors, window"
            ) in str(info.value)


def test_load_settings_unknown_key_line_is_the_one_in_the_shadowtest_table(
    tmp_path: Path,
) -> None:
    """A key of the same name in another table above (pytest-timeout's) is not the culprit."""
    path = _write(tmp_path, "pyproject.toml", (
        "[tool.pytest.ini_options]\n"
        "timeout = 300\n"
        "\n"
        "[tool.shadowtest]\n"
        'timeout = "5s"\n'
    ))
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path)
    assert str(info.value).startswith(f"{path}:5: [tool.shadowtest] unknown key 'timeout'")


def test_load_settings_unknown_node_key_names_node_and_key(tmp_path: Path) -> None:
    path = _write(tmp_path, "shadowtest.toml", '[nodes.local]\nurl = "local://"\nuser = "root"\n')
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path)
    assert str(info.value).startswith(f"{path}:3: nodes.local: unknown key 'user'")


def test_load_settings_node_without_url_is_an_error(tmp_path: Path) -> None:
    path = _write(tmp_path, "shadowtest.toml", 'nodes = {local = "local://"}\n')
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path)
    assert str(info.value).startswith(f"{path}: nodes.local: expected a table with url = '...'")


def test_load_settings_sensor_that_is_not_a_table_is_an_error(tmp_path: Path) -> None:
    path = _write(tmp_path, "shadowtest.toml", 'sensors = ["auditd"]\n')
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path)
    assert str(info.value).startswith(f"{path}:1: sensors: expected tables")


def test_load_settings_invalid_toml_names_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "shadowtest.toml", "window = \n")
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path)
    assert str(info.value).startswith(f"{path}: invalid TOML:")


# ---------------------------------------------------------------- safety
def _settings(allowed: tuple[str, ...], source: Path | None = None) -> Settings:
    return Settings(source=source, root=Path("/nonexistent"), allowed_nodes=allowed)


@pytest.mark.parametrize(
    ("nodes", "allowed"),
    [([], ()), (["local"], ("local",)), (["local", "kvm-6-1"], ("kvm-6-1", "local", "x"))],
)
def test_check_nodes_allowed_passes_allowed_nodes(nodes: list[str], allowed: tuple[str, ...]) -> None:
    check_nodes_allowed(nodes, _settings(allowed))  # raises SafetyError when refused


def test_check_nodes_allowed_refuses_and_says_how_to_fix(tmp_path: Path) -> None:
    source = tmp_path / "pyproject.toml"
    with pytest.raises(SafetyError) as info:
        check_nodes_allowed(["local", "prod-1", "kvm-6-1"], _settings(("local",), source))
    assert str(info.value) == (
        f"refusing to run atomics on node(s) kvm-6-1, prod-1: not in allowed_nodes ['local'] "
        f"({source}). Atomics attack the node they run on; allow a node explicitly: "
        "allowed_nodes = ['kvm-6-1', 'local', 'prod-1']"
    )


def test_check_nodes_allowed_empty_allow_list_refuses_local() -> None:
    with pytest.raises(SafetyError, match=r"node\(s\) local: not in allowed_nodes \[\] "
                                          r"\(<no config file>\)"):
        check_nodes_allowed(["local"], _settings(()))


def test_builtin_names_the_shipped_scenarios_or_atomics(tmp_path: Path) -> None:
    from harness.builtin import SCENARIOS

    (tmp_path / "shadowtest.toml").write_text(
        'scenarios = ["builtin/credential-access", "./builtin", "mine"]\n'
        'atomics = ["builtin", "atomic"]\n')
    settings = load_settings(tmp_path)
    assert settings.scenarios == (SCENARIOS / "credential-access", tmp_path / "builtin",
                                  tmp_path / "mine")
    assert settings.atomics == (ATOMICS, tmp_path / "atomic")  # the built-in dir once
