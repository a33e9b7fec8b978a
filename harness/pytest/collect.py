"""Collection: scenario YAML files -> one ordinary pytest Function per (scenario, context, node)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.core.errors import ScenarioError
from harness.core.scenario import Scenario, check_scenario, is_atomic_file
from harness.pytest.session import ScenarioRunner, runner_of


class ScenarioCollectionError(Exception):
    """All errors of one scenario file (file:line: key: message, one per line)."""


class ScenarioFile(pytest.File):
    """``scenarios/<tactic>/<id>.yaml``: yields a test per context and node, in order."""

    def collect(self) -> Iterable[pytest.Item | pytest.Collector]:
        st = runner_of(self.config)
        atomics, atomic_errors = st.atomics()
        errors, scenario = check_scenario(self.path, atomics)
        if errors or scenario is None:
            msg = [str(e) for e in errors]
            if any(e.key == "atomic" for e in errors):
                msg += [f"  (atomic file error) {e}" for e in atomic_errors]
            raise ScenarioCollectionError("\n".join(msg))
        yield from _items(self, scenario, st)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException],
                     style: Any = None) -> str:
        if isinstance(excinfo.value, ScenarioCollectionError | ScenarioError):
            return str(excinfo.value)
        return str(super().repr_failure(excinfo))


def _items(parent: ScenarioFile, scenario: Scenario, st: ScenarioRunner) -> Iterator[pytest.Function]:
    for context in scenario.contexts:
        for node in st.settings.nodes:
            fn = _make_test(scenario, context, node)
            item = ScenarioFunction.from_parent(
                parent, name=f"{scenario.id}[{context}-{node}]", callobj=fn,
            )
            if scenario.technique:
                item.add_marker(pytest.mark.shadowtest_technique(scenario.technique))
            if scenario.kernel:
                item.add_marker(pytest.mark.shadowtest_kernel(scenario.kernel))
            if scenario.features:
                item.add_marker(pytest.mark.shadowtest_requires(*scenario.features))
            item.add_marker(pytest.mark.shadowtest_sensor(*st.settings.sensors))
            if not st.fleet.parallel_safe(node):  # one worker per node: one VM boot, no interference
                item.add_marker(pytest.mark.xdist_group(name=f"shadowtest-node-{node}"))
            item.stash[SCENARIO] = (scenario, context, node)
            yield item


class ScenarioFunction(pytest.Function):
    """An ordinary Function (fixtures, markers, xdist, allure all apply) that reports its
    scenario file as its location."""

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, 0, self.name


SCENARIO = pytest.StashKey[tuple[Scenario, str, str]]()


def _make_test(scenario: Scenario, context: str, node: str) -> Callable[..., None]:
    def test_scenario(request: pytest.FixtureRequest, shadowtest_sensors: Any) -> None:
        runner_of(request.config).run_item(request.node, scenario, context, node)

    test_scenario.__doc__ = scenario.name
    return test_scenario


def is_scenario_file(path: Path, scenario_dirs: Iterable[Path]) -> bool:
    """YAML under a configured scenario path (``[tool.shadowtest] scenarios``), and not an
    atomic. Nothing else is ever collected: a project's own ``tests/scenarios/*.yaml`` stays
    its own."""
    if path.suffix not in (".yaml", ".yml"):
        return False
    resolved = path.resolve()
    if not any(resolved == d.resolve() or resolved.is_relative_to(d.resolve())
               for d in scenario_dirs):
        return False
    return not is_atomic_file(path)
