"""``pytest_shadowtest_*`` hooks: cross-cutting concerns only (node facts, run finished)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from harness.core.node import NodeFacts
    from harness.engine.execute import Outcome


@pytest.hookspec
def pytest_shadowtest_node_facts(config: pytest.Config, facts: NodeFacts) -> None:
    """Called once per node and process when its facts have been read from the node."""


@pytest.hookspec
def pytest_shadowtest_run_finished(item: pytest.Item, outcome: Outcome) -> None:
    """Called after a run was judged for every sensor (before cleanup results are
    reported); ``outcome.run`` and ``outcome.judgements`` carry everything known."""
