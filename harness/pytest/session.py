"""The per-process scenario runner (``ScenarioRunner``, in the config's stash): settings,
atomics, the nodes (``harness.pytest.fleet.NodeFleet``: targets, facts, sensors), and one
scenario item's run: its rows, its JUnit properties and its test outcome, decided by
``harness.core.policy`` (a failing verdict fails the test; only NOT_EXECUTED skips it).
Not a ``pytest.Session`` nor a ``targets.base.Session``."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from harness.core import policy
from harness.core.atomic import Atomic
from harness.core.errors import ScenarioError, TargetError
from harness.core.node import NodeFacts, kernel_satisfies
from harness.core.run import Run
from harness.core.scenario import Scenario, load_atomics
from harness.core.secrets import redact
from harness.core.verdict import Judgement, Verdict
from harness.engine.config import Settings
from harness.engine.execute import Outcome, execute, new_run_id
from harness.pytest.fleet import NodeFleet
from harness.pytest.junit import junit_properties
from harness.report.results import explain, rows_for
from harness.sensors.base import Sensor, expect_key
from harness.sensors.rulepack import rulepacks_of

RUNNER = pytest.StashKey["ScenarioRunner"]()
ROWS_PROPERTY = "shadowtest_rows"


class ScenarioRunner:
    """Runs scenario items on the configured nodes, once per pytest process."""

    def __init__(self, settings: Settings, config: pytest.Config | None = None) -> None:
        self.settings = settings
        self.config = config
        self._atomics: tuple[dict[str, Atomic], list[ScenarioError]] | None = None
        self.fleet = NodeFleet(settings, config)
        self.scenario_paths: tuple[Path, ...] = settings.scenarios

    # ------------------------------------------------------------ data
    def atomics(self) -> tuple[dict[str, Atomic], list[ScenarioError]]:
        """Every atomic of the configured directories (the built-in ones last; found by
        configuration, never by a folder's name), loaded once per process."""
        if self._atomics is None:
            self._atomics = load_atomics(
                dict.fromkeys(d.resolve() for d in self.settings.atomics if d.is_dir()))
        return self._atomics

    # ------------------------------------------------------------ one test
    def run_item(self, item: pytest.Item, scenario: Scenario, context: str, node: str) -> None:
        fleet = self.fleet
        target = fleet.target(node)
        target_error = ""
        if context not in target.contexts():
            pytest.skip(f"node {node} ({self.settings.nodes[node]}) has no {context!r} context")
        facts = fleet.facts(node)
        unmet = unmet_requirements(item, facts)
        if unmet:  # not runnable on this node: a NOT_EXECUTED row per sensor, with the reason
            outcome = not_runnable(scenario, context, node, facts, fleet.built(node), unmet)
            sensors: dict[str, Sensor] = {}
        else:
            sensors = fleet.sensors_for(node)
            try:
                outcome = execute(scenario, context, target, facts, sensors,
                                  window=_window(scenario, self))
            except TargetError as exc:  # the node could not run it: rows say why, test fails
                outcome = not_runnable(scenario, context, node, facts, sensors,
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
                 sensors: Mapping[str, Sensor], reason: str) -> Outcome:
    """The outcome of a scenario its node cannot run: nothing was started or attacked (each
    sensor's row states what it would have been judged against)."""
    now = time.time()
    reason = reason if reason.startswith("target error") else f"not runnable: {reason}"
    run = Run(run_id=new_run_id(), scenario=scenario.id, context=context, node=node,
              started_at=now, ended_at=now, executed=False, reason=reason,
              facts=facts.as_row())
    judgements = tuple(
        Judgement(name, Verdict.NOT_EXECUTED, run.reason,
                  expected=scenario.expectation(expect_key(name, sensor), run.facts))
        for name, sensor in sensors.items())
    return Outcome(run, judgements, {})


def runner_of(config: pytest.Config) -> ScenarioRunner:
    return config.stash[RUNNER]


def rows_of(report: pytest.TestReport) -> list[dict[str, Any]]:
    for name, value in report.user_properties:
        if name == ROWS_PROPERTY and isinstance(value, list):
            return value
    return []
