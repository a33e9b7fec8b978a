"""JUnit XML properties of a scenario test, from its results rows.

pytest's ``--junitxml`` writes every ``item.user_properties`` pair as
``<property name=... value=...>`` under the test's ``<testcase>``, whatever the
``junit_family`` (the xunit2 warning applies only to the ``record_property`` fixture).
Names are ``shadowtest.<key>`` for the run and ``shadowtest.<sensor>.<key>`` per verdict.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

RUN_KEYS = ("run_id", "kernel", "node", "context", "technique", "tactic")
VERDICT_KEYS = ("verdict", "latency_ms", "rule", "correlated_by", "rulepack")


def junit_properties(rows: Sequence[dict[str, Any]]) -> list[tuple[str, str]]:
    """Per sensor: verdict, latency_ms, rule, correlated_by, rulepack (when known); then the run's
    run_id, kernel, node, context, technique and tactic (once)."""
    out: list[tuple[str, str]] = []
    for row in rows:
        for key in VERDICT_KEYS:
            value = row.get(key)
            if value is not None and value != "":
                out.append((f"shadowtest.{row.get('sensor')}.{key}", str(value)))
    if rows:
        first = rows[0]
        for key in RUN_KEYS:
            value = first.get(key)
            if value is not None and value != "":
                out.append((f"shadowtest.{key}", str(value)))
    return out
