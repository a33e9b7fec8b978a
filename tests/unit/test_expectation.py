"""``harness.core.expectation``: the one reader of a scenario's ``expect:`` blocks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from harness.core import expectation
from harness.core.atomic import Atomic
from harness.core.scenario import Scenario
from harness.core.verdict import Expectation

ATOMIC = Atomic(id="a", name="a", technique="T1611", path=Path("atomic/a.yaml"), command="true")


def _scenario(expect: dict[str, Any], overrides: tuple[Any, ...] = (),
              benign: bool = False) -> Scenario:
    return Scenario(id="s", name="s", path=Path("scenarios/x/s.yaml"), atomic=ATOMIC,
                    contexts=("host",), technique=None if benign else "T1611", tactic="x",
                    benign=benign, expect=expect, overrides=overrides)


SCENARIO = _scenario(
    {"auditd": {"rule": "r", "severity": "high", "fields": {"path": {"prefix": "/etc/"}}},
     "falco": {"gap": "no rule"},
     "lsm": {"rule": "r", "enforce": {"action": "deny"}}},
    overrides=(("<5.8", (), {"auditd": {"gap": "no setns audit before 5.8"}}),
               (">=6.0", ("bpf_lsm",), {"auditd": {"rule": "lsm-rule"}, "tetragon": {"rule": "t"}})),
)


@pytest.mark.parametrize(("sensor", "facts", "want"), [
    ("auditd", None, Expectation("T1611", rule="r", severity="high",
                                 fields={"path": {"prefix": "/etc/"}})),
    ("falco", None, Expectation("T1611", gap="no rule")),
    ("lsm", None, Expectation("T1611", rule="r", enforce="deny")),
    ("tracee", None, Expectation("T1611")),  # no block: the scenario's technique
    ("auditd", {"kernel": "5.4.0"}, Expectation("T1611", gap="no setns audit before 5.8")),
    ("auditd", {"kernel": "6.1.0", "bpf_lsm": True}, Expectation("T1611", rule="lsm-rule")),
    ("auditd", {"kernel": "6.1.0", "bpf_lsm": False},  # the feature is missing: no override
     Expectation("T1611", rule="r", severity="high", fields={"path": {"prefix": "/etc/"}})),
    ("falco", {"kernel": "5.4.0"}, Expectation("T1611", gap="no rule")),  # no block there
])
def test_resolve(sensor: str, facts: dict[str, Any] | None, want: Expectation) -> None:
    assert expectation.resolve(SCENARIO, sensor, facts) == want
    assert SCENARIO.expectation(sensor, facts) == want  # the judge's entry point delegates


def test_a_benign_control_expects_nothing() -> None:
    assert expectation.resolve(_scenario({}, benign=True), "auditd") == Expectation(None)


def test_sources_list_the_scenarios_and_every_overrides_block() -> None:
    got = [(s.key, s.explicit, s.kernel, s.features, s.expectation.rule, s.expectation.gap)
           for s in expectation.sources(SCENARIO, "auditd")]
    assert got == [
        (("expect", "auditd"), True, None, (), "r", None),
        (("overrides", 0, "expect", "auditd"), True, "<5.8", (), None, "no setns audit before 5.8"),
        (("overrides", 1, "expect", "auditd"), True, ">=6.0", ("bpf_lsm",), "lsm-rule", None),
    ]
    (implicit,) = expectation.sources(SCENARIO, "tracee")
    assert (implicit.explicit, implicit.expectation) == (False, Expectation("T1611"))


def test_sensors_and_enforced() -> None:
    assert expectation.sensors(SCENARIO) == ["auditd", "falco", "lsm", "tetragon"]
    assert expectation.enforced(SCENARIO)
    assert not expectation.enforced(_scenario({"auditd": {"rule": "r"}}))
    in_override = _scenario({}, overrides=((None, (), {"lsm": {"enforce": {"action": "deny"}}}),))
    assert expectation.enforced(in_override)
    assert in_override.enforced


@pytest.mark.parametrize(("row", "want"), [
    ({"benign": True, "expected": {"technique": None}}, Expectation(None)),
    ({"technique": "T1611", "expected": {"technique": "T1611", "rule": "r", "gap": None,
                                         "enforce": "sigkill"}},
     Expectation("T1611", rule="r", enforce="sigkill")),
    ({"technique": "T1611", "expected": {"gap": "no rule"}}, Expectation("T1611", gap="no rule")),
])
def test_of_row_reads_a_results_rows_expected(row: dict[str, Any], want: Expectation) -> None:
    assert expectation.of_row(row) == want


def test_a_blocks_requires_is_read_with_the_rest() -> None:
    s = _scenario({"bpftrace": {"rule": "k", "requires": {"features": ["kprobes"]}},
                   "tetragon": {"gap": "none", "requires": {"kernel": ">=5.8"}}})
    assert expectation.resolve(s, "bpftrace") == Expectation(
        "T1611", rule="k", requires=(None, ("kprobes",)))
    assert expectation.resolve(s, "tetragon") == Expectation(
        "T1611", gap="none", requires=(">=5.8", ()))
    assert expectation.resolve(s, "auditd").requires is None
