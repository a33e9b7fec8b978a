"""The per-process scenario runner (``ScenarioRunner``, in the config's stash): settings,
atomics, the nodes' targets and facts, the sensors watching them (built, started, stopped),
and one scenario item's run: its rows, its JUnit properties and its test outcome, decided
by ``harness.core.policy`` (a failing verdict fails the test; only NOT_EXECUTED skips it).
Not a ``pytest.Session`` nor a ``targets.base.Session``."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from harness.core import policy
from harness.core.atomic import Atomic
from harness.core.errors import ConfigError, ScenarioError, SensorError, TargetError
from harness.core.node import NodeFacts, kernel_satisfies
from harness.core.run import Run
from harness.core.scenario import Scenario, load_atomics
from harness.core.secrets import redact
from harness.core.verdict import Judgement, Verdict
from harness.engine.config import Settings
from harness.engine.execute import Outcome, execute, new_run_id
from harness.nodes.reaper import deferred_signals
from harness.nodes.shell import NodeShell
from harness.pytest.junit import junit_properties
from harness.report.results import explain, rows_for
from harness.sensors.base import OnNode, Sensor, build_sensor
from harness.sensors.rulepack import rulepacks_of
from harness.targets.base import Target, build_target

RUNNER = pytest.StashKey["ScenarioRunner"]()
ROWS_PROPERTY = "shadowtest_rows"


class ScenarioRunner:
    """Runs scenario items on the configured nodes, once per pytest process."""

    def __init__(self, settings: Settings, config: pytest.Config | None = None) -> None:
        self.settings = settings
        self.config = config
        self._atomics: tuple[dict[str, Atomic], list[ScenarioError]] | None = None
        self._targets: dict[str, Target] = {}
        self._facts: dict[str, NodeFacts] = {}
        self._node_sensors: dict[str, dict[str, Sensor]] = {}
        self._built: dict[str, dict[str, Sensor]] = {}  # node -> sensors built, not started
        self.scenario_paths: tuple[Path, ...] = settings.scenarios

    def build(self) -> None:
        """Build (never start) every node's target and every sensor watching it, so that a
        bad node URL or sensor option is a configuration error before the first attack:
        ``ConfigError`` naming the file, line and key."""
        for node, url in self.settings.nodes.items():
            try:
                self.target(node)
            except (ConfigError, TargetError) as exc:
                raise ConfigError(f"{self.settings.where(f'nodes.{node}', 'url')}: "
                                  f"nodes.{node}.url = {url!r}: {exc}") from exc
            sensors: dict[str, Sensor] = {}
            for name in self.judged_on(node):
                options = {**self.settings.sensor_options.get(name, {"type": name}), "node": node}
                try:
                    sensors[name] = build_sensor(name, options)
                except (ConfigError, SensorError, TypeError, ValueError) as exc:
                    key = (exc.key if isinstance(exc, ConfigError) else None) or "type"
                    raise ConfigError(f"{self.settings.where(f'sensors.{name}', key)}: "
                                      f"sensors.{name}: {exc}") from exc
            self._built[node] = sensors

    # ------------------------------------------------------------ data
    def atomics(self) -> tuple[dict[str, Atomic], list[ScenarioError]]:
        """Every atomic of the configured directories (the built-in ones last; found by
        configuration, never by a folder's name), loaded once per process."""
        if self._atomics is None:
            self._atomics = load_atomics(
                dict.fromkeys(d.resolve() for d in self.settings.atomics if d.is_dir()))
        return self._atomics

    # ------------------------------------------------------------ nodes
    def target(self, node: str) -> Target:
        if node not in self._targets:
            self._targets[node] = build_target(node, self.settings.nodes[node])
        return self._targets[node]

    def parallel_safe(self, node: str) -> bool:
        """Whether runs on ``node`` may go to several xdist workers at once (the local
        machine and docker: runs are told apart by run id and process tree); any other
        node's runs are grouped on one worker (``xdist_group``), so a VM boots once."""
        return self.target(node).PARALLEL_SAFE

    def facts(self, node: str) -> NodeFacts:
        if node not in self._facts:
            self._facts[node] = self.target(node).facts()
            if self.config is not None:
                self.config.hook.pytest_shadowtest_node_facts(config=self.config,
                                                             facts=self._facts[node])
        return self._facts[node]

    # ------------------------------------------------------------ sensors
    def sensors_for(self, node: str) -> dict[str, Sensor]:
        """The configured sensors watching ``node``, started (live) on first use and kept
        for the session. Each node gets its own instances: the embedded sensors run *on*
        the node (its kernel) through the target's shell. A sensor that cannot start stays
        in the set and is judged SENSOR_DOWN with the reason (never MISSED). A sensor table
        with ``nodes = [...]`` watches only those nodes."""
        if node in self._node_sensors:
            return self._node_sensors[node]
        if node not in self._built:
            self.build()
        started: dict[str, Sensor] = {}
        for name, sensor in self._built[node].items():
            started[name] = sensor  # kept even when it cannot start: judged SENSOR_DOWN
            try:
                if isinstance(sensor, OnNode):
                    sensor.use_shell(self._shell_for_sensor(name, node))
                sensor.start()
            except ConfigError as exc:  # e.g. a literal credential: stop before any attack
                self.close()
                pytest.exit(f"shadowtest: configuration error: {exc}", returncode=4)
            except Exception as exc:
                sensor.stream.close(f"{name} did not start on node {node}: "
                                    f"{type(exc).__name__}: {exc}")
        self._node_sensors[node] = started
        return started

    def _shell_for_sensor(self, name: str, node: str) -> NodeShell:
        shell = self.shell(node)
        if shell is None:
            raise SensorError(f"{name}: runs on the node it watches, and node {node!r} "
                              f"({self.settings.nodes[node]}) gives no shell to run it on")
        return shell

    def judged_on(self, node: str) -> list[str]:
        """The configured sensors that watch ``node`` (``nodes = [...]`` restricts one)."""
        return [name for name in self.settings.sensors
                if node in self.settings.sensor_options.get(name, {}).get("nodes", [node])]

    def shell(self, node: str) -> NodeShell | None:
        return self.target(node).shell()

    def start_sensors(self) -> dict[str, Sensor]:
        """The first configured node's sensors (what a single-node run uses)."""
        return self.sensors_for(next(iter(self.settings.nodes)))

    @property
    def sensors(self) -> dict[str, Sensor]:
        """Every started sensor, as ``name`` (first node) or ``name@node`` (others)."""
        out: dict[str, Sensor] = {}
        for i, (node, sensors) in enumerate(self._node_sensors.items()):
            for name, sensor in sensors.items():
                out[name if i == 0 else f"{name}@{node}"] = sensor
        return out

    def stop_sensors(self) -> None:
        for sensors in reversed(list(self._node_sensors.values())):
            for sensor in reversed(list(sensors.values())):
                with contextlib.suppress(Exception):
                    sensor.stop()
        self._node_sensors.clear()

    def close(self) -> None:
        """Stop every sensor, then close every target. A Ctrl-C or SIGTERM meanwhile is
        absorbed: the session is ending anyway, and a KeyboardInterrupt here (not an
        Exception) would skip every later sensor and target."""
        with deferred_signals() as held:
            try:
                self.stop_sensors()
                for target in reversed(list(self._targets.values())):
                    with contextlib.suppress(Exception):
                        target.close()
                self._targets.clear()
            finally:
                held.clear()

    # ------------------------------------------------------------ one test
    def run_item(self, item: pytest.Item, scenario: Scenario, context: str, node: str) -> None:
        target = self.target(node)
        target_error = ""
        if context not in target.contexts():
            pytest.skip(f"node {node} ({self.settings.nodes[node]}) has no {context!r} context")
        facts = self.facts(node)
        unmet = unmet_requirements(item, facts)
        if unmet:  # not runnable on this node: a NOT_EXECUTED row per sensor, with the reason
            outcome = not_runnable(scenario, context, node, facts, self.judged_on(node), unmet)
            sensors: dict[str, Sensor] = {}
        else:
            sensors = self.sensors_for(node)
            try:
                outcome = execute(scenario, context, target, facts, sensors,
                                  window=_window(scenario, self))
            except TargetError as exc:  # the node could not run it: rows say why, test fails
                outcome = not_runnable(scenario, context, node, facts, list(sensors),
                                       f"target error on {node}: {exc}")
                target_error = str(exc)
        item.config.hook.pytest_shadowtest_run_finished(item=item, outcome=outcome)
        rows = rows_for(outcome, scenario, rulepacks_of(sensors))
        rows = json.loads(redact(json.dumps(rows, default=str)))
        item.user_properties.append((ROWS_PROPERTY, rows))
        item.user_properties.extend(junit_properties(rows))  # --junitxml <properties>
        message = explain(scenario.id, context, node, facts.kernel, outcome.run.run_id,
                          outcome.judgements)
        decided = scenario_outcome(outcome.judgements)
        if target_error:
            pytest.fail(f"{message}\n  target error: {target_error}", pytrace=False)
        if decided == "failed":
            pytest.fail(message, pytrace=False)
        if decided == "skipped":
            raise pytest.skip.Exception(f"NOT_EXECUTED: {outcome.run.reason}",
                                        _use_item_location=True)


def scenario_outcome(judgements: Sequence[Judgement]) -> str:
    """A scenario test's outcome from its sensors' judgements (``harness.core.policy``):
    ``failed`` when one fails, ``skipped`` when nothing ran (every one NOT_EXECUTED), else
    ``passed``."""
    outcomes = [policy.outcome_of(j) for j in judgements]
    if policy.session_fails(outcomes):
        return "failed"
    return "skipped" if policy.session_skips(outcomes) else "passed"


def _window(scenario: Scenario, st: ScenarioRunner) -> float:
    return scenario.window if scenario.window is not None else st.settings.window


def unmet_requirements(item: pytest.Item, facts: NodeFacts) -> str:
    """Why the node's kernel or features do not meet the item's ``shadowtest_kernel`` /
    ``shadowtest_requires`` markers ('' when they do)."""
    for mark in item.iter_markers("shadowtest_kernel"):
        for requirement in mark.args:
            if not kernel_satisfies(facts.kernel, str(requirement)):
                return f"kernel {facts.kernel} on {facts.node} does not satisfy {requirement}"
    for mark in item.iter_markers("shadowtest_requires"):
        for feature in mark.args:
            ok, why = facts.feature(str(feature))
            if not ok:
                return f"{feature} not usable on {facts.node} ({facts.kernel}): {why}"
    return ""


def check_markers(item: pytest.Item, facts: NodeFacts) -> None:
    """Skip (with the reason) when the node does not meet the item's markers (users' own
    tests; scenario items record a NOT_EXECUTED row instead, see run_item)."""
    why = unmet_requirements(item, facts)
    if why:
        pytest.skip(why)


def not_runnable(scenario: Scenario, context: str, node: str, facts: NodeFacts,
                 sensors: Sequence[str], reason: str) -> Outcome:
    """The outcome of a scenario its node cannot run: nothing was started or attacked."""
    now = time.time()
    reason = reason if reason.startswith("target error") else f"not runnable: {reason}"
    run = Run(run_id=new_run_id(), scenario=scenario.id, context=context, node=node,
              started_at=now, ended_at=now, executed=False, reason=reason,
              facts=facts.as_row())
    judgements = tuple(Judgement(s, Verdict.NOT_EXECUTED, run.reason) for s in sensors)
    return Outcome(run, judgements, {})


def runner_of(config: pytest.Config) -> ScenarioRunner:
    return config.stash[RUNNER]


def rows_of(report: pytest.TestReport) -> list[dict[str, Any]]:
    for name, value in report.user_properties:
        if name == ROWS_PROPERTY and isinstance(value, list):
            return value
    return []
