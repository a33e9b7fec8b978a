"""Per-process shadowtest state: settings, atomics, targets, node facts, sensors, results."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from harness.atomic import Atomic
from harness.config import Settings
from harness.errors import ConfigError, ScenarioError, SensorError
from harness.execute import execute
from harness.node import NodeFacts, kernel_satisfies
from harness.report.results import explain, rows_for
from harness.scenario import Scenario, load_atomics
from harness.secrets import redact
from harness.sensors.base import Sensor, build_sensor
from harness.targets.base import Target, build_target
from harness.verdict import Verdict

SESSION = pytest.StashKey["ShadowtestSession"]()
ROWS_PROPERTY = "shadowtest_rows"


class ShadowtestSession:
    def __init__(self, settings: Settings, config: pytest.Config | None = None) -> None:
        self.settings = settings
        self.config = config
        self._atomics: dict[tuple[Path, ...], tuple[dict[str, Atomic], list[ScenarioError]]] = {}
        self._targets: dict[str, Target] = {}
        self._facts: dict[str, NodeFacts] = {}
        self.sensors: dict[str, Sensor] = {}

    # ------------------------------------------------------------ data
    def atomic_dirs_for(self, scenario_path: Path) -> tuple[Path, ...]:
        """Configured atomic dirs + the ``atomic/`` next to the scenario tree it is in."""
        dirs = list(self.settings.atomics)
        for parent in scenario_path.resolve().parents:
            if parent.name == "scenarios" and (parent.parent / "atomic").is_dir():
                dirs.insert(0, parent.parent / "atomic")
                break
        return tuple(dict.fromkeys(d.resolve() for d in dirs if d.is_dir()))

    def atomics_for(self, scenario_path: Path) -> tuple[dict[str, Atomic], list[ScenarioError]]:
        key = self.atomic_dirs_for(scenario_path)
        if key not in self._atomics:
            self._atomics[key] = load_atomics(key)
        return self._atomics[key]

    # ------------------------------------------------------------ nodes
    def target(self, node: str) -> Target:
        if node not in self._targets:
            self._targets[node] = build_target(node, self.settings.nodes[node])
        return self._targets[node]

    def facts(self, node: str) -> NodeFacts:
        if node not in self._facts:
            self._facts[node] = self.target(node).facts()
            if self.config is not None:
                self.config.hook.pytest_shadowtest_node_facts(config=self.config,
                                                             facts=self._facts[node])
        return self._facts[node]

    # ------------------------------------------------------------ sensors
    def start_sensors(self) -> dict[str, Sensor]:
        """Start every configured sensor; a sensor that cannot start stays in the set and
        is judged SENSOR_DOWN with the reason (never MISSED)."""
        for name in self.settings.sensors:
            options = dict(self.settings.sensor_options.get(name, {"type": name}))
            options.setdefault("node", next(iter(self.settings.nodes), None))
            sensor = build_sensor(name, options)
            self.sensors[name] = sensor
            try:
                sensor.start()
            except SensorError as exc:
                sensor.stream.close(str(exc))
            except ConfigError as exc:  # e.g. a literal credential: stop before any attack
                self.stop_sensors()
                pytest.exit(f"shadowtest: configuration error: {exc}", returncode=4)
        return self.sensors

    def stop_sensors(self) -> None:
        for sensor in reversed(list(self.sensors.values())):
            with contextlib.suppress(Exception):
                sensor.stop()
        self.sensors.clear()

    def close(self) -> None:
        self.stop_sensors()
        for target in self._targets.values():
            with contextlib.suppress(Exception):
                target.close()

    # ------------------------------------------------------------ one test
    def run_item(self, item: pytest.Item, scenario: Scenario, context: str, node: str,
                 sensors: Mapping[str, Sensor]) -> None:
        facts = self.facts(node)
        target = self.target(node)
        if context not in target.contexts():
            pytest.skip(f"node {node} ({self.settings.nodes[node]}) has no {context!r} context")
        outcome = execute(scenario, context, target, facts, sensors, window=_window(scenario, self))
        item.config.hook.pytest_shadowtest_run_finished(item=item, outcome=outcome)
        rows = rows_for(outcome, scenario)
        rows = json.loads(redact(json.dumps(rows, default=str)))
        item.user_properties.append((ROWS_PROPERTY, rows))
        for j in outcome.judgements:
            item.user_properties.append((f"shadowtest.{j.sensor}.verdict", j.verdict.value))
        item.user_properties.append(("shadowtest.kernel", facts.kernel))
        message = explain(scenario.id, context, node, facts.kernel, outcome.run.run_id,
                          outcome.judgements)
        verdicts = {j.verdict for j in outcome.judgements}
        if any(v.failed for v in verdicts) or Verdict.SENSOR_DOWN in verdicts:
            pytest.fail(message, pytrace=False)
        if verdicts == {Verdict.NOT_EXECUTED}:
            raise pytest.skip.Exception(f"NOT_EXECUTED: {outcome.run.reason}",
                                        _use_item_location=True)


def _window(scenario: Scenario, st: ShadowtestSession) -> float:
    return scenario.window if scenario.window is not None else st.settings.window


def check_markers(item: pytest.Item, facts: NodeFacts) -> None:
    """Skip (with the reason) when the node's kernel or features do not meet the item's
    ``shadowtest_kernel`` / ``shadowtest_requires`` markers."""
    for mark in item.iter_markers("shadowtest_kernel"):
        for requirement in mark.args:
            if not kernel_satisfies(facts.kernel, str(requirement)):
                pytest.skip(f"kernel {facts.kernel} on {facts.node} does not satisfy {requirement}")
    for mark in item.iter_markers("shadowtest_requires"):
        for feature in mark.args:
            ok, why = facts.feature(str(feature))
            if not ok:
                pytest.skip(f"{feature} not usable on {facts.node} ({facts.kernel}): {why}")


def session_of(config: pytest.Config) -> ShadowtestSession:
    return config.stash[SESSION]


def rows_of(report: pytest.TestReport) -> list[dict[str, Any]]:
    for name, value in report.user_properties:
        if name == ROWS_PROPERTY and isinstance(value, list):
            return value
    return []
