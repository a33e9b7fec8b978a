"""allure integration helpers (the labels and attachments themselves: tests/plugin)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from harness.core.scenario import Scenario
from harness.pytest import allure as allure_report


def scenario(expect: dict[str, dict[str, object]]) -> Scenario:
    return Scenario(id="x", name="x", path=Path("x.yaml"), atomic=None,  # type: ignore[arg-type]
                    contexts=("host",), technique="T1611", tactic="privilege-escalation",
                    expect=expect)


def test_severity_is_the_highest_expected_level() -> None:
    sc = scenario({"falco": {"severity": "warning"}, "sysdig": {"severity": "High"},
                   "tetragon": {"severity": {"prefix": "crit"}}})
    assert allure_report.severity_of(sc, ["falco", "sysdig", "tetragon"]) == "critical"
    assert allure_report.severity_of(sc, ["falco"]) == "normal"
    assert allure_report.severity_of(sc, ["tetragon", "auditd"]) is None


def test_feature_names_the_technique() -> None:
    assert allure_report.feature_of("T1611") == "T1611 Escape to Host"
    assert allure_report.feature_of(None) == "benign control"
    assert allure_report.feature_of("T9999") == "T9999"


def test_importable_and_inactive_without_allure(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "allure", None)  # import allure -> ImportError
    assert allure_report._load_allure() is None
