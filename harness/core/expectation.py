"""The one reader of a scenario's ``expect:`` block (and of its ``overrides[].expect``):
what a sensor must report for a scenario on a node. The judge (``Scenario.expectation``),
the results rows, ``rejudge``, the catalogue, ``coverage``, ``expectations check`` and the
e2e oracles all read expectations here, so a change to gap, override or enforce semantics
is made once.

Semantics:

- a benign control expects nothing (``Expectation(technique=None)``);
- a sensor without a block must report the scenario's technique;
- ``{gap: reason}`` declares a known gap of the scenario's technique (a miss that does not
  fail; a detection still counts);
- otherwise ``technique`` (default: the scenario's), ``rule``, ``severity``, ``fields`` and
  ``enforce: {action: sigkill|deny|override}`` (BLOCKED / RACED / MISSED, never DETECTED);
- ``requires: {kernel, features}`` in a block: what that sensor needs of the node to
  observe the scenario; on a node without it the sensor's row is NOT_EXECUTED ("not
  runnable for <sensor>") while the run goes on for the others;
- on a node with facts, the first ``overrides`` entry whose ``kernel`` requirement and
  ``features`` the node meets, and which has a block for the sensor, replaces the block.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from harness.core.node import kernel_satisfies
from harness.core.verdict import Expectation

Block = Mapping[str, Any]
Override = tuple[str | None, tuple[str, ...], Mapping[str, Block]]


class Expects(Protocol):
    """What the reader needs of a scenario (``harness.core.scenario.Scenario``)."""

    @property
    def benign(self) -> bool: ...

    @property
    def technique(self) -> str | None: ...

    @property
    def expect(self) -> Mapping[str, Block]: ...

    @property
    def overrides(self) -> tuple[Override, ...]: ...


@dataclass(frozen=True, slots=True)
class Source:
    """One place a sensor's expectation comes from: the scenario's ``expect`` or one
    ``overrides`` entry (``kernel``/``features`` say on which nodes it applies)."""

    key: tuple[str | int, ...]    # key path in the scenario file, e.g. ("overrides", 0, "expect", "auditd")
    expectation: Expectation
    explicit: bool                # the file has a block for the sensor there
    kernel: str | None = None
    features: tuple[str, ...] = ()


def block(scenario: Expects, sensor: str, facts: Mapping[str, Any] | None = None) -> Block:
    """``sensor``'s expect block on a node with ``facts`` (``NodeFacts.as_row()``; None: no
    node, the scenario's own block): the first override the node meets replaces it."""
    for kernel, features, expect in scenario.overrides if facts else ():
        assert facts is not None
        release = str(facts.get("kernel") or "")
        if sensor in expect and (not kernel or (release and kernel_satisfies(release, kernel))) \
                and all(facts.get(f) for f in features):
            return expect[sensor]
    return scenario.expect.get(sensor, {})


def of_block(scenario: Expects, found: Block) -> Expectation:
    """The expectation one expect block states for ``scenario``."""
    if scenario.benign:
        return Expectation(technique=None)
    req = found.get("requires")
    requires = (req.get("kernel"), tuple(req.get("features", ()))) if req else None
    if "gap" in found:
        return Expectation(technique=scenario.technique, gap=str(found["gap"]), requires=requires)
    return Expectation(
        technique=found.get("technique", scenario.technique),
        rule=found.get("rule"),
        severity=found.get("severity"),
        fields=dict(found.get("fields", {})),
        enforce=(found.get("enforce") or {}).get("action"),
        requires=requires,
    )


def resolve(scenario: Expects, sensor: str, facts: Mapping[str, Any] | None = None) -> Expectation:
    """What ``sensor`` must report for ``scenario`` on a node with ``facts`` (module doc)."""
    return of_block(scenario, block(scenario, sensor, facts))


def explicit(scenario: Expects, sensor: str) -> bool:
    """The scenario's ``expect`` has a block for ``sensor`` (else: its technique)."""
    return sensor in scenario.expect


def sources(scenario: Expects, sensor: str) -> list[Source]:
    """Every expectation ``sensor`` may get for ``scenario`` on some node: the scenario's
    (explicit or implicit) and each override's that has a block for the sensor."""
    out = [Source(("expect", sensor), of_block(scenario, scenario.expect.get(sensor, {})),
                  explicit(scenario, sensor))]
    for i, (kernel, features, expect) in enumerate(scenario.overrides):
        if sensor in expect:
            out.append(Source(("overrides", i, "expect", sensor),
                              of_block(scenario, expect[sensor]), True, kernel, features))
    return out


def sensors(scenario: Expects) -> list[str]:
    """Every sensor named in the scenario's ``expect`` or an override's, sorted."""
    return sorted({*scenario.expect, *(s for _, _, e in scenario.overrides for s in e)})


def enforced(scenario: Expects) -> bool:
    """Some sensor's expectation (the scenario's or an override's) expects enforcement."""
    return any(src.expectation.enforce for s in sensors(scenario) for src in sources(scenario, s))


def of_row(row: Mapping[str, Any]) -> Expectation:
    """The expectation a results row was judged against (its ``expected``), for judging a
    recorded run again when its scenario file is not at hand."""
    if row.get("benign"):
        return Expectation(technique=None)
    exp = row.get("expected") or {}
    return Expectation(technique=exp.get("technique") or row.get("technique"),
                       rule=exp.get("rule"), gap=exp.get("gap"), enforce=exp.get("enforce"))
