"""Settings from ``shadowtest.toml`` or ``[tool.shadowtest]`` in pyproject.toml, frozen."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.builtin import ATOMICS, NAME, SCENARIOS
from harness.core.errors import ConfigError
from harness.core.policy import BUDGET_ENTRY, NotExecutedBudget
from harness.core.schema import parse_duration

# Every public key, with what it means: unknown keys are errors.
KEYS: dict[str, str] = {
    "scenarios": "directories (or files) of scenarios, relative to the config file; 'builtin' "
                 "(or 'builtin/<tactic>') is the catalogue shipped with shadowtest",
    "atomics": "directories of atomics, relative to the config file (the built-in atomics are "
               "always available after these)",
    "sensors": "[tool.shadowtest.sensors.<name>] tables: type, enabled, and the sensor's own options",
    "allowed_nodes": "node names atomics may run on; any other node is refused",
    "nodes": "node name -> {url = 'local://'}",
    "window": "default detection window, e.g. '5s'",
    "results": "default results file (JSON lines), e.g. 'results.jsonl'",
    "max_not_executed": "the most runs that may end NOT_EXECUTED before the session fails "
                        "(default: any number), not counting allowed_not_executed",
    "allowed_not_executed": "runs that may end NOT_EXECUTED without counting against "
                            "max_not_executed: 'scenario' or 'scenario[context]', * globs",
    "coverage": "[tool.shadowtest.coverage] defaults of `shadowtest coverage`: threshold "
                "(0.0-1.0, default 1.0)",
    "parity": "[tool.shadowtest.parity] defaults of `shadowtest parity`: engine, keys, tolerance, "
              "gate, severity, window",
}
NODE_KEYS = {"url": "where the node is reached: local://, vm://6.1, "
                    "ssh://user@host:port?key=...&known_hosts=...&ssh_config=..., docker://, "
                    "kubernetes://NODE?kubeconfig=..."}


@dataclass(frozen=True)
class Settings:
    source: Path | None
    root: Path
    scenarios: tuple[Path, ...] = ()
    atomics: tuple[Path, ...] = ()
    sensors: tuple[str, ...] = ()
    sensor_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    nodes: Mapping[str, str] = field(default_factory=dict)
    allowed_nodes: tuple[str, ...] = ()
    window: float = 5.0
    results: Path | None = None
    not_executed: NotExecutedBudget = field(default_factory=NotExecutedBudget)

    def where(self, table: str, key: str) -> str:
        """``file:line`` of ``key`` in ``[tool.shadowtest.<table>]`` (for error messages)."""
        if self.source is None:
            return "<no config file>"
        return f"{self.source}:{_line_of(self.source, key, f'tool.shadowtest.{table}')}"

    def with_sensors(self, names: tuple[str, ...]) -> Settings:
        unknown = [n for n in names if n not in self.sensor_options and n not in _builtin()]
        if unknown:
            raise ConfigError(
                f"--shadowtest-sensors names {', '.join(unknown)}: expected configured sensors "
                f"({', '.join(sorted(self.sensor_options)) or 'none'}) or built-in types"
            )
        return Settings(**{**self.__dict__, "sensors": names})


def _builtin() -> set[str]:
    from harness.sensors.base import known_sensors

    return set(known_sensors())


def find_config(rootdir: Path, explicit: Path | None = None) -> tuple[Path | None, dict[str, Any]]:
    """``explicit`` > ``shadowtest.toml`` > ``pyproject.toml [tool.shadowtest]``."""
    candidates = [explicit] if explicit else [rootdir / "shadowtest.toml", rootdir / "pyproject.toml"]
    for path in candidates:
        if path is None or not path.is_file():
            if explicit:
                raise ConfigError(f"{explicit}: config file not found; pass an existing file")
            continue
        try:
            data = tomllib.loads(path.read_text("utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
        if path.name == "pyproject.toml":
            table = data.get("tool", {}).get("shadowtest")
            if table is None:
                continue
            return path, table
        return path, data.get("tool", {}).get("shadowtest", data)
    return None, {}


def load_settings(rootdir: Path, explicit: Path | None = None) -> Settings:
    source, table = find_config(rootdir, explicit)
    base = source.parent if source else rootdir
    where = str(source) if source else "<defaults>"
    for key in table:
        if key not in KEYS:
            raise ConfigError(
                f"{where}:{_line_of(source, key)}: [tool.shadowtest] unknown key {key!r}: "
                f"expected one of {', '.join(sorted(KEYS))}"
            )
    nodes_raw = table.get("nodes", {"local": {"url": "local://"}})
    nodes: dict[str, str] = {}
    for name, node in nodes_raw.items():
        if not isinstance(node, dict) or "url" not in node:
            raise ConfigError(f"{where}: nodes.{name}: expected a table with url = '...', got {node!r}")
        for key in node:
            if key not in NODE_KEYS:
                raise ConfigError(
                    f"{where}:{_line_of(source, key)}: nodes.{name}: unknown key {key!r}: "
                    f"expected one of {', '.join(NODE_KEYS)}"
                )
        nodes[name] = str(node["url"])
    sensors_table = table.get("sensors", {})
    if not isinstance(sensors_table, dict) or not all(isinstance(v, dict) for v in sensors_table.values()):
        raise ConfigError(
            f"{where}:{_line_of(source, 'sensors')}: sensors: expected tables "
            f"[tool.shadowtest.sensors.<name>] with type = '...', got {sensors_table!r}"
        )
    sensor_options = {k: {o: x for o, x in v.items() if o != "enabled"} for k, v in sensors_table.items()}
    enabled = tuple(k for k, v in sensors_table.items() if v.get("enabled", True))
    try:
        window = parse_duration(str(table.get("window", "5s")))
    except ValueError as exc:
        raise ConfigError(f"{where}:{_line_of(source, 'window')}: window: {exc}") from exc
    results = table.get("results")
    budget = _budget(table, where, source)
    return Settings(
        source=source,
        root=base,
        scenarios=tuple(catalogue_path(base, p, SCENARIOS)
                        for p in _paths(table, "scenarios", ["scenarios"])),
        atomics=tuple(dict.fromkeys(
            [*(catalogue_path(base, p, ATOMICS) for p in _paths(table, "atomics", ["atomic"])),
             ATOMICS])),
        sensors=enabled,
        sensor_options=sensor_options,
        nodes=nodes,
        allowed_nodes=tuple(table.get("allowed_nodes", ())),
        window=window,
        results=base / results if results else None,
        not_executed=budget,
    )


def _budget(table: Mapping[str, Any], where: str, source: Path | None) -> NotExecutedBudget:
    """``max_not_executed`` and ``allowed_not_executed`` (an allow-list alone: none else)."""
    limit = table.get("max_not_executed")
    allowed = table.get("allowed_not_executed", [])
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ConfigError(f"{where}:{_line_of(source, 'max_not_executed')}: max_not_executed: "
                          f"expected a whole number >= 0 (runs that may end NOT_EXECUTED), "
                          f"got {limit!r}", key="max_not_executed")
    if isinstance(allowed, str) or not isinstance(allowed, list) or not all(
            isinstance(a, str) and BUDGET_ENTRY.match(a) for a in allowed):
        raise ConfigError(f"{where}:{_line_of(source, 'allowed_not_executed')}: "
                          f"allowed_not_executed: expected a list of 'scenario' or "
                          f"'scenario[context]' (* globs), e.g. ['setuid-root-gain', "
                          f"'host-fs-mount[namespace]'], got {allowed!r}",
                          key="allowed_not_executed")
    if limit is None and allowed:
        limit = 0
    return NotExecutedBudget(limit, tuple(allowed))


def catalogue_path(base: Path, entry: str, builtin: Path) -> Path:
    """A ``scenarios``/``atomics`` entry: ``builtin`` (or ``builtin/<sub>``) names that part
    of the catalogue shipped with shadowtest (``builtin``: its scenarios or its atomics);
    anything else is a path relative to ``base``. ``./builtin`` names a project directory."""
    if entry == NAME or entry.startswith(NAME + "/"):
        return builtin / entry[len(NAME):].strip("/")
    return base / entry


def _paths(table: Mapping[str, Any], key: str, default: list[str]) -> list[str]:
    value = table.get(key, default)
    if isinstance(value, str) or not isinstance(value, list) or not all(
            isinstance(v, str) for v in value):
        raise ConfigError(f"[tool.shadowtest] {key}: expected a list of paths, e.g. "
                          f"{key} = {default!r}, got {value!r}")
    return value


def _line_of(source: Path | None, key: str, table: str = "tool.shadowtest") -> str:
    """Line of ``key`` inside ``[table]`` (or a sub-table of it) in a TOML file. In a
    ``shadowtest.toml`` the tables may be written with or without ``tool.shadowtest.``."""
    if source is None:
        return "?"

    def short(name: str) -> str:
        name = name.strip()
        return name.removeprefix("tool.shadowtest").lstrip(".")

    want = short(table)
    in_shadowtest_toml = source.name != "pyproject.toml"
    current: str | None = "" if in_shadowtest_toml else None
    try:
        lines = source.read_text("utf-8").splitlines()
    except OSError:
        return "?"
    for n, line in enumerate(lines, 1):
        text = line.strip()
        if text.startswith("["):
            name = text.strip("[]").strip().replace('"', "")
            ours = name == "tool.shadowtest" or name.startswith("tool.shadowtest.")
            current = short(name) if ours or in_shadowtest_toml else None
            continue
        if current is None or not (current == want or current.startswith(want + ".")
                                   or want == ""):
            continue
        if text.startswith((f"{key} ", f"{key}=")):
            return str(n)
    return "?"
